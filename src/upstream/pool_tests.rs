//! The pool against a stand-in server on a Unix socket that answers the
//! startup handshake and simple queries (one row) and holds the connection:
//! affinity, caps, waiting, lifetimes, reaping and counting, without a
//! PostgreSQL.

use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::*;
use crate::tenancy::TenantContext;
use crate::upstream::server_session::SettingExchange;
use crate::upstream::settings::Settings;
use bytes::BytesMut;

/// A server that lets every connection in (AuthenticationOk, BackendKeyData
/// with the connection's number as pid, ReadyForQuery) and holds it until the
/// client leaves or [`StandIn::drop_all`] is called.
struct StandIn {
    dir: PathBuf,
    accepted: Arc<AtomicUsize>,
    hang_up: watch::Sender<u32>,
}

impl StandIn {
    async fn start() -> StandIn {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pgtenant-pool-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let listener = UnixListener::bind(dir.join(".s.PGSQL.5432")).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (hang_up, hang_ups) = watch::channel(0);
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let pid = counter.fetch_add(1, Ordering::SeqCst) as i32 + 1;
                let mut hang_ups = hang_ups.clone();
                // Hang-ups before this connection are not for it.
                hang_ups.borrow_and_update();
                tokio::spawn(async move {
                    let mut len = [0u8; 4];
                    if stream.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let mut rest = vec![0u8; (i32::from_be_bytes(len) as usize).saturating_sub(4)];
                    if stream.read_exact(&mut rest).await.is_err() {
                        return;
                    }
                    let mut greeting = Vec::new();
                    greeting.extend_from_slice(&[b'R', 0, 0, 0, 8, 0, 0, 0, 0]);
                    greeting.extend_from_slice(&[b'K', 0, 0, 0, 12]);
                    greeting.extend_from_slice(&pid.to_be_bytes());
                    greeting.extend_from_slice(&7i32.to_be_bytes());
                    greeting.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
                    if stream.write_all(&greeting).await.is_err() {
                        return;
                    }
                    loop {
                        let mut header = [0u8; 5];
                        tokio::select! {
                            read = stream.read_exact(&mut header) => if read.is_err() { return },
                            _ = hang_ups.changed() => return,
                        }
                        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
                        let mut body = vec![0u8; len.saturating_sub(4)];
                        if stream.read_exact(&mut body).await.is_err() {
                            return;
                        }
                        // A simple query (the switch function's lookup) gets one row: 16501.
                        if header[0] == b'Q' {
                            let mut answer = Vec::new();
                            answer.extend_from_slice(&[b'D', 0, 0, 0, 15, 0, 1, 0, 0, 0, 5]);
                            answer.extend_from_slice(b"16501");
                            answer.extend_from_slice(&[b'C', 0, 0, 0, 13]);
                            answer.extend_from_slice(b"SELECT 1\0");
                            answer.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
                            if stream.write_all(&answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        StandIn { dir, accepted, hang_up }
    }

    fn pool(&self, config: PoolConfig) -> Pool {
        let dir: String = self
            .dir
            .to_string_lossy()
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let target =
            UpstreamTarget::from_url(&format!("postgres://app@{dir}:5432/db?sslmode=disable"), Duration::from_secs(5))
                .expect("a stand-in URL");
        Pool::new(target, config)
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Closes every connection from the server's side.
    fn drop_all(&self) {
        self.hang_up.send_modify(|n| *n += 1);
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(max_size: usize) -> PoolConfig {
    PoolConfig {
        max_size,
        min_idle: 0,
        max_lifetime: Duration::from_secs(3600),
        idle_timeout: Duration::from_secs(600),
        checkout_timeout: Duration::from_secs(5),
    }
}

/// The stand-in's number of the connection a lease holds.
fn id(lease: &Lease) -> i32 {
    lease.session_ref().backend_pid()
}

/// Hands a lease back as if `client` of `tenant` had used it.
fn give_back(pool: &Pool, mut lease: Lease, tenant: &str, client: i32, dirty: bool) {
    let session = lease.session();
    session.begin_context(&TenantContext::of(tenant.into(), tenant.into()), true, 0);
    session.serve_client(client);
    if dirty {
        session.mark_dirty();
    }
    pool.checkin(lease, true);
}

#[tokio::test]
async fn a_session_the_pool_opens_knows_the_switch_function_the_server_named() {
    let server = StandIn::start().await;
    let pool = server.pool(config(2));
    let mut lease = pool.checkout("t1", 1, 0).await.unwrap();
    assert_eq!(lease.session().switch_function(), Some(16_501));
}

#[tokio::test]
async fn checkout_prefers_the_clients_last_session_then_a_clean_one_of_its_tenant_then_any_clean_one() {
    let server = StandIn::start().await;
    let pool = server.pool(config(4));
    let (a, b, c) = (
        pool.checkout("t1", 1, 0).await.unwrap(),
        pool.checkout("t2", 2, 0).await.unwrap(),
        pool.checkout("t3", 3, 0).await.unwrap(),
    );
    let (id_a, id_b, id_c) = (id(&a), id(&b), id(&c));
    give_back(&pool, a, "t1", 1, true);
    give_back(&pool, b, "t2", 2, false);
    give_back(&pool, c, "t3", 3, false);
    // Its own last session, dirty or not.
    let again = pool.checkout("t1", 1, 0).await.unwrap();
    assert_eq!(id(&again), id_a);
    give_back(&pool, again, "t1", 1, true);
    // Another client of t2: t2's clean session.
    let same_tenant = pool.checkout("t2", 9, 0).await.unwrap();
    assert_eq!(id(&same_tenant), id_b);
    // A client of a new tenant: a clean one (t3's), not the dirty one.
    let clean = pool.checkout("t4", 10, 0).await.unwrap();
    assert_eq!(id(&clean), id_c);
    // Only the dirty one is left; it is used rather than opening another.
    let dirty = pool.checkout("t5", 11, 0).await.unwrap();
    assert_eq!(id(&dirty), id_a);
    assert_eq!(server.accepted(), 3);
    assert_eq!(pool.figures().checkouts, 7);
}

#[tokio::test]
async fn a_tenant_at_its_cap_waits_while_others_go_on_and_times_out_if_nothing_frees() {
    let server = StandIn::start().await;
    let pool = server.pool(PoolConfig { checkout_timeout: Duration::from_millis(200), ..config(4) });
    let held = pool.checkout("t1", 1, 1).await.unwrap();
    assert!(matches!(pool.checkout("t1", 2, 1).await, Err(PoolError::Timeout(_))));
    let other = pool.checkout("t2", 3, 1).await.unwrap();
    // A waiter of t1 gets the session t1 hands back.
    let waiting = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout("t1", 2, 1).await.map(|lease| id(&lease)) }
    });
    let held_id = id(&held);
    // The waiter registers before the hand-back or after it; either way it gets a session.
    give_back(&pool, held, "t1", 1, false);
    assert_eq!(waiting.await.unwrap().unwrap(), held_id);
    assert!(pool.figures().waits >= 1, "the timed-out checkout waited");
    drop(other);
}

#[tokio::test]
async fn the_pool_never_opens_more_than_its_size_and_a_waiter_gets_the_next_session_freed() {
    let server = StandIn::start().await;
    let pool = server.pool(config(1));
    let only = pool.checkout("t1", 1, 0).await.unwrap();
    let only_id = id(&only);
    let waiter = tokio::spawn({
        let pool = pool.clone();
        async move { pool.checkout("t2", 2, 0).await.map(|lease| id(&lease)) }
    });
    // Until the hand-back the waiter can only wait; it is counted once it does.
    while pool.figures().waiting == 0 {
        tokio::task::yield_now().await;
    }
    give_back(&pool, only, "t1", 1, false);
    assert_eq!(waiter.await.unwrap().unwrap(), only_id);
    assert_eq!(server.accepted(), 1);
    assert_eq!(pool.figures().waits, 1);
}

#[tokio::test]
async fn reaping_closes_idle_sessions_past_the_idle_timeout_but_keeps_min_idle() {
    let server = StandIn::start().await;
    let pool = server.pool(PoolConfig { min_idle: 1, idle_timeout: Duration::ZERO, ..config(4) });
    let leases = [
        pool.checkout("t1", 1, 0).await.unwrap(),
        pool.checkout("t1", 2, 0).await.unwrap(),
        pool.checkout("t1", 3, 0).await.unwrap(),
    ];
    for (n, lease) in leases.into_iter().enumerate() {
        give_back(&pool, lease, "t1", n as i32, false);
    }
    assert_eq!(pool.reap(), 2);
    let figures = pool.figures();
    assert_eq!((figures.idle, figures.active, figures.closed), (1, 0, 2));
}

#[tokio::test]
async fn min_idle_is_filled_and_a_session_past_its_lifetime_is_closed_on_return() {
    let server = StandIn::start().await;
    let pool = server.pool(PoolConfig { min_idle: 2, ..config(4) });
    pool.fill_min_idle().await;
    assert_eq!((server.accepted(), pool.figures().idle), (2, 2));

    let old = server.pool(PoolConfig { max_lifetime: Duration::ZERO, ..config(4) });
    let lease = old.checkout("t1", 1, 0).await.unwrap();
    give_back(&old, lease, "t1", 1, false);
    let figures = old.figures();
    assert_eq!((figures.idle, figures.closed), (0, 1));
}

#[tokio::test]
async fn a_lease_dropped_without_checkin_is_closed_counted_and_frees_its_slot() {
    let server = StandIn::start().await;
    let pool = server.pool(PoolConfig { checkout_timeout: Duration::from_millis(200), ..config(1) });
    let lease = pool.checkout("t1", 1, 1).await.unwrap();
    drop(lease);
    assert_eq!(pool.figures().closed, 1);
    // Slot and tenant count are both free again.
    let next = pool.checkout("t1", 2, 1).await.unwrap();
    assert_eq!(id(&next), 2);
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn a_session_the_server_closed_while_idle_is_replaced_at_checkout() {
    let server = StandIn::start().await;
    let pool = server.pool(config(2));
    let lease = pool.checkout("t1", 1, 0).await.unwrap();
    give_back(&pool, lease, "t1", 1, false);
    server.drop_all();
    // The stand-in's side closes asynchronously; a checkout after that sees a dead session.
    let dead = loop {
        let probe = pool.checkout("t1", 1, 0).await.unwrap();
        if id(&probe) != 1 {
            break probe;
        }
        give_back(&pool, probe, "t1", 1, false);
        tokio::task::yield_now().await;
    };
    assert_eq!(id(&dead), 2);
    assert!(pool.figures().closed >= 1);
}

/// The simple-query texts and bound parameters in `out`, in order, as the server would read them.
fn queued(out: &[u8]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut rest = out;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let body = &rest[5..1 + len];
        match rest[0] {
            b'Q' => seen.push(String::from_utf8_lossy(&body[..body.len() - 1]).into_owned()),
            b'B' => seen.push(format!("bind {}", String::from_utf8_lossy(body).replace('\0', "|"))),
            _ => {}
        }
        rest = &rest[1 + len..];
    }
    seen
}

#[tokio::test]
async fn a_session_switches_with_its_secret_until_a_discard_forgets_context_settings_and_secret() {
    let server = StandIn::start().await;
    let pool = server.pool(config(1));
    let mut lease = pool.checkout("t1", 1, 0).await.unwrap();
    let session = lease.session();
    assert!(!session.carries("t1"));

    let first = session.begin_context(&TenantContext::of("t1".into(), "t1".into()), true, 0);
    assert!(!first.switch, "no secret yet: the first context is verified");
    assert!(session.carries("t1"));
    let second = session.begin_context(&TenantContext::of("t2".into(), "t2".into()), true, 0);
    assert_eq!((second.switch, second.secret), (true, first.secret), "a switch presents the installed secret");
    let after_reset = session.begin_context(&TenantContext::of("t2".into(), "t2".into()), false, 0);
    assert!(!after_reset.switch && after_reset.secret != first.secret, "no switch where none may be");

    let mut out = BytesMut::new();
    let wanted = Settings::from([("application_name".to_owned(), "a".to_owned())]);
    session.queue_settings(&wanted, &mut out, |_| {});
    assert!(!session.queue_discard_if_dirty(&mut out), "a clean session is not discarded");
    session.mark_dirty();
    assert!(session.queue_discard_if_dirty(&mut out));
    assert!(!session.carries("t2"), "DISCARD ALL drops the context");
    assert!(
        !session.begin_context(&TenantContext::of("t2".into(), "t2".into()), true, 0).switch,
        "and the secret with it"
    );
    let mut again = BytesMut::new();
    let mut kinds = Vec::new();
    session.queue_settings(&wanted, &mut again, |kind| kinds.push(kind));
    assert_eq!(kinds, [SettingExchange::Set], "the settings are applied again after the discard");
    assert!(queued(&out).contains(&"DISCARD ALL".to_owned()));
}

#[tokio::test]
async fn settings_are_queued_as_the_difference_and_resets_keep_what_is_asked() {
    let server = StandIn::start().await;
    let pool = server.pool(config(1));
    let mut lease = pool.checkout("t1", 1, 0).await.unwrap();
    let session = lease.session();
    let pairs = |p: &[(&str, &str)]| -> Settings { p.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() };

    let mut out = BytesMut::new();
    let mut kinds = Vec::new();
    session.queue_settings(&pairs(&[("application_name", "a"), ("datestyle", "ISO")]), &mut out, |k| kinds.push(k));
    assert_eq!(kinds, [SettingExchange::Set, SettingExchange::Set]);
    kinds.clear();
    session.queue_settings(&pairs(&[("application_name", "a"), ("datestyle", "ISO")]), &mut out, |k| kinds.push(k));
    assert!(kinds.is_empty(), "nothing to do when the session has them already");

    session.note_client_settings(&[("search_path".to_owned(), Some("x".to_owned()))]);
    let mut resets = BytesMut::new();
    assert_eq!(session.queue_resets_except(&mut resets, |name| name == "application_name"), 2);
    let texts = queued(&resets);
    assert!(texts.iter().any(|t| t.contains("datestyle")) && texts.iter().any(|t| t.contains("search_path")));
    assert!(!texts.iter().any(|t| t.contains("application_name")), "{texts:?}");
    kinds.clear();
    session.queue_settings(&pairs(&[("application_name", "a")]), &mut out, |k| kinds.push(k));
    assert!(kinds.is_empty(), "the kept setting is still recorded as applied");
}

#[tokio::test]
async fn a_session_carries_a_context_only_as_signed_and_under_the_same_tree_version() {
    let server = StandIn::start().await;
    let pool = server.pool(config(1));
    let mut lease = pool.checkout("t1", 1, 0).await.unwrap();
    let session = lease.session();
    let before = TenantContext::of("t1".into(), "t1,t2".into());
    session.begin_context(&before, true, 7);
    assert!(session.carries_context(&before, 7));
    assert!(!session.carries_context(&before, 8), "the tree changed since: installed again");
    // A tenant on another upstream gained a child since: same tenant, new set.
    let after = TenantContext::of("t1".into(), "t1,t2,t3".into());
    assert!(!session.carries_context(&after, 7), "a wider set must be installed, not assumed");
    session.begin_context(&after, true, 8);
    assert!(session.carries_context(&after, 8) && !session.carries_context(&before, 8));
}

//! LISTEN in transaction pooling: the pool's listen hub listens for the
//! clients, so a listening client holds no server session between its
//! transactions; what it receives is what PostgreSQL would deliver to it
//! (transaction semantics, UNLISTEN, DISCARD ALL) and never another tenant's.

use pgtenant::config::PoolMode;
use tokio_postgres::AsyncMessage;

use crate::common::raw;
use crate::common::*;

/// Transaction pooling over one server session: a pinned listener would
/// starve every other client.
async fn one_server_session() -> TestEnv {
    TestEnv::start_with(|c| {
        c.pool.mode = PoolMode::Transaction;
        c.pool.size = 1;
        c.pool.checkout_timeout_secs = 5;
    })
    .await
}

/// The next notification's channel and payload (notices are skipped).
async fn next_notification(rx: &mut tokio::sync::mpsc::UnboundedReceiver<AsyncMessage>) -> (String, String) {
    loop {
        if let AsyncMessage::Notification(n) = next_message(rx).await {
            return (n.channel().to_owned(), n.payload().to_owned());
        }
    }
}

fn pair(channel: &str, payload: &str) -> (String, String) {
    (channel.to_owned(), payload.to_owned())
}

/// Backends of the test database whose last statement was a LISTEN (the hub's).
async fn hub_connections(env: &TestEnv) -> i64 {
    env.superuser()
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query ~ '^(UN)?LISTEN \"t'",
            &[&env.database],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_listening_client_holds_no_server_session() {
    let env = one_server_session().await;
    let (listener, mut rx) = env.connect_listening("hk_teller").await;
    listener.batch_execute("LISTEN jobs").await.unwrap();
    // The one server session is free for everyone else, and listens on nothing.
    let sender = env.connect("hk_teller").await;
    let other = env.connect("barclays_ops").await;
    assert_eq!(value(&other, "SELECT count(*) FROM pg_listening_channels()").await, "0");
    sender.batch_execute("NOTIFY jobs, 'first'").await.unwrap();
    sender.execute("SELECT pg_notify('jobs', $1)", &[&"second"]).await.unwrap();
    assert_eq!(next_notification(&mut rx).await, pair("jobs", "first"));
    assert_eq!(next_notification(&mut rx).await, pair("jobs", "second"));
    // The listener's own statements still run, and it keeps listening.
    assert_eq!(value(&listener, "SELECT 1").await, "1");
    sender.batch_execute("NOTIFY jobs, 'third'").await.unwrap();
    assert_eq!(next_notification(&mut rx).await, pair("jobs", "third"));
    let figures = env.server.state.routes.default_placement().readwrite.figures();
    assert_eq!(figures.created, 1, "one server session served three clients: {figures:?}");
}

/// What PostgreSQL does: a LISTEN counts once its transaction commits; a
/// rolled-back one, a failed one and an UNLISTEN'd one deliver nothing;
/// DISCARD ALL unlistens everything.
#[tokio::test]
async fn listen_follows_transactions_unlisten_and_discard() {
    let env = one_server_session().await;
    let (listener, mut rx) = env.connect_listening("hk_teller").await;
    let sender = env.connect("hk_teller").await;
    listener.batch_execute("BEGIN; LISTEN rolled_back; ROLLBACK").await.unwrap();
    listener.batch_execute("BEGIN").await.unwrap();
    listener.batch_execute("LISTEN failed").await.unwrap();
    assert!(listener.batch_execute("SELECT 1/0").await.is_err());
    listener.batch_execute("COMMIT").await.unwrap();
    listener.batch_execute("BEGIN; LISTEN committed; SAVEPOINT s; LISTEN undone; ROLLBACK TO s; COMMIT").await.unwrap();
    // Extended protocol: tokio-postgres prepares the statement, then binds and executes it.
    listener.execute("LISTEN extended", &[]).await.unwrap();
    for channel in ["rolled_back", "failed", "undone", "committed", "extended"] {
        sender.batch_execute(&format!("NOTIFY {channel}, '{channel}'")).await.unwrap();
    }
    assert_eq!(next_notification(&mut rx).await, pair("committed", "committed"));
    assert_eq!(next_notification(&mut rx).await, pair("extended", "extended"));

    listener.batch_execute("UNLISTEN committed").await.unwrap();
    // An UNLISTEN in a transaction that fails counts for nothing.
    let err = listener.batch_execute("UNLISTEN extended; SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&err), "22012");
    sender.batch_execute("NOTIFY committed, 'gone'; NOTIFY extended, 'still here'").await.unwrap();
    assert_eq!(next_notification(&mut rx).await, pair("extended", "still here"));

    listener.batch_execute("LISTEN a; LISTEN b").await.unwrap();
    listener.batch_execute("UNLISTEN *").await.unwrap();
    listener.batch_execute("LISTEN c").await.unwrap();
    sender.batch_execute("NOTIFY a; NOTIFY b; NOTIFY extended; NOTIFY c, 'only c'").await.unwrap();
    assert_eq!(next_notification(&mut rx).await, pair("c", "only c"));

    listener.batch_execute("DISCARD ALL").await.unwrap();
    listener.batch_execute("LISTEN d").await.unwrap();
    sender.batch_execute("NOTIFY c; NOTIFY d, 'after discard'").await.unwrap();
    assert_eq!(next_notification(&mut rx).await, pair("d", "after discard"));
    // The server session went back clean every time.
    assert_eq!(value(&sender, "SELECT count(*) FROM pg_listening_channels()").await, "0");
}

/// Errors are PostgreSQL's own: the client's LISTEN runs on the server.
#[tokio::test]
async fn a_listen_in_a_failed_transaction_is_refused_as_by_postgres() {
    let env = one_server_session().await;
    let client = env.connect("hk_teller").await;
    client.batch_execute("BEGIN").await.unwrap();
    assert!(client.batch_execute("SELECT 1/0").await.is_err());
    let err = client.batch_execute("LISTEN jobs").await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(value(&client, "SELECT count(*) FROM pg_listening_channels()").await, "0");
}

/// Two tenants on one channel name, through one hub: each hears its own.
#[tokio::test]
async fn the_hub_never_hands_a_tenant_another_tenants_notification() {
    let env = one_server_session().await;
    let (barclays_listener, mut barclays_rx) = env.connect_listening("barclays_ops").await;
    barclays_listener.batch_execute("LISTEN ledger").await.unwrap();
    let (hk_listener, mut hk_rx) = env.connect_listening("hk_teller").await;
    hk_listener.batch_execute("LISTEN ledger").await.unwrap();
    let hk = env.connect("hk_teller").await;
    hk.batch_execute("NOTIFY ledger, 'from hk'").await.unwrap();
    // Barclays' server channel, spelled out by hk: still under hk's prefix.
    let barclays_scoped = format!("t{}.ledger", &sha256_hex(BARCLAYS)[..12]);
    hk_listener.batch_execute(&format!("LISTEN \"{barclays_scoped}\"")).await.unwrap();
    hk.execute("SELECT pg_notify($1, 'escaped')", &[&barclays_scoped]).await.unwrap();
    let barclays = env.connect("barclays_ops").await;
    barclays.batch_execute("NOTIFY ledger, 'from barclays'").await.unwrap();
    assert_eq!(next_notification(&mut hk_rx).await, pair("ledger", "from hk"));
    // Had anything of hk's crossed over, it would come before barclays' own.
    assert_eq!(next_notification(&mut barclays_rx).await, pair("ledger", "from barclays"));
    assert_eq!(next_notification(&mut hk_rx).await, pair(&barclays_scoped, "escaped"), "under hk's own prefix");
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// A notification shows the pid the sending client was given, whichever
/// server session carried its NOTIFY; the listener's own NOTIFY comes back
/// to it with its own pid.
#[tokio::test]
async fn hub_notifications_carry_client_pids() {
    let env = one_server_session().await;
    let mut listener = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    let replies = listener.query("LISTEN jobs").await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
    let replies = listener.query("NOTIFY jobs, 'to myself'").await;
    assert!(replies.iter().all(|m| m.tag != b'E'), "{replies:?}");
    let own = raw_notification(&mut listener, &replies).await;
    assert_eq!(notification_pid(&own), listener.key.0, "its own pid");
    let mut sender = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    sender.query("NOTIFY jobs, 'from the sender'").await;
    let theirs = raw_notification(&mut listener, &[]).await;
    assert_eq!(notification_pid(&theirs), sender.key.0, "the sender's pid");
}

/// The body of the next NotificationResponse, among `replies` or read after them.
async fn raw_notification(session: &mut raw::RawSession, replies: &[raw::Message]) -> Vec<u8> {
    if let Some(found) = replies.iter().find(|m| m.tag == b'A') {
        return found.body.clone();
    }
    let read = async {
        loop {
            let message = session.read().await;
            if message.tag == b'A' {
                return message.body;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), read).await.expect("a notification within 20 s")
}

fn notification_pid(body: &[u8]) -> i32 {
    i32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

/// The hub's connection exists while someone listens: the last listener
/// leaving (disconnect or UNLISTEN) closes it.
#[tokio::test]
async fn the_hub_connection_closes_when_nobody_listens() {
    let env = one_server_session().await;
    let (first, _first_rx) = env.connect_listening("hk_teller").await;
    first.batch_execute("LISTEN jobs").await.unwrap();
    let (second, _second_rx) = env.connect_listening("barclays_ops").await;
    second.batch_execute("LISTEN jobs").await.unwrap();
    assert_eq!(hub_connections(&env).await, 1, "one hub for both tenants");
    drop(first);
    second.batch_execute("UNLISTEN jobs").await.unwrap();
    eventually("the hub's connection closes", || async { hub_connections(&env).await == 0 }).await;
    second.batch_execute("LISTEN again").await.unwrap();
    assert_eq!(hub_connections(&env).await, 1, "opened again for the next LISTEN");
}

/// Session pooling keeps LISTEN on the client's own server session.
#[tokio::test]
async fn session_pooling_listens_on_the_clients_own_session() {
    let env = TestEnv::start_with(|c| c.pool.mode = PoolMode::Session).await;
    let (listener, mut rx) = env.connect_listening("hk_teller").await;
    listener.batch_execute("LISTEN jobs").await.unwrap();
    let channels = value(&listener, "SELECT count(*) FROM pg_listening_channels()").await;
    assert_eq!(channels, "1");
    env.connect("hk_teller").await.batch_execute("NOTIFY jobs, 'direct'").await.unwrap();
    assert_eq!(next_notification(&mut rx).await, pair("jobs", "direct"));
    assert_eq!(hub_connections(&env).await, 0);
}

/// Attack: whatever a client LISTENs on — and however it leaves — the next
/// client of the one shared server session, of another tenant, finds it
/// listening on nothing (`pg_listening_channels()` would name the first
/// tenant's channels).
#[tokio::test]
async fn a_listen_leaves_nothing_on_the_shared_server_session() {
    let env = one_server_session().await;
    let other = env.connect("barclays_ops").await;
    let listening_channels = || async { value(&other, "SELECT count(*) FROM pg_listening_channels()").await };
    let (hk, connection) = env.connect_abortable("hk_teller").await;
    hk.batch_execute("LISTEN simple").await.unwrap();
    assert_eq!(listening_channels().await, "0", "after a LISTEN");
    hk.execute("LISTEN extended", &[]).await.unwrap();
    assert_eq!(listening_channels().await, "0", "after a prepared LISTEN");
    hk.batch_execute("NOTIFY simple, 'self'").await.unwrap();
    assert_eq!(listening_channels().await, "0", "after a NOTIFY to itself");
    hk.batch_execute("BEGIN; LISTEN in_flight").await.unwrap();
    // Gone mid-transaction: its server session is closed, never handed on.
    drop(hk);
    let _ = connection.await;
    assert_eq!(listening_channels().await, "0", "after a client left mid-transaction");
}

/// PostgreSQL delivers a client its own notification before the
/// ReadyForQuery of the NOTIFY's transaction: drivers that look for it right
/// after the statement (libpq's PQnotifies, pgjdbc's getNotifications) find
/// it there through pgtenant too, and only once.
#[tokio::test]
async fn a_clients_own_notification_comes_before_its_ready_for_query() {
    let env = one_server_session().await;
    let mut client = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    client.query("LISTEN jobs").await;
    // A setting of its own, which another client's turn on the one server
    // session takes away: the NOTIFY's checkout puts it back first.
    client.query("SET statement_timeout = '7s'").await;
    let other = env.connect("barclays_ops").await;
    for round in 0..3 {
        value(&other, "SELECT 1").await;
        let replies = client.query(&format!("NOTIFY jobs, 'round {round}'")).await;
        let tags: Vec<u8> = replies.iter().map(|m| m.tag).collect();
        assert_eq!(tags, b"CAZ", "round {round}: {replies:?}");
        assert_eq!(notification_pid(&replies[1].body), client.key.0);
    }
    // The hub's copies were dropped: the next reply holds only its own messages.
    let replies = client.query("SELECT 1").await;
    let tags: Vec<u8> = replies.iter().map(|m| m.tag).collect();
    assert_eq!(tags, b"TDCZ", "{replies:?}");
}

/// Attack on the sender pid: a notification waits while its listener is in
/// a transaction, and meanwhile a client of another tenant NOTIFYs through
/// the same server session. The pid the listener sees is still its own
/// tenant's sender's, never the other tenant's client's.
#[tokio::test]
async fn a_late_notification_never_shows_another_tenants_client() {
    let env = TestEnv::start_with(|c| {
        c.pool.mode = PoolMode::Transaction;
        c.pool.size = 2;
    })
    .await;
    let mut listener = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    listener.query("LISTEN jobs").await;
    // Holds one server session; the senders share the other.
    listener.query("BEGIN").await;
    let mut hk = raw::login(env.server.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    hk.query("NOTIFY jobs, 'from hk'").await;
    let mut barclays = raw::login(env.server.proxy_addr, "barclays_ops", PASSWORD, &env.database, &[]).await.unwrap();
    barclays.query("NOTIFY jobs, 'from barclays'").await;
    let replies = listener.query("COMMIT").await;
    let body = raw_notification(&mut listener, &replies).await;
    assert_eq!(notification_pid(&body), hk.key.0, "hk's sender, not barclays' {}", barclays.key.0);
}

/// Attack on the SQL pgtenant writes for the hub (`LISTEN "<prefix><name>"`)
/// and for a listener's own NOTIFY (the replayed LISTENs): channel names with
/// quotes, semicolons and spaces stay one identifier under the tenant's
/// prefix — the hub listens on exactly that channel and nothing else runs.
#[tokio::test]
async fn hostile_channel_names_stay_one_channel_of_the_tenant() {
    let env = one_server_session().await;
    let (listener, mut rx) = env.connect_listening("hk_teller").await;
    let hostile = r#"x"; NOTIFY "ledger"; LISTEN "y"#;
    listener.batch_execute(&format!("LISTEN \"{}\"", hostile.replace('"', "\"\""))).await.unwrap();
    // Its own NOTIFY makes pgtenant replay the LISTEN on the server session.
    listener.execute("SELECT pg_notify($1, 'own')", &[&hostile]).await.unwrap();
    listener.batch_execute(&format!("NOTIFY \"{}\", 'own again'", hostile.replace('"', "\"\""))).await.unwrap();
    let (barclays_listener, mut barclays_rx) = env.connect_listening("barclays_ops").await;
    barclays_listener.batch_execute("LISTEN ledger").await.unwrap();
    env.connect("barclays_ops").await.batch_execute("NOTIFY ledger, 'barclays only'").await.unwrap();
    assert_eq!(next_notification(&mut rx).await, pair(hostile, "own"));
    assert_eq!(next_notification(&mut rx).await, pair(hostile, "own again"));
    // Had an injected NOTIFY "ledger" run, it would come before barclays' own (and under no prefix).
    assert_eq!(next_notification(&mut barclays_rx).await, pair("ledger", "barclays only"));
    assert_eq!(value(&listener, "SELECT count(*) FROM pg_listening_channels()").await, "0");
}

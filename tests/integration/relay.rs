//! What a client sends through the proxy reaches PostgreSQL, and what
//! PostgreSQL answers reaches the client: simple and extended protocol, COPY,
//! errors, notices, notifications, cancel, disconnects.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::{AsyncMessage, NoTls, SimpleQueryMessage};

use crate::common::*;

#[tokio::test]
async fn extended_protocol_with_parameters_and_a_reused_statement() {
    let env = TestEnv::start().await;
    let hsbc = env.connect("hsbc_admin").await;
    let statement = hsbc.prepare("SELECT holder FROM accounts WHERE id = $1").await.unwrap();
    let mut seen = Vec::new();
    for id in 1i64..=9 {
        let rows = hsbc.query(&statement, &[&id]).await.unwrap();
        seen.push(rows.len());
    }
    assert_eq!(seen, vec![1, 1, 1, 1, 1, 1, 0, 0, 0], "one statement, nine executions, barclays rows invisible");
    let holder: String = hsbc.query_one(&statement, &[&3i64]).await.unwrap().get(0);
    assert_eq!(holder, "Kowloon Trading Ltd");
    let typed: (i32, String) = {
        let row = hsbc.query_one("SELECT $1::int + 1, $2::text || '!'", &[&41i32, &"hi"]).await.unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(typed, (42, "hi!".to_string()));
}

#[tokio::test]
async fn simple_query_with_several_statements() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let messages = hk.simple_query("SELECT 1 AS one; SELECT count(*) FROM accounts; SELECT 'x'").await.unwrap();
    let values: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or_default().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(values, vec!["1", "2", "x"]);
}

#[tokio::test]
async fn copy_out_returns_own_rows_only() {
    let env = TestEnv::start().await;
    let barclays = env.connect("barclays_ops").await;
    let stream = barclays.copy_out("COPY accounts (id, holder) TO STDOUT").await.unwrap();
    let chunks: Vec<Bytes> = stream.map(|chunk| chunk.unwrap()).collect().await;
    let text: String = chunks.iter().map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    assert_eq!(text, "7\tBarclays Treasury\n8\tManchester Motors\n9\tLeeds Textiles\n");
}

#[tokio::test]
async fn copy_in_refused_on_rls_table_and_works_on_a_plain_one() {
    let env = TestEnv::start().await;
    let direct = env.superuser().await;
    direct
        .batch_execute("CREATE TABLE imports (line text); GRANT SELECT, INSERT ON imports TO pgtenant_readwrite")
        .await
        .unwrap();
    let hk = env.connect("hk_teller").await;

    let err = match hk.copy_in::<_, Bytes>("COPY accounts (iban, holder, currency) FROM STDIN").await {
        Ok(_) => panic!("COPY FROM into an RLS table must be refused"),
        Err(e) => e,
    };
    assert_eq!(sqlstate(&err), "0A000");
    assert_eq!(message(&err), "COPY FROM not supported with row-level security");

    // tokio-postgres cannot reuse a connection after a refused COPY FROM (it does
    // the same against PostgreSQL directly), so the plain COPY uses another one.
    let hk = env.connect("hk_teller").await;
    let sink = hk.copy_in("COPY imports (line) FROM STDIN").await.unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"first\nsecond\n")).await.unwrap();
    sink.send(Bytes::from_static(b"third\n")).await.unwrap();
    assert_eq!(sink.finish().await.unwrap(), 3);
    let n: i64 = direct.query_one("SELECT count(*) FROM imports", &[]).await.unwrap().get(0);
    assert_eq!(n, 3);
}

#[tokio::test]
async fn error_mid_transaction_then_rollback() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    hk.batch_execute("BEGIN").await.unwrap();
    hk.execute("INSERT INTO accounts (iban, holder, currency) VALUES ('TX-ROLLED-BACK', 'x', 'HKD')", &[])
        .await
        .unwrap();
    let err = hk.query("SELECT 1 / 0", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "22012");
    let err = hk.query("SELECT 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&err), "25P02", "the transaction is aborted until ROLLBACK");
    hk.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = hk.query_one("SELECT count(*) FROM accounts WHERE iban = 'TX-ROLLED-BACK'", &[]).await.unwrap().get(0);
    assert_eq!(n, 0);
    let tenant: String = hk.query_one("SELECT pgtenant.current_tenant()::text", &[]).await.unwrap().get(0);
    assert_eq!(tenant, HSBC_HK, "the context survives the rollback");
}

#[tokio::test]
async fn cancel_request_stops_a_running_query() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let token = hk.cancel_token();
    let sleeper = tokio::spawn(async move { hk.simple_query("SELECT pg_sleep(60) /* cancel-me */").await });
    let direct = env.superuser().await;
    eventually("the query to run", || async {
        let n: i64 = direct
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%cancel-me%' AND pid <> pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        n == 1
    })
    .await;
    token.cancel_query(NoTls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(sqlstate(&err), "57014");
    assert_eq!(message(&err), "canceling statement due to user request");
}

#[tokio::test]
async fn client_gone_mid_transaction_leaves_nothing_open_upstream() {
    let env = TestEnv::start().await;
    let (doomed, connection) = env.connect_abortable("hk_teller").await;
    doomed.batch_execute("BEGIN; UPDATE accounts SET balance = 1 WHERE id = 3").await.unwrap();
    // The socket closes without a Terminate message, as when a client crashes.
    connection.abort();
    let _ = connection.await;

    let hk = env.connect("hk_teller").await;
    // Blocks on the row lock until the abandoned transaction is rolled back.
    hk.batch_execute("SET lock_timeout = '20s'; UPDATE accounts SET balance = 2 WHERE id = 3").await.unwrap();
    let direct = env.superuser().await;
    let balance: String =
        direct.query_one("SELECT balance::text FROM accounts WHERE id = 3", &[]).await.unwrap().get(0);
    assert_eq!(balance, "2.00");
    let open: i64 = direct
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open, 0);
}

#[tokio::test]
async fn notices_and_notifications_reach_the_client() {
    let env = TestEnv::start().await;
    let (listener, mut rx) = env.connect_listening("hk_teller").await;
    listener.batch_execute("DROP TABLE IF EXISTS no_such_table").await.unwrap();
    match next_message(&mut rx).await {
        AsyncMessage::Notice(notice) => {
            assert!(notice.message().contains("does not exist, skipping"))
        }
        other => panic!("expected a notice, got {other:?}"),
    }
    listener.batch_execute("LISTEN ledger").await.unwrap();
    let sender = env.connect("hk_teller").await;
    sender.batch_execute("NOTIFY ledger, 'posted'").await.unwrap();
    match next_message(&mut rx).await {
        AsyncMessage::Notification(n) => {
            assert_eq!(n.channel(), "ledger");
            assert_eq!(n.payload(), "posted");
        }
        other => panic!("expected a notification, got {other:?}"),
    }
}

#[tokio::test]
async fn ordinary_settings_work_as_on_postgres() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    hk.batch_execute(
        "SET search_path = pg_catalog, public; SET statement_timeout = '5s'; SET application_name = 'teller-app'",
    )
    .await
    .unwrap();
    let row = hk
        .query_one("SELECT current_setting('search_path'), current_setting('statement_timeout'), current_setting('application_name')", &[])
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, String>(2)),
        ("pg_catalog, public".into(), "5s".into(), "teller-app".into())
    );
    assert_eq!(account_ids(&hk).await, vec![3, 4]);
}

#[tokio::test]
async fn a_session_ended_from_outside_gets_a_fatal_error() {
    use pgtenant::error::{sqlstate, ClientError};
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let barclays = env.connect("barclays_ops").await;
    let sessions = env.server.state.sessions.list();
    let users: Vec<&str> = sessions.iter().map(|s| s.identity.username.as_str()).collect();
    assert_eq!(users.len(), 2);
    assert!(users.contains(&"hk_teller") && users.contains(&"barclays_ops"));
    let hk_session = sessions.iter().find(|s| s.identity.username == "hk_teller").unwrap();
    assert_eq!(hk_session.identity.tenant_id, HSBC_HK);

    let reason = ClientError::fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection due to administrator command");
    assert_eq!(env.server.state.sessions.terminate_where(|s| s.tenant_slug == "hsbc-hk", reason), 1);
    let err = hk.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&err), "57P01");
    assert_eq!(message(&err), "terminating connection due to administrator command");
    assert!(hk.is_closed());
    assert_eq!(account_ids(&barclays).await, vec![7, 8, 9], "other sessions go on");
}

#[tokio::test]
async fn stopping_ends_sessions_between_transactions() {
    let env = TestEnv::start().await;
    let server = pgtenant::server::Server::start(&env.config).await.unwrap();
    let url = format!("postgres://hk_teller:{PASSWORD}@{}/{}", server.proxy_addr, env.database);
    let idle = connect_url(&url).await;
    let busy = connect_url(&url).await;
    busy.batch_execute("BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = 3").await.unwrap();
    let stopping = tokio::spawn(server.stop(std::time::Duration::from_secs(30)));
    eventually("the idle client to be ended", || async { idle.is_closed() }).await;
    assert!(!busy.is_closed(), "a session inside a transaction may finish it");
    busy.batch_execute("COMMIT").await.unwrap();
    eventually("the busy client to be ended after its transaction", || async { busy.is_closed() }).await;
    stopping.await.unwrap();
    let direct = env.superuser().await;
    let balance: String =
        direct.query_one("SELECT balance::text FROM accounts WHERE id = 3", &[]).await.unwrap().get(0);
    assert_eq!(balance, "830001.00", "the transaction committed");
}

/// An ErrorResponse too large for one read arrives in pieces and must stream
/// through (the fuzzer found the relay reading one whole before it had it,
/// which panicked the session's task), in both pool modes.
#[tokio::test]
async fn a_large_error_message_reaches_the_client_and_the_session_goes_on() {
    for mode in [pgtenant::config::PoolMode::Session, pgtenant::config::PoolMode::Transaction] {
        let env = TestEnv::start_with(|c| c.pool.mode = mode).await;
        let hk = env.connect("hk_teller").await;
        let e = hk.simple_query("SELECT repeat('x', 300000)::int").await.expect_err("not an integer");
        assert_eq!(sqlstate(&e), "22P02", "{mode:?}");
        assert!(message(&e).len() > 300_000, "the whole message arrives");
        assert_eq!(value(&hk, "SELECT pgtenant.current_tenant()::text").await, HSBC_HK);
    }
}

/// A message larger than the Unix socket to PostgreSQL can take at once
/// (pgtenant then waits for room to write, registering for writability only
/// while it waits) reaches PostgreSQL whole, and the session goes on.
#[tokio::test]
async fn a_message_larger_than_the_socket_buffer_reaches_postgres_whole() {
    let env = TestEnv::start().await;
    let hk = env.connect("hk_teller").await;
    let pattern = "0123456789abcdef";
    let large: String = pattern.repeat(1 << 20) + "-the-end";
    for _ in 0..2 {
        let row = hk.query_one("SELECT length($1::text), right($1::text, 12)", &[&large]).await.unwrap();
        let (length, tail): (i32, String) = (row.get(0), row.get(1));
        assert_eq!((length, tail.as_str()), (16 * (1 << 20) + 8, "cdef-the-end"));
    }
    assert_eq!(value(&hk, "SELECT pgtenant.current_tenant()::text").await, HSBC_HK);
}

/// Backends waiting on a lock now.
async fn lock_waiters(env: &TestEnv) -> i64 {
    env.superuser()
        .await
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'", &[])
        .await
        .unwrap()
        .get(0)
}

/// Two pgtenant processes on one catalog, as behind a load balancer: a
/// cancel for a session of one that lands on the other still cancels it;
/// forged keys cancel nothing through either; a stopped process leaves.
#[tokio::test]
async fn a_cancel_landing_on_another_process_of_the_fleet_reaches_its_session() {
    let env = TestEnv::start().await;
    let second = pgtenant::server::Server::start(&env.config).await.expect("a second process");
    let direct = env.superuser().await;
    let processes = "SELECT count(*)::text FROM pgtenant.proxy_processes";
    assert_eq!(value(&direct, processes).await, "2", "both processes registered");

    let mut victim =
        crate::common::raw::login(second.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
    // The superuser holds a row lock the victim's query waits for.
    direct.batch_execute("BEGIN; SELECT * FROM accounts WHERE id = 3 FOR UPDATE").await.unwrap();
    victim.send_query("UPDATE accounts SET balance = balance WHERE id = 3").await;
    eventually("the victim to wait on the lock", || async { lock_waiters(&env).await == 1 }).await;

    let (pid, secret) = victim.key;
    for forged in [(pid, secret.wrapping_add(1)), (pid, !secret), (pid.wrapping_add(1), secret)] {
        crate::common::raw::send_cancel_request(env.server.proxy_addr, forged).await;
        crate::common::raw::send_cancel_request(second.proxy_addr, forged).await;
    }
    assert_eq!(lock_waiters(&env).await, 1, "forged keys cancelled nothing");

    // The genuine key, sent to the process that does not hold the session.
    crate::common::raw::send_cancel_request(env.server.proxy_addr, victim.key).await;
    let replies = victim.until_ready().await;
    let error = replies.iter().find(|m| m.tag == b'E').expect("the victim's query was cancelled");
    assert_eq!(error.code().as_deref(), Some("57014"));
    direct.batch_execute("COMMIT").await.unwrap();

    second.stop(std::time::Duration::from_secs(1)).await;
    assert_eq!(value(&direct, processes).await, "1", "a stopped process leaves the list");
}

/// The cancel listener peers pass cancels to takes exactly one well-formed
/// CancelRequest per connection: anything else is dropped, and the process
/// goes on serving.
#[tokio::test]
async fn the_cancel_listener_drops_what_is_not_a_cancel_request() {
    let env = TestEnv::start().await;
    let address = value(&env.superuser().await, "SELECT cancel_addr FROM pgtenant.proxy_processes").await;
    let hk = env.connect("hk_teller").await;
    let junk: [&[u8]; 5] = [
        b"",
        b"GET / HTTP/1.1\r\n\r\n",
        &[0, 0, 0, 16, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2],
        &[0, 0, 0, 8, 4, 210, 22, 47],
        &[0xff; 4096],
    ];
    for bytes in junk {
        let mut socket = tokio::net::TcpStream::connect(address.as_str()).await.expect("the cancel listener");
        let _ = tokio::io::AsyncWriteExt::write_all(&mut socket, bytes).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut socket).await;
        let mut rest = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut rest).await;
        assert!(rest.is_empty(), "no reply to {bytes:?}");
    }
    assert_eq!(account_ids(&hk).await, vec![3, 4], "the process goes on serving");
}

/// Two processes sharing one port (`proxy.reuse_port`): clients land on
/// either, and a cancel sent to the shared port reaches the session
/// whichever process the kernel hands it to.
#[tokio::test]
async fn two_processes_on_one_port_cancel_each_others_sessions() {
    let env = TestEnv::start().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut config = env.config.clone();
    config.proxy.listen = ([127, 0, 0, 1], port).into();
    config.proxy.reuse_port = true;
    let first = pgtenant::server::Server::start(&config).await.expect("a first process on the port");
    let second = pgtenant::server::Server::start(&config).await.expect("a second process on the same port");
    assert_eq!((first.proxy_addr.port(), second.proxy_addr.port()), (port, port));
    let direct = env.superuser().await;
    direct.batch_execute("BEGIN; SELECT * FROM accounts WHERE id = 3 FOR UPDATE").await.unwrap();
    // A few clients, so that both processes hold some; each is cancelled through the shared port.
    for n in 0..4 {
        let mut victim =
            crate::common::raw::login(first.proxy_addr, "hk_teller", PASSWORD, &env.database, &[]).await.unwrap();
        victim.send_query("UPDATE accounts SET balance = balance WHERE id = 3").await;
        eventually("the victim to wait on the lock", || async { lock_waiters(&env).await == 1 }).await;
        crate::common::raw::send_cancel_request(first.proxy_addr, victim.key).await;
        let replies = victim.until_ready().await;
        let error = replies.iter().find(|m| m.tag == b'E').unwrap_or_else(|| panic!("client {n} was not cancelled"));
        assert_eq!(error.code().as_deref(), Some("57014"), "client {n}");
    }
    direct.batch_execute("COMMIT").await.unwrap();
    first.stop(std::time::Duration::from_secs(1)).await;
    second.stop(std::time::Duration::from_secs(1)).await;
}

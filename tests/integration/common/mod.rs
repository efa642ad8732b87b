//! The test harness: one throwaway PostgreSQL per test binary (removed when
//! the binary exits), a migrated template database with the fintech demo,
//! and per test a database copied from it with pgtenant serving it in-process.

pub mod http;
pub mod raw;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use pgtenant::config::Config;
use pgtenant::dev::cluster::{Cluster, TcpTls, SUPERUSER};
use pgtenant::server::Server;
use pgtenant::tenancy::catalog::Catalog;
use tokio::sync::OnceCell;
use tokio_postgres::{Client, NoTls};

/// Every demo login's password in tests.
pub const PASSWORD: &str = "test-password-1234";
const TEMPLATE: &str = "pgtenant_template";

pub const HSBC: &str = "a0000000-0000-4000-8000-000000000001";
pub const HSBC_HK: &str = "a0000000-0000-4000-8000-000000000002";
pub const HSBC_LONDON: &str = "a0000000-0000-4000-8000-000000000003";
pub const BARCLAYS: &str = "b0000000-0000-4000-8000-000000000001";

static CLUSTER: OnceCell<Cluster> = OnceCell::const_new();
/// The cluster's TCP port, for config closures that run before a test has its env.
pub static CLUSTER_TCP_PORT: std::sync::OnceLock<u16> = std::sync::OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(1);

/// The binary's cluster, with the template database ready.
pub async fn cluster() -> &'static Cluster {
    CLUSTER
        .get_or_init(|| async {
            // TCP with TLS too, for the upstream TLS tests.
            let fixtures = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tls");
            let cluster = tokio::task::spawn_blocking(move || {
                let (cert, key) = (fixtures.join("server.crt"), fixtures.join("server.key"));
                Cluster::start_with(None, Some(TcpTls { cert: &cert, key: &key }))
            })
            .await
            .expect("cluster task")
            .expect("start the throwaway PostgreSQL");
            if let Some(port) = cluster.tcp_port {
                let _ = CLUSTER_TCP_PORT.set(port);
            }
            let config = pgtenant::dev::prepare_database(&cluster, TEMPLATE).await.expect("prepare template");
            pgtenant::migrate::load_demo(&config.control.url).await.expect("load demo");
            let catalog = Catalog::new(&config.control.url, 1).expect("catalog");
            for (username, tenant, access) in pgtenant::dev::DEMO_LOGINS {
                catalog.upsert_login(username, tenant, PASSWORD, *access).await.expect("demo login");
            }
            cluster
        })
        .await
}

/// One environment for the tests that need nothing but fresh logins (the
/// refusal tests): started once, on a runtime of its own so that it outlives
/// the runtime of whichever test asked first. Its tests must leave it as they
/// found it (a refused statement changes nothing).
pub async fn shared_env() -> &'static TestEnv {
    static SHARED: OnceCell<&'static TestEnv> = OnceCell::const_new();
    SHARED
        .get_or_init(|| async {
            let started = tokio::task::spawn_blocking(|| {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("the shared environment's runtime");
                let env = runtime.block_on(TestEnv::start());
                // Kept for the life of the test process, with the server it runs.
                Box::leak(Box::new(runtime));
                &*Box::leak(Box::new(env))
            });
            started.await.expect("start the shared environment")
        })
        .await
}

/// Where the test database keeps the verified tenant (sql/0015).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContextStore {
    /// pgtenant_native's settings (strict context): what `migrate` chooses
    /// when the server has the extension, as the test cluster does.
    Strict,
    /// Session-local sequences, for servers without the extension (the
    /// policy's readers in C all the same).
    Sequences,
    /// Session-local sequences and every reader in PL/pgSQL: a server
    /// without pgtenant_native at all.
    PlPgSql,
}

pub const BOTH_STORES: [ContextStore; 2] = [ContextStore::Strict, ContextStore::Sequences];

/// One test's database, served by an in-process pgtenant.
pub struct TestEnv {
    pub cluster: &'static Cluster,
    pub database: String,
    #[allow(dead_code)]
    pub config: Config,
    pub server: Server,
}

impl TestEnv {
    /// A fresh copy of the template, and pgtenant serving it on port 0.
    pub async fn start() -> TestEnv {
        Self::start_with(|_| {}).await
    }

    /// Like [`TestEnv::start`], with a chance to change the config first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestEnv {
        let cluster = cluster().await;
        let database = format!("test_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
        let admin = connect_url(&cluster.url(SUPERUSER, "postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {database} TEMPLATE {TEMPLATE} OWNER pgtenant_owner"))
            .await
            .expect("create test database");
        // Database privileges are not copied from the template.
        let owner_client = connect_url(&cluster.url("pgtenant_owner", &database)).await;
        owner_client.batch_execute(pgtenant::migrate::DATABASE_HARDENING_SQL).await.expect("database hardening");
        let mut config = pgtenant::dev::config_for(cluster, &database).expect("config");
        adjust(&mut config);
        let server = Server::start(&config).await.expect("start pgtenant");
        TestEnv { cluster, database, config, server }
    }

    /// Moves the database to `store` as `migrate` would choose it, with the
    /// C policy functions. Sessions opened before keep what they recorded.
    pub async fn use_context_store(&self, store: ContextStore) {
        let owner = connect_url(&self.cluster.url("pgtenant_owner", &self.database)).await;
        let strict = store == ContextStore::Strict;
        let native = store != ContextStore::PlPgSql;
        for sql in [
            if native {
                "SELECT pgtenant.use_native_descendants(true)"
            } else {
                "SELECT pgtenant.use_native_descendants(false)"
            },
            if native { "SELECT pgtenant.use_native_policy(true)" } else { "SELECT pgtenant.use_native_policy(false)" },
            if strict {
                "SELECT pgtenant.use_strict_context(true)"
            } else {
                "SELECT pgtenant.use_strict_context(false)"
            },
        ] {
            owner.batch_execute(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }

    /// A `postgres://` URL for a login through the proxy.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!("postgres://{user}:{password}@{}/{}", self.server.proxy_addr, self.database)
    }

    /// Connects through the proxy as a demo login.
    pub async fn connect(&self, user: &str) -> Client {
        self.try_connect(user, PASSWORD).await.unwrap_or_else(|e| panic!("connect as {user}: {e:?}"))
    }

    /// Connects through the proxy; the error is the proxy's answer.
    pub async fn try_connect(&self, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) = tokio_postgres::connect(&self.url(user, password), NoTls).await?;
        tokio::spawn(connection);
        Ok(client)
    }

    /// The proxy's refusal of a login (panics if it is let in).
    pub async fn refused(&self, user: &str, password: &str) -> tokio_postgres::Error {
        match self.try_connect(user, password).await {
            Ok(_) => panic!("{user} must be refused"),
            Err(e) => e,
        }
    }

    /// Connects through the proxy and returns the connection task's handle too,
    /// so a test can drop the socket without a Terminate message.
    pub async fn connect_abortable(&self, user: &str) -> (Client, tokio::task::JoinHandle<()>) {
        let (client, connection) = tokio_postgres::connect(&self.url(user, PASSWORD), NoTls).await.expect("connect");
        let handle = tokio::spawn(async move {
            let _ = connection.await;
        });
        (client, handle)
    }

    /// Connects as `user` and returns the client with a channel of its
    /// asynchronous messages (notices, notifications).
    pub async fn connect_listening(
        &self,
        user: &str,
    ) -> (Client, tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>) {
        use futures_util::StreamExt;
        let (client, mut connection) =
            tokio_postgres::connect(&self.url(user, PASSWORD), NoTls).await.expect("connect");
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(Ok(message)) = messages.next().await {
                let _ = tx.send(message);
            }
        });
        (client, rx)
    }

    /// The upstream database directly, as superuser: what really is there.
    pub async fn superuser(&self) -> Client {
        connect_url(&self.cluster.url(SUPERUSER, &self.database)).await
    }
}

/// A `host:port` where connections are refused for the whole test run: an
/// address in 127/8 that no test listens on (a port only freed on 127.0.0.1
/// may be taken by another test's proxy before it is dialled).
pub fn refusing_addr() -> String {
    let probe = std::net::TcpListener::bind("127.0.0.254:0").expect("bind 127.0.0.254");
    let port = probe.local_addr().expect("its port").port();
    format!("127.0.0.254:{port}")
}

pub async fn connect_url(url: &str) -> Client {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("connect {url}: {e:?}"));
    tokio::spawn(connection);
    client
}

/// Runs psql with `args` against `url` (a URL or a conninfo string), stopping
/// at the first error; returns (success, stdout, stderr).
pub async fn psql(url: &str, args: &[&str]) -> (bool, String, String) {
    let mut command = std::process::Command::new("psql");
    command.arg(url).args(["-X", "-v", "ON_ERROR_STOP=1", "-At"]).args(args);
    let output = tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("psql on PATH");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The SQLSTATE of a server error (panics on other errors).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e:?}")).code().code().to_owned()
}

/// The message of a server error.
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().unwrap_or_else(|| panic!("not a server error: {e:?}")).message().to_owned()
}

/// The first column of the first row of a simple query (unnamed statements:
/// drivers' named prepared statements pin a client in transaction pooling).
pub async fn value(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_owned()),
            _ => None,
        })
        .expect("a row")
}

/// The next asynchronous message of a [`TestEnv::connect_listening`]
/// client; the bound on the wait turns a lost message into a failure, not a hang.
pub async fn next_message(
    messages: &mut tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
) -> tokio_postgres::AsyncMessage {
    tokio::time::timeout(Duration::from_secs(20), messages.recv())
        .await
        .expect("an asynchronous message within 20 s")
        .expect("the connection is open")
}

/// Sorted account ids a client sees.
pub async fn account_ids(client: &Client) -> Vec<i64> {
    let rows = client.query("SELECT id FROM accounts ORDER BY id", &[]).await.expect("select accounts");
    rows.iter().map(|r| r.get(0)).collect()
}

/// Waits until `condition` holds, checking every 20 ms, for at most 20 s.
/// For waiting on another process (e.g. a backend's state), never for timing.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A client whose connection task is watched: the handle resolves when the
/// server ends the session, with the error it sent.
pub async fn connect_watched(url: &str) -> (Client, tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    let (client, connection) =
        tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
    (client, tokio::spawn(connection))
}

/// Waits (bounded) for a watched session to be ended by the server and
/// returns the SQLSTATE and message of its FATAL error.
pub async fn ended(watch: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) -> (String, String) {
    let result = tokio::time::timeout(Duration::from_secs(20), watch)
        .await
        .expect("the session was not ended")
        .expect("connection task");
    let error = result.expect_err("the session must end with an error");
    let db = error.as_db_error().unwrap_or_else(|| panic!("not a server error: {error:?}"));
    assert_eq!(db.severity(), "FATAL", "{db:?}");
    (db.code().code().to_owned(), db.message().to_owned())
}

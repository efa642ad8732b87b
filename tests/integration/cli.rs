//! The `pgtenant` binary: exit codes, `migrate`, `serve`'s refusals, `dev`.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use pgtenant::dev::cluster::SUPERUSER;

use crate::common::*;
use tokio_postgres::Client;

/// The binary with a clean environment, run from an empty directory.
fn pgtenant(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_pgtenant"));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

async fn output(mut command: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || command.output()).await.unwrap().expect("run pgtenant")
}

fn config_env(env: &TestEnv, upstream_user: &str) -> Vec<(&'static str, String)> {
    vec![
        ("PGTENANT_ADMIN__TOKEN", "0123456789abcdef0123".to_string()),
        ("PGTENANT_UPSTREAM__URL", env.cluster.url(upstream_user, &env.database)),
        ("PGTENANT_CONTROL__URL", env.cluster.url("pgtenant_owner", &env.database)),
        ("PGTENANT_PROXY__LISTEN", "127.0.0.1:0".to_string()),
        ("PGTENANT_ADMIN__LISTEN", "127.0.0.1:0".to_string()),
    ]
}

#[tokio::test]
async fn invalid_config_exits_2_with_one_line_naming_the_key() {
    let cases: Vec<(Vec<(&str, String)>, &str)> = vec![
        (vec![], "invalid config: admin: "),
        (
            vec![
                ("PGTENANT_ADMIN__TOKEN", "0123456789abcdef".into()),
                ("PGTENANT_UPSTREAM__URL", "postgres://a@h/db".into()),
                ("PGTENANT_CONTROL__URL", "postgres://b@h/db".into()),
                ("PGTENANT_PROXY__LISTEN", "not-an-address".into()),
            ],
            "invalid config: proxy.listen: ",
        ),
        (
            vec![
                ("PGTENANT_ADMIN__TOKEN", "0123456789abcdef".into()),
                ("PGTENANT_UPSTREAM__URL", "postgres://a@h/db".into()),
                ("PGTENANT_CONTROL__URL", "postgres://b@h/db".into()),
                ("PGTENANT_PROXY__POOL", "x".into()),
            ],
            "invalid config: proxy.pool: unknown field",
        ),
        (
            vec![
                ("PGTENANT_ADMIN__TOKEN", "0123456789abcdef".into()),
                ("PGTENANT_UPSTREAM__URL", "postgres://a@h/db".into()),
                ("PGTENANT_CONTROL__URL", "postgres://b@h/db".into()),
                ("PGTENANT_LOG__FORMAT", "yaml".into()),
            ],
            "invalid config: log.format: unknown variant `yaml`, expected `text` or `json`",
        ),
        (
            vec![("PGTENANT_CONFIG", "/nonexistent/pgtenant.toml".into())],
            "invalid config: --config: /nonexistent/pgtenant.toml",
        ),
    ];
    for (env, expected) in cases {
        for subcommand in ["serve", "migrate"] {
            let out = output(pgtenant(&[subcommand], &env)).await;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{subcommand} {env:?}: {stderr}");
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
            assert!(stderr.starts_with(&format!("pgtenant: {expected}")), "{stderr}");
        }
    }
    let out = output(pgtenant(&["serve", "--bogus"], &[])).await;
    assert_eq!(out.status.code(), Some(2));
    let out = output(pgtenant(&["--version"], &[])).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), format!("pgtenant {}", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn migrate_is_idempotent() {
    let env = TestEnv::start().await;
    let admin = connect_url(&env.cluster.url(SUPERUSER, "postgres")).await;
    let fresh = format!("{}_fresh", env.database);
    admin.batch_execute(&format!("CREATE DATABASE {fresh} OWNER pgtenant_owner")).await.unwrap();
    let vars = vec![
        ("PGTENANT_ADMIN__TOKEN", "0123456789abcdef0123".to_string()),
        ("PGTENANT_UPSTREAM__URL", env.cluster.url("pgtenant_app", &fresh)),
        ("PGTENANT_UPSTREAM__READONLY_URL", env.cluster.url("pgtenant_app_ro", &fresh)),
        ("PGTENANT_CONTROL__URL", env.cluster.url("pgtenant_owner", &fresh)),
    ];
    let schema_digest = || async {
        let client = connect_url(&env.cluster.url(SUPERUSER, &fresh)).await;
        let row = client
            .query_one(
                "SELECT (SELECT string_agg(proname || ':' || md5(prosrc), ',' ORDER BY proname, md5(prosrc)) FROM pg_proc WHERE pronamespace = 'pgtenant'::regnamespace),
                        (SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relnamespace = 'pgtenant'::regnamespace),
                        (SELECT count(*) FROM pgtenant.schema_migrations)",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, String>(0), row.get::<_, String>(1), row.get::<_, i64>(2))
    };

    // The first run logs as JSON (log.format): one object per line.
    let mut json_vars = vars.clone();
    json_vars.push(("PGTENANT_LOG__FORMAT", "json".to_string()));
    let first = output(pgtenant(&["migrate"], &json_vars)).await;
    let logged = String::from_utf8_lossy(&first.stderr);
    assert!(first.status.success(), "{logged}");
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied migration 0001"));
    let lines: Vec<serde_json::Value> = logged
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    let applied = lines.iter().find(|l| l["message"] == "migration applied").expect("a line per migration");
    assert_eq!((applied["level"].as_str(), applied["version"].as_i64()), (Some("INFO"), Some(1)), "{applied}");
    assert!(applied["timestamp"].is_string() && applied["target"] == "pgtenant::migrate", "{applied}");
    let before = schema_digest().await;
    let second = output(pgtenant(&["migrate"], &vars)).await;
    assert!(second.status.success(), "{}", String::from_utf8_lossy(&second.stderr));
    assert_eq!(String::from_utf8_lossy(&second.stdout).trim(), "pgtenant migrate: already up to date");
    assert_eq!(schema_digest().await, before);
    assert_eq!(before.2, pgtenant::migrate::MIGRATIONS.len() as i64);
}

#[tokio::test]
async fn serve_refuses_an_upstream_role_rls_would_not_bind() {
    let env = TestEnv::start().await;
    let admin = env.superuser().await;
    admin.batch_execute("DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bypass_app') THEN CREATE ROLE bypass_app LOGIN BYPASSRLS; END IF; END $$").await.unwrap();
    for (user, expected) in [
        (SUPERUSER, "is a superuser"),
        ("bypass_app", "has BYPASSRLS"),
        ("pgtenant_owner", "owns (or belongs to the owner of) a tenant table"),
    ] {
        let out = output(pgtenant(&["serve"], &config_env(&env, user))).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{user}: {stderr}");
        assert!(stderr.contains(expected), "{user}: {stderr}");
        assert!(stderr.contains("upstream.url"), "{stderr}");
    }
}

/// `pgtenant dev` on free ports, and its banner once it is ready.
pub(crate) async fn start_dev() -> (std::process::Child, Vec<String>) {
    start_dev_logging(Stdio::null()).await
}

/// [`start_dev`], with its log (stderr) going to `log`.
async fn start_dev_logging(log: impl Into<Stdio>) -> (std::process::Child, Vec<String>) {
    let mut child = pgtenant(&["dev", "--port", "0", "--admin-port", "0"], &[])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start pgtenant dev");
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.starts_with("Ctrl-C");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    (child, lines)
}

/// Stops `pgtenant dev` as Ctrl-C would; true when it exited cleanly.
pub(crate) async fn stop_dev(child: std::process::Child) -> bool {
    let mut child = child;
    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap().success()
}

#[tokio::test]
async fn dev_serves_the_demo_and_cleans_up_on_sigterm() {
    let log_path = std::env::temp_dir().join(format!("pgtenant-dev-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).expect("a log file");
    let (child, lines) = start_dev_logging(log).await;
    // Ready, and its log holds pgtenant's lines, not the server's notices
    // about the demo ("policy … does not exist, skipping").
    let logged = std::fs::read_to_string(&log_path).expect("the log");
    assert!(logged.contains("pgtenant is listening"), "{logged}");
    assert!(!logged.contains("NOTICE") && !logged.contains("skipping"), "{logged}");
    let psql_url = |user: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("postgres://{user}:")))
            .and_then(|l| l.split('"').nth(1))
            .unwrap_or_else(|| panic!("no psql line for {user} in {lines:?}"))
            .to_owned()
    };
    let socket_dir = lines
        .iter()
        .find_map(|l| l.split("psql -h ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .expect("the superuser line")
        .to_owned();

    let hsbc = connect_url(&psql_url("hsbc_admin")).await;
    assert_eq!(account_ids(&hsbc).await, vec![1, 2, 3, 4, 5, 6]);
    // The session's lines name it: its id and tenant (plain text in a file).
    let logged = std::fs::read_to_string(&log_path).expect("the log");
    let started = logged
        .lines()
        .find(|l| l.contains("session started") && l.contains("user=hsbc_admin"))
        .unwrap_or_else(|| panic!("{logged}"));
    assert!(started.contains("tenant=\"hsbc\"") && started.contains(" session="), "{started}");
    assert!(!logged.contains('\u{1b}'), "no colour codes in a file");
    let barclays = connect_url(&psql_url("barclays_ops")).await;
    assert_eq!(account_ids(&barclays).await, vec![7, 8, 9]);
    // The tour's database and schema tenants: their own accounts, nothing of the others'.
    let monzo = connect_url(&psql_url("monzo_ops")).await;
    let holders = |client: Client| async move {
        let rows = client.query("SELECT holder FROM accounts ORDER BY id", &[]).await.unwrap();
        rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>()
    };
    assert_eq!(holders(monzo).await, ["Ada Lovelace", "Alan Turing"]);
    let starling = connect_url(&psql_url("starling_ops")).await;
    assert_eq!(value(&starling, "SELECT current_schema()::text").await.len(), 36);
    assert_eq!(holders(starling).await, ["Grace Hopper"]);
    drop((hsbc, barclays));

    assert!(stop_dev(child).await, "pgtenant dev exits cleanly on SIGTERM");
    let _ = std::fs::remove_file(&log_path);
    let base = std::path::Path::new(&socket_dir).parent().unwrap();
    assert!(!base.exists(), "{} must be removed", base.display());
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The next datagram `serve` sends the service manager, waiting at most 30 s.
async fn next_notification(socket: &tokio::net::UnixDatagram) -> String {
    let mut buffer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), socket.recv(&mut buffer))
        .await
        .expect("a notification within 30 s")
        .expect("read the notification");
    String::from_utf8_lossy(&buffer[..read]).into_owned()
}

/// systemd's Type=notify (contrib/systemd/pgtenant.service): READY=1 once both
/// listeners accept, RELOADING=1 then READY=1 around a SIGHUP, STOPPING=1 on SIGTERM.
#[tokio::test]
async fn serve_tells_the_service_manager_when_it_is_ready_reloading_and_stopping() {
    let env = TestEnv::start().await;
    let dir = tempfile_dir("notify");
    let socket_path = dir.join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    let (proxy_port, admin_port) = (free_port(), free_port());
    let mut vars = config_env(&env, "pgtenant_app");
    vars.retain(|(key, _)| !key.ends_with("__LISTEN"));
    vars.push(("PGTENANT_PROXY__LISTEN", format!("127.0.0.1:{proxy_port}")));
    vars.push(("PGTENANT_ADMIN__LISTEN", format!("127.0.0.1:{admin_port}")));
    vars.push(("NOTIFY_SOCKET", socket_path.display().to_string()));
    let mut child = pgtenant(&["serve"], &vars).stderr(Stdio::null()).spawn().expect("start pgtenant serve");

    assert_eq!(next_notification(&socket).await, "READY=1\nSTATUS=serving");
    for port in [proxy_port, admin_port] {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("ready means accepting");
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let reloading = next_notification(&socket).await;
    let usec = reloading.strip_prefix("RELOADING=1\nMONOTONIC_USEC=").expect(&reloading);
    assert!(usec.parse::<u64>().is_ok_and(|usec| usec > 0), "{reloading}");
    assert_eq!(next_notification(&socket).await, "READY=1\nSTATUS=serving");
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    assert_eq!(next_notification(&socket).await, "STOPPING=1\nSTATUS=draining sessions");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(dir);
}

/// `proxy.worker_threads = 1` runs sessions on a single-threaded runtime:
/// a tenant login is served there, in both pool modes, and SIGTERM ends it.
#[tokio::test]
async fn serve_on_one_thread_serves_tenant_sessions() {
    let env = TestEnv::start().await;
    for mode in ["session", "transaction"] {
        let dir = tempfile_dir("one-thread");
        let socket_path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("bind the notify socket");
        let proxy_port = free_port();
        let mut vars = config_env(&env, "pgtenant_app");
        vars.retain(|(key, _)| key != &"PGTENANT_PROXY__LISTEN");
        vars.push(("PGTENANT_PROXY__LISTEN", format!("127.0.0.1:{proxy_port}")));
        vars.push(("PGTENANT_PROXY__WORKER_THREADS", "1".to_string()));
        vars.push(("PGTENANT_POOL__MODE", mode.to_string()));
        vars.push(("NOTIFY_SOCKET", socket_path.display().to_string()));
        let mut child = pgtenant(&["serve"], &vars).stderr(Stdio::null()).spawn().expect("start pgtenant serve");
        assert_eq!(next_notification(&socket).await, "READY=1\nSTATUS=serving");

        let url = format!("postgres://hk_teller:{PASSWORD}@127.0.0.1:{proxy_port}/{}", env.database);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
        tokio::spawn(connection);
        for _ in 0..3 {
            assert_eq!(value(&client, "SELECT pgtenant.current_tenant()::text").await, HSBC_HK, "{mode}");
        }
        assert_eq!(account_ids(&client).await, vec![3, 4], "{mode}: the tenant's own rows only");
        drop(client);

        let pid = child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
        assert!(status.success(), "{mode}: {status}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh private directory under the temp dir.
fn tempfile_dir(purpose: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pgtenant-{purpose}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// The admin console's RELOAD re-reads the configuration file of a running
/// `serve`, as SIGHUP does: a tenant limit added to the file applies to new sessions.
#[tokio::test]
async fn the_console_reload_rereads_the_configuration_file() {
    let env = TestEnv::start().await;
    let dir = tempfile_dir("reload");
    let file = dir.join("pgtenant.toml");
    let (proxy_port, admin_port) = (free_port(), free_port());
    let token = "0123456789abcdef0123";
    let base = format!(
        "[proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\ntoken = \"{token}\"\n\
         [upstream]\nurl = \"{}\"\n[control]\nurl = \"{}\"\n",
        env.cluster.url("pgtenant_app", &env.database),
        env.cluster.url("pgtenant_owner", &env.database)
    );
    std::fs::write(&file, &base).unwrap();
    let mut child = pgtenant(&["serve", "--config", file.to_str().unwrap()], &[])
        .stderr(Stdio::null())
        .spawn()
        .expect("start pgtenant serve");
    let console = format!("postgres://pgtenant:{token}@127.0.0.1:{proxy_port}/pgtenant");
    let hk = format!("postgres://hk_teller:{PASSWORD}@127.0.0.1:{proxy_port}/{}", env.database);
    eventually("serve to accept", || async { psql(&console, &["-c", "SHOW VERSION"]).await.0 }).await;
    let (first, connection) = tokio_postgres::connect(&hk, tokio_postgres::NoTls).await.expect("hk_teller");
    tokio::spawn(connection);
    let (_second, connection) = tokio_postgres::connect(&hk, tokio_postgres::NoTls).await.expect("no limit yet");
    tokio::spawn(connection);

    std::fs::write(&file, format!("{base}[tenants.hsbc-hk]\nmax_client_connections = 2\n")).unwrap();
    let (ok, out, err) = psql(&console, &["-c", "RELOAD"]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "RELOAD");
    eventually("the new limit to apply", || async {
        match tokio_postgres::connect(&hk, tokio_postgres::NoTls).await {
            Ok(_) => false,
            Err(e) => e.code().is_some_and(|c| c.code() == "53300"),
        }
    })
    .await;
    first.simple_query("SELECT 1").await.expect("open sessions keep going");

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let _ = std::fs::remove_dir_all(dir);
}

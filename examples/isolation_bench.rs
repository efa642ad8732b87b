//! Figures of the isolation models, on a throwaway cluster (run by
//! `scripts/bench-isolation`; timings are reported, never asserted):
//!
//! 1. time to provision one `database` and one `schema` tenant with a
//!    10-table tenant migration;
//! 2. `migrate --tenants` over 100 tenants (50 schema, 50 database) with
//!    one job and with four, each run applying one new migration;
//! 3. pgbench select-only (8 clients, prepared) through a `database` tenant
//!    and through a `shared` tenant (an RLS table of the same shape);
//! 4. server connections held with 100 `database` tenants, one open client
//!    each, in transaction pooling.
//!
//! Usage: cargo run --release --example isolation_bench [-- SECONDS]

use std::process::Command;
use std::time::{Duration, Instant};

use pgtenant::config::PoolMode;
use pgtenant::dev::cluster::{Cluster, SUPERUSER};
use pgtenant::tenancy::catalog::Catalog;
use pgtenant::tenancy::tenants::NewTenant;
use pgtenant::tenancy::{Access, Isolation};

const PASSWORD: &str = "bench-password-1234";

fn ten_tables() -> String {
    (1..=10)
        .map(|n| {
            format!(
                "CREATE TABLE t{n} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL, \
                 created_at timestamptz NOT NULL DEFAULT now());\nCREATE INDEX ON t{n} (created_at);\n"
            )
        })
        .collect()
}

const BENCH_TABLE: &str = "CREATE TABLE bench_accounts (aid int PRIMARY KEY, abalance int NOT NULL, filler text);
INSERT INTO bench_accounts SELECT g, 0, repeat('x', 80) FROM generate_series(1, 100000) g;";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let seconds: u32 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10);
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(None)).await??;
    let migrations = std::env::temp_dir().join(format!("pgtenant-isolation-bench-{}", std::process::id()));
    std::fs::create_dir_all(&migrations)?;
    std::fs::write(migrations.join("0001_ten_tables.sql"), ten_tables())?;
    std::fs::write(migrations.join("0002_bench_accounts.sql"), BENCH_TABLE)?;

    let mut config = pgtenant::dev::prepare_database(&cluster, "app").await?;
    pgtenant::migrate::load_demo(&config.control.url).await?;
    config.provisioning.migrations = Some(migrations.clone());
    config.pool.mode = PoolMode::Transaction;
    config.pool.size = 20;
    let server = pgtenant::server::Server::start(&config).await?;
    let state = &server.state;
    let catalog = Catalog::new(&config.control.url, 2)?;

    // 1. Provisioning one tenant of each model.
    println!("== provisioning one tenant (10-table migration + a 100,000-row table)");
    for isolation in [Isolation::Database, Isolation::Schema] {
        let slug = format!("first-{}", isolation.as_str());
        let started = Instant::now();
        let tenant = create(&catalog, &slug, isolation).await?;
        let version = state.provisioner.provision(&tenant, isolation, "default").await?;
        catalog.finish_provisioning(&tenant, Some(version)).await?;
        println!("{:<9} {:>8.0} ms", isolation.as_str(), started.elapsed().as_secs_f64() * 1000.0);
    }

    // 2. A hundred tenants, then migrate --tenants with one job and with four.
    let mut hundred = Vec::new();
    for n in 0..100 {
        let isolation = if n % 2 == 0 { Isolation::Schema } else { Isolation::Database };
        let slug = format!("t{n:03}");
        let tenant = create(&catalog, &slug, isolation).await?;
        let version = state.provisioner.provision(&tenant, isolation, "default").await?;
        catalog.finish_provisioning(&tenant, Some(version)).await?;
        catalog.upsert_login(&format!("{slug}_rw"), &slug, PASSWORD, Access::Readwrite).await?;
        hundred.push((slug, isolation));
    }
    println!(
        "== migrate --tenants over 102 tenants (50 schema, 50 database + the two above), one new migration each run"
    );
    for (jobs, file) in [(1, "0003_more.sql"), (4, "0004_more.sql")] {
        let sql = format!("ALTER TABLE t1 ADD COLUMN note_{jobs} text; CREATE INDEX ON t2 (body, created_at);");
        std::fs::write(migrations.join(file), sql)?;
        let started = Instant::now();
        let report = pgtenant::migrate_tenants::migrate_tenants(&config, jobs, |_, _| {}).await?;
        let failed = report.failed().count();
        if let Some(first) = report.failed().next() {
            println!("first failure: {} {:?}", first.slug, first.result);
        }
        println!(
            "--jobs {jobs}  {:>8.2} s  ({} tenants, {failed} failed)",
            started.elapsed().as_secs_f64(),
            report.total
        );
    }

    // 3. pgbench select-only: a database tenant vs a shared tenant, same table shape.
    let superuser = pgtenant::pg_client::connect(&cluster.url(SUPERUSER, "app")).await?;
    superuser
        .batch_execute(&format!(
            "CREATE TABLE public.bench_accounts (aid int PRIMARY KEY, tenant_id uuid NOT NULL, abalance int NOT NULL, filler text);
             INSERT INTO public.bench_accounts SELECT g, '{HK}', 0, repeat('x', 80) FROM generate_series(1, 100000) g;
             ALTER TABLE public.bench_accounts OWNER TO pgtenant_owner;
             SET ROLE pgtenant_owner;
             SELECT pgtenant.enable_tenancy('public.bench_accounts');
             RESET ROLE;
             ANALYZE public.bench_accounts;",
            HK = "a0000000-0000-4000-8000-000000000002"
        ))
        .await?;
    catalog.upsert_login("bench_shared", "hsbc-hk", PASSWORD, Access::Readwrite).await?;
    let script = migrations.join("select.sql");
    std::fs::write(&script, "\\set aid random(1, 100000)\nSELECT abalance FROM bench_accounts WHERE aid = :aid;\n")?;
    println!("== pgbench select-only, 8 clients, prepared, {seconds} s (transaction pooling)");
    let mut tps = Vec::new();
    for (label, user) in [("shared", "bench_shared"), ("database", "t001_rw")] {
        let value = pgbench(&server.proxy_addr, user, &script, seconds)?;
        println!("{label:<9} {value:>10.0} TPS");
        tps.push(value);
    }
    println!("database / shared: {:.2}", tps[1] / tps[0]);

    // 4. Server connections with 100 database tenants, one open client each.
    let mut clients = Vec::new();
    for (slug, _) in hundred.iter().filter(|(_, i)| *i == Isolation::Database) {
        let url = format!("postgres://{slug}_rw:{PASSWORD}@{}/app", server.proxy_addr);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await?;
        clients.push(client);
    }
    // Add 50 more database tenants so there are 100 with a client each.
    for n in 100..150 {
        let slug = format!("t{n:03}");
        let tenant = create(&catalog, &slug, Isolation::Database).await?;
        let version = state.provisioner.provision(&tenant, Isolation::Database, "default").await?;
        catalog.finish_provisioning(&tenant, Some(version)).await?;
        catalog.upsert_login(&format!("{slug}_rw"), &slug, PASSWORD, Access::Readwrite).await?;
        let url = format!("postgres://{slug}_rw:{PASSWORD}@{}/app", server.proxy_addr);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client.simple_query("SELECT 1").await?;
        clients.push(client);
    }
    let held: i64 =
        superuser.query_one("SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'pgt\\_%'", &[]).await?.get(0);
    println!(
        "== {} database tenants with an idle client each, transaction pooling: {held} server connections",
        clients.len()
    );
    drop(clients);
    server.stop(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&migrations);
    Ok(())
}

async fn create(catalog: &Catalog, slug: &str, isolation: Isolation) -> anyhow::Result<String> {
    let new = NewTenant { slug: slug.into(), name: slug.into(), parent: None, id: None, isolation, upstream: None };
    Ok(catalog.create_tenant(&new).await.map_err(|e| anyhow::anyhow!("{e}"))?.id)
}

fn pgbench(proxy: &std::net::SocketAddr, user: &str, script: &std::path::Path, seconds: u32) -> anyhow::Result<f64> {
    let pgbench = ["/usr/lib/postgresql/15/bin/pgbench", "pgbench"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists() || *p == "pgbench")
        .unwrap_or("pgbench");
    let out = Command::new(pgbench)
        .args(["-n", "-M", "prepared", "-c", "8", "-j", "2", "-T", &seconds.to_string(), "-f"])
        .arg(script)
        .args(["-h", &proxy.ip().to_string(), "-p", &proxy.port().to_string(), "-U", user, "app"])
        .env("PGPASSWORD", PASSWORD)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("pgbench failed: {text}{}", String::from_utf8_lossy(&out.stderr)))
}

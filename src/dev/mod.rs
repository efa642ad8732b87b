//! `pgtenant dev`: a private PostgreSQL, migrated, with the fintech demo,
//! behind a running proxy and sidecar. Also the bootstrap the tests share.

pub mod cluster;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use rand::distributions::{Alphanumeric, DistString};

use crate::config::{
    AdminConfig, Config, ControlConfig, JwtConfig, LogConfig, PoolSection, ProxyConfig, TlsConfig, UpstreamConfig,
};
use crate::migrate;
use crate::tenancy::catalog::Catalog;
use crate::tenancy::tenants::{NewTenant, TenantStatus};
use crate::tenancy::{Access, Isolation};
use cluster::{Cluster, SUPERUSER};

/// The database the demo lives in and the proxy serves.
pub(crate) const DATABASE: &str = "app";
/// Owner of the catalog and of the demo tables.
pub(crate) const OWNER_ROLE: &str = "pgtenant_owner";
/// Login role of readwrite tenant sessions.
pub const APP_ROLE: &str = "pgtenant_app";
/// Login role of readonly tenant sessions.
pub const APP_READONLY_ROLE: &str = "pgtenant_app_ro";

/// The demo's logins: username, tenant slug, access.
pub const DEMO_LOGINS: &[(&str, &str, Access)] = &[
    ("hsbc_admin", "hsbc", Access::Readwrite),
    ("hk_teller", "hsbc-hk", Access::Readwrite),
    ("london_auditor", "hsbc-london", Access::Readonly),
    ("barclays_ops", "barclays", Access::Readwrite),
];

/// A demo tenant with a database or a schema of its own.
pub(crate) struct DemoIsolatedTenant {
    pub slug: &'static str,
    pub name: &'static str,
    pub isolation: Isolation,
    pub login: &'static str,
    /// The accounts `dev` opens for it: IBAN, holder, balance.
    pub accounts: &'static [(&'static str, &'static str, &'static str)],
}

/// The demo's tenants of the other two isolation models.
pub(crate) const DEMO_ISOLATED_TENANTS: &[DemoIsolatedTenant] = &[
    DemoIsolatedTenant {
        slug: "monzo",
        name: "Monzo Bank",
        isolation: Isolation::Database,
        login: "monzo_ops",
        accounts: &[
            ("GB33MONZ00000000000001", "Ada Lovelace", "1200.00"),
            ("GB33MONZ00000000000002", "Alan Turing", "87.50"),
        ],
    },
    DemoIsolatedTenant {
        slug: "starling",
        name: "Starling Bank",
        isolation: Isolation::Schema,
        login: "starling_ops",
        accounts: &[("GB44STAR00000000000001", "Grace Hopper", "5300.00")],
    },
];

/// The demo's tenant migrations, written where `provisioning.migrations` points.
const DEMO_TENANT_MIGRATIONS: &[(&str, &str)] =
    &[("0001_accounts.sql", include_str!("../../sql/demo/tenant_migrations/0001_accounts.sql"))];

/// Options of `pgtenant dev`.
pub struct DevOptions {
    pub port: u16,
    pub admin_port: u16,
    pub data_dir: Option<PathBuf>,
    /// session (the default) or transaction pooling.
    pub pool_mode: crate::config::PoolMode,
    /// Write the audit log here (`-`: stdout).
    pub audit_log: Option<PathBuf>,
}

/// Creates the roles and `database` (owned by the catalog owner) on a fresh
/// or existing cluster, migrates it and returns the config to serve it.
pub async fn prepare_database(cluster: &Cluster, database: &str) -> anyhow::Result<Config> {
    let admin = crate::pg_client::connect(&cluster.url(SUPERUSER, "postgres"))
        .await
        .context("cannot reach the private PostgreSQL")?;
    admin
        .batch_execute(&format!(
            "DO $$ BEGIN
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{OWNER_ROLE}') THEN
                    CREATE ROLE {OWNER_ROLE} LOGIN CREATEROLE CREATEDB;
                END IF;
                -- Provisioning schema and database tenants creates roles and databases.
                ALTER ROLE {OWNER_ROLE} CREATEROLE CREATEDB;
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                    CREATE ROLE {APP_ROLE} LOGIN;
                END IF;
                IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_READONLY_ROLE}') THEN
                    CREATE ROLE {APP_READONLY_ROLE} LOGIN;
                END IF;
             END $$;"
        ))
        .await
        .map_err(|e| anyhow::anyhow!(crate::pg_client::describe(&e)))?;
    let exists: bool =
        admin.query_one("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", &[&database]).await?.get(0);
    if !exists {
        admin
            .batch_execute(&format!("CREATE DATABASE {} OWNER {OWNER_ROLE}", crate::quote::quote_ident(database)))
            .await
            .map_err(|e| anyhow::anyhow!(crate::pg_client::describe(&e)))?;
    }
    let config = config_for(cluster, database)?;
    migrate::migrate_config(&config).await?;
    let superuser = crate::pg_client::connect(&cluster.url(SUPERUSER, database)).await?;
    migrate::apply_cluster_hardening(&superuser, OWNER_ROLE).await?;
    Ok(config)
}

/// The config that serves `database` of `cluster` (listeners on port 0).
pub fn config_for(cluster: &Cluster, database: &str) -> anyhow::Result<Config> {
    Ok(Config {
        proxy: ProxyConfig { listen: "127.0.0.1:0".parse()?, ..ProxyConfig::default() },
        admin: AdminConfig { listen: "127.0.0.1:0".parse()?, token: random_secret(32) },
        upstream: UpstreamConfig {
            url: cluster.url(APP_ROLE, database),
            readonly_url: Some(cluster.url(APP_READONLY_ROLE, database)),
            admin_url: None,
            connect_timeout_secs: 5,
        },
        control: ControlConfig { url: cluster.url(OWNER_ROLE, database), pool_size: 4 },
        pool: PoolSection::default(),
        tls: TlsConfig::default(),
        log: LogConfig::default(),
        metrics: Default::default(),
        audit: Default::default(),
        tenants: Default::default(),
        upstreams: Default::default(),
        provisioning: Default::default(),
        // Token logins with a secret of this run, over loopback without TLS.
        jwt: JwtConfig {
            issuer: Some(DEV_TOKEN_ISSUER.into()),
            audience: Some(DEV_TOKEN_AUDIENCE.into()),
            secret: Some(random_secret(48)),
            allow_plaintext_loopback: true,
            ..JwtConfig::default()
        },
    })
}

/// The `iss` and `aud` the dev config requires of tokens.
pub const DEV_TOKEN_ISSUER: &str = "pgtenant-dev";
pub const DEV_TOKEN_AUDIENCE: &str = "pgtenant";

/// A random alphanumeric string (safe in URLs and shells).
pub(crate) fn random_secret(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), len)
}

/// A directory removed when this goes out of scope.
struct RemovedOnDrop(PathBuf);

impl Drop for RemovedOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates (once) a demo tenant with a database or schema of its own, its
/// login, and — when new — its accounts, written through pgtenant itself.
async fn provision_demo_tenant(
    server: &crate::server::Server,
    demo: &DemoIsolatedTenant,
    password: &str,
) -> anyhow::Result<()> {
    let DemoIsolatedTenant { slug, name, isolation, login: username, accounts } = *demo;
    let state = &server.state;
    let tenant = match state.catalog.find_tenant(slug).await? {
        Some(tenant) => tenant,
        None => {
            let new =
                NewTenant { slug: slug.into(), name: name.into(), parent: None, id: None, isolation, upstream: None };
            state.catalog.create_tenant(&new).await?
        }
    };
    let fresh = tenant.status != TenantStatus::Active;
    if fresh {
        let version = state.provisioner.provision(&tenant.id, isolation, &tenant.upstream).await?;
        state.catalog.finish_provisioning(&tenant.id, Some(version)).await?;
    }
    state.catalog.upsert_login(username, slug, password, Access::Readwrite).await?;
    if fresh {
        let url = format!("postgres://{username}:{password}@{}/{DATABASE}", server.proxy_addr);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
        crate::pg_client::drive(connection);
        for (iban, holder, balance) in accounts {
            client
                .execute(
                    "INSERT INTO accounts (iban, holder, balance) VALUES ($1, $2, $3::text::numeric)",
                    &[iban, holder, balance],
                )
                .await?;
        }
    }
    Ok(())
}

/// Runs `pgtenant dev` until Ctrl-C or SIGTERM.
pub async fn run(options: DevOptions) -> anyhow::Result<()> {
    let data_dir = options.data_dir.clone();
    let mut cluster = tokio::task::spawn_blocking(move || Cluster::start(data_dir.as_deref())).await??;
    let result = serve_demo(&cluster, &options).await;
    tokio::task::spawn_blocking(move || cluster.stop()).await?;
    if options.data_dir.is_none() {
        eprintln!("pgtenant dev: stopped; the temporary cluster is removed");
    } else {
        eprintln!("pgtenant dev: stopped; the cluster is kept");
    }
    result
}

async fn serve_demo(cluster: &Cluster, options: &DevOptions) -> anyhow::Result<()> {
    let mut config = prepare_database(cluster, DATABASE).await?;
    config.proxy.listen = ([127, 0, 0, 1], options.port).into();
    config.admin.listen = ([127, 0, 0, 1], options.admin_port).into();
    config.pool.mode = options.pool_mode;
    if let Some(path) = &options.audit_log {
        config.audit.enabled = true;
        config.audit.path = Some(path.clone());
    }
    migrate::load_demo(&config.control.url).await?;
    // Beside the cluster, not in it: the cluster's directory belongs to its own user.
    let migrations =
        RemovedOnDrop(std::env::temp_dir().join(format!("pgtenant-dev-migrations-{}", std::process::id())));
    std::fs::create_dir_all(&migrations.0)?;
    for (file, sql) in DEMO_TENANT_MIGRATIONS {
        std::fs::write(migrations.0.join(file), sql)?;
    }
    config.provisioning.migrations = Some(migrations.0.clone());

    let catalog = Catalog::new(&config.control.url, 1)?;
    let mut logins = Vec::new();
    for (username, tenant, access) in DEMO_LOGINS {
        let password = random_secret(20);
        catalog.upsert_login(username, tenant, &password, *access).await?;
        logins.push((*username, *tenant, *access, password));
    }

    let server = crate::server::Server::start(&config).await?;
    let proxy = server.proxy_addr;
    for demo in DEMO_ISOLATED_TENANTS {
        let password = random_secret(20);
        provision_demo_tenant(&server, demo, &password).await.with_context(|| format!("demo tenant {}", demo.slug))?;
        logins.push((demo.login, demo.slug, Access::Readwrite, password));
    }
    println!("\npgtenant dev is ready.\n");
    println!("  proxy   postgres://{proxy}/{DATABASE}");
    println!("  admin   http://{}   (token: {})\n", server.admin_addr, config.admin.token);
    println!("Demo logins — paste one:");
    for (username, tenant, access, password) in &logins {
        println!(
            "  {tenant:<12} {access:<9}  psql \"postgres://{username}:{password}@{}:{}/{DATABASE}\"",
            proxy.ip(),
            proxy.port()
        );
    }
    if let Some(secret) = &config.jwt.secret {
        println!(
            "\nToken logins: user \"{}\", password a JWT (HS256, secret {secret}, iss {DEV_TOKEN_ISSUER}, aud \
             {DEV_TOKEN_AUDIENCE}, claim tenant_id = a tenant's id or slug)",
            config.jwt.username
        );
    }
    println!(
        "\nBehind the curtain (superuser, no tenant context): psql -h {} -p {} -U {SUPERUSER} {DATABASE}",
        cluster.socket_dir.display(),
        cluster.socket_port()
    );
    println!("Ctrl-C stops everything.\n");

    crate::shutdown::stop_signal().await;
    server.stop(Duration::from_secs(2)).await;
    Ok(())
}

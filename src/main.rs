//! The `pgtenant` command line: dev | migrate | serve.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use pgtenant::config::{Config, LogFormat};

#[derive(Parser)]
#[command(name = "pgtenant", version, about = "Multi-tenant PostgreSQL proxy: each login sees only its tenant's rows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Zero-setup demo: a private PostgreSQL with the fintech demo behind the proxy
    Dev {
        /// Port of the PostgreSQL proxy
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// Port of the HTTP admin sidecar
        #[arg(long, default_value_t = 8432)]
        admin_port: u16,
        /// Keep the cluster in this directory (created and initialised when empty)
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// When a server connection goes back to the pool: session or transaction
        #[arg(long, default_value = "session")]
        pool_mode: pgtenant::config::PoolMode,
        /// Write the audit log (one JSON line per statement) to this file, or - for stdout
        #[arg(long)]
        audit_log: Option<PathBuf>,
    },
    /// Install or upgrade the pgtenant schema and grants (idempotent)
    Migrate {
        /// Config file [default: $PGTENANT_CONFIG, then ./config.toml]
        #[arg(long)]
        config: Option<PathBuf>,
        /// Then bring every schema and database tenant to the newest tenant migration
        #[arg(long)]
        tenants: bool,
        /// Tenants migrated at once (with --tenants)
        #[arg(long, default_value_t = 4, requires = "tenants", value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: u16,
    },
    /// Run the proxy and the admin sidecar until SIGTERM
    Serve {
        /// Config file [default: $PGTENANT_CONFIG, then ./config.toml]
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match &cli.command {
        Command::Dev { .. } => None,
        Command::Migrate { config, .. } | Command::Serve { config } => match Config::load(config.as_deref()) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!("pgtenant: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let level = config.as_ref().map_or("info", |c| c.log.level.as_str());
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour only for a terminal: a log file gets plain text.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.as_ref().map_or(LogFormat::Text, |c| c.log.format) {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).with_span_list(true).init(),
    }

    let runtime = match config.as_ref().map_or(0, |c| c.proxy.worker_threads) {
        1 => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        0 => tokio::runtime::Builder::new_multi_thread().enable_all().build(),
        threads => tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build(),
    };
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("pgtenant: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        match (cli.command, config) {
            (Command::Dev { port, admin_port, data_dir, pool_mode, audit_log }, _) => {
                pgtenant::dev::run(pgtenant::dev::DevOptions { port, admin_port, data_dir, pool_mode, audit_log }).await
            }
            (Command::Migrate { tenants, jobs, .. }, Some(config)) => {
                migrate(&config).await?;
                if tenants {
                    migrate_tenants(&config, usize::from(jobs)).await?;
                }
                Ok(())
            }
            (Command::Serve { config: path }, Some(config)) => serve(&config, path.as_deref()).await,
            (_, None) => unreachable!("config is loaded for migrate and serve"),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgtenant: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn migrate(config: &Config) -> anyhow::Result<()> {
    let report = pgtenant::migrate::migrate_config(config).await?;
    if report.applied.is_empty() && report.granted.is_empty() && report.placements.is_empty() {
        println!("pgtenant migrate: already up to date");
    }
    for version in &report.applied {
        println!("pgtenant migrate: applied migration {version:04}");
    }
    for grant in &report.granted {
        println!("pgtenant migrate: granted {grant}");
    }
    for placement in &report.placements {
        println!("pgtenant migrate: upstream {placement} is up to date");
    }
    Ok(())
}

async fn migrate_tenants(config: &Config, jobs: usize) -> anyhow::Result<()> {
    use std::io::{IsTerminal, Write};
    let terminal = std::io::stderr().is_terminal();
    let report = pgtenant::migrate_tenants::migrate_tenants(config, jobs, |so_far, outcome| {
        let done = so_far.outcomes.len() + 1;
        let failed = so_far.failed().count() + usize::from(outcome.result.is_err());
        let mut err = std::io::stderr().lock();
        if terminal {
            let _ = write!(err, "\rtenants: {done}/{} done, {failed} failed", so_far.total);
            let _ = err.flush();
        } else {
            let what = match &outcome.result {
                Ok(version) => format!("at version {version}"),
                Err(e) => format!("FAILED: {e}"),
            };
            let _ = writeln!(err, "tenant {} {what} ({done}/{})", outcome.slug, so_far.total);
        }
    })
    .await?;
    if terminal {
        eprintln!();
    }
    let failed: Vec<&str> = report.failed().map(|o| o.slug.as_str()).collect();
    println!(
        "pgtenant migrate: {} tenant(s) at the newest migration, {} failed",
        report.total - failed.len(),
        failed.len()
    );
    for outcome in report.failed() {
        if let Err(e) = &outcome.result {
            println!("pgtenant migrate: tenant {} failed: {e}", outcome.slug);
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("tenant migrations failed for: {}", failed.join(", "));
    }
    Ok(())
}

async fn serve(config: &Config, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    use pgtenant::upstream::role_check::check_session_role;
    check_session_role("upstream.url", &config.upstream.url).await?;
    if let Some(url) = &config.upstream.readonly_url {
        check_session_role("upstream.readonly_url", url).await?;
    }
    use pgtenant::service_manager::{notify, reloading};
    let server = pgtenant::server::Server::start(config).await?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let stop = pgtenant::shutdown::stop_signal();
    tokio::pin!(stop);
    notify("READY=1\nSTATUS=serving");
    // SIGHUP and the admin console's RELOAD: the per-tenant limits of the file, for new sessions.
    let reload = |why: &str| {
        notify(&reloading());
        match Config::load(path) {
            Ok(reloaded) => server.reload(reloaded),
            Err(e) => tracing::error!(error = %e, "{why}: configuration not reloaded, the running one stays"),
        }
        notify("READY=1\nSTATUS=serving");
    };
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = server.reload_requested() => reload("RELOAD"),
            _ = hangup.recv() => reload("SIGHUP"),
        }
    }
    tracing::info!("shutting down");
    notify("STOPPING=1\nSTATUS=draining sessions");
    server.stop(Duration::from_secs(10)).await;
    Ok(())
}

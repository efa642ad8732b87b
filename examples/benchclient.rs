//! Load and connection-holding client for `scripts/bench` (not part of pgtenant).
//!
//! `benchclient load HOST PORT LOGINS CLIENTS SECONDS PASSWORD [ROWS_PER_LOGIN]`
//!   opens CLIENTS connections; connection i logs in as `<LOGINS prefix><i mod K>`
//!   (LOGINS is `prefix:K`), and runs, for SECONDS, the pgbench select-only
//!   transaction `SELECT abalance FROM pgbench_accounts WHERE aid = $1` with the
//!   extended protocol and a prepared statement, where aid is drawn from the
//!   rows of the login's tenant: login number k owns aids k*ROWS+1 ..= k*ROWS+ROWS
//!   (ROWS defaults to 1000). Prints `tps=… avg_ms=… txns=… errors=…`.
//!   A transaction that returns no row counts as an error (the row was not visible).
//!
//! `benchclient hold HOST PORT USER PASSWORD N`
//!   opens N authenticated connections (64 at a time), prints `held N`, and
//!   keeps them open until the process is killed (at most an hour).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_postgres::NoTls;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("load") => load(&args[2..]).await,
        Some("hold") => hold(&args[2..]).await,
        _ => anyhow::bail!("usage: benchclient load|hold …"),
    }
}

fn conninfo(host: &str, port: &str, user: &str, password: &str) -> String {
    format!("host={host} port={port} user={user} password={password} dbname=app application_name=benchclient connect_timeout=20")
}

async fn connect(info: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(info, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn connect_from(
    config: &tokio_postgres::Config,
    source: std::net::Ipv4Addr,
    target: std::net::SocketAddr,
) -> anyhow::Result<tokio_postgres::Client> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((source, 0).into())?;
    let stream = socket.connect(target).await?;
    let (client, conn) = config.connect_raw(stream, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

async fn load(args: &[String]) -> anyhow::Result<()> {
    let [host, port, logins, clients, seconds, password, rest @ ..] = args else {
        anyhow::bail!("load HOST PORT PREFIX:K CLIENTS SECONDS PASSWORD [ROWS]");
    };
    let (prefix, k) = logins.split_once(':').ok_or_else(|| anyhow::anyhow!("LOGINS is prefix:K"))?;
    let k: u64 = k.parse()?;
    let clients: u64 = clients.parse()?;
    let seconds: u64 = seconds.parse()?;
    let rows: i32 = rest.first().map(|s| s.parse()).transpose()?.unwrap_or(1000);

    // Connect everyone first (bounded concurrency), then start the clock.
    let mut conns = Vec::with_capacity(clients as usize);
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut handles = Vec::new();
    for i in 0..clients {
        let login = i % k;
        let info = conninfo(host, port, &format!("{prefix}{login}"), password);
        let sem = sem.clone();
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            let client = connect(&info).await?;
            let stmt = client.prepare("SELECT abalance FROM pgbench_accounts WHERE aid = $1").await?;
            anyhow::Ok((login, client, stmt))
        }));
    }
    for h in handles {
        conns.push(h.await??);
    }

    let txns = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let lat_us = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (login, client, stmt) in conns {
        let (txns, errors, lat_us) = (txns.clone(), errors.clone(), lat_us.clone());
        tasks.push(tokio::spawn(async move {
            let base = login as i32 * rows;
            loop {
                let t0 = Instant::now();
                if t0 >= deadline {
                    break;
                }
                let aid: i32 = base + rand::thread_rng().gen_range(1..=rows);
                match client.query_opt(&stmt, &[&aid]).await {
                    Ok(Some(_)) => {
                        txns.fetch_add(1, Ordering::Relaxed);
                        lat_us.fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                    }
                    Ok(None) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("error: {e:?}");
                        }
                        if client.is_closed() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let n = txns.load(Ordering::Relaxed);
    let avg_ms = if n > 0 { lat_us.load(Ordering::Relaxed) as f64 / n as f64 / 1000.0 } else { 0.0 };
    println!(
        "tps={:.1} avg_ms={:.3} txns={} errors={} clients={} logins={}",
        n as f64 / elapsed,
        avg_ms,
        n,
        errors.load(Ordering::Relaxed),
        clients,
        k.min(clients)
    );
    Ok(())
}

async fn hold(args: &[String]) -> anyhow::Result<()> {
    let [host, port, user, password, n] = args else {
        anyhow::bail!("hold HOST PORT USER PASSWORD N");
    };
    let n: usize = n.parse()?;
    let config: tokio_postgres::Config = conninfo(host, port, user, password).parse()?;
    let target: std::net::SocketAddr = format!("{host}:{port}").parse()?;
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (sem, config) = (sem.clone(), config.clone());
        // One loopback source address per 20,000 connections: a single one
        // has fewer ephemeral ports than 100,000 connections need.
        let source = std::net::Ipv4Addr::new(127, 0, 0, 1 + (i / 20_000) as u8);
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire().await;
            connect_from(&config, source, target).await
        }));
    }
    let mut held = Vec::with_capacity(n);
    let mut failed = 0;
    for h in handles {
        match h.await? {
            Ok(c) => held.push(c),
            Err(e) => {
                if failed < 3 {
                    eprintln!("connect failed: {e:?}");
                }
                failed += 1;
            }
        }
    }
    println!("held {} failed {}", held.len(), failed);
    // Keep them until the process is killed (at most an hour).
    tokio::time::sleep(Duration::from_secs(3600)).await;
    drop(held);
    Ok(())
}

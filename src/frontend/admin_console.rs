//! The admin console (SPEC §5), for people with PgBouncer habits:
//! `psql -h … -p 6432 -d pgtenant -U pgtenant` with `admin.token` as the
//! password. It answers SHOW POOLS / CLIENTS / SERVERS / STATS / TENANTS /
//! CONFIG / VERSION / HELP, KILL_CLIENT <id>, RELOAD, PAUSE and RESUME itself, over the simple query
//! protocol, and never reaches a PostgreSQL server. No tenant login can reach
//! it: the console is chosen by user and database name before any login
//! lookup, it authenticates against the admin token only, and the admin API
//! refuses `pgtenant` as a login's user name.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::stream::ClientStream;
use crate::error::{sqlstate, ClientError};
use crate::protocol::backend::{self, put_cstr, write_message};
use crate::protocol::frame::peek_header;
use crate::protocol::messages::{client, Query};
use crate::proxy::ProxyState;

/// The user name and database that open the console.
pub(crate) const CONSOLE_USER: &str = "pgtenant";
pub(crate) const CONSOLE_DATABASE: &str = "pgtenant";

/// Largest statement the console reads.
const MAX_COMMAND: usize = 64 * 1024;

/// True when a startup packet asks for the console.
pub(crate) fn is_console(user: &str, database: Option<&str>) -> bool {
    user == CONSOLE_USER && database.unwrap_or(user) == CONSOLE_DATABASE
}

/// Authenticates the console's user and serves its commands until it leaves.
pub(crate) async fn serve(
    socket: &mut ClientStream,
    inbuf: &mut BytesMut,
    state: &ProxyState,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
) -> Result<(), ClientError> {
    let binding = if socket.is_tls() { state.tls.as_ref().map(|tls| tls.end_point_hash) } else { None };
    let authenticated = super::auth::authenticate_console(socket, inbuf, state, binding.as_ref(), peer.ip());
    tokio::time::timeout_at(deadline, authenticated)
        .await
        .map_err(|_| ClientError::fatal(sqlstate::CONNECTION_FAILURE, "startup and authentication timed out"))??;
    tracing::info!("admin console session started");
    let mut out = BytesMut::with_capacity(512);
    for (name, value) in [
        ("server_version", "15.0 (pgtenant admin console)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
        ("application_name", ""),
    ] {
        backend::parameter_status(&mut out, name, value);
    }
    backend::ready_for_query(&mut out, b'I');
    send(socket, &mut out).await?;
    // After an error in an extended-protocol batch, messages up to Sync are skipped.
    let mut skipping = false;
    loop {
        let frame = read_frame(socket, inbuf).await?;
        match frame.first().copied() {
            Some(client::TERMINATE) | None => return Ok(()),
            Some(client::QUERY) => {
                let text = Query::read(&frame).map(|q| String::from_utf8_lossy(q.sql).into_owned()).unwrap_or_default();
                match run(&text, state).await {
                    Ok(reply) => out.extend_from_slice(&reply),
                    Err(error) => error.encode(&mut out),
                }
                backend::ready_for_query(&mut out, b'I');
            }
            Some(client::SYNC) => {
                skipping = false;
                backend::ready_for_query(&mut out, b'I');
            }
            Some(_) if skipping => {}
            Some(_) => {
                skipping = true;
                ClientError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "the admin console takes simple queries only (psql, or a driver's simple protocol)",
                )
                .encode(&mut out);
            }
        }
        send(socket, &mut out).await?;
    }
}

async fn send(socket: &mut ClientStream, out: &mut BytesMut) -> Result<(), ClientError> {
    socket.write_all(out).await.map_err(|_| super::failures::client_lost("the admin console"))?;
    out.clear();
    Ok(())
}

async fn read_frame(socket: &mut ClientStream, inbuf: &mut BytesMut) -> Result<BytesMut, ClientError> {
    loop {
        match peek_header(inbuf, MAX_COMMAND) {
            Ok(Some(header)) if inbuf.len() >= header.frame_len => return Ok(inbuf.split_to(header.frame_len)),
            Ok(_) => {}
            Err(_) => return Err(ClientError::protocol_violation("invalid message for the admin console")),
        }
        if socket.read_buf(inbuf).await.map_err(|_| super::failures::client_lost("the admin console"))? == 0 {
            return Ok(BytesMut::new());
        }
    }
}

/// A result set: column names and rows of text.
struct Table {
    columns: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

/// Runs one console command; the reply's messages, without ReadyForQuery.
async fn run(text: &str, state: &ProxyState) -> Result<BytesMut, ClientError> {
    let command = text.trim().trim_end_matches(';').trim();
    let words: Vec<String> = command.split_whitespace().map(str::to_ascii_uppercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let mut out = BytesMut::new();
    match words.as_slice() {
        [] => write_message(&mut out, b'I', |_| {}),
        ["SHOW", what] => {
            let table = show(what, state).await?;
            write_table(&mut out, &table);
            command_complete(&mut out, "SHOW");
        }
        ["RELOAD"] => {
            if !state.reloadable.load(std::sync::atomic::Ordering::Relaxed) {
                return Err(ClientError::error(
                    sqlstate::FEATURE_NOT_SUPPORTED,
                    "this process has no configuration file to reload (pgtenant dev)",
                ));
            }
            state.reload_requests.notify_one();
            command_complete(&mut out, "RELOAD");
        }
        ["PAUSE"] | ["PAUSE", _] | ["RESUME"] | ["RESUME", _] => {
            if let Some(database) = words.get(1) {
                if !database.eq_ignore_ascii_case(&state.database) {
                    return Err(ClientError::error(
                        sqlstate::UNDEFINED_OBJECT,
                        format!("no database {:?} here; this process serves {:?}", truncate(database), state.database),
                    ));
                }
            }
            if words[0] == "PAUSE" {
                state.pause.pause();
                // As PgBouncer's: it returns once no server connection is in use.
                while state.routes.pools().iter().any(|entry| entry.pool.figures().active > 0) {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                command_complete(&mut out, "PAUSE");
            } else {
                state.pause.resume();
                command_complete(&mut out, "RESUME");
            }
        }
        ["KILL_CLIENT", id] => {
            let id: i32 = id.parse().map_err(|_| unknown_client(id))?;
            let ended = state.sessions.terminate(
                id,
                ClientError::fatal(sqlstate::ADMIN_SHUTDOWN, "terminating connection due to administrator command"),
            );
            if !ended {
                return Err(unknown_client(&id.to_string()));
            }
            command_complete(&mut out, "KILL_CLIENT");
        }
        _ => {
            return Err(ClientError::error(
                sqlstate::SYNTAX_ERROR,
                format!("unknown admin console command {:?}; SHOW HELP lists them", truncate(command)),
            ))
        }
    }
    Ok(out)
}

fn unknown_client(id: &str) -> ClientError {
    ClientError::error(sqlstate::UNDEFINED_OBJECT, format!("no client session {:?}", truncate(id)))
}

fn truncate(text: &str) -> String {
    text.chars().take(64).collect()
}

async fn show(what: &str, state: &ProxyState) -> Result<Table, ClientError> {
    Ok(match what {
        "HELP" => Table {
            columns: vec!["command", "shows"],
            rows: [
                ("SHOW POOLS", "each pool: clients waiting, server connections active and idle, mode"),
                ("SHOW CLIENTS", "each client session: user, tenant, address, state"),
                ("SHOW SERVERS", "server connections by pool and state"),
                ("SHOW STATS", "per tenant: transactions, queries, bytes, times"),
                ("SHOW TENANTS", "the tenants in the catalog"),
                ("SHOW CONFIG", "the settings in effect (no secrets)"),
                ("SHOW VERSION", "pgtenant's version"),
                ("KILL_CLIENT <id>", "end a client session (57P01), as DELETE /v1/sessions/{id}"),
                ("RELOAD", "re-read the configuration file, as SIGHUP (pgtenant serve)"),
                ("PAUSE [db]", "hold every new checkout of a server connection; returns once none is in use"),
                ("RESUME [db]", "let the held clients go on"),
            ]
            .iter()
            .map(|(c, s)| vec![c.to_string(), s.to_string()])
            .collect(),
        },
        "VERSION" => {
            Table { columns: vec!["version"], rows: vec![vec![format!("pgtenant {}", env!("CARGO_PKG_VERSION"))]] }
        }
        "POOLS" => Table {
            columns: vec![
                "database",
                "user",
                "cl_waiting",
                "sv_active",
                "sv_idle",
                "maxwait",
                "pool_mode",
                "max_size",
                "upstream",
                "access",
                "tenant_id",
            ],
            rows: state
                .routes
                .pools()
                .iter()
                .map(|entry| {
                    let f = entry.pool.figures();
                    vec![
                        entry.pool.target().database.clone(),
                        entry.pool.target().user.clone(),
                        (f.waiting + state.pause.waiting()).to_string(),
                        f.active.to_string(),
                        f.idle.to_string(),
                        "0".to_owned(),
                        state.pool_mode.as_str().to_owned(),
                        f.max_size.to_string(),
                        entry.upstream.clone(),
                        entry.access.as_str().to_owned(),
                        entry.tenant_id.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        },
        "SERVERS" => Table {
            columns: vec!["database", "user", "state", "count", "upstream"],
            rows: state
                .routes
                .pools()
                .iter()
                .flat_map(|entry| {
                    let f = entry.pool.figures();
                    [("active", f.active), ("idle", f.idle)].map(|(name, count)| {
                        vec![
                            entry.pool.target().database.clone(),
                            entry.pool.target().user.clone(),
                            name.to_owned(),
                            count.to_string(),
                            entry.upstream.clone(),
                        ]
                    })
                })
                .collect(),
        },
        "CLIENTS" => Table {
            columns: vec![
                "type",
                "user",
                "database",
                "state",
                "addr",
                "port",
                "connect_time",
                "id",
                "tenant",
                "application_name",
            ],
            rows: state
                .sessions
                .list()
                .into_iter()
                .map(|s| {
                    let identity = s.identity;
                    vec![
                        "C".to_owned(),
                        identity.username,
                        state.database.clone(),
                        s.state.as_str().to_owned(),
                        identity.client_addr.ip().to_string(),
                        identity.client_addr.port().to_string(),
                        crate::rfc3339::rfc3339(identity.connected_at),
                        s.id.to_string(),
                        identity.tenant_slug,
                        identity.application_name,
                    ]
                })
                .collect(),
        },
        "STATS" => Table {
            columns: vec![
                "tenant",
                "total_xact_count",
                "total_query_count",
                "total_received",
                "total_sent",
                "total_xact_time",
                "total_wait_time",
                "total_errors",
                "sessions_open",
            ],
            rows: state
                .tenant_stats
                .all()
                .into_iter()
                .map(|f| {
                    vec![
                        f.slug.clone(),
                        f.transactions.to_string(),
                        f.queries.to_string(),
                        f.received_bytes.to_string(),
                        f.sent_bytes.to_string(),
                        micros(f.transaction_seconds),
                        micros(f.server_wait_seconds),
                        f.errors.values().sum::<u64>().to_string(),
                        f.sessions_open.to_string(),
                    ]
                })
                .collect(),
        },
        "TENANTS" => Table {
            columns: vec!["id", "slug", "name", "parent_id", "status", "isolation", "upstream"],
            rows: state
                .catalog
                .list_tenants(None)
                .await
                .map_err(|e| {
                    ClientError::error(sqlstate::CONNECTION_FAILURE, format!("the catalog did not answer: {e}"))
                })?
                .into_iter()
                .map(|t| {
                    vec![
                        t.id,
                        t.slug,
                        t.name,
                        t.parent_id.unwrap_or_default(),
                        t.status.as_str().to_owned(),
                        t.isolation.as_str().to_owned(),
                        t.upstream,
                    ]
                })
                .collect(),
        },
        "CONFIG" => Table { columns: vec!["key", "value"], rows: config_rows(state) },
        other => {
            return Err(ClientError::error(
                sqlstate::SYNTAX_ERROR,
                format!("unknown SHOW {:?}; SHOW HELP lists what there is", truncate(other)),
            ))
        }
    })
}

fn micros(seconds: f64) -> String {
    format!("{:.0}", seconds * 1e6)
}

/// The settings in effect that carry no secret (no token, no URL, no key).
fn config_rows(state: &ProxyState) -> Vec<Vec<String>> {
    let config = state.limits.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
    let rows: Vec<(&str, String)> = vec![
        ("proxy.listen", config.proxy.listen.to_string()),
        ("proxy.tenant_setting", config.proxy.tenant_setting.clone()),
        ("proxy.max_client_connections", config.proxy.max_client_connections.to_string()),
        ("proxy.statement_guard", config.proxy.statement_guard.to_string()),
        ("admin.listen", config.admin.listen.to_string()),
        ("pool.mode", config.pool.mode.as_str().to_owned()),
        ("pool.size", config.pool.size.to_string()),
        ("pool.max_per_tenant", config.pool.max_per_tenant.to_string()),
        ("pool.statement_timeout_ms", config.pool.statement_timeout_ms.to_string()),
        ("pool.checkout_timeout_secs", config.pool.checkout_timeout_secs.to_string()),
        ("metrics.tenant_labels", config.metrics.tenant_labels.to_string()),
        ("audit.enabled", config.audit.enabled.to_string()),
        ("log.level", config.log.level.clone()),
    ];
    rows.into_iter().map(|(k, v)| vec![k.to_owned(), v]).collect()
}

fn write_table(out: &mut BytesMut, table: &Table) {
    write_message(out, b'T', |b| {
        b.extend_from_slice(&(table.columns.len() as i16).to_be_bytes());
        for column in &table.columns {
            put_cstr(b, column);
            b.extend_from_slice(&0i32.to_be_bytes()); // table oid
            b.extend_from_slice(&0i16.to_be_bytes()); // column number
            b.extend_from_slice(&25i32.to_be_bytes()); // text
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes()); // text format
        }
    });
    for row in &table.rows {
        write_message(out, b'D', |b| {
            b.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for value in row {
                b.extend_from_slice(&(value.len() as i32).to_be_bytes());
                b.extend_from_slice(value.as_bytes());
            }
        });
    }
}

fn command_complete(out: &mut BytesMut, tag: &str) {
    write_message(out, b'C', |b| put_cstr(b, tag));
}

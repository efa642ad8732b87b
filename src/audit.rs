//! The audit log (`[audit]`): who ran what, as which tenant. One JSON line
//! per client request that runs statements — a simple Query (all its
//! statements) or an Execute of a prepared statement — or, at
//! `level = "transaction"`, one per transaction; with the time, this
//! process, the session, login, tenant, client address and
//! application_name, the statement text (literals replaced by `$n` unless
//! `redact_literals = false`, by PostgreSQL's own parser), how long it took,
//! the rows it returned or changed, its SQLSTATE when it failed, and whether
//! pgtenant's guard refused it. Written to a file (reopened on SIGHUP, for
//! logrotate) or stdout by one task, so sessions never wait on the disk;
//! when the writer falls behind by more than 65,536 lines, lines are dropped
//! and counted (`pgtenant_audit_dropped_total`) rather than slowing clients.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::{AuditConfig, AuditLevel};

/// Lines waiting for the writer, at most.
const QUEUE: usize = 65_536;
/// Prepared statements and portals a session's trail remembers the text of.
const MAX_NAMES: usize = 1_024;
/// Normalised statement texts kept per process.
const MAX_NORMALISED: usize = 4_096;

/// Counter: audit lines dropped because the writer fell behind.
pub(crate) const AUDIT_DROPPED: &str = "pgtenant_audit_dropped_total";

/// The process's audit log: where sessions send their lines.
pub(crate) struct AuditLog {
    config: AuditConfig,
    lines: mpsc::Sender<Queued>,
    normalised: Mutex<HashMap<Arc<str>, Arc<str>>>,
}

enum Queued {
    Record(String),
    /// Close and open the file again (SIGHUP).
    Reopen,
}

impl AuditLog {
    /// Starts the writer; `None` when auditing is off.
    pub(crate) fn start(config: &AuditConfig) -> std::io::Result<Option<Arc<AuditLog>>> {
        if !config.enabled {
            return Ok(None);
        }
        let (lines, queue) = mpsc::channel(QUEUE);
        let sink = Sink::open(config.path.as_deref())?;
        std::thread::Builder::new().name("pgtenant-audit".into()).spawn(move || write_lines(sink, queue))?;
        Ok(Some(Arc::new(AuditLog { config: config.clone(), lines, normalised: Mutex::new(HashMap::new()) })))
    }

    /// Reopens the file (after logrotate moved it).
    pub(crate) fn reopen(&self) {
        let _ = self.lines.try_send(Queued::Reopen);
    }

    /// A trail for one session, or none when the tenant is not sampled.
    pub(crate) fn trail(self: &Arc<Self>, who: SessionFacts) -> AuditTrail {
        AuditTrail {
            log: Arc::clone(self),
            who: Arc::new(who),
            pending: VecDeque::new(),
            batches_sent: 0,
            batches_answered: 0,
            names: Names::default(),
            transaction: None,
        }
    }

    fn sampled(&self, tenant: &str) -> bool {
        let rate = self.config.tenant_sample_rates.get(tenant).copied().unwrap_or(self.config.sample_rate);
        rate >= 1.0 || (rate > 0.0 && rand::random::<f64>() < rate)
    }

    /// The text as logged: literals replaced by `$n` when redacting.
    fn statement_text(&self, sql: &Arc<str>) -> Arc<str> {
        if !self.config.redact_literals {
            return Arc::clone(sql);
        }
        let mut cache = self.normalised.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(text) = cache.get(sql) {
            return Arc::clone(text);
        }
        // Text the parser cannot read is not logged at all: it could hold anything.
        let text: Arc<str> = pg_query::normalize(sql).map_or_else(|_| Arc::from("(unparsable statement)"), Arc::from);
        if cache.len() >= MAX_NORMALISED {
            cache.clear();
        }
        cache.insert(Arc::clone(sql), Arc::clone(&text));
        text
    }

    fn send(&self, record: &Record<'_>) {
        let Ok(line) = serde_json::to_string(record) else { return };
        if self.lines.try_send(Queued::Record(line)).is_err() {
            metrics::counter!(AUDIT_DROPPED).increment(1);
        }
    }
}

/// Who a session is, for every line of it.
#[derive(Debug, Clone)]
pub(crate) struct SessionFacts {
    pub session: i32,
    pub login: String,
    pub tenant: String,
    pub client_addr: SocketAddr,
    pub application_name: String,
}

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    process: u32,
    session: i32,
    login: &'a str,
    tenant: &'a str,
    tenant_id: &'a str,
    client_addr: String,
    application_name: &'a str,
    statement: &'a str,
    duration_ms: f64,
    rows: u64,
    sqlstate: Option<&'a str>,
    refused: bool,
}

/// One client request that runs statements, until it is answered.
struct Request {
    sql: Arc<str>,
    /// The tenant it ran as (a service login's assumed one).
    tenant_id: String,
    /// An Execute is answered by its own completion; a Query by ReadyForQuery.
    extended: bool,
    sent: Instant,
    rows: u64,
    sqlstate: Option<String>,
    refused: bool,
    done: Option<Instant>,
    /// Which of the session's batches (a Query, or messages up to a Sync) it is in.
    batch: u64,
}

/// The texts of a session's prepared statements and portals.
#[derive(Default)]
struct Names {
    statements: HashMap<String, Arc<str>>,
    portals: HashMap<String, Arc<str>>,
}

/// A transaction's requests, folded together (`level = "transaction"`).
struct Transaction {
    statements: Vec<Arc<str>>,
    tenant_id: String,
    began: Instant,
    rows: u64,
    sqlstate: Option<String>,
    refused: bool,
}

/// What one session's relay tells the audit log.
pub(crate) struct AuditTrail {
    log: Arc<AuditLog>,
    who: Arc<SessionFacts>,
    pending: VecDeque<Request>,
    /// Batches the client sent (each Query, Sync and FunctionCall ends one)
    /// and those a ReadyForQuery answered: a client that pipelines its next
    /// Query before the last one's ReadyForQuery keeps it out of that answer.
    batches_sent: u64,
    batches_answered: u64,
    names: Names,
    transaction: Option<Transaction>,
}

impl AuditTrail {
    /// A client message, whole: Query, Parse, Bind and Execute are noted.
    pub(crate) fn client_message(&mut self, tag: u8, frame: &[u8], tenant_id: impl FnOnce() -> String) {
        use crate::protocol::messages::{client, Bind, Parse, Query};
        match tag {
            client::QUERY => {
                if let Some(query) = Query::read(frame) {
                    self.request(text(query.sql), false, tenant_id());
                }
                self.batch_sent();
            }
            client::SYNC | client::FUNCTION_CALL => self.batch_sent(),
            client::PARSE => {
                if let Some(parse) = Parse::read(frame) {
                    remember(&mut self.names.statements, parse.name, text(parse.sql));
                }
            }
            client::BIND => {
                if let Some(bind) = Bind::read(frame) {
                    let sql = self.names.statements.get(bind.statement).cloned().unwrap_or_else(|| Arc::from(""));
                    remember(&mut self.names.portals, bind.portal, sql);
                }
            }
            client::EXECUTE => {
                let portal = crate::protocol::messages::body(frame)
                    .and_then(|body| body.split(|b| *b == 0).next())
                    .and_then(|name| std::str::from_utf8(name).ok())
                    .unwrap_or_default();
                let sql = self.names.portals.get(portal).cloned().unwrap_or_else(|| Arc::from(""));
                self.request(sql, true, tenant_id());
            }
            _ => {}
        }
    }

    /// A Sync or FunctionCall went to the server (a Query counts itself).
    pub(crate) fn batch_sent(&mut self) {
        self.batches_sent += 1;
    }

    fn request(&mut self, sql: Arc<str>, extended: bool, tenant_id: String) {
        let batch = self.batches_sent;
        self.pending.push_back(Request {
            batch,
            sql,
            tenant_id,
            extended,
            sent: Instant::now(),
            rows: 0,
            sqlstate: None,
            refused: false,
            done: None,
        });
    }

    /// The request the next server reply answers.
    fn current(&mut self) -> Option<&mut Request> {
        self.pending.iter_mut().find(|r| r.done.is_none())
    }

    /// CommandComplete: rows from its tag; an Execute is answered.
    pub(crate) fn command_complete(&mut self, frame: &[u8]) {
        let rows = crate::protocol::messages::body(frame)
            .and_then(|body| body.strip_suffix(&[0]))
            .and_then(|tag| tag.rsplit(|b| *b == b' ').next())
            .and_then(|n| std::str::from_utf8(n).ok())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if let Some(request) = self.current() {
            request.rows += rows;
            if request.extended {
                request.done = Some(Instant::now());
            }
        }
    }

    /// EmptyQueryResponse or PortalSuspended: an Execute is answered.
    pub(crate) fn execute_answered(&mut self) {
        if let Some(request) = self.current() {
            if request.extended {
                request.done = Some(Instant::now());
            }
        }
    }

    /// An error the client gets; `refused` when it is the guard's refusal.
    pub(crate) fn error(&mut self, sqlstate: Option<String>, refused: bool) {
        if let Some(request) = self.current() {
            request.sqlstate = sqlstate;
            request.refused = refused;
            request.done = Some(Instant::now());
        }
    }

    /// ReadyForQuery: the requests of the oldest unanswered batch are over;
    /// those that got no reply (skipped after an error) never ran and are not
    /// logged. Requests of later batches (pipelined) wait for their own.
    pub(crate) fn ready(&mut self, idle: bool) {
        let now = Instant::now();
        let level = self.log.config.level;
        let answered = self.batches_answered;
        self.batches_answered = (answered + 1).min(self.batches_sent);
        while self.pending.front().is_some_and(|r| r.batch <= answered) {
            let Some(mut request) = self.pending.pop_front() else { break };
            if request.extended && request.done.is_none() {
                continue;
            }
            let done = *request.done.get_or_insert(now);
            match level {
                AuditLevel::Statement => self.write(&request, done),
                AuditLevel::Transaction => {
                    let transaction = self.transaction.get_or_insert_with(|| Transaction {
                        statements: Vec::new(),
                        tenant_id: request.tenant_id.clone(),
                        began: request.sent,
                        rows: 0,
                        sqlstate: None,
                        refused: false,
                    });
                    transaction.statements.push(request.sql);
                    transaction.rows += request.rows;
                    transaction.refused |= request.refused;
                    if transaction.sqlstate.is_none() {
                        transaction.sqlstate = request.sqlstate.take();
                    }
                }
            }
        }
        if idle {
            if let Some(transaction) = self.transaction.take() {
                let texts: Vec<Arc<str>> = transaction.statements.iter().map(|s| self.log.statement_text(s)).collect();
                let joined: Vec<&str> = texts.iter().map(|s| &**s).collect();
                self.write_text(&Line {
                    statement: &joined.join("; "),
                    tenant_id: &transaction.tenant_id,
                    sent: transaction.began,
                    done: now,
                    rows: transaction.rows,
                    sqlstate: transaction.sqlstate.as_deref(),
                    refused: transaction.refused,
                });
            }
        }
    }

    fn write(&self, request: &Request, done: Instant) {
        let text = self.log.statement_text(&request.sql);
        self.write_text(&Line {
            statement: &text,
            tenant_id: &request.tenant_id,
            sent: request.sent,
            done,
            rows: request.rows,
            sqlstate: request.sqlstate.as_deref(),
            refused: request.refused,
        });
    }

    fn write_text(&self, line: &Line<'_>) {
        if !self.log.sampled(&self.who.tenant) {
            return;
        }
        let who = &self.who;
        self.log.send(&Record {
            time: crate::rfc3339::rfc3339(SystemTime::now()),
            process: std::process::id(),
            session: who.session,
            login: &who.login,
            tenant: &who.tenant,
            tenant_id: line.tenant_id,
            client_addr: who.client_addr.to_string(),
            application_name: &who.application_name,
            statement: line.statement,
            duration_ms: line.done.saturating_duration_since(line.sent).as_secs_f64() * 1000.0,
            rows: line.rows,
            sqlstate: line.sqlstate,
            refused: line.refused,
        });
    }
}

/// What one line says beyond who the session is.
struct Line<'a> {
    statement: &'a str,
    tenant_id: &'a str,
    sent: Instant,
    done: Instant,
    rows: u64,
    sqlstate: Option<&'a str>,
    refused: bool,
}

/// Statement text as sent, lossily as UTF-8 (the server's encoding is UTF-8).
fn text(sql: &[u8]) -> Arc<str> {
    Arc::from(String::from_utf8_lossy(sql).as_ref())
}

fn remember(names: &mut HashMap<String, Arc<str>>, name: &str, sql: Arc<str>) {
    if names.len() >= MAX_NAMES && !names.contains_key(name) {
        names.clear();
    }
    names.insert(name.to_owned(), sql);
}

/// Where lines go.
enum Sink {
    Stdout,
    File { path: PathBuf, file: std::io::BufWriter<std::fs::File> },
}

impl Sink {
    fn open(path: Option<&std::path::Path>) -> std::io::Result<Sink> {
        match path {
            None => Ok(Sink::Stdout),
            Some(path) if path.as_os_str() == "-" => Ok(Sink::Stdout),
            Some(path) => {
                let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
                Ok(Sink::File { path: path.to_owned(), file: std::io::BufWriter::new(file) })
            }
        }
    }

    fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")
            }
            Sink::File { file, .. } => {
                file.write_all(line.as_bytes())?;
                file.write_all(b"\n")
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Stdout => std::io::stdout().flush(),
            Sink::File { file, .. } => file.flush(),
        }
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        self.flush()?;
        if let Sink::File { path, .. } = self {
            *self = Sink::open(Some(&path.clone()))?;
        }
        Ok(())
    }
}

/// The writer: lines as they come, flushed whenever the queue is empty.
fn write_lines(mut sink: Sink, mut queue: mpsc::Receiver<Queued>) {
    while let Some(line) = queue.blocking_recv() {
        let mut next = Some(line);
        while let Some(line) = next.take() {
            let result = match line {
                Queued::Record(text) => sink.write_line(&text),
                Queued::Reopen => sink.reopen(),
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "cannot write the audit log");
            }
            next = queue.try_recv().ok();
        }
        if let Err(e) = sink.flush() {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}

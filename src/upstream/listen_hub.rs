//! One listening server connection per pool, for the clients of transaction
//! pooling: it LISTENs on every (tenant-scoped) channel some client listens
//! on, and hands each NotificationResponse to the clients that listen on its
//! channel, so that LISTEN no longer pins a client to a server session.
//!
//! The hub is one task that owns its connection and every subscription, so
//! nothing here is shared behind a lock: sessions talk to it through a
//! command queue. A channel is LISTENed when its first client arrives and
//! UNLISTENed when its last one leaves; the connection is opened on the
//! first LISTEN and closed when no channel is left. When the connection
//! breaks, every subscriber's queue closes: its session ends as it would if
//! its own server session had gone, and no notification is silently lost.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::connect::{connect, read_message, UpstreamTarget};
use super::stream::ServerStream;
use crate::protocol::backend::{put_cstr, write_message};
use crate::protocol::messages::{client, error_fields, server};
use crate::quote::quote_ident;

/// A notification as the hub's connection received it (server channel name).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct HubNotification {
    /// The server backend that ran the NOTIFY.
    pub pid: i32,
    pub channel: String,
    pub payload: String,
}

/// What a subscriber receives.
pub(crate) type NotificationQueue = mpsc::UnboundedReceiver<Arc<HubNotification>>;

enum Command {
    Join { client: i32, queue: mpsc::UnboundedSender<Arc<HubNotification>> },
    Listen { client: i32, channel: String, listening: oneshot::Sender<Result<(), String>> },
    Unlisten { client: i32, channel: String },
    Leave { client: i32 },
}

/// The handle sessions share (cheap to clone).
#[derive(Clone)]
pub(crate) struct ListenHub {
    commands: mpsc::UnboundedSender<Command>,
}

impl ListenHub {
    /// Starts the hub's task for the pool of `target`.
    pub(crate) fn start(target: UpstreamTarget) -> ListenHub {
        let (commands, receiver) = mpsc::unbounded_channel();
        tokio::spawn(Hub::new(target).run(receiver));
        ListenHub { commands }
    }

    /// Joins as `client` (its cancel-key id): the returned subscriber listens
    /// through the hub and leaves it when dropped.
    pub(crate) fn join(&self, client: i32) -> (Subscriber, NotificationQueue) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let _ = self.commands.send(Command::Join { client, queue });
        (Subscriber { hub: self.clone(), client }, receiver)
    }
}

/// One session's membership of the hub.
pub(crate) struct Subscriber {
    hub: ListenHub,
    client: i32,
}

impl Subscriber {
    /// Listens on the server `channel`; returns once the hub's connection is
    /// listening on it, so that a notification sent after the client's own
    /// LISTEN is not missed.
    pub(crate) async fn listen(&self, channel: &str) -> Result<(), String> {
        let (listening, done) = oneshot::channel();
        let command = Command::Listen { client: self.client, channel: channel.to_owned(), listening };
        if self.hub.commands.send(command).is_err() {
            return Err("the listening connection's task has ended".into());
        }
        done.await.unwrap_or_else(|_| Err("the listening connection closed".into()))
    }

    /// Stops listening on the server `channel`.
    pub(crate) fn unlisten(&self, channel: &str) {
        let _ = self.hub.commands.send(Command::Unlisten { client: self.client, channel: channel.to_owned() });
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.hub.commands.send(Command::Leave { client: self.client });
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verb {
    Listen,
    Unlisten,
}

/// A statement sent on the hub's connection and not yet answered.
struct InFlight {
    /// The channel a LISTEN is for (None for UNLISTEN).
    listen: Option<String>,
    failure: Option<String>,
}

struct Connection {
    stream: ServerStream,
    inbuf: BytesMut,
}

struct Hub {
    target: UpstreamTarget,
    connection: Option<Connection>,
    queues: HashMap<i32, mpsc::UnboundedSender<Arc<HubNotification>>>,
    /// Server channel → the clients listening on it.
    channels: HashMap<String, HashSet<i32>>,
    /// Channels whose LISTEN has been answered.
    listening: HashSet<String>,
    /// LISTENs on their way: who waits for each.
    waiting: HashMap<String, Vec<oneshot::Sender<Result<(), String>>>>,
    in_flight: VecDeque<InFlight>,
}

impl Hub {
    fn new(target: UpstreamTarget) -> Hub {
        Hub {
            target,
            connection: None,
            queues: HashMap::new(),
            channels: HashMap::new(),
            listening: HashSet::new(),
            waiting: HashMap::new(),
            in_flight: VecDeque::new(),
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let frame = async {
                match self.connection.as_mut() {
                    Some(c) => read_message(&mut c.stream, &mut c.inbuf).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    // Every handle is gone: the pool is.
                    None => return,
                },
                frame = frame => match frame {
                    Ok(Ok((tag, body))) => self.frame(tag, &body).await,
                    Ok(Err(e)) => self.lost(&e.to_string()),
                    Err(e) => self.lost(&e.to_string()),
                },
            }
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Join { client, queue } => {
                self.queues.insert(client, queue);
            }
            Command::Listen { client, channel, listening } => {
                if !self.queues.contains_key(&client) {
                    let _ = listening.send(Err("not a member of the hub".into()));
                    return;
                }
                self.channels.entry(channel.clone()).or_default().insert(client);
                if self.listening.contains(&channel) {
                    let _ = listening.send(Ok(()));
                    return;
                }
                let first = !self.waiting.contains_key(&channel);
                self.waiting.entry(channel.clone()).or_default().push(listening);
                if first {
                    self.send(Verb::Listen, channel).await;
                }
            }
            Command::Unlisten { client, channel } => self.drop_client_from(client, &channel).await,
            Command::Leave { client } => {
                self.queues.remove(&client);
                let theirs: Vec<String> = self
                    .channels
                    .iter()
                    .filter(|(_, clients)| clients.contains(&client))
                    .map(|(c, _)| c.clone())
                    .collect();
                for channel in theirs {
                    self.drop_client_from(client, &channel).await;
                }
            }
        }
    }

    async fn drop_client_from(&mut self, client: i32, channel: &str) {
        let Some(clients) = self.channels.get_mut(channel) else { return };
        clients.remove(&client);
        if clients.is_empty() {
            self.channels.remove(channel);
            if self.listening.remove(channel) {
                self.send(Verb::Unlisten, channel.to_owned()).await;
            }
        }
    }

    /// Sends `verb` for `channel`, connecting first when needed.
    async fn send(&mut self, verb: Verb, channel: String) {
        if self.connection.is_none() {
            if verb == Verb::Unlisten {
                return;
            }
            match Box::pin(connect(&self.target, &[])).await {
                Ok(server) => self.connection = Some(Connection { stream: server.stream, inbuf: BytesMut::new() }),
                Err(e) => {
                    tracing::warn!(error = %e, "the listening connection could not be opened");
                    self.fail_waiters(&channel, &e.to_string());
                    return;
                }
            }
        }
        let mut out = BytesMut::new();
        let verb_text = match verb {
            Verb::Listen => "LISTEN",
            Verb::Unlisten => "UNLISTEN",
        };
        // The channel is the tenant's prefix plus a name the guard parsed, sent as one quoted identifier.
        write_message(&mut out, client::QUERY, |b| put_cstr(b, &format!("{verb_text} {}", quote_ident(&channel))));
        let Some(connection) = self.connection.as_mut() else { return };
        if let Err(e) = connection.stream.write_all(&out).await {
            self.lost(&e.to_string());
            return;
        }
        // An UNLISTEN has no waiter: its entry only keeps the answers in order.
        let listen = (verb == Verb::Listen).then_some(channel);
        self.in_flight.push_back(InFlight { listen, failure: None });
    }

    fn fail_waiters(&mut self, channel: &str, why: &str) {
        for waiter in self.waiting.remove(channel).unwrap_or_default() {
            let _ = waiter.send(Err(why.to_owned()));
        }
        self.channels.remove(channel);
    }

    async fn frame(&mut self, tag: u8, body: &[u8]) {
        match tag {
            server::NOTIFICATION_RESPONSE => self.deliver(body),
            server::ERROR_RESPONSE => {
                let fields = error_fields(body);
                if let Some(front) = self.in_flight.front_mut() {
                    front.failure = Some(format!("{}: {}", fields.code, fields.message));
                }
            }
            server::READY_FOR_QUERY => {
                let Some(answered) = self.in_flight.pop_front() else { return };
                if let Some(channel) = answered.listen {
                    match answered.failure {
                        None => {
                            for waiter in self.waiting.remove(&channel).unwrap_or_default() {
                                let _ = waiter.send(Ok(()));
                            }
                            if self.channels.contains_key(&channel) {
                                self.listening.insert(channel);
                            } else {
                                // Everyone left while the LISTEN was on its way.
                                self.send(Verb::Unlisten, channel).await;
                            }
                        }
                        Some(why) => {
                            tracing::warn!(%channel, error = %why, "the listening connection could not LISTEN");
                            self.fail_waiters(&channel, &why);
                        }
                    }
                }
                if self.channels.is_empty() && self.in_flight.is_empty() {
                    // Nobody listens: the connection is not kept for nothing.
                    self.connection = None;
                }
            }
            _ => {}
        }
    }

    fn deliver(&mut self, body: &[u8]) {
        let mut frame = BytesMut::with_capacity(body.len() + 5);
        write_message(&mut frame, server::NOTIFICATION_RESPONSE, |b| b.extend_from_slice(body));
        let Some(n) = crate::protocol::messages::Notification::read(&frame) else { return };
        let Some(clients) = self.channels.get(n.channel) else { return };
        let notification =
            Arc::new(HubNotification { pid: n.pid, channel: n.channel.to_owned(), payload: n.payload.to_owned() });
        for client in clients {
            if let Some(queue) = self.queues.get(client) {
                let _ = queue.send(Arc::clone(&notification));
            }
        }
    }

    /// The connection broke: every subscriber's queue closes, so its session
    /// ends rather than waiting for notifications that will never come.
    fn lost(&mut self, why: &str) {
        tracing::warn!(error = why, "the listening connection closed");
        self.connection = None;
        for clients in self.channels.values() {
            for client in clients {
                self.queues.remove(client);
            }
        }
        self.channels.clear();
        self.listening.clear();
        self.in_flight.clear();
        for (_, waiters) in self.waiting.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err(why.to_owned()));
            }
        }
    }
}

//! The in-memory registry of connected clients and channel subscriptions, and the fan-out.
//!
//! Each client owns a bounded outbound queue (messages and bytes). Fan-out never waits: a
//! publication that does not fit marks the client slow, and its connection task closes it
//! with 3008.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::proto::{ClientInfo, Disconnect};

/// Something to write to a client: a line of the protocol. Publications carry their channel
/// and offset so that a client can drop what a recovery already delivered.
#[derive(Debug)]
pub enum Outbound {
    Line(Arc<str>),
    Pub {
        channel: Arc<str>,
        offset: u64,
        line: Arc<str>,
    },
}

impl Outbound {
    fn len(&self) -> usize {
        match self {
            Outbound::Line(l) => l.len(),
            Outbound::Pub { line, .. } => line.len(),
        }
    }
}

/// Server-side requests to a connection (from the server API).
#[derive(Debug)]
pub enum Control {
    Subscribe {
        channel: String,
    },
    Unsubscribe {
        channel: String,
    },
    Disconnect(Disconnect),
    /// Look at the kill reason (sent by [`ClientHandle::disconnect`]).
    Wake,
}

/// The shared half of a connection.
pub struct ClientHandle {
    pub id: Arc<str>,
    pub user: String,
    pub tenant: Option<String>,
    pub conn_info: Option<Arc<RawValue>>,
    /// Unidirectional (SSE) clients get bare pushes, bidirectional ones `{"push":..}`.
    pub unidirectional: bool,
    tx: mpsc::Sender<Outbound>,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    kill: Mutex<Option<Disconnect>>,
    killed: AtomicBool,
    pub control: mpsc::Sender<Control>,
    stats: Arc<Stats>,
}

impl ClientHandle {
    /// Queues a message; on overflow the client is marked for a 3008 disconnect.
    pub fn push(&self, msg: Outbound) -> bool {
        if self.killed.load(Ordering::Relaxed) {
            return false;
        }
        let n = msg.len();
        let queued = self.queued_bytes.fetch_add(n, Ordering::Relaxed) + n;
        if queued > self.max_bytes {
            self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
            self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("realtime_slow_disconnects_total").increment(1);
            self.disconnect(Disconnect::SLOW);
            return false;
        }
        match self.tx.try_send(msg) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
                self.stats.slow_disconnects.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("realtime_slow_disconnects_total").increment(1);
                self.disconnect(Disconnect::SLOW);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.queued_bytes.fetch_sub(n, Ordering::Relaxed);
                false
            }
        }
    }

    /// Counts messages written to the client.
    pub fn sent(&self, n: u64) {
        self.stats.messages_sent.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("realtime_messages_sent_total").increment(n);
    }

    /// Called by the connection task for each message it takes from the queue.
    pub fn taken(&self, msg: &Outbound) {
        self.queued_bytes.fetch_sub(msg.len(), Ordering::Relaxed);
    }

    /// Asks the connection task to close with `d` (the first reason wins).
    pub fn disconnect(&self, d: Disconnect) {
        let mut k = self.kill.lock();
        if k.is_none() {
            *k = Some(d);
        }
        self.killed.store(true, Ordering::Relaxed);
        // If the control queue is full the task has controls to read and checks the kill
        // reason after each one.
        let _ = self.control.try_send(Control::Wake);
    }

    pub fn kill_reason(&self) -> Option<Disconnect> {
        *self.kill.lock()
    }

    pub fn info(&self, chan_info: Option<Arc<RawValue>>) -> ClientInfo {
        ClientInfo {
            user: self.user.clone(),
            client: self.id.to_string(),
            conn_info: self.conn_info.clone(),
            chan_info,
        }
    }
}

/// Counters behind `/api/metrics/summary` (the Prometheus series are recorded alongside).
#[derive(Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub subscriptions: AtomicU64,
    pub messages_sent: AtomicU64,
    pub events_published: AtomicU64,
    pub auth_failures: AtomicU64,
    pub slow_disconnects: AtomicU64,
}

struct Sub {
    client: Arc<ClientHandle>,
    chan_info: Option<Arc<RawValue>>,
    join_leave: bool,
}

/// A channel's subscribers by client id.
type Subscribers = HashMap<Arc<str>, Sub>;

#[derive(Default)]
pub struct Hub {
    channels: RwLock<HashMap<Arc<str>, Subscribers>>,
    clients: RwLock<HashMap<Arc<str>, Arc<ClientHandle>>>,
    users: RwLock<HashMap<String, HashSet<Arc<str>>>>,
    pub stats: Arc<Stats>,
}

pub struct NewClient {
    pub user: String,
    pub tenant: Option<String>,
    pub conn_info: Option<Arc<RawValue>>,
    pub unidirectional: bool,
    pub queue_messages: usize,
    pub queue_bytes: usize,
}

impl Hub {
    pub fn new() -> Hub {
        Hub::default()
    }

    /// Registers a connection; returns its handle, its queue and its control receiver.
    pub fn register(
        &self,
        c: NewClient,
    ) -> (
        Arc<ClientHandle>,
        mpsc::Receiver<Outbound>,
        mpsc::Receiver<Control>,
    ) {
        let (tx, rx) = mpsc::channel(c.queue_messages.max(1));
        let (ctl_tx, ctl_rx) = mpsc::channel(16);
        let id: Arc<str> = Arc::from(uuid::Uuid::new_v4().to_string());
        let handle = Arc::new(ClientHandle {
            id: Arc::clone(&id),
            user: c.user.clone(),
            tenant: c.tenant,
            conn_info: c.conn_info,
            unidirectional: c.unidirectional,
            tx,
            queued_bytes: AtomicUsize::new(0),
            max_bytes: c.queue_bytes,
            kill: Mutex::new(None),
            killed: AtomicBool::new(false),
            control: ctl_tx,
            stats: Arc::clone(&self.stats),
        });
        self.clients
            .write()
            .insert(Arc::clone(&id), Arc::clone(&handle));
        self.users
            .write()
            .entry(c.user)
            .or_default()
            .insert(Arc::clone(&id));
        let n = self.stats.connections.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!("active_connections").set(n as f64);
        (handle, rx, ctl_rx)
    }

    /// Removes a connection from the registry (its subscriptions are removed by the session,
    /// which knows them, with [`Hub::unsubscribe`]).
    pub fn unregister(&self, client: &ClientHandle) {
        if self.clients.write().remove(&client.id).is_some() {
            let n = self
                .stats
                .connections
                .fetch_sub(1, Ordering::Relaxed)
                .saturating_sub(1);
            metrics::gauge!("active_connections").set(n as f64);
        }
        let mut users = self.users.write();
        if let Some(set) = users.get_mut(&client.user) {
            set.remove(&client.id);
            if set.is_empty() {
                users.remove(&client.user);
            }
        }
    }

    pub fn subscribe(
        &self,
        channel: &str,
        client: &Arc<ClientHandle>,
        chan_info: Option<Arc<RawValue>>,
        join_leave: bool,
    ) {
        let mut chans = self.channels.write();
        let subs = chans.entry(Arc::from(channel)).or_default();
        let added = subs
            .insert(
                Arc::clone(&client.id),
                Sub {
                    client: Arc::clone(client),
                    chan_info,
                    join_leave,
                },
            )
            .is_none();
        drop(chans);
        if added {
            let n = self.stats.subscriptions.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::gauge!("realtime_subscriptions").set(n as f64);
        }
    }

    /// Returns the subscription's channel info if it existed.
    pub fn unsubscribe(&self, channel: &str, client_id: &str) -> Option<Option<Arc<RawValue>>> {
        let mut chans = self.channels.write();
        let subs = chans.get_mut(channel)?;
        let removed = subs.remove(client_id)?;
        if subs.is_empty() {
            chans.remove(channel);
        }
        drop(chans);
        let n = self
            .stats
            .subscriptions
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        metrics::gauge!("realtime_subscriptions").set(n as f64);
        Some(removed.chan_info)
    }

    /// Delivers a publication to every subscriber of `channel`. `body` is the push body
    /// (`{"channel":..,"pub":..}`).
    pub fn publish(&self, channel: &Arc<str>, offset: u64, body: &str) {
        let chans = self.channels.read();
        let Some(subs) = chans.get(channel) else {
            return;
        };
        let mut bidi: Option<Arc<str>> = None;
        let mut uni: Option<Arc<str>> = None;
        for s in subs.values() {
            let line = if s.client.unidirectional {
                Arc::clone(uni.get_or_insert_with(|| Arc::from(body)))
            } else {
                Arc::clone(bidi.get_or_insert_with(|| Arc::from(crate::proto::wrap_push(body))))
            };
            let msg = if offset > 0 {
                Outbound::Pub {
                    channel: Arc::clone(channel),
                    offset,
                    line,
                }
            } else {
                Outbound::Line(line)
            };
            s.client.push(msg);
        }
    }

    /// Join or leave pushes to the subscribers that asked for them (or all with `force`).
    pub fn join_leave(
        &self,
        channel: &str,
        kind: &str,
        info: &ClientInfo,
        skip: &str,
        force: bool,
    ) {
        let chans = self.channels.read();
        let Some(subs) = chans.get(channel) else {
            return;
        };
        let body = crate::proto::push_body(channel, kind, &serde_json::json!({ "info": info }));
        let bidi: Arc<str> = Arc::from(crate::proto::wrap_push(&body));
        let uni: Arc<str> = Arc::from(body);
        for (id, s) in subs.iter() {
            if &**id == skip || !(s.join_leave || force) {
                continue;
            }
            let line = if s.client.unidirectional {
                Arc::clone(&uni)
            } else {
                Arc::clone(&bidi)
            };
            s.client.push(Outbound::Line(line));
        }
    }

    pub fn presence(&self, channel: &str) -> Vec<ClientInfo> {
        let chans = self.channels.read();
        chans
            .get(channel)
            .map(|subs| {
                subs.values()
                    .map(|s| s.client.info(s.chan_info.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn presence_stats(&self, channel: &str) -> (usize, usize) {
        let chans = self.channels.read();
        match chans.get(channel) {
            Some(subs) => {
                let users: HashSet<&str> = subs.values().map(|s| s.client.user.as_str()).collect();
                (subs.len(), users.len())
            }
            None => (0, 0),
        }
    }

    /// Active channels with their subscriber counts.
    pub fn channels(&self) -> Vec<(String, usize)> {
        self.channels
            .read()
            .iter()
            .map(|(k, v)| (k.to_string(), v.len()))
            .collect()
    }

    pub fn channel_count(&self) -> usize {
        self.channels.read().len()
    }

    pub fn user_count(&self) -> usize {
        self.users.read().len()
    }

    /// Connections of a user, optionally only one client id.
    pub fn user_clients(&self, user: &str, client: Option<&str>) -> Vec<Arc<ClientHandle>> {
        let users = self.users.read();
        let clients = self.clients.read();
        users
            .get(user)
            .map(|ids| {
                ids.iter()
                    .filter(|id| client.is_none_or(|c| c == &***id))
                    .filter_map(|id| clients.get(id).cloned())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn all_clients(&self) -> Vec<Arc<ClientHandle>> {
        self.clients.read().values().cloned().collect()
    }
}

//! The broker: shared state, start-up of listeners, the publish path and shutdown.

use crate::auth::scram::ScramFile;
use crate::auth::{
    AclFile, AuthFileError, Authenticator, Authorizer, LoadFile, PasswordFile, Reloadable,
};
use crate::config::{Config, ListenerSecurity};
use crate::message::{Message, OpenOnDrop, SessionId};
use crate::persist;
use crate::retained::RetainedTree;
use crate::router::{RouteScratch, Router, SubKey};
use crate::session::SessionState;
use crate::session::{SessionCell, Sessions};
use crate::sys::Stats;
use crate::tls::TlsListener;
use midge_proto::{topic, ByteStr, QoS, ReasonCode};
use midge_store::{CommitTicket, Op, SessionRecord, SessionStore, WillRecord};
use parking_lot::RwLock;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// Why a bounded shutdown ([`Broker::shutdown_within`]) did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    /// The store failed while the broker ran (state since then is not saved), or its
    /// close failed.
    #[error("the store did not close cleanly: {0}")]
    Store(midge_store::StoreError),
    /// The store's close (final fsync and flush) did not finish in time.
    #[error("the store did not close within the shutdown timeout ({0:?})")]
    StoreTimedOut(Duration),
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Security(#[from] AuthFileError),
    // Each message carries its cause's text once and keeps no `source`, so `{e:#}` (how
    // the binary prints it) does not repeat it.
    #[error("store: {0}")]
    Store(midge_store::StoreError),
    #[error("listener {addr}: {error}")]
    Tls {
        addr: SocketAddr,
        error: crate::tls::TlsError,
    },
    #[error("cannot listen on {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// The password and ACL files in force (each reloadable on SIGHUP).
#[derive(Default, Clone)]
pub struct Security {
    pub passwords: Option<Arc<Reloadable<PasswordFile>>>,
    pub acl: Option<Arc<Reloadable<AclFile>>>,
    /// SCRAM-SHA-256 credentials for MQTT 5 enhanced authentication.
    pub scram: Option<Arc<Reloadable<ScramFile>>>,
}

impl Security {
    /// Loads the files the configuration names; errors name the file and line.
    pub fn load(config: &Config) -> Result<Security, AuthFileError> {
        let passwords = open_security_file(&config.password_file, PasswordFile::warnings)?;
        let acl = open_security_file(&config.acl_file, AclFile::warnings)?;
        let scram = open_security_file(&config.scram_file, ScramFile::warnings)?;
        Ok(Security {
            passwords,
            acl,
            scram,
        })
    }

    /// A listener's own password and ACL files, with the broker-wide SCRAM credentials.
    pub fn load_listener(
        files: &ListenerSecurity,
        broker_wide: &Security,
    ) -> Result<Security, AuthFileError> {
        Ok(Security {
            passwords: open_security_file(&files.password_file, PasswordFile::warnings)?,
            acl: open_security_file(&files.acl_file, AclFile::warnings)?,
            scram: broker_wide.scram.clone(),
        })
    }

    pub fn authenticator(&self) -> Option<Arc<dyn Authenticator>> {
        self.passwords.clone().map(|p| p as Arc<dyn Authenticator>)
    }

    pub fn authorizer(&self) -> Option<Arc<dyn Authorizer>> {
        self.acl.clone().map(|a| a as Arc<dyn Authorizer>)
    }

    /// Reloads both files; a file that fails to load keeps its old rules, and the error is
    /// logged.
    pub fn reload(&self) {
        if let Some(p) = &self.passwords {
            match p.reload() {
                Ok(()) => tracing::info!("reloaded password file {}", p.path().display()),
                Err(e) => tracing::error!("password file not reloaded, keeping the old one: {e}"),
            }
        }
        if let Some(a) = &self.acl {
            match a.reload() {
                Ok(()) => tracing::info!("reloaded ACL file {}", a.path().display()),
                Err(e) => tracing::error!("ACL file not reloaded, keeping the old one: {e}"),
            }
        }
        if let Some(s) = &self.scram {
            match s.reload() {
                Ok(()) => tracing::info!("reloaded SCRAM credentials file {}", s.path().display()),
                Err(e) => {
                    tracing::error!("SCRAM credentials file not reloaded, keeping the old one: {e}")
                }
            }
        }
    }
}

/// Loads one security file, if configured, logging the warnings it gave.
fn open_security_file<T: LoadFile>(
    path: &Option<std::path::PathBuf>,
    warnings: fn(&T) -> &[String],
) -> Result<Option<Arc<Reloadable<T>>>, AuthFileError> {
    let Some(path) = path else {
        return Ok(None);
    };
    let file = Reloadable::<T>::open(path)?;
    for w in warnings(&file.current()) {
        tracing::warn!("{w}");
    }
    Ok(Some(Arc::new(file)))
}

/// State shared by every task of one broker.
pub struct BrokerInner {
    pub config: Config,
    /// The broker-wide security files.
    pub security: Security,
    /// Per listener (same order as `config.listeners`): its own files, or a clone of
    /// `security`.
    pub listener_security: Vec<Security>,
    /// Durable state, when persistence is on.
    pub store: Option<Arc<dyn SessionStore>>,
    pub router: Router,
    pub retained: RwLock<RetainedTree<Arc<Message>>>,
    pub sessions: Sessions,
    pub stats: Arc<Stats>,
    pub started: std::time::Instant,
    pub shutdown: watch::Receiver<bool>,
    next_conn_id: AtomicU64,
    live_connections: AtomicUsize,
    connections_gone: Notify,
    /// Keep-alive and parking deadlines of the connections (keepalive.rs).
    pub keep_alive: crate::keepalive::KeepAliveWheel,
    /// Live connections per listener (same order as `config.listeners`).
    pub listener_connections: Box<[AtomicUsize]>,
    /// Idle TCP connections without a task (parking.rs); `None` when parking is off.
    pub parking: Option<Arc<crate::parking::ParkTable>>,
    /// Failed logins per source address: (start of the minute, count).
    auth_failures: parking_lot::Mutex<std::collections::HashMap<std::net::IpAddr, (Instant, u32)>>,
}

impl Drop for BrokerInner {
    fn drop(&mut self) {
        // The poll thread holds the table; parked connections hold their sessions, which
        // hold the table too: stopping the thread closes them and ends the cycle.
        if let Some(parking) = &self.parking {
            parking.stop();
        }
    }
}

impl BrokerInner {
    pub fn new(
        config: Config,
        security: Security,
        listener_security: Vec<Security>,
        store: Option<Arc<dyn SessionStore>>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let stats = Arc::new(Stats::default());
        let listener_count = config.listeners.len();
        let parking = if config.park_idle_after.is_zero() {
            None
        } else {
            match crate::parking::ParkTable::start(stats.clone()) {
                Ok(table) => Some(table),
                Err(e) => {
                    tracing::warn!("idle connections will not be parked: {e}");
                    None
                }
            }
        };
        let park_after = if parking.is_some() {
            config.park_idle_after
        } else {
            Duration::ZERO
        };
        let limits = crate::session::QueueLimits {
            max_messages: config.max_queued_messages,
            max_bytes: config.max_queued_bytes,
            queue_qos0_offline: config.queue_qos0_messages,
            backpressure_ms: if config.publisher_backpressure {
                u32::try_from(config.publisher_backpressure_max.as_millis())
                    .unwrap_or(u32::MAX)
                    .max(1)
            } else {
                0
            },
        };
        let env = crate::session::SessionEnv {
            parking: parking.clone(),
            ..crate::session::SessionEnv::new(limits, stats.clone(), store.is_some())
        };
        BrokerInner {
            config,
            security,
            listener_security,
            store,
            router: Router::new(),
            retained: RwLock::new(RetainedTree::new()),
            sessions: Sessions::new(env),
            stats,
            started: std::time::Instant::now(),
            shutdown,
            next_conn_id: AtomicU64::new(1),
            live_connections: AtomicUsize::new(0),
            connections_gone: Notify::new(),
            keep_alive: crate::keepalive::KeepAliveWheel::new(park_after),
            parking,
            listener_connections: (0..listener_count).map(|_| AtomicUsize::new(0)).collect(),
            auth_failures: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The security files of listener `index` (`None`: a connection served in process,
    /// through `Broker::serve_stream`, uses the broker-wide files).
    pub fn security_of(&self, listener: Option<usize>) -> &Security {
        listener
            .and_then(|i| self.listener_security.get(i))
            .unwrap_or(&self.security)
    }

    /// Who may receive what in a session recovered from the store, before its client
    /// reconnects through some listener: the broker-wide ACL, unless listeners have their
    /// own files, in which case nothing (as Mosquitto with `per_listener_settings`, which
    /// cannot tell either): queued messages keep arriving once the client is back.
    pub fn recovered_read_access(&self) -> Option<Arc<dyn Authorizer>> {
        if self.config.listeners.iter().any(|l| l.security.is_some()) {
            Some(Arc::new(crate::auth::DenyAll))
        } else {
            self.security.authorizer()
        }
    }

    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a new connection; false when `max_connections` is reached.
    pub fn try_add_connection(&self) -> bool {
        let max = self.config.max_connections.unwrap_or(usize::MAX);
        let mut current = self.live_connections.load(Ordering::Relaxed);
        loop {
            if current >= max {
                return false;
            }
            match self.live_connections.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
    }

    pub fn remove_connection(&self) {
        if self.live_connections.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.connections_gone.notify_waiters();
        }
    }

    pub fn live_connections(&self) -> usize {
        self.live_connections.load(Ordering::Acquire)
    }

    /// Whether a topic name or filter is within `max_topic_length` and `max_topic_levels`.
    pub fn topic_within_limits(&self, topic: &str) -> bool {
        let c = &self.config;
        topic.len() <= c.max_topic_length
            && (c.max_topic_levels == 0 || topic.split('/').count() <= c.max_topic_levels)
    }

    /// Records a failed login from `ip` and returns how long to wait before answering:
    /// nothing for the first `auth_failures_before_delay` failures within a minute, then
    /// 100 ms doubling up to 5 s, so password guessing from one address slows down.
    pub fn auth_failure_delay(&self, ip: std::net::IpAddr) -> Duration {
        self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        let threshold = self.config.auth_failures_before_delay;
        if threshold == 0 {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut map = self.auth_failures.lock();
        if map.len() > 100_000 {
            map.retain(|_, (first, _)| now.duration_since(*first) < Duration::from_secs(60));
        }
        let entry = map.entry(ip).or_insert((now, 0));
        if now.duration_since(entry.0) >= Duration::from_secs(60) {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        let over = entry.1.saturating_sub(threshold);
        if over == 0 {
            return Duration::ZERO;
        }
        let millis = 100u64.saturating_mul(1u64 << over.min(10));
        Duration::from_millis(millis.min(5000))
    }

    /// The publish path: store or clear the retained message, then route to subscribers.
    /// Returns the number of deliveries.
    pub fn publish(&self, msg: &Arc<Message>, scratch: &mut RouteScratch) -> usize {
        if msg.retain && self.config.retain_available {
            self.store_retained(msg);
        }
        self.router.route(msg, scratch)
    }

    /// Publishes, then writes what the store must keep of it: the message for every
    /// persistent session it was queued for, the retained message, and `extra` (the
    /// inbound QoS 2 packet identifier). The ticket resolves when that is durable: only
    /// then may the publisher be acknowledged. A message with a [`Gate`](crate::message::Gate)
    /// is let through to its subscribers then too (at once when there is nothing to write).
    pub fn publish_durable(
        &self,
        msg: &Arc<Message>,
        scratch: &mut RouteScratch,
        extra: Option<Op>,
    ) -> (usize, Option<CommitTicket>) {
        let n = self.publish(msg, scratch);
        let Some(store) = &self.store else {
            if let Some(gate) = &msg.gate {
                gate.open();
            }
            return (n, None);
        };
        let mut ops = Vec::new();
        let retained = msg.retain && self.config.retain_available && !msg.topic.starts_with("$SYS");
        if !scratch.durable.is_empty() || (retained && !msg.payload.is_empty()) {
            let record = persist::message_record(msg);
            if retained && !msg.payload.is_empty() {
                ops.push(Op::PutRetained {
                    topic: msg.topic.clone(),
                    message: record.clone(),
                });
            }
            if !scratch.durable.is_empty() {
                ops.push(Op::Enqueue {
                    message_id: store.next_message_id(),
                    message: record,
                    deliveries: std::mem::take(&mut scratch.durable),
                });
            }
        }
        if retained && msg.payload.is_empty() {
            ops.push(Op::DeleteRetained {
                topic: msg.topic.clone(),
            });
        }
        ops.extend(extra);
        if ops.is_empty() {
            if let Some(gate) = &msg.gate {
                gate.open();
            }
            return (n, None);
        }
        let ticket = match &msg.gate {
            // Subscribers get the message once the commit is answered.
            Some(gate) => {
                let opener = OpenOnDrop(gate.clone());
                store.commit_then(ops, Box::new(move || drop(opener)))
            }
            None => store.commit(ops),
        };
        (n, Some(ticket))
    }

    /// Writes `ops` without waiting: losing them in a crash only causes a resend.
    pub fn commit_detached(&self, ops: Vec<Op>) {
        if let Some(store) = &self.store {
            drop(store.commit(ops));
        }
    }

    /// Writes `ops` and returns the ticket (or `None` without a store).
    pub fn commit(&self, ops: Vec<Op>) -> Option<CommitTicket> {
        self.store.as_ref().map(|s| s.commit(ops))
    }

    /// The stored form of a session.
    pub fn session_record(
        &self,
        st: &SessionState,
        protocol: u8,
        disconnected: bool,
    ) -> SessionRecord {
        SessionRecord {
            expiry_interval: st
                .expiry()
                .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX - 1)),
            disconnected_at: disconnected.then(persist::now_millis),
            protocol_level: protocol,
            first_seq: st.first_seq,
        }
    }

    /// A retained message with an empty payload deletes the retained message of its
    /// topic and is not stored [MQTT-3.3.1-6, MQTT-3.3.1-7].
    fn store_retained(&self, msg: &Arc<Message>) {
        let mut tree = self.retained.write();
        if msg.payload.is_empty() {
            tree.remove(&msg.topic);
        } else {
            tree.insert(&msg.topic, msg.clone());
        }
    }

    pub fn retained_count(&self) -> usize {
        self.retained.read().len()
    }

    /// Publishes a message the broker makes itself (`$SYS`), at QoS 0.
    pub fn publish_internal(&self, topic_name: &str, payload: String, retain: bool) {
        let msg = Arc::new(Message {
            topic: ByteStr::from(topic_name),
            payload: bytes::Bytes::from(payload),
            qos: QoS::AtMostOnce,
            retain,
            properties: None,
            expires_at: None,
            origin: 0,
            gate: None,
        });
        let mut scratch = RouteScratch::default();
        self.publish(&msg, &mut scratch);
    }

    /// Ends a session: its subscriptions leave the router, it leaves the registry, and a
    /// will still waiting for its delay is sent now (the session ended first). Its
    /// deletion is committed before it leaves the registry: a new session of its client
    /// ID, which can only be made after that (or, replacing it, before this is called),
    /// has its records written after the deletion, never wiped by it.
    pub fn discard_session(&self, cell: &Arc<SessionCell>) {
        let (subs, will) = {
            let mut st = cell.state.lock();
            if st.discarded {
                return;
            }
            // No message takes a sequence number from it any more (see `first_seq`).
            st.discarded = true;
            // A connection that attached to it after its replacement was decided is told
            // to go (it would otherwise serve a session no longer in the registry).
            cell.request(
                &mut st,
                crate::session::Control::Close(ReasonCode::SESSION_TAKEN_OVER),
            );
            st.generation += 1;
            st.queue.clear();
            st.queued_bytes = 0;
            st.backlog = Default::default();
            st.inflight.clear();
            st.unsent_resends = 0;
            (
                std::mem::take(&mut st.subscriptions),
                st.take_pending_will(),
            )
        };
        for filter in subs.keys() {
            self.unroute(cell.id, filter);
        }
        let mut ops = vec![Op::DeleteSession {
            client: cell.client_id.clone(),
        }];
        if let Some(will) = will {
            let mut scratch = RouteScratch::default();
            drop(self.publish_durable(&will, &mut scratch, None));
            ops.push(Op::DeleteWill {
                client: cell.client_id.clone(),
            });
        }
        self.commit_detached(ops);
        self.sessions.remove_if_same(cell);
    }

    /// Removes one subscription (as the session stored it) from the router.
    pub fn unroute(&self, session: SessionId, stored_filter: &ByteStr) -> bool {
        match topic::parse_shared(stored_filter) {
            Ok(Some((_group, filter))) => self.router.unsubscribe(
                filter,
                &SubKey {
                    session,
                    shared: Some(stored_filter.clone()),
                },
            ),
            _ => self.router.unsubscribe(
                stored_filter,
                &SubKey {
                    session,
                    shared: None,
                },
            ),
        }
    }

    /// The record of a connected client's will, written at CONNECT (with a store): a
    /// broker that stops without the connection ending sends it at its next start
    /// [MQTT-3.1.2-8]. `None` without a store.
    pub fn connected_will_record(
        &self,
        will: &midge_proto::Publish,
        delay_secs: u32,
    ) -> Option<WillRecord> {
        self.store.as_ref()?;
        Some(WillRecord {
            message: persist::publish_record(will),
            publish_at: 0,
            while_connected: Some(midge_store::ConnectedWill {
                delay_secs,
                message_expiry_secs: will.properties.message_expiry_interval,
            }),
        })
    }

    /// True while `cell` is the registry's session for its client ID.
    fn is_current(&self, cell: &Arc<SessionCell>) -> bool {
        self.sessions
            .get(&cell.client_id)
            .is_some_and(|current| Arc::ptr_eq(&current, cell))
    }

    /// Commits `op` on the will record of `cell`'s client if the record is still the one
    /// the session had at `generation`: `cell` is its client's session and no newer
    /// connection attached to it since (one that did wrote its own record at CONNECT).
    /// Called under the session lock (`st`), as the attach writes its record, so the
    /// store gets the two in the order the lock gave them.
    fn commit_will_record(
        &self,
        cell: &Arc<SessionCell>,
        st: &SessionState,
        generation: u64,
        op: Op,
    ) {
        if st.generation == generation && st.conn.is_none() && self.is_current(cell) {
            self.commit_detached(vec![op]);
        }
    }

    /// Called when a connection leaves its session: sends or schedules the will and
    /// schedules the end of the session. `will_stored`: the connection's will was
    /// stored at CONNECT (see [`BrokerInner::connected_will_record`]) and does not go
    /// now; its record is deleted (a connection closed by a shutdown keeps it instead:
    /// the next start sends it).
    #[allow(clippy::too_many_arguments)]
    pub fn detach(
        self: &Arc<Self>,
        cell: &Arc<SessionCell>,
        conn_id: u64,
        will: Option<Arc<Message>>,
        will_delay: u32,
        will_stored: bool,
        protocol: u8,
    ) {
        let (generation, expiry, record) = {
            let mut st = cell.state.lock();
            if let Some(link) = st.conn.take_if(|c| c.conn_id == conn_id) {
                self.keep_alive.forget(&link);
            }
            st.generation += 1;
            // Offline, its stored messages live in the store only (bounded memory).
            cell.release_queue_to_store(&mut st);
            let record = st.persistent.then(|| {
                let mut ops = persist::qos1_markers(&cell.client_id, &st);
                ops.push(Op::PutSession {
                    client: cell.client_id.clone(),
                    session: self.session_record(&st, protocol, true),
                });
                ops
            });
            (st.generation, st.expiry(), record)
        };
        // Whoever waits for the detach (no connection waits on `notify` any more; a
        // waiter-less wake-up leaves no permit for the next one).
        cell.notify.notify_waiters();
        if let Some(ops) = record {
            self.commit_detached(ops);
        }
        let session_ends_now = expiry == Some(Duration::ZERO);
        let delete_record = || Op::DeleteWill {
            client: cell.client_id.clone(),
        };
        let mut delayed_will = None;
        match will {
            Some(will) if will_delay == 0 || session_ends_now => {
                let mut scratch = RouteScratch::default();
                drop(self.publish_durable(&will, &mut scratch, None));
                self.commit_will_record(cell, &cell.state.lock(), generation, delete_record());
            }
            Some(will) => {
                let delay = Duration::from_secs(u64::from(will_delay));
                let publish_at = persist::now_millis().saturating_add(delay.as_millis() as u64);
                let mut st = cell.state.lock();
                // A newer connection resumed the session since (and maybe left it again).
                if st.generation != generation || st.conn.is_some() {
                    // A newer connection resumed the session already: within the delay,
                    // so the will is not sent [MQTT-3.1.3-9]; the record is that one's.
                } else if !self.is_current(cell) {
                    // The session ended already (replaced by a Clean Start): the will
                    // goes now, as at the end of a session (5.0 §3.1.3.2.2).
                    drop(st);
                    let mut scratch = RouteScratch::default();
                    drop(self.publish_durable(&will, &mut scratch, None));
                } else {
                    let record = Op::PutWill {
                        client: cell.client_id.clone(),
                        will: WillRecord {
                            message: (*persist::message_record(&will)).clone(),
                            publish_at,
                            while_connected: None,
                        },
                    };
                    self.commit_will_record(cell, &st, generation, record);
                    st.set_pending_will(will);
                    delayed_will = Some(delay);
                }
            }
            None if will_stored => {
                self.commit_will_record(cell, &cell.state.lock(), generation, delete_record());
            }
            None => {}
        }
        self.schedule_session_end(cell, generation, expiry, delayed_will);
    }

    /// Starts the timers of a disconnected session: its delayed will, and its end when
    /// the expiry runs out. Both act only if the session's generation is unchanged (no
    /// reconnect in between). A will whose delay outlasts the session goes when the
    /// session ends.
    pub fn schedule_session_end(
        self: &Arc<Self>,
        cell: &Arc<SessionCell>,
        generation: u64,
        expiry: Option<Duration>,
        will_delay: Option<Duration>,
    ) {
        if let Some(delay) = will_delay {
            if expiry.is_none_or(|e| delay < e) {
                let broker = Arc::downgrade(self);
                let cell = cell.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Some(broker) = broker.upgrade() else {
                        return;
                    };
                    let will = {
                        let mut st = cell.state.lock();
                        if st.generation != generation {
                            return;
                        }
                        st.take_pending_will()
                    };
                    if let Some(will) = will {
                        let mut scratch = RouteScratch::default();
                        drop(broker.publish_durable(&will, &mut scratch, None));
                        // Under the lock, unless a reconnect wrote its own record since.
                        broker.commit_will_record(
                            &cell,
                            &cell.state.lock(),
                            generation,
                            Op::DeleteWill {
                                client: cell.client_id.clone(),
                            },
                        );
                    }
                });
            }
        }
        match expiry {
            Some(d) if d.is_zero() => self.discard_session(cell),
            Some(d) => {
                let broker = Arc::downgrade(self);
                let cell = cell.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let Some(broker) = broker.upgrade() else {
                        return;
                    };
                    if cell.state.lock().generation == generation {
                        broker.discard_session(&cell);
                    }
                });
            }
            None => {}
        }
    }
}

/// Opens the store and loads it (blocking work, off the async threads).
/// Looks at the keep-alive deadlines that are due, every `keepalive::TICK`, until the
/// broker is gone or shutting down.
async fn keep_alive_sweep(broker: std::sync::Weak<BrokerInner>) {
    let mut ticker = tokio::time::interval(crate::keepalive::TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(b) = broker.upgrade() else { return };
        if *b.shutdown.borrow() {
            return;
        }
        b.keep_alive.expire(Instant::now());
    }
}

async fn open_store(
    p: &crate::config::Persistence,
) -> Result<(Arc<dyn SessionStore>, midge_store::Recovered), StartError> {
    let dir = p.data_dir.clone();
    let durability = p.durability;
    let opened = tokio::task::spawn_blocking(move || {
        let store = midge_store::DiskStore::open(&dir, midge_store::StoreOptions { durability })?;
        let recovered = store.load(std::time::SystemTime::now())?;
        Ok::<_, midge_store::StoreError>((store, recovered))
    })
    .await;
    match opened {
        Ok(Ok((store, recovered))) => Ok((Arc::new(store) as Arc<dyn SessionStore>, recovered)),
        Ok(Err(e)) => Err(StartError::Store(e)),
        Err(e) => Err(StartError::Store(midge_store::StoreError::Io {
            path: p.data_dir.clone(),
            what: format!("opening the store failed: {e}"),
        })),
    }
}

/// A running broker. Dropping it does not stop it; call [`Broker::shutdown`].
pub struct Broker {
    inner: Arc<BrokerInner>,
    local_addrs: Vec<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    tls_listeners: Vec<(SocketAddr, Arc<TlsListener>)>,
    /// The listeners' accept loops: each returns, closing its socket, at shutdown.
    accept_loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Broker {
    /// Binds every listener and starts serving. Fails if any listener cannot bind.
    pub async fn start(config: Config) -> Result<Broker, StartError> {
        let opened = match &config.persistence {
            Some(p) => Some(open_store(p).await?),
            None => None,
        };
        Self::start_opened(config, opened).await
    }

    /// As [`Broker::start`], keeping its state in `store` (any [`SessionStore`], not the
    /// one `config.persistence` names): state is recovered from it first.
    pub async fn start_with_store(
        config: Config,
        store: Arc<dyn SessionStore>,
    ) -> Result<Broker, StartError> {
        let loading = store.clone();
        let loaded =
            tokio::task::spawn_blocking(move || loading.load(std::time::SystemTime::now())).await;
        let recovered = match loaded {
            Ok(r) => r.map_err(StartError::Store)?,
            Err(e) => {
                return Err(StartError::Store(midge_store::StoreError::Io {
                    path: std::path::PathBuf::new(),
                    what: format!("loading the store failed: {e}"),
                }))
            }
        };
        Self::start_opened(config, Some((store, recovered))).await
    }

    async fn start_opened(
        config: Config,
        opened: Option<(Arc<dyn SessionStore>, midge_store::Recovered)>,
    ) -> Result<Broker, StartError> {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let listeners = config.listeners.clone();
        let sys_interval = config.sys_interval;
        let security = Security::load(&config)?;
        let listener_security = listeners
            .iter()
            .map(|l| match &l.security {
                Some(files) => Security::load_listener(files, &security),
                None => Ok(security.clone()),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (store, recovered) = opened.unzip();
        let inner = Arc::new(BrokerInner::new(
            config,
            security,
            listener_security,
            store.clone(),
            shutdown_rx,
        ));
        if let Some(parking) = &inner.parking {
            parking.set_broker(Arc::downgrade(&inner));
        }
        if let (Some(store), Some(recovered)) = (store, recovered) {
            let dropped = recovered.dropped;
            let stats =
                persist::recover(&inner, store.as_ref(), recovered).map_err(StartError::Store)?;
            tracing::info!(
                sessions = stats.sessions,
                subscriptions = stats.subscriptions,
                queued = stats.queued,
                inflight = stats.inflight,
                retained = stats.retained,
                wills = stats.wills,
                expired_sessions = dropped.sessions,
                expired_messages = dropped.queued_messages,
                "state recovered"
            );
        }
        let mut bound = Vec::new();
        let mut tls_listeners = Vec::new();
        for (index, l) in listeners.iter().enumerate() {
            let tls = match &l.tls {
                Some(settings) => {
                    let t =
                        TlsListener::new(settings.clone()).map_err(|error| StartError::Tls {
                            addr: l.bind,
                            error,
                        })?;
                    Some(Arc::new(t))
                }
                None => None,
            };
            let socket = crate::listener::bind(l.bind).map_err(|error| StartError::Bind {
                addr: l.bind,
                error,
            })?;
            let addr = socket.local_addr().map_err(|error| StartError::Bind {
                addr: l.bind,
                error,
            })?;
            if let Some(t) = &tls {
                tls_listeners.push((addr, t.clone()));
            }
            bound.push((socket, addr, (index, l.clone()), tls));
        }
        let mut local_addrs = Vec::new();
        let mut accept_loops = Vec::new();
        for (socket, addr, l, tls) in bound {
            tracing::info!(
                "listening on {addr}{}",
                if tls.is_some() { " (TLS)" } else { "" }
            );
            local_addrs.push(addr);
            accept_loops.push(tokio::spawn(crate::listener::accept_loop(
                inner.clone(),
                socket,
                l.1,
                l.0,
                tls,
            )));
        }
        if !sys_interval.is_zero() {
            tokio::spawn(crate::sys::run(Arc::downgrade(&inner), sys_interval));
        }
        tokio::spawn(keep_alive_sweep(Arc::downgrade(&inner)));
        Ok(Broker {
            inner,
            local_addrs,
            shutdown_tx,
            tls_listeners,
            accept_loops,
        })
    }

    /// The addresses the listeners are bound to, in configuration order.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub fn inner(&self) -> &Arc<BrokerInner> {
        &self.inner
    }

    /// Serves one client connection over any byte stream (an in-memory pipe in tests and
    /// fuzzing, a WebSocket adapter, ...), as an anonymous-allowed listener would. Returns
    /// when the connection ends. Counts against `max_connections` like a socket does.
    pub async fn serve_stream<S>(&self, stream: S, peer: SocketAddr, allow_anonymous: bool)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        if !self.inner.try_add_connection() {
            return;
        }
        let (reader, writer) = tokio::io::split(stream);
        let client = crate::listener::ClientTransport {
            listener: None,
            peer,
            allow_anonymous,
            identity: None,
        };
        crate::connection::run(self.inner.clone(), reader, writer, client).await;
        self.inner.remove_connection();
    }

    /// Reloads the password and ACL files and the TLS certificates (SIGHUP); a file that
    /// fails to load keeps the old one in force and the error is logged. Established
    /// connections are not dropped.
    pub fn reload_security(&self) {
        self.inner.security.reload();
        let own = self
            .inner
            .config
            .listeners
            .iter()
            .map(|l| l.security.is_some());
        for (own, security) in own.zip(&self.inner.listener_security) {
            if own {
                // The SCRAM file is the broker-wide one, reloaded above.
                let files = Security {
                    scram: None,
                    ..security.clone()
                };
                files.reload();
            }
        }
        for (addr, t) in &self.tls_listeners {
            match t.reload() {
                Ok(()) => tracing::info!("reloaded TLS certificates of {addr}"),
                Err(e) => tracing::error!(
                    "TLS certificates of {addr} not reloaded, keeping the old ones: {e}"
                ),
            }
        }
    }

    /// Stops within `timeout`: as [`Broker::shutdown`] with half of it for the
    /// connections to close, then stops the store (final fsync and flush, see
    /// `SessionStore::stop`) in what is left. An error when the store had failed, or
    /// did not close in time (it may still be closing: the process should exit now, as
    /// it would after a crash, which the store recovers from).
    pub async fn shutdown_within(self, timeout: Duration) -> Result<(), ShutdownError> {
        let deadline = Instant::now() + timeout;
        let store = self.inner.store.clone();
        self.shutdown(timeout / 2).await;
        let Some(store) = store else {
            return Ok(());
        };
        match tokio::time::timeout_at(deadline, store.stop()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ShutdownError::Store(e)),
            Err(_) => {
                // Dropping the last handle would wait for the stuck writer thread: this
                // one is left to the end of the process.
                std::mem::forget(store);
                Err(ShutdownError::StoreTimedOut(timeout))
            }
        }
    }

    /// Stops accepting (every listening socket is closed when this returns), tells
    /// every client (5.0: DISCONNECT 0x8B) and waits up to `grace` for connections to
    /// close.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown_tx.send(true);
        // An accept loop sees the flag at its next turn; waiting for it means a client
        // connecting after this returns is refused rather than accepted and kept.
        for accept_loop in self.accept_loops {
            let _ = accept_loop.await;
        }
        // Connections do not each wait on the flag (that would cost every idle connection
        // a waiter): each attached one is asked through its session. One that attaches
        // after this looked at its session sees the flag set when its main loop starts.
        for cell in self.inner.sessions.all() {
            cell.request(&mut cell.state.lock(), crate::session::Control::Shutdown);
        }
        let deadline = Instant::now() + grace;
        loop {
            let gone = self.inner.connections_gone.notified();
            if self.inner.live_connections() == 0 {
                break;
            }
            if tokio::time::timeout_at(deadline, gone).await.is_err() {
                break;
            }
        }
    }
}

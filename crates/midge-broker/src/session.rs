//! Sessions: the state that outlives a connection.
//!
//! A [`SessionCell`] is owned by the session registry ([`Sessions`]) and shared with the
//! router (as a [`DeliveryTarget`]) and with the connection attached to it, if any. Its
//! state sits behind its own mutex: the router takes it only to push onto the queue, the
//! connection only to move queued messages into its write buffer. There is no lock that
//! all sessions share on the publish path.

use crate::auth::{Authorizer, ClientInfo};
use crate::message::{Message, SessionId};
use crate::router::{Delivery, DeliveryTarget, SubIds};
use crate::sys::Stats;
use midge_proto::{ByteStr, QoS, ReasonCode, SubscriptionOptions};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Notify};

/// A message waiting in a session's queue for an in-flight slot or for its client.
#[derive(Debug)]
pub struct Queued {
    /// Position in the session's durable queue; 0 when the message is not stored.
    pub seq: u64,
    pub msg: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub sub_ids: SubIds,
}

/// Where an outgoing QoS 1/2 message is in its acknowledgement flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// QoS 1 PUBLISH sent, waiting for PUBACK.
    AwaitPubAck,
    /// QoS 2 PUBLISH sent, waiting for PUBREC.
    AwaitPubRec,
    /// PUBREL sent, waiting for PUBCOMP.
    AwaitPubComp,
}

/// An outgoing QoS 1/2 message that has a packet identifier and is not yet acknowledged.
#[derive(Debug)]
pub struct Inflight {
    pub packet_id: u16,
    pub msg: Queued,
    pub stage: Stage,
    /// Still to be resent on the current connection (after a reconnect).
    pub unsent: bool,
}

/// A subscription as the session remembers it (for resubscribe, retain handling 1 and
/// unsubscribe). Keyed by the filter exactly as subscribed, `$share/...` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredSubscription {
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}

/// Requests sent to the connection attached to a session.
#[derive(Debug)]
pub enum Control {
    /// Another connection with the same client ID arrived: send DISCONNECT 0x8E (5.0),
    /// close, then answer.
    TakeOver(oneshot::Sender<()>),
    /// Close the connection with this reason code (5.0 DISCONNECT).
    Close(ReasonCode),
}

/// The link from a session to the connection attached to it.
#[derive(Debug)]
pub struct ConnLink {
    pub conn_id: u64,
    pub control: mpsc::UnboundedSender<Control>,
}

/// Bounds copied from the configuration when the session is made.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// 0 = no limit.
    pub max_messages: usize,
    /// 0 = no limit.
    pub max_bytes: usize,
    pub queue_qos0_offline: bool,
}

/// Everything a session holds.
#[derive(Debug, Default)]
pub struct SessionState {
    pub subscriptions: HashMap<ByteStr, StoredSubscription>,
    pub queue: VecDeque<Queued>,
    pub queued_bytes: usize,
    pub inflight: VecDeque<Inflight>,
    pub next_packet_id: u16,
    /// Packet identifiers of QoS 2 messages received and not yet released by PUBREL.
    pub inbound_qos2: HashSet<u16>,
    /// The connection attached now, if any.
    pub conn: Option<ConnLink>,
    /// How long the session outlives its connection; `None` = forever.
    pub expiry: Option<Duration>,
    /// Bumped on every attach and detach; timers started at a detach act only if it is
    /// unchanged when they fire.
    pub generation: u64,
    /// A will waiting for its Will Delay Interval after the connection was lost.
    pub pending_will: Option<Arc<Message>>,
    /// The queue went past its soft limit; publishers wait on `SessionCell::room`.
    pub congested: bool,
    /// In-flight entries marked `unsent` (they do not count against the window).
    pub unsent_resends: usize,
    /// The username of the connection attached last (for read access checks).
    pub username: Option<ByteStr>,
    /// The session outlives its connection and is kept in the store (when there is one).
    pub persistent: bool,
    /// Next sequence number of the durable queue (starts at 1).
    pub next_seq: u64,
}

impl SessionState {
    /// The next packet identifier not used by an in-flight message [MQTT-2.2.1-3].
    pub fn allocate_packet_id(&mut self) -> Option<u16> {
        for _ in 0..=u16::MAX {
            self.next_packet_id = self.next_packet_id.wrapping_add(1);
            if self.next_packet_id == 0 {
                self.next_packet_id = 1;
            }
            let id = self.next_packet_id;
            if !self.inflight.iter().any(|m| m.packet_id == id) {
                return Some(id);
            }
        }
        None
    }

    /// Removes and returns the oldest queued message.
    pub fn pop_queued(&mut self) -> Option<Queued> {
        let q = self.queue.pop_front()?;
        self.queued_bytes = self.queued_bytes.saturating_sub(q.msg.payload.len());
        Some(q)
    }

    /// Removes an in-flight entry, keeping the count of unsent resends right.
    pub fn remove_inflight(&mut self, pos: usize) -> Option<Inflight> {
        let m = self.inflight.remove(pos)?;
        if m.unsent {
            self.unsent_resends = self.unsent_resends.saturating_sub(1);
        }
        Some(m)
    }

    pub fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        self.inflight.iter().position(|m| m.packet_id == packet_id)
    }
}

/// One session, shared by the registry, the router and the attached connection.
pub struct SessionCell {
    pub id: SessionId,
    pub client_id: ByteStr,
    pub state: Mutex<SessionState>,
    /// Woken when a message is queued for a connected client.
    pub notify: Notify,
    /// Woken (all waiters) when a connection detaches; a takeover waits on it.
    pub detached: Notify,
    /// Woken (all waiters) when a congested queue is back under its soft limit.
    pub room: Notify,
    limits: QueueLimits,
    stats: Arc<Stats>,
    /// Read access is checked for every message queued (retained ones included).
    acl: Option<Arc<dyn Authorizer>>,
    /// The broker has a store: persistent sessions number their queued messages.
    durable: bool,
}

impl std::fmt::Debug for SessionCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCell")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .finish()
    }
}

impl SessionCell {
    pub fn new(
        id: SessionId,
        client_id: ByteStr,
        limits: QueueLimits,
        stats: Arc<Stats>,
        acl: Option<Arc<dyn Authorizer>>,
        durable: bool,
    ) -> Self {
        SessionCell {
            acl,
            durable,
            id,
            client_id,
            state: Mutex::new(SessionState::default()),
            notify: Notify::new(),
            detached: Notify::new(),
            room: Notify::new(),
            limits,
            stats,
        }
    }

    /// Queues a message, honouring the queue bounds.
    ///
    /// An offline session's queue stops at `max_queued_messages`. For a connected client a
    /// message past that soft limit is still queued (up to twice the limit) and reported as
    /// `Congested`: the publisher then holds back its acknowledgement (QoS 1/2) or stops
    /// reading (QoS 0) until there is room again, so a fast publisher is paced by a slow
    /// subscriber instead of having messages dropped.
    ///
    /// When the session is kept in the store, a QoS 1/2 message gets a queue sequence
    /// number and its store delivery is pushed onto `durable` for the publisher to commit.
    pub fn enqueue(
        &self,
        msg: &Arc<Message>,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
        durable: &mut Vec<midge_store::Delivery>,
    ) -> Delivery {
        let online;
        let mut status = Delivery::Queued;
        {
            let mut st = self.state.lock();
            online = st.conn.is_some();
            if !online && qos == QoS::AtMostOnce && !self.limits.queue_qos0_offline {
                return Delivery::Dropped;
            }
            if let Some(acl) = &self.acl {
                let client = ClientInfo {
                    client_id: &self.client_id,
                    username: st.username.as_deref(),
                };
                if !acl.can_receive(&client, &msg.topic) {
                    return Delivery::Dropped;
                }
            }
            let soft_full = self.is_full(&st, msg.payload.len(), 1);
            if soft_full {
                let may_exceed = online && !self.is_full(&st, msg.payload.len(), 2);
                if !may_exceed {
                    drop(st);
                    self.stats.messages_dropped.fetch_add(1, Ordering::Relaxed);
                    return Delivery::Dropped;
                }
                st.congested = true;
                status = Delivery::Congested;
            }
            st.queued_bytes += msg.payload.len();
            let mut seq = 0;
            if self.durable && st.persistent && qos != QoS::AtMostOnce {
                st.next_seq = st.next_seq.max(1);
                seq = st.next_seq;
                st.next_seq += 1;
                durable.push(midge_store::Delivery {
                    client: self.client_id.clone(),
                    seq,
                    qos: qos.as_u8(),
                    retain,
                    subscription_ids: sub_ids.to_vec(),
                });
            }
            st.queue.push_back(Queued {
                seq,
                msg: msg.clone(),
                qos,
                retain,
                sub_ids,
            });
        }
        if online {
            self.notify.notify_one();
        }
        status
    }

    /// Whether the queue is at `factor` times its configured bounds.
    fn is_full(&self, st: &SessionState, incoming_bytes: usize, factor: usize) -> bool {
        let count =
            self.limits.max_messages > 0 && st.queue.len() >= self.limits.max_messages * factor;
        let bytes = self.limits.max_bytes > 0
            && st.queued_bytes + incoming_bytes > self.limits.max_bytes * factor;
        count || bytes
    }

    /// Whether a congested queue is back under its soft limit.
    pub fn has_room_locked(&self, st: &SessionState) -> bool {
        !self.is_full(st, 0, 1)
    }

    /// Called by the connection after it took messages off the queue: wakes publishers
    /// waiting for room once the queue is back under its soft limit.
    pub fn after_drain(&self, st: &mut SessionState) {
        if st.congested && self.has_room_locked(st) {
            st.congested = false;
            self.room.notify_waiters();
        }
    }
}

impl DeliveryTarget for SessionCell {
    fn deliver(
        &self,
        msg: &Arc<Message>,
        qos: QoS,
        retain: bool,
        sub_ids: SubIds,
        durable: &mut Vec<midge_store::Delivery>,
    ) -> Delivery {
        self.enqueue(msg, qos, retain, sub_ids, durable)
    }

    fn has_room(&self) -> bool {
        let st = self.state.lock();
        !st.congested || self.has_room_locked(&st)
    }

    fn room(&self) -> &Notify {
        &self.room
    }

    fn is_online(&self) -> bool {
        self.state.lock().conn.is_some()
    }
}

/// The session registry: client ID to session. Locked on connect and disconnect only.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<ByteStr, Arc<SessionCell>>>,
    next_id: AtomicU64,
}

impl Sessions {
    pub fn get(&self, client_id: &str) -> Option<Arc<SessionCell>> {
        self.map.lock().get(client_id).cloned()
    }

    /// Makes a new session for `client_id`, replacing any in the registry, and returns the
    /// one it replaced.
    pub fn create(
        &self,
        client_id: ByteStr,
        limits: QueueLimits,
        stats: Arc<Stats>,
        acl: Option<Arc<dyn Authorizer>>,
        durable: bool,
    ) -> (Arc<SessionCell>, Option<Arc<SessionCell>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let cell = Arc::new(SessionCell::new(
            id,
            client_id.clone(),
            limits,
            stats,
            acl,
            durable,
        ));
        let old = self.map.lock().insert(client_id, cell.clone());
        (cell, old)
    }

    /// Removes the session if the registry still holds this very one.
    pub fn remove_if_same(&self, cell: &Arc<SessionCell>) -> bool {
        let mut map = self.map.lock();
        match map.get(&cell.client_id) {
            Some(current) if Arc::ptr_eq(current, cell) => {
                map.remove(&cell.client_id);
                true
            }
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every session (for `$SYS` counts and shutdown).
    pub fn all(&self) -> Vec<Arc<SessionCell>> {
        self.map.lock().values().cloned().collect()
    }
}

//! Sessions: the state that outlives a connection.
//!
//! A [`SessionCell`] is owned by the session registry ([`Sessions`]) and shared with the
//! router (as a [`DeliveryTarget`]) and with the connection attached to it, if any. Its
//! state sits behind its own mutex: the router takes it only to push onto the queue, the
//! connection only to move queued messages into its write buffer. There is no lock that
//! all sessions share on the publish path.
//!
//! With a store, the QoS 1/2 messages of a persistent session that is offline (or that
//! still has older messages on disk) are kept in the store only: the session counts them
//! in its [`Backlog`], and the attached connection pages them back in a window at a time
//! (`persist::page_in`). See "Bounded memory" in `docs/design/persistence.md`.

use crate::auth::{Authorizer, ClientInfo};
use crate::message::{Message, SessionId};
use crate::router::{Availability, Delivery, DeliveryTarget, SubIds};
use crate::sys::Stats;
use midge_proto::{ByteStr, QoS, ReasonCode, SubscriptionOptions};
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Notify};

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

/// Requests to the connection attached to a session.
#[derive(Debug)]
pub enum Control {
    /// Other connections with the same client ID arrived: send DISCONNECT 0x8E (5.0),
    /// close, then answer each.
    TakeOver(Vec<oneshot::Sender<()>>),
    /// Close the connection with this reason code (5.0 DISCONNECT).
    Close(ReasonCode),
    /// The broker is shutting down (5.0 DISCONNECT 0x8B).
    Shutdown,
    /// Nothing came from the client for 1.5 times its keep-alive (5.0 DISCONNECT 0x8D).
    KeepAliveTimeout,
    /// The connection has been idle for `park_idle_after`: park it if it still is
    /// (parking.rs). Never replaces another request.
    Park,
}

/// The link from a session to the connection attached to it.
///
/// A request to the connection (takeover, kick) is left in `request` and the session's
/// `notify` woken ([`SessionCell::request`]); the connection takes it when it next looks
/// at its queue. No channel per connection: an idle connection holds no more than this.
#[derive(Debug)]
pub struct ConnLink {
    pub conn_id: u64,
    pub request: Option<Control>,
    /// 1.5 times the client's keep-alive in milliseconds (0: not checked)
    /// [MQTT-3.1.2-24]. At most 1.5 x 65,535 s: fits.
    pub keep_alive_ms: u32,
    /// When the connection last read something from its client (moved forward when it
    /// next looks at its queue). The keep-alive wheel (keepalive.rs) compares the two.
    last_read: u32,
    /// The connection is parked (parking.rs): no task runs it, and waking the session
    /// must start one ([`SessionCell::wake`]). May be left set briefly after the
    /// connection was resumed by its socket; a wake-up then finds nothing to resume.
    pub parked: bool,
    /// The tick of the connection's live entry in the broker's keep-alive wheel
    /// (keepalive.rs); 0: none.
    pub wheel_tick: u32,
}

impl ConnLink {
    /// The link of a connection that has just attached.
    pub fn new(conn_id: u64) -> Self {
        ConnLink {
            conn_id,
            request: None,
            keep_alive_ms: 0,
            last_read: stamp(tokio::time::Instant::now()),
            parked: false,
            wheel_tick: 0,
        }
    }
}

/// What every session of a broker shares (one `Arc` in each session, not a copy of each).
pub struct SessionEnv {
    pub limits: QueueLimits,
    pub stats: Arc<Stats>,
    /// The broker has a store: persistent sessions number their queued messages.
    pub durable: bool,
    /// Where idle TCP connections are parked; `None` when parking is off.
    pub parking: Option<Arc<crate::parking::ParkTable>>,
    /// Woken (all waiters) when a congested queue is back under its soft limit: one for
    /// all sessions (congestion is rare; a publisher woken for another session's room
    /// looks at its own targets and waits again).
    pub room: Notify,
}

impl SessionEnv {
    /// Sessions without parking.
    pub fn new(limits: QueueLimits, stats: Arc<Stats>, durable: bool) -> Self {
        SessionEnv {
            limits,
            stats,
            durable,
            parking: None,
            room: Notify::new(),
        }
    }
}

/// Bounds copied from the configuration when the session is made.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    /// 0 = no limit.
    pub max_messages: usize,
    /// 0 = no limit.
    pub max_bytes: usize,
    pub queue_qos0_offline: bool,
    /// Publisher back-pressure (`publisher_backpressure`): the most, in milliseconds, a
    /// congested subscriber may hold publishers per second; 0 = off (messages past the
    /// limit are dropped for that subscriber alone).
    pub backpressure_ms: u32,
}

/// How many messages a connection pages in from the store at a time; a new page is read
/// when fewer than half of it are left in memory.
pub const PAGE: usize = 256;

/// The QoS 1/2 messages of a persistent session that are in the store only.
///
/// Every stored message of the session with a sequence number at or after `read_from`
/// is in the backlog, none of them in `SessionState::queue`; every stored message in the
/// queue comes before `read_from`. While the backlog is not empty, newly queued QoS 1/2
/// messages join it (on disk) even for a connected client, so that order is kept.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// How many messages (they count against `max_queued_messages`).
    pub count: usize,
    /// Where the next page is read from.
    pub read_from: u64,
    /// Sequence numbers from here on were given out by this process: each one's entry is
    /// in the store once its commit is applied, so a missing one is a commit still under
    /// way, never a gap. Below it (recovered at start-up) entries may be missing: expired
    /// ones were removed while loading.
    pub contiguous_from: u64,
}

/// The sizes of a session's queue, for tests and `$SYS`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct QueueSizes {
    /// Messages held in memory (`SessionState::queue`).
    pub in_memory: usize,
    /// Messages in the store only (the [`Backlog`]).
    pub in_store: usize,
    /// Payload bytes of both.
    pub bytes: usize,
    /// Outgoing messages waiting for their acknowledgement (in memory).
    pub inflight: usize,
    /// Messages dropped for this session because its queue was full.
    pub dropped: u64,
}

/// What a page read from the store came to (see [`SessionCell::accept_page`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageOutcome {
    /// This many messages moved into the queue (at least one).
    Accepted(usize),
    /// The first message to read is not readable yet: its commit is still under way.
    Missing,
    /// The session changed while reading (discarded, detached, queue released): the
    /// page was not used.
    Stale,
}

/// The rules that decide which messages a session may receive: those of the listener its
/// client connected through last (listeners may have their own ACL files).
#[derive(Clone, Default)]
pub struct ReadAccess(pub Option<Arc<dyn Authorizer>>);

impl std::fmt::Debug for ReadAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ReadAccess(acl)"
        } else {
            "ReadAccess(all)"
        })
    }
}

/// A set of packet identifiers that allocates only once it holds one: most sessions never
/// receive a QoS 2 message, and a `HashSet` inline would cost each 48 bytes.
// The box is the point: one pointer in every session instead of a 48-byte `HashSet`.
#[allow(clippy::box_collection)]
#[derive(Debug, Default)]
pub struct IdSet(Option<Box<HashSet<u16>>>);

impl IdSet {
    pub fn contains(&self, id: u16) -> bool {
        self.0.as_ref().is_some_and(|s| s.contains(&id))
    }

    pub fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `id`; returns whether it was new.
    pub fn insert(&mut self, id: u16) -> bool {
        self.0.get_or_insert_with(Box::default).insert(id)
    }

    /// Removes `id`; returns whether it was there. The set is freed once empty.
    pub fn remove(&mut self, id: u16) -> bool {
        let Some(set) = self.0.as_mut() else {
            return false;
        };
        let had = set.remove(&id);
        if set.is_empty() {
            self.0 = None;
        }
        had
    }
}

impl FromIterator<u16> for IdSet {
    fn from_iter<I: IntoIterator<Item = u16>>(ids: I) -> Self {
        let set: HashSet<u16> = ids.into_iter().collect();
        IdSet((!set.is_empty()).then(|| Box::new(set)))
    }
}

/// Hash keys drawn once per process: a session's subscription map then needs no keys of
/// its own (`RandomState` is 16 bytes in every session) and stays as hard to flood with
/// colliding filters as with per-map keys.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessKeys;

impl std::hash::BuildHasher for ProcessKeys {
    type Hasher = std::collections::hash_map::DefaultHasher;

    fn build_hasher(&self) -> Self::Hasher {
        static KEYS: std::sync::LazyLock<std::collections::hash_map::RandomState> =
            std::sync::LazyLock::new(std::collections::hash_map::RandomState::new);
        KEYS.build_hasher()
    }
}

/// A session's expiry in 8 bytes where an `Option<Duration>` takes 16 (a session fits
/// jemalloc's 384-byte class): 0 = forever (the default), else milliseconds (rounded
/// up) + 1.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expiry(u64);

/// The parts of a session few sessions need, boxed so that the others carry one pointer
/// (a session fits jemalloc's 384-byte class; see parking.rs's size test).
#[derive(Debug, Default)]
pub struct SessionRare {
    /// A will waiting for its Will Delay Interval after the connection was lost.
    pending_will: Option<Arc<Message>>,
    /// Messages dropped for this session because its queue was full.
    dropped: u64,
    /// How long it has held publishers lately (`publisher_backpressure`).
    hold: HoldBudget,
}

/// How long a congested subscriber has held publishers in the current one-second window
/// (`publisher_backpressure`): at most `publisher_backpressure_max` of wall-clock time.
/// Publishers held at the same time count once: eight publishers held together for 10 ms
/// spend 10 ms, not 80, so the budget means the same whatever the number of publishers.
/// Once spent, it holds nobody until its queue drains below its limit (and, after that,
/// until the window ends if it had spent it all).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HoldBudget {
    /// Start of the current window, in milliseconds of [`clock_ms`] (wrapping).
    window_start: u32,
    /// Milliseconds publishers were held in it.
    spent_ms: u32,
    /// The latest span charged, `[from, until)` in [`clock_ms`]: a hold overlapping it
    /// is charged only for what lies outside.
    from_ms: u32,
    until_ms: u32,
    /// Spent it all: holds nobody until the queue drains.
    exhausted: bool,
}

impl HoldBudget {
    const WINDOW_MS: u32 = 1000;

    /// How many more milliseconds this subscriber may hold a publisher at `now_ms`.
    pub fn allowance(&mut self, now_ms: u32, max_ms: u32) -> u32 {
        if self.exhausted {
            return 0;
        }
        if now_ms.wrapping_sub(self.window_start) >= Self::WINDOW_MS {
            self.window_start = now_ms;
            self.spent_ms = 0;
        }
        max_ms.saturating_sub(self.spent_ms)
    }

    /// Records that a publisher was held from `from_ms` to `to_ms`; the part that
    /// overlaps the span charged last was paid for already, and the span grows to cover
    /// both.
    pub fn charge(&mut self, from_ms: u32, to_ms: u32, max_ms: u32) {
        // Positions relative to the last span's start: holds last at most seconds, far
        // from where the wrapping clock would make the signed difference wrong.
        let rel = |t: u32| t.wrapping_sub(self.from_ms) as i32;
        let (start, end, last_end) = (rel(from_ms), rel(to_ms), rel(self.until_ms));
        let new_ms = if last_end > 0 && start <= last_end && end >= 0 {
            if start < 0 {
                self.from_ms = from_ms;
            }
            if end > last_end {
                self.until_ms = to_ms;
            }
            start.min(0).unsigned_abs() + (end - last_end).max(0).unsigned_abs()
        } else {
            self.from_ms = from_ms;
            self.until_ms = to_ms;
            to_ms.wrapping_sub(from_ms)
        };
        self.spent_ms = self.spent_ms.saturating_add(new_ms);
        if self.spent_ms >= max_ms {
            self.exhausted = true;
        }
    }

    /// The queue drained below its limit: it may hold publishers again (within the window).
    pub fn drained(&mut self) {
        self.exhausted = false;
    }
}

/// Milliseconds since the process's clock epoch, wrapping (for [`HoldBudget`]).
fn clock_ms(at: tokio::time::Instant) -> u32 {
    at.saturating_duration_since(epoch()).as_millis() as u32
}

/// Everything a session holds.
#[derive(Debug, Default)]
pub struct SessionState {
    pub subscriptions: HashMap<ByteStr, StoredSubscription, ProcessKeys>,
    /// Messages in memory, oldest first.
    pub queue: VecDeque<Queued>,
    /// Payload bytes of `queue` and of `backlog`.
    pub queued_bytes: usize,
    /// QoS 1/2 messages in the store only.
    pub backlog: Backlog,
    pub inflight: VecDeque<Inflight>,
    pub next_packet_id: u16,
    /// Packet identifiers of QoS 2 messages received and not yet released by PUBREL.
    pub inbound_qos2: IdSet,
    /// The connection attached now, if any.
    pub conn: Option<ConnLink>,
    /// How long the session outlives its connection: see [`SessionState::expiry`].
    expiry: Expiry,
    /// Bumped on every attach and detach; timers started at a detach act only if it is
    /// unchanged when they fire.
    pub generation: u64,
    /// What few sessions need (a will waiting for its delay, the record of a subscriber
    /// that could not keep up): see [`SessionRare`].
    rare: Option<Box<SessionRare>>,
    /// The queue reached its limit and has not been back under it since: messages for
    /// this session are dropped (or, with publisher back-pressure, publishers wait on
    /// `SessionEnv::room`).
    pub congested: bool,
    /// A page read of the backlog is under way (one at a time per session). Not in
    /// [`Backlog`]: beside the other flags it takes no room of its own.
    pub paging: bool,
    /// In-flight entries marked `unsent` (they do not count against the window).
    pub unsent_resends: u16,
    /// The username of the connection attached last (for read access checks).
    pub username: Option<ByteStr>,
    /// Read access is checked for every message queued (retained ones included).
    pub read_access: ReadAccess,
    /// The session outlives its connection and is kept in the store (when there is one).
    pub persistent: bool,
    /// The session ended (`Broker::discard_session`): nothing is queued for it any more
    /// and no connection attaches to it.
    pub discarded: bool,
    /// Next sequence number of the durable queue (starts at `first_seq`).
    pub next_seq: u64,
    /// The first sequence number of this session: above every number an earlier session
    /// of its client ID gave out (see [`first_seq`]), so that a queue entry of that one
    /// committed late is known at load for what it is. Stored in the session record.
    pub first_seq: u64,
}

impl SessionState {
    /// How long the session outlives its connection; `None` = forever.
    pub fn expiry(&self) -> Option<Duration> {
        self.expiry.0.checked_sub(1).map(Duration::from_millis)
    }

    pub fn set_expiry(&mut self, expiry: Option<Duration>) {
        self.expiry = Expiry(expiry.map_or(0, |d| {
            let ms = u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX);
            ms.saturating_add(1)
        }));
    }

    /// Takes the will waiting for its delay, if any.
    pub fn take_pending_will(&mut self) -> Option<Arc<Message>> {
        self.rare.as_mut()?.pending_will.take()
    }

    /// Leaves a will to be sent after its delay.
    pub fn set_pending_will(&mut self, will: Arc<Message>) {
        self.rare_mut().pending_will = Some(will);
    }

    /// Messages dropped for this session because its queue was full.
    pub fn dropped(&self) -> u64 {
        self.rare.as_ref().map_or(0, |r| r.dropped)
    }

    fn rare_mut(&mut self) -> &mut SessionRare {
        self.rare.get_or_insert_with(Box::default)
    }

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

    /// Nothing queued (in memory or in the store) and nothing to resend: what a
    /// connection must see to park (parking.rs).
    pub fn nothing_to_send(&self) -> bool {
        self.queue.is_empty() && self.backlog.count == 0 && self.unsent_resends == 0
    }

    /// Messages queued in memory and in the store (what the queue limits count).
    pub fn queued_len(&self) -> usize {
        self.queue.len() + self.backlog.count
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
    /// Woken when a message is queued for a connected client, and for a request to it
    /// (`ConnLink::request`); all waiters when the connection detaches.
    pub notify: Notify,
    env: Arc<SessionEnv>,
}

impl std::fmt::Debug for SessionCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCell")
            .field("id", &self.id)
            .field("client_id", &self.client_id)
            .finish()
    }
}

/// Granularity of [`ConnLink`]'s clock: a `u32` of these covers 13 years of uptime.
const STAMP: Duration = Duration::from_millis(100);

/// The instant every [`ConnLink`] time counts from (the first use in the process).
fn epoch() -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(tokio::time::Instant::now)
}

/// `at` in [`STAMP`]s since the epoch, rounded up (a read is never taken for earlier
/// than it was: the keep-alive never runs out early).
fn stamp(at: tokio::time::Instant) -> u32 {
    let ms = at.saturating_duration_since(epoch()).as_millis();
    u32::try_from(ms.div_ceil(STAMP.as_millis())).unwrap_or(u32::MAX)
}

impl ConnLink {
    /// When the connection last read something from its client.
    pub fn last_read(&self) -> tokio::time::Instant {
        epoch() + STAMP * self.last_read
    }

    /// Records a read at `at`.
    pub fn set_last_read(&mut self, at: tokio::time::Instant) {
        self.last_read = stamp(at);
    }

    /// 1.5 times the client's keep-alive (zero: not checked).
    pub fn keep_alive(&self) -> Duration {
        Duration::from_millis(u64::from(self.keep_alive_ms))
    }
}

/// Sequence numbers per millisecond of wall-clock time set aside for a session.
const SEQ_PER_MS: u64 = 1 << 20;

/// The last first sequence number given out (or raised to by [`first_seq_above`]).
static LAST_FIRST_SEQ: AtomicU64 = AtomicU64::new(0);

/// Makes every first sequence number given out from now on greater than `seq` (the
/// numbers of the sessions restored at start-up: a start soon after a run that gave out
/// numbers ahead of the clock, or after the clock stepped back, still numbers new
/// sessions above them).
pub fn first_seq_above(seq: u64) {
    LAST_FIRST_SEQ.fetch_max(seq, Ordering::Relaxed);
}

/// The first queue sequence number of a new session: `SEQ_PER_MS` times the wall-clock
/// milliseconds, and at least `SEQ_PER_MS` above the last one given. A session started
/// earlier gave out fewer numbers than that since it started (it would need over a
/// million messages per millisecond), so every number of an earlier session of the same
/// client ID lies below this one (fits in a `u64` until the year 2500).
fn first_seq() -> u64 {
    let now = crate::persist::now_millis().saturating_mul(SEQ_PER_MS);
    let mut last = LAST_FIRST_SEQ.load(Ordering::Relaxed);
    loop {
        let next = now.max(last.saturating_add(SEQ_PER_MS));
        match LAST_FIRST_SEQ.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

impl SessionCell {
    /// A new session, numbering its queue from a fresh [`first_seq`].
    pub fn new(
        id: SessionId,
        client_id: ByteStr,
        env: Arc<SessionEnv>,
        acl: Option<Arc<dyn Authorizer>>,
    ) -> Self {
        Self::numbered_from(id, client_id, env, acl, first_seq())
    }

    /// A session whose queue is numbered from `first` (one restored from the store).
    pub fn numbered_from(
        id: SessionId,
        client_id: ByteStr,
        env: Arc<SessionEnv>,
        acl: Option<Arc<dyn Authorizer>>,
        first: u64,
    ) -> Self {
        SessionCell {
            env,
            id,
            client_id,
            state: Mutex::new(SessionState {
                read_access: ReadAccess(acl),
                next_seq: first,
                first_seq: first,
                ..SessionState::default()
            }),
            notify: Notify::new(),
        }
    }

    /// Wakes the attached connection: its task's wait on `notify`, or, when it is parked,
    /// a new task for it (parking.rs). Called under the session lock, which is what
    /// orders it against the connection parking itself.
    pub fn wake(&self, st: &mut SessionState) {
        self.notify.notify_one();
        if let Some(link) = st.conn.as_mut().filter(|l| l.parked) {
            link.parked = false;
            if let Some(parking) = &self.env.parking {
                parking.unpark(link.conn_id);
            }
        }
    }

    /// Asks the attached connection, if any, to go (`Control`): it takes the request the
    /// next time it looks at the queue, which `notify` makes it do at once. Takeovers that
    /// meet are merged (each is answered); otherwise the newer request replaces the one
    /// waiting, whose takeover answers are dropped: that tells their senders to look again.
    /// Returns whether a connection was attached.
    pub fn request(&self, st: &mut SessionState, control: Control) -> bool {
        let Some(link) = st.conn.as_mut() else {
            return false;
        };
        match (&mut link.request, control) {
            (Some(Control::TakeOver(waiting)), Control::TakeOver(more)) => waiting.extend(more),
            (slot, control) => *slot = Some(control),
        }
        self.wake(st);
        true
    }

    /// Queues a message, honouring the queue bounds.
    ///
    /// A queue at its limit (`max_queued_messages`, `max_queued_bytes`), online or not,
    /// takes nothing more: the message is dropped for this session alone and counted, so
    /// no publisher and no other subscriber waits on a subscriber that does not keep up.
    /// The first drop of a connected client wakes its connection, which starts counting
    /// towards `slow_consumer_timeout`.
    ///
    /// With publisher back-pressure on, a connected client's queue may instead go past
    /// the limit (up to twice it) while the session has hold budget left: the message is
    /// queued and reported `Congested`, and the publisher holds back its acknowledgement
    /// (QoS 1/2) or stops reading (QoS 0) until there is room, or the budget runs out.
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
            if st.discarded {
                // Matched just before the session ended: it takes nothing more.
                return Delivery::Dropped;
            }
            online = st.conn.is_some();
            if !online && qos == QoS::AtMostOnce && !self.env.limits.queue_qos0_offline {
                return Delivery::Dropped;
            }
            if let Some(acl) = &st.read_access.0 {
                let client = ClientInfo {
                    client_id: &self.client_id,
                    username: st.username.as_deref(),
                };
                if !acl.can_receive(&client, &msg.topic) {
                    return Delivery::Dropped;
                }
            }
            if self.is_full(&st, msg.payload.len(), 1) {
                let hold = online
                    && self.env.limits.backpressure_ms > 0
                    && !self.is_full(&st, msg.payload.len(), 2)
                    && self.allowance_locked(&mut st) > 0;
                if !hold {
                    // `Full` (the publisher yields once) only for the first drop of a
                    // congestion: a stuck subscriber stays congested and costs its
                    // publishers one yield, not one per read.
                    let first = online && !st.congested;
                    self.drop_locked(&mut st, online);
                    return if first {
                        Delivery::Full
                    } else {
                        Delivery::Dropped
                    };
                }
                st.congested = true;
                status = Delivery::Congested;
            }
            st.queued_bytes += msg.payload.len();
            let mut seq = 0;
            // A session with a backlog stores its QoS 1/2 messages even if it is no longer
            // persistent (resumed with expiry 0): they must stay behind the backlog.
            let stored = self.env.durable
                && (st.persistent || st.backlog.count > 0)
                && qos != QoS::AtMostOnce;
            if stored {
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
                if !online || st.backlog.count > 0 {
                    // In the store only: behind the backlog, or the start of one.
                    if st.backlog.count == 0 {
                        st.backlog.read_from = seq;
                    }
                    st.backlog.count += 1;
                    if online {
                        self.wake(&mut st);
                    }
                    return status;
                }
            }
            st.queue.push_back(Queued {
                seq,
                msg: msg.clone(),
                qos,
                retain,
                sub_ids,
            });
            if online {
                self.wake(&mut st);
            }
        }
        status
    }

    /// Drops a message for this session (its queue is full) and counts it. The first drop
    /// for a connected client wakes its connection: a queue that stays full makes it a
    /// slow consumer (`Conn::note_queue`).
    fn drop_locked(&self, st: &mut SessionState, online: bool) {
        st.rare_mut().dropped += 1;
        self.env
            .stats
            .messages_dropped
            .fetch_add(1, Ordering::Relaxed);
        if online && !st.congested {
            st.congested = true;
            self.wake(st);
        }
    }

    /// Milliseconds this session may still hold a publisher now.
    fn allowance_locked(&self, st: &mut SessionState) -> u32 {
        let max = self.env.limits.backpressure_ms;
        if max == 0 {
            return 0;
        }
        let now = clock_ms(tokio::time::Instant::now());
        st.rare_mut().hold.allowance(now, max)
    }

    /// Whether the queue is at most half its bounds: a subscriber that gets there has
    /// caught up, and its slow-consumer clock stops.
    pub fn at_most_half_full(&self, st: &SessionState) -> bool {
        let limits = &self.env.limits;
        let count = limits.max_messages == 0 || st.queued_len() * 2 <= limits.max_messages;
        let bytes = limits.max_bytes == 0 || st.queued_bytes * 2 <= limits.max_bytes;
        count && bytes
    }

    /// Whether the queue is at `factor` times its configured bounds.
    fn is_full(&self, st: &SessionState, incoming_bytes: usize, factor: usize) -> bool {
        let count = self.env.limits.max_messages > 0
            && st.queued_len() >= self.env.limits.max_messages * factor;
        let bytes = self.env.limits.max_bytes > 0
            && st.queued_bytes + incoming_bytes > self.env.limits.max_bytes * factor;
        count || bytes
    }

    /// The sizes of the queue now.
    pub fn queue_sizes(&self) -> QueueSizes {
        let st = self.state.lock();
        QueueSizes {
            in_memory: st.queue.len(),
            in_store: st.backlog.count,
            bytes: st.queued_bytes,
            inflight: st.inflight.len(),
            dropped: st.dropped(),
        }
    }

    /// Called when the connection leaves a persistent session: the stored messages of its
    /// queue are released from memory (they are in the store, or will be once their
    /// commits are applied) and become the start of the backlog. QoS 0 messages stay.
    pub fn release_queue_to_store(&self, st: &mut SessionState) {
        if !self.env.durable || !(st.persistent || st.backlog.count > 0) {
            return;
        }
        let Some(first) = st.queue.iter().find(|q| q.seq != 0).map(|q| q.seq) else {
            return;
        };
        let before = st.queue.len();
        st.queue.retain(|q| q.seq == 0);
        st.backlog.count += before - st.queue.len();
        st.backlog.read_from = first;
    }

    /// Moves a page read from the store (`entries`, from sequence number `from`, read
    /// while the session had `generation`) into the queue. Takes the longest prefix that
    /// has no missing sequence number at or after `Backlog::contiguous_from`: a missing
    /// one there belongs to a commit not applied yet, and everything after it waits too.
    /// With `skip_missing` (the commit never came), missing numbers are passed over.
    pub fn accept_page(
        &self,
        st: &mut SessionState,
        generation: u64,
        from: u64,
        entries: Vec<midge_store::QueuedMessage>,
        skip_missing: bool,
    ) -> PageOutcome {
        if st.generation != generation || st.backlog.read_from != from || st.backlog.count == 0 {
            st.paging = false;
            return PageOutcome::Stale;
        }
        let mut expected = from;
        let mut taken = 0;
        let mut skipped = 0;
        for e in entries {
            // Left over from an earlier session of this client ID: not ours.
            if e.seq >= st.next_seq || e.seq < expected || taken >= st.backlog.count {
                break;
            }
            let missing_runtime = e
                .seq
                .saturating_sub(expected.max(st.backlog.contiguous_from));
            if missing_runtime > 0 {
                if !skip_missing {
                    break;
                }
                skipped += missing_runtime as usize;
            }
            expected = e.seq + 1;
            taken += 1;
            st.queue.push_back(crate::persist::queued_from_record(&e));
        }
        if taken == 0 && !skip_missing {
            return PageOutcome::Missing;
        }
        st.paging = false;
        st.backlog.count = st.backlog.count.saturating_sub(taken + skipped);
        st.backlog.read_from = expected;
        if skip_missing && taken == 0 {
            // Nothing readable is left: the count was of messages that never arrived.
            st.backlog.count = 0;
        }
        if skip_missing {
            // The sizes of the messages passed over are unknown: count again.
            let in_memory: usize = st.queue.iter().map(|q| q.msg.payload.len()).sum();
            if st.backlog.count == 0 {
                st.queued_bytes = in_memory;
            } else {
                st.queued_bytes = st.queued_bytes.max(in_memory);
            }
        }
        PageOutcome::Accepted(taken)
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
            if let Some(rare) = st.rare.as_mut() {
                rare.hold.drained();
            }
            self.env.room.notify_waiters();
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
        &self.env.room
    }

    fn availability(&self) -> Availability {
        let st = self.state.lock();
        if st.conn.is_none() {
            Availability::Offline
        } else if self.is_full(&st, 0, 1) {
            Availability::Full
        } else {
            Availability::Ready
        }
    }

    fn hold_allowance(&self) -> Duration {
        let mut st = self.state.lock();
        Duration::from_millis(u64::from(self.allowance_locked(&mut st)))
    }

    fn charge_hold(&self, from: tokio::time::Instant, to: tokio::time::Instant) {
        let max = self.env.limits.backpressure_ms;
        if max == 0 {
            return;
        }
        self.state
            .lock()
            .rare_mut()
            .hold
            .charge(clock_ms(from), clock_ms(to), max);
    }
}

/// A session in the registry, found by its client ID: the key is the session's own
/// `client_id`, so an entry is one pointer (a map from a separate key would add 32 bytes
/// per session, and the registry's spare slots twice that).
struct Registered(Arc<SessionCell>);

impl std::hash::Hash for Registered {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // As `str` hashes: lookups by `&str` find it.
        self.0.client_id.as_str().hash(state);
    }
}

impl PartialEq for Registered {
    fn eq(&self, other: &Self) -> bool {
        self.0.client_id == other.0.client_id
    }
}

impl Eq for Registered {}

impl std::borrow::Borrow<str> for Registered {
    fn borrow(&self) -> &str {
        self.0.client_id.as_str()
    }
}

/// The session registry: client ID to session. Locked on connect and disconnect only.
pub struct Sessions {
    map: Mutex<HashSet<Registered>>,
    next_id: AtomicU64,
    env: Arc<SessionEnv>,
}

impl Sessions {
    pub fn new(env: SessionEnv) -> Self {
        Sessions {
            map: Mutex::default(),
            next_id: AtomicU64::new(0),
            env: Arc::new(env),
        }
    }

    /// What the sessions share.
    pub fn env(&self) -> &Arc<SessionEnv> {
        &self.env
    }

    pub fn get(&self, client_id: &str) -> Option<Arc<SessionCell>> {
        self.map.lock().get(client_id).map(|r| r.0.clone())
    }

    /// Puts a session restored from the store, its queue numbered from `first_seq`, in
    /// the registry (replacing any), and returns the one it replaced.
    pub fn restore(
        &self,
        client_id: ByteStr,
        acl: Option<Arc<dyn Authorizer>>,
        first_seq: u64,
    ) -> (Arc<SessionCell>, Option<Arc<SessionCell>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let cell = Arc::new(SessionCell::numbered_from(
            id,
            client_id,
            self.env.clone(),
            acl,
            first_seq,
        ));
        let old = self.map.lock().replace(Registered(cell.clone()));
        (cell, old.map(|r| r.0))
    }

    /// A new session with the next identifier (not yet in the registry).
    fn new_cell(&self, client_id: ByteStr, acl: Option<Arc<dyn Authorizer>>) -> Arc<SessionCell> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        Arc::new(SessionCell::new(id, client_id, self.env.clone(), acl))
    }

    /// Makes a new session for `client_id` if the registry still holds `expected` for it
    /// (`None`: no session), atomically; `None` when another connection changed it in
    /// between (the caller looks again). Two connections can thus never both replace
    /// the same session and leave one of them attached to an orphan.
    pub fn create_replacing(
        &self,
        client_id: ByteStr,
        expected: Option<&Arc<SessionCell>>,
        acl: Option<Arc<dyn Authorizer>>,
    ) -> Option<Arc<SessionCell>> {
        let mut map = self.map.lock();
        let unchanged = match (map.get(client_id.as_str()), expected) {
            (None, None) => true,
            (Some(current), Some(expected)) => Arc::ptr_eq(&current.0, expected),
            _ => false,
        };
        if !unchanged {
            return None;
        }
        let cell = self.new_cell(client_id, acl);
        map.replace(Registered(cell.clone()));
        Some(cell)
    }

    /// Removes the session if the registry still holds this very one.
    pub fn remove_if_same(&self, cell: &Arc<SessionCell>) -> bool {
        let mut map = self.map.lock();
        match map.get(cell.client_id.as_str()) {
            Some(current) if Arc::ptr_eq(&current.0, cell) => {
                map.remove(cell.client_id.as_str());
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
        self.map.lock().iter().map(|r| r.0.clone()).collect()
    }
}

#[cfg(test)]
mod tests {

    /// `publisher_backpressure_max_ms` is wall-clock time: publishers held together
    /// spend it once, whatever their number and the order their holds end in.
    #[test]
    fn holds_at_the_same_time_spend_the_budget_once() {
        let mut b = HoldBudget::default();
        assert_eq!(b.allowance(100, 50), 50);
        for _ in 0..8 {
            b.charge(100, 110, 50);
        }
        assert_eq!(b.allowance(110, 50), 40, "eight identical holds: 10 ms");
        // A hold inside the last span, then one around it: only what lies outside counts.
        b.charge(102, 108, 50);
        b.charge(95, 115, 50);
        assert_eq!(
            b.allowance(115, 50),
            30,
            "the span grew to 95..115: 20 ms in all"
        );
        // A later, separate hold counts in full.
        b.charge(200, 210, 50);
        assert_eq!(b.allowance(210, 50), 20);
        b.charge(300, 330, 50);
        assert_eq!(b.allowance(330, 50), 0, "spent: holds nobody");
        b.drained();
        assert_eq!(b.allowance(1200, 50), 50, "a new window after draining");
    }

    #[test]
    fn a_hold_across_the_clock_wrap_is_charged_its_length() {
        let mut b = HoldBudget::default();
        let start = u32::MAX - 4;
        assert_eq!(b.allowance(start, 100), 100);
        b.charge(start, 5, 100);
        b.charge(start.wrapping_add(2), 3, 100);
        assert_eq!(b.allowance(5, 100), 90);
    }

    use super::*;
    use midge_store::{MessageRecord, QueueEntry, QueuedMessage};

    fn cell() -> SessionCell {
        let limits = QueueLimits {
            max_messages: 0,
            max_bytes: 0,
            queue_qos0_offline: false,
            backpressure_ms: 0,
        };
        let env = SessionEnv::new(limits, Arc::default(), true);
        SessionCell::new(1, ByteStr::from("c"), Arc::new(env), None)
    }

    fn stored(seq: u64) -> QueuedMessage {
        QueuedMessage {
            seq,
            entry: QueueEntry {
                message_id: seq,
                qos: 1,
                retain: false,
                subscription_ids: Vec::new(),
                expires_at: None,
                payload_len: Some(1),
            },
            message: Arc::new(MessageRecord {
                topic: "t".into(),
                payload: bytes::Bytes::from_static(b"x"),
                qos: 1,
                retain: false,
                properties: Default::default(),
                expires_at: None,
            }),
        }
    }

    fn backlog(st: &mut SessionState, count: usize, read_from: u64, contiguous_from: u64) {
        st.next_seq = 100;
        st.queued_bytes = count;
        st.backlog = Backlog {
            count,
            read_from,
            contiguous_from,
        };
        st.paging = true;
    }

    #[test]
    fn page_stops_before_a_sequence_number_whose_commit_is_not_applied() {
        let c = cell();
        let mut st = c.state.lock();
        backlog(&mut st, 4, 5, 0);
        let page = vec![stored(5), stored(7), stored(8)];
        assert_eq!(
            c.accept_page(&mut st, 0, 5, page, false),
            PageOutcome::Accepted(1)
        );
        assert_eq!((st.backlog.count, st.backlog.read_from), (3, 6));
        assert!(!st.paging);
        st.paging = true;
        let page = vec![stored(7), stored(8)];
        assert_eq!(
            c.accept_page(&mut st, 0, 6, page, false),
            PageOutcome::Missing
        );
        assert_eq!(st.queue.len(), 1, "nothing taken past a missing message");
        assert!(st.paging, "the reader goes on after a barrier");
    }

    #[test]
    fn page_passes_over_entries_removed_at_start_up() {
        let c = cell();
        let mut st = c.state.lock();
        // Recovered: seqs below 20 may be missing (expired while the broker was down).
        backlog(&mut st, 3, 3, 20);
        let page = vec![stored(4), stored(9), stored(20)];
        assert_eq!(
            c.accept_page(&mut st, 0, 3, page, false),
            PageOutcome::Accepted(3)
        );
        assert_eq!((st.backlog.count, st.backlog.read_from), (0, 21));
        let seqs: Vec<u64> = st.queue.iter().map(|q| q.seq).collect();
        assert_eq!(seqs, vec![4, 9, 20]);
    }

    #[test]
    fn page_read_before_the_session_changed_is_not_used() {
        let c = cell();
        let mut st = c.state.lock();
        backlog(&mut st, 2, 1, 0);
        st.generation = 2;
        let page = vec![stored(1), stored(2)];
        assert_eq!(
            c.accept_page(&mut st, 1, 1, page, false),
            PageOutcome::Stale
        );
        assert_eq!((st.queue.len(), st.backlog.count), (0, 2));
        assert!(!st.paging);
    }

    /// A new session's sequence numbers start above every number an earlier session of
    /// its client ID can have given out, so that a late commit of that one is told apart
    /// at load (see `first_seq`).
    #[test]
    fn a_new_session_numbers_its_queue_above_every_earlier_one() {
        let first = cell();
        first.state.lock().next_seq += 500_000;
        let later = cell();
        let (a, b) = (first.state.lock(), later.state.lock());
        assert!(b.first_seq > a.next_seq, "{} {}", b.first_seq, a.next_seq);
        assert_eq!(b.next_seq, b.first_seq);
    }

    /// A QoS 1 message on `t` with a 3-byte payload.
    fn qos1_message() -> Arc<Message> {
        Arc::new(Message {
            topic: ByteStr::from("t"),
            payload: bytes::Bytes::from_static(b"abc"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Default::default(),
            expires_at: None,
            origin: 0,
            gate: None,
        })
    }

    #[test]
    fn a_session_numbers_above_what_restored_sessions_gave_out() {
        let ahead = crate::persist::now_millis().saturating_add(60_000) * SEQ_PER_MS;
        first_seq_above(ahead);
        assert!(cell().state.lock().first_seq > ahead);
    }

    /// A publisher that matched a session just before it ended gets nothing queued, and
    /// no sequence number is taken (the successor numbers above the last one given).
    #[test]
    fn an_ended_session_takes_no_more_messages() {
        let c = cell();
        let next = {
            let mut st = c.state.lock();
            st.persistent = true;
            st.discarded = true;
            st.next_seq
        };
        let msg = qos1_message();
        let mut durable = Vec::new();
        let got = c.enqueue(&msg, QoS::AtLeastOnce, false, SubIds::new(), &mut durable);
        assert!(matches!(got, Delivery::Dropped));
        assert!(durable.is_empty());
        let st = c.state.lock();
        assert_eq!(
            (st.next_seq, st.queue.len(), st.backlog.count),
            (next, 0, 0)
        );
    }

    #[test]
    fn offline_session_queues_stored_messages_in_the_store_only() {
        let c = cell();
        c.state.lock().persistent = true;
        let msg = qos1_message();
        let mut durable = Vec::new();
        for _ in 0..3 {
            c.enqueue(&msg, QoS::AtLeastOnce, false, SubIds::new(), &mut durable);
        }
        c.enqueue(&msg, QoS::AtMostOnce, false, SubIds::new(), &mut durable);
        assert_eq!(durable.len(), 3);
        let st = c.state.lock();
        assert_eq!(st.backlog.count, 3);
        assert_eq!(st.backlog.read_from, st.first_seq);
        let seqs: Vec<u64> = durable.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, (st.first_seq..st.first_seq + 3).collect::<Vec<_>>());
        assert!(
            st.queue.is_empty(),
            "QoS 0 to an offline session is dropped by default"
        );
        assert_eq!(st.queued_bytes, 9);
    }

    #[test]
    fn releasing_the_queue_makes_stored_messages_the_start_of_the_backlog() {
        let c = cell();
        let mut st = c.state.lock();
        st.persistent = true;
        let m = |seq| crate::persist::queued_from_record(&stored(seq));
        let mut qos0 = m(0);
        qos0.seq = 0;
        st.queue.extend([m(4), qos0, m(5)]);
        st.backlog = Backlog {
            count: 2,
            read_from: 6,
            contiguous_from: 0,
        };
        c.release_queue_to_store(&mut st);
        assert_eq!(st.queue.len(), 1, "QoS 0 stays in memory");
        assert_eq!((st.backlog.count, st.backlog.read_from), (4, 4));
    }
}

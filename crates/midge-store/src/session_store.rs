//! The `SessionStore` interface the broker programs against, and the types it trades in.

use crate::error::StoreError;
use crate::op::Op;
use crate::record::{
    InflightRecord, MessageId, MessageRecord, QueueEntry, SessionRecord, SubscriptionRecord,
    WillRecord,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};
use tokio::sync::oneshot;

/// When a commit counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before every ticket resolves. Many operations share one fsync (group
    /// commit). Survives power loss and OS crashes.
    Always,
    /// Tickets resolve once the operations are written to the operating system; an fsync
    /// follows at most this long after. Survives a crash of the broker process (kill -9);
    /// power loss can cost the last interval.
    Periodic(Duration),
    /// Tickets resolve once written to the operating system; fsync is left to the OS.
    /// Survives a crash of the broker process, not power loss.
    Never,
}

impl Default for Durability {
    /// `Periodic(1 s)`: an acknowledged message survives kill -9, and power loss costs at
    /// most about a second.
    fn default() -> Self {
        Durability::Periodic(Duration::from_secs(1))
    }
}

/// Resolves when the operations of one `commit` are durable under the store's
/// [`Durability`], or with the error that stopped them.
#[must_use = "a commit is durable only when its ticket resolves"]
#[derive(Debug)]
pub struct CommitTicket {
    rx: oneshot::Receiver<Result<(), StoreError>>,
    path: Arc<std::path::Path>,
}

impl CommitTicket {
    pub(crate) fn new(
        rx: oneshot::Receiver<Result<(), StoreError>>,
        path: Arc<std::path::Path>,
    ) -> Self {
        CommitTicket { rx, path }
    }

    /// A ticket that resolves at once with `result`.
    pub fn ready(result: Result<(), StoreError>, path: Arc<std::path::Path>) -> Self {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(result);
        CommitTicket { rx, path }
    }

    /// Blocks the thread until the ticket resolves. Not for use on an async runtime's
    /// threads (await the ticket there).
    pub fn wait(self) -> Result<(), StoreError> {
        let path = self.path;
        self.rx
            .blocking_recv()
            .unwrap_or_else(|_| Err(closed(&path)))
    }
}

fn closed(path: &std::path::Path) -> StoreError {
    StoreError::Closed {
        path: path.to_path_buf(),
        what: "the writer thread has stopped".into(),
    }
}

impl Future for CommitTicket {
    type Output = Result<(), StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => Poll::Ready(r),
            Poll::Ready(Err(_)) => Poll::Ready(Err(closed(&self.path))),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A queued message read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    pub seq: u64,
    pub entry: QueueEntry,
    pub message: Arc<MessageRecord>,
}

/// An outgoing QoS 1/2 message that was in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InflightMessage {
    pub seq: u64,
    pub inflight: InflightRecord,
    /// The message to resend with DUP; `None` at `AwaitPubComp` (resend PUBREL only).
    pub message: Option<QueuedMessage>,
}

/// One session as recovered at start-up. Queued messages stay on disk: read them with
/// [`SessionStore::read_queue`] from `first_queued_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredSession {
    pub client_id: String,
    pub session: SessionRecord,
    /// Filter as subscribed -> record, in filter order.
    pub subscriptions: Vec<(String, SubscriptionRecord)>,
    /// In sequence order (the order to resend them in).
    pub inflight: Vec<InflightMessage>,
    /// QoS 2 packet IDs received and not yet released by PUBREL.
    pub inbound_qos2: Vec<u16>,
    /// Queued messages not in flight, on disk.
    pub queued: u64,
    /// The sum of their payload lengths (for `max_queued_bytes`).
    pub queued_bytes: u64,
    /// The sequence number of the first of them (meaningful when `queued > 0`).
    pub first_queued_seq: u64,
    /// The sequence number to give the session's next queued message.
    pub next_seq: u64,
}

/// What was dropped while loading because it had expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dropped {
    pub sessions: u64,
    pub queued_messages: u64,
    pub retained_messages: u64,
    /// Entries that belonged to no session (left over from a damaged store), removed.
    pub strays: u64,
}

/// Everything recovered at start-up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    /// In client ID order.
    pub sessions: Vec<RecoveredSession>,
    /// Topic -> retained message, in topic order.
    pub retained: Vec<(String, MessageRecord)>,
    /// Pending wills by client ID, including those whose session expired while the broker
    /// was down (they are due now).
    pub wills: Vec<(String, WillRecord)>,
    pub dropped: Dropped,
}

/// Durable state of the broker: written incrementally, recovered at start-up.
///
/// The broker calls [`load`](SessionStore::load) once at start-up, before any commit;
/// then, for every state change, builds [`Op`]s and [`commit`](SessionStore::commit)s
/// them, awaiting the ticket where an acknowledgement depends on durability (PUBACK,
/// PUBREC).
pub trait SessionStore: Send + Sync {
    /// Reads the whole state except queued message bodies, dropping (and deleting) expired
    /// sessions, expired queued messages and expired retained messages as of `now`.
    fn load(&self, now: SystemTime) -> Result<Recovered, StoreError>;

    /// Queues `ops` for the writer; the ticket resolves when they are durable. Commits are
    /// applied in call order. Reads (`read_queue`) see a commit once its ticket resolved.
    /// An empty commit is a barrier: its ticket resolves once every commit called before
    /// it is applied.
    fn commit(&self, ops: Vec<Op>) -> CommitTicket;

    /// As [`commit`](SessionStore::commit), and runs `then` on the writer once the
    /// ticket is answered (whatever the outcome), whether or not anyone awaits the
    /// ticket. If the writer is gone without answering, `then` is dropped unrun: work
    /// that must happen in any case belongs in a `Drop` of something `then` owns.
    fn commit_then(&self, ops: Vec<Op>, then: Box<dyn FnOnce() + Send>) -> CommitTicket;

    /// Up to `limit` queued messages of `client` with sequence number `from_seq` or
    /// later, in order, skipping those in flight.
    fn read_queue(
        &self,
        client: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<QueuedMessage>, StoreError>;

    /// A fresh message ID for [`Op::Enqueue`].
    fn next_message_id(&self) -> MessageId;

    /// The policy this store was opened with.
    fn durability(&self) -> Durability;

    /// Whether the store still saves state, for alarms (`$SYS`, logs).
    fn health(&self) -> StoreHealth;

    /// Stops the store after the commits already made: a final fsync and the engine's
    /// close. The ticket resolves once that is done, with the store's first fault if it
    /// had one (nothing was flushed then); commits after this fail. Await it with a
    /// deadline: an engine may hang on files it can no longer write.
    fn stop(&self) -> CommitTicket;
}

/// What [`SessionStore::health`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreHealth {
    /// Commits that failed (each one refused after the first fault counts) and failed
    /// periodic fsyncs.
    pub failures: u64,
    /// The first fault (a failed write or fsync, the data directory removed or
    /// replaced), after which the store refuses every write; `None` while it works.
    pub fault: Option<String>,
}

//! The writer thread: turns queued `commit` calls into engine batches (group commit),
//! keeps the reference counts of shared message bodies, and fsyncs per the policy.
//!
//! Everything that arrives while the previous batch is being written and synced is
//! gathered into the next batch, so under load one fsync serves many commits. Each
//! batch is one atomic engine write; ops on the same key inside a batch collapse to the
//! last one (an LSM batch must not hold the same key twice).
//!
//! The first failure (a write, an fsync, the data directory removed or replaced) is
//! logged once and kept: every later commit fails at once with it, without touching the
//! engine, and closing skips the final flush that would wait for files that cannot be
//! written. The writer looks at the directory before each batch and about once a second
//! while idle, so that a broker nobody writes to notices too.

use crate::engine::{Engine, EngineError, Write};
use crate::error::StoreError;
use crate::key::{self, Table};
use crate::op::Op;
use crate::record::{self, InflightRecord, MessageId, QueueEntry, Stage};
use crate::session_store::Durability;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// At most this many commit calls share one batch, so that one batch's memory stays
/// bounded while the tickets of a long burst still resolve in good time.
const MAX_COMMITS_PER_BATCH: usize = 4096;

/// How often an idle writer checks that the data directory is still its own.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// What the writer is asked to do.
pub(crate) enum Request {
    /// One `commit` call.
    Commit { ops: Vec<Op>, reply: Reply },
    /// Stop after the commits before it: final fsync and engine close, then the reply
    /// (with the store's failure, if it had one).
    Close(Reply),
}

/// The store's health, shared by the writer (which changes it) and the store (which
/// reports it, `SessionStore::health`).
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Commits answered with an error, and failed periodic fsyncs.
    failures: AtomicU64,
    /// The first fault, as text for alarms.
    fault: parking_lot::Mutex<Option<String>>,
}

impl Health {
    pub fn report(&self) -> crate::session_store::StoreHealth {
        crate::session_store::StoreHealth {
            failures: self.failures.load(Ordering::Relaxed),
            fault: self.fault.lock().clone(),
        }
    }

    fn failed(&self, n: usize) {
        self.failures
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

/// Where the outcome of a commit goes: a ticket (async) or a thread blocked on it.
pub(crate) enum Reply {
    Ticket(oneshot::Sender<Result<(), StoreError>>),
    /// A ticket, and work to run once it is answered (`SessionStore::commit_then`).
    TicketThen(
        oneshot::Sender<Result<(), StoreError>>,
        Box<dyn FnOnce() + Send>,
    ),
    Blocking(std::sync::mpsc::SyncSender<Result<(), StoreError>>),
}

impl Reply {
    pub fn send(self, result: Result<(), StoreError>) {
        // A caller that stopped waiting is no concern of the writer.
        match self {
            Reply::Ticket(tx) => {
                let _ = tx.send(result);
            }
            Reply::TicketThen(tx, then) => {
                let _ = tx.send(result);
                then();
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// What the batch being built does to one key.
enum Pending {
    /// Writes this value. `fresh`: the key had no value in the store before the batch (a
    /// new queue entry, its body, its first in-flight marker), so removing it again in the
    /// same batch writes nothing at all.
    Put { value: Vec<u8>, fresh: bool },
    /// Deletes the key.
    Delete,
    /// Written and removed again within the batch, with no value before it: nothing to
    /// write, and known to be absent (no engine read needed to say so).
    Gone,
}

/// The writer's state: the engine, the live reference counts and the batch being built.
pub(crate) struct Core<E: Engine> {
    engine: Arc<E>,
    path: Arc<Path>,
    /// Queue entries (and AwaitPubComp-free in-flight entries) referring to each body.
    refs: HashMap<MessageId, u64>,
    /// Reference count changes of the batch being built, applied once it is written.
    delta: HashMap<MessageId, i64>,
    /// The batch being built, per table (`Table as usize`): the last write per key.
    pending: [HashMap<Vec<u8>, Pending>; Table::ALL.len()],
}

impl<E: Engine> Core<E> {
    pub fn new(engine: Arc<E>, path: Arc<Path>, refs: HashMap<MessageId, u64>) -> Self {
        Core {
            engine,
            path,
            refs,
            delta: HashMap::new(),
            pending: std::array::from_fn(|_| HashMap::new()),
        }
    }

    fn table(&mut self, table: Table) -> &mut HashMap<Vec<u8>, Pending> {
        &mut self.pending[table as usize]
    }

    fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.put_as(table, key, value, false);
    }

    /// `new`: the caller knows the key has no value in the store (see [`Pending::Put`]).
    fn put_as(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>, new: bool) {
        match self.table(table).entry(key) {
            Entry::Vacant(e) => {
                e.insert(Pending::Put { value, fresh: new });
            }
            Entry::Occupied(mut e) => {
                let fresh = match e.get() {
                    Pending::Put { fresh, .. } => *fresh,
                    Pending::Gone => true,
                    Pending::Delete => false,
                };
                e.insert(Pending::Put { value, fresh });
            }
        }
    }

    fn delete(&mut self, table: Table, key: Vec<u8>) {
        let p = self.table(table).entry(key).or_insert(Pending::Delete);
        *p = match p {
            Pending::Put { fresh: true, .. } | Pending::Gone => Pending::Gone,
            Pending::Put { .. } | Pending::Delete => Pending::Delete,
        };
    }

    /// Whether `key` was written in this batch with no value before it.
    fn is_fresh(&self, table: Table, key: &[u8]) -> bool {
        matches!(
            self.pending[table as usize].get(key),
            Some(Pending::Put { fresh: true, .. } | Pending::Gone)
        )
    }

    fn refcount(&self, id: MessageId) -> i64 {
        let base = self.refs.get(&id).copied().unwrap_or(0);
        i64::try_from(base).unwrap_or(i64::MAX) + self.delta.get(&id).copied().unwrap_or(0)
    }

    fn add_ref(&mut self, id: MessageId, n: i64) {
        *self.delta.entry(id).or_insert(0) += n;
    }

    /// Drops one reference; the body goes with the last one.
    fn release(&mut self, id: MessageId) {
        self.add_ref(id, -1);
        if self.refcount(id) <= 0 {
            self.delete(Table::Messages, key::message(id));
        }
    }

    /// Removes the queue entry at `key` (if any) and releases its body.
    fn remove_queue_entry(&mut self, qkey: Vec<u8>) -> Result<(), EngineError> {
        let decoded = match self.pending[Table::Queue as usize].get(&qkey) {
            Some(Pending::Put { value, .. }) => Some(QueueEntry::decode(value)),
            Some(Pending::Delete | Pending::Gone) => None,
            None => self
                .engine
                .get(Table::Queue, &qkey)?
                .map(|bytes| QueueEntry::decode(&bytes)),
        };
        let Some(decoded) = decoded else {
            return Ok(());
        };
        match decoded {
            Ok(entry) => self.release(entry.message_id),
            Err(what) => tracing::warn!(
                store = %self.path.display(),
                key = %key::show(&qkey),
                "removing an unreadable queue entry: {what}"
            ),
        }
        self.delete(Table::Queue, qkey);
        Ok(())
    }

    /// Adds one op to the batch being built.
    pub fn apply(&mut self, op: Op) -> Result<(), EngineError> {
        match op {
            Op::PutSession { client, session } => self.put(
                Table::Sessions,
                client.as_bytes().to_vec(),
                session.encode(),
            ),
            Op::DeleteSession { client } => self.delete_session(&client)?,
            Op::PutSubscription {
                client,
                filter,
                subscription,
            } => self.put(
                Table::Subscriptions,
                key::client_filter(&client, &filter),
                record::encode(&subscription),
            ),
            Op::DeleteSubscription { client, filter } => {
                self.delete(Table::Subscriptions, key::client_filter(&client, &filter))
            }
            Op::Enqueue {
                message_id,
                message,
                deliveries,
            } => {
                if deliveries.is_empty() {
                    return Ok(());
                }
                if self.refcount(message_id) <= 0 {
                    // Message IDs are not reused: no body with this ID is stored.
                    self.put_as(
                        Table::Messages,
                        key::message(message_id),
                        record::encode(&*message),
                        true,
                    );
                }
                self.add_ref(
                    message_id,
                    i64::try_from(deliveries.len()).unwrap_or(i64::MAX),
                );
                for d in deliveries {
                    let entry = QueueEntry {
                        message_id,
                        qos: d.qos,
                        retain: d.retain,
                        subscription_ids: d.subscription_ids,
                        expires_at: message.expires_at,
                        payload_len: Some(u32::try_from(message.payload.len()).unwrap_or(u32::MAX)),
                    };
                    // A sequence number is not reused while its entry exists
                    // (`Delivery::seq`): the key holds no value.
                    self.put_as(
                        Table::Queue,
                        key::client_seq(&d.client, d.seq),
                        entry.encode(),
                        true,
                    );
                }
            }
            Op::Dequeue { client, seq } => {
                let k = key::client_seq(&client, seq);
                self.delete(Table::Inflight, k.clone());
                self.remove_queue_entry(k)?;
            }
            Op::SetInflight {
                client,
                seq,
                inflight,
            } => self.set_inflight(&client, seq, inflight)?,
            Op::AddInboundQos2 { client, packet_id } => self.put(
                Table::InboundQos2,
                key::client_packet_id(&client, packet_id),
                vec![record::RECORD_FORMAT],
            ),
            Op::RemoveInboundQos2 { client, packet_id } => self.delete(
                Table::InboundQos2,
                key::client_packet_id(&client, packet_id),
            ),
            Op::PutRetained { topic, message } => self.put(
                Table::Retained,
                topic.as_bytes().to_vec(),
                record::encode(&*message),
            ),
            Op::DeleteRetained { topic } => self.delete(Table::Retained, topic.as_bytes().to_vec()),
            Op::PutWill { client, will } => {
                self.put(Table::Wills, client.as_bytes().to_vec(), will.encode())
            }
            Op::DeleteWill { client } => self.delete(Table::Wills, client.as_bytes().to_vec()),
        }
        Ok(())
    }

    fn set_inflight(
        &mut self,
        client: &str,
        seq: u64,
        inflight: InflightRecord,
    ) -> Result<(), EngineError> {
        let k = key::client_seq(client, seq);
        // An entry enqueued in this very batch has no marker stored yet (sequence numbers
        // start above every stored marker's): its marker is new too.
        let new = self.is_fresh(Table::Queue, &k);
        if inflight.stage == Stage::AwaitPubComp {
            // Only the packet ID is needed from here on: free the body early.
            self.remove_queue_entry(k.clone())?;
        }
        self.put_as(Table::Inflight, k, record::encode(&inflight), new);
        Ok(())
    }

    /// Deletes every key of `client` in the per-client tables except its will, releasing
    /// the bodies its queue refers to. Keys only in the batch being built count too.
    fn delete_session(&mut self, client: &str) -> Result<(), EngineError> {
        let prefix = key::client(client);
        for table in [Table::Subscriptions, Table::Inflight, Table::InboundQos2] {
            for k in self.keys_with_prefix(table, &prefix)? {
                self.delete(table, k);
            }
        }
        for k in self.keys_with_prefix(Table::Queue, &prefix)? {
            self.remove_queue_entry(k)?;
        }
        self.delete(Table::Sessions, client.as_bytes().to_vec());
        Ok(())
    }

    /// Keys with `prefix` that exist on disk or in the batch being built.
    fn keys_with_prefix(&self, table: Table, prefix: &[u8]) -> Result<Vec<Vec<u8>>, EngineError> {
        let mut keys = std::collections::BTreeSet::new();
        self.engine.scan(table, prefix, prefix, &mut |k, _| {
            keys.insert(k.to_vec());
            true
        })?;
        for (k, v) in &self.pending[table as usize] {
            if k.starts_with(prefix) {
                match v {
                    Pending::Put { .. } => keys.insert(k.clone()),
                    Pending::Delete | Pending::Gone => keys.remove(k),
                };
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Writes the batch being built in one atomic engine write and, on success, makes its
    /// reference counts current. On failure the batch and its counts are dropped.
    pub fn flush(&mut self) -> Result<(), EngineError> {
        let mut batch = Vec::new();
        for (table, map) in Table::ALL.into_iter().zip(&mut self.pending) {
            for (key, p) in map.drain() {
                match p {
                    Pending::Put { value, .. } => batch.push(Write {
                        table,
                        key,
                        value: Some(value),
                    }),
                    Pending::Delete => batch.push(Write {
                        table,
                        key,
                        value: None,
                    }),
                    Pending::Gone => {}
                }
            }
        }
        let delta = std::mem::take(&mut self.delta);
        if !batch.is_empty() {
            self.engine.write(&batch)?;
        }
        for (id, d) in delta {
            let n = self.refcount_base(id) + d;
            if n > 0 {
                self.refs.insert(id, u64::try_from(n).unwrap_or(0));
            } else {
                self.refs.remove(&id);
            }
        }
        Ok(())
    }

    fn refcount_base(&self, id: MessageId) -> i64 {
        i64::try_from(self.refs.get(&id).copied().unwrap_or(0)).unwrap_or(i64::MAX)
    }

    /// Forgets the batch being built (after an error while building it).
    pub fn discard(&mut self) {
        for map in &mut self.pending {
            map.clear();
        }
        self.delta.clear();
    }

    /// Whether the batch being built writes anything (entries written and removed again
    /// within it do not).
    fn has_writes(&self) -> bool {
        self.pending
            .iter()
            .flat_map(|map| map.values())
            .any(|p| !matches!(p, Pending::Gone))
    }

    pub fn sync(&self) -> Result<(), EngineError> {
        self.engine.sync()
    }
}

/// The writer loop: gather, write, sync per the policy, answer. Returns when every
/// sender is gone (the store was dropped) or on [`Request::Close`], after a final sync.
pub(crate) fn run<E: Engine>(
    mut core: Core<E>,
    rx: Receiver<Request>,
    durability: Durability,
    health: Arc<Health>,
) {
    let path = core.path.clone();
    let mut unsynced_since: Option<Instant> = None;
    // After a failed write or sync the engine's state is unknown: refuse everything after.
    let mut faults = Faults {
        first: None,
        gone_reported: false,
        health,
    };
    let mut next_watch = Instant::now() + WATCH_EVERY;
    let mut close = None;
    while close.is_none() {
        let sync_due = match (durability, unsynced_since) {
            (Durability::Periodic(every), Some(since)) => Some(since + every),
            _ => None,
        };
        let wake = sync_due.map_or(next_watch, |due| due.min(next_watch));
        let first = match rx.recv_timeout(wake.saturating_duration_since(Instant::now())) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if sync_due.is_some_and(|due| due <= now) {
                    if faults.first.is_none() {
                        if let Err(e) = core.sync() {
                            faults.health.failed(1);
                            faults.fail(StoreError::engine(&path, e), "periodic fsync failed");
                        }
                    }
                    unsynced_since = None;
                }
                if next_watch <= now {
                    core.engine.tick();
                    if let Err(e) = core.engine.check_location() {
                        faults.fail(StoreError::engine(&path, e), "");
                    }
                    next_watch = now + WATCH_EVERY;
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut replies = Vec::new();
        let mut result = faults.first.clone().map_or(Ok(()), Err);
        let mut next = Some(first);
        while let Some(req) = next {
            match req {
                Request::Close(reply) => {
                    close = Some(reply);
                    break;
                }
                Request::Commit { ops, reply } => {
                    if result.is_ok() {
                        for op in ops {
                            if let Err(e) = core.apply(op) {
                                result = Err(StoreError::engine(&path, e));
                                break;
                            }
                        }
                    }
                    replies.push(reply);
                }
            }
            next = if replies.len() < MAX_COMMITS_PER_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        // A batch of empty commits (barriers), or of deliveries whose whole life fell
        // inside it (enqueued, sent and acknowledged: nothing of them is left to write),
        // writes and syncs nothing: what came before it was already written and synced by
        // the policy.
        let empty = !core.has_writes();
        if result.is_err() {
            core.discard();
        } else if empty {
            // Only the reference counts move (to where they were, for such deliveries).
            result = core.flush().map_err(|e| StoreError::engine(&path, e));
        } else {
            // Written into a directory no later start reads, it would be acknowledged
            // and lost.
            result = core
                .engine
                .check_location()
                .and_then(|()| core.flush())
                .map_err(|e| StoreError::engine(&path, e));
        }
        if result.is_ok() && !empty {
            result = after_write(&core, durability, &mut unsynced_since)
                .map_err(|e| StoreError::engine(&path, e));
        }
        if let Err(e) = &result {
            faults.health.failed(replies.len());
            faults.fail(e.clone(), "store write failed");
        }
        for reply in replies {
            reply.send(result.clone());
        }
    }
    // The directory is looked at once more right before the close: removed since the
    // last look, fjall's flush at close would wait for ever.
    if faults.first.is_none() {
        if let Err(e) = core.engine.check_location() {
            faults.fail(StoreError::engine(&path, e), "store write failed");
        }
    }
    let closed = match &faults.first {
        None => core
            .engine
            .close()
            .map_err(|e| StoreError::engine(&path, e)),
        Some(e) => Err(e.clone()),
    };
    if let (Err(e), None) = (&closed, &faults.first) {
        tracing::error!(store = %path.display(), "closing the store failed: {e}");
    }
    if let Some(reply) = close {
        reply.send(closed);
    }
}

/// The writer's faults: the first one (which every later commit gets), logged once per
/// kind.
struct Faults {
    first: Option<StoreError>,
    /// The directory's removal is logged even after an earlier write failure, once.
    gone_reported: bool,
    health: Arc<Health>,
}

impl Faults {
    /// Records `e`; logs it (at error level, prefixed with `doing`) if it is the first
    /// fault, or the first report of the directory's removal.
    fn fail(&mut self, e: StoreError, doing: &str) {
        let gone = matches!(e, StoreError::Gone { .. });
        if self.first.is_some() && (!gone || self.gone_reported) {
            return;
        }
        self.gone_reported |= gone;
        let path = e.path().display().to_string();
        if doing.is_empty() {
            tracing::error!(store = %path, "{e}");
        } else {
            tracing::error!(
                store = %path,
                "{doing}: {e}; the store refuses every write from now on (restart the \
                 broker once the cause is fixed)"
            );
        }
        if self.first.is_none() {
            *self.health.fault.lock() = Some(e.to_string());
            self.first = Some(e);
        }
    }
}

/// Applies the fsync policy after a successful write.
fn after_write<E: Engine>(
    core: &Core<E>,
    durability: Durability,
    unsynced_since: &mut Option<Instant>,
) -> Result<(), EngineError> {
    match durability {
        Durability::Always => core.sync(),
        Durability::Periodic(every) => {
            let since = *unsynced_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= every {
                *unsynced_since = None;
                core.sync()?;
            }
            Ok(())
        }
        Durability::Never => Ok(()),
    }
}

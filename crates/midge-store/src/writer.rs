//! The writer thread: turns queued `commit` calls into engine batches (group commit),
//! keeps the reference counts of shared message bodies, and fsyncs per the policy.
//!
//! Everything that arrives while the previous batch is being written and synced is
//! gathered into the next batch, so under load one fsync serves many commits. Each
//! batch is one atomic engine write; ops on the same key inside a batch collapse to the
//! last one (an LSM batch must not hold the same key twice).

use crate::engine::{Engine, EngineError, Write};
use crate::error::StoreError;
use crate::key::{self, Table};
use crate::op::Op;
use crate::record::{self, InflightRecord, MessageId, QueueEntry, Stage};
use crate::session_store::Durability;
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::oneshot;

/// At most this many commit calls share one batch, so that one batch's memory stays
/// bounded while the tickets of a long burst still resolve in good time.
const MAX_COMMITS_PER_BATCH: usize = 4096;

/// One `commit` call on its way to the writer.
pub(crate) struct Request {
    pub ops: Vec<Op>,
    pub reply: Reply,
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

/// The writer's state: the engine, the live reference counts and the batch being built.
pub(crate) struct Core<E: Engine> {
    engine: Arc<E>,
    path: Arc<Path>,
    /// Queue entries (and AwaitPubComp-free in-flight entries) referring to each body.
    refs: HashMap<MessageId, u64>,
    /// Reference count changes of the batch being built, applied once it is written.
    delta: HashMap<MessageId, i64>,
    /// The batch being built: last write per key.
    pending: HashMap<(Table, Vec<u8>), Option<Vec<u8>>>,
}

impl<E: Engine> Core<E> {
    pub fn new(engine: Arc<E>, path: Arc<Path>, refs: HashMap<MessageId, u64>) -> Self {
        Core {
            engine,
            path,
            refs,
            delta: HashMap::new(),
            pending: HashMap::new(),
        }
    }

    fn put(&mut self, table: Table, key: Vec<u8>, value: Vec<u8>) {
        self.pending.insert((table, key), Some(value));
    }

    fn delete(&mut self, table: Table, key: Vec<u8>) {
        self.pending.insert((table, key), None);
    }

    /// The current value of a key, as the batch being built would leave it.
    fn current(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, EngineError> {
        match self.pending.get(&(table, key.to_vec())) {
            Some(v) => Ok(v.clone()),
            None => self.engine.get(table, key),
        }
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
        if let Some(bytes) = self.current(Table::Queue, &qkey)? {
            match QueueEntry::decode(&bytes) {
                Ok(entry) => self.release(entry.message_id),
                Err(what) => tracing::warn!(
                    store = %self.path.display(),
                    key = %key::show(&qkey),
                    "removing an unreadable queue entry: {what}"
                ),
            }
            self.delete(Table::Queue, qkey);
        }
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
                    self.put(
                        Table::Messages,
                        key::message(message_id),
                        record::encode(&*message),
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
                    self.put(
                        Table::Queue,
                        key::client_seq(&d.client, d.seq),
                        entry.encode(),
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
        if inflight.stage == Stage::AwaitPubComp {
            // Only the packet ID is needed from here on: free the body early.
            self.remove_queue_entry(k.clone())?;
        }
        self.put(Table::Inflight, k, record::encode(&inflight));
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
        for ((t, k), v) in &self.pending {
            if *t == table && k.starts_with(prefix) {
                match v {
                    Some(_) => keys.insert(k.clone()),
                    None => keys.remove(k),
                };
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Writes the batch being built in one atomic engine write and, on success, makes its
    /// reference counts current. On failure the batch and its counts are dropped.
    pub fn flush(&mut self) -> Result<(), EngineError> {
        let batch: Vec<Write> = self
            .pending
            .drain()
            .map(|((table, key), value)| Write { table, key, value })
            .collect();
        let delta = std::mem::take(&mut self.delta);
        self.engine.write(&batch)?;
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
        self.pending.clear();
        self.delta.clear();
    }

    pub fn sync(&self) -> Result<(), EngineError> {
        self.engine.sync()
    }
}

/// The writer loop: gather, write, sync per the policy, answer. Returns when every
/// sender is gone (the store was dropped), after a final sync.
pub(crate) fn run<E: Engine>(mut core: Core<E>, rx: Receiver<Request>, durability: Durability) {
    let path = core.path.clone();
    let mut unsynced_since: Option<Instant> = None;
    // After a failed write or sync the engine's state is unknown: refuse everything after.
    let mut failed: Option<StoreError> = None;
    loop {
        let first = match (durability, unsynced_since) {
            (Durability::Periodic(every), Some(since)) => {
                match rx.recv_timeout(every.saturating_sub(since.elapsed())) {
                    Ok(r) => r,
                    Err(RecvTimeoutError::Timeout) => {
                        if let Err(e) = core.sync() {
                            tracing::error!(store = %path.display(), "periodic fsync failed: {e}");
                            failed = Some(StoreError::engine(&path, e));
                        }
                        unsynced_since = None;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            _ => match rx.recv() {
                Ok(r) => r,
                Err(_) => break,
            },
        };
        let mut replies = Vec::new();
        let mut result = failed.clone().map_or(Ok(()), Err);
        let mut next = Some(first);
        while let Some(req) = next {
            if result.is_ok() {
                for op in req.ops {
                    if let Err(e) = core.apply(op) {
                        result = Err(StoreError::engine(&path, e));
                        break;
                    }
                }
            }
            replies.push(req.reply);
            next = if replies.len() < MAX_COMMITS_PER_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        // A batch of empty commits (barriers) writes and syncs nothing: what came before
        // it was already written and synced by the policy.
        let empty = core.pending.is_empty() && core.delta.is_empty();
        if result.is_ok() && !empty {
            result = core.flush().map_err(|e| StoreError::engine(&path, e));
        } else if result.is_err() {
            core.discard();
        }
        if result.is_ok() && !empty {
            result = after_write(&core, durability, &mut unsynced_since)
                .map_err(|e| StoreError::engine(&path, e));
        }
        if let Err(e) = &result {
            if failed.is_none() {
                tracing::error!(store = %path.display(), "store write failed: {e}");
                failed = Some(e.clone());
            }
        }
        for reply in replies {
            reply.send(result.clone());
        }
    }
    if failed.is_none() {
        if let Err(e) = core.engine.close() {
            tracing::error!(store = %path.display(), "closing the store failed: {e}");
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

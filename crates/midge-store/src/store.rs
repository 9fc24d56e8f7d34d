//! `Store`: the [`SessionStore`] on an [`Engine`]. Reads run on the caller's thread;
//! writes go to the writer thread (see `writer.rs`).

use crate::engine::fjall::FjallEngine;
use crate::engine::memory::MemoryEngine;
use crate::engine::{Engine, Write};
use crate::error::StoreError;
use crate::key::{self, Table};
use crate::op::Op;
use crate::record::{self, MessageId, QueueEntry};
use crate::session_store::{
    CommitTicket, Durability, QueuedMessage, Recovered, SessionStore, StoreHealth,
};
use crate::writer::{self, Core, Health, Reply, Request};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::SystemTime;
use tokio::sync::oneshot;

/// The store's own format, kept in the `meta` table. A store written by another format is
/// refused with a clear error rather than misread.
pub(crate) const STORE_FORMAT: &[u8] = b"midge-store/1";
pub(crate) const FORMAT_KEY: &[u8] = b"format";

/// How to open a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreOptions {
    pub durability: Durability,
}

/// The durable store on engine `E`. Use [`DiskStore`] in the broker and [`MemoryStore`]
/// in tests.
pub struct Store<E: Engine> {
    pub(crate) engine: Arc<E>,
    pub(crate) path: Arc<Path>,
    tx: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    next_message_id: AtomicU64,
    durability: Durability,
    health: Arc<Health>,
}

/// The store on disk (fjall), in one directory.
pub type DiskStore = Store<FjallEngine>;

/// The store in memory, for tests. [`MemoryStore::reopen`] simulates a restart.
pub type MemoryStore = Store<MemoryEngine>;

/// The store on redb (feature `redb`), kept for the engine comparison.
#[cfg(feature = "redb")]
pub type RedbStore = Store<crate::engine::redb::RedbEngine>;

impl DiskStore {
    /// Opens the store in `dir`, creating it if needed. Fails with
    /// [`StoreError::Damaged`] (naming the directory and what is wrong) when the files
    /// cannot be read, and [`StoreError::Locked`] when another process has them open.
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<DiskStore, StoreError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io {
            path: dir.to_path_buf(),
            what: format!("cannot create the directory: {e}"),
        })?;
        let engine = FjallEngine::open(dir).map_err(|e| StoreError::engine(dir, e))?;
        Store::with_engine(engine, dir, options)
    }
}

#[cfg(feature = "redb")]
impl RedbStore {
    /// Opens the redb store in `dir` (file `store.redb`).
    pub fn open(dir: impl AsRef<Path>, options: StoreOptions) -> Result<RedbStore, StoreError> {
        let dir = dir.as_ref();
        let engine =
            crate::engine::redb::RedbEngine::open(dir).map_err(|e| StoreError::engine(dir, e))?;
        Store::with_engine(engine, dir, options)
    }
}

impl MemoryStore {
    /// An empty store in memory.
    pub fn in_memory(options: StoreOptions) -> MemoryStore {
        Self::memory(MemoryEngine::new(), options)
    }

    /// A new store over the same data, as a restart would see it.
    pub fn reopen(&self) -> MemoryStore {
        Self::memory((*self.engine).clone(), self.options())
    }

    fn memory(engine: MemoryEngine, options: StoreOptions) -> MemoryStore {
        match Store::with_engine(engine, Path::new("(memory)"), options) {
            Ok(s) => s,
            // Memory holds only what this crate wrote, so nothing in it can be unreadable.
            Err(e) => unreachable!("the memory engine cannot fail: {e}"),
        }
    }
}

impl<E: Engine> Store<E> {
    /// Opens the store on an already opened engine: checks the format, counts the
    /// references to message bodies, and starts the writer thread.
    pub fn with_engine(engine: E, path: &Path, options: StoreOptions) -> Result<Self, StoreError> {
        let engine = Arc::new(engine);
        let path: Arc<Path> = Arc::from(path);
        check_format(&*engine, &path)?;
        let refs = count_references(&*engine, &path)?;
        let last = engine
            .last_key(Table::Messages)
            .map_err(|e| StoreError::engine(&path, e))?;
        let next_id = match last {
            Some(k) => key::split_message(&k)
                .map_err(|what| damaged_key(&path, Table::Messages, &k, &what))?
                .saturating_add(1),
            None => 1,
        };
        let (tx, rx) = std::sync::mpsc::channel();
        let core = Core::new(engine.clone(), path.clone(), refs);
        let durability = options.durability;
        if durability != Durability::Always && !engine.crash_safe_without_sync() {
            tracing::warn!(
                store = %path.display(),
                engine = engine.name(),
                "this engine keeps unsynced commits in memory: with {durability:?} a process \
                 crash loses acknowledged messages; use Durability::Always"
            );
        }
        let health = Arc::new(Health::default());
        let writer_health = health.clone();
        let writer = std::thread::Builder::new()
            .name("midge-store-writer".into())
            .spawn(move || writer::run(core, rx, durability, writer_health))
            .map_err(|e| StoreError::Io {
                path: path.to_path_buf(),
                what: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Store {
            engine,
            path,
            tx: Some(tx),
            writer: Some(writer),
            next_message_id: AtomicU64::new(next_id),
            durability,
            health,
        })
    }

    /// The directory (or label) of this store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The engine underneath (for tools, tests and benchmarks).
    pub fn engine(&self) -> &E {
        &self.engine
    }

    /// The name of the engine underneath ("fjall", "redb", "memory").
    pub fn engine_name(&self) -> &'static str {
        self.engine.name()
    }

    fn options(&self) -> StoreOptions {
        StoreOptions {
            durability: self.durability,
        }
    }

    /// Sends ops to the writer.
    fn send(&self, ops: Vec<Op>, reply: Reply) {
        self.request(Request::Commit { ops, reply });
    }

    /// Sends a request to the writer; answers it with an error if the writer is gone.
    fn request(&self, req: Request) {
        let sent = match &self.tx {
            Some(tx) => tx.send(req).map_err(|e| e.0),
            None => Err(req),
        };
        if let Err(req) = sent {
            let (Request::Commit { reply, .. } | Request::Close(reply)) = req;
            reply.send(Err(StoreError::Closed {
                path: self.path.to_path_buf(),
                what: "the writer thread has stopped".into(),
            }));
        }
    }

    /// Commits and blocks the calling thread until durable. Unlike
    /// [`CommitTicket::wait`] it may be called from inside an async runtime (for start-up
    /// and tools; it blocks the thread).
    pub fn commit_blocking(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.send(ops, Reply::Blocking(tx));
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Closed {
                path: self.path.to_path_buf(),
                what: "the writer thread has stopped".into(),
            })
        })
    }

    /// Reads and decodes one message body.
    pub(crate) fn read_message(
        &self,
        id: MessageId,
    ) -> Result<Option<record::MessageRecord>, StoreError> {
        let k = key::message(id);
        match self
            .engine
            .get(Table::Messages, &k)
            .map_err(|e| StoreError::engine(&self.path, e))?
        {
            None => Ok(None),
            Some(v) => record::decode(&v)
                .map(Some)
                .map_err(|what| damaged_key(&self.path, Table::Messages, &k, &what)),
        }
    }

    /// Waits for every commit made so far, then stops the writer (after a final fsync).
    /// Dropping the store does the same.
    pub fn close(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            if w.join().is_err() {
                tracing::error!(store = %self.path.display(), "the store writer panicked");
            }
        }
    }
}

impl<E: Engine> Drop for Store<E> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl<E: Engine> SessionStore for Store<E> {
    fn load(&self, now: SystemTime) -> Result<Recovered, StoreError> {
        let (recovered, cleanup) =
            crate::load::load(&*self.engine, &self.path, now, |id| self.read_message(id))?;
        if !cleanup.is_empty() {
            self.commit_blocking(cleanup)?;
        }
        Ok(recovered)
    }

    fn commit(&self, ops: Vec<Op>) -> CommitTicket {
        let (tx, rx) = oneshot::channel();
        self.send(ops, Reply::Ticket(tx));
        CommitTicket::new(rx, self.path.clone())
    }

    fn commit_then(&self, ops: Vec<Op>, then: Box<dyn FnOnce() + Send>) -> CommitTicket {
        let (tx, rx) = oneshot::channel();
        self.send(ops, Reply::TicketThen(tx, then));
        CommitTicket::new(rx, self.path.clone())
    }

    fn read_queue(
        &self,
        client: &str,
        from_seq: u64,
        limit: usize,
    ) -> Result<Vec<QueuedMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // Each entry's in-flight marker is looked up by key, not found by scanning the
        // client's markers: a session that received many messages leaves as many deleted
        // markers behind, which a prefix scan walks over on every page until compaction.
        // The lookups run between scans (an engine need not allow reads inside a scan).
        let prefix = key::client(client);
        let mut entries: Vec<(u64, QueueEntry)> = Vec::new();
        let mut next = from_seq;
        loop {
            let wanted = limit - entries.len();
            let mut batch: Vec<(u64, QueueEntry)> = Vec::new();
            let mut bad = None;
            let start = key::client_seq(client, next);
            self.engine
                .scan(Table::Queue, &prefix, &start, &mut |k, v| {
                    let parsed = key::split_client_seq(k)
                        .and_then(|(_, seq)| QueueEntry::decode(v).map(|entry| (seq, entry)));
                    match parsed {
                        Ok(e) => batch.push(e),
                        Err(what) => bad = Some(damaged_key(&self.path, Table::Queue, k, &what)),
                    }
                    bad.is_none() && batch.len() < wanted
                })
                .map_err(|e| StoreError::engine(&self.path, e))?;
            if let Some(e) = bad {
                return Err(e);
            }
            let complete = batch.len() < wanted;
            let Some(last) = batch.last().map(|(seq, _)| *seq) else {
                break;
            };
            for (seq, entry) in batch {
                let marker = self
                    .engine
                    .get(Table::Inflight, &key::client_seq(client, seq))
                    .map_err(|e| StoreError::engine(&self.path, e))?;
                if marker.is_none() {
                    entries.push((seq, entry));
                }
            }
            if complete || entries.len() >= limit || last == u64::MAX {
                break;
            }
            next = last + 1;
        }
        let mut bodies: HashMap<MessageId, Arc<record::MessageRecord>> = HashMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for (seq, entry) in entries {
            let message = match bodies.get(&entry.message_id) {
                Some(m) => m.clone(),
                None => match self.read_message(entry.message_id)? {
                    Some(m) => {
                        let m = Arc::new(m);
                        bodies.insert(entry.message_id, m.clone());
                        m
                    }
                    // The engine's reads are not snapshots: a commit being applied right
                    // now can show its queue entries before its message bodies. The page
                    // stops before such an entry; the caller reads it again after awaiting
                    // the commits under way (a body that never appears is damage, which
                    // `check` reports).
                    None => break,
                },
            };
            out.push(QueuedMessage {
                seq,
                entry,
                message,
            });
        }
        Ok(out)
    }

    fn next_message_id(&self) -> MessageId {
        self.next_message_id.fetch_add(1, Ordering::Relaxed)
    }

    fn durability(&self) -> Durability {
        self.durability
    }

    fn health(&self) -> StoreHealth {
        self.health.report()
    }

    fn stop(&self) -> CommitTicket {
        let (tx, rx) = oneshot::channel();
        self.request(Request::Close(Reply::Ticket(tx)));
        CommitTicket::new(rx, self.path.clone())
    }
}

/// The error for a record that cannot be read: names the table and key.
pub(crate) fn damaged_key(path: &Path, table: Table, key: &[u8], what: &str) -> StoreError {
    StoreError::damaged(
        path,
        format!(
            "table `{}`, key \"{}\": {what}",
            table.name(),
            key::show(key)
        ),
    )
}

/// Refuses a store written in another format; marks a new one with ours.
fn check_format<E: Engine>(engine: &E, path: &Path) -> Result<(), StoreError> {
    match engine
        .get(Table::Meta, FORMAT_KEY)
        .map_err(|e| StoreError::engine(path, e))?
    {
        Some(v) if v == STORE_FORMAT => Ok(()),
        Some(v) => Err(StoreError::damaged(
            path,
            format!(
                "format marker is \"{}\", this build reads \"{}\"",
                key::show(&v),
                key::show(STORE_FORMAT)
            ),
        )),
        None => {
            let w = Write::put(Table::Meta, FORMAT_KEY.to_vec(), STORE_FORMAT.to_vec());
            engine
                .write(&[w])
                .and_then(|()| engine.sync())
                .map_err(|e| StoreError::engine(path, e))
        }
    }
}

/// Counts the queue entries referring to each message body.
fn count_references<E: Engine>(
    engine: &E,
    path: &Path,
) -> Result<HashMap<MessageId, u64>, StoreError> {
    let mut refs = HashMap::new();
    let mut bad = None;
    engine
        .scan(Table::Queue, &[], &[], &mut |k, v| {
            match QueueEntry::decode(v) {
                Ok(e) => *refs.entry(e.message_id).or_insert(0) += 1,
                Err(what) => bad = Some(damaged_key(path, Table::Queue, k, &what)),
            }
            bad.is_none()
        })
        .map_err(|e| StoreError::engine(path, e))?;
    match bad {
        Some(e) => Err(e),
        None => Ok(refs),
    }
}

/// Where `repair` keeps the damaged files: next to the store, with a time stamp.
pub(crate) fn aside_path(dir: &Path, now: SystemTime) -> PathBuf {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "store".into());
    let secs = record::unix_millis(now) / 1000;
    dir.with_file_name(format!("{name}.damaged-{secs}"))
}

//! `midge store check` and `midge store repair`: find damage, and the way out of it.
//!
//! `check` opens the store (which changes nothing but a journal's torn tail, cut off as
//! at every open), reads every record of every table (the
//! engine verifies its checksums on each block read), decodes each one and checks that
//! references hold (queue entry -> message body, in-flight marker -> queue entry,
//! per-client entries -> session).
//!
//! `repair` never edits damaged files in place: it moves the store directory aside
//! (`<dir>.damaged-<unix seconds>`, kept for inspection or recovery by hand), then builds
//! a fresh store in `<dir>` from every record that can still be read from a scratch copy
//! of it, and reports what it kept and what it left behind.

use crate::engine::fjall::{lock_store, FjallEngine};
use crate::engine::{Engine, EngineError, Write};
use crate::error::StoreError;
use crate::key::{self, Table};
use crate::record::{self, InflightRecord, MessageRecord, QueueEntry, SessionRecord, Stage};
use crate::record::{SubscriptionRecord, WillRecord};
use crate::store::{aside_path, FORMAT_KEY, STORE_FORMAT};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// At most this many problems are listed one by one; the rest are counted.
const MAX_LISTED: usize = 200;

/// The file fjall writes first in a new database and looks for to tell an existing one.
const FJALL_MARKER: &str = "version";

/// One thing wrong with the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The table (or "engine" when the store as a whole cannot be read).
    pub table: &'static str,
    /// The key, printable; empty when the problem is not about one record.
    pub key: String,
    pub what: String,
}

/// What `check` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub path: PathBuf,
    /// Records read per table (a table that could not be read completely counts what came
    /// before the damage).
    pub records: BTreeMap<&'static str, u64>,
    /// The first problems found, at most `MAX_LISTED`.
    pub problems: Vec<Problem>,
    /// All problems found, including those not listed.
    pub problem_count: u64,
    /// Entries whose session does not exist; harmless (start-up removes them), reported.
    pub strays: u64,
    /// Message bodies no queue entry refers to; harmless (they take space), reported.
    pub orphan_messages: u64,
    /// False when `repair` is no way out (no store there, or a broker has it open): the
    /// report then does not point to it.
    pub repairable: bool,
}

impl Report {
    /// True when nothing is damaged (strays and orphans are not damage).
    pub fn is_healthy(&self) -> bool {
        self.problem_count == 0
    }

    fn problem(&mut self, table: Table, key: &[u8], what: impl Into<String>) {
        self.problem_count += 1;
        if self.problems.len() < MAX_LISTED {
            self.problems.push(Problem {
                table: table.name(),
                key: key::show(key),
                what: what.into(),
            });
        }
    }

    fn engine_problem(&mut self, table: &'static str, what: String) {
        self.problem_count += 1;
        self.problems.push(Problem {
            table,
            key: String::new(),
            what,
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "store: {}", self.path.display())?;
        for (table, n) in &self.records {
            writeln!(f, "  {table:<14} {n} records")?;
        }
        if self.strays > 0 {
            writeln!(
                f,
                "  {} entries belong to no session (removed at start-up)",
                self.strays
            )?;
        }
        if self.orphan_messages > 0 {
            writeln!(
                f,
                "  {} message bodies are not referenced",
                self.orphan_messages
            )?;
        }
        if self.is_healthy() {
            return writeln!(f, "no damage found");
        }
        writeln!(f, "{} problems:", self.problem_count)?;
        for p in &self.problems {
            if p.key.is_empty() {
                writeln!(f, "  {}: {}", p.table, p.what)?;
            } else {
                writeln!(f, "  {} \"{}\": {}", p.table, p.key, p.what)?;
            }
        }
        if self.problem_count > self.problems.len() as u64 {
            writeln!(
                f,
                "  ... and {} more",
                self.problem_count - self.problems.len() as u64
            )?;
        }
        if !self.repairable {
            return Ok(());
        }
        writeln!(
            f,
            "`midge store repair` moves the store aside (keeping it) and rebuilds it from \
             what can be read"
        )
    }
}

/// Checks the store in `dir` (which must not be open in a running broker).
pub fn check(dir: impl AsRef<Path>) -> Report {
    let dir = dir.as_ref();
    let mut report = Report {
        path: dir.to_path_buf(),
        records: BTreeMap::new(),
        problems: Vec::new(),
        problem_count: 0,
        strays: 0,
        orphan_messages: 0,
        repairable: true,
    };
    if !dir.is_dir() {
        report.engine_problem("engine", "no store: the directory does not exist".into());
        report.repairable = false;
        return report;
    }
    // A running broker may hold the directory even when its files are gone (it was
    // replaced under the broker): say so before looking at what is in it.
    if let Err(EngineError::Locked(what)) = crate::lock::StoreLock::acquire(dir) {
        refuse_in_use(&mut report, &what);
        return report;
    }
    // Opening creates a database where there is none: look first, so that checking the
    // wrong directory leaves it as it was.
    match std::fs::read_dir(dir).map(|mut entries| entries.next().is_none()) {
        Ok(true) => {
            report.engine_problem("engine", "no store: the directory is empty".into());
            report.repairable = false;
            return report;
        }
        Ok(false) if !dir.join(FJALL_MARKER).exists() => {
            report.engine_problem(
                "engine",
                format!(
                    "no store: `{FJALL_MARKER}` is missing (not a Midge data directory, \
                     or a store that lost that file)"
                ),
            );
            return report;
        }
        Ok(false) => {}
        Err(e) => {
            report.engine_problem("engine", format!("the directory cannot be read: {e}"));
            report.repairable = false;
            return report;
        }
    }
    match FjallEngine::open(dir) {
        Ok(engine) => check_engine(&engine, &mut report),
        Err(EngineError::Locked(what)) => {
            refuse_in_use(&mut report, &what);
        }
        Err(e) => report.engine_problem("engine", format!("the store cannot be opened: {e}")),
    }
    report
}

/// Reads every record of `table`, counting them; an engine error mid-way is a problem.
fn scan_table<E: Engine>(
    engine: &E,
    table: Table,
    report: &mut Report,
    mut f: impl FnMut(&[u8], &[u8], &mut Report),
) {
    let mut n = 0u64;
    let mut inner = Report {
        path: PathBuf::new(),
        records: BTreeMap::new(),
        problems: Vec::new(),
        problem_count: 0,
        strays: 0,
        orphan_messages: 0,
        repairable: true,
    };
    let result = engine.scan(table, &[], &[], &mut |k, v| {
        n += 1;
        f(k, v, &mut inner);
        true
    });
    report.records.insert(table.name(), n);
    report.problem_count += inner.problem_count;
    report.strays += inner.strays;
    for p in inner.problems {
        if report.problems.len() < MAX_LISTED {
            report.problems.push(p);
        }
    }
    if let Err(e) = result {
        report.engine_problem(
            table.name(),
            format!("reading stopped after {n} records: {e}"),
        );
    }
}

/// Decodes `v` as `T`, reporting failure.
fn decoded<T: serde::de::DeserializeOwned>(
    table: Table,
    k: &[u8],
    v: &[u8],
    r: &mut Report,
) -> Option<T> {
    match record::decode::<T>(v) {
        Ok(t) => Some(t),
        Err(what) => {
            r.problem(table, k, what);
            None
        }
    }
}

fn check_engine<E: Engine>(engine: &E, report: &mut Report) {
    match engine.get(Table::Meta, FORMAT_KEY) {
        Ok(Some(v)) if v == STORE_FORMAT => {}
        Ok(Some(v)) => report.problem(
            Table::Meta,
            FORMAT_KEY,
            format!("unknown store format \"{}\"", key::show(&v)),
        ),
        Ok(None) => report.problem(Table::Meta, FORMAT_KEY, "format marker missing"),
        Err(e) => report.engine_problem("meta", e.to_string()),
    }
    // Client -> the session's first queue sequence number.
    let mut sessions = HashMap::new();
    scan_table(engine, Table::Sessions, report, |k, v, r| {
        if let Err(what) = key::utf8(k) {
            r.problem(Table::Sessions, k, what);
        }
        match SessionRecord::decode(v) {
            Ok(s) => {
                sessions.insert(k.to_vec(), s.first_seq);
            }
            Err(what) => r.problem(Table::Sessions, k, what),
        }
    });
    let owned = |k: &[u8], r: &mut Report| match key::split_client(k) {
        Ok((c, _)) => {
            if !sessions.contains_key(c.as_bytes()) {
                r.strays += 1;
            }
        }
        Err(what) => r.problem(Table::Sessions, k, what),
    };
    // A queue entry or in-flight marker below its session's first number is an earlier
    // session's (the load removes it).
    let owned_at = |table: Table, k: &[u8], r: &mut Report| match key::split_client_seq(k) {
        Ok((c, seq)) => {
            if sessions.get(c.as_bytes()).is_none_or(|first| seq < *first) {
                r.strays += 1;
            }
        }
        Err(what) => r.problem(table, k, what),
    };
    scan_table(engine, Table::Subscriptions, report, |k, v, r| {
        owned(k, r);
        decoded::<SubscriptionRecord>(Table::Subscriptions, k, v, r);
    });
    let mut messages = HashSet::new();
    scan_table(
        engine,
        Table::Messages,
        report,
        |k, v, r| match key::split_message(k) {
            Ok(id) => {
                if decoded::<MessageRecord>(Table::Messages, k, v, r).is_some() {
                    messages.insert(id);
                }
            }
            Err(what) => r.problem(Table::Messages, k, what),
        },
    );
    let mut referenced = HashSet::new();
    let mut queued = HashSet::new();
    scan_table(engine, Table::Queue, report, |k, v, r| {
        owned_at(Table::Queue, k, r);
        let entry = QueueEntry::decode(v).map_err(|what| r.problem(Table::Queue, k, what));
        if let Ok(e) = entry {
            queued.insert(k.to_vec());
            referenced.insert(e.message_id);
            if !messages.contains(&e.message_id) {
                r.problem(
                    Table::Queue,
                    k,
                    format!(
                        "refers to message {} which is missing or unreadable",
                        e.message_id
                    ),
                );
            }
        }
    });
    report.orphan_messages = messages.difference(&referenced).count() as u64;
    scan_table(engine, Table::Inflight, report, |k, v, r| {
        owned_at(Table::Inflight, k, r);
        if let Some(i) = decoded::<InflightRecord>(Table::Inflight, k, v, r) {
            if i.stage != Stage::AwaitPubComp && !queued.contains(k) {
                r.problem(
                    Table::Inflight,
                    k,
                    "in flight but its queue entry is missing",
                );
            }
        }
    });
    scan_table(engine, Table::InboundQos2, report, |k, _, r| {
        owned(k, r);
        if let Err(what) = key::split_client_packet_id(k) {
            r.problem(Table::InboundQos2, k, what);
        }
    });
    scan_table(engine, Table::Retained, report, |k, v, r| {
        if let Err(what) = key::utf8(k) {
            r.problem(Table::Retained, k, what);
        }
        decoded::<MessageRecord>(Table::Retained, k, v, r);
    });
    scan_table(engine, Table::Wills, report, |k, v, r| {
        if let Err(what) = key::utf8(k) {
            r.problem(Table::Wills, k, what);
        }
        if let Err(what) = WillRecord::decode(v) {
            r.problem(Table::Wills, k, what);
        }
    });
}

/// What `repair` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The fresh store.
    pub path: PathBuf,
    /// Where the damaged store was moved, untouched.
    pub moved_to: PathBuf,
    /// Records copied into the fresh store, per table.
    pub kept: BTreeMap<&'static str, u64>,
    /// Records left behind (unreadable, or referring to something unreadable), per table.
    pub left: BTreeMap<&'static str, u64>,
    /// Why a table (or the whole store) could not be read completely.
    pub notes: Vec<String>,
}

impl fmt::Display for RepairReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "damaged store moved to {}", self.moved_to.display())?;
        writeln!(f, "fresh store in {}:", self.path.display())?;
        for (table, n) in &self.kept {
            let left = self.left.get(table).copied().unwrap_or(0);
            writeln!(f, "  {table:<14} kept {n}, left behind {left}")?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// Moves the store in `dir` aside and rebuilds it from what can still be read. The
/// store must not be open (a running broker holds its lock: refused).
pub fn repair(dir: impl AsRef<Path>) -> Result<RepairReport, StoreError> {
    let dir = dir.as_ref();
    let io = |what: String| StoreError::Io {
        path: dir.to_path_buf(),
        what,
    };
    if !dir.is_dir() {
        return Err(io("no store: the directory does not exist".into()));
    }
    // A running broker's store is not moved away under it (not even one whose directory
    // was replaced since it opened it: the store's own lock, then fjall's).
    let refused = |e| match e {
        EngineError::Locked(what) => StoreError::Locked {
            path: dir.to_path_buf(),
            what: format!("{what}; stop the broker before repairing its store"),
        },
        e => StoreError::engine(dir, e),
    };
    let store_lock = crate::lock::StoreLock::acquire(dir).map_err(refused)?;
    let lock = lock_store(dir).map_err(refused)?;
    let aside = aside_path(dir, SystemTime::now());
    std::fs::rename(dir, &aside)
        .map_err(|e| io(format!("cannot move it to {}: {e}", aside.display())))?;
    drop(lock);
    drop(store_lock);
    let scratch = aside.with_extension("salvage");
    let mut report = RepairReport {
        path: dir.to_path_buf(),
        moved_to: aside.clone(),
        kept: BTreeMap::new(),
        left: BTreeMap::new(),
        notes: Vec::new(),
    };
    let fresh = FjallEngine::open(dir).map_err(|e| StoreError::engine(dir, e))?;
    let marker = Write::put(Table::Meta, FORMAT_KEY.to_vec(), STORE_FORMAT.to_vec());
    fresh
        .write(&[marker])
        .map_err(|e| StoreError::engine(dir, e))?;
    // Salvage from a copy: opening runs the engine's recovery, which may rewrite files,
    // and the moved-aside original must stay exactly as it was found.
    match copy_dir(&aside, &scratch) {
        Err(e) => report
            .notes
            .push(format!("cannot copy the damaged store: {e}")),
        Ok(()) => match FjallEngine::open_for_salvage(&scratch) {
            Ok((old, notes)) => {
                report.notes.extend(notes);
                salvage(&old, &fresh, &mut report).map_err(|e| StoreError::engine(dir, e))?
            }
            Err(e) => report.notes.push(format!(
                "the damaged store cannot be opened, nothing kept: {e}"
            )),
        },
    }
    fresh.sync().map_err(|e| StoreError::engine(dir, e))?;
    // Notes name the scratch copy's files; the operator has the moved-aside original.
    let (from, to) = (scratch.display().to_string(), aside.display().to_string());
    for n in &mut report.notes {
        *n = n.replace(&from, &to);
    }
    // The messages table is read twice (ids, then copy): one note is enough.
    report.notes.dedup();
    if let Err(e) = std::fs::remove_dir_all(&scratch) {
        report.notes.push(format!(
            "scratch copy {} not removed: {e}",
            scratch.display()
        ));
    }
    Ok(report)
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Buffers writes to the fresh store in bounded batches.
struct Copier<'a, E: Engine> {
    to: &'a E,
    batch: Vec<Write>,
}

impl<E: Engine> Copier<'_, E> {
    fn put(&mut self, table: Table, k: &[u8], v: &[u8]) -> Result<(), EngineError> {
        self.batch.push(Write::put(table, k.to_vec(), v.to_vec()));
        if self.batch.len() >= 10_000 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), EngineError> {
        self.to.write(&self.batch)?;
        self.batch.clear();
        Ok(())
    }
}

/// Copies every readable, consistent record of `old` into `fresh`.
fn salvage<E: Engine, F: Engine>(
    old: &E,
    fresh: &F,
    report: &mut RepairReport,
) -> Result<(), EngineError> {
    let mut out = Copier {
        to: fresh,
        batch: Vec::new(),
    };
    let mut sessions = HashMap::new();
    copy_table(old, Table::Sessions, report, &mut out, |k, v| {
        match (key::utf8(k), SessionRecord::decode(v)) {
            (Ok(_), Ok(s)) => {
                sessions.insert(k.to_vec(), s.first_seq);
                true
            }
            _ => false,
        }
    })?;
    let owned =
        |k: &[u8]| key::split_client(k).is_ok_and(|(c, _)| sessions.contains_key(c.as_bytes()));
    // Entries below their session's first number are an earlier session's: left behind.
    let owned_at = |k: &[u8]| {
        key::split_client_seq(k)
            .is_ok_and(|(c, seq)| sessions.get(c.as_bytes()).is_some_and(|f| seq >= *f))
    };
    copy_table(old, Table::Subscriptions, report, &mut out, |k, v| {
        owned(k) && record::decode::<SubscriptionRecord>(v).is_ok()
    })?;
    let mut readable = HashSet::new();
    scan_tolerant(old, Table::Messages, report, |k, v| {
        if let (Ok(id), Ok(_)) = (key::split_message(k), record::decode::<MessageRecord>(v)) {
            readable.insert(id);
        }
    });
    let mut referenced = HashSet::new();
    let mut queued = HashSet::new();
    copy_table(old, Table::Queue, report, &mut out, |k, v| {
        let ok = owned_at(k)
            && QueueEntry::decode(v).is_ok_and(|e| {
                let ok = readable.contains(&e.message_id);
                if ok {
                    referenced.insert(e.message_id);
                }
                ok
            });
        if ok {
            queued.insert(k.to_vec());
        }
        ok
    })?;
    copy_table(old, Table::Messages, report, &mut out, |k, _| {
        key::split_message(k).is_ok_and(|id| referenced.contains(&id))
    })?;
    copy_table(old, Table::Inflight, report, &mut out, |k, v| {
        owned_at(k)
            && record::decode::<InflightRecord>(v)
                .is_ok_and(|i| i.stage == Stage::AwaitPubComp || queued.contains(k))
    })?;
    copy_table(old, Table::InboundQos2, report, &mut out, |k, _| {
        owned(k) && key::split_client_packet_id(k).is_ok()
    })?;
    copy_table(old, Table::Retained, report, &mut out, |k, v| {
        key::utf8(k).is_ok() && record::decode::<MessageRecord>(v).is_ok()
    })?;
    copy_table(old, Table::Wills, report, &mut out, |k, v| {
        key::utf8(k).is_ok() && WillRecord::decode(v).is_ok()
    })?;
    out.flush()
}

/// Reads a table as far as it can be read; notes where it stopped.
fn scan_tolerant<E: Engine>(
    old: &E,
    table: Table,
    report: &mut RepairReport,
    mut f: impl FnMut(&[u8], &[u8]),
) {
    let result = old.scan(table, &[], &[], &mut |k, v| {
        f(k, v);
        true
    });
    if let Err(e) = result {
        report.notes.push(format!(
            "table `{}` could not be read to its end: {e}",
            table.name()
        ));
    }
}

/// Copies the records of `table` that `keep` accepts, counting kept and left.
fn copy_table<E: Engine, F: Engine>(
    old: &E,
    table: Table,
    report: &mut RepairReport,
    out: &mut Copier<'_, F>,
    mut keep: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<(), EngineError> {
    let (mut kept, mut left) = (0u64, 0u64);
    let mut write_err = None;
    scan_tolerant(old, table, report, |k, v| {
        if write_err.is_some() {
            return;
        }
        if keep(k, v) {
            kept += 1;
            if let Err(e) = out.put(table, k, v) {
                write_err = Some(e);
            }
        } else {
            left += 1;
        }
    });
    report.kept.insert(table.name(), kept);
    report.left.insert(table.name(), left);
    write_err.map_or(Ok(()), Err)
}

/// The store is held by a running broker (`what` says by whom): neither checked nor
/// repaired.
fn refuse_in_use(report: &mut Report, what: &str) {
    report.engine_problem(
        "engine",
        format!(
            "the store is in use by another process ({what}): stop the broker before \
             checking its store"
        ),
    );
    report.repairable = false;
}

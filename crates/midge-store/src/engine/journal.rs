//! Midge's own reading of fjall's journal files, before fjall opens them.
//!
//! fjall replays its journal at start-up and stops at the first entry it cannot decode,
//! cutting the file there: right for the tail of a write a crash interrupted, but damage
//! in the middle of the journal (a flipped bit, a lost page) is taken for such a tail and
//! every batch after it is silently dropped, and the file is cut so that nothing can get
//! them back. So the store reads each journal first:
//!
//! - every complete batch whose checksum matches is found, including batches after an
//!   unreadable stretch (found by looking for the next batch that reads whole);
//! - unreadable bytes followed by a good batch are damage: `open` refuses the store,
//!   naming the file and the bytes, before fjall changes anything;
//! - unreadable bytes after the last good batch are the interrupted tail: they are cut
//!   off here (as fjall would), with a warning saying how many bytes were dropped;
//! - `repair` (salvage) rewrites the journal of its scratch copy to the good batches
//!   only, so that batches after a damaged one are kept.
//!
//! The format is fjall 3's (`fjall/src/journal/entry.rs`): a batch is a start entry
//! (`1`, item count u32, seqno u64), that many items (`2`, value type u8, compression u8,
//! keyspace u64, key length u16, value length u32, stored value length u32, key, stored
//! value) or clears (`4`, keyspace u64), and an end entry (`3`, checksum u64, `FJL\x03`).
//! The checksum is XXH3-64 of the items' bytes. Integers are little-endian. Damage that
//! falls inside the last batch of a journal cannot be told from an interrupted write;
//! it is dropped like one (as fjall and RocksDB's default recovery do), with the warning.

use std::ops::Range;
use std::path::{Path, PathBuf};

const START: u8 = 1;
const ITEM: u8 = 2;
const END: u8 = 3;
const CLEAR: u8 = 4;
const TRAILER: &[u8; 4] = b"FJL\x03";

/// What reading one journal file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalScan {
    pub path: PathBuf,
    /// Stretches of whole, good batches, in file order.
    pub good: Vec<Range<u64>>,
    /// Unreadable stretches with good batches after them: damage.
    pub damaged: Vec<Range<u64>>,
    /// Unreadable bytes after the last good batch (a write cut short), if any.
    pub tail: Option<Range<u64>>,
    /// Good batches whose sequence number is not above the one before: a damaged
    /// number (the checksum covers a batch's items, not its start entry).
    pub out_of_order: Vec<u64>,
    /// Looking for good batches after unreadable bytes was given up (see [`WORK_PER_BYTE`]):
    /// the last `damaged` stretch runs to the end unsearched.
    pub gave_up: bool,
}

/// Bytes of parsing allowed per byte of journal. Reading a healthy journal parses each
/// byte once; after unreadable bytes, every `1` byte is tried as a batch start, which
/// costs a few bytes each on ordinary data but can be made to cost far more by bytes
/// crafted to chain (message payloads are written into the journal). Past this budget
/// the rest of the file is damage, unsearched, rather than hours of start-up.
const WORK_PER_BYTE: usize = 16;

impl JournalScan {
    /// The bytes the good batches hold.
    fn good_bytes(&self) -> u64 {
        self.good.iter().map(|r| r.end - r.start).sum()
    }

    /// Describes the damage for an error message, or `None` if there is none.
    pub fn damage(&self) -> Option<String> {
        if let (true, Some(last)) = (self.gave_up, self.damaged.last()) {
            return Some(format!(
                "journal {}: bytes from {} on cannot be read, and searching them for \
                 complete batches took too long: the journal is damaged",
                self.path.display(),
                last.start
            ));
        }
        if let Some(at) = self.out_of_order.first() {
            return Some(format!(
                "journal {}: the batch at byte {at} has a sequence number not above the one \
                 before it: the journal is damaged",
                self.path.display()
            ));
        }
        let first = self.damaged.first()?;
        let bad: u64 = self.damaged.iter().map(|r| r.end - r.start).sum();
        let after: u64 = self
            .good
            .iter()
            .filter(|r| r.start >= first.end)
            .map(|r| r.end - r.start)
            .sum();
        Some(format!(
            "journal {}: {bad} bytes in {} stretch(es) cannot be read (the first at bytes \
             {}..{}) and {after} bytes of complete batches follow them: the journal is \
             damaged, not cut short by a crash, and replaying it would silently drop \
             those later batches",
            self.path.display(),
            self.damaged.len(),
            first.start,
            first.end
        ))
    }
}

/// Reads the journal at `path`. Trailing zero bytes (fjall allocates journal files
/// ahead) are not data.
pub fn scan(path: &Path) -> std::io::Result<JournalScan> {
    let data = read_trimmed(path)?;
    Ok(scan_bytes(path, &data))
}

fn scan_bytes(path: &Path, data: &[u8]) -> JournalScan {
    let mut found = JournalScan {
        path: path.to_path_buf(),
        good: Vec::new(),
        damaged: Vec::new(),
        tail: None,
        out_of_order: Vec::new(),
        gave_up: false,
    };
    let at = |i: usize| i as u64;
    let mut work = Work {
        spent: 0,
        budget: data
            .len()
            .saturating_mul(WORK_PER_BYTE)
            .saturating_add(1 << 20),
    };
    let mut pos = 0usize;
    let mut last_seqno = None;
    while pos < data.len() {
        if let Some((end, seqno)) = batch_at(data, pos, &mut work) {
            if last_seqno.is_some_and(|last| seqno <= last) {
                found.out_of_order.push(at(pos));
            }
            last_seqno = Some(seqno);
            match found.good.last_mut() {
                Some(run) if run.end == at(pos) => run.end = at(end),
                _ => found.good.push(at(pos)..at(end)),
            }
            pos = end;
            continue;
        }
        match next_batch(data, pos + 1, &mut work) {
            Next::At(next) => {
                found.damaged.push(at(pos)..at(next));
                pos = next;
            }
            Next::None => {
                found.tail = Some(at(pos)..at(data.len()));
                break;
            }
            Next::GaveUp => {
                found.damaged.push(at(pos)..at(data.len()));
                found.gave_up = true;
                break;
            }
        }
    }
    found
}

/// Parsing done so far and allowed.
struct Work {
    spent: usize,
    budget: usize,
}

enum Next {
    At(usize),
    None,
    GaveUp,
}

/// The first offset from `from` on where a whole good batch starts.
fn next_batch(data: &[u8], from: usize, work: &mut Work) -> Next {
    let Some(rest) = data.get(from..) else {
        return Next::None;
    };
    for (i, b) in rest.iter().enumerate() {
        if work.spent > work.budget {
            return Next::GaveUp;
        }
        if *b == START && batch_at(data, from + i, work).is_some() {
            return Next::At(from + i);
        }
    }
    Next::None
}

/// Reads forward through a byte slice; every read is bounds-checked.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let bytes = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_le_bytes(self.take(2)?.try_into().ok()?))
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

/// If a whole batch with a matching checksum starts at `pos`, where it ends and its
/// sequence number. Adds the bytes it looked at to `work`.
fn batch_at(data: &[u8], pos: usize, work: &mut Work) -> Option<(usize, u64)> {
    let mut r = Reader { data, pos };
    let found = read_batch(&mut r);
    work.spent = work.spent.saturating_add(r.pos - pos);
    found
}

fn read_batch(r: &mut Reader<'_>) -> Option<(usize, u64)> {
    let data = r.data;
    if r.u8()? != START {
        return None;
    }
    let count = r.u32()?;
    let seqno = r.u64()?;
    let items = r.pos;
    for _ in 0..count {
        match r.u8()? {
            ITEM => {
                // Value, tombstone, weak tombstone: what a journal holds (fjall's decoder
                // stops at anything else, and asserts on an indirection).
                let value_type = r.u8()?;
                let compression = r.u8()?;
                if value_type > 2 {
                    return None;
                }
                let _keyspace = r.u64()?;
                let key_len = r.u16()?;
                let value_len = r.u32()?;
                let stored_len = r.u32()?;
                // Uncompressed values are stored as they are (fjall asserts it).
                if compression > 1 || (compression == 0 && value_len != stored_len) {
                    return None;
                }
                r.take(usize::from(key_len))?;
                r.take(usize::try_from(stored_len).ok()?)?;
            }
            CLEAR => {
                let _keyspace = r.u64()?;
            }
            _ => return None,
        }
    }
    let items = data.get(items..r.pos)?;
    if r.u8()? != END {
        return None;
    }
    let checksum = r.u64()?;
    if r.take(TRAILER.len())? != TRAILER {
        return None;
    }
    (xxhash_rust::xxh3::xxh3_64(items) == checksum).then_some((r.pos, seqno))
}

/// The file's bytes up to its last non-zero byte, without holding its zero runs in
/// memory on the way (a new journal is 64 MiB of zeros).
pub fn read_trimmed(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    const CHUNK: usize = 1 << 20;
    static ZEROS: [u8; CHUNK] = [0; CHUNK];
    let mut file = std::fs::File::open(path)?;
    let mut data = Vec::new();
    let mut zeros = 0usize;
    let mut chunk = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut chunk)?;
        let (Some(read), Some(zero)) = (chunk.get(..n), ZEROS.get(..n)) else {
            return Ok(data);
        };
        if n == 0 {
            return Ok(data);
        }
        // Compared as a whole (memcmp): zero runs are most of a young journal.
        if read == zero {
            zeros += n;
            continue;
        }
        let last = read.iter().rposition(|b| *b != 0).unwrap_or(0);
        data.resize(data.len() + zeros, 0);
        zeros = n - last - 1;
        data.extend_from_slice(read.get(..=last).unwrap_or_default());
    }
}

/// The journal files of the database in `dir`, in order.
pub fn journals(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jnl"))
        .map(|p| {
            let id = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            (id, p)
        })
        .collect();
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Before the engine opens the database in `dir` (whose lock the caller holds): refuses
/// a damaged journal, cuts an interrupted tail off with a warning.
pub fn check_before_open(dir: &Path) -> Result<(), String> {
    let io = |p: &Path, e: std::io::Error| format!("journal {}: {e}", p.display());
    let all = journals(dir).map_err(|e| io(dir, e))?;
    let count = all.len();
    for (n, path) in all.into_iter().enumerate() {
        let found = scan(&path).map_err(|e| io(&path, e))?;
        if let Some(damage) = found.damage() {
            return Err(damage);
        }
        if let (Some(tail), true) = (&found.tail, n + 1 < count) {
            // Only the journal being written when the process stopped can end in a
            // write cut short; an older one was complete (and fsynced) when fjall moved
            // on to the next, whose batches follow these bytes.
            return Err(format!(
                "journal {}: its last {} bytes (from byte {}) cannot be read, and it is not \
                 the newest journal: the journal is damaged, and replaying would drop the \
                 batches of the journals after it",
                path.display(),
                tail.end - tail.start,
                tail.start
            ));
        }
        if let Some(tail) = &found.tail {
            tracing::warn!(
                journal = %path.display(),
                "dropped {} bytes at the end of the journal (from byte {}): an incomplete \
                 batch, a write cut short by a crash",
                tail.end - tail.start,
                tail.start
            );
            cut(&path, tail.start).map_err(|e| io(&path, e))?;
        }
    }
    Ok(())
}

/// For salvage: rewrites each journal in `dir` to its good batches only. Returns notes
/// on what was left out.
pub fn keep_good_batches(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut notes = Vec::new();
    for path in journals(dir)? {
        let data = read_trimmed(&path)?;
        let found = scan_bytes(&path, &data);
        if !found.out_of_order.is_empty() {
            notes.push(format!(
                "journal {}: {} batches have a sequence number not above the one before \
                 (damaged numbers); kept, the engine orders their writes by those numbers",
                path.display(),
                found.out_of_order.len()
            ));
        }
        if found.damaged.is_empty() && found.tail.is_none() {
            continue;
        }
        let mut kept = Vec::with_capacity(usize::try_from(found.good_bytes()).unwrap_or(0));
        for run in &found.good {
            let run = usize::try_from(run.start).unwrap_or(usize::MAX)
                ..usize::try_from(run.end).unwrap_or(usize::MAX);
            kept.extend_from_slice(data.get(run).unwrap_or_default());
        }
        for bad in found.damaged.iter().chain(&found.tail) {
            notes.push(format!(
                "journal {}: {} unreadable bytes at {}..{} left out; the batches around \
                 them are kept",
                path.display(),
                bad.end - bad.start,
                bad.start,
                bad.end
            ));
        }
        let tmp = path.with_extension("jnl.tmp");
        std::fs::write(&tmp, &kept)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(notes)
}

fn cut(path: &Path, len: u64) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_len(len)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch in fjall's format with one item per `(key, value)`.
    fn batch(seqno: u64, items: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in items {
            body.push(ITEM);
            body.push(0);
            body.push(0);
            body.extend_from_slice(&7u64.to_le_bytes());
            body.extend_from_slice(&(k.len() as u16).to_le_bytes());
            body.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(k);
            body.extend_from_slice(v);
        }
        let mut out = vec![START];
        out.extend_from_slice(&(items.len() as u32).to_le_bytes());
        out.extend_from_slice(&seqno.to_le_bytes());
        out.extend_from_slice(&body);
        out.push(END);
        out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&body).to_le_bytes());
        out.extend_from_slice(TRAILER);
        out
    }

    fn journal(batches: usize) -> (Vec<u8>, Vec<usize>) {
        let mut data = Vec::new();
        let mut starts = Vec::new();
        for i in 0..batches {
            starts.push(data.len());
            let value = vec![i as u8 + 1; 40 + i];
            data.extend(batch(i as u64, &[(b"key", &value), (b"k2", b"v")]));
        }
        (data, starts)
    }

    fn at(data: &[u8]) -> JournalScan {
        scan_bytes(Path::new("0.jnl"), data)
    }

    #[test]
    fn a_healthy_journal_is_one_good_stretch() {
        let (data, _) = journal(5);
        let found = at(&data);
        assert_eq!(found.good, vec![0..data.len() as u64]);
        assert!(found.damaged.is_empty() && found.tail.is_none());
        assert!(found.out_of_order.is_empty());
        assert_eq!(found.damage(), None);
    }

    #[test]
    fn damage_in_a_middle_batch_is_found_and_the_later_batches_kept() {
        let (data, starts) = journal(5);
        for offset in starts[2]..starts[3] {
            let mut bad = data.clone();
            bad[offset] ^= 0x40;
            let found = at(&bad);
            assert!(
                found.damage().is_some_and(|d| d.contains("0.jnl")),
                "flip at {offset}"
            );
            // The start entry's sequence number is outside the checksum: a changed
            // number shows as disorder, anything else as an unreadable batch.
            let seqno = starts[2] + 5..starts[2] + 13;
            if seqno.contains(&offset) {
                assert_eq!(found.out_of_order, vec![starts[3] as u64]);
                continue;
            }
            assert_eq!(found.damaged, vec![starts[2] as u64..starts[3] as u64]);
            assert_eq!(
                found.good,
                vec![0..starts[2] as u64, starts[3] as u64..data.len() as u64]
            );
        }
    }

    #[test]
    fn a_cut_last_batch_is_a_tail_not_damage() {
        let (data, starts) = journal(4);
        for len in starts[3] + 1..data.len() {
            let found = at(&data[..len]);
            assert_eq!(found.tail, Some(starts[3] as u64..len as u64));
            assert!(found.damaged.is_empty());
            assert_eq!(found.damage(), None);
        }
    }

    #[test]
    fn an_item_of_a_kind_no_journal_holds_is_unreadable_even_with_its_checksum() {
        let mut data = batch(1, &[(b"k", b"v")]);
        let value_type_at = 1 + 4 + 8 + 1;
        data[value_type_at] = 4;
        let items = 13..data.len() - 13;
        let sum = xxhash_rust::xxh3::xxh3_64(&data[items.clone()]);
        data[items.end + 1..items.end + 9].copy_from_slice(&sum.to_le_bytes());
        assert!(at(&data).good.is_empty());
        data[value_type_at] = 1;
        let sum = xxhash_rust::xxh3::xxh3_64(&data[items.clone()]);
        data[items.end + 1..items.end + 9].copy_from_slice(&sum.to_le_bytes());
        assert_eq!(at(&data).good, vec![0..data.len() as u64]);
    }

    #[test]
    fn lengths_pointing_past_the_end_are_not_followed() {
        let mut data = batch(1, &[(b"k", b"v")]);
        // The stored value length of the only item: a huge value.
        let stored_len_at = 1 + 4 + 8 + 1 + 1 + 1 + 8 + 2 + 4;
        data[stored_len_at..stored_len_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        let found = at(&data);
        assert_eq!(found.tail, Some(0..data.len() as u64));
        assert!(found.good.is_empty());
    }

    /// Entries whose values hide a batch start chaining into the next entry: every hidden
    /// start parses to the end of the file, quadratic time without the work budget.
    #[test]
    fn bytes_crafted_to_chain_are_given_up_on_not_searched_for_hours() {
        let mut data = Vec::new();
        for _ in 0..20_000 {
            data.extend([ITEM, 0, 0]);
            data.extend(7u64.to_le_bytes());
            data.extend(0u16.to_le_bytes());
            data.extend(13u32.to_le_bytes());
            data.extend(13u32.to_le_bytes());
            // A start entry (count u32::MAX) whose items begin at the next entry.
            data.push(START);
            data.extend(u32::MAX.to_le_bytes());
            data.extend(1u64.to_le_bytes());
        }
        let found = at(&data);
        assert!(found.gave_up);
        assert_eq!(found.damaged, vec![0..data.len() as u64]);
        assert!(found.damage().is_some_and(|d| d.contains("took too long")));
    }

    #[test]
    fn only_the_newest_journal_may_end_in_a_cut_batch() {
        let (data, starts) = journal(3);
        let dir = tempfile::tempdir().expect("dir");
        let (older, newer) = (dir.path().join("0.jnl"), dir.path().join("1.jnl"));
        // The newest journal ends in half a batch: cut off, the rest kept.
        std::fs::write(&older, &data).expect("write");
        std::fs::write(&newer, &data[..starts[2] + 7]).expect("write");
        assert_eq!(check_before_open(dir.path()), Ok(()));
        assert_eq!(std::fs::read(&newer).expect("read"), data[..starts[2]]);
        // An older journal that does is damaged: refused, nothing cut.
        std::fs::write(&older, &data[..starts[2] + 7]).expect("write");
        let err = check_before_open(dir.path()).expect_err("refused");
        assert!(
            err.contains("0.jnl") && err.contains("not the newest"),
            "{err}"
        );
        assert_eq!(std::fs::read(&older).expect("read").len(), starts[2] + 7);
    }

    #[test]
    fn zero_runs_are_kept_inside_and_dropped_at_the_end() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("0.jnl");
        let mut data = vec![1u8; 10];
        data.extend(vec![0u8; 3 << 20]);
        data.extend([2u8; 5]);
        data.extend(vec![0u8; (2 << 20) + 17]);
        std::fs::write(&path, &data).expect("write");
        let read = read_trimmed(&path).expect("read");
        assert_eq!(read, data[..10 + (3 << 20) + 5]);
    }
}

//! Damage: a store whose files are damaged is refused with an error naming the files and
//! what is wrong; `check` reports it; `repair` moves it aside (untouched) and rebuilds a
//! store from what can still be read.

mod common;

use common::*;
use midge_store::engine::{journal, Engine, Write};
use midge_store::{check, repair, DiskStore, Op, SessionStore, StoreError, Table};
use std::path::Path;
use std::sync::Arc;

const MESSAGES: u64 = 2000;

/// A store with one session holding `MESSAGES` queued 1 KB messages and as many retained
/// messages, closed.
fn filled(dir: &Path, flush_to_tables: bool) {
    let store = DiskStore::open(dir, Default::default()).expect("open");
    let mut ops = vec![put_session("c")];
    for seq in 0..MESSAGES {
        let payload: Vec<u8> = (0..1024).map(|i| (i * 7 + seq) as u8).collect();
        ops.push(enqueue(&store, message("t", &payload, None), &[("c", seq)]));
        ops.push(Op::PutRetained {
            topic: format!("r/{seq}").as_str().into(),
            message: Arc::new(message("r", &payload, None)),
        });
        if ops.len() > 200 {
            store
                .commit_blocking(std::mem::take(&mut ops))
                .expect("commit");
        }
    }
    store.commit_blocking(ops).expect("commit");
    if flush_to_tables {
        store.engine().flush_tables().expect("flush");
    }
    store.close();
}

fn overwrite(file: &Path, offset: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .expect("open file");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&[0xde, 0xad, 0xbe, 0xef, 0xde, 0xad, 0xbe, 0xef])
        .expect("write");
}

fn damaged_message(err: StoreError) -> String {
    match &err {
        StoreError::Damaged { .. } => err.to_string(),
        other => panic!("expected Damaged, got {other:?}"),
    }
}

#[test]
fn a_damaged_journal_is_refused_naming_the_journal_file() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("data");
    filled(&dir, false);
    overwrite(&dir.join("0.jnl"), 1_000_000);

    let err = DiskStore::open(&dir, Default::default())
        .err()
        .expect("must fail");
    let text = damaged_message(err);
    assert!(text.contains("0.jnl"), "{text}");
    assert!(text.contains("midge store repair"), "{text}");

    let report = check(&dir);
    assert!(!report.is_healthy());
    assert!(report.to_string().contains("0.jnl"), "{report}");

    let done = repair(&dir).expect("repair");
    assert!(done.moved_to.join("0.jnl").exists());
    assert!(
        done.notes.iter().any(|n| n.contains("0.jnl")),
        "the unreadable stretch is reported: {done}"
    );
    // The store was closed: everything the journal held is in the table files too.
    let store = DiskStore::open(&dir, Default::default()).expect("repaired store opens");
    let r = store.load(now()).expect("load");
    assert_eq!(r.sessions.len(), 1, "{done}");
    assert_eq!(r.retained.len() as u64, MESSAGES, "{done}");
}

/// Copies a store's files as they are, as a crash would leave them.
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir").flatten() {
        let (path, target) = (entry.path(), to.join(entry.file_name()));
        if path.is_dir() {
            copy_files(&path, &target);
        } else if path.extension().is_some_and(|x| x == "jnl") {
            // Without the zeros fjall allocates ahead: 64 MiB per copy otherwise.
            let bytes = journal::read_trimmed(&path).expect("read");
            std::fs::write(&target, bytes).expect("write");
        } else {
            std::fs::copy(&path, &target).expect("copy");
        }
    }
}

fn journal_len(dir: &Path) -> u64 {
    journal::read_trimmed(&dir.join("0.jnl"))
        .expect("journal")
        .len() as u64
}

fn retained_topics(store: &DiskStore) -> Vec<String> {
    let mut topics: Vec<String> = store
        .load(now())
        .expect("load")
        .retained
        .iter()
        .map(|(topic, _)| topic.clone())
        .collect();
    topics.sort();
    topics
}

/// fjall alone takes damage anywhere in its journal for the tail of a write cut short by
/// a crash, and drops everything after it (from offset 0 on: the whole store, silently).
/// The store must instead refuse a journal damaged before its last batch, naming it; cut
/// off a damaged last batch with a warning, keeping all before it; and `repair` must keep
/// the batches on both sides of the damage.
#[test]
fn journal_damage_anywhere_is_refused_or_cut_and_repair_keeps_the_batches_around_it() {
    const BATCHES: usize = 12;
    const PER_BATCH: usize = 10;
    let tmp = tempfile::tempdir().expect("dir");
    let live = tmp.path().join("live");
    let crashed = tmp.path().join("crashed");
    let store = DiskStore::open(&live, Default::default()).expect("open");
    let session_at = journal_len(&live);
    store
        .commit_blocking(vec![put_session("c")])
        .expect("commit");
    // Where each batch of retained messages starts in the journal, then its end.
    let mut starts = Vec::new();
    for b in 0..BATCHES {
        starts.push(journal_len(&live));
        let ops = (0..PER_BATCH)
            .map(|i| Op::PutRetained {
                topic: format!("r/{:03}", b * PER_BATCH + i).as_str().into(),
                message: Arc::new(message("r", &[b as u8; 200], None)),
            })
            .collect();
        store.commit_blocking(ops).expect("commit");
    }
    // Every commit is fsynced (the default): a copy now is what a crash leaves.
    copy_files(&live, &crashed);
    store.close();
    let len = journal_len(&crashed);
    starts.push(len);
    let last_batch_at = starts[BATCHES - 1];
    let all = BATCHES * PER_BATCH;

    // The retained batches eight bytes at `offset` make unreadable. A batch's sequence
    // number (bytes 5..13) is outside its checksum: changed alone, the batch still reads
    // (and the next batch is then out of order: damage too).
    let unreadable = |offset: u64, (start, end): (u64, u64)| {
        let hit = offset < end && offset + 8 > start;
        let seqno_only = offset >= start + 5 && offset + 8 <= start + 13;
        hit && !seqno_only
    };
    let lost = |offset: u64| -> Vec<usize> {
        (0..BATCHES)
            .filter(|&b| unreadable(offset, (starts[b], starts[b + 1])))
            .collect()
    };
    let mut offsets: Vec<u64> = (0..len).step_by((len / 31) as usize).collect();
    offsets.extend([
        0,
        5,
        session_at,
        session_at + 5,
        starts[3] + 5,
        starts[3] - 3,
    ]);
    offsets.extend([last_batch_at, last_batch_at + 5, len - 8]);
    let (mut refused, mut cut) = (0, 0);
    for offset in offsets {
        let dir = tmp.path().join(format!("at-{offset}"));
        copy_files(&crashed, &dir);
        overwrite(&dir.join("0.jnl"), offset);
        let lost = lost(offset);
        let expected: Vec<String> = (0..all)
            .filter(|i| !lost.contains(&(i / PER_BATCH)))
            .map(|i| format!("r/{i:03}"))
            .collect();
        match DiskStore::open(&dir, Default::default()) {
            Err(err) => {
                refused += 1;
                assert!(offset < last_batch_at, "damage at {offset} refused: {err}");
                let text = damaged_message(err);
                assert!(text.contains("0.jnl"), "{text}");
                assert!(text.contains("midge store repair"), "{text}");
                assert!(!check(&dir).is_healthy());
                let done = repair(&dir).expect("repair");
                let store = DiskStore::open(&dir, Default::default()).expect("repaired");
                assert_eq!(retained_topics(&store), expected, "at {offset}: {done}");
                let sessions = store.load(now()).expect("load").sessions.len();
                let session_lost = unreadable(offset, (session_at, starts[0]));
                assert_eq!(sessions, usize::from(!session_lost), "at {offset}");
                store.close();
            }
            Ok(store) => {
                cut += 1;
                assert!(offset >= last_batch_at, "damage at {offset} went unnoticed");
                assert_eq!(retained_topics(&store), expected, "at {offset}");
                assert_eq!(store.load(now()).expect("load").sessions.len(), 1);
                store.close();
            }
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
    assert!(refused > 25 && cut >= 3, "refused {refused}, cut {cut}");
}

#[test]
fn a_damaged_table_file_is_refused_naming_the_table_and_repair_keeps_the_rest() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("data");
    filled(&dir, true);
    let queue_dir = {
        let store = DiskStore::open(&dir, Default::default()).expect("open");
        store.engine().table_dir(Table::Queue)
    };
    let table_file = std::fs::read_dir(queue_dir.join("tables"))
        .expect("tables")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .max_by_key(|p| p.metadata().map(|m| m.len()).unwrap_or(0))
        .expect("a table file");
    let len = table_file.metadata().expect("len").len();
    overwrite(&table_file, len / 3);

    let err = DiskStore::open(&dir, Default::default())
        .err()
        .expect("must fail");
    let text = damaged_message(err);
    assert!(text.contains("`queue`"), "{text}");
    assert!(text.contains(&queue_dir.display().to_string()), "{text}");

    let report = check(&dir);
    assert!(!report.is_healthy());
    assert!(
        report.problems.iter().any(|p| p.table == "queue"),
        "{report}"
    );

    let damaged_bytes = std::fs::read(&table_file).expect("read");
    let done = repair(&dir).expect("repair");
    eprintln!("{done}");
    // The original is kept exactly as found.
    let aside = done
        .moved_to
        .join(table_file.strip_prefix(&dir).expect("inside"));
    assert_eq!(std::fs::read(&aside).expect("aside copy"), damaged_bytes);
    let store = DiskStore::open(&dir, Default::default()).expect("repaired store opens");
    let r = store.load(now()).expect("load");
    assert_eq!(r.sessions.len(), 1);
    assert_eq!(r.retained.len() as u64, MESSAGES, "{done}");
    let kept = store.read_queue("c", 0, usize::MAX).expect("read");
    assert!(kept.len() as u64 <= MESSAGES);
    assert_eq!(kept.len() as u64, r.sessions[0].queued);
    store.close();
    assert!(check(&dir).is_healthy());
}

#[test]
fn an_unreadable_record_is_named_by_table_and_key() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("data");
    {
        let store = DiskStore::open(&dir, Default::default()).expect("open");
        let ops = vec![
            put_session("c"),
            enqueue(&store, message("t", b"a", None), &[("c", 1)]),
            enqueue(&store, message("t", b"b", None), &[("c", 2)]),
        ];
        store.commit_blocking(ops).expect("commit");
        // Garbage where a session record belongs (written around the store's checks).
        let garbage = Write::put(Table::Sessions, b"broken".to_vec(), vec![1, 0xff, 0xff]);
        store.engine().write(&[garbage]).expect("raw write");
        store.close();
    }
    let store = DiskStore::open(&dir, Default::default()).expect("open");
    let text = damaged_message(store.load(now()).expect_err("load must fail"));
    assert!(
        text.contains("`sessions`") && text.contains("broken"),
        "{text}"
    );
    store.close();

    let report = check(&dir);
    assert_eq!(report.problem_count, 1, "{report}");
    assert_eq!(
        (report.problems[0].table, report.problems[0].key.as_str()),
        ("sessions", "broken")
    );

    let done = repair(&dir).expect("repair");
    assert_eq!(done.left["sessions"], 1, "{done}");
    let store = DiskStore::open(&dir, Default::default()).expect("open");
    let r = store.load(now()).expect("load");
    assert_eq!(r.sessions.len(), 1);
    assert_eq!(store.read_queue("c", 0, 10).expect("read").len(), 2);
}

#[test]
fn a_store_of_another_format_is_refused() {
    let tmp = tempfile::tempdir().expect("dir");
    {
        let store = DiskStore::open(tmp.path(), Default::default()).expect("open");
        let w = Write::put(Table::Meta, b"format".to_vec(), b"midge-store/99".to_vec());
        store.engine().write(&[w]).expect("raw write");
        store.close();
    }
    let err = DiskStore::open(tmp.path(), Default::default())
        .err()
        .expect("refused");
    assert!(damaged_message(err).contains("midge-store/99"));
}

#[test]
fn check_of_a_healthy_store_counts_records() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("data");
    filled(&dir, false);
    let report = check(&dir);
    assert!(report.is_healthy(), "{report}");
    assert_eq!(report.records["queue"], MESSAGES);
    assert_eq!(report.records["messages"], MESSAGES);
    assert_eq!(report.records["retained"], MESSAGES);
    assert!(report.to_string().contains("no damage found"));
}

#[test]
fn check_and_repair_refuse_a_store_in_use() {
    let tmp = tempfile::tempdir().expect("dir");
    let _open = DiskStore::open(tmp.path(), Default::default()).expect("open");
    let report = check(tmp.path());
    assert!(report.to_string().contains("stop the broker"), "{report}");
    assert!(matches!(repair(tmp.path()), Err(StoreError::Locked { .. })));
}

/// fjall makes an empty table when a table's directory is gone; the store must not start
/// with that table's records silently lost: opening names the table, `check` reports it,
/// and `repair` keeps the other tables and says which one was lost.
#[test]
fn a_missing_table_directory_is_refused_not_recreated_empty() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("data");
    filled(&dir, true);
    let retained_dir = {
        let store = DiskStore::open(&dir, Default::default()).expect("open");
        store.engine().table_dir(Table::Retained)
    };
    // The list of table directories is relative, so a store that is moved still checks.
    let listed = std::fs::read_to_string(dir.join("midge-tables")).expect("table list");
    assert!(
        listed.lines().all(|l| !l.contains(&*dir.to_string_lossy())),
        "{listed}"
    );
    std::fs::remove_dir_all(&retained_dir).expect("remove the retained table");

    let err = DiskStore::open(&dir, Default::default())
        .err()
        .expect("must fail");
    let text = damaged_message(err);
    assert!(text.contains("`retained`"), "{text}");
    assert!(text.contains(&retained_dir.display().to_string()), "{text}");
    assert!(!retained_dir.exists(), "opening must not recreate it");

    let report = check(&dir);
    assert!(!report.is_healthy(), "{report}");
    assert!(!retained_dir.exists(), "check must not recreate it");

    let done = repair(&dir).expect("repair");
    assert!(
        done.notes.iter().any(|n| n.contains("`retained`")),
        "{done}"
    );
    let store = DiskStore::open(&dir, Default::default()).expect("repaired store opens");
    let r = store.load(now()).expect("load");
    assert_eq!(r.sessions.len(), 1);
    assert_eq!(r.sessions[0].queued, MESSAGES, "{done}");
    assert!(r.retained.is_empty());
    store.close();
    assert!(check(&dir).is_healthy());
}

/// A store that lost fjall's `version` file is named as such, not "File exists".
#[test]
fn a_store_without_its_version_file_is_refused_with_that_reason() {
    let tmp = tempfile::tempdir().expect("dir");
    let dir = tmp.path().join("data");
    filled(&dir, false);
    std::fs::remove_file(dir.join("version")).expect("remove version");
    let text = damaged_message(
        DiskStore::open(&dir, Default::default())
            .err()
            .expect("must fail"),
    );
    assert!(text.contains("`version` is missing"), "{text}");
}

//! Damage: a store whose files are damaged is refused with an error naming the files and
//! what is wrong; `check` reports it; `repair` moves it aside (untouched) and rebuilds a
//! store from what can still be read.

mod common;

use common::*;
use midge_store::engine::{Engine, Write};
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
    assert!(!done.notes.is_empty(), "{done}");
    let store = DiskStore::open(&dir, Default::default()).expect("fresh store opens");
    assert!(store.load(now()).expect("load").sessions.is_empty());
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

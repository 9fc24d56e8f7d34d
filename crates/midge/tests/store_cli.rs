//! `midge store check` and `midge store repair` on the real binary (issue 4: a damaged
//! store never silently loses data and never leaves the broker unable to start without a
//! clear message naming the file and the problem, and a documented way out).
//!
//! Stores are made by a real broker run (a persistent session with queued QoS 1 messages
//! and a retained message, stopped with SIGTERM), then damaged the way the store detects:
//! a garbled block in a table file (checksum), and a record that does not decode.
//! Clients are the binary's own `midge pub` / `midge sub`. Every wait has a deadline and
//! every child is killed when its owner is dropped.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{output_within, Proc, MIDGE};

/// The longest any one command or broker start-up or shutdown may take.
const DEADLINE: Duration = Duration::from_secs(30);
const SESSION: &str = "store-cli-sub";
const QUEUED: [&str; 2] = ["queued-body-one", "queued-body-two"];
const RETAINED: &str = "retained-body";

/// A canonical temporary directory (fjall prints canonical paths in its errors).
fn temp_dir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let path = std::fs::canonicalize(tmp.path()).expect("canonical");
    (tmp, path)
}

/// What a finished `midge` command printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Fails on a panic message in either stream.
    fn no_panic(&self) -> &Run {
        for text in [&self.stdout, &self.stderr] {
            assert!(!text.contains("panicked at"), "{text}");
        }
        self
    }
}

/// Runs `midge ARGS` to completion within `DEADLINE` (killed and failed after it).
fn midge(args: &[&std::ffi::OsStr], cwd: Option<&Path>) -> Run {
    let mut cmd = Command::new(MIDGE);
    cmd.args(args)
        .env("RUST_LOG", "info,fjall=warn,lsm_tree=warn");
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = output_within(cmd, None, DEADLINE);
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    run.no_panic();
    run
}

/// `midge store ACTION DIR`.
fn store(action: &str, dir: &Path) -> Run {
    midge(&["store".as_ref(), action.as_ref(), dir.as_os_str()], None)
}

/// `midge ARGS` with string arguments, which must succeed.
fn client(args: &[&str]) -> Run {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let run = midge(&args, None);
    assert_eq!(run.code, Some(0), "midge {args:?}: {}", run.stderr);
    run
}

/// Each line with its runs of spaces squeezed to one (the reports align columns).
fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn assert_has_line(text: &str, want: &str) {
    assert!(
        lines(text).iter().any(|l| l == want),
        "no line {want:?} in:\n{text}"
    );
}

/// A broker process on a data directory, its standard error read line by line; killed on
/// drop (and its log shown, when a test fails).
struct Broker {
    proc: Proc,
    port: u16,
}

impl Broker {
    /// Port 0: the broker picks free ports and logs them, so runs in parallel never race
    /// for one.
    fn spawn(data: &Path) -> Broker {
        let data = data.to_str().expect("utf-8 path");
        let mut proc = Proc::spawn_with(
            MIDGE,
            &["-p", "0", "--data-dir", data],
            &[("RUST_LOG", "info,fjall=warn,lsm_tree=warn")],
            true,
        );
        proc.name = "broker".to_owned();
        proc.deadline = DEADLINE;
        Broker { proc, port: 0 }
    }

    /// Starts a broker and waits for its "running" line (it listens by then).
    fn start(data: &Path) -> Broker {
        let mut b = Broker::spawn(data);
        let listening = "listening on 127.0.0.1:";
        let line = b.proc.wait_for(listening);
        b.port = line
            .rsplit_once(listening)
            .and_then(|(_, port)| port.trim().parse().ok())
            .expect("the port in the log line");
        b.proc
            .wait_for(&format!("midge {} running", env!("CARGO_PKG_VERSION")));
        b
    }

    /// Waits for the process to end by itself; whether it succeeded, and all it printed.
    fn wait_exit(mut self) -> (bool, String) {
        let code = self.proc.wait_exit();
        (code == Some(0), self.proc.seen.join("\n"))
    }

    /// SIGTERM, then waits for a clean exit.
    fn stop(self) {
        self.proc.signal("-TERM");
        let (success, log) = self.wait_exit();
        assert!(success, "{log}");
        assert!(!log.contains("panicked at"), "{log}");
    }

    fn port(&self) -> String {
        self.port.to_string()
    }

    /// The first retained message under `ret/#`, as "topic payload".
    fn first_retained(&self) -> String {
        let port = self.port();
        let run = client(&[
            "sub",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-t",
            "ret/#",
            "-C",
            "1",
            "-W",
            "10",
            "-v",
        ]);
        run.stdout.trim_end().to_owned()
    }
}

/// Makes a store with a real broker run: a persistent session (client `SESSION`,
/// subscribed to `q/#` at QoS 1) with the two `QUEUED` messages waiting for it, and the
/// retained message `ret/x` = `RETAINED`; stopped with SIGTERM.
fn make_store(data: &Path) {
    let broker = Broker::start(data);
    let port = broker.port();
    let base = ["-h", "127.0.0.1", "-p", &port];
    client(
        &[
            &["sub"][..],
            &base,
            &["-i", SESSION, "-c", "-q", "1", "-t", "q/#", "-E"],
        ]
        .concat(),
    );
    for body in QUEUED {
        client(&[&["pub"][..], &base, &["-q", "1", "-t", "q/a", "-m", body]].concat());
    }
    client(
        &[
            &["pub"][..],
            &base,
            &["-q", "1", "-r", "-t", "ret/x", "-m", RETAINED],
        ]
        .concat(),
    );
    broker.stop();
}

/// A broker on `data` (made by [`make_store`]) delivers the two `QUEUED` messages to
/// `SESSION` and the retained message; then stops cleanly.
fn assert_queued_and_retained_are_delivered(data: &Path) {
    let broker = Broker::start(data);
    let port = broker.port();
    let got = client(&[
        "sub",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "-i",
        SESSION,
        "-c",
        "-q",
        "1",
        "-t",
        "q/#",
        "-C",
        "2",
        "-W",
        "10",
    ]);
    assert_eq!(lines(&got.stdout), QUEUED);
    assert_eq!(broker.first_retained(), format!("ret/x {RETAINED}"));
    broker.stop();
}

/// Starts a broker on a damaged store, which must exit with a failure, without a panic and
/// without listening; returns its log.
fn refused_start_log(data: &Path) -> String {
    let (success, log) = Broker::spawn(data).wait_exit();
    assert!(!success, "{log}");
    assert!(!log.contains("panicked at"), "{log}");
    assert!(
        !log.contains("listening on"),
        "started on a damaged store:\n{log}"
    );
    log
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The directories next to `dir` whose name starts with `dir`'s name and `suffix`.
fn siblings(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let name = dir
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let parent = dir.parent().expect("parent");
    let mut out: Vec<PathBuf> = std::fs::read_dir(parent)
        .expect("read parent")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{name}{suffix}")))
        })
        .collect();
    out.sort();
    out
}

/// Garbles the bytes of the first queued message body inside the table file that holds
/// them (the `messages` table), so that reading its block fails the checksum. Returns the
/// file.
fn garble_message_table(data: &Path) -> PathBuf {
    let needle = QUEUED[0].as_bytes();
    let holders: Vec<(PathBuf, usize)> = files(data)
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "jnl"))
        .filter_map(|p| {
            let bytes = std::fs::read(&p).expect("read");
            let at = bytes.windows(needle.len()).position(|w| w == needle)?;
            Some((p, at))
        })
        .collect();
    let [(file, at)] = &holders[..] else {
        panic!("expected one table file holding the queued body, found {holders:?}")
    };
    let mut bytes = std::fs::read(file).expect("read");
    for b in &mut bytes[*at..*at + needle.len()] {
        *b ^= 0xff;
    }
    std::fs::write(file, bytes).expect("write");
    file.clone()
}

#[test]
fn check_counts_the_records_of_a_healthy_store_made_by_the_broker() {
    let (_tmp, root) = temp_dir();
    let data = root.join("midge-data");
    make_store(&data);

    let run = store("check", &data);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert_has_line(out, &format!("store: {}", data.display()));
    for (table, n) in [
        ("sessions", 1),
        ("subscriptions", 1),
        ("queue", 2),
        ("messages", 2),
        ("inflight", 0),
        ("inbound_qos2", 0),
        ("retained", 1),
        ("wills", 0),
    ] {
        assert_has_line(out, &format!("{table} {n} records"));
    }
    assert_has_line(out, "no damage found");
    assert!(!out.contains("midge store repair"), "{out}");

    // Without DIR, check reads ./midge-data.
    let default = midge(&["store".as_ref(), "check".as_ref()], Some(&root));
    assert_eq!(default.code, Some(0), "{}", default.stdout);
    assert_has_line(&default.stdout, "store: midge-data");
    assert_has_line(&default.stdout, "queue 2 records");

    // Checking changed nothing the broker needs: the queued messages are delivered.
    assert_queued_and_retained_are_delivered(&data);
}

#[test]
fn a_garbled_table_file_is_named_by_check_and_at_start_up_and_repair_keeps_the_rest() {
    let (_tmp, root) = temp_dir();
    let data = root.join("data");
    make_store(&data);
    let file = garble_message_table(&data);
    let table_dir = file
        .parent()
        .and_then(Path::parent)
        .expect("table directory");
    let damaged_bytes = std::fs::read(&file).expect("read");

    // check: non-zero, names the table, its files and the problem, and the way out.
    let run = store("check", &data);
    assert_eq!(run.code, Some(1), "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    assert_has_line(
        out,
        &format!(
            "messages: reading stopped after 0 records: table `messages` (files in {}): \
             a block's checksum does not match",
            table_dir.display()
        ),
    );
    assert!(
        out.contains("refers to message 1 which is missing or unreadable"),
        "{out}"
    );
    assert_has_line(out, "3 problems:");
    assert!(
        out.contains("`midge store repair` moves the store aside"),
        "{out}"
    );

    // The broker refuses to start, saying where and what, and pointing to check/repair.
    let log = refused_start_log(&data);
    for want in [
        format!("the store in {} is damaged", data.display()),
        format!("table `messages` (files in {})", table_dir.display()),
        "a block's checksum does not match".to_owned(),
        "Run `midge store check`".to_owned(),
        "`midge store repair` moves the damaged files aside".to_owned(),
    ] {
        assert!(log.contains(&want), "no {want:?} in:\n{log}");
    }
    assert_eq!(std::fs::read(&file).expect("read"), damaged_bytes);

    // repair: moves the store aside untouched, keeps every readable, consistent record.
    let run = store("repair", &data);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    let out = &run.stdout;
    let aside = siblings(&data, ".damaged-");
    let [aside] = &aside[..] else {
        panic!("expected one moved-aside store, found {aside:?}\n{out}")
    };
    let stamp = aside
        .to_string_lossy()
        .rsplit('-')
        .next()
        .map(str::to_owned);
    assert!(
        stamp.is_some_and(|s| s.parse::<u64>().is_ok()),
        "{}",
        aside.display()
    );
    assert_has_line(out, &format!("damaged store moved to {}", aside.display()));
    assert_has_line(out, &format!("fresh store in {}:", data.display()));
    for (table, kept, left) in [
        ("sessions", 1, 0),
        ("subscriptions", 1, 0),
        ("queue", 0, 2),
        ("retained", 1, 0),
    ] {
        assert_has_line(out, &format!("{table} kept {kept}, left behind {left}"));
    }
    let aside_table = aside.join(table_dir.strip_prefix(&data).expect("inside"));
    assert_has_line(
        out,
        &format!(
            "note: table `messages` could not be read to its end: table `messages` \
             (files in {}): a block's checksum does not match",
            aside_table.display()
        ),
    );
    let aside_file = aside.join(file.strip_prefix(&data).expect("inside"));
    assert_eq!(std::fs::read(aside_file).expect("kept"), damaged_bytes);
    assert_eq!(siblings(&data, ".salvage"), Vec::<PathBuf>::new());

    let run = store("check", &data);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    for (table, n) in [
        ("sessions", 1),
        ("subscriptions", 1),
        ("queue", 0),
        ("messages", 0),
        ("retained", 1),
    ] {
        assert_has_line(&run.stdout, &format!("{table} {n} records"));
    }
    assert_has_line(&run.stdout, "no damage found");

    let broker = Broker::start(&data);
    assert_eq!(broker.first_retained(), format!("ret/x {RETAINED}"));
    broker.stop();
}

#[test]
fn an_undecodable_record_is_named_by_table_and_key_and_repair_drops_only_it() {
    use midge_store::engine::{Engine, Write};
    let (_tmp, root) = temp_dir();
    let data = root.join("data");
    make_store(&data);
    {
        // Garbage where a retained message belongs, written around the store's checks.
        let store = midge_store::DiskStore::open(&data, Default::default()).expect("open");
        let garbage = Write::put(
            midge_store::Table::Retained,
            b"ret/garbled".to_vec(),
            vec![1, 0xff, 0xff],
        );
        store.engine().write(&[garbage]).expect("raw write");
        store.close();
    }

    let run = store("check", &data);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert_has_line(&run.stdout, "1 problems:");
    assert!(
        lines(&run.stdout)
            .iter()
            .any(|l| l.starts_with("retained \"ret/garbled\": ")),
        "{}",
        run.stdout
    );

    let log = refused_start_log(&data);
    for want in [
        "table `retained`, key \"ret/garbled\"",
        "Run `midge store check`",
        "`midge store repair`",
    ] {
        assert!(log.contains(want), "no {want:?} in:\n{log}");
    }

    let run = store("repair", &data);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert_has_line(&run.stdout, "retained kept 1, left behind 1");
    assert_has_line(&run.stdout, "queue kept 2, left behind 0");
    assert_has_line(&run.stdout, "messages kept 2, left behind 0");

    let run = store("check", &data);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_has_line(&run.stdout, "retained 1 records");

    assert_queued_and_retained_are_delivered(&data);
}

#[test]
fn check_and_repair_of_a_missing_or_empty_directory_say_there_is_no_store_and_create_nothing() {
    let (_tmp, root) = temp_dir();

    let missing = root.join("missing");
    let run = store("check", &missing);
    assert_eq!(run.code, Some(1));
    assert_has_line(
        &run.stdout,
        "engine: no store: the directory does not exist",
    );
    assert!(!run.stdout.contains("midge store repair"), "{}", run.stdout);
    let run = store("repair", &missing);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stderr
            .contains("no store: the directory does not exist"),
        "{}",
        run.stderr
    );
    assert!(!missing.exists());
    assert_eq!(siblings(&missing, ".damaged-"), Vec::<PathBuf>::new());

    let empty = root.join("empty");
    std::fs::create_dir(&empty).expect("dir");
    let run = store("check", &empty);
    assert_eq!(run.code, Some(1));
    assert_has_line(&run.stdout, "engine: no store: the directory is empty");
    assert!(!run.stdout.contains("midge store repair"), "{}", run.stdout);
    assert_eq!(files(&empty), Vec::<PathBuf>::new(), "check wrote into it");

    let other = root.join("other");
    std::fs::create_dir(&other).expect("dir");
    std::fs::write(other.join("notes.txt"), "not a store").expect("write");
    let run = store("check", &other);
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout
            .contains("no store: `version` is missing (not a Midge data directory"),
        "{}",
        run.stdout
    );
    assert_eq!(files(&other), vec![other.join("notes.txt")]);

    for args in [&["store"][..], &["store", "fix"]] {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        let run = midge(&args, Some(&root));
        assert_eq!(run.code, Some(2), "{args:?}");
        assert!(
            run.stderr
                .contains("usage: midge store check|repair [DATA_DIR]"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn check_and_repair_refuse_a_store_a_running_broker_holds_and_leave_it_working() {
    let (_tmp, root) = temp_dir();
    let data = root.join("data");
    make_store(&data);
    let broker = Broker::start(&data);

    let run = store("check", &data);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let pid = broker.proc.child.id();
    assert_has_line(
        &run.stdout,
        &format!(
            "engine: the store is in use by another process (pid {pid}): stop the broker \
             before checking its store"
        ),
    );
    assert!(!run.stdout.contains("midge store repair"), "{}", run.stdout);

    let run = store("repair", &data);
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stderr.contains(&format!(
            "the store in {} is in use by another process (pid {pid}; stop the broker before \
             repairing its store)",
            data.display()
        )),
        "{}",
        run.stderr
    );
    // Not moved aside. (The file list is not compared: the running broker's storage
    // engine may flush or compact meanwhile.)
    assert_eq!(siblings(&data, ".damaged-"), Vec::<PathBuf>::new());
    assert!(data.join("version").is_file());

    // The broker still serves its store, and leaves it healthy.
    assert_eq!(broker.first_retained(), format!("ret/x {RETAINED}"));
    broker.stop();
    let run = store("check", &data);
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert_has_line(&run.stdout, "no damage found");
    for (table, n) in [
        ("sessions", 1),
        ("queue", 2),
        ("messages", 2),
        ("retained", 1),
    ] {
        assert_has_line(&run.stdout, &format!("{table} {n} records"));
    }
}

//! `midge passwd` against Debian's `mosquitto_passwd` and `mosquitto`: same file shape, same
//! messages and exit codes, and files that Mosquitto's broker accepts.
//!
//! The subcommand's source is compiled into this test directly, so it is tested whether or not
//! the binary routes `passwd` to it yet. The Mosquitto tools must be installed (`.ci/run`
//! installs them); these tests fail, never skip, when they are missing.

mod support;

#[path = "../src/tools/passwd.rs"]
#[allow(dead_code)]
mod passwd;

use midge_broker::auth::{HashKind, PasswordFile, PasswordHash};
use passwd::PasswordInput;
use std::ffi::OsString;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{free_port, kill};

struct Outcome {
    code: u8,
    stdout: String,
    stderr: String,
}

/// Runs `midge passwd ARGS` in process, with `stdin` as piped (non-terminal) input.
fn midge_passwd_with_input(args: &[&str], stdin: &str) -> Outcome {
    let mut argv: Vec<OsString> = vec!["passwd".into()];
    argv.extend(args.iter().map(OsString::from));
    let mut input = PasswordInput::Lines(Box::new(stdin.as_bytes()));
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = passwd::run(&argv, &mut input, &mut out, &mut err);
    Outcome {
        code,
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    }
}

fn midge_passwd(args: &[&str]) -> Outcome {
    midge_passwd_with_input(args, "")
}

fn mosquitto_passwd(args: &[&str]) -> Outcome {
    let output = Command::new("mosquitto_passwd")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("mosquitto_passwd must be installed (apt-get install mosquitto)");
    Outcome {
        code: output
            .status
            .code()
            .and_then(|c| u8::try_from(c).ok())
            .unwrap_or(255),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn ok(outcome: Outcome) -> Outcome {
    assert_eq!(outcome.code, 0, "stderr: {}", outcome.stderr);
    outcome
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// The `$`-separated fields of each `user:hash` line.
fn shapes(content: &str) -> Vec<(String, Vec<usize>, String)> {
    content
        .lines()
        .map(|line| {
            let (user, hash) = line.split_once(':').expect("user:hash");
            let fields: Vec<&str> = hash.split('$').collect();
            let lengths = fields.iter().map(|f| f.len()).collect();
            // Type and iterations are compared by value, salt and hash by length.
            (
                user.to_owned(),
                lengths,
                fields[..fields.len() - 2].join("$"),
            )
        })
        .collect()
}

#[test]
fn pbkdf2_file_has_mosquitto_passwd_shape_and_verifies() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ours = dir.path().join("ours");
    let theirs = dir.path().join("theirs");
    for (file, run) in [
        (&ours, midge_passwd as fn(&[&str]) -> Outcome),
        (&theirs, mosquitto_passwd),
    ] {
        let f = path_str(file);
        ok(run(&[
            "-H",
            "sha512-pbkdf2",
            "-c",
            "-b",
            f,
            "alice",
            "secret",
        ]));
        ok(run(&["-H", "sha512-pbkdf2", "-b", f, "bob", "p w:ü"]));
        ok(run(&["-H", "sha512", "-b", f, "carol", "legacy"]));
    }
    let ours_text = std::fs::read_to_string(&ours).expect("read");
    let theirs_text = std::fs::read_to_string(&theirs).expect("read");
    assert_eq!(shapes(&ours_text), shapes(&theirs_text));
    assert!(ours_text.starts_with("alice:$7$101$"), "{ours_text}");

    // Each tool's file verifies with our verifier, with each tool's hashes.
    for file in [&ours, &theirs] {
        let pw = PasswordFile::load(file).expect("load");
        assert!(pw.verify("alice", b"secret"));
        assert!(pw.verify("bob", "p w:ü".as_bytes()));
        assert!(pw.verify("carol", b"legacy"));
        assert!(!pw.verify("alice", b"legacy"));
    }
}

#[test]
fn default_hash_is_argon2id() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pw");
    ok(midge_passwd(&[
        "-c",
        "-b",
        path_str(&file),
        "alice",
        "secret",
    ]));
    let pw = PasswordFile::load(&file).expect("load");
    assert_eq!(
        pw.get("alice").map(PasswordHash::kind),
        Some(HashKind::Argon2id)
    );
    assert!(pw.verify("alice", b"secret"));
    assert!(!pw.verify("alice", b"Secret"));
}

#[cfg(unix)]
#[test]
fn created_file_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pw");
    ok(midge_passwd(&[
        "-H",
        "sha512",
        "-c",
        "-b",
        path_str(&file),
        "u",
        "p",
    ]));
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn editing_a_mosquitto_passwd_file_keeps_its_lines_and_both_tools_can_edit_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pw");
    let f = path_str(&file);
    ok(mosquitto_passwd(&["-c", "-b", f, "alice", "a"]));
    ok(mosquitto_passwd(&["-b", f, "bob", "b"]));
    let before = std::fs::read_to_string(&file).expect("read");

    // A new user is appended; the existing lines stay byte for byte.
    ok(midge_passwd(&[
        "-H",
        "sha512-pbkdf2",
        "-b",
        f,
        "carol",
        "c",
    ]));
    let after = std::fs::read_to_string(&file).expect("read");
    assert!(after.starts_with(&before), "{after}");
    assert!(after[before.len()..].starts_with("carol:$7$101$"));

    // Changing a password replaces that line where it is.
    ok(midge_passwd(&[
        "-H",
        "sha512-pbkdf2",
        "-b",
        f,
        "alice",
        "new",
    ]));
    let text = std::fs::read_to_string(&file).expect("read");
    let users: Vec<&str> = text
        .lines()
        .map(|l| &l[..l.find(':').unwrap_or(0)])
        .collect();
    assert_eq!(users, ["alice", "bob", "carol"]);

    // mosquitto_passwd edits our output in turn.
    ok(mosquitto_passwd(&["-b", f, "dave", "d"]));
    ok(mosquitto_passwd(&["-D", f, "bob"]));
    let pw = PasswordFile::load(&file).expect("load");
    assert!(pw.verify("alice", b"new"));
    assert!(!pw.verify("alice", b"a"));
    assert!(!pw.contains("bob"));
    assert!(pw.verify("carol", b"c"));
    assert!(pw.verify("dave", b"d"));
}

#[test]
fn delete_removes_the_user_and_reports_a_missing_one_like_mosquitto_passwd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pw");
    let f = path_str(&file);
    std::fs::write(&file, "# team\nalice:$6$AAAA$AAAA\n").expect("write");
    ok(midge_passwd(&["-b", f, "bob", "b"]));
    ok(midge_passwd(&["-D", f, "alice"]));
    let text = std::fs::read_to_string(&file).expect("read");
    assert!(text.starts_with("# team\nbob:$argon2id$"), "{text}");

    // Comment lines are kept (mosquitto_passwd would call this file corrupt), so compare
    // the missing-user message on a file both tools read.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, "bob:$6$AAAA$AAAA\n").expect("write");
    let ours = midge_passwd(&["-D", path_str(&plain), "nobody"]);
    let theirs = mosquitto_passwd(&["-D", path_str(&plain), "nobody"]);
    std::fs::remove_file(&plain).expect("remove");
    assert_eq!(
        (ours.code, ours.stderr.as_str()),
        (1, theirs.stderr.as_str())
    );
    assert_eq!(
        ours.stderr,
        "Warning: User nobody not found in password file.\n"
    );
    // No backup file is left behind.
    let entries = std::fs::read_dir(dir.path()).expect("list").count();
    assert_eq!(entries, 1);
}

#[test]
fn upgrade_hashes_plain_text_entries_and_leaves_hashed_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pw");
    let f = path_str(&file);
    ok(mosquitto_passwd(&["-c", "-b", f, "hashed", "h"]));
    let hashed_line = std::fs::read_to_string(&file).expect("read");
    let mut text = hashed_line.clone();
    text.push_str("# plain text below\nplain:open sesame\nother : second\n");
    std::fs::write(&file, text).expect("write");

    ok(midge_passwd(&["-H", "sha512-pbkdf2", "-U", f]));
    let upgraded = std::fs::read_to_string(&file).expect("read");
    assert!(upgraded.starts_with(&hashed_line), "{upgraded}");
    let pw = PasswordFile::load(&file).expect("upgraded file loads");
    assert!(pw.verify("hashed", b"h"));
    assert!(pw.verify("plain", b"open sesame"));
    assert!(pw.verify("other", b"second"));
}

#[test]
fn scram_credentials_file_is_written_edited_and_read_back_by_the_broker() {
    use midge_broker::auth::scram::{ScramCredentialSource, ScramCredentials, ScramFile};
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("scram");
    let f = path_str(&file);
    ok(midge_passwd(&[
        "-H",
        "scram-sha-256",
        "-c",
        "-b",
        f,
        "alice",
        "wonderland",
    ]));
    ok(midge_passwd(&[
        "-H",
        "scram-sha-256",
        "-I",
        "5000",
        "-b",
        f,
        "bob",
        "builder",
    ]));
    ok(midge_passwd(&[
        "-H",
        "scram-sha-256",
        "-b",
        f,
        "alice",
        "looking-glass",
    ]));
    let text = std::fs::read_to_string(&file).expect("read");
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.starts_with("alice:SCRAM-SHA-256$4096:"), "{text}");
    assert!(text.contains("\nbob:SCRAM-SHA-256$5000:"), "{text}");

    let scram = ScramFile::load(&file).expect("the broker loads the file");
    for (user, password) in [("alice", "looking-glass"), ("bob", "builder")] {
        let stored = scram.lookup(user).expect("user present");
        let derived =
            ScramCredentials::derive(password.as_bytes(), &stored.salt, stored.iterations);
        assert!(derived == stored, "{user}'s keys match the password");
    }
    ok(midge_passwd(&["-H", "scram-sha-256", "-D", f, "bob"]));
    assert!(ScramFile::load(&file)
        .expect("loads")
        .lookup("bob")
        .is_none());
    // Fewer iterations than RFC 7677's minimum are refused.
    let low = midge_passwd(&["-H", "scram-sha-256", "-I", "100", "-b", f, "carol", "x"]);
    assert_eq!(low.code, 1);
    assert!(low.stderr.contains("4096"), "{}", low.stderr);
}

#[test]
fn interactive_password_is_read_from_stdin_when_it_is_not_a_terminal() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pw");
    let f = path_str(&file);
    ok(midge_passwd_with_input(
        &["-c", f, "alice"],
        "typed\ntyped\n",
    ));
    ok(midge_passwd_with_input(
        &["-H", "sha512", f, "bob"],
        "piped once\n",
    ));
    let pw = PasswordFile::load(&file).expect("load");
    assert!(pw.verify("alice", b"typed"));
    assert!(pw.verify("bob", b"piped once"));

    let mismatch = midge_passwd_with_input(&[f, "alice"], "one\ntwo\n");
    let theirs = Command::new("mosquitto_passwd")
        .args([f, "alice"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(b"one\ntwo\n")?;
            child.wait_with_output()
        })
        .expect("mosquitto_passwd must be installed");
    assert_eq!(Some(i32::from(mismatch.code)), theirs.status.code());
    assert_eq!(mismatch.stderr, String::from_utf8_lossy(&theirs.stderr));

    let empty = midge_passwd_with_input(&[f, "alice"], "\n");
    assert_eq!(
        (empty.code, empty.stderr.as_str()),
        (1, "Error: Empty password.\n")
    );
    // Nothing changed after the failures.
    assert!(PasswordFile::load(&file)
        .expect("load")
        .verify("alice", b"typed"));
}

#[test]
fn errors_match_mosquitto_passwd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("no/such/dir/pw");
    let m = path_str(&missing);
    let existing = dir.path().join("pw");
    let e = path_str(&existing);
    std::fs::write(&existing, "alice:$6$AAAA$AAAA\nnot a valid line\n").expect("write");
    let cases: Vec<Vec<&str>> = vec![
        vec!["-c", "-D", e, "u"],
        vec!["-c", "-U", e],
        vec!["-D", "-U", e],
        vec!["-b", "-D", e, "u"],
        vec!["-H", "md5", e, "u"],
        vec!["-H"],
        vec!["-I", "0", "-b", e, "u", "p"],
        vec!["-c", "-b", e, "u"],
        vec!["-c", e],
        vec!["-D", e],
        vec!["-U"],
        vec!["-b", e, "a:b", "p"],
        vec!["-b", e, "tab\tuser", "p"],
        vec!["-b", m, "u", "p"],
        vec!["-D", m, "u"],
        vec!["-c", "-b", m, "u", "p"],
    ];
    for args in cases {
        let ours = midge_passwd(&args);
        let theirs = mosquitto_passwd(&args);
        assert_eq!(
            (ours.code, ours.stderr.as_str()),
            (theirs.code, theirs.stderr.as_str()),
            "midge passwd {args:?}"
        );
    }
    // A corrupt line: same message, but mosquitto_passwd 2.0.11 then exits 0 having dropped
    // every line after the corrupt one; midge passwd fails and leaves the file as it was.
    let before = std::fs::read_to_string(&existing).expect("read");
    let ours = midge_passwd(&["-b", e, "bob", "p"]);
    assert_eq!(
        (ours.code, ours.stderr.as_str()),
        (1, "Error: Corrupt password file at line 2.\n")
    );
    assert_eq!(std::fs::read_to_string(&existing).expect("read"), before);

    // Wrong operand counts print the usage on stdout and fail.
    for args in [vec![], vec![e], vec![e, "u", "p"], vec!["-b", e, "u"]] {
        let ours = midge_passwd(&args);
        let theirs = mosquitto_passwd(&args);
        assert_eq!(ours.code, theirs.code, "{args:?}");
        assert!(ours.stdout.contains("Usage: midge passwd"), "{args:?}");
    }
}

/// A real Mosquitto broker reading a password file written by `midge passwd`, with
/// `mosquitto_pub -u/-P` logging in.
#[test]
fn mosquitto_broker_accepts_a_file_written_by_midge_passwd() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("pw");
    let f = path_str(&file);
    ok(midge_passwd(&[
        "-H",
        "sha512-pbkdf2",
        "-c",
        "-b",
        f,
        "alice",
        "s3cret",
    ]));
    ok(midge_passwd(&["-H", "sha512", "-b", f, "bob", "legacy pw"]));
    ok(midge_passwd(&[
        "-H",
        "sha512-pbkdf2",
        "-I",
        "2000",
        "-b",
        f,
        "carol",
        "c",
    ]));

    let broker = Mosquitto::start(dir.path(), &format!("password_file {f}"));
    let publish = |user: &str, password: &str| {
        Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &broker.addr.port().to_string()])
            .args(["-u", user, "-P", password, "-t", "t", "-m", "m", "-q", "1"])
            .output()
            .expect("mosquitto_pub must be installed (apt-get install mosquitto-clients)")
    };
    for (user, password) in [("alice", "s3cret"), ("bob", "legacy pw"), ("carol", "c")] {
        let out = publish(user, password);
        assert!(
            out.status.success(),
            "{user}: {} / {}",
            String::from_utf8_lossy(&out.stderr),
            broker.log_text()
        );
    }
    let refused = publish("alice", "wrong");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("not authorised"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// A real Mosquitto broker on a free loopback port, killed on drop.
struct Mosquitto {
    child: Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Mosquitto {
    fn start(dir: &Path, settings: &str) -> Mosquitto {
        let port = free_port();
        let conf = dir.join("mosquitto.conf");
        // `user root` keeps Mosquitto from switching to the `mosquitto` user, which could not
        // read the owner-only password file.
        std::fs::write(
            &conf,
            format!("listener {port} 127.0.0.1\nuser root\n{settings}\n"),
        )
        .expect("write mosquitto.conf");
        let log = dir.join("mosquitto.log");
        let log_file = std::fs::File::create(&log).expect("log file");
        let binary = ["/usr/sbin/mosquitto", "mosquitto"]
            .into_iter()
            .find(|b| Path::new(b).exists())
            .unwrap_or("mosquitto");
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .stdout(log_file.try_clone().expect("log"))
            .stderr(log_file)
            .spawn()
            .expect("mosquitto must be installed (apt-get install mosquitto)");
        let mut broker = Mosquitto {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(broker.addr).is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!("mosquitto exited ({status}): {}", broker.log_text());
            }
            assert!(Instant::now() < deadline, "mosquitto did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        broker
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

//! Helpers shared by the integration tests of the `midge` binary: temporary directories,
//! free ports and waiting for one to listen, child processes read line by line and killed
//! on drop, commands run to completion within a deadline, and TLS files.
//!
//! Every wait here has a deadline, and every child process is killed when its owner is
//! dropped, so a failing test cannot hang the run.

// Each test file uses a part of these helpers.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const MIDGE: &str = env!("CARGO_BIN_EXE_midge");
/// The longest a test waits for one event: a line, a port, an exit.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fresh directory `midge-<name>-<pid>` under the system temp dir, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("midge-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("dir");
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Polls until `127.0.0.1:port` accepts a connection (a broker is up), within [`WAIT`].
pub fn wait_for_port(port: u16) {
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "broker on port {port} never accepted"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`wait_for_port`] for async tests: polls until `addr` accepts a connection, within
/// [`WAIT`].
pub async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "midge did not listen on {addr}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `kill SIG PID`, which must succeed.
pub fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {sig}");
}

/// Kills a child process and reaps it, ignoring a process already gone.
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Output bytes as text, with invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `cmd` to completion with `stdin` (or none) and its output captured; killed, and the
/// test failed, if it takes longer than `deadline`.
pub fn output_within(mut cmd: Command, stdin: Option<&[u8]>, deadline: Duration) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(data).expect("stdin");
    }
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            // Not yet reaped, so the pid is still this child's.
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not finish within {deadline:?}");
        }
    }
}

/// `program ARGS` to completion within [`WAIT`], without input.
pub fn run(program: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    output_within(cmd, None, WAIT)
}

/// The lines of `stream`, read by a thread; the channel closes at the end of the stream.
pub fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// A child process whose output lines arrive on a channel; killed when dropped (and what
/// it printed shown, when a test fails).
pub struct Proc {
    pub name: String,
    pub child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for failure messages.
    pub seen: Vec<String>,
    /// How long each wait may take; [`WAIT`] unless set.
    pub deadline: Duration,
}

impl Proc {
    /// Starts `program`, reading its standard output as lines (standard error discarded).
    pub fn spawn(program: &str, args: &[&str]) -> Proc {
        Proc::spawn_with(program, args, &[], false)
    }

    /// Starts `program` with `env` added; `stderr` chooses which stream is read as lines
    /// (the other is discarded).
    pub fn spawn_with(program: &str, args: &[&str], env: &[(&str, &str)], stderr: bool) -> Proc {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if stderr {
            cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        } else {
            cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stream: Box<dyn Read + Send> = match (child.stdout.take(), child.stderr.take()) {
            (Some(out), _) => Box::new(out),
            (None, Some(err)) => Box::new(err),
            (None, None) => unreachable!("one stream is piped"),
        };
        Proc {
            name: program.to_owned(),
            child,
            lines: lines_of(stream),
            seen: Vec::new(),
            deadline: WAIT,
        }
    }

    /// Reads lines until one matches (within the deadline); returns it. Fails if the
    /// process closes its output (exits) first.
    pub fn wait_for_line(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + self.deadline;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{}: no line {what} within {:?}; output:\n{}",
                    self.name,
                    self.deadline,
                    self.seen.join("\n")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "{} exited ({:?}) before printing a line {what}; output:\n{}",
                    self.name,
                    self.child.try_wait(),
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Reads lines until one contains `needle` (within the deadline); returns it. Fails if
    /// the process closes its output (exits) first.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.wait_for_line(&format!("containing {needle:?}"), |l| l.contains(needle))
    }

    /// Waits (within the deadline) for the process to close its output and exit; its exit
    /// code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + self.deadline;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("{} did not exit within {:?}", self.name, self.deadline)
                }
            }
        }
        // Output closed: the process has exited or is exiting.
        self.child.wait().expect("wait").code()
    }

    pub fn signal(&self, sig: &str) {
        signal(&self.child, sig);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        kill(&mut self.child);
        if std::thread::panicking() {
            eprintln!("--- {} output ---\n{}", self.name, self.seen.join("\n"));
        }
    }
}

/// mosquitto_sub with its stdout line-buffered (libc buffers a pipe fully), so that its
/// `-d` "Subscribed" line arrives when it is printed.
pub fn mosquitto_sub(args: &[&str]) -> Proc {
    let mut all = vec!["-oL", "mosquitto_sub"];
    all.extend_from_slice(args);
    Proc::spawn("stdbuf", &all)
}

/// A CA and a server certificate for localhost / 127.0.0.1 in `dir`: `ca.pem`,
/// `server.pem`, `server.key`; returns the CA file's path.
pub fn write_tls_files(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "midge test CA");
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let key = KeyPair::generate().expect("key");
    let mut server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    server
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = server
        .signed_by(&key, &Issuer::from_params(&ca, &ca_key))
        .expect("signed");
    std::fs::write(dir.join("ca.pem"), ca_pem).expect("write");
    std::fs::write(dir.join("server.pem"), cert.pem()).expect("write");
    std::fs::write(dir.join("server.key"), key.serialize_pem()).expect("write");
    dir.join("ca.pem").to_str().expect("utf-8").to_string()
}

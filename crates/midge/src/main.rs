//! The `midge` binary: the broker and its subcommands.

mod config;
mod tools;

/// jemalloc, not glibc's malloc: freed memory goes back to the operating system, and the
/// many small allocations of the store writer and the routing path cost less
/// (docs/design/allocator.md has the measurements).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts: its background thread returns freed pages to
/// the operating system over 5 s (its default is 10 s), so the memory of a burst (the tasks
/// of connections that have since parked, a backlog drained) does not stay in the broker's
/// RSS while it is idle. `MALLOC_CONF`-style overrides: the `_RJEM_MALLOC_CONF` variable.
/// See docs/design/allocator.md.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: Option<&'static u8> =
    Some(&b"background_thread:true,dirty_decay_ms:5000\0"[0]);

use anyhow::Context;
use clap::Parser;
use midge_broker::{Broker, Config, ListenerConfig};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Midge: an MQTT 3.1, 3.1.1 and 5.0 broker.
///
/// With no arguments, listens on 127.0.0.1:1883 and [::1]:1883 and allows anonymous
/// clients (local only, as Mosquitto 2 does).
#[derive(Debug, Parser)]
#[command(name = "midge", version, about, long_about = None)]
struct Cli {
    /// Configuration file: Midge's TOML or a Mosquitto `mosquitto.conf` (detected by
    /// content). With a file that defines listeners, anonymous access must be
    /// allowed explicitly (`allow_anonymous true`), as in Mosquitto 2.
    #[arg(short = 'c', long = "config-file", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Listen on this port on 127.0.0.1 and ::1 (may be repeated). Without -c, replaces the
    /// default port 1883; with -c, adds to the file's listeners. Port 0 picks a free port.
    #[arg(short = 'p', long = "port", value_name = "PORT")]
    port: Vec<u16>,

    /// Verbose logging (debug level). `RUST_LOG` overrides the level and filters.
    #[arg(short = 'v', long = "verbose")]
    verbose: bool,

    /// Directory of the durable store (sessions, queues, retained messages). Overrides
    /// the configuration; without a configuration file the default is ./midge-data.
    #[arg(long = "data-dir", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Keep all state in memory: nothing survives a restart.
    #[arg(long = "no-persistence", conflicts_with = "data_dir")]
    no_persistence: bool,
}

fn main() -> std::process::ExitCode {
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).and_then(|a| a.to_str()) == Some("store") {
        return store_command(&args[2..]);
    }
    if let Some(name) = args.get(1).and_then(|a| a.to_str()).map(str::to_owned) {
        let sub_args = args.split_off(1);
        if let Some(code) = tools::dispatch(&name, sub_args.clone()) {
            return code;
        }
        args.extend(sub_args);
    }
    let cli = Cli::parse_from(args);
    init_logging(cli.verbose);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `midge store check [DIR]` and `midge store repair [DIR]` (DIR defaults to
/// ./midge-data): report damage in the durable store, or move a damaged store aside
/// (kept as it was) and rebuild a fresh one from everything still readable.
fn store_command(args: &[std::ffi::OsString]) -> std::process::ExitCode {
    let usage = "usage: midge store check|repair [DATA_DIR]";
    let (Some(action), dir) = (args.first().and_then(|a| a.to_str()), args.get(1)) else {
        eprintln!("{usage}");
        return std::process::ExitCode::from(2);
    };
    let dir = dir.map_or_else(|| PathBuf::from("midge-data"), PathBuf::from);
    match action {
        "check" => {
            let report = midge_store::check(&dir);
            print!("{report}");
            if report.is_healthy() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        "repair" => match midge_store::repair(&dir) {
            Ok(report) => {
                print!("{report}");
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("Error: {e}");
                std::process::ExitCode::FAILURE
            }
        },
        _ => {
            eprintln!("{usage}");
            std::process::ExitCode::from(2)
        }
    }
}

fn init_logging(verbose: bool) {
    // The storage engine's own progress lines are kept out unless asked for (RUST_LOG).
    let default = if verbose {
        "debug,fjall=info,lsm_tree=info"
    } else {
        "info,fjall=warn,lsm_tree=warn"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn loopback_listeners(port: u16, allow_anonymous: bool) -> [ListenerConfig; 2] {
    [
        ListenerConfig {
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            max_connections: None,
            allow_anonymous,
            tls: None,
            security: None,
        },
        ListenerConfig {
            bind: SocketAddr::from((Ipv6Addr::LOCALHOST, port)),
            max_connections: None,
            allow_anonymous,
            tls: None,
            security: None,
        },
    ]
}

/// Builds the configuration from the file (if any) and the command line.
fn build_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = match &cli.config {
        Some(path) => {
            let loaded = config::load(path)?;
            for w in &loaded.warnings {
                tracing::warn!("{w}");
            }
            loaded.config
        }
        None => {
            let mut c = Config::default();
            if !cli.port.is_empty() {
                c.listeners.clear();
            }
            c.persistence = Some(midge_broker::Persistence {
                data_dir: PathBuf::from("midge-data"),
                durability: midge_broker::Durability::default(),
            });
            c
        }
    };
    if cli.no_persistence {
        config.persistence = None;
    } else if let Some(dir) = &cli.data_dir {
        let durability = config
            .persistence
            .as_ref()
            .map(|p| p.durability)
            .unwrap_or_default();
        config.persistence = Some(midge_broker::Persistence {
            data_dir: dir.clone(),
            durability,
        });
    }
    let anonymous = cli.config.is_none();
    for &port in &cli.port {
        let mut pair = loopback_listeners(port, anonymous).to_vec();
        // ::1 may be missing (IPv6 disabled); the IPv4 listener is enough then.
        if !ipv6_loopback_available() {
            pair.truncate(1);
        }
        config.listeners.extend(pair);
    }
    if cli.config.is_none() && cli.port.is_empty() && !ipv6_loopback_available() {
        config.listeners.retain(|l| l.bind.is_ipv4());
    }
    Ok(config)
}

fn ipv6_loopback_available() -> bool {
    std::net::TcpListener::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = build_config(&cli)?;
    // Every connection is an open file: take the hard limit, so that the soft one (often
    // 1,024) does not cap the connections below what the system allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!("open files limit: {limit}"),
        Err(e) => tracing::warn!("cannot raise the open files limit: {e}"),
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (watchdog, stopped) = runtime.block_on(async move {
        // Handlers first: a signal that arrives once clients can connect is never the
        // default action (SIGHUP would kill the process).
        let signals = Signals::install();
        let broker = Broker::start(config).await?;
        tracing::info!("midge {} running", env!("CARGO_PKG_VERSION"));
        signals.wait(&broker).await;
        let timeout = broker.inner().config.shutdown_timeout;
        tracing::info!("shutting down (within {timeout:?})");
        let watchdog = Watchdog::arm(timeout);
        // A tenth is kept for what follows (stopping the runtime, exiting), so that a
        // store that does not close in time is reported as such, before the watchdog.
        let stopped = broker.shutdown_within(timeout - timeout / 10).await;
        Ok::<_, anyhow::Error>((watchdog, stopped))
    })?;
    // Tasks still running (a blocking read of the store, a connection that did not
    // close) are left behind, not waited for.
    runtime.shutdown_timeout(watchdog.left());
    drop(watchdog);
    stopped.context("shutdown")
}

/// Ends the process once `shutdown_timeout` has passed since the signal, whatever is
/// still running: a client that does not read, a store whose engine waits for files it
/// cannot write (its background threads may never return). Exiting then is no worse than
/// a crash, which the store recovers from at the next start.
struct Watchdog {
    deadline: std::time::Instant,
    /// Dropped when shutdown has finished: the watchdog thread then ends.
    _done: std::sync::mpsc::Sender<()>,
}

impl Watchdog {
    fn arm(timeout: Duration) -> Watchdog {
        let deadline = std::time::Instant::now() + timeout;
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new()
            .name("midge-shutdown-watchdog".into())
            .spawn(move || {
                if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    finished.recv_timeout(timeout)
                {
                    tracing::error!(
                        "shutdown did not finish within shutdown_timeout ({timeout:?}): \
                         exiting now; the store replays its journal at the next start"
                    );
                    std::process::exit(1);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("no shutdown deadline (cannot start its thread): {e}");
        }
        Watchdog {
            deadline,
            _done: done,
        }
    }

    /// Time left before the deadline.
    fn left(&self) -> Duration {
        self.deadline
            .saturating_duration_since(std::time::Instant::now())
    }
}

/// SIGINT and SIGTERM stop the broker; SIGHUP reloads the security files and TLS
/// certificates meanwhile.
struct Signals {
    #[cfg(unix)]
    unix: Option<[tokio::signal::unix::Signal; 3]>,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let unix = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(int), Ok(hup)) => Some([term, int, hup]),
                _ => None,
            };
            Signals { unix }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    async fn wait(self, broker: &Broker) {
        #[cfg(unix)]
        if let Some([mut term, mut int, mut hup]) = self.unix {
            loop {
                tokio::select! {
                    _ = term.recv() => return,
                    _ = int.recv() => return,
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading security files");
                        broker.reload_security();
                    }
                }
            }
        }
        let _ = broker;
        let _ = tokio::signal::ctrl_c().await;
    }
}

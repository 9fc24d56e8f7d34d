//! `midge bench`: an MQTT load generator in the manner of emqtt-bench, built directly on
//! `midge_proto` and tokio's TCP so that one process holds many connections cheaply.
//!
//! `conn` opens and holds connections, `pub` publishes, `sub` subscribes and measures
//! end-to-end latency from a stamp in the payload, `pubsub` runs both in one process with
//! exact counts (what `bench/compare.sh` uses). See `docs/bench.md`.

mod cli;
mod connection;
mod publisher;
mod run;
mod split;
mod stats;
mod subscriber;

use clap::Parser;
use cli::{Cli, Command};
use std::ffi::OsString;
use std::process::ExitCode;

/// Runs `midge bench` with `args` (starting with "bench").
pub fn main(args: Vec<OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let (json, clients) = match &cli.command {
        Command::Conn(a) => (a.common.json, a.clients),
        Command::Pub(a) => (a.common.json, a.clients),
        Command::Sub(a) => (a.common.json, a.clients),
        Command::Pubsub(a) => (a.common.json, a.pubs + a.subs),
    };
    let fd_limit = raise_fd_limit();
    // `conn` spreads its connections over several processes when one may not open them
    // all (split.rs); the other commands warn (then run several with `--start-index`).
    let split = match &cli.command {
        Command::Conn(a) => split::processes_for(a, fd_limit),
        _ => {
            let clients = u64::from(clients);
            if let Some(limit) = fd_limit.filter(|l| *l < clients + 32) {
                eprintln!(
                    "midge bench: {clients} connections but only {limit} open files per \
                     process; split the load over several processes (see --start-index, --ifaddr)"
                );
            }
            1
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("midge bench: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Conn(a) if split > 1 => split::conn(a, split).await,
            Command::Conn(a) => run::conn(a).await,
            Command::Pub(a) => run::publish(a).await,
            Command::Sub(a) => run::subscribe(a).await,
            Command::Pubsub(a) => run::pubsub(a).await,
        }
    });
    // Connections still closing must not hold the process.
    runtime.shutdown_background();
    match result {
        Ok(summary) => {
            summary.print(json);
            if summary.has_failures() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("midge bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Raises the soft open-files limit to the hard one and returns it.
fn raise_fd_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => Some(limit),
        Err(e) => {
            eprintln!("midge bench: cannot raise the open-files limit: {e}");
            None
        }
    }
}

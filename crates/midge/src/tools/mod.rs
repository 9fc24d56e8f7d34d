//! The `midge` subcommands other than the broker itself: `pub`, `sub`, `rr`, `passwd`,
//! `bench`. Each parses its own flags (Mosquitto's tools use `-h` for host, so they
//! cannot share the broker's clap parser).

mod args;
mod bench;
mod common;
mod format;
pub mod passwd;
mod props;
#[path = "pub.rs"]
mod publish;
mod rr;
mod sub;

use std::ffi::OsString;
use std::process::ExitCode;

/// Runs the subcommand named by `name` with `args` (which start with the subcommand's
/// own name, as `argv` does). Returns `None` when `name` is not a subcommand.
pub fn dispatch(name: &str, args: Vec<OsString>) -> Option<ExitCode> {
    match name {
        "bench" => Some(bench::main(args)),
        "passwd" => Some(passwd::main(args)),
        "pub" => Some(with_utf8_args(args, publish::main)),
        "sub" => Some(with_utf8_args(args, sub::main)),
        "rr" => Some(with_utf8_args(args, rr::main)),
        _ => None,
    }
}

/// Mosquitto's tools reject arguments that are not UTF-8 (topics must be).
fn with_utf8_args(args: Vec<OsString>, run: fn(&[String]) -> ExitCode) -> ExitCode {
    let mut strings = Vec::with_capacity(args.len());
    for arg in args.into_iter().skip(1) {
        match arg.into_string() {
            Ok(s) => strings.push(s),
            Err(_) => {
                eprintln!("Error: Malformed UTF-8 in argument.");
                return ExitCode::from(1);
            }
        }
    }
    run(&strings)
}

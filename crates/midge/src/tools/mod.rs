//! The `midge` subcommands other than the broker itself: `pub`, `sub`, `rr`, `passwd`,
//! `bench`. Each parses its own flags (Mosquitto's tools use `-h` for host, so they
//! cannot share the broker's clap parser).

mod bench;
pub mod passwd;

/// Runs the subcommand named by `name` with `args` (which start with the subcommand's
/// own name, as `argv` does). Returns `None` when `name` is not a subcommand.
pub fn dispatch(name: &str, args: Vec<std::ffi::OsString>) -> Option<std::process::ExitCode> {
    match name {
        "bench" => Some(bench::main(args)),
        "passwd" => Some(passwd::main(args)),
        _ => None,
    }
}

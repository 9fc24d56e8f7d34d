//! The `midge` subcommands other than the broker itself: `pub`, `sub`, `rr`, `passwd`,
//! `bench`. Each parses its own flags (Mosquitto's tools use `-h` for host, so they
//! cannot share the broker's clap parser).

mod bench;

/// Runs the subcommand named by `name` with `args` (which start with the subcommand's
/// own name, as `argv` does). Returns `None` when `name` is not a subcommand.
pub fn dispatch(name: &str, args: Vec<std::ffi::OsString>) -> Option<std::process::ExitCode> {
    let _ = args;
    match name {
        "bench" => Some(bench::main(args)),
        _ => None,
    }
}

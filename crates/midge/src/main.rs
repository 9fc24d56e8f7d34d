//! The `midge` binary: the broker and its subcommands.
fn main() {}

//! The `aigronova` binary: parses arguments and hands over to `aigronova_cli`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    aigronova_cli::main(aigronova_cli::Cli::parse())
}

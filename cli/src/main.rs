//! The `aigronova` binary: parses arguments and hands over to `aigronova_cli`.

use std::process::ExitCode;

use clap::Parser;

/// The exit code of arguments the binary does not take (`EX_USAGE`), the code of a bad
/// configuration too: 2 is `audit verify`'s "cannot verify", and clap's own.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    match aigronova_cli::Cli::try_parse() {
        Ok(cli) => aigronova_cli::main(cli),
        Err(error) => {
            // `--help` and `--version` are no errors.
            let code = if error.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = error.print();
            ExitCode::from(code)
        }
    }
}

//! The `aigronova` binary: parses arguments and hands over to `aigronova_cli`.

use std::process::ExitCode;

use clap::Parser;

/// The exit code of arguments the binary does not take (`EX_USAGE`), the code of a bad
/// configuration too: 2 is `audit verify`'s "cannot verify", and clap's own.
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    without_runtime_telemetry();
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

/// Microsoft's builds of ONNX Runtime (the one the Makefile fetches among them) queue usage
/// telemetry for upload (a device id, the process, its sessions) in `~/.cache/Microsoft` unless
/// `ORT_DISABLE_TELEMETRY=1` is in the process's environment before the runtime loads, which the
/// runtime's own switch, applied once it has loaded, comes too late for. Without the variable the
/// binary starts itself again with it, before anything else runs, so that nothing about a
/// deployment is kept or sent; a variable set, to any value, is the operator's choice and stands.
#[cfg(unix)]
fn without_runtime_telemetry() {
    use std::os::unix::process::CommandExt;

    if std::env::var_os("ORT_DISABLE_TELEMETRY").is_some() {
        return;
    }
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(error) => {
            eprintln!(
                "aigronova: cannot find its own binary to start again with ONNX Runtime's telemetry off ({error}); going on"
            );
            return;
        }
    };
    let mut arguments = std::env::args_os();
    let mut command = std::process::Command::new(binary);
    if let Some(name) = arguments.next() {
        command.arg0(name);
    }
    // Only returns on failure: the binary then goes on, with the runtime's own switch off.
    let error = command.args(arguments).env("ORT_DISABLE_TELEMETRY", "1").exec();
    eprintln!("aigronova: could not start again with ONNX Runtime's telemetry off ({error}); going on");
}

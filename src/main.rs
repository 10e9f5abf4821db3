//! The `berth` binary: the server (`berth serve`) and the client verbs.

fn main() -> std::process::ExitCode {
    berth::cli::main()
}

//! `berth-agent`: PID 1 of every sandbox; serves exec and files on a unix socket.

fn main() {
    std::process::exit(berth_runtime::agent::run());
}

//! Builds `berth-agent` as a static x86_64 Linux binary (glibc, `+crt-static`) in its own
//! target directory, and hands its path to the supervisor, which embeds it and bind-mounts
//! it read-only into every sandbox. `BERTH_AGENT_BIN=/path` uses a prebuilt agent instead.
//! Also compiles `runtime/gvisor/statx_compat.c` (with the C compiler Rust links with) into
//! the shared object gVisor sandboxes preload.

use std::path::PathBuf;
use std::process::Command;

const AGENT_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    build_statx_compat();
    build_agent();
}

/// `cc -shared -nostdlib`: an object with no dependencies, loadable by any x86_64 libc.
fn build_statx_compat() {
    const SOURCE: &str = "runtime/gvisor/statx_compat.c";
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CC");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let object = out.join("berth-statx-compat.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args([
            "-shared",
            "-fPIC",
            "-O2",
            "-nostdlib",
            "-Wl,--hash-style=both",
            "-o",
        ])
        .arg(&object)
        .arg(SOURCE)
        .status()
        .unwrap_or_else(|e| panic!("run {cc} to build {SOURCE}: {e} (install gcc)"));
    assert!(
        status.success(),
        "building {SOURCE} failed (see the output above)"
    );
    println!(
        "cargo:rustc-env=BERTH_STATX_COMPAT_PATH={}",
        object.display()
    );
}

fn build_agent() {
    println!("cargo:rerun-if-changed=runtime/src");
    println!("cargo:rerun-if-changed=runtime/Cargo.toml");
    println!("cargo:rerun-if-changed=Cargo.lock");
    println!("cargo:rerun-if-env-changed=BERTH_AGENT_BIN");
    if let Ok(prebuilt) = std::env::var("BERTH_AGENT_BIN") {
        println!("cargo:rustc-env=BERTH_AGENT_PATH={prebuilt}");
        return;
    }
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let target_dir = root.join("target").join("agent");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "berth-runtime",
            "--features",
            "agent",
        ])
        .args(["--bin", "berth-agent", "--target", AGENT_TARGET])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .expect("run cargo to build berth-agent");
    assert!(
        status.success(),
        "building berth-agent failed (see the output above)"
    );
    let binary = target_dir
        .join(AGENT_TARGET)
        .join("release")
        .join("berth-agent");
    println!("cargo:rustc-env=BERTH_AGENT_PATH={}", binary.display());
}

#!/usr/bin/env bash
# Runs berth's whole test suite: unit tests and the integration suites that drive a real
# server against the real Docker engine and SQLite. Builds the `base` image template
# templates first (once each; they are cached by their definition hash).
#
# Needs: Docker, and as root on Debian/Ubuntu it installs what else it needs
# (debootstrap to build images, busybox-static for the no-libc image test).
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }
static_busybox() { [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; }

if ! have debootstrap || ! static_busybox; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "==> installing test prerequisites: debootstrap busybox-static"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap busybox-static >/dev/null
  else
    echo "berth tests need debootstrap and busybox-static: sudo apt-get install debootstrap busybox-static" >&2
    exit 1
  fi
fi
if ! docker info >/dev/null 2>&1 && ! [ -S /var/run/docker.sock ]; then
  echo "berth tests need a running Docker engine" >&2
  exit 1
fi

echo "==> building"
cargo build --locked --bins
echo "==> building the image templates (each skipped when already built)"
BERTH_DATA_DIR="${BERTH_TEST_DATA_DIR:-$PWD/target/test-data}" ./target/debug/berth images build base python node

echo "==> running the test suite"
status=0
cargo test --locked --workspace --all-features --no-fail-fast || status=$?

# Sandboxes of a failed test may outlive it; berth labels everything it creates.
leftover=$(docker ps -aq --filter label=dev.berth.managed=true --filter label=dev.berth.tenant=tenant-a)
[ -z "$leftover" ] || docker rm -f $leftover >/dev/null
exit $status

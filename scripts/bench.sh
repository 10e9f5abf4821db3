#!/usr/bin/env bash
# Measures berth's hot paths on this machine against raw Docker in the same run:
# create->first-exec latency (cold and from the warm pool), exec round trip (berth vs Docker
# Engine exec API on the same container), 1 MiB file write+read, run-tests (Python and
# TypeScript) vs one docker run per case, and the Modal-compatible execute. Needs Docker;
# builds the templates if missing. Takes a few minutes (the docker-run peers are slow).
# Then terminals: keystroke echo latency and `cat` throughput through berth's WebSocket
# vs a raw Docker attach on the same container. Then snapshots: snapshot and restore of a
# ~1 GB volume of mixed files vs `docker run tar | zstd` (needs the zstd command; installed
# here when missing), and resume -> first exec of a stopped and of an archived sandbox.
# Then isolation: create -> first exec and exec `true` under runc and gVisor, with and
# without the disk quota.
# Then the cluster: exec through the node holding a sandbox vs through another (the proxy
# hop), creates per second through one node vs three (scripts/bench-cluster.sh).
# BENCH_ITERATIONS=N changes the exec sample count (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench bench
cargo bench --bench terminal
cargo bench --bench isolation
if ! command -v zstd >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get install -y -qq zstd >/dev/null
fi
cargo bench --bench snapshots
scripts/bench-cluster.sh

#!/usr/bin/env bash
# Measures berth's hot paths on this machine against raw Docker in the same run:
# create->first-exec latency (cold and from the warm pool), exec round trip (berth vs Docker
# Engine exec API on the same container), 1 MiB file write+read, run-tests (Python and
# TypeScript) vs one docker run per case, and the Modal-compatible execute. Needs Docker;
# builds the templates if missing. Takes a few minutes (the docker-run peers are slow).
# Then terminals: keystroke echo latency and `cat` throughput through berth's WebSocket
# vs a raw Docker attach on the same container.
# BENCH_ITERATIONS=N changes the exec sample count (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench bench
cargo bench --bench terminal

#!/usr/bin/env bash
# Measures berth's hot paths on this machine against raw Docker in the same run:
# create->first-exec latency, exec round trip (berth vs Docker Engine exec API on the same
# container), 1 MiB file write+read. Needs Docker; builds the `base` template if missing.
# BENCH_ITERATIONS=N changes the exec sample count (default 200).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --bench bench

#!/usr/bin/env bash
# Start-up time of a release `stemedb serve` on an existing data directory: from exec until
# /v1/ready answers 200. Usage: ./scripts/bench-startup.sh DATA_DIR [RUNS]
# (Make a large data directory first, e.g. with stemedb-bench gen + ingest; see docs/performance.md.)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:?usage: bench-startup.sh DATA_DIR [RUNS]}
RUNS=${2:-3}
PORT=18198
cargo build --release --locked -q -p stemedb-cli
for run in $(seq "$RUNS"); do
  t0=$(date +%s.%N)
  target/release/stemedb serve --data-dir "$DIR" --listen 127.0.0.1:$PORT --log warn 2>/dev/null &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/ready"; do sleep 0.005; done
  t1=$(date +%s.%N)
  size=$(curl -s "http://127.0.0.1:$PORT/v1/ready" | sed 's/.*"tree_size":\([0-9]*\).*/\1/')
  echo "{\"kind\":\"startup\",\"run\":$run,\"tree_size\":$size,\"seconds\":$(printf "%.3f" "$(echo "$t1 - $t0" | bc)")}"
  kill "$pid"; wait "$pid" || true
done

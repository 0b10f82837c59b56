#!/usr/bin/env bash
# Write-path benchmarks (issues 4, 17): the verification ceiling, signed batch ingest and single
# POSTs at 64 connections, three runs each on a fresh data directory, against a release build.
# Usage: ./scripts/bench-write.sh [RUNS]        Output: one JSON line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
cargo build --release --locked -q -p stemedb-cli -p stemedb-benches
B=$PWD/target/release
WORK=$(mktemp -d /tmp/stemedb-bench.XXXXXX)
# Never `kill 0` (the whole process group) when no server is left to stop.
trap 'if [ -n "${SERVER:-}" ]; then kill "$SERVER" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
BATCH=200000 SINGLES=60000
# Signing is not timed: the data sets are signed up front.
"$B/stemedb-bench" gen --count "$BATCH" --out "$WORK/batch.jsonl" 2>/dev/null
"$B/stemedb-bench" gen --count "$SINGLES" --start 10000000 --out "$WORK/singles.jsonl" 2>/dev/null
# The verification ceiling: both cores doing only decode + strict verify of the same envelopes.
for run in $(seq "$RUNS"); do
  "$B/stemedb-bench" verify --file "$WORK/batch.jsonl"
done
PORT=18199
export LC_ALL=C  # `time` prints with a decimal point
# Waits until the merger has folded everything frozen so far (and the active memtable's age has
# frozen it), so the next measurement is not charged for the previous one's merges.
merged() {
  sleep 1.5
  until curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^stemedb_memtable_frozen_assertions/ {exit !($2 == 0)}'; do
    sleep 0.2
  done
}
# CPU seconds (user + system) the server has used so far, from /proc (clock ticks).
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$SERVER/stat"; }
for run in $(seq "$RUNS"); do
  rm -rf "$WORK/data"
  "$B/stemedb" serve --data-dir "$WORK/data" --listen 127.0.0.1:$PORT --log warn 2>"$WORK/server.log" &
  SERVER=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$PORT/v1/ready"; do sleep 0.05; done
  before=$(server_cpu)
  { TIMEFORMAT='%U %S'; time "$B/stemedb-bench" ingest --server "http://127.0.0.1:$PORT" --file "$WORK/batch.jsonl" --batch 1000 --concurrency 4 2>&3; } 3>&2 2>"$WORK/ingest.time"
  after=$(server_cpu)
  # CPU per assertion, µs, while the ingest ran (the merger's work that is still pending is not in it).
  awk -v b="$before" -v a="$after" -v run="$run" -v n="$BATCH" 'END {printf "{\"kind\":\"ingest_cpu\",\"run\":%d,\"server_cpu_us\":%.1f,\"client_cpu_us\":%.1f}\n", run, (a - b) * 1e6 / n, ($1 + $2) * 1e6 / n}' "$WORK/ingest.time"
  merged
  before=$(server_cpu)
  { TIMEFORMAT='%U %S'; time "$B/stemedb-bench" singles --server "http://127.0.0.1:$PORT" --file "$WORK/singles.jsonl" --concurrency 64 2>&3; } 3>&2 2>"$WORK/singles.time"
  after=$(server_cpu)
  # CPU per single POST, µs: the server's and the load generator's (both share the two cores).
  awk -v b="$before" -v a="$after" -v run="$run" -v n="$SINGLES" 'END {printf "{\"kind\":\"singles_cpu\",\"run\":%d,\"server_cpu_us\":%.1f,\"client_cpu_us\":%.1f}\n", run, (a - b) * 1e6 / n, ($1 + $2) * 1e6 / n}' "$WORK/singles.time"
  metrics=$(curl -s "http://127.0.0.1:$PORT/metrics")
  sum=$(echo "$metrics" | awk '/^stemedb_wal_group_commit_size_sum/ {print $2}')
  count=$(echo "$metrics" | awk '/^stemedb_wal_group_commit_size_count/ {print $2}')
  echo "{\"kind\":\"group_commit\",\"run\":$run,\"writes\":$sum,\"fsyncs\":$count}"
  kill "$SERVER"; wait "$SERVER" || true
done

#!/usr/bin/env bash
# Query benchmarks (issue 5) against a release server on a 1M-assertion data directory:
# point queries (lens=latest, exact subject) with wrk, the HTTP floor (wrk on /v1/health),
# tail matches returning 100 rows a page, the server's RSS, and the store alone (no HTTP).
# Three runs each after a warm-up.
# Usage: ./scripts/bench-query.sh [DATA_DIR] [RUNS]
#   Without DATA_DIR: signs 1,000,000 assertions over 250,000 subjects (64 agents, so each
#   subject hears from 4) and ingests them into a fresh directory first.
# Output: one JSON line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null
RUNS=${2:-3}
command -v wrk >/dev/null || { echo "bench-query.sh: install wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --locked -q -p stemedb-cli -p stemedb-benches
B=$PWD/target/release
WORK=$(mktemp -d /tmp/stemedb-qbench.XXXXXX)
# Never `kill 0` (the whole process group) when no server is left to stop.
trap 'if [ -n "${SERVER:-}" ]; then kill "$SERVER" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
PORT=18197
URL=http://127.0.0.1:$PORT
DIR=${1:-$WORK/data}
start() {
  "$B/stemedb" serve --data-dir "$DIR" --listen 127.0.0.1:$PORT --log warn 2>"$WORK/server.log" &
  SERVER=$!
  until curl -sf -o /dev/null "$URL/v1/ready"; do sleep 0.05; done
}
if [ -z "${1:-}" ]; then
  "$B/stemedb-bench" gen --count 1000000 --subjects 250000 --out "$WORK/set.jsonl" 2>/dev/null
  start
  "$B/stemedb-bench" ingest --server "$URL" --file "$WORK/set.jsonl" --batch 1000 --concurrency 4
  rm -f "$WORK/set.jsonl"
else
  start
fi
size=$(curl -s "$URL/v1/ready" | sed 's/.*"tree_size":\([0-9]*\).*/\1/')
export LC_ALL=C  # `time` prints with a decimal point
# CPU seconds (user + system) the server has used so far, from /proc (clock ticks).
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$SERVER/stat"; }
# One 15-second wrk run: KIND CONNECTIONS FIELDS [WRK ARGS...] (FIELDS: JSON fields that name
# the measurement). Prints one JSON line with the rate, p50/p99 and the CPU per request.
measure() {
  local kind=$1 conns=$2 fields=$3; shift 3
  local before after out rps total p50 p99 cpu
  before=$(server_cpu)
  # bash's `time` reports wrk's own CPU (user + system) on stderr.
  out=$( { TIMEFORMAT='%U %S'; time wrk -t2 -c"$conns" -d15s --latency "$@" 2>&3; } 3>&2 2>"$WORK/wrk.time")
  after=$(server_cpu)
  rps=$(echo "$out" | awk '/^Requests\/sec/ {print $2}')
  total=$(echo "$out" | awk '/requests in/ {print $1}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  [ -n "$total" ] || { echo "bench-query.sh: wrk printed no request count" >&2; exit 1; }
  # CPU per request, µs: the server's, and the load generator's (both share the two cores).
  cpu=$(awk -v b="$before" -v a="$after" -v n="$total" 'END {printf "\"server_cpu_us\":%.1f,\"client_cpu_us\":%.1f", (a - b) * 1e6 / n, ($1 + $2) * 1e6 / n}' "$WORK/wrk.time")
  echo "{\"kind\":\"$kind\",$fields,\"connections\":$conns,\"per_second\":$rps,\"p50\":\"$p50\",\"p99\":\"$p99\",$cpu}"
}
wrk -t2 -c32 -d10s -s benches/wrk/point_query.lua "$URL" >/dev/null  # warm-up
for conns in 32 16; do
  for run in $(seq "$RUNS"); do
    measure point_query "$conns" "\"tree_size\":$size,\"run\":$run" -s benches/wrk/point_query.lua "$URL"
  done
done
# The HTTP floor: the same server, connections and load generator on `GET /v1/health` (the
# router, the connection layer and every middleware a query passes through except the data
# routes' rate limit, timeout and concurrency cap; no store work, a 40-byte answer). What a point
# query costs above it is the query's own work.
for run in $(seq "$RUNS"); do
  measure http_floor 32 "\"path\":\"/v1/health\",\"run\":$run" "$URL/v1/health"
done
for run in $(seq "$RUNS"); do
  "$B/stemedb-bench" tail-pages --server "$URL" --tail cpu --limit 100 --concurrency 4 --pages 300
done
echo "{\"kind\":\"rss\",\"tree_size\":$size,\"rss_kib\":$(ps -o rss= -p "$SERVER")}"
kill "$SERVER"; wait "$SERVER" || true; SERVER=
for run in $(seq "$RUNS"); do
  "$B/stemedb-bench" store-queries --data-dir "$DIR" --subjects 250000 --count 200000
done

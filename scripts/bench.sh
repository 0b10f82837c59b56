#!/usr/bin/env bash
# The whole comparison in one go (issue 8): StemeDB's write and query benchmarks and the
# PostgreSQL 15 baseline on the same signed data set, on this machine, then the medians side by
# side in docs/performance.md (the block between the bench:begin and bench:end markers).
#
# Usage: ./scripts/bench.sh [RUNS]      (default 3; takes about 40 minutes on 2 cores)
# Raw JSON lines are kept in target/bench/<UTC time>/. The 10M-assertion run takes 25 minutes and
# ≈ 36 GB, so it is separate: `./scripts/bench-10m.sh > target/bench/10m.jsonl` (and
# `PG_MODE=copy ./scripts/bench-postgres.sh 10M_SET 1 > target/bench/10m-postgres.jsonl` for
# PostgreSQL's disk on the same rows); when those files exist, the table includes them.
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null
RUNS=${1:-3}
cargo build --release --locked -q -p stemedb-cli -p stemedb-benches
B=$PWD/target/release
OUT=$PWD/target/bench/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/stemedb-benchall.XXXXXX)
# Never `kill 0` (the whole process group) when no server is left to stop.
trap 'if [ -n "${SERVER:-}" ]; then kill "$SERVER" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
PORT=18196
URL=http://127.0.0.1:$PORT

echo "[bench] signing the 1M data set (not timed)"
"$B/stemedb-bench" gen --count 1000000 --subjects 250000 --out "$WORK/set.jsonl" 2>/dev/null

echo "[bench] StemeDB: 1M batch ingest into a fresh directory"
"$B/stemedb" serve --data-dir "$WORK/data" --listen 127.0.0.1:$PORT --log warn 2>"$WORK/server.log" &
SERVER=$!
until curl -sf -o /dev/null "$URL/v1/ready"; do sleep 0.05; done
"$B/stemedb-bench" ingest --server "$URL" --file "$WORK/set.jsonl" --batch 1000 --concurrency 4 \
  | sed 's/"kind":"batch_ingest"/"kind":"batch_ingest_1m"/' | tee -a "$OUT/stemedb.jsonl"
kill "$SERVER"; wait "$SERVER" || true; SERVER=
du -sB1 "$WORK/data/db" "$WORK/data/wal" | awk '{printf "{\"kind\":\"disk\",\"part\":\"%s\",\"bytes\":%s}\n", $2, $1}' \
  | sed "s|$WORK/data/||" | tee -a "$OUT/stemedb.jsonl"

echo "[bench] StemeDB: queries at 1M"
./scripts/bench-query.sh "$WORK/data" "$RUNS" | tee -a "$OUT/stemedb.jsonl"
echo "[bench] StemeDB: mixed reads and writes at 1M (10% single POSTs, 32 connections)"
"$B/stemedb" serve --data-dir "$WORK/data" --listen 127.0.0.1:$PORT --log warn 2>>"$WORK/server.log" &
SERVER=$!
until curl -sf -o /dev/null "$URL/v1/ready"; do sleep 0.05; done
for run in $(seq "$RUNS"); do
  "$B/stemedb-bench" gen --count 60000 --start $((20000000 + run * 100000)) --subjects 250000 \
    --out "$WORK/mixed.jsonl" 2>/dev/null
  "$B/stemedb-bench" mixed --server "$URL" --file "$WORK/mixed.jsonl" --concurrency 32 \
    --write-percent 10 --subjects 250000 --seconds 20 | tee -a "$OUT/stemedb.jsonl"
done
kill "$SERVER"; wait "$SERVER" || true; SERVER=
echo "[bench] StemeDB: cold start and WAL replay at 1M"
./scripts/bench-startup.sh "$WORK/data" "$RUNS" | tee -a "$OUT/stemedb.jsonl"
./scripts/bench-replay.sh "$WORK/data" "$RUNS" | tee -a "$OUT/stemedb.jsonl"
echo "[bench] StemeDB: write path"
./scripts/bench-write.sh "$RUNS" | tee -a "$OUT/stemedb.jsonl"
echo "[bench] PostgreSQL baseline on the same data set"
./scripts/bench-postgres.sh "$WORK/set.jsonl" "$RUNS" | tee "$OUT/postgres.jsonl"

for f in 10m.jsonl 10m-postgres.jsonl; do
  if [ -f "target/bench/$f" ]; then cp "target/bench/$f" "$OUT/$f"; fi
done
python3 scripts/bench_report.py "$OUT" docs/performance.md
echo "[bench] raw results in $OUT; docs/performance.md updated"

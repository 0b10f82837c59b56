#!/usr/bin/env bash
# The 10M-assertion run of docs/performance.md (issue 8): one server, one data directory, batch
# ingest of a pre-signed 10,000,000-assertion set (2,500,000 subjects, four agents each; signing
# not timed), reporting the rate and the server's RSS every 500,000 assertions, then disk per
# assertion and a cold start.
#
# Usage: ./scripts/bench-10m.sh [WORK_DIR]   (needs ≈ 36 GB free: 5.7 GB of signed data, ≈ 30 GB
#        of store, WAL included; about 25 minutes on 2 cores: 4 to sign, 16 to ingest)
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null
WORK=${1:-/tmp/stemedb-10m}
mkdir -p "$WORK"
cargo build --release --locked -q -p stemedb-cli -p stemedb-benches
B=$PWD/target/release
PORT=18197
URL=http://127.0.0.1:$PORT
trap 'if [ -n "${SERVER:-}" ]; then kill "$SERVER" 2>/dev/null || true; fi' EXIT
if [ ! -s "$WORK/set.jsonl" ]; then
  echo "[10m] signing 10M assertions (not timed)" >&2
  "$B/stemedb-bench" gen --count 10000000 --subjects 2500000 --out "$WORK/set.jsonl" >&2
fi
rm -rf "$WORK/data"
"$B/stemedb" serve --data-dir "$WORK/data" --listen 127.0.0.1:$PORT --log warn 2>"$WORK/server.log" &
SERVER=$!
until curl -sf -o /dev/null "$URL/v1/ready"; do sleep 0.05; done
"$B/stemedb-bench" ingest --server "$URL" --file "$WORK/set.jsonl" --batch 1000 --concurrency 4 \
  --window 500000 | sed 's/"kind":"batch_ingest"/"kind":"batch_ingest_10m"/'
curl -sf "$URL/metrics" | awk '/^process_resident_memory_bytes / {printf "{\"kind\":\"rss_10m\",\"bytes\":%d}\n", $2}'
kill "$SERVER"; wait "$SERVER" || true; SERVER=
du -sB1 "$WORK/data/db" "$WORK/data/wal" | awk '{printf "{\"kind\":\"disk_10m\",\"part\":\"%s\",\"bytes\":%s}\n", $2, $1}' \
  | sed "s|$WORK/data/||"
./scripts/bench-startup.sh "$WORK/data" 3 | sed 's/"kind":"\([a-z_]*\)"/"kind":"\1_10m"/'

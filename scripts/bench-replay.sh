#!/usr/bin/env bash
# WAL replay after kill -9 (issue 8: a 100k-record tail in ≤ 1 s). On an existing data directory
# (for example the 1M directory of bench.sh), each run starts a server with durable checkpoints
# held off by time (STEMEDB_CHECKPOINT_INTERVAL_MS=1h; the 100,000-record trigger stays), batch
# ingests 99,000 new assertions, kill -9s it, and times `stemedb serve` from exec until /v1/ready
# answers 200: recovery scans the WAL, replays the tail past the last durable checkpoint into
# the value log, the Merkle node files and redb, and opens. The server's own "store open" line
# gives the count it replayed.
#
# Usage: ./scripts/bench-replay.sh DATA_DIR [RUNS]   (adds 99,000 assertions per run to DATA_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null
DIR=${1:?usage: bench-replay.sh DATA_DIR [RUNS]}
RUNS=${2:-3}
cargo build --release --locked -q -p stemedb-cli -p stemedb-benches
B=$PWD/target/release
PORT=18199
URL=http://127.0.0.1:$PORT
WORK=$(mktemp -d /tmp/stemedb-replay.XXXXXX)
trap 'if [ -n "${SERVER:-}" ]; then kill -9 "$SERVER" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
for run in $(seq "$RUNS"); do
  # A fresh set each run, disjoint from earlier runs' (signing not timed).
  "$B/stemedb-bench" gen --count 99000 --start $((1000000000 + $(date +%s) % 1000000 * 100000)) --subjects 250000 \
    --out "$WORK/tail.jsonl" 2>/dev/null
  STEMEDB_CHECKPOINT_INTERVAL_MS=3600000 "$B/stemedb" serve --data-dir "$DIR" \
    --listen 127.0.0.1:$PORT --log warn 2>/dev/null &
  SERVER=$!
  until curl -sf -o /dev/null "$URL/v1/ready"; do sleep 0.05; done
  "$B/stemedb-bench" ingest --server "$URL" --file "$WORK/tail.jsonl" >/dev/null
  kill -9 "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
  t0=$(date +%s.%N)
  "$B/stemedb" serve --data-dir "$DIR" --listen 127.0.0.1:$PORT --log info --log-format json \
    2>"$WORK/start.log" &
  SERVER=$!
  until curl -sf -o /dev/null "$URL/v1/ready"; do sleep 0.005; done
  t1=$(date +%s.%N)
  kill "$SERVER"; wait "$SERVER" || true; SERVER=
  python3 - "$WORK/start.log" "$run" "$t0" "$t1" <<'PY'
import json, sys
path, run, t0, t1 = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
opened = {}
for line in open(path):
    try:
        d = json.loads(line)
    except ValueError:
        continue
    f = d.get("fields", d)  # tracing-subscriber's JSON puts the fields at the top level
    if f.get("message") == "store open":
        opened = f
print(json.dumps({"kind": "replay", "run": run, "replayed": opened.get("replayed"),
                  "rebuilt": opened.get("rebuilt"), "tree_size": opened.get("tree_size"),
                  "store_open_ms": opened.get("elapsed_ms"), "seconds_to_ready": round(t1 - t0, 3)}))
PY
done

#!/usr/bin/env bash
# A/B of two release builds on one signed data set, alternating, in one sitting: each side
# ingests FILE into a fresh directory (batches of 1,000, 4 connections), then the server is left
# until it is idle (merges and compactions done). One line per side and pair: ingest rate, the
# server's CPU per assertion during the ingest and until idle, disk per assertion right after
# the ingest and once idle, RSS.
#
# Usage: ./scripts/bench-ab.sh OLD_BIN_DIR NEW_BIN_DIR FILE [PAIRS]
#   *_BIN_DIR: directories holding `stemedb` and `stemedb-bench` (e.g. a copy of
#   target/release taken before a change, and target/release after it).
#   FILE: signed envelopes, one per line (`stemedb-bench gen --count 1000000 --out FILE`).
set -euo pipefail
exec </dev/null
[ $# -ge 3 ] || { echo "usage: $0 OLD_BIN_DIR NEW_BIN_DIR FILE [PAIRS]" >&2; exit 2; }
OLD=$1 NEW=$2 FILE=$3 PAIRS=${4:-2}
N=$(wc -l < "$FILE")
PORT=18231
URL=http://127.0.0.1:$PORT
WORK=$(mktemp -d /tmp/stemedb-ab.XXXXXX)
trap 'if [ -n "${S:-}" ]; then kill "$S" 2>/dev/null || true; fi; rm -rf "$WORK"' EXIT
hz=$(getconf CLK_TCK)
cpu() { awk -v hz="$hz" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$S/stat"; }
per() { awk -v n="$N" -v a="$1" -v b="$2" -v k="$3" 'BEGIN {printf "%.1f", (b - a) * k / n}'; }
for p in $(seq "$PAIRS"); do
  for side in old new; do
    if [ $side = old ]; then B=$OLD; else B=$NEW; fi
    D=$WORK/data-$side
    rm -rf "$D"
    "$B/stemedb" serve --data-dir "$D" --listen 127.0.0.1:$PORT --log warn 2>"$WORK/server-$side.log" &
    S=$!
    until curl -sf -o /dev/null "$URL/v1/ready"; do sleep 0.05; done
    c0=$(cpu); t0=$(date +%s.%N)
    "$B/stemedb-bench" ingest --server "$URL" --file "$FILE" --batch 1000 --concurrency 4 >/dev/null 2>&1
    t1=$(date +%s.%N); c1=$(cpu)
    db0=$(du -sB1 "$D/db" | awk '{print $1}')
    # Idle: the server's CPU grows by less than 0.05 s a second, three seconds in a row.
    quiet=0; prev=$(cpu)
    while [ $quiet -lt 3 ]; do
      sleep 1; now=$(cpu)
      if awk -v a="$prev" -v b="$now" 'BEGIN {exit !(b - a < 0.05)}'; then quiet=$((quiet + 1)); else quiet=0; fi
      prev=$now
    done
    c2=$(cpu)
    rss=$(curl -s "$URL/metrics" | awk '/^process_resident_memory_bytes / {printf "%d", $2 / 1048576}')
    runs=$(curl -s "$URL/metrics" | awk '/^stemedb_index_runs / {print $2}')
    kill "$S"; wait "$S" || true; S=
    db=$(du -sB1 "$D/db" | awk '{print $1}')
    rate=$(awk -v n="$N" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
    echo "{\"side\":\"$side\",\"pair\":$p,\"per_second\":$rate,\"server_cpu_us_ingest\":$(per "$c0" "$c1" 1e6),\"server_cpu_us_until_idle\":$(per "$c0" "$c2" 1e6),\"db_bytes_after_ingest\":$((db0 / N)),\"db_bytes_idle\":$((db / N)),\"rss_mib\":$rss,\"index_runs\":\"${runs:-}\"}"
  done
done

#!/usr/bin/env bash
# PostgreSQL 15 baseline for docs/performance.md (issue 8): the same signed assertions, in a table
# with the same three secondary indexes StemeDB keeps (reversed subject, predicate, agent), on
# this machine, default configuration (fsync on, synchronous_commit=on).
#
# Usage: scripts/bench-postgres.sh DATASET.jsonl [RUNS]
#   DATASET: `stemedb-bench gen` output (one signed envelope per line), e.g. the 1M set of
#   scripts/bench-query.sh (250k subjects). Output: one JSON line per measurement.
#
# Measured, each on an empty table except the queries:
#   copy          COPY in batches of 1,000 rows from 4 connections (PostgreSQL's fastest path)
#   insert        multi-row INSERT of 1,000 rows from 4 connections
#   verify_copy   a loader that verifies every Ed25519 signature (PyNaCl/libsodium) before it
#                 COPYs, 2 processes (the cores StemeDB has) — the fair comparison
#   singles       single-row INSERT, one commit each, 64 connections (pgbench, prepared)
#   point         latest row for an exact subject and predicate, 8 and 32 clients (pgbench,
#                 prepared), on the full data set
#   tail          a page of the tail match `…/cpu` in subject order: the next 400 rows (100
#                 subjects × 4 agents, the candidates of one StemeDB page of 100 groups) from a
#                 random subject, 4 clients (pgbench, prepared)
#   singles_tcp, point_tcp (32 clients)   the same over loopback TCP, the transport StemeDB's
#                 load generators use (the others connect through the Unix socket)
# Each pgbench line has the CPU per transaction of the server (the postmaster and the backends
# it has reaped; the long-lived checkpointer, WAL writer and background writer are not counted,
# so it is a lower bound) and of pgbench itself.
# PG_MODE=copy stops after the COPY runs and the disk size (the 10M disk comparison).
# PostgreSQL verifies no signature and keeps no Merkle log: StemeDB does both (say so beside
# the figures).
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null
DATASET=${1:?usage: $0 DATASET.jsonl [RUNS]}
RUNS=${2:-3}
DATASET=$(realpath "$DATASET")
PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
if [ -z "$PGBIN" ] || [ ! -x "$PGBIN/initdb" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get install -y -qq postgresql >/dev/null
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi
python3 -c 'import nacl, blake3' || { echo "needs PyNaCl and blake3 (tests/interop/requirements.txt)" >&2; exit 1; }

WORK=$(mktemp -d /tmp/stemedb-pg.XXXXXX)
chmod 0755 "$WORK"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ "$(id -u)" = 0 ]; then chown postgres "$WORK"; fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() { as_pg "$PGBIN/pg_ctl" -D "$WORK/pgdata" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT
as_pg "$PGBIN/initdb" -D "$WORK/pgdata" -A trust -U bench >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/pgdata" -l "$WORK/pg.log" -w \
  -o "-p $PORT -k $WORK -c listen_addresses=127.0.0.1" start >/dev/null
export PGHOST=$WORK PGPORT=$PORT PGUSER=bench PGDATABASE=postgres
PSQL=(psql -X -q -v ON_ERROR_STOP=1)
"${PSQL[@]}" -c "SHOW fsync" -c "SHOW synchronous_commit" -At | tr '\n' ' ' | \
  sed 's/^/{"kind":"pg_settings","fsync_synchronous_commit":"/; s/ $/"}\n/'
schema() {
  "${PSQL[@]}" <<'SQL'
DROP TABLE IF EXISTS assertions;
CREATE TABLE assertions (
  id bytea PRIMARY KEY,
  subject_rev text COLLATE "C" NOT NULL,
  predicate text NOT NULL,
  agent bytea NOT NULL,
  ts bigint NOT NULL,
  confidence double precision NOT NULL,
  envelope bytea NOT NULL
);
CREATE INDEX assertions_subject ON assertions (subject_rev, predicate, ts);
CREATE INDEX assertions_predicate ON assertions (predicate, ts);
CREATE INDEX assertions_agent ON assertions (agent, ts);
SQL
}
ROWS=$(wc -l <"$DATASET")
now() { date +%s.%N; }
rate() { python3 -c "import sys; print(f'{$ROWS / ($2 - $1):.0f}')" ; }

# Load files (not timed).
python3 scripts/pg_rows.py copy "$DATASET" 4 "$WORK/copy"
if [ "${PG_MODE:-all}" != copy ]; then python3 scripts/pg_rows.py insert "$DATASET" 4 "$WORK/insert"; fi

for run in $(seq "$RUNS"); do
  schema
  t0=$(now)
  for p in 0 1 2 3; do "${PSQL[@]}" -f "$WORK/copy.$p.sql" & done
  wait
  t1=$(now)
  echo "{\"kind\":\"pg_copy\",\"run\":$run,\"rows\":$ROWS,\"per_second\":$(rate "$t0" "$t1"),\"connections\":4,\"batch\":1000}"
done
size=$("${PSQL[@]}" -At -c "SELECT pg_total_relation_size('assertions')")
echo "{\"kind\":\"pg_disk\",\"rows\":$ROWS,\"bytes\":$size,\"bytes_per_row\":$(( size / ROWS ))}"
if [ "${PG_MODE:-all}" = copy ]; then exit 0; fi

# Point queries on the full table: the newest row for one subject and predicate.
"${PSQL[@]}" -c "VACUUM ANALYZE assertions"
subjects=$("${PSQL[@]}" -At -c "SELECT count(DISTINCT subject_rev) FROM assertions")
cat >"$WORK/point.sql" <<SQL
\\set s random(0, $(( subjects - 1 )))
SELECT envelope FROM assertions WHERE subject_rev = 'cpu/server-' || :s || '/rack-' || (:s % 97) || '/eu-west/fleet' AND predicate = 'load.p99' ORDER BY ts DESC LIMIT 1;
SQL
# CPU seconds (user + system) of the postmaster and the backends it has reaped (fields 14-17 of
# /proc/PID/stat): a connection's backend is counted once it exits, at the end of a pgbench run.
pg_cpu() {
  awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15 + $16 + $17) / hz}' \
    "/proc/$(head -n 1 "$WORK/pgdata/postmaster.pid")/stat"
}
# NAME CLIENTS SCRIPT [TRANSPORT]: TRANSPORT `unix` (the default: the Unix socket in $WORK) or
# `tcp` (loopback TCP, the transport StemeDB's load generators use), which is added to the kind.
pgb() {
  local transport=${4:-unix} kind=$1 host=$WORK
  if [ "$transport" = tcp ]; then kind=${1}_tcp host=127.0.0.1; fi
  local dir="$WORK/log-$kind"; rm -rf "$dir"; mkdir -p "$dir"; chmod 0777 "$dir"
  local before; before=$(pg_cpu)
  (cd "$dir" && TIMEFORMAT='%U %S' && { time pgbench -h "$host" -n -M prepared -c "$2" -j 2 -T 15 \
    -f "$3" -l >"$dir/out" 2>&1; } 2>"$dir/time")
  sleep 0.5  # the backends exit after pgbench disconnects
  python3 - "$dir" "$kind" "$2" "$before" "$(pg_cpu)" <<'PY'
import glob, json, re, sys
d, name, clients, before, after = sys.argv[1:]
out = open(f"{d}/out").read()
tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
n = int(re.search(r"number of transactions actually processed: ([0-9]+)", out).group(1))
user, system = map(float, open(f"{d}/time").read().split())
lat = sorted(int(l.split()[2]) for f in glob.glob(f"{d}/pgbench_log.*") for l in open(f))
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] / 1000
print(json.dumps({"kind": f"pg_{name}", "clients": int(clients), "per_second": round(tps),
                  "latency_ms": {"p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": lat[-1] / 1000},
                  "server_cpu_us": round((float(after) - float(before)) * 1e6 / n, 1),
                  "client_cpu_us": round((user + system) * 1e6 / n, 1)}))
PY
}
cat >"$WORK/tail.sql" <<SQL
\\set s random(0, $(( subjects - 1 )))
SELECT subject_rev, agent, ts, confidence FROM assertions WHERE subject_rev > 'cpu/server-' || :s AND subject_rev < 'cpu0' ORDER BY subject_rev, predicate, ts LIMIT 400;
SQL
for run in $(seq "$RUNS"); do
  pgb point 8 "$WORK/point.sql"
  pgb point 32 "$WORK/point.sql"
  pgb point 32 "$WORK/point.sql" tcp
  pgb tail 4 "$WORK/tail.sql"
done

# Single-row INSERTs, one commit each, 64 connections (~560-byte envelope, random id).
env_hex=$(head -n 1 "$DATASET" | tr -d '\n' | xxd -p | tr -d '\n')
cat >"$WORK/single.sql" <<SQL
\\set s random(0, 249999)
INSERT INTO assertions VALUES (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()), 'cpu/server-' || :s || '/rack-' || (:s % 97) || '/eu-west/fleet', 'load.p99', uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()), 1800000000000 + :s, 0.9, '\\x$env_hex');
SQL
for run in $(seq "$RUNS"); do
  pgb singles 64 "$WORK/single.sql"
  pgb singles 64 "$WORK/single.sql" tcp
done

for run in $(seq "$RUNS"); do
  schema
  t0=$(now)
  for p in 0 1 2 3; do "${PSQL[@]}" -f "$WORK/insert.$p.sql" & done
  wait
  t1=$(now)
  echo "{\"kind\":\"pg_insert\",\"run\":$run,\"rows\":$ROWS,\"per_second\":$(rate "$t0" "$t1"),\"connections\":4,\"batch\":1000}"
done

for run in $(seq "$RUNS"); do
  schema
  t0=$(now)
  for p in 0 1; do
    python3 scripts/pg_rows.py verify-copy "$DATASET" "$p" 2 | "${PSQL[@]}" &
  done
  wait
  t1=$(now)
  echo "{\"kind\":\"pg_verify_copy\",\"run\":$run,\"rows\":$ROWS,\"per_second\":$(rate "$t0" "$t1"),\"processes\":2,\"batch\":1000}"
done

#!/usr/bin/env bash
# Disaster-recovery drill, end to end on real files, with measured RTO and RPO.
#
#   1. start a server, write a data set (signed with a fresh key) and take an ONLINE backup
#      while a second batch of writes is still arriving;
#   2. archive the WAL (sealing the active segment: every write acknowledged so far);
#   3. write a few more (acknowledged, never archived: the window a lost disk takes with it);
#   4. disaster: kill -9 the server and delete its data directory;
#   5. restore the backup and replay the archive, start the server, wait for /v1/ready (RTO);
#   6. check: the restored tree has exactly the archived size and root, every archived id is
#      readable with its log index, `stemedb verify` passes on the backup and the restored
#      directory; count what the unarchived window lost (RPO).
#
# Usage: scripts/dr-drill.sh [ASSERTIONS]   (default 20000; CI runs it from scripts/test.sh)
# Env:   STEMEDB_BIN (default target/debug/stemedb, built if missing), DRILL_DIR (default: a
#        temp dir, removed after a pass and kept after a failure),
#        DRILL_WAL_ARCHIVE (default DRILL_DIR/archive; any directory or s3://bucket/prefix).
# Exit:  0 when every archived write came back and verify passed; non-zero otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
exec </dev/null

n=${1:-20000}
case $n in ''|*[!0-9]*) echo "ASSERTIONS must be a number" >&2; exit 2 ;; esac
bin=${STEMEDB_BIN:-$PWD/target/debug/stemedb}
if [ ! -x "$bin" ]; then
  CARGO_CACHE_RUSTC_INFO=0 cargo build -q -p stemedb-cli
fi
# A work dir the drill makes itself is removed after a pass and kept (and named) after a failure.
made_work=""
if [ -n "${DRILL_DIR:-}" ]; then
  work=$DRILL_DIR
else
  work=$(mktemp -d -t stemedb-drill.XXXXXX)
  made_work=1
fi
mkdir -p "$work"
archive=${DRILL_WAL_ARCHIVE:-$work/archive}
data=$work/data
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url=http://127.0.0.1:$port
server_pid=""
cleanup() {
  local status=$?
  if [ -n "$server_pid" ]; then
    kill -9 "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ -n "$made_work" ]; then
    if [ "$status" -eq 0 ]; then rm -rf "$work"; else echo "[drill] failed; kept $work" >&2; fi
  fi
}
trap cleanup EXIT

say() { printf '[drill] %s\n' "$*"; }
now() { date +%s.%N; }
start_server() {  # DATA_DIR LOG
  STEMEDB_LOG_FORMAT=json "$bin" serve --data-dir "$1" --listen "127.0.0.1:$port" \
    --wal-segment-bytes 1048576 2>"$2" &
  server_pid=$!
  for _ in $(seq 1 600); do
    if curl -fsS -o /dev/null "$url/v1/ready" 2>/dev/null; then return 0; fi
    kill -0 "$server_pid" 2>/dev/null || { cat "$2" >&2; return 1; }
    sleep 0.05
  done
  echo "server did not become ready" >&2
  return 1
}
statements() {  # FROM COUNT > jsonl
  python3 - "$1" "$2" <<'PY'
import json, sys
start, count = int(sys.argv[1]), int(sys.argv[2])
for i in range(start, start + count):
    print(json.dumps({"subject": f"drill/host-{i % 500}/disk", "predicate": "free_bytes",
                      "object": {"n": i}, "confidence": 0.9, "ts": 1_700_000_000_000 + i}))
PY
}

"$bin" keygen --out "$work/agent.pem" >/dev/null
half=$(( n / 2 ))
statements 0 "$half" >"$work/phase1.jsonl"
statements "$half" "$(( n - half ))" >"$work/phase2.jsonl"
statements "$n" 500 >"$work/phase3.jsonl"

say "work dir $work; $n assertions, archive $archive"
start_server "$data" "$work/server.log"
"$bin" assert --server "$url" --key "$work/agent.pem" "$work/phase1.jsonl" >"$work/acks1.jsonl"
# Phase 2 arrives while the online backup runs.
"$bin" assert --server "$url" --key "$work/agent.pem" "$work/phase2.jsonl" >"$work/acks2.jsonl" &
writer=$!
# Wait until phase 2 is landing, so the backup runs while writes arrive.
for _ in $(seq 1 600); do
  size=$(curl -fsS "$url/v1/checkpoint" | sed -n 2p)
  [ "$size" -gt $(( half + half / 10 )) ] && break
  sleep 0.05
done
t=$(now)
"$bin" backup --data-dir "$data" --to "$work/backup" --json >"$work/backup.json"
backup_secs=$(python3 -c "print(f'{$(now) - $t:.2f}')")
wait "$writer"
backup_size=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tree_size"])' "$work/backup.json")
[ "$backup_size" -lt "$n" ] || say "note: phase 2 had finished before the backup; raise ASSERTIONS"
say "online backup: tree size $backup_size in ${backup_secs}s (writes continued meanwhile)"

t=$(now)
"$bin" wal-archive --data-dir "$data" --to "$archive" --json >"$work/archive.json"
archive_secs=$(python3 -c "print(f'{$(now) - $t:.2f}')")
archived_at=$(now)
read -r arch_size arch_root < <(curl -fsS "$url/v1/proof/consistency?from=1" | python3 -c '
import json,sys; p=json.load(sys.stdin); print(p["to"], p["to_root"])')
say "WAL archived through tree size $arch_size in ${archive_secs}s"

# Acknowledged after the last archive run: on this disk only.
"$bin" assert --server "$url" --key "$work/agent.pem" "$work/phase3.jsonl" >"$work/acks3.jsonl"
window_secs=$(python3 -c "print(f'{$(now) - $archived_at:.2f}')")

say "DISASTER: kill -9 and rm -rf the data directory"
kill -9 "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
rm -rf "$data"
t0=$(now)

"$bin" restore --from "$work/backup" --data-dir "$data" --wal-archive "$archive" --json \
  >"$work/restore.json"
start_server "$data" "$work/server2.log"
rto=$(python3 -c "print(f'{$(now) - $t0:.2f}')")

read -r got_size got_root < <(curl -fsS "$url/v1/proof/consistency?from=1" | python3 -c '
import json,sys; p=json.load(sys.stdin); print(p["to"], p["to_root"])')
# Every archived acknowledgement must be back with its log index; phase 3 must be absent.
python3 - "$url" "$arch_size" "$work/acks1.jsonl" "$work/acks2.jsonl" "$work/acks3.jsonl" \
  >"$work/check.json" <<'PY'
import http.client, json, sys, urllib.parse
url, arch = sys.argv[1], int(sys.argv[2])
u = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
acked = []
for f in sys.argv[3:]:
    for line in open(f):
        r = json.loads(line)
        if "id" in r and r.get("log_index") is not None:
            acked.append((r["id"], r["log_index"]))
back = lost_archived = lost_window = wrong = 0
for id_, idx in acked:
    conn.request("GET", f"/v1/assertions/{id_}")
    resp = conn.getresponse(); body = resp.read()
    if resp.status == 200:
        back += 1
        if json.loads(body)["log_index"] != idx: wrong += 1
    elif idx < arch: lost_archived += 1
    else: lost_window += 1
print(json.dumps({"acked": len(acked), "back": back, "lost_archived": lost_archived,
                  "lost_unarchived": lost_window, "wrong_index": wrong}))
PY
kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
"$bin" verify "$work/backup" >"$work/verify-backup.txt" || { cat "$work/verify-backup.txt"; exit 1; }
"$bin" verify --data-dir "$data" >"$work/verify-restored.txt" || { cat "$work/verify-restored.txt"; exit 1; }

python3 - "$work" "$arch_size" "$arch_root" "$got_size" "$got_root" "$rto" "$window_secs" \
  "$backup_size" "$backup_secs" <<'PY'
import json, sys
work, arch, arch_root, got, got_root, rto, window, bsize, bsecs = sys.argv[1:]
c = json.load(open(f"{work}/check.json"))
r = json.load(open(f"{work}/restore.json"))
ok = (int(got) == int(arch) and got_root == arch_root and c["lost_archived"] == 0
      and c["wrong_index"] == 0 and c["back"] == int(arch))
print()
print("DR drill result")
print(f"  online backup          tree size {bsize}, {bsecs} s, writes continued")
print(f"  archived before loss   tree size {arch} (root {arch_root[:16]}...)")
print(f"  restored               tree size {got} (root {got_root[:16]}...), "
      f"{r['segments_replayed']} archived segments replayed")
print(f"  RTO                    {rto} s  (disaster -> restored server ready, incl. verification)")
print(f"  RPO, archived data     {c['lost_archived']} of {int(arch)} acknowledged writes lost")
print(f"  RPO, unarchived window {c['lost_unarchived']} writes acknowledged in the {window} s "
      f"after the last archive run were lost (window = time since the last 5-minute run)")
print(f"  verify                 backup OK, restored data directory OK")
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY

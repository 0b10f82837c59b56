#!/usr/bin/env bash
# Restores the newest complete backup (or BACKUP) into an empty data directory, replaying the
# WAL archive when STEMEDB_WAL_ARCHIVE is set (up to TREE_SIZE when given), then verifies it.
# The server must be stopped and DATA_DIR must be absent or empty. See docs/disaster-recovery.md.
# Usage: scripts/stemedb-restore.sh DATA_DIR [BACKUP] [TREE_SIZE]
#   STEMEDB_BACKUP_ROOT (default /var/backups/stemedb), STEMEDB_WAL_ARCHIVE (dir or s3://…),
#   STEMEDB_BIN (default stemedb)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 DATA_DIR [BACKUP] [TREE_SIZE]" >&2; exit 2; }
data_dir=$1
root=${STEMEDB_BACKUP_ROOT:-/var/backups/stemedb}
bin=${STEMEDB_BIN:-stemedb}
backup=${2:-}
if [ -z "$backup" ]; then
  backup=$(find "$root" -mindepth 1 -maxdepth 1 -type d -name '2*' \
    -exec test -f '{}/manifest.json' ';' -print | sort | tail -n 1)
  [ -n "$backup" ] || { echo "no complete backup under $root" >&2; exit 1; }
fi
args=(restore --from "$backup" --data-dir "$data_dir")
if [ -n "${STEMEDB_WAL_ARCHIVE:-}" ]; then
  args+=(--wal-archive "$STEMEDB_WAL_ARCHIVE")
  if [ -n "${3:-}" ]; then args+=(--to-tree-size "$3"); fi
fi
echo "restoring $backup into $data_dir"
"$bin" "${args[@]}"
"$bin" verify "$data_dir"
echo "restored. After a restore, archive this server's WAL to a NEW prefix (its history now"
echo "differs from the archive's after the restore point); see docs/disaster-recovery.md."

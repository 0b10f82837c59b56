#!/usr/bin/env bash
# Takes a timestamped backup and keeps the newest N complete ones. Run by stemedb-backup.service
# (daily); safe to run by hand. Settings (environment, e.g. /etc/stemedb/stemedb.env):
#   STEMEDB_DATA_DIR      data directory            (default /var/lib/stemedb/data)
#   STEMEDB_BACKUP_ROOT   where backups go          (default /var/backups/stemedb)
#   STEMEDB_BACKUP_KEEP   complete backups to keep  (default 7)
#   STEMEDB_BIN           the stemedb binary        (default: stemedb on PATH)
# A backup directory is complete when it exists under its final name (the command writes to
# .NAME.partial and renames at the end); leftovers of interrupted runs are removed here.
set -euo pipefail
data_dir=${STEMEDB_DATA_DIR:-/var/lib/stemedb/data}
root=${STEMEDB_BACKUP_ROOT:-/var/backups/stemedb}
keep=${STEMEDB_BACKUP_KEEP:-7}
bin=${STEMEDB_BIN:-stemedb}
case $keep in ''|*[!0-9]*) echo "STEMEDB_BACKUP_KEEP must be a number" >&2; exit 2 ;; esac
[ "$keep" -ge 1 ] || { echo "STEMEDB_BACKUP_KEEP must be at least 1" >&2; exit 2; }
mkdir -p "$root"
name=$(date -u +%Y%m%dT%H%M%SZ)
"$bin" backup --data-dir "$data_dir" --to "$root/$name"
# Interrupted runs leave .NAME.partial directories: remove those older than a day.
find "$root" -mindepth 1 -maxdepth 1 -type d -name '.*.partial' -mmin +1440 -exec rm -rf {} +
# Keep the newest $keep complete backups (names sort by time).
mapfile -t complete < <(find "$root" -mindepth 1 -maxdepth 1 -type d -name '2*' \
  -exec test -f '{}/manifest.json' ';' -print | sort)
excess=$(( ${#complete[@]} - keep ))
for (( i = 0; i < excess; i++ )); do
  echo "removing old backup ${complete[$i]}"
  rm -rf -- "${complete[$i]}"
done

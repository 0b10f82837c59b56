#!/usr/bin/env bash
# Verifies the newest complete backup (every file hash, every signature and id, the Merkle root
# against the signed checkpoint). Run weekly by stemedb-verify.service; exits non-zero on any
# mismatch, so the unit fails and alerting (OnFailure=, or the journal) sees it.
#   STEMEDB_BACKUP_ROOT (default /var/backups/stemedb), STEMEDB_BIN (default stemedb)
set -euo pipefail
root=${STEMEDB_BACKUP_ROOT:-/var/backups/stemedb}
bin=${STEMEDB_BIN:-stemedb}
latest=$(find "$root" -mindepth 1 -maxdepth 1 -type d -name '2*' \
  -exec test -f '{}/manifest.json' ';' -print | sort | tail -n 1)
if [ -z "$latest" ]; then
  echo "no complete backup under $root" >&2
  exit 1
fi
exec "$bin" verify "$latest"

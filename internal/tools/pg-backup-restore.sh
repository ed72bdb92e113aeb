#!/usr/bin/env bash
# Back up a OneProtect PostgreSQL database with pg_dump and restore it into another with
# pg_restore: the round trip the README's "Backup and restore" describes, and what
# TestPostgresBackupRestore runs against a database under load.
#
#   internal/tools/pg-backup-restore.sh SOURCE_URL TARGET_URL [DUMP_FILE]
#
# SOURCE_URL may be serving: pg_dump reads one consistent snapshot and blocks no writer.
# TARGET_URL must name an existing, empty database (createdb); stop the replicas that will
# use it until the restore is done. DUMP_FILE (default: a temporary file, removed) keeps the
# dump, in pg_dump's custom format.
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
	echo "usage: $0 SOURCE_URL TARGET_URL [DUMP_FILE]" >&2
	exit 2
fi
src=$1 dst=$2
dump=${3:-}
if [[ -z $dump ]]; then
	dump=$(mktemp -t oneprotect-XXXXXX.dump)
	trap 'rm -f "$dump"' EXIT
fi

pg_dump --format=custom --no-owner --file="$dump" --dbname="$src"
pg_restore --no-owner --exit-on-error --single-transaction --dbname="$dst" "$dump"
echo "restored $(du -h "$dump" | cut -f1) dump into the target database"

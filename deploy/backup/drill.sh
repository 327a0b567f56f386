#!/usr/bin/env bash
# The restore drill: restores a backup into scratch databases beside the real ones (<name>_drill on
# the same server), checks them with verify.sh, drops them, and prints how long each phase took,
# to compare with the RTO (4 hours). The live databases are not touched.
#
#   deploy/backup/drill.sh [BACKUP_ID | latest]
#
# Settings as for restore.sh (lib.sh); the database URLs need a user allowed to create databases.

# shellcheck source=deploy/backup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DRILL_URLS=()

drop_drill_databases() {
    local url
    for url in "${DRILL_URLS[@]}"; do
        sql "$(maintenance_url "$url")" -v name="$(database_name "$url")" \
            <<<'DROP DATABASE IF EXISTS :"name" WITH (FORCE);' || log "could not drop $(database_name "$url")"
    done
}

main() {
    (($# <= 1)) || {
        echo "usage: ${0##*/} [BACKUP_ID | latest]" >&2
        exit 2
    }
    local here backup_id service url drill_url started restore_seconds
    here="$(dirname "${BASH_SOURCE[0]}")"
    backup_id="$(resolve_backup_id "${1:-latest}")"

    while read -r service url; do
        drill_url="$(with_database "$url" "$(database_name "$url")_drill")"
        export "AIGRONOVA__${service^^}__DATABASE_URL=$drill_url"
        DRILL_URLS+=("$drill_url")
    done < <(service_databases)
    ((${#DRILL_URLS[@]} > 0)) || die "no AIGRONOVA__<SERVICE>__DATABASE_URL variable holds a postgres:// URL"
    trap drop_drill_databases EXIT

    started="$SECONDS"
    "$here/restore.sh" --replace "$backup_id"
    restore_seconds=$((SECONDS - started))
    started="$SECONDS"
    "$here/verify.sh" "$backup_id"
    log "drill of backup $backup_id passed: restore ${restore_seconds} s, verify $((SECONDS - started)) s (RTO: 4 h)"
}

main "$@"

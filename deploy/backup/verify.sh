#!/usr/bin/env bash
# Checks restored databases against a backup's manifest: every table the backup counted exists
# with the same number of rows, and no table is there that the backup did not have. Exits 1 and
# lists every difference when one is found.
#
#   deploy/backup/verify.sh [BACKUP_ID | latest]
#
# The databases are those the AIGRONOVA__<SERVICE>__DATABASE_URL variables name (lib.sh).

# shellcheck source=deploy/backup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Compares one database's tables and row counts with the manifest; prints each difference.
verify_row_counts() { # $1 service
    local service="$1" name url expected actual differences
    name="AIGRONOVA__${service^^}__DATABASE_URL"
    url="${!name:-}"
    [[ -n "$url" ]] || die "$service is in the backup but $name is not set"

    awk -F'\t' -v service="$service" '$1 == "rows" && $2 == service { print $3 "\t" $4 }' \
        "$WORKDIR/manifest.tsv" | LC_ALL=C sort >"$WORKDIR/$service.expected"
    if ! sql "$url" <<<"$COUNT_ROWS_SQL" >"$WORKDIR/$service.counted"; then
        log "$service: cannot count the rows of database $(database_name "$url")"
        return 1
    fi
    LC_ALL=C sort "$WORKDIR/$service.counted" >"$WORKDIR/$service.actual"

    # join prints: table, rows in the backup, rows now ("-" where the table is missing)
    differences="$(LC_ALL=C join -t $'\t' -a 1 -a 2 -e - -o 0,1.2,2.2 \
        "$WORKDIR/$service.expected" "$WORKDIR/$service.actual" | awk -F'\t' '$2 != $3')"
    if [[ -n "$differences" ]]; then
        while IFS=$'\t' read -r table expected actual; do
            log "$service: $table: $expected rows in the backup, $actual now"
        done <<<"$differences"
        return 1
    fi
    log "$service: $(wc -l <"$WORKDIR/$service.expected") tables, row counts match"
}

# The audit log's Merkle roots (`audit` lines, see record_audit_roots in backup.sh). No service
# keeps an audit log yet, so no backup has them; a manifest that does comes from a newer
# backup.sh than this one and is refused rather than passed unchecked.
verify_audit_roots() { # $1 service
    if awk -F'\t' -v service="$1" '$1 == "audit" && $2 == service { found = 1 } END { exit !found }' \
        "$WORKDIR/manifest.tsv"; then
        log "$1: the manifest records audit-log Merkle roots, which this verify.sh cannot check"
        return 1
    fi
}

main() {
    (($# <= 1)) || {
        echo "usage: ${0##*/} [BACKUP_ID | latest]" >&2
        exit 2
    }
    require_tools psql join awk
    make_workdir
    BACKUP_ID="$(resolve_backup_id "${1:-latest}")"
    target_get "$BACKUP_ID" manifest.tsv "$WORKDIR/manifest.tsv"
    check_manifest_format "$WORKDIR/manifest.tsv"

    local service failed=0 checked=0 wanted=" ${AIGRONOVA_BACKUP_SERVICES:-} "
    while IFS= read -r service; do
        if [[ -n "${AIGRONOVA_BACKUP_SERVICES:-}" && "$wanted" != *" $service "* ]]; then
            continue
        fi
        checked=$((checked + 1))
        verify_row_counts "$service" || failed=1
        verify_audit_roots "$service" || failed=1
    done < <(awk -F'\t' '$1 == "dump" { print $2 }' "$WORKDIR/manifest.tsv")
    ((checked > 0)) || die "backup $BACKUP_ID holds none of the services asked for"
    ((failed == 0)) || die "backup $BACKUP_ID: the databases differ from the backup"
    log "backup $BACKUP_ID: $checked databases verified"
}

main "$@"

#!/usr/bin/env bash
# Checks restored databases against a backup's manifest: every table the backup counted exists
# with the same number of rows, and no table is there that the backup did not have; where the
# backup recorded an audit log's Merkle roots, each tenant's log has the same size and root again.
# Exits 1 and lists every difference when one is found.
#
#   deploy/backup/verify.sh [BACKUP_ID | latest]
#
# The databases are those the AIGRONOVA__<SERVICE>__DATABASE_URL variables name (lib.sh). A
# database with an audit log needs the `aigronova` binary (AIGRONOVA_BIN, default: aigronova on
# the PATH).

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

# The audit log's Merkle roots (`audit` lines, see record_audit_roots in backup.sh), recomputed by
# `aigronova audit roots` from the restored leaf texts: every tenant of the backup has the same
# number of entries and the same root, and no other tenant has entries. A row edited, deleted,
# added or reordered changes the root of its tenant, even where the row counts still match.
verify_audit_roots() { # $1 service
    local service="$1" name url audited bin="${AIGRONOVA_BIN:-aigronova}" differences tenant size root
    local now_size now_root before now
    name="AIGRONOVA__${service^^}__DATABASE_URL"
    url="${!name:-}"
    [[ -n "$url" ]] || die "$service is in the backup but $name is not set"

    awk -F'\t' -v service="$service" '$1 == "audit" && $2 == service { print $3 "\t" $4 "\t" $5 }' \
        "$WORKDIR/manifest.tsv" | LC_ALL=C sort >"$WORKDIR/$service.roots.expected"
    # A database that has an audit log now is checked even when the backup recorded no tenant.
    if ! audited="$(sql "$url" <<<"SELECT to_regclass('audit_entries') IS NOT NULL;")"; then
        log "$service: cannot look for an audit log in database $(database_name "$url")"
        return 1
    fi
    if [[ ! -s "$WORKDIR/$service.roots.expected" && "$audited" != t ]]; then
        return 0
    fi
    if ! command -v "$bin" >/dev/null 2>&1; then
        log "$service: keeps an audit log, and $bin (AIGRONOVA_BIN) is not found to check its Merkle roots"
        return 1
    fi
    if ! "$bin" audit roots --database-url "$url" >"$WORKDIR/$service.roots.counted"; then
        log "$service: aigronova audit roots failed on database $(database_name "$url")"
        return 1
    fi
    LC_ALL=C sort "$WORKDIR/$service.roots.counted" >"$WORKDIR/$service.roots.actual"

    # join prints: tenant, entries and root in the backup, entries and root now ("-" where missing)
    differences="$(LC_ALL=C join -t $'\t' -a 1 -a 2 -e - -o 0,1.2,1.3,2.2,2.3 \
        "$WORKDIR/$service.roots.expected" "$WORKDIR/$service.roots.actual" | awk -F'\t' '$2 != $4 || $3 != $5')"
    if [[ -n "$differences" ]]; then
        while IFS=$'\t' read -r tenant size root now_size now_root; do
            before="size $size, root $root in the backup"
            now="size $now_size, root $now_root now"
            [[ "$size" == - ]] && before="no entries in the backup"
            [[ "$now_size" == - ]] && now="no entries now"
            log "$service: tenant $tenant: audit log: $before; $now"
        done <<<"$differences"
        return 1
    fi
    log "$service: audit logs of $(wc -l <"$WORKDIR/$service.roots.expected") tenants, sizes and Merkle roots match"
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

    local service failed=0 checked=0
    while IFS= read -r service; do
        wanted_service "$service" || continue
        checked=$((checked + 1))
        verify_row_counts "$service" || failed=1
        verify_audit_roots "$service" || failed=1
    done < <(awk -F'\t' '$1 == "dump" { print $2 }' "$WORKDIR/manifest.tsv")
    ((checked > 0)) || die "backup $BACKUP_ID holds none of the services asked for"
    ((failed == 0)) || die "backup $BACKUP_ID: the databases differ from the backup"
    log "backup $BACKUP_ID: $checked databases verified"
}

main "$@"

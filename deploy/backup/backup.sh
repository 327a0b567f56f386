#!/usr/bin/env bash
# Backs up every service database to the target: one encrypted pg_dump per service and a
# manifest with the exact row count of every table, taken in the same snapshot as the dump.
#
#   AIGRONOVA_BACKUP_TARGET=s3://bucket/postgres AIGRONOVA_BACKUP_PASSPHRASE_FILE=/run/key \
#   AIGRONOVA__GATEWAY__DATABASE_URL=postgres://… AIGRONOVA__HEALTHQUANTUM__DATABASE_URL=postgres://… \
#   deploy/backup/backup.sh
#
# Settings are described in lib.sh. AIGRONOVA_BACKUP_ID names the backup (default: the UTC time,
# e.g. 20260301T140000Z). Prints the backup id on standard output; logs go to standard error.
# A database with an audit log (ai-governance's) also needs the `aigronova` binary (AIGRONOVA_BIN,
# default: aigronova on the PATH), which recomputes the log's Merkle roots for the manifest.

# shellcheck source=deploy/backup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# The manifest line that closes the row counts of one database.
readonly END_OF_COUNTS='__aigronova_end_of_counts__'

# Dumps one database. A repeatable-read transaction exports its snapshot; the row counts are
# read in that transaction, and pg_dump and `aigronova audit roots` read that same snapshot while
# the transaction stays open, so the manifest matches the dump even while the service keeps writing.
backup_service() {
    local service="$1" url="$2" started="$SECONDS" snapshot line audited tables=0
    local file="$service.dump.gpg"

    coproc SESSION { sql "$url" 2>&1; }
    printf '%s\n' 'BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;' 'SELECT pg_export_snapshot();' >&"${SESSION[1]}"
    IFS= read -r -t 60 snapshot <&"${SESSION[0]}" || snapshot=""
    [[ "$snapshot" =~ ^[0-9A-F]+-[0-9A-F]+-[0-9]+$ ]] || die "$service: cannot open a snapshot: ${snapshot:-no answer}"

    printf '%s\n' "$COUNT_ROWS_SQL" "\\echo $END_OF_COUNTS" >&"${SESSION[1]}"
    while IFS= read -r -t 3600 line <&"${SESSION[0]}"; do
        [[ "$line" == "$END_OF_COUNTS" ]] && break
        [[ "$line" =~ ^[^$'\t']+$'\t'[0-9]+$ ]] || die "$service: unexpected answer while counting rows: $line"
        printf 'rows\t%s\t%s\n' "$service" "$line" >>"$MANIFEST"
        tables=$((tables + 1))
    done
    [[ "$line" == "$END_OF_COUNTS" ]] || die "$service: the row count did not finish"

    # Whether the database keeps an audit log: the table, found as the service finds it (search_path).
    printf '%s\n' "SELECT to_regclass('audit_entries') IS NOT NULL;" >&"${SESSION[1]}"
    IFS= read -r -t 60 audited <&"${SESSION[0]}" || audited=""
    [[ "$audited" == t || "$audited" == f ]] || die "$service: unexpected answer while looking for an audit log: ${audited:-none}"

    pg_dump --format=custom --snapshot="$snapshot" --dbname="$url" | encrypt "$WORKDIR/$file"
    if [[ "$audited" == t ]]; then
        record_audit_roots "$service" "$url" "$snapshot"
    fi

    printf '%s\n' 'COMMIT;' '\q' >&"${SESSION[1]}"
    wait "$SESSION_PID" || die "$service: the snapshot session failed"

    printf 'database\t%s\t%s\n' "$service" "$(database_name "$url")" >>"$MANIFEST"
    printf 'dump\t%s\t%s\t%s\t%s\n' "$service" "$file" "$(sha256_of "$WORKDIR/$file")" \
        "$(stat -c %s "$WORKDIR/$file")" >>"$MANIFEST"
    target_put "$WORKDIR/$file" "$BACKUP_ID" "$file"
    log "$service: $tables tables, $(stat -c %s "$WORKDIR/$file") bytes encrypted, $((SECONDS - started)) s"
}

# The audit log's Merkle roots, one manifest line per tenant: `audit <service> <tenant> <entries>
# <root>`, the RFC 6962 root that `aigronova audit roots` recomputes from the stored leaf texts
# (trusting no stored hash), read in the dump's snapshot (the session of backup_service holds it
# open). verify.sh recomputes them on the restored database.
record_audit_roots() { # $1 service, $2 url, $3 exported snapshot
    local service="$1" url="$2" snapshot="$3" bin="${AIGRONOVA_BIN:-aigronova}" line tenants=0
    command -v "$bin" >/dev/null 2>&1 ||
        die "$service: keeps an audit log, and $bin (AIGRONOVA_BIN) is not found to compute its Merkle roots"
    if ! "$bin" audit roots --database-url "$url" --snapshot "$snapshot" >"$WORKDIR/$service.roots"; then
        die "$service: aigronova audit roots failed"
    fi
    while IFS= read -r line; do
        [[ "$line" =~ ^[^$'\t']+$'\t'[0-9]+$'\t'[0-9a-f]{64}$ ]] ||
            die "$service: unexpected line from aigronova audit roots: $line"
        printf 'audit\t%s\t%s\n' "$service" "$line" >>"$MANIFEST"
        tenants=$((tenants + 1))
    done <"$WORKDIR/$service.roots"
    log "$service: audit log roots of $tenants tenants recorded"
}

main() {
    require_tools psql pg_dump gpg sha256sum
    make_workdir
    PASSPHRASE_FILE="$(passphrase_file)"
    target_url >/dev/null
    BACKUP_ID="${AIGRONOVA_BACKUP_ID:-$(date -u +%Y%m%dT%H%M%SZ)}"
    [[ "$BACKUP_ID" =~ ^[0-9A-Za-z._-]+$ ]] || die "AIGRONOVA_BACKUP_ID may hold letters, digits, '.', '_' and '-' only"
    MANIFEST="$WORKDIR/manifest.tsv"

    local databases entry started="$SECONDS"
    mapfile -t databases < <(service_databases)
    ((${#databases[@]} > 0)) || die "no AIGRONOVA__<SERVICE>__DATABASE_URL variable holds a postgres:// URL"
    {
        printf 'format\t%s\n' "$MANIFEST_FORMAT"
        printf 'backup\t%s\n' "$BACKUP_ID"
        printf 'created\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
        printf 'pg_dump\t%s\n' "$(pg_dump --version)"
    } >"$MANIFEST"

    log "backup $BACKUP_ID of ${#databases[@]} databases"
    for entry in "${databases[@]}"; do
        backup_service "${entry%% *}" "${entry#* }"
    done
    # The manifest goes last: a backup without one is incomplete and never restored.
    target_put "$MANIFEST" "$BACKUP_ID" manifest.tsv
    log "backup $BACKUP_ID complete in $((SECONDS - started)) s"
    printf '%s\n' "$BACKUP_ID"
}

main "$@"

#!/usr/bin/env bash
# Restores a backup made by backup.sh into the databases the AIGRONOVA__<SERVICE>__DATABASE_URL
# variables name, creating each database when it does not exist.
#
#   deploy/backup/restore.sh [--replace] [BACKUP_ID | latest]
#
# A database that exists and holds tables is left alone and the restore stops, unless --replace
# is given: then it is dropped (connections closed) and created again. Every dump is checked
# against the manifest's SHA-256 and decrypted with its integrity check before any database is
# touched; each database is restored in one transaction. The decrypted dumps live only in a
# private temporary folder (TMPDIR) that is removed on exit. Settings are described in lib.sh.

# shellcheck source=deploy/backup/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
    echo "usage: ${0##*/} [--replace] [BACKUP_ID | latest]" >&2
    exit 2
}

# The URL of `service` from its AIGRONOVA__<SERVICE>__DATABASE_URL variable.
url_of() {
    local name="AIGRONOVA__${1^^}__DATABASE_URL"
    [[ -n "${!name:-}" ]] || die "$1 is in the backup but $name is not set"
    printf '%s' "${!name}"
}

# How many tables the database holds, or "absent" when it does not exist.
table_count() { # $1 url
    local name exists
    name="$(database_name "$1")"
    exists="$(sql "$(maintenance_url "$1")" -v name="$name" <<<"SELECT count(*) FROM pg_database WHERE datname = :'name';")"
    if [[ "$exists" != 1 ]]; then
        printf 'absent'
    else
        sql "$1" <<<"SELECT count(*) FROM pg_catalog.pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema');"
    fi
}

# Stops before anything is written when a target database holds tables and --replace is absent.
check_restorable() { # $1 service
    local url tables
    url="$(url_of "$1")"
    tables="$(table_count "$url")"
    if [[ "$tables" != absent && "$tables" != 0 && "$REPLACE" != 1 ]]; then
        die "$1: database $(database_name "$url") already holds $tables tables; restore into another database or pass --replace"
    fi
}

prepare_database() { # $1 service, $2 url
    local name maintenance tables
    name="$(database_name "$2")"
    maintenance="$(maintenance_url "$2")"
    tables="$(table_count "$2")"
    if [[ "$tables" != absent && "$tables" != 0 ]]; then
        log "$1: dropping database $name (--replace)"
        sql "$maintenance" -v name="$name" <<<'DROP DATABASE :"name" WITH (FORCE);'
        tables=absent
    fi
    if [[ "$tables" == absent ]]; then
        sql "$maintenance" -v name="$name" <<<'CREATE DATABASE :"name";'
    fi
}

# Fetches one dump, checks it against the manifest and decrypts it, without touching a database.
fetch_dump() { # $1 service, $2 dump file name, $3 sha256
    local service="$1" file="$WORKDIR/$2"
    url_of "$service" >/dev/null
    target_get "$BACKUP_ID" "$2" "$file"
    [[ "$(sha256_of "$file")" == "$3" ]] || die "$service: $2 does not match the manifest's checksum"
    # OpenPGP's integrity check fails only at the end of the stream, so decrypt fully before
    # pg_restore sees a byte: a wrong passphrase or a damaged file stops here.
    decrypt "$file" >"$WORKDIR/$service.dump" || die "$service: $2 does not decrypt (wrong passphrase or damaged file)"
    rm -f "$file"
}

restore_service() { # $1 service
    local service="$1" url started="$SECONDS"
    url="$(url_of "$service")"
    prepare_database "$service" "$url"
    pg_restore --no-owner --no-acl --exit-on-error --single-transaction --dbname="$url" "$WORKDIR/$service.dump"
    rm -f "$WORKDIR/$service.dump"
    log "$service: restored into $(database_name "$url") in $((SECONDS - started)) s"
}

main() {
    REPLACE=0
    local positional=()
    while (($# > 0)); do
        case "$1" in
            --replace) REPLACE=1 ;;
            -h | --help) usage ;;
            -*) usage ;;
            *) positional+=("$1") ;;
        esac
        shift
    done
    ((${#positional[@]} <= 1)) || usage

    require_tools psql pg_restore gpg sha256sum
    make_workdir
    PASSPHRASE_FILE="$(passphrase_file)"
    BACKUP_ID="$(resolve_backup_id "${positional[0]:-latest}")"
    target_get "$BACKUP_ID" manifest.tsv "$WORKDIR/manifest.tsv"
    check_manifest_format "$WORKDIR/manifest.tsv"

    local kind service file sum _size services=() started="$SECONDS"
    log "restoring backup $BACKUP_ID"
    # Every dump is fetched, checked and decrypted before the first database is touched.
    while IFS=$'\t' read -r kind service file sum _size; do
        [[ "$kind" == dump ]] || continue
        wanted_service "$service" || continue
        fetch_dump "$service" "$file" "$sum"
        services+=("$service")
    done <"$WORKDIR/manifest.tsv"
    ((${#services[@]} > 0)) || die "backup $BACKUP_ID holds none of the services asked for"
    for service in "${services[@]}"; do
        check_restorable "$service"
    done
    for service in "${services[@]}"; do
        restore_service "$service"
    done
    log "restored ${#services[@]} databases from $BACKUP_ID in $((SECONDS - started)) s; run verify.sh $BACKUP_ID next"
}

main "$@"

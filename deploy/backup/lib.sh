# shellcheck shell=bash
# What backup.sh, restore.sh and verify.sh share: settings, the backup target (file:// or s3://),
# encryption, and the list of service databases. Sourced, never run.
#
# Settings (environment variables):
#   AIGRONOVA_BACKUP_TARGET           file:///path/to/folder or s3://bucket/prefix (required)
#   AIGRONOVA_BACKUP_PASSPHRASE_FILE  file holding the encryption passphrase (preferred), or
#   AIGRONOVA_BACKUP_PASSPHRASE       the passphrase itself
#   AIGRONOVA__<SERVICE>__DATABASE_URL  each service's PostgreSQL URL, exactly as the services read
#                                     it; every such variable with a postgres:// URL is included
#   AIGRONOVA_BACKUP_SERVICES         optional: only these services (space-separated, lower case;
#                                     ai-governance or ai_governance alike)
#   AIGRONOVA_BACKUP_S3_SSE_KMS_KEY   optional: KMS key for server-side encryption of uploads
#   AIGRONOVA_BIN                     the `aigronova` binary (default: aigronova on the PATH), which
#                                     backup.sh and verify.sh run as `aigronova audit roots` on a
#                                     database that keeps an audit log (ai-governance's)
#
# Passwords in database URLs and the passphrase are never printed.

set -euo pipefail
umask 077

# The format of manifest.tsv; verify.sh and restore.sh refuse manifests they do not know.
readonly MANIFEST_FORMAT=1

log() {
    printf '%s %s: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${0##*/}" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

require_tools() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (Debian: postgresql-client, gnupg; S3 targets: awscli)"
    done
}

# A scratch folder removed on exit; gpg gets its own home there so no keyring is touched.
make_workdir() {
    WORKDIR="$(mktemp -d "${TMPDIR:-/tmp}/aigronova-backup.XXXXXX")"
    trap 'rm -rf "$WORKDIR"' EXIT
    export GNUPGHOME="$WORKDIR/gnupg"
    mkdir -m 700 "$GNUPGHOME"
}

passphrase_file() {
    if [[ -n "${AIGRONOVA_BACKUP_PASSPHRASE_FILE:-}" ]]; then
        [[ -r "$AIGRONOVA_BACKUP_PASSPHRASE_FILE" ]] || die "AIGRONOVA_BACKUP_PASSPHRASE_FILE is not readable"
        printf '%s' "$AIGRONOVA_BACKUP_PASSPHRASE_FILE"
    elif [[ -n "${AIGRONOVA_BACKUP_PASSPHRASE:-}" ]]; then
        printf '%s' "$AIGRONOVA_BACKUP_PASSPHRASE" >"$WORKDIR/passphrase"
        printf '%s' "$WORKDIR/passphrase"
    else
        die "set AIGRONOVA_BACKUP_PASSPHRASE_FILE (or AIGRONOVA_BACKUP_PASSPHRASE)"
    fi
}

# AES-256 with OpenPGP's integrity check (MDC): a tampered file or a wrong passphrase fails.
encrypt() { # stdin -> $1
    gpg --batch --quiet --yes --pinentry-mode loopback --passphrase-file "$PASSPHRASE_FILE" \
        --symmetric --cipher-algo AES256 --compress-algo none --output "$1"
}

decrypt() { # $1 -> stdout
    gpg --batch --quiet --pinentry-mode loopback --passphrase-file "$PASSPHRASE_FILE" --decrypt "$1"
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# --- the target -------------------------------------------------------------------------------

target_url() {
    local target="${AIGRONOVA_BACKUP_TARGET:-}"
    [[ -n "$target" ]] || die "set AIGRONOVA_BACKUP_TARGET to file:///folder or s3://bucket/prefix"
    case "$target" in
        file:///*) ;;
        s3://?*) require_tools aws ;;
        *) die "AIGRONOVA_BACKUP_TARGET must start with file:/// or s3://" ;;
    esac
    printf '%s' "${target%/}"
}

# Copies a local file to <target>/<backup id>/<name>.
target_put() { # $1 local file, $2 backup id, $3 name
    local target
    target="$(target_url)"
    case "$target" in
        file://*)
            mkdir -p "${target#file://}/$2"
            cp "$1" "${target#file://}/$2/$3.partial"
            mv "${target#file://}/$2/$3.partial" "${target#file://}/$2/$3"
            ;;
        s3://*)
            local sse=()
            if [[ -n "${AIGRONOVA_BACKUP_S3_SSE_KMS_KEY:-}" ]]; then
                sse=(--sse aws:kms --sse-kms-key-id "$AIGRONOVA_BACKUP_S3_SSE_KMS_KEY")
            fi
            aws s3 cp --only-show-errors "${sse[@]}" "$1" "$target/$2/$3"
            ;;
    esac
}

# Copies <target>/<backup id>/<name> to a local file.
target_get() { # $1 backup id, $2 name, $3 local file
    local target
    target="$(target_url)"
    case "$target" in
        file://*)
            [[ -f "${target#file://}/$1/$2" ]] || die "backup $1 has no $2"
            cp "${target#file://}/$1/$2" "$3"
            ;;
        s3://*) aws s3 cp --only-show-errors "$target/$1/$2" "$3" ;;
    esac
}

# The newest backup that is complete (its manifest is written last).
latest_backup_id() {
    local target id latest=""
    target="$(target_url)"
    case "$target" in
        file://*)
            for id in "${target#file://}"/*/manifest.tsv; do
                [[ -f "$id" ]] || continue
                id="${id%/manifest.tsv}"
                id="${id##*/}"
                [[ "$id" > "$latest" ]] && latest="$id"
            done
            ;;
        s3://*)
            while read -r _ id; do
                id="${id%/}"
                if aws s3 ls "$target/$id/manifest.tsv" >/dev/null 2>&1 && [[ "$id" > "$latest" ]]; then
                    latest="$id"
                fi
            done < <(aws s3 ls "$target/" | awk '$1 == "PRE" { print $1, $2 }')
            ;;
    esac
    [[ -n "$latest" ]] || die "no complete backup under the target"
    printf '%s' "$latest"
}

resolve_backup_id() { # $1: an id or "latest"
    local id="${1:-latest}"
    if [[ "$id" == latest ]]; then
        latest_backup_id
    else
        [[ "$id" =~ ^[0-9A-Za-z._-]+$ ]] || die "not a backup id: $id"
        printf '%s' "$id"
    fi
}

check_manifest_format() { # $1 manifest file
    local format
    format="$(awk -F'\t' '$1 == "format" { print $2; exit }' "$1")"
    [[ "$format" == "$MANIFEST_FORMAT" ]] || die "manifest format ${format:-missing} is not $MANIFEST_FORMAT"
}

# --- databases --------------------------------------------------------------------------------

# Whether the service $1 (as its variable names it, ai_governance) is one AIGRONOVA_BACKUP_SERVICES
# asks for, where a dash stands for an underscore (ai-governance); every one when it is unset.
wanted_service() { # $1 service
    local wanted=" ${AIGRONOVA_BACKUP_SERVICES:-} "
    [[ -z "${AIGRONOVA_BACKUP_SERVICES:-}" || "${wanted//-/_}" == *" $1 "* ]]
}

# Prints "<service> <url>" for every AIGRONOVA__<SERVICE>__DATABASE_URL holding a PostgreSQL URL.
service_databases() {
    local name service url
    while IFS='=' read -r name _; do
        [[ "$name" =~ ^AIGRONOVA__([A-Z0-9_]+)__DATABASE_URL$ ]] || continue
        service="${BASH_REMATCH[1],,}"
        url="${!name}"
        [[ "$url" == postgres://* || "$url" == postgresql://* ]] || continue
        wanted_service "$service" || continue
        printf '%s %s\n' "$service" "$url"
    done < <(env | LC_ALL=C sort)
}

# The database name in a URL: postgres://user:pw@host:5432/name?sslmode=require -> name
database_name() {
    local rest="${1#*://}"
    rest="${rest#*/}"
    printf '%s' "${rest%%\?*}"
}

# The same URL naming another database on the same server.
with_database() { # $1 url, $2 database name
    local url="$1" name query=""
    name="$(database_name "$url")"
    [[ "$url" == *\?* ]] && query="?${url#*\?}"
    local base="${url%%\?*}"
    printf '%s/%s%s' "${base%/"$name"}" "$2" "$query"
}

# The same server's maintenance database, to create and drop databases from.
maintenance_url() {
    with_database "$1" postgres
}

# psql that stops on the first error and prints bare, tab-separated rows.
sql() { # $1 url, rest: psql arguments
    local url="$1"
    shift
    psql -X -q -v ON_ERROR_STOP=1 -A -t -F $'\t' --dbname="$url" "$@"
}

# For each table outside the system schemas: "<schema>.<table>\t<rows>", counted exactly.
# Run inside the caller's transaction when fed to a psql session.
readonly COUNT_ROWS_SQL="SELECT format('SELECT %L, count(*) FROM %I.%I', schemaname || '.' || tablename, schemaname, tablename)
  FROM pg_catalog.pg_tables
 WHERE schemaname NOT IN ('pg_catalog', 'information_schema') AND schemaname NOT LIKE 'pg\\_%'
 ORDER BY schemaname, tablename \\gexec"

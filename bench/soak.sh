#!/usr/bin/env bash
# Soak and load test of the release gateway (docs/soak.md), in one command:
#
#   bench/soak.sh [conns] [soak]        (both by default, in that order)
#
# conns: CONNS (10,000) keep-alive connections held open at once for CONNS_DURATION (60 s),
#        each sending a request with a valid token every CONNS_DELAY_MS (2,000 ms). The
#        connections the gateway really holds are counted with ss (established on its port,
#        less its listener's accept queue), not just the ones wrk asked for. Then the load
#        stops, the gateway idles past the upstream's keep-alive timeout, and a short run
#        (AFTER_CONNECTIONS connections, 5 s) checks that the connections left in its upstream
#        pool from the burst cause no errors.
# soak:  a fresh gateway under a steady load for SOAK_DURATION (600 s): SOAK_CONNECTIONS (20)
#        connections, each waiting SOAK_DELAY_MS (10 ms) between requests (about 1,800 req/s
#        when the machine keeps up). The least-squares slope of the gateway's RSS over the
#        second half of the run must stay under SLOPE_MAX_KIB_MIN (256 KiB/min).
#
# Every SAMPLE_EVERY (10) seconds of each phase the gateway's RSS (VmRSS), peak RSS (VmHWM),
# threads, open file descriptors, client connections and upstream connections go into
# target/soak/<phase>.csv. Each phase counts non-2xx answers and socket errors (wrk) and the
# gateway's own error outcomes (its /metrics). Exit status 1 when a phase saw any error or the
# soak's slope is over the threshold; a summary is printed and kept in target/soak/summary.txt.
#
# Same pieces as bench/run.sh (bench/common.sh: the static issuer, the token minting, the
# gateway's config; bench/tokens.lua: every request the next of 1,000 valid tokens), on other
# ports (SOAK_PORT_BASE, 19000: upstream +0, issuer +1, upstream status +3, gateway +40, admin
# +41) and in another directory (target/soak), so it can run beside bench/run.sh.
#
# The upstream is nginx with one worker answering `return 200`, with the keep-alive limits
# of a real server rather than a benchmark's: it closes a connection idle for
# UPSTREAM_KEEPALIVE_TIMEOUT (60 s, as Tomcat and nginx are commonly set) and after
# UPSTREAM_KEEPALIVE_REQUESTS (1,000, nginx's default) requests.
#
# CONNS_ROUNDS (1) repeats the conns load on the same gateway, with the RSS CONNS_PAUSE (20)
# seconds after each round, to tell memory kept for reuse from memory that grows.
#
# Other knobs (environment): CONNS_THREADS=2 SOAK_THREADS=1 (wrk threads) AFTER_CONNECTIONS=200
# GATEWAY_EXTRA (more [server] lines for the gateway's config) SKIP_BUILD=1
set -euo pipefail
export CARGO_INCREMENTAL=${CARGO_INCREMENTAL:-0}
BENCH_WORK=${BENCH_WORK:-$(cd "$(dirname "$0")/.." && pwd)/target/soak}
# shellcheck source=bench/common.sh
source "$(dirname "$0")/common.sh"

PORT_BASE=${SOAK_PORT_BASE:-19000}
P_UPSTREAM=$PORT_BASE
P_ISSUER=$((PORT_BASE + 1))
P_UPSTREAM_H2=$((PORT_BASE + 2))
P_UPSTREAM_STATUS=$((PORT_BASE + 3))
P_GATEWAY=$((PORT_BASE + 40))
P_GATEWAY_ADMIN=$((PORT_BASE + 41))
AUTHORITY=http://127.0.0.1:$P_ISSUER

CONNS=${CONNS:-10000}
CONNS_DURATION=${CONNS_DURATION:-60}
CONNS_DELAY_MS=${CONNS_DELAY_MS:-2000}
CONNS_THREADS=${CONNS_THREADS:-2}
CONNS_ROUNDS=${CONNS_ROUNDS:-1}
CONNS_PAUSE=${CONNS_PAUSE:-20}
AFTER_CONNECTIONS=${AFTER_CONNECTIONS:-200}
SOAK_DURATION=${SOAK_DURATION:-600}
SOAK_CONNECTIONS=${SOAK_CONNECTIONS:-20}
SOAK_DELAY_MS=${SOAK_DELAY_MS:-10}
SOAK_THREADS=${SOAK_THREADS:-1}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
SLOPE_MAX_KIB_MIN=${SLOPE_MAX_KIB_MIN:-256}
export UPSTREAM_KEEPALIVE_TIMEOUT=${UPSTREAM_KEEPALIVE_TIMEOUT:-60}
export UPSTREAM_KEEPALIVE_REQUESTS=${UPSTREAM_KEEPALIVE_REQUESTS:-1000}
GATEWAY_EXTRA=${GATEWAY_EXTRA:-}
PHASES=("$@")
[ ${#PHASES[@]} -gt 0 ] || PHASES=(conns soak)
for phase in "${PHASES[@]}"; do
  case $phase in conns | soak) ;; *) die "unknown phase '$phase' (conns, soak)" ;; esac
done
LUA=$BENCH_REPO/bench/tokens.lua
URL=http://127.0.0.1:$P_GATEWAY$REQ_PATH
SUMMARY=$WORK/summary.txt
mkdir -p "$WORK"
: > "$SUMMARY"
FAILED=0

# ---------------------------------------------------------------- setup
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v curl >/dev/null; then
  install_apt curl
fi
[ "${SKIP_BUILD:-}" = 1 ] || build_gateway
log "minting 1000 tokens"
mint_tokens 1000 0
# File descriptors: the client connections, as many upstream ones again at worst, the logs.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [[ " ${PHASES[*]} " == *" conns "* ]] && [ "$(ulimit -n)" -lt $((CONNS + 1000)) ]; then
  die "ulimit -n is $(ulimit -n): $CONNS connections need more (raise the hard limit)"
fi

GW=""
SAMPLER=""
# shellcheck disable=SC2317 # called by the trap below
cleanup() {
  if [ -n "$SAMPLER" ]; then kill "$SAMPLER" 2>/dev/null || true; fi
  if [ -n "$GW" ]; then kill "$GW" 2>/dev/null || true; fi
  stop_upstream
}
trap cleanup EXIT

# The upstream and the issuer's files (bench/common.sh, with a real server's keep-alive
# limits), and stub_status for the count of connections the upstream accepted.
start_soak_upstream() {
  stop_upstream
  UPSTREAM_EXTRA_SERVERS="server { listen 127.0.0.1:$P_UPSTREAM_STATUS; location / { stub_status; } }" \
    start_upstream
  wait_http "http://127.0.0.1:$P_UPSTREAM/" || die "upstream not up"
  wait_http "$AUTHORITY/jwks.json" || die "issuer files not served"
}

# Connections the upstream has accepted so far, less this query's own.
upstream_accepts() {
  curl -fs "http://127.0.0.1:$P_UPSTREAM_STATUS/" | awk 'NR == 3 {print $1 - 1}'
}

start_gateway() { # phase
  local d=$WORK/$1
  mkdir -p "$d"
  gateway_config "$d/gateway.toml" "$GATEWAY_EXTRA"
  "$GATEWAY_BIN" serve --config "$d/gateway.toml" 2> "$d/gateway.log" &
  GW=$!
  wait_http "http://127.0.0.1:$P_GATEWAY_ADMIN/readyz" || die "gateway not ready (see $d/gateway.log)"
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $(cat "$WORK/issuer/one-token.txt")" "$URL")
  [ "$code" = 200 ] || die "a valid token got $code, not 200 (see $d/gateway.log)"
}

stop_gateway() {
  kill "$GW" 2>/dev/null || true
  wait "$GW" 2>/dev/null || true
  GW=""
}

# Connections on the gateway: established from clients (accepted or still in the listener's
# queue), the listener's accept queue, established to the upstream.
client_conns() { ss -Htn state established "( sport = :$P_GATEWAY )" | wc -l; }
accept_queue() { ss -Hltn "( sport = :$P_GATEWAY )" | awk '{q += $2} END {print q + 0}'; }
upstream_conns() { ss -Htn state established "( dport = :$P_UPSTREAM )" | wc -l; }

# Samples every SAMPLE_EVERY seconds into CSV until killed.
sampler() { # csv
  local t0 t
  t0=$(date +%s)
  echo "t_s,rss_kib,hwm_kib,threads,fds,client_conns,accept_queue,upstream_conns" > "$1"
  while kill -0 "$GW" 2>/dev/null; do
    t=$(($(date +%s) - t0))
    printf '%s,%s,%s,%s,%s,%s,%s,%s\n' "$t" "$(rss_kib "$GW")" "$(peak_rss_kib "$GW")" \
      "$(awk '/^Threads/ {print $2}' "/proc/$GW/status" 2>/dev/null || echo 0)" \
      "$(find "/proc/$GW/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" \
      "$(client_conns)" "$(accept_queue)" "$(upstream_conns)" >> "$1"
    sleep "$SAMPLE_EVERY"
  done
}
start_sampler() { sampler "$1" & SAMPLER=$!; }
stop_sampler() { kill "$SAMPLER" 2>/dev/null || true; wait "$SAMPLER" 2>/dev/null || true; SAMPLER=""; }

# wrk with tokens.lua: wrk_tokens OUT THREADS CONNECTIONS DURATION_S DELAY_MS
wrk_tokens() {
  TOKENS=$WORK/issuer/tokens.txt CYCLE=1 DELAY_MS=$5 wrk -t"$2" -c"$3" -d"$4"s --timeout 30s \
    -s "$LUA" "$URL" > "$1" 2>&1 || true
}
field() { sed -nE "s/^RESULT.*[ ]$1=([0-9]+).*/\1/p" "$2"; }
rate() { # wrk output -> requests per second
  local r d
  r=$(field requests "$1"); d=$(field duration_us "$1")
  echo $(( ${r:-0} * 1000000 / ${d:-1} ))
}

# The gateway's error outcomes (upstream errors, shed, denied, body too large) from /metrics.
# Not client_closed: wrk stops with requests in flight, and the gateway counts those as
# closed by the client (they are reported apart).
gateway_errors() {
  curl -fs "http://127.0.0.1:$P_GATEWAY_ADMIN/metrics" |
    awk '/^entragate_requests_total/ && !/outcome="(allowed|client_closed)"/ {s += $NF} END {print s + 0}'
}
client_closed() {
  curl -fs "http://127.0.0.1:$P_GATEWAY_ADMIN/metrics" |
    awk '/^entragate_requests_total\{outcome="client_closed"/ {s += $NF} END {print s + 0}'
}
# Warnings and errors in the gateway's log: how many, and the most frequent messages.
log_problems() { # log
  local n
  n=$(grep -cE '^[^ ]+ +(WARN|ERROR) ' "$1" || true)
  echo "gateway log: ${n:-0} WARN/ERROR lines"
  if [ "${n:-0}" != 0 ]; then
    grep -E '^[^ ]+ +(WARN|ERROR) ' "$1" | cut -d' ' -f2- | sed -E 's/ +/ /g; s/request_id="[^"]*"//; s/[0-9]+(\.[0-9]+)?(ms|us|s)?/N/g' |
      sort | uniq -c | sort -rn | head -n 5 | sed 's/^/  /'
  fi
}
gateway_metric_lines() {
  curl -fs "http://127.0.0.1:$P_GATEWAY_ADMIN/metrics" |
    awk '/^entragate_(requests_total|upstream_responses_total)/ && $NF != 0'
}

# Least-squares slope of rss_kib over the samples with t >= FROM, in KiB per minute.
slope_kib_min() { # csv from_s
  awk -F, -v from="$2" 'NR > 1 && $1 >= from {n++; sx += $1; sy += $2; sxx += $1 * $1; sxy += $1 * $2}
    END {d = n * sxx - sx * sx; if (n < 3 || d == 0) print "nan"; else printf "%.1f\n", 60 * (n * sxy - sx * sy) / d}' "$1"
}
csv_stat() { # csv column(1-based) min|max|first|last [from_s]
  awk -F, -v c="$2" -v what="$3" -v from="${4:-0}" 'NR > 1 && $1 >= from {
      v = $c; if (n == 0 || v < min) min = v; if (n == 0 || v > max) max = v; if (n == 0) first = v; last = v; n++ }
    END {if (what == "min") print min; else if (what == "max") print max; else if (what == "first") print first; else print last}' "$1"
}
kib_mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

report() { printf '%s\n' "$*" | tee -a "$SUMMARY"; }

# ---------------------------------------------------------------- phases
phase_conns() {
  local d=$WORK/conns out acc0 acc1 est queue held rps req non2xx errs gwerr after_req after_non2xx after_errs after_gw
  mkdir -p "$d"
  start_gateway conns
  acc0=$(upstream_accepts)
  start_sampler "$d/samples.csv"
  req=0; non2xx=0; errs=0; held=$CONNS
  local r rounds_rss=() held_rss=() wrk_pid t v
  for ((r = 1; r <= CONNS_ROUNDS; r++)); do
    log "conns: round $r of $CONNS_ROUNDS: $CONNS connections for ${CONNS_DURATION}s, a request every ${CONNS_DELAY_MS} ms each"
    out=$d/wrk-$r.txt
    wrk_tokens "$out" "$CONNS_THREADS" "$CONNS" "$CONNS_DURATION" "$CONNS_DELAY_MS" &
    wrk_pid=$!
    # What the gateway holds, at mid-run: established less those not yet accepted.
    for ((t = 0; t < CONNS_DURATION / 2; t++)); do
      sleep 1
      if [ $((t % 5)) = 4 ]; then
        log "conns: $((t + 1))s: established $(client_conns), accept queue $(accept_queue), upstream $(upstream_conns)"
      fi
    done
    est=$(client_conns)
    queue=$(accept_queue)
    held_rss+=("$(kib_mib "$(rss_kib "$GW")")")
    if [ $((est - queue)) -lt "$held" ]; then held=$((est - queue)); fi
    wait "$wrk_pid" || true
    # No RESULT line (wrk failed) counts as an error.
    v=$(field requests "$out"); req=$((req + ${v:-0}))
    v=$(field non2xx "$out"); non2xx=$((non2xx + ${v:-1}))
    v=$(field errors "$out"); errs=$((errs + ${v:-1}))
    rps=$(rate "$out")
    log "conns: $(grep -E 'Socket errors|Non-2xx|Requests/sec' "$out" | tr -s ' ' | paste -sd';' || true)"
    # RSS once the round's connections are closed.
    sleep "$CONNS_PAUSE"
    rounds_rss+=("$(kib_mib "$(rss_kib "$GW")")")
  done
  acc1=$(upstream_accepts)
  gwerr=$(gateway_errors)
  gateway_metric_lines > "$d/metrics-burst.txt" || true

  # After the burst: idle past the upstream's keep-alive timeout, then a short run.
  local idle=$((UPSTREAM_KEEPALIVE_TIMEOUT + 10))
  log "conns: idle ${idle}s (upstream keep-alive timeout ${UPSTREAM_KEEPALIVE_TIMEOUT}s), then $AFTER_CONNECTIONS connections for 5s"
  sleep "$idle"
  local idle_upstream
  idle_upstream=$(upstream_conns)
  wrk_tokens "$d/wrk-after.txt" 1 "$AFTER_CONNECTIONS" 5 ""
  after_req=$(field requests "$d/wrk-after.txt")
  after_non2xx=$(field non2xx "$d/wrk-after.txt")
  after_errs=$(field errors "$d/wrk-after.txt")
  after_gw=$(( $(gateway_errors) - gwerr ))
  local closed
  closed=$(client_closed)
  gateway_metric_lines > "$d/metrics-end.txt" || true
  stop_sampler
  local peak idle_rss end_rss
  peak=$(peak_rss_kib "$GW")
  idle_rss=$(csv_stat "$d/samples.csv" 2 first)
  end_rss=$(rss_kib "$GW")
  stop_gateway

  report "## conns ($(date -u +%FT%TZ))"
  report "connections requested: $CONNS (wrk -t$CONNS_THREADS, a request every ${CONNS_DELAY_MS} ms each, ${CONNS_DURATION}s, $CONNS_ROUNDS round(s))"
  report "connections held at $((CONNS_DURATION / 2))s: $held (fewest of the rounds; last: established $est, of which $queue still in the accept queue)"
  report "most established in a sample: $(csv_stat "$d/samples.csv" 6 max); gateway fds at most $(csv_stat "$d/samples.csv" 5 max)"
  report "requests: $req ($rps req/s in the last round); non-2xx: $non2xx; socket errors: $errs; gateway error outcomes: $gwerr"
  report "RSS with the connections held (mid-run of each round): ${held_rss[*]} MiB"
  report "RSS: start $(kib_mib "$idle_rss") MiB, peak $(kib_mib "$peak") MiB, after each round ${rounds_rss[*]} MiB, after the idle period $(kib_mib "$end_rss") MiB"
  report "upstream connections: opened $((acc1 - acc0)) during the rounds, most open at once $(csv_stat "$d/samples.csv" 8 max), open after ${idle}s idle: $idle_upstream"
  report "after the idle period: ${after_req:-0} requests on $AFTER_CONNECTIONS connections; non-2xx: ${after_non2xx:-?}; socket errors: ${after_errs:-?}; gateway error outcomes: $after_gw"
  report "in flight when wrk stopped (client_closed, both runs): $closed"
  report "$(log_problems "$d/gateway.log")"
  report "samples: $d/samples.csv"
  report ""
  if [ "$non2xx" != 0 ] || [ "$errs" != 0 ] || [ "$gwerr" != 0 ] ||
    [ "${after_non2xx:-1}" != 0 ] || [ "${after_errs:-1}" != 0 ] || [ "$after_gw" != 0 ]; then
    report "conns: FAILED (errors)"
    FAILED=1
  fi
  if [ "$held" -lt "$CONNS" ]; then
    report "conns: FAILED (held $held of $CONNS connections)"
    FAILED=1
  fi
}

phase_soak() {
  local d=$WORK/soak out acc0 acc1 req rps non2xx errs gwerr slope half
  mkdir -p "$d"
  start_gateway soak
  acc0=$(upstream_accepts)
  start_sampler "$d/samples.csv"
  log "soak: ${SOAK_DURATION}s, $SOAK_CONNECTIONS connections each waiting ${SOAK_DELAY_MS} ms between requests; RSS every ${SAMPLE_EVERY}s"
  out=$d/wrk.txt
  wrk_tokens "$out" "$SOAK_THREADS" "$SOAK_CONNECTIONS" "$SOAK_DURATION" "$SOAK_DELAY_MS"
  # One more sample after the load, then stop.
  sleep 1
  acc1=$(upstream_accepts)
  gwerr=$(gateway_errors)
  local closed
  closed=$(client_closed)
  gateway_metric_lines > "$d/metrics-end.txt" || true
  stop_sampler
  local peak
  peak=$(peak_rss_kib "$GW")
  stop_gateway
  req=$(field requests "$out")
  rps=$(rate "$out")
  non2xx=$(field non2xx "$out")
  errs=$(field errors "$out")
  half=$((SOAK_DURATION / 2))
  slope=$(slope_kib_min "$d/samples.csv" "$half")

  report "## soak ($(date -u +%FT%TZ))"
  report "load: wrk -t$SOAK_THREADS -c$SOAK_CONNECTIONS, ${SOAK_DELAY_MS} ms between requests on each, ${SOAK_DURATION}s"
  report "requests: ${req:-0} ($rps req/s); non-2xx: ${non2xx:-?}; socket errors: ${errs:-?}; gateway error outcomes: $gwerr"
  report "RSS: first sample $(kib_mib "$(csv_stat "$d/samples.csv" 2 first)") MiB, at ${half}s $(kib_mib "$(csv_stat "$d/samples.csv" 2 first "$half")") MiB, last $(kib_mib "$(csv_stat "$d/samples.csv" 2 last)") MiB; min $(kib_mib "$(csv_stat "$d/samples.csv" 2 min)"), max $(kib_mib "$(csv_stat "$d/samples.csv" 2 max)"), peak (VmHWM) $(kib_mib "$peak") MiB"
  report "RSS slope over the second half (t >= ${half}s, $(awk -F, -v f="$half" 'NR > 1 && $1 >= f' "$d/samples.csv" | wc -l) samples): $slope KiB/min (threshold $SLOPE_MAX_KIB_MIN)"
  report "upstream connections: opened $((acc1 - acc0)), open at once: $(csv_stat "$d/samples.csv" 8 min)-$(csv_stat "$d/samples.csv" 8 max); threads $(csv_stat "$d/samples.csv" 4 max); fds at most $(csv_stat "$d/samples.csv" 5 max)"
  report "in flight when wrk stopped (client_closed): $closed"
  report "$(log_problems "$d/gateway.log")"
  report "samples: $d/samples.csv"
  report ""
  if [ "${non2xx:-1}" != 0 ] || [ "${errs:-1}" != 0 ] || [ "$gwerr" != 0 ]; then
    report "soak: FAILED (errors)"
    FAILED=1
  fi
  if [ "$slope" = nan ] || awk -v s="$slope" -v m="$SLOPE_MAX_KIB_MIN" 'BEGIN {exit !(s > m)}'; then
    report "soak: FAILED (RSS slope $slope KiB/min, threshold $SLOPE_MAX_KIB_MIN)"
    FAILED=1
  fi
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
start_soak_upstream
report "# bench/soak.sh $(date -u +%FT%TZ): $(nproc) cores, load average $LOAD0, ulimit -n $(ulimit -n), somaxconn $(cat /proc/sys/net/core/somaxconn)"
report "code: $(git -C "$BENCH_REPO" log -1 --format='%h %s' 2>/dev/null || echo unknown)"
report "gateway: $GATEWAY_BIN; upstream keep-alive ${UPSTREAM_KEEPALIVE_TIMEOUT}s / $UPSTREAM_KEEPALIVE_REQUESTS requests"
report ""
for phase in "${PHASES[@]}"; do
  case $phase in
    conns) phase_conns ;;
    soak) phase_soak ;;
  esac
done
report "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$FAILED" = 0 ]; then report "result: PASS"; else report "result: FAIL"; fi
exit "$FAILED"

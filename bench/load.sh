#!/usr/bin/env bash
# brace's loopback load and chaos benches, with nginx as the floor and Portkey's and
# LiteLLM's gateways as peers, in one run.
#
#   bench/load.sh [OUT_DIR]
#
# Starts three instant simulated providers (crates/brace-bench simserver) and, in front of
# them, on 127.0.0.1:
#   - the gateway (release build of `examples/gateway`) with the three as OpenAI-compatible
#     providers (retry, breaker, failover, health, metrics, request ids: the configuration
#     of every gateway row);
#   - nginx (Debian's `nginx`, installed with apt-get if missing), the floor: a generated
#     configuration, one worker, the three providers as one upstream (primary, then the two
#     as backups, `proxy_next_upstream` on errors, timeouts, 429/500/502/503, `max_fails` 3),
#     upstream keep-alive, `proxy_buffering off` (streams pass through);
#   - Portkey's open-source gateway (npm `@portkey-ai/gateway`, pinned, installed into
#     $CARGO_TARGET_DIR/peers/portkey on first use; on Node.js), routed by an
#     `x-portkey-config` header: the three providers as fallback targets with one retry.
#     Non-streamed calls only (its streaming answers 500 on Node 20);
#   - LiteLLM's proxy (installed into its own virtual environment) with the same providers,
#     one retry and fallbacks.
# Then:
#   1. load (phase "load"): open loop at fixed RATES, direct-to-sim vs nginx vs the gateway;
#      at ROUND_RATE, ROUNDS rounds of direct, nginx, the gateway and each ROUND_VARIANTS
#      gateway back to back, each round in the order of a Williams design (see `williams`;
#      ROUNDS a multiple of N targets, 2N when N is odd, balances slots and predecessors
#      fully) (labels "direct open 1000 round N", "nginx open 1000 round N", "gateway open
#      1000 round N", "gateway-1w open 1000 round N"), so each added latency and CPU per
#      request is a same-round difference repeated ROUNDS times;
#   2. closed loop (phase "closed"): CLOSED_ROUNDS rounds of the closed-loop maximum
#      (32 workers) through direct, nginx, the gateway, its variants and the peers (labels
#      "<target> closed 32 round N");
#   3. 1000 concurrent slow streams (phase "streams", 2 s each) for peak RSS: direct, nginx,
#      the gateway over HTTP/1.1 upstreams, and a gateway configured
#      `http2_prior_knowledge: true` (labels "... streams 1000", "... streams 1000 h2"); the
#      providers' count of calls by HTTP version is recorded beside each;
#   4. chaos (phase "chaos"): primary failing 30%, then dead, through the gateway and nginx;
#      the secondary called directly is the baseline; the dead-primary phase is ROUNDS
#      rounds of "direct secondary R round N", "gateway dead R round N" and
#      "nginx dead R round N", each gateway primed first;
#   5. peers (phase "peers"): PEER_RATES (rates the peers sustain) through every target, and
#      Portkey's and LiteLLM's chaos at LL_CHAOS_RATE;
#   6. instructions (phase "instructions", not in the default PHASES; needs valgrind): the
#      user-space instructions nginx and the gateway each execute per request, counted by
#      callgrind (label "instructions <target>"), a measure the machine's load does not move;
#   7. stalled bodies (phase "stalled", not in the default PHASES): STALLED_CONNECTIONS
#      connections (300) each send 1 MiB of a request body and stop; a gateway with
#      `server.body_timeout: 5s` answers them 408 and closes them; its RSS is sampled idle,
#      while they are held, and after, over STALLED_RUNS (3) runs in a row — once with glibc's
#      default malloc settings, once with GLIBC_TUNABLES=$STALLED_TUNABLES (results in
#      OUT_DIR/stalled.jsonl, not in results.jsonl).
# Each result is one JSON line in OUT_DIR/results.jsonl; bench/report.py renders the tables
# (ratios to nginx and to direct).
#
# Environment: DURATION (measured seconds per single run, default 5), RATES (default
# "500 2000 5000"), ROUNDS (7; 0 turns the rounds off), ROUND_RATE (1000), ROUND_DURATION
# (seconds per round, default 5 or DURATION if less), ROUND_VARIANTS (default
# "mt:--runtime,multi-thread 1w:--runtime,multi-thread,--worker-threads,1": NAME:ARGS
# gateways that join the rounds — the gateway itself runs its default, one runtime per
# core on this size of machine; these run tokio's multi-threaded runtime, with its default
# workers and with one — ARGS comma-separated, a first `bin=PATH` runs another build; empty
# turns them off), CLOSED_ROUNDS (3), CLOSED_CONCURRENCY (32), CHAOS_RATE (500),
# PEER_RATES (default "10 50"), PEER_DURATION (10), LL_CHAOS_RATE (20), PHASES (default
# "load closed streams chaos peers"), SKIP_NGINX, SKIP_PORTKEY, SKIP_LITELLM (1 leaves one
# out), LITELLM_VENV, PORTKEY_DIR, CARGO_TARGET_DIR. Every loop is bounded in count and
# time; every process started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${1:-$CARGO_TARGET_DIR/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
DURATION=${DURATION:-5}
BASE_DURATION=$DURATION
RATES=${RATES:-"500 2000 5000"}
ROUNDS=${ROUNDS:-7}
ROUND_RATE=${ROUND_RATE:-1000}
ROUND_VARIANTS=${ROUND_VARIANTS-"mt:--runtime,multi-thread 1w:--runtime,multi-thread,--worker-threads,1"}
ROUND_DURATION=${ROUND_DURATION:-$(awk -v d="$DURATION" 'BEGIN { print (d < 5 ? d : 5) }')}
CLOSED_ROUNDS=${CLOSED_ROUNDS:-3}
CLOSED_CONCURRENCY=${CLOSED_CONCURRENCY:-32}
PEER_RATES=${PEER_RATES:-"10 50"}
PEER_DURATION=${PEER_DURATION:-10}
SKIP_NGINX=${SKIP_NGINX:-0}
SKIP_PORTKEY=${SKIP_PORTKEY:-0}
SKIP_LITELLM=${SKIP_LITELLM:-0}
PHASES=${PHASES:-"load closed streams chaos peers"}
has() { [[ " $PHASES " == *" $1 "* ]]; }
VENV=${LITELLM_VENV:-$CARGO_TARGET_DIR/litellm-venv}
LITELLM_VERSION=1.104.0
PORTKEY_DIR=${PORTKEY_DIR:-$CARGO_TARGET_DIR/peers/portkey}
PORTKEY_VERSION=1.15.2
mkdir -p "$OUT"
# Absolute: nginx reads its configuration relative to its own prefix otherwise.
OUT=$(cd "$OUT" && pwd)
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }
note() { echo "$*" >> "$OUT/machine.txt"; }

# Waits (at most $2 tenths of a second) until file $1 matches pattern $3.
wait_for() {
    local file=$1 tries=$2 pattern=$3
    for _ in $(seq "$tries"); do
        grep -q "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "timed out waiting for '$pattern' in $file" >&2
    return 1
}
# free_port: a free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# stop_pid PID: stops a process started here (nothing if PID is empty).
stop_pid() {
    if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}

log "building (release)"
(cd "$ROOT" && cargo build --release -q -p brace-bench --bins && cargo build --release -q --example gateway)
BIN=$CARGO_TARGET_DIR/release
LOADGEN=$BIN/loadgen

{
    echo "date_utc: $(date -u +%FT%TZ)"
    echo "commit: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$ROOT" && git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "loadavg_before: $(cat /proc/loadavg)"
    echo "kernel: $(uname -r)"
} > "$OUT/machine.txt"

# ---- installs (only what is missing) -------------------------------------------------------
ensure_nginx() {
    [ "$SKIP_NGINX" = 1 ] && return 1
    if ! command -v nginx > /dev/null 2>&1 && [ -x /usr/sbin/nginx ]; then PATH=$PATH:/usr/sbin; fi
    if ! command -v nginx > /dev/null 2>&1; then
        log "installing nginx (apt-get)"
        if ! { [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null &&
               DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx > "$OUT/nginx-install.log" 2>&1; }; then
            note "nginx: not installed and could not be installed (see nginx-install.log): skipped"
            SKIP_NGINX=1
            return 1
        fi
        PATH=$PATH:/usr/sbin
    fi
    note "nginx: $(nginx -v 2>&1 | sed 's/^nginx version: //')"
}
ensure_portkey() {
    [ "$SKIP_PORTKEY" = 1 ] && return 1
    local entry=$PORTKEY_DIR/node_modules/@portkey-ai/gateway/build/start-server.js
    if [ ! -f "$entry" ] || ! grep -q "\"version\": \"$PORTKEY_VERSION\"" "$PORTKEY_DIR/node_modules/@portkey-ai/gateway/package.json" 2>/dev/null; then
        log "installing @portkey-ai/gateway@$PORTKEY_VERSION into $PORTKEY_DIR"
        mkdir -p "$PORTKEY_DIR"
        [ -f "$PORTKEY_DIR/package.json" ] || echo '{"private": true}' > "$PORTKEY_DIR/package.json"
        if ! { command -v node > /dev/null && (cd "$PORTKEY_DIR" && npm install --no-audit --no-fund --omit=dev \
                "@portkey-ai/gateway@$PORTKEY_VERSION"); } > "$OUT/portkey-install.log" 2>&1; then
            note "portkey: install failed (see portkey-install.log): skipped"
            SKIP_PORTKEY=1
            return 1
        fi
    fi
    note "portkey: @portkey-ai/gateway $PORTKEY_VERSION on node $(node --version)"
}
ensure_litellm() {
    [ "$SKIP_LITELLM" = 1 ] && return 1
    if [ ! -x "$VENV/bin/litellm" ]; then
        log "installing litellm[proxy]==$LITELLM_VERSION into $VENV"
        if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"; } > "$OUT/litellm-install.log" 2>&1; then
            note "litellm: install failed (see litellm-install.log): skipped"
            SKIP_LITELLM=1
            return 1
        fi
    fi
    note "litellm: $("$VENV/bin/pip" show litellm 2>/dev/null | awk '/^Version/{print $2}'), $("$VENV/bin/python" --version 2>&1)"
}

# ---- simulated providers -----------------------------------------------------------------
"$BIN/simserver" --names primary,secondary,tertiary --threads 2 --lifetime 3600 > "$OUT/sim.txt" 2>&1 &
SIM_PID=$!
PIDS+=("$SIM_PID")
wait_for "$OUT/sim.txt" 100 '^tertiary '
PRIMARY=$(awk '$1=="primary"{print $2}' "$OUT/sim.txt")
SECONDARY=$(awk '$1=="secondary"{print $2}' "$OUT/sim.txt")
TERTIARY=$(awk '$1=="tertiary"{print $2}' "$OUT/sim.txt")
SIMS=("$PRIMARY" "$SECONDARY" "$TERTIARY")
log "simulated providers: ${SIMS[*]} (pid $SIM_PID)"

sim_behavior() { curl -sf -m 5 -X POST "$1/_sim/behavior" -H 'content-type: application/json' -d "$2" > /dev/null; }
sim_reset() { for url in "${SIMS[@]}"; do curl -sf -m 5 -X POST "$url/_sim/reset" > /dev/null; done; }
sim_calls() {
    local total=0 calls
    for url in "${SIMS[@]}"; do
        calls=$(curl -sf -m 5 "$url/_sim/stats" | jq '.calls')
        total=$((total + calls))
    done
    echo "$total"
}
sim_calls_of() { curl -sf -m 5 "$1/_sim/stats" | jq -c '{calls, outcomes}'; }
hostport() { echo "${1#http://}"; }

# ---- the gateway -------------------------------------------------------------------------
cat > "$OUT/gateway.yaml" <<EOF
listen: 127.0.0.1:0
providers:
  - { name: primary, kind: openai-compatible, model: sim-model, priority: 1, base_url: "$PRIMARY/v1", api_key_env: "", timeout: 5s }
  - { name: secondary, kind: openai-compatible, model: sim-model, priority: 2, base_url: "$SECONDARY/v1", api_key_env: "", timeout: 5s }
  - { name: tertiary, kind: openai-compatible, model: sim-model, priority: 3, base_url: "$TERTIARY/v1", api_key_env: "", timeout: 5s }
fallback:
  on_error: [429, 500, 502, 503, timeout, connect]
  max_retries: 1
  backoff: exponential
  base_delay: 1ms
  max_delay: 5ms
circuit_breaker:
  sliding_window_size: 20
  minimum_calls: 10
  failure_rate_threshold: 50
  wait_in_open: 60s
  permitted_calls_in_half_open: 3
health:
  consecutive_failures: 3
  recovery_time: 60s
degradation:
  auto:
    enabled: false
cache:
  enabled: false
EOF
# The same gateway speaking cleartext HTTP/2 (prior knowledge) to its providers.
sed 's/timeout: 5s }/timeout: 5s, http2_prior_knowledge: true }/' "$OUT/gateway.yaml" > "$OUT/gateway-h2.yaml"
[ "$(grep -c 'http2_prior_knowledge: true' "$OUT/gateway-h2.yaml")" -eq 3 ] || { echo "gateway-h2.yaml: expected 3 providers with http2_prior_knowledge" >&2; exit 1; }
# start_gateway NAME [CONFIG]: a fresh gateway (new circuit and health state) with CONFIG
# (default gateway.yaml); sets GW_PID, GATEWAY.
start_gateway() {
    stop_pid "${GW_PID:-}"
    launch_gateway "$1" "${2:-$OUT/gateway.yaml}"
    GW_PID=$LAUNCHED_PID
    GATEWAY=$LAUNCHED_URL
}
# launch_gateway NAME CONFIG [GATEWAY-ARGS...]: starts a gateway, waits until it listens;
# sets LAUNCHED_PID and LAUNCHED_URL.
# GATEWAY_BINARY replaces the build under test; a first argument `bin=PATH` runs another
# build for one variant (`sys:bin=/tmp/old/gateway` compares two builds in the same rounds).
launch_gateway() {
    local name=$1 config=$2 binary="${GATEWAY_BINARY:-$BIN/examples/gateway}"
    shift 2
    if [[ "${1:-}" == bin=* ]]; then
        binary=${1#bin=}
        shift
    fi
    "$binary" --config "$config" --listen 127.0.0.1:0 "$@" > "$OUT/gateway-$name.log" 2>&1 &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
    wait_for "$OUT/gateway-$name.log" 100 'listening on'
    LAUNCHED_URL=$(grep -m1 -o 'http://[0-9.:]*' "$OUT/gateway-$name.log")
    log "gateway ($name): $LAUNCHED_URL (pid $LAUNCHED_PID)"
}
start_gateway load
note "gateway_rss_idle_kib: $(awk '/VmRSS/{print $2}' /proc/$GW_PID/status)"

# ---- nginx, the floor ----------------------------------------------------------------------
# start_nginx NAME: a fresh nginx (new passive-health state); sets NGINX, NGINX_PIDS
# ("master,worker", what loadgen watches) and NGINX_MASTER. Nothing if nginx is skipped.
NGINX_MASTER=
start_nginx() {
    stop_pid "$NGINX_MASTER"
    NGINX_MASTER=
    [ "$SKIP_NGINX" = 1 ] && return 0
    local name=$1 port dir=$OUT/nginx
    port=$(free_port)
    mkdir -p "$dir/tmp"
    # The worker may run as another user (nobody) when started as root.
    chmod 0777 "$dir/tmp"
    cat > "$dir/nginx-$name.conf" <<EOF
# Generated by bench/load.sh: nginx as a plain reverse proxy in front of the simulated
# providers, with one worker, upstream keep-alive and the providers in failover order.
worker_processes 1;
daemon off;
pid $dir/nginx-$name.pid;
error_log $dir/error-$name.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 100000;
    upstream providers {
        server $(hostport "$PRIMARY") max_fails=3 fail_timeout=60s;
        server $(hostport "$SECONDARY") max_fails=3 fail_timeout=60s backup;
        server $(hostport "$TERTIARY") max_fails=3 fail_timeout=60s backup;
        keepalive 256;
        keepalive_requests 100000;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://providers;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_next_upstream error timeout http_500 http_502 http_503 http_429 non_idempotent;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 5s;
            proxy_read_timeout 5s;
        }
    }
}
EOF
    nginx -c "$dir/nginx-$name.conf" > "$dir/nginx-$name.out" 2>&1 &
    NGINX_MASTER=$!
    PIDS+=("$NGINX_MASTER")
    NGINX=http://127.0.0.1:$port
    local worker=
    for _ in $(seq 100); do
        worker=$(pgrep -P "$NGINX_MASTER" | head -n1 || true)
        [ -n "$worker" ] && curl -s -o /dev/null -m 1 "$NGINX/" && break
        sleep 0.1
    done
    if [ -z "$worker" ]; then
        echo "nginx did not start (see $dir/nginx-$name.out, $dir/error-$name.log)" >&2
        exit 1
    fi
    NGINX_PIDS=$NGINX_MASTER,$worker
    log "nginx ($name): $NGINX (master $NGINX_MASTER, worker $worker)"
}
ensure_nginx || true
start_nginx load
[ "$SKIP_NGINX" = 1 ] || note "nginx_rss_idle_kib: $(( $(awk '/VmRSS/{print $2}' /proc/$NGINX_MASTER/status) + $(awk '/VmRSS/{print $2}' /proc/${NGINX_PIDS#*,}/status) ))"

# ---- the peers (started for the closed and peers phases) -----------------------------------
PORTKEY_PID=
LL_PID=
portkey_config() { # the x-portkey-config header: the three providers as fallback targets, one retry
    printf '{"strategy":{"mode":"fallback","on_status_codes":[429,500,502,503]},"retry":{"attempts":1,"on_status_codes":[429,500,502,503]},"targets":[%s]}' \
        "$(printf '{"provider":"openai","api_key":"sk-sim","custom_host":"%s/v1"},' "${SIMS[@]}" | sed 's/,$//')"
}
start_portkey() {
    [ -n "$PORTKEY_PID" ] && return 0
    ensure_portkey || return 0
    local port
    port=$(free_port)
    # It serves on every interface (it has no option to choose); only loopback is used.
    (cd "$PORTKEY_DIR" && exec node node_modules/@portkey-ai/gateway/build/start-server.js --port="$port" --headless) > "$OUT/portkey.log" 2>&1 &
    PORTKEY_PID=$!
    PIDS+=("$PORTKEY_PID")
    PORTKEY=http://127.0.0.1:$port
    for _ in $(seq 300); do
        curl -s -o /dev/null -m 1 "$PORTKEY/" && break
        kill -0 "$PORTKEY_PID" 2>/dev/null || break
        sleep 0.1
    done
    if ! curl -s -o /dev/null -m 1 "$PORTKEY/"; then
        note "portkey: did not start (see portkey.log): skipped"
        SKIP_PORTKEY=1
        PORTKEY_PID=
        return 0
    fi
    PORTKEY_ARGS=(--header "x-portkey-config: $(portkey_config)")
    log "portkey: $PORTKEY (pid $PORTKEY_PID)"
    note "portkey_rss_idle_kib: $(awk '/VmRSS/{print $2}' /proc/$PORTKEY_PID/status)"
}
start_litellm() {
    [ -n "$LL_PID" ] && return 0
    ensure_litellm || return 0
    local port
    port=$(free_port)
    LITELLM_MASTER_KEY="sk-bench-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    export LITELLM_MASTER_KEY
    cat > "$OUT/litellm.yaml" <<EOF
model_list:
  - model_name: primary
    litellm_params: { model: openai/sim-model, api_base: "$PRIMARY/v1", api_key: sk-sim }
  - model_name: secondary
    litellm_params: { model: openai/sim-model, api_base: "$SECONDARY/v1", api_key: sk-sim }
  - model_name: tertiary
    litellm_params: { model: openai/sim-model, api_base: "$TERTIARY/v1", api_key: sk-sim }
router_settings:
  num_retries: 1
  retry_after: 0
  allowed_fails: 3
  cooldown_time: 60
  fallbacks: [{ "primary": ["secondary", "tertiary"] }]
litellm_settings:
  num_retries: 1
  request_timeout: 5
  fallbacks: [{ "primary": ["secondary", "tertiary"] }]
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
EOF
    LITELLM_LOCAL_MODEL_COST_MAP=True "$VENV/bin/litellm" --config "$OUT/litellm.yaml" \
        --host 127.0.0.1 --port "$port" > "$OUT/litellm.log" 2>&1 &
    LL_PID=$!
    PIDS+=("$LL_PID")
    LITELLM=http://127.0.0.1:$port
    for _ in $(seq 600); do
        curl -sf -m 2 "$LITELLM/health/liveliness" > /dev/null 2>&1 && break
        kill -0 "$LL_PID" 2>/dev/null || break
        sleep 0.2
    done
    if ! curl -sf -m 2 "$LITELLM/health/liveliness" > /dev/null 2>&1; then
        note "litellm: did not start (see litellm.log): skipped"
        SKIP_LITELLM=1
        LL_PID=
        return 0
    fi
    LITELLM_ARGS=(--header "Authorization: Bearer $LITELLM_MASTER_KEY" --model primary)
    log "litellm: $LITELLM (pid $LL_PID)"
    note "litellm_rss_idle_kib: $(awk '/VmRSS/{print $2}' /proc/$LL_PID/status)"
}
stop_peers() {
    stop_pid "$PORTKEY_PID"
    stop_pid "$LL_PID"
    PORTKEY_PID=
    LL_PID=
}

# run LABEL URL WATCH_PIDS loadgen-args... : one loadgen run, appended to results.jsonl.
# (Later flags win: a --duration in the arguments overrides DURATION.)
run() {
    local label=$1 url=$2 pids=$3
    shift 3
    log "$label"
    "$LOADGEN" --url "$url/v1/chat/completions" --label "$label" --watch-pid "$pids" \
        --duration "$DURATION" "$@" >> "$RESULTS"
}
note "rounds: $ROUNDS at $ROUND_RATE req/s, ${ROUND_DURATION} s each (+1 s warm-up); closed-loop rounds: $CLOSED_ROUNDS"

# The gateways of ROUND_VARIANTS (NAME:ARGS, ARGS comma-separated), started for the load
# and closed phases: VARIANT_NAMES, VARIANT_URLS, VARIANT_PIDS.
VARIANT_NAMES=()
VARIANT_URLS=()
VARIANT_PIDS=()
start_variants() {
    [ "${#VARIANT_NAMES[@]}" -gt 0 ] && return 0
    local spec name args
    for spec in $ROUND_VARIANTS; do
        name=${spec%%:*}
        IFS=, read -r -a args <<< "${spec#*:}"
        launch_gateway "variant-$name" "$OUT/gateway.yaml" "${args[@]}"
        VARIANT_NAMES+=("$name")
        VARIANT_URLS+=("$LAUNCHED_URL")
        VARIANT_PIDS+=("$LAUNCHED_PID")
        note "variant gateway-$name: ${args[*]}"
        run "warmup gateway-$name" "$LAUNCHED_URL" "$LAUNCHED_PID" --mode closed --concurrency 16 --warmup 0 --max-requests 5000 > /dev/null
    done
}
stop_variants() {
    local pid
    for pid in "${VARIANT_PIDS[@]}"; do stop_pid "$pid"; done
    VARIANT_NAMES=()
    VARIANT_URLS=()
    VARIANT_PIDS=()
}

# williams N ROUND: the order of N targets in ROUND (1-based), from a Williams design — a
# Latin square balanced for carry-over: over N rounds (2N when N is odd) each target runs
# once in every slot and right after every other target once. A plain rotation keeps the
# same neighbours every round (the gateway always right after nginx, a variant always right
# after the gateway), and what a run leaves behind biases the next: measured A/A, the same
# build read ~10 % more CPU per request as `gateway` than as the variant behind it.
williams() {
    local n=$1 round=$(( $2 - 1 )) j a row
    local period=$(( n % 2 == 0 ? n : 2 * n ))
    local p=$(( round % period ))
    row=$(( p % n ))
    local order=()
    for j in $(seq 0 $((n - 1))); do
        if [ "$j" -eq 0 ]; then a=0
        elif [ $((j % 2)) -eq 1 ]; then a=$(( (j + 1) / 2 ))
        else a=$(( n - j / 2 )); fi
        order+=($(( (a + row) % n )))
    done
    # An odd N needs the mirrored square as well for every pair to meet in both orders.
    if [ "$p" -ge "$n" ]; then
        local reversed=()
        for j in $(seq $((n - 1)) -1 0); do reversed+=("${order[$j]}"); done
        order=("${reversed[@]}")
    fi
    echo "${order[@]}"
}

# run_round SUFFIX ROUND loadgen-args... : one run of each round target — direct, nginx,
# the gateway and its variants, labelled "<target> SUFFIX" — in the round's order of a
# Williams design (see `williams`): the slot in a round biases what is measured (the same
# build measured 5–19 % less CPU per request in the fourth slot than in the third), and so
# does the target run just before, so no target keeps either a slot or a predecessor.
run_round() {
    local suffix=$1 round=$2 i k n
    shift 2
    local labels=(direct) urls=("$PRIMARY") pids=("$SIM_PID")
    if [ "$SKIP_NGINX" != 1 ]; then labels+=(nginx); urls+=("$NGINX"); pids+=("$NGINX_PIDS"); fi
    labels+=(gateway); urls+=("$GATEWAY"); pids+=("$GW_PID")
    for i in "${!VARIANT_NAMES[@]}"; do
        labels+=("gateway-${VARIANT_NAMES[$i]}"); urls+=("${VARIANT_URLS[$i]}"); pids+=("${VARIANT_PIDS[$i]}")
    done
    n=${#labels[@]}
    for i in $(williams "$n" "$round"); do
        run "${labels[$i]} $suffix" "${urls[$i]}" "${pids[$i]}" "$@"
    done
}

# ---- 1. load: direct vs nginx vs gateway ---------------------------------------------------
if has load; then
run "warmup gateway" "$GATEWAY" "$GW_PID" --mode closed --concurrency 16 --warmup 0 --max-requests 5000 > /dev/null
[ "$SKIP_NGINX" = 1 ] || run "warmup nginx" "$NGINX" "$NGINX_PIDS" --mode closed --concurrency 16 --warmup 0 --max-requests 5000 > /dev/null
for rate in $RATES; do
    [ "$ROUNDS" -gt 0 ] && [ "$rate" = "$ROUND_RATE" ] && continue
    run "direct open $rate" "$PRIMARY" "$SIM_PID" --mode open --rate "$rate"
    [ "$SKIP_NGINX" = 1 ] || run "nginx open $rate" "$NGINX" "$NGINX_PIDS" --mode open --rate "$rate"
    run "gateway open $rate" "$GATEWAY" "$GW_PID" --mode open --rate "$rate"
done
# The target rate: rounds of direct, nginx, the gateway and its variants, back to back.
[ "$ROUNDS" -gt 0 ] && start_variants
for round in $(seq "$ROUNDS"); do
    run_round "open $ROUND_RATE round $round" "$round" --mode open --rate "$ROUND_RATE" --duration "$ROUND_DURATION"
done
fi

# ---- 2. closed loop: the maximum, every target in each round -------------------------------
if has closed; then
# Fresh gateways: an overloaded open-loop phase leaves connections and memory behind.
start_gateway closed
stop_variants
start_variants
start_nginx closed
if has peers || has litellm; then start_portkey; start_litellm; fi
c=$CLOSED_CONCURRENCY
for round in $(seq "$CLOSED_ROUNDS"); do
    args=(--mode closed --concurrency "$c" --duration "$ROUND_DURATION")
    run_round "closed $c round $round" "$round" "${args[@]}"
    [ -z "$PORTKEY_PID" ] || run "portkey closed $c round $round" "$PORTKEY" "$PORTKEY_PID" "${PORTKEY_ARGS[@]}" "${args[@]}"
    [ -z "$LL_PID" ] || run "litellm closed $c round $round" "$LITELLM" "$LL_PID" "${LITELLM_ARGS[@]}" "${args[@]}"
done
fi
stop_variants

# ---- 5. peers at rates they sustain, and their chaos -----------------------------------------
CHAOS_RATE=${CHAOS_RATE:-500}
LL_CHAOS_RATE=${LL_CHAOS_RATE:-20}
chaos() { # chaos LABEL URL PIDS args...: a run with the providers' call counts around it
    local label=$1
    sim_reset
    run "$@"
    echo "{\"label\":\"$label\",\"provider_calls\":$(sim_calls),\"primary\":$(sim_calls_of "$PRIMARY"),\"secondary\":$(sim_calls_of "$SECONDARY")}" >> "$RESULTS"
}
if has peers || has litellm; then
start_gateway peer
start_nginx peer
start_portkey
start_litellm
DURATION=$PEER_DURATION
[ -z "$PORTKEY_PID" ] || run "warmup portkey" "$PORTKEY" "$PORTKEY_PID" "${PORTKEY_ARGS[@]}" --mode closed --concurrency 4 --warmup 0 --max-requests 500 > /dev/null
[ -z "$LL_PID" ] || run "warmup litellm" "$LITELLM" "$LL_PID" "${LITELLM_ARGS[@]}" --mode closed --concurrency 4 --warmup 0 --max-requests 200 > /dev/null
for rate in $PEER_RATES; do
    run "direct open $rate" "$PRIMARY" "$SIM_PID" --mode open --rate "$rate"
    [ "$SKIP_NGINX" = 1 ] || run "nginx open $rate" "$NGINX" "$NGINX_PIDS" --mode open --rate "$rate"
    run "gateway open $rate" "$GATEWAY" "$GW_PID" --mode open --rate "$rate"
    [ -z "$PORTKEY_PID" ] || run "portkey open $rate" "$PORTKEY" "$PORTKEY_PID" "${PORTKEY_ARGS[@]}" --mode open --rate "$rate" --max-in-flight 512
    [ -z "$LL_PID" ] || run "litellm open $rate" "$LITELLM" "$LL_PID" "${LITELLM_ARGS[@]}" --mode open --rate "$rate" --max-in-flight 512
done
chaos "direct secondary $LL_CHAOS_RATE" "$SECONDARY" "$SIM_PID" --mode open --rate "$LL_CHAOS_RATE"
for peer in portkey litellm; do
    if [ "$peer" = portkey ]; then
        [ -n "$PORTKEY_PID" ] || continue
        url=$PORTKEY pid=$PORTKEY_PID peer_args=("${PORTKEY_ARGS[@]}")
    else
        [ -n "$LL_PID" ] || continue
        url=$LITELLM pid=$LL_PID peer_args=("${LITELLM_ARGS[@]}")
    fi
    sim_behavior "$PRIMARY" '{"type":"flaky","probability":0.3,"failure":{"type":"fail","kind":"server"}}'
    chaos "$peer flaky30 $LL_CHAOS_RATE" "$url" "$pid" "${peer_args[@]}" --mode open --rate "$LL_CHAOS_RATE" --max-in-flight 512
    sim_behavior "$PRIMARY" '{"type":"fail","kind":"server"}'
    chaos "$peer dead $LL_CHAOS_RATE" "$url" "$pid" "${peer_args[@]}" --mode open --rate "$LL_CHAOS_RATE" --max-in-flight 512
    sim_behavior "$PRIMARY" '{"type":"succeed"}'
done
DURATION=$BASE_DURATION
fi
stop_peers

# ---- 3. 1000 concurrent streams (2 s each) -------------------------------------------------
if has streams; then
sim_behavior "$PRIMARY" '{"type":"succeed","chunks":20,"chunk_delay":"100ms"}'
STREAMS=(--mode closed --concurrency 1000 --stream --timeout 20 --warmup 0 --duration 6)
# streams LABEL URL PIDS: a streams run with the primary's calls by HTTP version beside it.
streams() {
    sim_reset
    run "$@" "${STREAMS[@]}"
    echo "{\"label\":\"$1\",\"provider_calls\":$(sim_calls),\"primary\":$(curl -sf -m 5 "$PRIMARY/_sim/stats" | jq -c '{calls, outcomes, http_versions}')}" >> "$RESULTS"
}
start_gateway streams
streams "direct streams 1000" "$PRIMARY" "$SIM_PID"
if [ "$SKIP_NGINX" != 1 ]; then
    start_nginx streams
    streams "nginx streams 1000" "$NGINX" "$NGINX_PIDS"
fi
streams "gateway streams 1000" "$GATEWAY" "$GW_PID"
start_gateway streams-h2 "$OUT/gateway-h2.yaml"
streams "gateway streams 1000 h2" "$GATEWAY" "$GW_PID"
sim_behavior "$PRIMARY" '{"type":"succeed"}'
fi

# ---- 4. chaos through the gateway and nginx --------------------------------------------------
if has chaos; then
chaos "direct secondary $CHAOS_RATE" "$SECONDARY" "$SIM_PID" --mode open --rate "$CHAOS_RATE"
# Each chaos phase starts fresh proxies, so no health or breaker state carries over.
start_gateway flaky30
start_nginx flaky30
sim_behavior "$PRIMARY" '{"type":"flaky","probability":0.3,"failure":{"type":"fail","kind":"server"}}'
chaos "gateway flaky30 $CHAOS_RATE" "$GATEWAY" "$GW_PID" --mode open --rate "$CHAOS_RATE"
[ "$SKIP_NGINX" = 1 ] || chaos "nginx flaky30 $CHAOS_RATE" "$NGINX" "$NGINX_PIDS" --mode open --rate "$CHAOS_RATE"
note "gateway_circuits_after_flaky30: $(curl -sf -m 5 "$GATEWAY/v1/circuits" | jq -c 'map_values(.state)')"
start_gateway dead
start_nginx dead
sim_behavior "$PRIMARY" '{"type":"fail","kind":"server"}'
# Take the primary out before the first round (health tracking after 3 consecutive failures,
# or the breaker; nginx's max_fails): 1 s at CHAOS_RATE, not recorded. Every round then
# measures each proxy with the primary already out; the gateway (health's 60 s recovery time)
# and nginx (fail_timeout 60s) probe the dead primary again about once a minute.
run "prime gateway dead" "$GATEWAY" "$GW_PID" --mode open --rate "$CHAOS_RATE" --warmup 0 --duration 1 > /dev/null
[ "$SKIP_NGINX" = 1 ] || run "prime nginx dead" "$NGINX" "$NGINX_PIDS" --mode open --rate "$CHAOS_RATE" --warmup 0 --duration 1 > /dev/null
for round in $(seq "$ROUNDS"); do
    chaos "direct secondary $CHAOS_RATE round $round" "$SECONDARY" "$SIM_PID" --mode open --rate "$CHAOS_RATE" --duration "$ROUND_DURATION"
    chaos "gateway dead $CHAOS_RATE round $round" "$GATEWAY" "$GW_PID" --mode open --rate "$CHAOS_RATE" --duration "$ROUND_DURATION"
    [ "$SKIP_NGINX" = 1 ] || chaos "nginx dead $CHAOS_RATE round $round" "$NGINX" "$NGINX_PIDS" --mode open --rate "$CHAOS_RATE" --duration "$ROUND_DURATION"
done
if [ "$ROUNDS" -eq 0 ]; then
    chaos "gateway dead $CHAOS_RATE" "$GATEWAY" "$GW_PID" --mode open --rate "$CHAOS_RATE"
fi
note "gateway_circuits_after_dead: $(curl -sf -m 5 "$GATEWAY/v1/circuits" | jq -c 'map_values(.state)')"
sim_behavior "$PRIMARY" '{"type":"succeed"}'
fi

# ---- 6. instructions per request ------------------------------------------------------------
# Wall and CPU time on a shared machine move by 2x between hours; instruction counts do not.
# Each proxy runs alone under valgrind's callgrind (nginx without its master process, the same
# configuration otherwise; the gateway under test with gateway.yaml), takes INSTR_WARMUP
# requests one at a time, has its counts zeroed, takes INSTR_REQUESTS more one at a time, and
# has its counts dumped: instructions per request in user space (the proxy, its libraries
# and its allocator). The kernel's share — the system calls, about the same for both
# (6–7 per request at 1 000 req/s, `strace -c`) — is not counted. Counts move a little with
# INSTR_REQUESTS (work on timers, such as the metrics upkeep, spread over fewer requests: one
# build measured 96 056 at 500 and 95 130 at 2 000): compare runs with the same count.
INSTR_REQUESTS=${INSTR_REQUESTS:-2000}
INSTR_WARMUP=${INSTR_WARMUP:-200}
# count_instructions NAME PID URL: NAME (already under callgrind as PID, writing its dumps
# to $OUT/callgrind-NAME.PID*) measured; one line "instructions NAME" in results.jsonl.
count_instructions() {
    local name=$1 pid=$2 url=$3 dump total
    log "instructions $name"
    "$LOADGEN" --url "$url/v1/chat/completions" --mode closed --concurrency 1 --warmup 0 \
        --max-requests "$INSTR_WARMUP" --duration 600 --timeout 60 > /dev/null
    callgrind_control -z "$pid" > /dev/null
    "$LOADGEN" --url "$url/v1/chat/completions" --mode closed --concurrency 1 --warmup 0 \
        --max-requests "$INSTR_REQUESTS" --duration 600 --timeout 60 --label "instructions $name" \
        > "$OUT/instructions-$name.json"
    callgrind_control -d "$pid" > /dev/null
    dump=$(ls -t "$OUT/callgrind-$name.$pid".* 2>/dev/null | head -n1 || true)
    total=
    [ -n "$dump" ] && total=$(awk '/^totals:/ {print $2}' "$dump")
    if [ -z "$total" ]; then
        echo "instructions $name: callgrind wrote no dump with totals (see $OUT/callgrind-$name.$pid*)" >&2
        return 1
    fi
    # Where they go, by function (self cost), every function listed (at the default
    # threshold the zeroed counts show little but the threads' entry points), beside the
    # raw dump.
    callgrind_annotate --auto=no --inclusive=no --threshold=100 "$dump" \
        > "$OUT/callgrind-$name.txt" 2>/dev/null || true
    jq -c --argjson total "$total" '. + {instructions_total: $total,
        instructions_per_request: ($total / .sent_total)}' "$OUT/instructions-$name.json" >> "$RESULTS"
}
if has instructions; then
if ! command -v valgrind > /dev/null || ! command -v callgrind_control > /dev/null; then
    note "instructions: valgrind is not installed: skipped"
else
    stop_pid "${GW_PID:-}"
    GW_PID=
    stop_pid "$NGINX_MASTER"
    NGINX_MASTER=
    stop_variants
    binary="${GATEWAY_BINARY:-$BIN/examples/gateway}"
    valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind-gateway.%p" "$binary" \
        --config "$OUT/gateway.yaml" --listen 127.0.0.1:0 > "$OUT/gateway-callgrind.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_for "$OUT/gateway-callgrind.log" 1200 'listening on'
    count_instructions gateway "$pid" "$(grep -m1 -o 'http://[0-9.:]*' "$OUT/gateway-callgrind.log")"
    stop_pid "$pid"
    if [ "$SKIP_NGINX" != 1 ]; then
        port=$(free_port)
        # load.sh's own nginx configuration, with its one worker as the only process.
        sed -e 's/^worker_processes 1;$/worker_processes 1;\nmaster_process off;/' \
            -e "s#listen 127.0.0.1:[0-9]*;#listen 127.0.0.1:$port;#" \
            -e "s#^pid .*#pid $OUT/nginx/nginx-callgrind.pid;#" \
            "$OUT/nginx/nginx-load.conf" > "$OUT/nginx/nginx-callgrind.conf"
        valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind-nginx.%p" \
            nginx -c "$OUT/nginx/nginx-callgrind.conf" > "$OUT/nginx/nginx-callgrind.out" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        for _ in $(seq 300); do
            curl -s -o /dev/null -m 1 "http://127.0.0.1:$port/" && break
            sleep 0.1
        done
        count_instructions nginx "$pid" "http://127.0.0.1:$port"
        stop_pid "$pid"
    fi
fi
fi

# ---- 7. stalled request bodies ------------------------------------------------------------
STALLED_CONNECTIONS=${STALLED_CONNECTIONS:-300}
STALLED_RUNS=${STALLED_RUNS:-3}
STALLED_TUNABLES=${STALLED_TUNABLES:-glibc.malloc.mmap_threshold=32768:glibc.malloc.trim_threshold=131072}
if has stalled; then
{ cat "$OUT/gateway.yaml"; printf 'server:\n  body_timeout: 5s\n'; } > "$OUT/gateway-stalled.yaml"
for tunables in "" "$STALLED_TUNABLES"; do
    GLIBC_TUNABLES=$tunables start_gateway "stalled${tunables:+-tuned}" "$OUT/gateway-stalled.yaml"
    for run in $(seq "$STALLED_RUNS"); do
        log "stalled bodies, run $run${tunables:+ (GLIBC_TUNABLES=$tunables)}"
        "$BIN/stalled" --url "$GATEWAY" --pid "$GW_PID" --connections "$STALLED_CONNECTIONS" \
            --settle 3 | jq -c --arg t "$tunables" --argjson run "$run" '. + {glibc_tunables: $t, run: $run}' \
            >> "$OUT/stalled.jsonl"
    done
done
fi

note "loadavg_after: $(cat /proc/loadavg)"
log "done: $RESULTS"

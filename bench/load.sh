#!/usr/bin/env bash
# brace's loopback load and chaos benches, with LiteLLM's proxy as a peer, in one run.
#
#   bench/load.sh [OUT_DIR]
#
# Starts three instant simulated providers (crates/brace-bench simserver), the gateway
# (release build of `examples/gateway`) in front of them as three OpenAI-compatible
# providers, and — unless SKIP_LITELLM=1 — LiteLLM's proxy (installed into its own virtual
# environment) with the same three providers and fallbacks. Then, on 127.0.0.1 only:
#   1. open-loop fixed-rate load (RATES) and closed-loop maximum load, direct-to-sim vs
#      through the gateway, interleaved so noise hits both alike; gateway CPU and RSS; at
#      the target rate ROUND_RATE, ROUNDS alternations of direct then gateway (labels
#      "direct open 1000 round N", "gateway open 1000 round N") so the added latency is
#      a same-round difference repeated ROUNDS times, not one pair of runs;
#   2. 1000 concurrent slow streams (2 s each) through the gateway, for its peak RSS: once
#      with the gateway speaking HTTP/1.1 to the providers (one upstream connection per
#      stream; labels "... streams 1000"), once with a second gateway configured
#      `http2_prior_knowledge: true` for every provider (cleartext HTTP/2: the streams share
#      one upstream connection, as they would over TLS with a real provider; labels
#      "... streams 1000 h2"); the providers' count of calls by HTTP version is recorded
#      beside each;
#   3. chaos: primary failing 30% of requests, then dead; secondary called directly as the
#      baseline; attempts per request from x-brace-attempts and from the providers' counts;
#      the dead-primary phase is ROUNDS alternations of "direct secondary R round N" and
#      "gateway dead R round N" on one gateway (its health and breaker state carry over
#      from round to round: the state after the primary was taken out is what is measured);
#   4. the same load (at rates LiteLLM sustains) and chaos against LiteLLM;
#   5. stalled bodies (phase "stalled", not in the default PHASES): STALLED_CONNECTIONS
#      connections (300) each send 1 MiB of a request body and stop; a gateway with
#      `server.body_timeout: 5s` answers them 408 and closes them; its RSS is sampled idle,
#      while they are held, and after, over STALLED_RUNS (3) runs in a row — once with glibc's
#      default malloc settings, once with GLIBC_TUNABLES=$STALLED_TUNABLES (results in
#      OUT_DIR/stalled.jsonl, not in results.jsonl).
# Each result is one JSON line in OUT_DIR/results.jsonl; bench/report.py renders tables.
#
# Environment: DURATION (measured seconds per phase, default 5), RATES (default
# "500 1000 2000 5000"), ROUNDS (5; 0 turns the rounds off and measures ROUND_RATE once
# like the other rates), ROUND_RATE (1000), ROUND_WORKERS (1: a second gateway with that many
# tokio workers joins the rounds; empty turns it off), ROUND_DURATION (measured seconds per round,
# default 5, or DURATION if that is less), CHAOS_RATE (500), LITELLM_RATES (default "10 25 50"),
# LITELLM_DURATION (10), LL_CHAOS_RATE (20), SKIP_LITELLM, LITELLM_VENV,
# PHASES (default "load closed streams chaos litellm"), CARGO_TARGET_DIR. Every loop is
# bounded in count and time; every process started here is
# stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=${1:-$CARGO_TARGET_DIR/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
DURATION=${DURATION:-5}
RATES=${RATES:-"500 1000 2000 5000"}
ROUNDS=${ROUNDS:-5}
ROUND_RATE=${ROUND_RATE:-1000}
ROUND_WORKERS=${ROUND_WORKERS-1}
ROUND_DURATION=${ROUND_DURATION:-$(awk -v d="$DURATION" 'BEGIN { print (d < 5 ? d : 5) }')}
LITELLM_RATES=${LITELLM_RATES:-"10 25 50"}
LITELLM_DURATION=${LITELLM_DURATION:-10}
SKIP_LITELLM=${SKIP_LITELLM:-0}
PHASES=${PHASES:-"load closed streams chaos litellm"}
has() { [[ " $PHASES " == *" $1 "* ]]; }
VENV=${LITELLM_VENV:-$CARGO_TARGET_DIR/litellm-venv}
LITELLM_VERSION=1.104.0
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: > "$RESULTS"

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

log() { echo "[$(date -u +%H:%M:%S)] $*" >&2; }

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

log "building (release)"
(cd "$ROOT" && cargo build --release -q -p brace-bench --bins && cargo build --release -q --example gateway)
BIN=$CARGO_TARGET_DIR/release
LOADGEN=$BIN/loadgen

{
    echo "date_utc: $(date -u +%FT%TZ)"
    echo "nproc: $(nproc)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
    echo "loadavg_before: $(cat /proc/loadavg)"
    echo "kernel: $(uname -r)"
} > "$OUT/machine.txt"

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
launch_gateway() {
    local name=$1 config=$2
    shift 2
    "$BIN/examples/gateway" --config "$config" --listen 127.0.0.1:0 "$@" > "$OUT/gateway-$name.log" 2>&1 &
    LAUNCHED_PID=$!
    PIDS+=("$LAUNCHED_PID")
    wait_for "$OUT/gateway-$name.log" 100 'listening on'
    LAUNCHED_URL=$(grep -m1 -o 'http://[0-9.:]*' "$OUT/gateway-$name.log")
    log "gateway ($name): $LAUNCHED_URL (pid $LAUNCHED_PID)"
}
# stop_pid PID: stops a process started here (nothing if PID is empty).
stop_pid() {
    if [ -n "$1" ]; then kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; fi
}
start_gateway load
echo "gateway_rss_idle_kib: $(awk '/VmRSS/{print $2}' /proc/$GW_PID/status)" >> "$OUT/machine.txt"

# run LABEL URL WATCH_PID loadgen-args... : one loadgen run, appended to results.jsonl.
# (Later flags win: a --duration in the arguments overrides DURATION.)
run() {
    local label=$1 url=$2 pid=$3
    shift 3
    log "$label"
    "$LOADGEN" --url "$url/v1/chat/completions" --label "$label" --watch-pid "$pid" \
        --duration "$DURATION" "$@" >> "$RESULTS"
}
echo "rounds: $ROUNDS at $ROUND_RATE req/s, ${ROUND_DURATION} s each (+1 s warm-up)" >> "$OUT/machine.txt"

# ---- 1. load: direct vs gateway ----------------------------------------------------------
if has load; then
run "warmup gateway" "$GATEWAY" "$GW_PID" --mode closed --concurrency 16 --warmup 0 --max-requests 5000 > /dev/null
for rate in $RATES; do
    [ "$ROUNDS" -gt 0 ] && [ "$rate" = "$ROUND_RATE" ] && continue
    run "direct open $rate" "$PRIMARY" "$SIM_PID" --mode open --rate "$rate"
    run "gateway open $rate" "$GATEWAY" "$GW_PID" --mode open --rate "$rate"
done
# The target rate: rounds of direct then gateway, each round's runs back to back. With
# ROUND_WORKERS set, a second gateway started with `--worker-threads $ROUND_WORKERS` runs
# in the same rounds, third ("gateway-${ROUND_WORKERS}w open ... round N").
if [ "$ROUNDS" -gt 0 ] && [ -n "$ROUND_WORKERS" ]; then
    launch_gateway "workers-$ROUND_WORKERS" "$OUT/gateway.yaml" --worker-threads "$ROUND_WORKERS"
    GWW_PID=$LAUNCHED_PID
    GATEWAY_W=$LAUNCHED_URL
    run "warmup gateway-w" "$GATEWAY_W" "$GWW_PID" --mode closed --concurrency 16 --warmup 0 --max-requests 5000 > /dev/null
fi
for round in $(seq "$ROUNDS"); do
    run "direct open $ROUND_RATE round $round" "$PRIMARY" "$SIM_PID" --mode open --rate "$ROUND_RATE" --duration "$ROUND_DURATION"
    run "gateway open $ROUND_RATE round $round" "$GATEWAY" "$GW_PID" --mode open --rate "$ROUND_RATE" --duration "$ROUND_DURATION"
    if [ -n "${GWW_PID:-}" ]; then
        run "gateway-${ROUND_WORKERS}w open $ROUND_RATE round $round" "$GATEWAY_W" "$GWW_PID" --mode open --rate "$ROUND_RATE" --duration "$ROUND_DURATION"
    fi
done
stop_pid "${GWW_PID:-}"
fi
# A fresh gateway: an overloaded open-loop phase leaves connections and memory behind.
if has closed; then
start_gateway closed
for concurrency in 32; do
    run "direct closed $concurrency" "$PRIMARY" "$SIM_PID" --mode closed --concurrency "$concurrency"
    run "gateway closed $concurrency" "$GATEWAY" "$GW_PID" --mode closed --concurrency "$concurrency"
done
fi

# ---- 2. 1000 concurrent streams (2 s each) -------------------------------------------------
sim_behavior "$PRIMARY" '{"type":"succeed","chunks":20,"chunk_delay":"100ms"}'
if has streams; then
STREAMS=(--mode closed --concurrency 1000 --stream --timeout 20 --warmup 0 --duration 6)
# streams LABEL URL PID: a streams run with the primary's calls by HTTP version beside it.
streams() {
    sim_reset
    run "$@" "${STREAMS[@]}"
    echo "{\"label\":\"$1\",\"provider_calls\":$(sim_calls),\"primary\":$(curl -sf -m 5 "$PRIMARY/_sim/stats" | jq -c '{calls, outcomes, http_versions}')}" >> "$RESULTS"
}
start_gateway streams
streams "direct streams 1000" "$PRIMARY" "$SIM_PID"
streams "gateway streams 1000" "$GATEWAY" "$GW_PID"
start_gateway streams-h2 "$OUT/gateway-h2.yaml"
streams "gateway streams 1000 h2" "$GATEWAY" "$GW_PID"
sim_behavior "$PRIMARY" '{"type":"succeed"}'
fi

# ---- 3. chaos through the gateway ----------------------------------------------------------
CHAOS_RATE=${CHAOS_RATE:-500}
chaos() { # chaos LABEL URL PID args...: a run with the providers' call counts around it
    local label=$1
    sim_reset
    run "$@"
    echo "{\"label\":\"$label\",\"provider_calls\":$(sim_calls),\"primary\":$(sim_calls_of "$PRIMARY"),\"secondary\":$(sim_calls_of "$SECONDARY")}" >> "$RESULTS"
}
if has chaos; then
chaos "direct secondary $CHAOS_RATE" "$SECONDARY" "$SIM_PID" --mode open --rate "$CHAOS_RATE"
# Each chaos phase starts a fresh gateway, so no health or breaker state carries over.
start_gateway flaky30
sim_behavior "$PRIMARY" '{"type":"flaky","probability":0.3,"failure":{"type":"fail","kind":"server"}}'
chaos "gateway flaky30 $CHAOS_RATE" "$GATEWAY" "$GW_PID" --mode open --rate "$CHAOS_RATE"
echo "gateway_circuits_after_flaky30: $(curl -sf -m 5 "$GATEWAY/v1/circuits" | jq -c 'map_values(.state)')" >> "$OUT/machine.txt"
start_gateway dead
sim_behavior "$PRIMARY" '{"type":"fail","kind":"server"}'
# Take the primary out before the first round (health tracking after 3 consecutive failures,
# or the breaker): 1 s at CHAOS_RATE, not recorded. Every round then measures the gateway
# with the primary already out, on the same gateway; with health's 60 s recovery time the
# gateway probes the dead primary again about once a minute, which the rounds include.
run "prime gateway dead" "$GATEWAY" "$GW_PID" --mode open --rate "$CHAOS_RATE" --warmup 0 --duration 1 > /dev/null
for round in $(seq "$ROUNDS"); do
    chaos "direct secondary $CHAOS_RATE round $round" "$SECONDARY" "$SIM_PID" --mode open --rate "$CHAOS_RATE" --duration "$ROUND_DURATION"
    chaos "gateway dead $CHAOS_RATE round $round" "$GATEWAY" "$GW_PID" --mode open --rate "$CHAOS_RATE" --duration "$ROUND_DURATION"
done
if [ "$ROUNDS" -eq 0 ]; then
    chaos "gateway dead $CHAOS_RATE" "$GATEWAY" "$GW_PID" --mode open --rate "$CHAOS_RATE"
fi
echo "gateway_circuits_after_dead: $(curl -sf -m 5 "$GATEWAY/v1/circuits" | jq -c 'map_values(.state)')" >> "$OUT/machine.txt"
sim_behavior "$PRIMARY" '{"type":"succeed"}'
fi

# ---- 5. stalled request bodies ------------------------------------------------------------
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

# ---- 4. LiteLLM's proxy ------------------------------------------------------------------
if [ "$SKIP_LITELLM" = 1 ] || ! has litellm; then
    echo "litellm: skipped (SKIP_LITELLM=1 or not in PHASES)" >> "$OUT/machine.txt"
    echo "loadavg_after: $(cat /proc/loadavg)" >> "$OUT/machine.txt"
    exit 0
fi
start_gateway peer
if [ ! -x "$VENV/bin/litellm" ]; then
    log "installing litellm[proxy]==$LITELLM_VERSION into $VENV"
    if ! { python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "litellm[proxy]==$LITELLM_VERSION"; } > "$OUT/litellm-install.log" 2>&1; then
        echo "litellm: install failed (see litellm-install.log)" >> "$OUT/machine.txt"
        exit 0
    fi
fi
echo "litellm: $("$VENV/bin/pip" show litellm 2>/dev/null | awk '/^Version/{print $2}')" >> "$OUT/machine.txt"
echo "python: $("$VENV/bin/python" --version 2>&1)" >> "$OUT/machine.txt"

LITELLM_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
    --host 127.0.0.1 --port "$LITELLM_PORT" > "$OUT/litellm.log" 2>&1 &
LL_PID=$!
PIDS+=("$LL_PID")
LITELLM=http://127.0.0.1:$LITELLM_PORT
for _ in $(seq 600); do
    curl -sf -m 2 "$LITELLM/health/liveliness" > /dev/null 2>&1 && break
    kill -0 "$LL_PID" 2>/dev/null || break
    sleep 0.2
done
if ! curl -sf -m 2 "$LITELLM/health/liveliness" > /dev/null 2>&1; then
    echo "litellm: did not start (see litellm.log)" >> "$OUT/machine.txt"
    exit 0
fi
log "litellm: $LITELLM (pid $LL_PID)"
echo "litellm_rss_idle_kib: $(awk '/VmRSS/{print $2}' /proc/$LL_PID/status)" >> "$OUT/machine.txt"
AUTH=(--header "Authorization: Bearer $LITELLM_MASTER_KEY" --model primary)

DURATION=$LITELLM_DURATION
run "warmup litellm" "$LITELLM" "$LL_PID" "${AUTH[@]}" --mode closed --concurrency 4 --warmup 0 --max-requests 200 > /dev/null
for rate in $LITELLM_RATES; do
    run "direct open $rate" "$PRIMARY" "$SIM_PID" --mode open --rate "$rate"
    run "gateway open $rate" "$GATEWAY" "$GW_PID" --mode open --rate "$rate"
    run "litellm open $rate" "$LITELLM" "$LL_PID" "${AUTH[@]}" --mode open --rate "$rate" --max-in-flight 512
done
for concurrency in 32; do
    run "litellm closed $concurrency" "$LITELLM" "$LL_PID" "${AUTH[@]}" --mode closed --concurrency "$concurrency"
    run "gateway closed $concurrency (again)" "$GATEWAY" "$GW_PID" --mode closed --concurrency "$concurrency"
done

LL_CHAOS_RATE=${LL_CHAOS_RATE:-20}
chaos "direct secondary $LL_CHAOS_RATE" "$SECONDARY" "$SIM_PID" --mode open --rate "$LL_CHAOS_RATE"
sim_behavior "$PRIMARY" '{"type":"flaky","probability":0.3,"failure":{"type":"fail","kind":"server"}}'
chaos "litellm flaky30 $LL_CHAOS_RATE" "$LITELLM" "$LL_PID" "${AUTH[@]}" --mode open --rate "$LL_CHAOS_RATE" --max-in-flight 512
sim_behavior "$PRIMARY" '{"type":"fail","kind":"server"}'
chaos "litellm dead $LL_CHAOS_RATE" "$LITELLM" "$LL_PID" "${AUTH[@]}" --mode open --rate "$LL_CHAOS_RATE" --max-in-flight 512
sim_behavior "$PRIMARY" '{"type":"succeed"}'
echo "loadavg_after: $(cat /proc/loadavg)" >> "$OUT/machine.txt"
log "done: $RESULTS"

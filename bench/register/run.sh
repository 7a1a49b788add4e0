#!/usr/bin/env bash
# Registration benchmark: how many REGISTERs with digest auth the release server takes per second,
# and what each costs it in CPU time and memory. Not a test: it measures, prints, and leaves the
# verdict to the reader (bench/RESULTS.md records the runs and the targets).
#
#   bench/register/run.sh                  # SQLite store (the default deployment)
#   STORE=postgres bench/register/run.sh   # PostgreSQL at 127.0.0.1:5432/test, fresh schema
#
# What it does, everything on 127.0.0.1 and bounded in time and count (~3-5 minutes):
#  1. Provisions N phones (default 10,000: N users with one phone each) straight into the store in
#     one transaction, after `switchboard migrate` has created the schema.
#  2. Starts the release server (RUST_LOG=warn) and records its RSS with no binding.
#  3. Cold pass: every phone registers once (REGISTER, 401, REGISTER with MD5 digest, 200) at
#     COLD_RATE/s from INSTANCES SIPp processes, each with its own half of the phones and its own
#     local port. Checks that the store holds N bindings; CPU and RSS deltas give the per
#     registration and per binding figures (right after, and again once the cold pass's server
#     transactions have ended, SETTLE_SECS later). Credentials are not cached yet, so each phone's
#     second REGISTER costs a database lookup here.
#  4. Ramp: re-registrations (refreshes of the same N bindings, credentials cached) at each rate
#     of RATES for STEP_SECS seconds; stops at the first rate not held (>= 0.1 % failed calls,
#     or SIPp could not place the calls on time), then tries the midpoint once.
#  5. Restarts the server, which reloads the N bindings from the store: RSS of a fresh process
#     with N bindings against a fresh process with none is the other per-binding figure.
#
# Knobs (environment): STORE=sqlite|postgres, N=10000, INSTANCES=2, COLD_RATE=2500,
# RATES="2000 4000 ...", STEP_SECS=20, SETTLE_SECS=34, SWITCHBOARD_BIN (default: build into
# CARGO_TARGET_DIR=/work/bench-target), KEEP=1 keeps the work directory, PERF=1 records
# `perf record -g` of the server during each rate (report in the work directory; PERF_CALL_GRAPH
# replaces `-g`, e.g. "--call-graph dwarf" for a binary without frame pointers).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
STORE="${STORE:-sqlite}"
N="${N:-10000}"
INSTANCES="${INSTANCES:-2}"
COLD_RATE="${COLD_RATE:-2500}"
RATES="${RATES:-2000 4000 6000 8000 10000 12000 14000 16000}"
STEP_SECS="${STEP_SECS:-20}"
SETTLE_SECS="${SETTLE_SECS:-34}"
EXPIRES=3600
REALM="bench.example"
MAX_FAILED_PCT="0.1"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/bench-target}"
BIN="${SWITCHBOARD_BIN:-$CARGO_TARGET_DIR/release/switchboard}"

command -v sipp >/dev/null || die "sipp is not installed (Debian package sip-tester)"
[ "$INSTANCES" = 1 ] || [ "$INSTANCES" = 2 ] || die "INSTANCES must be 1 or 2"
if [ -z "${SWITCHBOARD_BIN:-}" ]; then
  echo "== building the release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$BIN" ] || die "no server binary at $BIN"

WORK="$(mktemp -d /tmp/switchboard-bench.XXXXXX)"
SERVER_PID=""
SIPP_PIDS=()
PG_SCHEMA=""
PERF_PID=""


cleanup() {
  local rc=$?
  for p in "${SIPP_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -n "$PERF_PID" ] && kill -INT "$PERF_PID" 2>/dev/null || true
  stop_server
  if [ -n "$PG_SCHEMA" ]; then
    psql -qX "$PG_ADMIN_URL" -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null 2>&1 || true
  fi
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "bench: work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

HTTP_PORT="$(free_port SOCK_STREAM)"
SIP_PORT="$(free_port SOCK_DGRAM)"
DATA="$WORK/data"
mkdir -p "$DATA"
cat >"$WORK/switchboard.toml" <<EOF
[sip]
realm = "$REALM"
digest_algorithms = ["MD5", "SHA-256"]

[registrar]
min_expires = 60
max_expires = $EXPIRES
default_expires = $EXPIRES
EOF

export SWITCHBOARD_DATA_DIR="$DATA"
export SWITCHBOARD_HTTP_LISTEN="127.0.0.1:$HTTP_PORT"
export SWITCHBOARD_SIP_LISTEN="udp:127.0.0.1:$SIP_PORT"
export RUST_LOG=warn
unset SWITCHBOARD_CONFIG SWITCHBOARD_SIP_REALM
if [ "$STORE" = postgres ]; then
  PG_ADMIN_URL="${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}"
  PG_SCHEMA="bench_reg_$$_$(date +%s)"
  psql -qX "$PG_ADMIN_URL" -c "CREATE SCHEMA $PG_SCHEMA" >/dev/null
  DB_URL="$PG_ADMIN_URL?options=-c%20search_path%3D$PG_SCHEMA"
  export SWITCHBOARD_DATABASE_URL="$DB_URL"
  sql() { psql -qXAt -v ON_ERROR_STOP=1 "$DB_URL" "$@"; }
elif [ "$STORE" = sqlite ]; then
  unset SWITCHBOARD_DATABASE_URL
  sql() { sqlite3 -bail "$DATA/switchboard.db" "$@"; }
else
  die "STORE must be sqlite or postgres"
fi
sb() { "$BIN" --config "$WORK/switchboard.toml" "$@"; }

# --- process accounting --------------------------------------------------------------------------

start_server() {
  : >"$WORK/server.log"
  # Not through sb(): $! must be the server itself, not a subshell running a function.
  "$BIN" --config "$WORK/switchboard.toml" serve >>"$WORK/server.log" 2>&1 &
  SERVER_PID=$!
  local i
  for i in $(seq 1 200); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" 2>/dev/null; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "server exited"; }
    sleep 0.1
  done
  die "server did not answer /healthz within 20 s"
}

stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}

# --- one SIPp load -------------------------------------------------------------------------------
load_cpu_ticks() { cpu_ticks "$SERVER_PID"; }
load_faults() { minor_faults "$SERVER_PID"; }
load_snapshot() { thread_ticks "$SERVER_PID"; }
# shellcheck source=load.sh
. "$HERE/load.sh"

thread_report() {
  local dir="$WORK/$1"
  join "$dir/procs.before" "$dir/procs.after" 2>/dev/null |
    awk -v k="$CLK_TCK" -v w="$2" '{d = $5 - $3; if (d > 0) printf "     %-22s x%-2s %7.2f s CPU (%3.0f%% of one core)\n", $1, $4, d / k, d / k / w * 100}'
}

# --- 1. schema and phones -------------------------------------------------------------------------
SIPP_PORTS=()
for i in $(seq 0 $(( INSTANCES - 1 ))); do SIPP_PORTS+=("$(free_port SOCK_DGRAM)"); done
REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(cd "$ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock migrations 2>/dev/null)" ]; then REV="$REV+dirty"; fi
echo "== $STORE store, $N phones, $INSTANCES SIPp instance(s), source $REV, work dir $WORK"
T_START="$(date +%s)"
sb migrate >"$WORK/migrate.log" 2>&1 || { cat "$WORK/migrate.log" >&2; die "migrate failed"; }
python3 "$HERE/provision.py" "$N" "$REALM" "$WORK" "$INSTANCES"
t0="$(date +%s.%N)"
if [ "$STORE" = postgres ]; then sql -f "$WORK/users.sql" >/dev/null; else sql <"$WORK/users.sql"; fi
count_rows() {
  if [ "$STORE" = postgres ]; then sql -c "SELECT count(*) FROM $1"; else sql "SELECT count(*) FROM $1"; fi
}
echo "   provisioned $(count_rows phones) phones in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s"

# --- 2. server ----------------------------------------------------------------------------------
start_server
sleep 1
RSS0="$(rss_kb "$SERVER_PID")"
echo "== server pid $SERVER_PID, SIP udp:127.0.0.1:$SIP_PORT, RSS with no binding: $RSS0 KiB"

# --- 3. cold pass: N distinct phones register once -------------------------------------------------
echo "== cold pass: $N distinct phones register once at $COLD_RATE/s (credentials not cached)"
run_load cold "$COLD_RATE" "$N"
COLD_US="$LOAD_US"; COLD_OK="$LOAD_OK"; COLD_FAILED_PCT="$LOAD_FAILED_PCT"; COLD_WALL="$LOAD_WALL"
thread_report cold "$LOAD_WALL"
sleep 1
RSS1="$(rss_kb "$SERVER_PID")"
STORED="$(count_rows registrations)"
echo "   bindings in the store: $STORED (expected $N); RSS $RSS1 KiB"
[ "$STORED" = "$N" ] || echo "   WARNING: the store holds $STORED bindings, not $N"
LIVE_BYTES="$(awk -v a="$RSS0" -v b="$RSS1" -v n="$N" 'BEGIN {printf "%.0f", (b - a) * 1024 / n}')"
# The 2N server transactions of the cold pass live on for Timer J (64*T1 = 32 s on UDP), each
# with its request and response: wait them out and look again (freed memory the allocator keeps
# still counts, so this is an upper bound too).
echo "   waiting ${SETTLE_SECS}s for the cold pass's transactions to end (Timer J)"
sleep "$SETTLE_SECS"
RSS1S="$(rss_kb "$SERVER_PID")"
SETTLED_BYTES="$(awk -v a="$RSS0" -v b="$RSS1S" -v n="$N" 'BEGIN {printf "%.0f", (b - a) * 1024 / n}')"
echo "   RSS $RSS1S KiB"

# --- 4. ramp: refreshes at rising rates -----------------------------------------------------------
echo "== ramp: re-registrations (refreshes, credentials cached), ${STEP_SECS} s per rate"
load_step() {
  local perf_dir="$WORK/$1"
  if [ "${PERF:-0}" = 1 ] && command -v perf >/dev/null; then
    mkdir -p "$perf_dir"
    # shellcheck disable=SC2086  # PERF_CALL_GRAPH is a list of options
    perf record -q ${PERF_CALL_GRAPH:--g} -p "$SERVER_PID" -o "$perf_dir/perf.data" -- sleep "$STEP_SECS" >/dev/null 2>&1 &
    PERF_PID=$!
  fi
  run_load "$@"
  if [ -n "$PERF_PID" ]; then wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""; fi
}
ramp
if [ -n "$BEST_NAME" ]; then
  echo "   server threads during the highest rate held ($BEST_RATE/s):"
  thread_report "$BEST_NAME" "$BEST_WALL"
fi
if [ -n "$FAIL_RATE" ]; then
  echo "   server threads during the first rate not held ($FAIL_RATE/s):"
  thread_report "rate_$FAIL_RATE" "$STEP_SECS"
fi
STORED_AFTER="$(count_rows registrations)"

# --- 5. restart: the same bindings reloaded from the store ---------------------------------------
stop_server
start_server
sleep 1
RSS2="$(rss_kb "$SERVER_PID")"
stop_server
RESTORED_BYTES="$(awk -v a="$RSS0" -v b="$RSS2" -v n="$STORED_AFTER" 'BEGIN {printf "%.0f", n ? (b - a) * 1024 / n : 0}')"

# --- results --------------------------------------------------------------------------------------
echo
echo "== results ($STORE, source $REV, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1))"
echo "   highest rate held ${STEP_SECS} s with < ${MAX_FAILED_PCT}% failed: ${BEST_RATE}/s (failed ${BEST_FAILED:-n/a}%, mean call ${BEST_RTT:-n/a} ms, SIPp CPU ${BEST_SIPP:-n/a})"
[ -n "$FAIL_RATE" ] && echo "   first rate not held: ${FAIL_RATE}/s (failed ${STEP_FAILED[$FAIL_RATE]}%)"
echo "   server CPU per registration at ${BEST_RATE}/s (refresh, cached credentials): ${BEST_US:-n/a} µs"
echo "   server CPU per registration, cold pass ($N first registrations at ${COLD_RATE}/s): ${COLD_US} µs"
echo "   memory per binding, live (RSS after $N first registrations - before): ${LIVE_BYTES} B"
echo "   memory per binding, settled (RSS ${SETTLE_SECS} s later, transactions gone - before): ${SETTLED_BYTES} B"
echo "   memory per binding, restored (fresh server with $STORED_AFTER bindings - fresh server with none): ${RESTORED_BYTES} B"
echo "   bindings in the store: $STORED after the cold pass, $STORED_AFTER after the ramp"
echo "   per-rate server CPU: $(for r in $(echo "${!STEP_US[@]}" | tr ' ' '\n' | sort -n); do printf '%s/s=%sµs(%s%%) ' "$r" "${STEP_US[$r]}" "${STEP_FAILED[$r]}"; done)"
echo "   targets: >= 10000/s, <= 40 µs CPU per registration, < 1024 B per binding"
echo "   total run time: $(( $(date +%s) - T_START )) s"

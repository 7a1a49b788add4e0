#!/usr/bin/env bash
# Call benchmark (signalling only): how many calls per second the release server takes from a
# SIPp caller to a SIPp callee through the B2BUA, and what each costs it in CPU time. Not a test:
# it measures and prints; bench/RESULTS.md records the runs and the targets.
#
#   bench/calls/run.sh
#
# One call = INVITE, 407, ACK, INVITE with digest credentials, 100/180/200, ACK, BYE after
# HOLD_MS, 200 on the caller's side, and the B2BUA's own INVITE, 180, 200, ACK, BYE, 200 on the
# callee's; plus the call record written to the store (SQLite) at the end. Everything on
# 127.0.0.1. Steps:
#  1. Provisions users 100 (phone `caller`) and 200 (phone `callee`) with the CLI.
#  2. Starts the release server; the callee phone registers (SIPp, register scenario) and then
#     answers every call with tests/sipp/call_uas.xml from the same port.
#  3. For each rate of RATES: STEP_SECS seconds of calls from tests/sipp/call_uac.xml; reports
#     successful and failed calls and the server's CPU time per successful call
#     (utime + stime from /proc/PID/stat). Stops at the first rate not held (>= 0.1 % failed or
#     calls not placed on time).
#
# Knobs: RATES="250 500 1000 ...", STEP_SECS=20, HOLD_MS=100, SWITCHBOARD_BIN (default: build
# into CARGO_TARGET_DIR=/work/bench-target), KEEP=1 keeps the work directory, THREADS=1 prints
# each step's CPU per call by thread name, STEADY_SECS=N also prints the CPU per call from N s into
# each step to its end (the steady state, once the first calls' transactions end: N >= 35),
# SIPP_BUFFER=bytes for SIPp's socket buffers (default 4 MiB).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
RATES="${RATES:-250 500 1000 1500 2000 2500 3000}"
STEP_SECS="${STEP_SECS:-20}"
HOLD_MS="${HOLD_MS:-100}"
MAX_FAILED_PCT="0.1"
# SIPp's socket buffers (its -buff_size; its default is 64 KiB). With the default, SIPp's own
# sockets drop datagrams on loopback from about 3,500 calls/s on a two-core machine, and the
# benchmark then measures SIPp's losses and the retransmissions they cause (the kernel caps
# this at net.core.rmem_max / wmem_max).
SIPP_BUFFER="${SIPP_BUFFER:-4194304}"
SCENARIOS="$ROOT/tests/sipp"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/bench-target}"
BIN="${SWITCHBOARD_BIN:-$CARGO_TARGET_DIR/release/switchboard}"
command -v sipp >/dev/null || die "sipp is not installed (Debian package sip-tester)"
if [ -z "${SWITCHBOARD_BIN:-}" ]; then
  echo "== building the release binary (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$BIN" ] || die "no server binary at $BIN"

WORK="$(mktemp -d /tmp/switchboard-bench-calls.XXXXXX)"
SERVER_PID=""
UAS_PID=""
UAC_PID=""
cleanup() {
  local rc=$?
  [ -n "$UAC_PID" ] && kill "$UAC_PID" 2>/dev/null || true
  [ -n "$UAS_PID" ] && kill "$UAS_PID" 2>/dev/null || true
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then echo "bench: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

HTTP_PORT="$(free_port SOCK_STREAM)"
SIP_PORT="$(free_port SOCK_DGRAM)"
UAS_PORT="$(free_port SOCK_DGRAM)"
UAC_PORT="$(free_port SOCK_DGRAM)"
cat >"$WORK/switchboard.toml" <<TOML
data_dir = "$WORK/data"
[http]
listen = "127.0.0.1:$HTTP_PORT"
[sip]
listen = ["udp:127.0.0.1:$SIP_PORT"]
realm = "bench.example"
digest_algorithms = ["MD5", "SHA-256"]
[calls]
no_answer_secs = 30
TOML
unset SWITCHBOARD_CONFIG SWITCHBOARD_DATA_DIR SWITCHBOARD_DATABASE_URL SWITCHBOARD_HTTP_LISTEN SWITCHBOARD_SIP_LISTEN SWITCHBOARD_SIP_REALM
export RUST_LOG=warn
sb() { "$BIN" --config "$WORK/switchboard.toml" "$@"; }

REV="$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(cd "$ROOT" && git status --porcelain -- src Cargo.toml Cargo.lock migrations 2>/dev/null)" ]; then REV="$REV+dirty"; fi
echo "== calls: SIPp caller -> PBX -> SIPp callee, source $REV, work dir $WORK"
sb migrate >"$WORK/setup.log" 2>&1
sb user add 100 --name Caller --email caller@example.com >>"$WORK/setup.log" 2>&1
sb user add 200 --name Callee --email callee@example.com >>"$WORK/setup.log" 2>&1
sb phone add --user 100 --username caller --password caller-secret >>"$WORK/setup.log" 2>&1
sb phone add --user 200 --username callee --password callee-secret >>"$WORK/setup.log" 2>&1

"$BIN" --config "$WORK/switchboard.toml" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" 2>/dev/null && break; sleep 0.1; done
kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; die "server exited"; }

(cd "$WORK" && sipp "127.0.0.1:$SIP_PORT" -sf "$SCENARIOS/register.xml" -m 1 -i 127.0.0.1 -p "$UAS_PORT" \
  -s callee -au callee -ap callee-secret -set expires 3600 -timeout 10s -timeout_error -nostdin \
  >"$WORK/register.out" 2>&1) || die "the callee could not register ($WORK/register.out)"
(cd "$WORK" && exec sipp -sf "$SCENARIOS/call_uas.xml" -i 127.0.0.1 -p "$UAS_PORT" -nostdin -buff_size "$SIPP_BUFFER" \
  -max_recv_loops 10000 -trace_err -error_file "$WORK/uas_errors.log" >"$WORK/uas.out" 2>&1) &
UAS_PID=$!
sleep 0.5

printf '   %-6s %8s %8s %8s %10s %14s %10s\n' rate ok failed "failed%" "placed_s" "server_us/call" held
BEST=0; BEST_US=""
for r in $RATES; do
  count=$(( r * STEP_SECS ))
  c0="$(cpu_ticks "$SERVER_PID")"; thread_ticks "$SERVER_PID" >"$WORK/threads0_$r"
  (cd "$WORK" && sipp "127.0.0.1:$SIP_PORT" -sf "$SCENARIOS/call_uac.xml" -i 127.0.0.1 -p "$UAC_PORT" -buff_size "$SIPP_BUFFER" \
     -s 200 -au caller -ap caller-secret -d "$HOLD_MS" -r "$r" -m "$count" -l $(( r * 3 + 100 )) \
     -recv_timeout 8000 -timeout "$(( STEP_SECS + 15 ))s" -nostdin -max_recv_loops 10000 -max_sched_loops 10000 \
     -trace_stat -stf "$WORK/stat_$r.csv" -fd 1 -trace_err -error_file "$WORK/uac_errors_$r.log" \
     >"$WORK/uac_$r.out" 2>&1) &
  UAC_PID=$!
  steady=""
  if [ -n "${STEADY_SECS:-}" ] && [ "$STEADY_SECS" -lt $(( STEP_SECS - 5 )) ]; then
    # CPU per call in the step's later part alone (STEADY_SECS=35): once the transactions of
    # the first calls end (Timers J, L, M: 32 s), freeing them costs too, which a short step
    # never sees. Calls in the window: the rate times its length (the step must hold).
    sleep "$STEADY_SECS"; s0="$(cpu_ticks "$SERVER_PID")"; w0="$(date +%s.%N)"
    sleep $(( STEP_SECS - STEADY_SECS - 2 )); s1="$(cpu_ticks "$SERVER_PID")"; w1="$(date +%s.%N)"
    steady="$(awk -v t="$(( s1 - s0 ))" -v k="$CLK_TCK" -v r="$r" -v a="$w0" -v b="$w1" \
      'BEGIN {printf "%.1f", t * 1e6 / k / (r * (b - a))}')"
  fi
  wait "$UAC_PID" || true
  c1="$(cpu_ticks "$SERVER_PID")"; thread_ticks "$SERVER_PID" >"$WORK/threads1_$r"
  read -r ok failed placed <<<"$(python3 - "$WORK/stat_$r.csv" "$count" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
epoch = lambda v: float(v.split('\t')[-1])
placed = next((epoch(x[h.index('CurrentTime')]) - epoch(x[h.index('StartTime')])
               for x in rows[1:] if int(x[h.index('TotalCallCreated')]) >= int(sys.argv[2])), 1e9)
print(last[h.index('SuccessfulCall(C)')], last[h.index('FailedCall(C)')], round(placed, 1))
PY
)"
  us="$(awk -v t="$(( c1 - c0 ))" -v k="$CLK_TCK" -v n="$ok" 'BEGIN {printf "%.1f", n ? t * 1e6 / k / n : 0}')"
  pct="$(awk -v f="$failed" -v n="$count" 'BEGIN {printf "%.3f", f * 100 / n}')"
  held="$(awk -v ok="$ok" -v f="$failed" -v n="$count" -v p="$placed" -v s="$STEP_SECS" -v m="$MAX_FAILED_PCT" \
    'BEGIN {print (f * 100 < m * n && ok + f >= n && p <= s + 1.5) ? "yes" : "no"}')"
  printf '   %-6s %8s %8s %8s %10s %14s %10s\n' "$r" "$ok" "$failed" "$pct" "$placed" "$us" "$held"
  [ -n "$steady" ] && echo "     from ${STEADY_SECS} s to $(( STEP_SECS - 2 )) s of the step: $steady µs/call"
  if [ -n "${THREADS:-}" ]; then
    # Where the step's CPU went, per thread name (THREADS=1): µs per successful call.
    join -a2 "$WORK/threads0_$r" "$WORK/threads1_$r" | awk -v k="$CLK_TCK" -v n="$ok" \
      'NF == 5 {d = $5 - $3} NF == 3 {d = $3} d > 0 && n {printf "     thread %-16s %8.1f µs/call\n", $1, d * 1e6 / k / n}'
  fi
  if [ "$held" = yes ]; then BEST="$r"; BEST_US="$us"; else break; fi
  sleep 3
done
echo "== results (source $REV, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs)"
echo "   highest rate held ${STEP_SECS} s with < ${MAX_FAILED_PCT}% failed: ${BEST}/s, server CPU ${BEST_US:-n/a} µs per call"
echo "   call records in the store: $(sqlite3 "$WORK/data/switchboard.db" 'SELECT count(*) FROM calls' 2>/dev/null || echo '?')"
echo "   targets: >= 2500 calls/s, <= 150 µs CPU per call"

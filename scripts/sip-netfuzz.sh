#!/usr/bin/env bash
# Runs scripts/sip-netfuzz.py against a fresh release server (users 100 and 200, a phone each)
# and fails when the server stops answering or its log shows a panic.
#
#   scripts/sip-netfuzz.sh [SECONDS] [SEED]   # SWITCHBOARD_BIN overrides the binary; JOBS=N
#                                             # runs N fuzzers at once
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=../bench/lib.sh
. "$ROOT/bench/lib.sh"
SECS="${1:-30}"; SEED="${2:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BIN="${SWITCHBOARD_BIN:-}"
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release --quiet --bin switchboard)
  BIN="$CARGO_TARGET_DIR/release/switchboard"
fi
WORK="$(mktemp -d /tmp/switchboard-netfuzz.XXXXXX)"
SERVER_PID=""
cleanup() {
  local rc=$?
  if [ -n "$SERVER_PID" ]; then kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  if [ $rc -ne 0 ]; then echo "netfuzz: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
HTTP_PORT="$(free_port SOCK_STREAM)"
SIP_PORT="$(free_port SOCK_DGRAM)"
TCP_PORT="$(free_port SOCK_STREAM)"
# Bans off in effect: the fuzzer's mutated credentials would otherwise ban it within seconds.
cat >"$WORK/switchboard.toml" <<TOML
data_dir = "$WORK/data"
[http]
listen = "127.0.0.1:$HTTP_PORT"
[sip]
listen = ["udp:127.0.0.1:$SIP_PORT", "tcp:127.0.0.1:$TCP_PORT"]
realm = "fuzz.example"
[calls]
no_answer_secs = 2
[security]
ban_failures = 1000000
ban_window_secs = 1
TOML
unset SWITCHBOARD_CONFIG SWITCHBOARD_DATA_DIR SWITCHBOARD_DATABASE_URL SWITCHBOARD_HTTP_LISTEN SWITCHBOARD_SIP_LISTEN SWITCHBOARD_SIP_REALM
export RUST_LOG=warn RUST_BACKTRACE=1
sb() { "$BIN" --config "$WORK/switchboard.toml" "$@"; }
sb migrate >"$WORK/setup.log" 2>&1
sb user add 100 --name Caller --email caller@example.com >>"$WORK/setup.log" 2>&1
sb user add 200 --name Callee --email callee@example.com >>"$WORK/setup.log" 2>&1
sb phone add --user 100 --username caller --password caller-secret >>"$WORK/setup.log" 2>&1
sb phone add --user 200 --username callee --password callee-secret >>"$WORK/setup.log" 2>&1
# Not through `sb`: a function run in the background is a subshell of its own, and the TERM of
# the clean-up would stop that shell and leave the server running.
"$BIN" --config "$WORK/switchboard.toml" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" 2>/dev/null && break; sleep 0.1; done
# JOBS fuzzers at once (seeds SEED, SEED+1, ...): each registers its own callee contact, so a
# call rings every fuzzer's callee and their mutations meet in the same calls.
pids=()
for i in $(seq 0 $(( ${JOBS:-1} - 1 ))); do
  python3 "$ROOT/scripts/sip-netfuzz.py" "127.0.0.1:$SIP_PORT" caller:caller-secret callee:callee-secret 200 \
    "$SECS" "$(( SEED + i ))" "$TCP_PORT" &
  pids+=($!)
done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || die "a fuzzer found the server not answering (log: $WORK/server.log)"
curl -fsS -o /dev/null "http://127.0.0.1:$HTTP_PORT/healthz" || die "the API stopped answering"
if grep -n 'panicked' "$WORK/server.log"; then
  die "the server panicked (log: $WORK/server.log)"
fi
echo "netfuzz: no panic in $WORK/server.log"

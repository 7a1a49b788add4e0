#!/usr/bin/env bash
# Compares two server binaries on the call benchmark by alternating them, because single runs on
# a shared machine differ by 15-20 %: A, B, A, B, ... at one rate, printing each run's server
# CPU per call and failed calls. Compare the pairs, not runs far apart in time.
#
#   bench/calls/ab.sh OLD_BINARY NEW_BINARY [PAIRS]     # RATE=2500, STEP_SECS=15 by default
#
# Each run is bench/calls/run.sh with one step. Binaries from other revisions come from their
# own CARGO_TARGET_DIR (see bench/README.md); the script prints the binary's path.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
A="${1:?old binary}"; B="${2:?new binary}"; PAIRS="${3:-3}"
RATE="${RATE:-2500}"; STEP="${STEP_SECS:-15}"
for _ in $(seq 1 "$PAIRS"); do
  for bin in "$A" "$B"; do
    # run.sh's result line: rate ok failed failed% placed_s server_us/call held
    # (awk reads to the end: leaving early would kill run.sh with SIGPIPE mid-run.)
    line="$(RATES="$RATE" STEP_SECS="$STEP" SWITCHBOARD_BIN="$bin" "$HERE/run.sh" 2>&1 |
      awk -v r="$RATE" '$1 == r && NF == 7 && !seen {print; seen = 1}' || true)"
    if [ -n "$line" ]; then
      echo "$line" | awk -v b="$bin" -v r="$RATE" \
        '{printf "%s %s µs/call at %s/s, %s of %s calls failed\n", b, $6, r, $3, $2 + $3}'
    else
      echo "$bin failed at $RATE/s (no result line)"
    fi
  done
done

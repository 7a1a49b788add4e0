#!/usr/bin/env bash
# Compares two server binaries on the call benchmark by alternating them, because single runs on
# a shared machine differ by 15-20 %: A, B, A, B, ... at one rate, printing each run's server
# CPU per call and failed calls, then a summary of the pairs. Compare the pairs, not runs far
# apart in time.
#
#   bench/calls/ab.sh OLD_BINARY NEW_BINARY [PAIRS]     # RATE=2500, STEP_SECS=15 by default
#
# Each run is bench/calls/run.sh with one step. Binaries from other revisions come from their
# own CARGO_TARGET_DIR (see bench/README.md); the script prints the binary's path.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
A="${1:?old binary}"; B="${2:?new binary}"; PAIRS="${3:-3}"
RATE="${RATE:-2500}"; STEP="${STEP_SECS:-15}"
PAIRS_FILE="$(mktemp)"
trap 'rm -f "$PAIRS_FILE"' EXIT
for _ in $(seq 1 "$PAIRS"); do
  pair=""
  for bin in "$A" "$B"; do
    # run.sh's result line: rate ok failed failed% placed_s server_us/call held
    # (awk reads to the end: leaving early would kill run.sh with SIGPIPE mid-run.)
    line="$(RATES="$RATE" STEP_SECS="$STEP" SWITCHBOARD_BIN="$bin" "$HERE/run.sh" 2>&1 |
      awk -v r="$RATE" '$1 == r && NF == 7 && !seen {print; seen = 1}' || true)"
    if [ -n "$line" ]; then
      echo "$line" | awk -v b="$bin" -v r="$RATE" \
        '{printf "%s %s µs/call at %s/s, %s of %s calls failed\n", b, $6, r, $3, $2 + $3}'
      pair="$pair $(echo "$line" | awk '{print $6}')"
    else
      echo "$bin failed at $RATE/s (no result line)"
    fi
  done
  # Only pairs where both runs gave a figure count in the summary.
  if [ "$(echo "$pair" | wc -w)" -eq 2 ]; then echo "$pair" >>"$PAIRS_FILE"; fi
done
# The summary: the mean of each side and of the per-pair change (pairs, not runs far apart in
# time, are what can be compared on a noisy machine), and in how many pairs the new one was lower.
awk '{a += $1; b += $2; d += ($2 - $1) / $1; if ($2 < $1) lower++; n++}
  END {if (n) printf "summary: %d pairs, old %.1f µs, new %.1f µs, new/old %+.1f %% per pair on average, new lower in %d of %d\n",
    n, a / n, b / n, 100 * d / n, lower, n}' "$PAIRS_FILE"

#!/usr/bin/env bash
# Compares two server binaries on the registration benchmark by alternating them, because
# single runs on a shared machine differ by ±10 %: A, B, A, B, ... at one rate, printing the
# server CPU per registration of each run. Compare the pairs, not runs far apart in time.
#
#   bench/register/ab.sh OLD_BINARY NEW_BINARY [PAIRS]     # RATE=10000 by default
#
# Each run is bench/register/run.sh with one 20 s step, started 2 s after the cold pass
# (SETTLE_SECS=2: both binaries see the cold pass's transactions end during the step alike).
# A binary built from another revision must come from its own CARGO_TARGET_DIR (see
# bench/README.md); the script reports the binary's path, so name them apart.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
A="${1:?old binary}"; B="${2:?new binary}"; PAIRS="${3:-3}"; RATE="${RATE:-10000}"
for _ in $(seq 1 "$PAIRS"); do
  for bin in "$A" "$B"; do
    us="$(RATES="$RATE" STEP_SECS=20 SETTLE_SECS=2 SWITCHBOARD_BIN="$bin" "$HERE/run.sh" 2>&1 |
      sed -n 's/^   rate_[0-9]* .*server CPU *\([0-9.]*\) µs.*/\1/p')"
    echo "$bin ${us:-failed} µs/registration at $RATE/s"
  done
done

#!/usr/bin/env bash
# Instructions our code executes per call or per registration, counted by valgrind's callgrind.
# Not a test: it measures and prints.
#
#   bench/callgrind.sh calls [SERVER_BINARY]      # 200 calls through the real server
#   bench/callgrind.sh register [SIP_CORE_BINARY] # bench/sip_core's registrations
#
# Why: on a shared VM the same binary's CPU time per call differs by 15-20 % between runs, more
# than most single changes are worth. An instruction count does not move with the machine's
# load: the same binary and inputs give the same count within a fraction of a percent, so two
# builds can be compared one after the other. It is a proxy: it counts user-space instructions
# only (no kernel, no cache misses), so the end-to-end benchmarks (bench/calls, bench/register)
# stay the figures that count. Valgrind runs code about 50 times slower, hence the low rates.
#
# calls: bench/calls/run.sh at 20 calls/s for 10 s, with the server's `serve` run under
#   callgrind (one output file per thread). Prints the instructions of the SIP core thread
#   (`sip-core`: parsing, transactions, the B2BUA) per call, and of all threads. The other
#   threads' share is not representative: at 20 calls/s each call record is a transaction of
#   its own, where under load records are written in batches.
# register: the sip_core benchmark (PHONES=2000, two rounds) under callgrind; prints the
#   instructions of its server side (`serve`) per registration (REGISTER, 401, REGISTER, 200).
#
# Under valgrind the CPU features it does not emulate are off: SHA-256 takes the software path
# instead of SHA-NI, which makes digest and nonce work look several times dearer than it is.
#
# Knobs: CALLS_RATE=20, CALLS_SECS=10, KEEP=1 keeps the callgrind outputs (for
# callgrind_annotate). Needs valgrind (Debian package valgrind).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib.sh
. "$HERE/lib.sh"
command -v valgrind >/dev/null || die "valgrind is not installed"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/bench-target}"
WORK="$(mktemp -d /tmp/switchboard-callgrind.XXXXXX)"
if [ "${KEEP:-0}" = 1 ]; then
  trap 'echo "callgrind outputs kept in $WORK" >&2' EXIT
else
  trap 'rm -rf "$WORK"' EXIT
fi

# Total instructions ("summary:") of one callgrind output file.
instructions() { awk '/^summary:/ && !seen {print $2; seen = 1}' "$1"; }

case "${1:-}" in
  calls)
    BIN="$(realpath "${2:-$CARGO_TARGET_DIR/release/switchboard}")"
    [ -x "$BIN" ] || die "no server binary at $BIN"
    RATE="${CALLS_RATE:-20}"; SECS="${CALLS_SECS:-10}"
    # A stand-in binary: `serve` runs under callgrind, every other command (the set-up CLI) as is.
    cat >"$WORK/switchboard" <<EOF
#!/bin/sh
case "\$*" in
  *serve*) exec valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$WORK/cg.out.%p" "$BIN" "\$@" ;;
  *) exec "$BIN" "\$@" ;;
esac
EOF
    chmod +x "$WORK/switchboard"
    out="$(RATES="$RATE" STEP_SECS="$SECS" SWITCHBOARD_BIN="$WORK/switchboard" "$HERE/calls/run.sh" 2>&1)" \
      || { echo "$out" >&2; die "the call benchmark failed"; }
    calls="$(echo "$out" | awk -v r="$RATE" '$1 == r && !seen {print $2; seen = 1}')"
    [ -n "$calls" ] && [ "$calls" -gt 0 ] || { echo "$out" >&2; die "no successful calls"; }
    core=0; total=0
    for f in "$WORK"/cg.out.*-*; do
      n="$(instructions "$f")"; total=$(( total + n ))
      grep -q 'sip::endpoint::Core::run' "$f" && core="$n"
    done
    [ "$core" -gt 0 ] || die "no sip-core thread among the callgrind outputs"
    echo "callgrind, $calls calls at $RATE/s, $BIN"
    echo "   sip-core thread: $(( core / calls )) instructions per call"
    echo "   all threads:     $(( total / calls )) instructions per call (start-up included)"
    ;;
  register)
    BIN="${2:-}"
    if [ -z "$BIN" ]; then
      BIN="$(ls -t "$CARGO_TARGET_DIR"/release/deps/sip_core-* 2>/dev/null | grep -v '\.d$' | head -1 || true)"
    fi
    [ -n "$BIN" ] && [ -x "$BIN" ] || die "no sip_core benchmark binary (cargo bench --bench sip_core --no-run)"
    PHONES=2000 ROUNDS=2 valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" "$BIN" --bench >/dev/null 2>&1
    serve="$(callgrind_annotate --inclusive=yes "$WORK/cg.out" 2>/dev/null \
      | awk '/sip_core::serve \[/ && !seen {gsub(",", "", $1); print $1; seen = 1}')"
    [ -n "$serve" ] || die "no sip_core::serve in the profile"
    echo "callgrind, 4000 registrations (2000 phones, 2 rounds), $BIN"
    echo "   server side: $(( serve / 4000 )) instructions per registration"
    ;;
  *)
    die "usage: bench/callgrind.sh calls [SERVER_BINARY] | register [SIP_CORE_BINARY]"
    ;;
esac

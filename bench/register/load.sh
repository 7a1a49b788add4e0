# shellcheck shell=bash disable=SC2034  # the LOAD_*, BEST_* and STEP_* results are read by the sourcing script
# run_load, the SIPp registration load that bench/register/run.sh (our server) and
# bench/register/kamailio.sh (the calibration) both drive, so that the two measure alike.
# Also the rate ramp both run after their cold pass. The sourcing script provides WORK, HERE,
# INSTANCES, SIP_PORT, SIPP_PORTS, EXPIRES, RATES, STEP_SECS, T_START,
# MAX_FAILED_PCT, SIPP_PIDS, die, and three functions for the server under test:
#   load_cpu_ticks    its CPU time so far, in clock ticks (utime + stime)
#   load_faults       its minor page faults so far
#   load_snapshot     per-thread or per-process CPU lines, for the report after a load

# --- one SIPp load -------------------------------------------------------------------------------
# run_load NAME RATE COUNT: COUNT calls in total at RATE calls/s, split over the instances (each
# with its own phones and local port). Sets LOAD_* globals: ok, failed, wall seconds, server CPU
# ticks, SIPp CPU seconds per instance, mean call time.
run_load() {
  local name="$1" rate="$2" count="$3"
  local dir="$WORK/$name" i
  mkdir -p "$dir"
  local per_rate=$(( rate / INSTANCES )) per_count=$(( count / INSTANCES ))
  local limit=$(( per_rate * 3 + 100 ))
  # Hard bound: the planned duration plus slack for the last calls to time out.
  local planned=$(( (per_count + per_rate - 1) / per_rate ))
  local hard=$(( planned + 12 ))
  load_snapshot >"$dir/procs.before"
  local c0; c0="$(load_cpu_ticks)"
  local f0; f0="$(load_faults)"
  local t0; t0="$(date +%s.%N)"
  SIPP_PIDS=()
  for i in $(seq 0 $(( INSTANCES - 1 ))); do
    (
      cd "$dir" || exit 1
      TIMEFORMAT='%U %S'
      { time sipp "127.0.0.1:$SIP_PORT" -sf "$HERE/register.xml" -inf "$WORK/users_$i.csv" \
          -set expires "$EXPIRES" -i 127.0.0.1 -p "${SIPP_PORTS[$i]}" -t u1 \
          -r "$per_rate" -rp 1000 -m "$per_count" -l "$limit" \
          -recv_timeout 5000 -timeout "${hard}s" -nostdin \
          -max_recv_loops 10000 -max_sched_loops 10000 \
          -trace_stat -stf "$dir/stat_$i.csv" -fd 1 \
          -trace_err -error_file "$dir/errors_$i.log" -max_log_size 4000000 \
          >"$dir/sipp_$i.out" 2>"$dir/sipp_$i.err" ; } 2>"$dir/sipp_$i.time"
    ) &
    SIPP_PIDS+=("$!")
  done
  for i in "${SIPP_PIDS[@]}"; do wait "$i" || true; done
  SIPP_PIDS=()
  local t1; t1="$(date +%s.%N)"
  local c1; c1="$(load_cpu_ticks)"
  local f1; f1="$(load_faults)"
  load_snapshot >"$dir/procs.after"
  LOAD_CPU_TICKS=$(( c1 - c0 ))
  LOAD_WALL="$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')"
  # Final cumulative counters from each instance's statistics file.
  LOAD_OK=0; LOAD_FAILED=0; LOAD_SIPP_CPU=""; LOAD_RTT_SUM=0; LOAD_CREATED=0
  for i in $(seq 0 $(( INSTANCES - 1 ))); do
    local f="$dir/stat_$i.csv"
    [ -s "$f" ] || die "SIPp wrote no statistics ($dir/sipp_$i.err: $(head -c 300 "$dir/sipp_$i.err"))"
    local line
    line="$(python3 - "$f" "$per_count" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter=';'))
h, last = rows[0], rows[-1]
col = lambda name: last[h.index(name)]
def secs(v):  # SIPp writes HH:MM:SS:uuuuuu (microseconds, millisecond resolution)
    p = [int(x) for x in v.split(':')]
    return p[0] * 3600 + p[1] * 60 + p[2] + p[3] / 1e6
epoch = lambda v: float(v.split('\t')[-1])  # "date<TAB>time<TAB>epoch"
# When the last call was created: SIPp writes a row every second.
created = next((epoch(r[h.index('CurrentTime')]) - epoch(r[h.index('StartTime')])
                for r in rows[1:] if int(r[h.index('TotalCallCreated')]) >= int(sys.argv[2])), 1e9)
print(col('SuccessfulCall(C)'), col('FailedCall(C)'), secs(col('ResponseTime1(C)')), created)
PY
)"
    local ok failed rtt created
    read -r ok failed rtt created <<<"$line"
    LOAD_CREATED="$(awk -v a="$LOAD_CREATED" -v b="$created" 'BEGIN {print (b > a ? b : a)}')"
    LOAD_OK=$(( LOAD_OK + ok )); LOAD_FAILED=$(( LOAD_FAILED + failed ))
    LOAD_RTT_SUM="$(awk -v a="$LOAD_RTT_SUM" -v b="$rtt" -v n="$ok" 'BEGIN {print a + b * n}')"
    LOAD_SIPP_CPU+="$(awk '{printf "%.1f", $1 + $2}' "$dir/sipp_$i.time")s "
  done
  LOAD_RTT_MS="$(awk -v s="$LOAD_RTT_SUM" -v n="$LOAD_OK" 'BEGIN {printf "%.2f", n ? s / n * 1000 : 0}')"
  LOAD_FAILED_PCT="$(awk -v f="$LOAD_FAILED" -v n="$count" 'BEGIN {printf "%.3f", f * 100 / n}')"
  LOAD_FAULTS="$(awk -v f=$(( f1 - f0 )) -v n="$LOAD_OK" 'BEGIN {printf "%.2f", n ? f / n : 0}')"
  LOAD_US="$(awk -v t="$LOAD_CPU_TICKS" -v k="$CLK_TCK" -v n="$LOAD_OK" 'BEGIN {printf "%.1f", n ? t * 1e6 / k / n : 0}')"
  # Held: SIPp placed every call on schedule (the last one created within a second and a half of
  # the planned duration; its statistics rows come once a second), every call ended, and fewer
  # than MAX_FAILED_PCT % failed.
  LOAD_HELD="$(awk -v ok="$LOAD_OK" -v n="$count" -v f="$LOAD_FAILED" -v c="$LOAD_CREATED" -v p="$planned" -v m="$MAX_FAILED_PCT" \
    'BEGIN {print (f * 100 < m * n && ok + f >= n && c <= p + 1.5) ? "yes" : "no"}')"
  # What failed calls got instead of the response they waited for (the rest timed out; responses
  # arriving after a call was given up show as "dead call" lines, not counted here).
  LOAD_UNEXPECTED="$(cat "$dir"/errors_*.log 2>/dev/null | grep -ao "while expecting '[0-9]*' (index [0-9]*), received 'SIP/2.0 [0-9]*" |
    sed "s/.*received 'SIP\/2.0 //" | sort | uniq -c | awk '{printf "%s×%s ", $2, $1}' || true)"
  printf '   %-10s rate %6s/s  ok %7s  failed %5s (%6s%%)  placed in %5.1fs  wall %6ss  server CPU %6.1f µs/reg  mean call %7s ms  SIPp CPU %s held=%s\n' \
    "$name" "$rate" "$LOAD_OK" "$LOAD_FAILED" "$LOAD_FAILED_PCT" "$LOAD_CREATED" "$LOAD_WALL" "$LOAD_US" "$LOAD_RTT_MS" "$LOAD_SIPP_CPU" "$LOAD_HELD"
  echo "              page faults per registration: $LOAD_FAULTS"
  [ -z "$LOAD_UNEXPECTED" ] || echo "              unexpected responses (status×count, capped log): $LOAD_UNEXPECTED"
}

# ramp: re-registrations at each rate of RATES for STEP_SECS seconds, stopping at the first rate
# not held, then the midpoint between the best held and that one, once; the whole ramp bounded
# by T_START + 250 s. Each step is `load_step NAME RATE COUNT`, which the sourcing script
# defines (run_load, plus whatever it records around it). Sets BEST_* for the highest rate held,
# FAIL_RATE, and STEP_US / STEP_FAILED per rate.
declare -A STEP_US STEP_FAILED
ramp() {
  BEST_RATE=0; BEST_US=""; BEST_FAILED=""; BEST_NAME=""; BEST_RTT=""; BEST_SIPP=""; BEST_WALL=""
  FAIL_RATE=""
  local r mid
  for r in $RATES; do
    ramp_step "$r" || break
    [ $(( $(date +%s) - T_START )) -lt 240 ] || { echo "   (time budget reached)"; break; }
  done
  if [ -n "$FAIL_RATE" ] && [ $(( $(date +%s) - T_START )) -lt 250 ]; then
    mid=$(( (BEST_RATE + FAIL_RATE) / 2 / 500 * 500 ))
    if [ "$mid" -gt "$BEST_RATE" ] && [ "$mid" -lt "$FAIL_RATE" ]; then
      sleep 5  # let the overloaded step's backlog and transactions drain first
      ramp_step "$mid" || true
    fi
  fi
}

ramp_step() {
  local r="$1"
  load_step "rate_$r" "$r" $(( r * STEP_SECS ))
  STEP_US[$r]="$LOAD_US"; STEP_FAILED[$r]="$LOAD_FAILED_PCT"
  if [ "$LOAD_HELD" = yes ]; then
    if [ "$r" -gt "$BEST_RATE" ]; then
      BEST_RATE="$r"; BEST_US="$LOAD_US"; BEST_FAILED="$LOAD_FAILED_PCT"; BEST_NAME="rate_$r"
      BEST_RTT="$LOAD_RTT_MS"; BEST_SIPP="$LOAD_SIPP_CPU"; BEST_WALL="$LOAD_WALL"
    fi
    return 0
  fi
  FAIL_RATE="$r"
  return 1
}

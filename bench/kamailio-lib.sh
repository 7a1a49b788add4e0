# shellcheck shell=bash
# Helpers shared by the Kamailio calibration drivers (bench/register/kamailio.sh,
# bench/calls/kamailio.sh); sourced after bench/lib.sh, not run. The caller sets WORK (the work
# directory), SHM_MB, and may set KAMAILIO (the binary), KAMAILIO_MODULES and MEM_MANAGER.

KAMAILIO="${KAMAILIO:-kamailio}"
# Kamailio's memory manager for shared and private memory (-x, -X): empty = its default, qm
# (q_malloc, with the debugging bookkeeping Debian's build enables); fm or tlsf are the fast ones.
MEM_MANAGER="${MEM_MANAGER:-}"
KAM_PID=""
KAM_PIDS=()

# Checks the tools and finds the module directory (sets KAMAILIO_MODULES and KVER).
kam_setup() {
  command -v "$KAMAILIO" >/dev/null || die "kamailio is not installed (apt-get install kamailio)"
  command -v kamcmd >/dev/null || die "kamcmd is not installed (Debian package kamailio)"
  command -v setsid >/dev/null || die "setsid is not installed (util-linux)"
  local d
  if [ -z "${KAMAILIO_MODULES:-}" ]; then
    for d in /usr/lib/x86_64-linux-gnu/kamailio/modules /usr/lib/aarch64-linux-gnu/kamailio/modules \
             /usr/lib64/kamailio/modules /usr/lib/kamailio/modules /usr/local/lib64/kamailio/modules; do
      if [ -f "$d/registrar.so" ]; then KAMAILIO_MODULES="$d"; break; fi
    done
  fi
  [ -f "${KAMAILIO_MODULES:-}/registrar.so" ] || die "no Kamailio module directory found (set KAMAILIO_MODULES)"
  # shellcheck disable=SC2034  # used by the drivers
  KVER="$("$KAMAILIO" -v | sed -n 's/^version: kamailio \([^ ]*\).*/\1/p' | head -1)"
}

# kamcmd against this instance's control socket (ctl module, binrpc on $WORK/kamailio_ctl).
kam() { kamcmd -s "unix:$WORK/kamailio_ctl" "$@"; }

# One line per process of Kamailio's process group (the main process is the group leader: it runs
# under setsid, and every process it forks stays in its group): "pid ticks minflt", ticks =
# utime + stime, and for the main process also cutime + cstime (children that exited and were
# reaped). Fields counted after the parenthesised command name, as in lib.sh's cpu_ticks.
group_stat() {
  awk -v g="$1" '{
      line = $0; sub(/^.*\) /, "", line); split(line, a, " ")
      if (a[3] != g) next
      n = split(FILENAME, p, "/"); pid = p[3]
      t = a[12] + a[13]; if (pid == g) t += a[14] + a[15]
      print pid, t, a[8]
    }' /proc/[0-9]*/stat 2>/dev/null
}
group_ticks() { group_stat "$1" | awk '{s += $2} END {print s + 0}'; }
group_faults() { group_stat "$1" | awk '{s += $3} END {print s + 0}'; }
# RSS summed over the processes (a shared page counts once per process that touched it).
group_rss_kb() {
  local p s=0 r
  for p in $(group_stat "$1" | awk '{print $1}'); do r="$(rss_kb "$p" 2>/dev/null || echo 0)"; s=$(( s + ${r:-0} )); done
  echo "$s"
}

# "PID description" for each Kamailio process, from its own RPC (core.psx).
kam_processes() {
  kam core.psx 2>/dev/null | awk '/PID:/ {pid = $2} /DSC:/ {sub(/^[ \t]*DSC: */, ""); print pid, $0}'
}

# A statistic by its bare name (kamcmd prints "group:name = value"; 0 if absent).
kam_stat() {
  kam stats.get_statistics "$1" 2>/dev/null | sed -n "s/^[a-z_]*:$1 = \([0-9]*\).*/\1/p" | head -1 | grep . || echo 0
}

# Shared memory in use, bytes (core.shmmem's real_used: requested sizes plus allocator overhead);
# kam_shm_used max_used: the peak.
kam_shm_used() { kam core.shmmem 2>/dev/null | awk -v f="${1:-real_used}" '$1 == f ":" {print $2}'; }

# Starts kamailio -f CONFIG in the foreground (-DD: the main process does not daemonize; -E: log to
# stderr, into $WORK/kamailio.log) in a session of its own, and waits for its control socket.
# Sets KAM_PID (the main process) and KAM_PIDS (every process of its group), writes
# $WORK/processes.txt ("PID description") and checks that the processes counted are exactly
# those Kamailio lists itself.
start_kamailio() {
  local cfg="$1"
  "$KAMAILIO" -c -f "$cfg" >"$WORK/check.log" 2>&1 || { cat "$WORK/check.log" >&2; die "kamailio -c rejected $cfg"; }
  : >"$WORK/kamailio.log"
  # setsid: its own session and process group (setsid execs, so $! is kamailio itself).
  local mem=()
  if [ -n "$MEM_MANAGER" ]; then mem=(-x "$MEM_MANAGER" -X "$MEM_MANAGER"); fi
  setsid "$KAMAILIO" -DD -E -f "$cfg" -m "$SHM_MB" "${mem[@]}" -Y "$WORK" -w "$WORK" >>"$WORK/kamailio.log" 2>&1 &
  KAM_PID=$!
  for _ in $(seq 1 100); do
    if kam core.uptime >/dev/null 2>&1; then break; fi
    kill -0 "$KAM_PID" 2>/dev/null || { cat "$WORK/kamailio.log" >&2; die "kamailio exited"; }
    sleep 0.1
  done
  kam core.uptime >/dev/null 2>&1 || die "kamailio did not answer on its control socket within 10 s"
  [ "$(cat "/proc/$KAM_PID/comm")" = kamailio ] || die "pid $KAM_PID is $(cat "/proc/$KAM_PID/comm"), not kamailio"
  [ "$(awk '{sub(/^.*\) /, ""); print $3}' "/proc/$KAM_PID/stat")" = "$KAM_PID" ] || die "kamailio is not its process group's leader"
  sleep 1
  kam_processes >"$WORK/processes.txt"
  mapfile -t KAM_PIDS < <(group_stat "$KAM_PID" | awk '{print $1}' | sort -n)
  local listed counted
  listed="$(awk '{print $1}' "$WORK/processes.txt" | sort -n | tr '\n' ' ')"
  counted="$(printf '%s\n' "${KAM_PIDS[@]}" | tr '\n' ' ')"
  [ "$listed" = "$counted" ] || die "the processes counted ($counted) are not Kamailio's own list ($listed)"
}

stop_kamailio() {
  if [ -n "$KAM_PID" ] && kill -0 "$KAM_PID" 2>/dev/null; then
    kill -TERM "$KAM_PID" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$KAM_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$KAM_PID" 2>/dev/null || true
    wait "$KAM_PID" 2>/dev/null || true
  fi
  # The main process ends its children on SIGTERM; any that outlived it are ended by pid.
  local p
  for p in "${KAM_PIDS[@]}"; do
    if [ "$(cat "/proc/$p/comm" 2>/dev/null)" = kamailio ]; then kill -KILL "$p" 2>/dev/null || true; fi
  done
  KAM_PID=""; KAM_PIDS=()
}

# The processes' list, indented, for the report's header.
kam_print_processes() {
  awk '{pid = $1; $1 = ""; printf "     %7s %s\n", pid, $0}' "$WORK/processes.txt"
}

# CPU of each Kamailio process between two group_stat snapshots: kam_process_report BEFORE AFTER
# WALL_SECONDS (run.sh's thread_report, by process).
kam_process_report() {
  join <(sort -k1,1 "$1") <(sort -k1,1 "$2") |
    join - <(sort -k1,1 "$WORK/processes.txt") |
    awk -v k="$CLK_TCK" -v w="$3" '{d = $4 - $2; pid = $1; $1 = $2 = $3 = $4 = $5 = ""; sub(/^ +/, "");
      if (d > 0) printf "     %7s %-40s %7.2f s CPU (%3.0f%% of one core)\n", pid, $0, d / k, d / k / w * 100}'
}

# Warns about error lines in Kamailio's log (a misconfiguration that logs per request also costs
# CPU, and the figure would not be Kamailio's).
kam_log_errors() {
  local n
  n="$(grep -cE ' (ERROR|CRITICAL|ALERT|BUG):' "$WORK/kamailio.log" || true)"
  if [ "$n" != 0 ]; then
    echo "   WARNING: kamailio logged $n error lines (logging costs CPU too), the most frequent:"
    sed -E 's/^ *[0-9]+\([0-9]+\) //' "$WORK/kamailio.log" | grep -E '^(ERROR|CRITICAL|ALERT|BUG):' |
      sort | uniq -c | sort -rn | head -5 | sed 's/^/     /'
  fi
}

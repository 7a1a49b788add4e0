# Helpers shared by the benchmark drivers (sourced, not run).

CLK_TCK="$(getconf CLK_TCK)"

die() { echo "bench: $*" >&2; exit 1; }

# A loopback port free right now: free_port SOCK_DGRAM | SOCK_STREAM.
free_port() {
  python3 -c 'import socket,sys; s=socket.socket(socket.AF_INET, getattr(socket, sys.argv[1])); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

# utime+stime of a process in clock ticks (fields 14 and 15 of /proc/PID/stat; the fields are
# counted after the parenthesised command name, which may contain spaces).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

# Minor page faults of a process so far (field 10 of /proc/PID/stat).
minor_faults() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $8}'; }

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# Per-thread CPU, "name count ticks" lines, to see which part of the server is busy.
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    printf '%s %s\n' "$(tr ' ' '_' <"$t/comm")" "$(sed 's/^.*) //' "$t/stat" | awk '{print $12 + $13}')"
  done 2>/dev/null | awk '{s[$1] += $2; n[$1]++} END {for (k in s) print k, n[k], s[k]}' | sort
}

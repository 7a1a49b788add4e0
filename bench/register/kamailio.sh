#!/usr/bin/env bash
# Calibration for the registration benchmark: Kamailio (Debian's 5.6.x) measured on this machine
# with the same method as bench/register/run.sh, so that figures from different machines can be
# compared through the ratio "our server / Kamailio here". Not a test: it measures and prints.
#
#   bench/register/kamailio.sh
#
# Same phones, scenario and accounting as run.sh, everything on 127.0.0.1 (~3-5 minutes):
#  1. provision.py writes the N phones (users bench100000.., random passwords) and the SIPp
#     injection files, one disjoint part per instance; the phones' MD5 HA1s
#     (H(user:REALM:password)) go into a db_text directory that Kamailio reads at start-up.
#  2. Starts kamailio in the foreground (-DD -E) in its own session (setsid), with the config
#     generated into the work directory: UDP 127.0.0.1:PORT, registrar + usrloc in memory only
#     (db_mode 0), MD5 digest with qop=auth and nonce-count replay checks (auth nonce_count),
#     realm REALM, CHILDREN UDP workers, -m SHM_MB MiB of shared memory.
#  3. Cold pass: every phone registers once (REGISTER, 401, REGISTER with MD5 digest, 200) at
#     COLD_RATE/s from INSTANCES SIPp processes with register.xml, exactly as run.sh does; checks
#     that usrloc holds N contacts.
#  4. Ramp: re-registrations at each rate of RATES for STEP_SECS seconds; stops at the first rate
#     not held (>= 0.1 % failed, or calls not placed on time), then tries the midpoint once.
#     (run.sh's step 5, a restart reloading the bindings from the store, has no equivalent: with
#     db_mode 0 the bindings are not stored.)
#
# CPU is utime + stime of every process of Kamailio's process group (the main process and all the
# processes it forks: UDP workers, timers, ctl), read from /proc/PID/stat, plus cutime + cstime
# of the main process (children that already exited), divided by successful registrations. The
# script lists the processes it counts and checks them against Kamailio's own list (core.psx).
#
# Knobs (environment), as run.sh: N=10000, INSTANCES=2, COLD_RATE=2500, RATES="2000 4000 ...",
# STEP_SECS=20, SETTLE_SECS=34, KEEP=1 keeps the work directory. Kamailio only:
#   PORT      UDP port on 127.0.0.1 (default: a free one; 5060 is refused, the tests use it)
#   CHILDREN  UDP worker processes (default 4: two per core on the 2-core machines. A worker
#             never waits on I/O here - no database, no DNS - so more would only add context
#             switches; two per core leave each core another worker to run while one is
#             preempted (SIPp shares the cores) or spins on a lock. Debian's sample
#             /etc/kamailio/kamailio.cfg has children=8, sized for a database backend)
#   SHM_MB    shared memory in MiB (default 256: usrloc with 10,000 contacts uses ~12 MiB; 2048
#             with STATEFUL=1: tm keeps each transaction 5 s after its final reply, ~15 KiB each,
#             two per registration, so 10,000/s needs ~1.5 GiB)
#   AUTH      htable (default): the HA1s loaded from db_text into an in-memory hash table at
#             start-up, checked with pv_auth_check - the equivalent of our cached credentials;
#             db: auth_db's auth_check on the db_text "subscriber" table (db_text scans the
#             table row by row on every lookup, so this measures db_text more than Kamailio)
#   STATEFUL  0 (default): REGISTERs are answered statelessly (sl), as Kamailio's sample config
#             does; 1: t_newtran() first, so every REGISTER has a server transaction as in our
#             server
#   MEM_MANAGER  Kamailio's allocator (-x/-X): empty = its default, qm; tlsf or fm are faster
#   KAMAILIO  the binary (default: kamailio on PATH); KAMAILIO_MODULES the module directory
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
# shellcheck source=../kamailio-lib.sh
. "$HERE/../kamailio-lib.sh"
N="${N:-10000}"
INSTANCES="${INSTANCES:-2}"
COLD_RATE="${COLD_RATE:-2500}"
RATES="${RATES:-2000 4000 6000 8000 10000 12000 14000 16000}"
STEP_SECS="${STEP_SECS:-20}"
SETTLE_SECS="${SETTLE_SECS:-34}"
CHILDREN="${CHILDREN:-4}"
AUTH="${AUTH:-htable}"
STATEFUL="${STATEFUL:-0}"
if [ "$STATEFUL" = 1 ]; then SHM_MB="${SHM_MB:-2048}"; else SHM_MB="${SHM_MB:-256}"; fi
EXPIRES=3600
REALM="bench.example"
MAX_FAILED_PCT="0.1"

command -v sipp >/dev/null || die "sipp is not installed (Debian package sip-tester)"
[ "$INSTANCES" = 1 ] || [ "$INSTANCES" = 2 ] || die "INSTANCES must be 1 or 2"
[ "$AUTH" = htable ] || [ "$AUTH" = db ] || die "AUTH must be htable or db"
[ "$STATEFUL" = 0 ] || [ "$STATEFUL" = 1 ] || die "STATEFUL must be 0 or 1"
kam_setup
WORK="$(mktemp -d /tmp/kamailio-bench.XXXXXX)"
SIPP_PIDS=()
TOTAL_OK=0

cleanup() {
  local rc=$?
  for p in "${SIPP_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  stop_kamailio
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then
    echo "bench: work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SIP_PORT="${PORT:-$(free_port SOCK_DGRAM)}"
[ "$SIP_PORT" != 5060 ] || die "PORT=5060 is left to the tests: pick another"
SIPP_PORTS=()
for i in $(seq 0 $(( INSTANCES - 1 ))); do SIPP_PORTS+=("$(free_port SOCK_DGRAM)"); done

# --- 1. phones and credentials --------------------------------------------------------------------
T_START="$(date +%s)"
echo "== Kamailio ($KVER), $N phones, $INSTANCES SIPp instance(s), auth $AUTH, stateful=$STATEFUL, $CHILDREN UDP workers, work dir $WORK"
python3 "$HERE/provision.py" "$N" "$REALM" "$WORK" "$INSTANCES"
rm -f "$WORK/users.sql"  # our server's rows; Kamailio reads the db_text tables below
DB="$WORK/db"
mkdir -p "$DB"
python3 - "$WORK/users.csv" "$REALM" "$DB" <<'PY'
import hashlib, re, sys
src, realm, db = sys.argv[1:4]
rows = []
for line in open(src).read().splitlines()[1:]:  # first line: SEQUENTIAL
    m = re.match(r"^([^;]+);\[authentication username=(\S+) password=(\S+)\]$", line)
    user, password = m.group(2), m.group(3)
    md5 = lambda v: hashlib.md5(v.encode()).hexdigest()
    rows.append((user, password, md5(f"{user}:{realm}:{password}"), md5(f"{user}@{realm}:{realm}:{password}")))
with open(f"{db}/version", "w") as f:
    f.write("id(int,auto) table_name(string) table_version(int) \n1:subscriber:7\n2:htable:2\n")
# auth_db (AUTH=db): HA1 in the ha1 column (calculate_ha1 = 0), no domain (use_domain = 0);
# db_text refuses empty (null) fields, so password and ha1b are filled in too.
with open(f"{db}/subscriber", "w") as f:
    f.write("id(int,auto) username(string) domain(string) password(string) ha1(string) ha1b(string) \n")
    for i, (user, password, ha1, ha1b) in enumerate(rows, 1):
        f.write(f"{i}:{user}:{realm}:{password}:{ha1}:{ha1b}\n")
# htable (AUTH=htable): key = username, string value = HA1, no expiry.
with open(f"{db}/htable", "w") as f:
    f.write("id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int) \n")
    for i, (user, _, ha1, _) in enumerate(rows, 1):
        f.write(f"{i}:{user}:0:0:{ha1}:0\n")
PY

# --- 2. Kamailio -----------------------------------------------------------------------------------
{
  echo "#!KAMAILIO"
  echo "# Generated by bench/register/kamailio.sh: registrar benchmark, bindings in memory only."
  if [ "$AUTH" = htable ]; then echo "#!define AUTH_HTABLE"; else echo "#!define AUTH_DB"; fi
  [ "$STATEFUL" = 1 ] && echo "#!define STATEFUL"
  cat <<EOF

debug=0
log_stderror=yes
fork=yes
children=$CHILDREN
listen=udp:127.0.0.1:$SIP_PORT
disable_tcp=yes
disable_sctp=yes
auto_aliases=no
dns=no
rev_dns=no
mpath="$KAMAILIO_MODULES/"

loadmodule "kex.so"
loadmodule "corex.so"
loadmodule "tm.so"
#!ifdef STATEFUL
loadmodule "tmx.so"
#!endif
loadmodule "sl.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "sanity.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "ctl.so"
loadmodule "db_text.so"
loadmodule "auth.so"
#!ifdef AUTH_DB
loadmodule "auth_db.so"
#!endif
#!ifdef AUTH_HTABLE
loadmodule "htable.so"
#!endif

modparam("ctl", "binrpc", "unix:$WORK/kamailio_ctl")
# Bindings in memory only; 2^12 hash slots for N=$N AORs (default 2^10).
modparam("usrloc", "db_mode", 0)
modparam("usrloc", "hash_size", 12)
# As our server's bench config: min_expires 60, max_expires and default $EXPIRES.
modparam("registrar", "min_expires", 60)
modparam("registrar", "max_expires", $EXPIRES)
modparam("registrar", "default_expires", $EXPIRES)
# Digest: MD5, qop=auth (auth_challenge flag 1), nonce-count replay checks like our server's
# per-nonce nc record.
modparam("auth", "nonce_expire", 300)
modparam("auth", "nonce_count", 1)
modparam("auth", "qop", "auth")
#!ifdef AUTH_DB
modparam("auth_db", "db_url", "text://$DB")
modparam("auth_db", "calculate_ha1", 0)
modparam("auth_db", "password_column", "ha1")
modparam("auth_db", "use_domain", 0)
#!endif
#!ifdef AUTH_HTABLE
modparam("htable", "db_url", "text://$DB")
modparam("htable", "htable", "ha1=>size=14;dbtable=htable;")
#!endif

request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (!sanity_check("17895", "7")) {
		exit;
	}
	if (!is_method("REGISTER")) {
		sl_send_reply("405", "Method Not Allowed");
		exit;
	}
#!ifdef STATEFUL
	if (!t_newtran()) {
		sl_reply_error();
		exit;
	}
#!endif
	if (!is_present_hf("Authorization")) {
		auth_challenge("$REALM", "1");
		exit;
	}
#!ifdef AUTH_HTABLE
	# Password argument is the HA1 (flags 1); checks 1: To user = digest username. (An unknown
	# username logs an error here: \$sht gives no string. The benchmark has none.)
	if (pv_auth_check("$REALM", "\$sht(ha1=>\$au)", "1", "1") != 1) {
		auth_challenge("$REALM", "1");
		exit;
	}
#!else
	if (!auth_check("$REALM", "subscriber", "1")) {
		auth_challenge("$REALM", "1");
		exit;
	}
#!endif
	consume_credentials();
	if (!save("location")) {
		sl_reply_error();
	}
	exit;
}
EOF
} >"$WORK/kamailio.cfg"

start_kamailio "$WORK/kamailio.cfg"
RSS0="$(group_rss_kb "$KAM_PID")"
SHM0="$(kam_shm_used)"
echo "== kamailio pid $KAM_PID, SIP udp:127.0.0.1:$SIP_PORT, ${#KAM_PIDS[@]} processes counted (= core.psx):"
kam_print_processes
echo "   shared memory in use with no binding: $SHM0 B (RSS summed over the processes, shared pages once per process: $RSS0 KiB)"

# --- one SIPp load (run.sh's, with the CPU of Kamailio's process group) --------------------------
load_cpu_ticks() { group_ticks "$KAM_PID"; }
load_faults() { group_faults "$KAM_PID"; }
load_snapshot() { group_stat "$KAM_PID"; }
# shellcheck source=load.sh
. "$HERE/load.sh"

# --- 3. cold pass: N distinct phones register once -------------------------------------------------
echo "== cold pass: $N distinct phones register once at $COLD_RATE/s"
run_load cold "$COLD_RATE" "$N"
TOTAL_OK=$(( TOTAL_OK + LOAD_OK ))
COLD_US="$LOAD_US"
kam_process_report "$WORK/cold/procs.before" "$WORK/cold/procs.after" "$LOAD_WALL"
sleep 1
CONTACTS="$(kam_stat location_contacts)"
SHM1="$(kam_shm_used)"
RSS1="$(group_rss_kb "$KAM_PID")"
echo "   contacts in usrloc: $CONTACTS (expected $N); shared memory in use $SHM1 B (RSS sum $RSS1 KiB)"
[ "$CONTACTS" = "$N" ] || echo "   WARNING: usrloc holds $CONTACTS contacts, not $N"
SHM_PER="$(awk -v a="$SHM0" -v b="$SHM1" -v n="$N" 'BEGIN {printf "%.0f", (b - a) / n}')"
echo "   waiting ${SETTLE_SECS}s, as run.sh does after its cold pass"
sleep "$SETTLE_SECS"
SHM1S="$(kam_shm_used)"
SETTLED_PER="$(awk -v a="$SHM0" -v b="$SHM1S" -v n="$N" 'BEGIN {printf "%.0f", (b - a) / n}')"

# --- 4. ramp: refreshes at rising rates -----------------------------------------------------------
echo "== ramp: re-registrations (refreshes), ${STEP_SECS} s per rate"
load_step() {
  run_load "$@"
  TOTAL_OK=$(( TOTAL_OK + LOAD_OK ))
}
ramp
if [ -n "$BEST_NAME" ]; then
  echo "   kamailio processes during the highest rate held ($BEST_RATE/s):"
  kam_process_report "$WORK/$BEST_NAME/procs.before" "$WORK/$BEST_NAME/procs.after" "$BEST_WALL"
fi
if [ -n "$FAIL_RATE" ]; then
  echo "   kamailio processes during the first rate not held ($FAIL_RATE/s):"
  kam_process_report "$WORK/rate_$FAIL_RATE/procs.before" "$WORK/rate_$FAIL_RATE/procs.after" "$STEP_SECS"
fi
CONTACTS_AFTER="$(kam_stat location_contacts)"
SHM_MAX="$(kam_shm_used max_used)"
# Kamailio's own counters, to check the exchange: two REGISTERs per registration, the first
# answered 401 and the second 200 (sl's N_replies count stateless replies, STATEFUL=0; tmx's
# N_transactions the transactions' final replies, STATEFUL=1).
COUNTERS=""
STATS="rcv_requests_register accepted_regs rejected_regs 401_replies 200_replies 4xx_replies"
[ "$STATEFUL" = 0 ] || STATS="rcv_requests_register accepted_regs rejected_regs 2xx_transactions 4xx_transactions 5xx_transactions"
for s in $STATS; do
  COUNTERS+="$s=$(kam_stat "$s") "
done
stop_kamailio

# --- results --------------------------------------------------------------------------------------
echo
echo "== results (Kamailio $KVER, auth $AUTH, stateful=$STATEFUL, children=$CHILDREN, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1))"
echo "   highest rate held ${STEP_SECS} s with < ${MAX_FAILED_PCT}% failed: ${BEST_RATE}/s (failed ${BEST_FAILED:-n/a}%, mean call ${BEST_RTT:-n/a} ms, SIPp CPU ${BEST_SIPP:-n/a})"
[ -n "$FAIL_RATE" ] && echo "   first rate not held: ${FAIL_RATE}/s (failed ${STEP_FAILED[$FAIL_RATE]}%)"
echo "   server CPU per registration at ${BEST_RATE}/s (refresh): ${BEST_US:-n/a} µs"
echo "   server CPU per registration, cold pass ($N first registrations at ${COLD_RATE}/s): ${COLD_US} µs"
echo "   shared memory per binding (core.shmmem real_used after $N first registrations - before): ${SHM_PER} B (${SETTLED_PER} B ${SETTLE_SECS} s later)"
[ "$STATEFUL" = 0 ] || echo "     (STATEFUL=1: includes the cold pass's transactions, kept 5 s after their final reply)"
echo "   shared memory peak (core.shmmem max_used): $SHM_MAX B of $SHM_MB MiB"
echo "   contacts in usrloc: $CONTACTS after the cold pass, $CONTACTS_AFTER after the ramp"
kam_log_errors
echo "   kamailio counters: $COUNTERS(SIPp: $TOTAL_OK successful registrations in all)"
echo "   per-rate server CPU: $(for r in $(echo "${!STEP_US[@]}" | tr ' ' '\n' | sort -n); do printf '%s/s=%sµs(%s%%) ' "$r" "${STEP_US[$r]}" "${STEP_FAILED[$r]}"; done)"
echo "   total run time: $(( $(date +%s) - T_START )) s"

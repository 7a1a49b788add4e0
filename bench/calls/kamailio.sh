#!/usr/bin/env bash
# Calibration for the call benchmark: Kamailio (Debian's 5.6.x) as a plain stateful proxy,
# measured on this machine with the same SIPp scenarios, rates and CPU accounting as
# bench/calls/run.sh, so that our figures can be compared across machines through the ratio
# "our server / Kamailio here". Not a test: it measures and prints.
#
#   bench/calls/kamailio.sh
#
# One call, as in run.sh: INVITE, 407, ACK, INVITE with digest credentials, (100), 180, 200, ACK,
# BYE after HOLD_MS, 200 on the caller's side (tests/sipp/call_uac.xml); the callee
# (tests/sipp/call_uas.xml) gets the INVITE, answers 180 and 200, gets the ACK and the BYE.
# Everything on 127.0.0.1. Steps:
#  1. Users: caller (password caller-secret) and callee (callee-secret), their MD5 HA1s in an
#     htable loaded from db_text at start-up; the extension 200 maps to the AOR "callee" (a second
#     htable: the counterpart of our directory's extension -> user -> phone lookup).
#  2. Starts kamailio (config generated into the work directory, see below); the callee phone
#     registers (tests/sipp/register.xml, REGISTER, 401, REGISTER, 200) and then answers every
#     call from the same port.
#  3. For each rate of RATES: STEP_SECS seconds of calls; reports successful and failed calls and
#     Kamailio's CPU time per successful call. Stops at the first rate not held (>= 0.1 % failed,
#     or calls not placed on time).
#
# The proxy: stateless 407 challenge (auth_challenge, MD5, qop=auth, nonce-count checks) and
# pv_auth_check of the INVITE with credentials; then extension -> AOR, lookup("location"),
# record_route() and t_relay() (tm: one INVITE transaction per call, one BYE transaction). The
# caller's ACK and BYE carry no Route header (SIPp's call_uac.xml does not use the Record-Route it
# gets, it sends them to this proxy with the callee's Contact as Request-URI), so in-dialog
# requests without Route are relayed to their Request-URI: the 2xx ACK statelessly, the BYE with
# a transaction. No dialog module, no media, no call record.
#
# CPU is utime + stime of every process of Kamailio's process group (see bench/kamailio-lib.sh),
# divided by successful calls.
#
# Knobs: RATES="250 500 1000 ...", STEP_SECS=20, HOLD_MS=100, KEEP=1 keeps the work directory (as
# run.sh); PORT (UDP port, default a free one, 5060 refused), CHILDREN=4 UDP workers (see
# bench/register/kamailio.sh for the choice), SHM_MB=1024 (tm keeps each transaction 5 s after its
# final reply: about two per call), MEM_MANAGER (Kamailio's allocator, empty = its default qm;
# tlsf or fm: qm_malloc alone takes a third of the CPU here), KAMAILIO, KAMAILIO_MODULES.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"
# shellcheck source=../kamailio-lib.sh
. "$HERE/../kamailio-lib.sh"
RATES="${RATES:-250 500 1000 1500 2000 2500 3000}"
STEP_SECS="${STEP_SECS:-20}"
HOLD_MS="${HOLD_MS:-100}"
CHILDREN="${CHILDREN:-4}"
SHM_MB="${SHM_MB:-1024}"
REALM="bench.example"
MAX_FAILED_PCT="0.1"
# SIPp's socket buffers (its -buff_size; its default is 64 KiB). With the default, SIPp's own
# sockets drop datagrams on loopback from about 3,500 calls/s on a two-core machine, and the
# benchmark then measures SIPp's losses and the retransmissions they cause (the kernel caps
# this at net.core.rmem_max / wmem_max).
SIPP_BUFFER="${SIPP_BUFFER:-4194304}"
SCENARIOS="$ROOT/tests/sipp"
command -v sipp >/dev/null || die "sipp is not installed (Debian package sip-tester)"
kam_setup

WORK="$(mktemp -d /tmp/kamailio-bench-calls.XXXXXX)"
UAS_PID=""
cleanup() {
  local rc=$?
  if [ -n "$UAS_PID" ]; then kill "$UAS_PID" 2>/dev/null || true; fi
  stop_kamailio
  if [ "${KEEP:-0}" = 1 ] || [ $rc -ne 0 ]; then echo "bench: work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SIP_PORT="${PORT:-$(free_port SOCK_DGRAM)}"
[ "$SIP_PORT" != 5060 ] || die "PORT=5060 is left to the tests: pick another"
UAS_PORT="$(free_port SOCK_DGRAM)"
UAC_PORT="$(free_port SOCK_DGRAM)"

echo "== calls: SIPp caller -> Kamailio $KVER (stateful proxy, $CHILDREN UDP workers) -> SIPp callee, work dir $WORK"
DB="$WORK/db"
mkdir -p "$DB"
python3 - "$REALM" "$DB" <<'PY'
import hashlib, sys
realm, db = sys.argv[1:3]
head = "id(int,auto) key_name(string) key_type(int) value_type(int) key_value(string) expires(int) \n"
with open(f"{db}/version", "w") as f:
    f.write("id(int,auto) table_name(string) table_version(int) \n1:ha1:2\n2:ext:2\n")
with open(f"{db}/ha1", "w") as f:  # username -> MD5 HA1
    f.write(head)
    for i, (user, password) in enumerate([("caller", "caller-secret"), ("callee", "callee-secret")], 1):
        f.write(f"{i}:{user}:0:0:{hashlib.md5(f'{user}:{realm}:{password}'.encode()).hexdigest()}:0\n")
with open(f"{db}/ext", "w") as f:  # extension -> AOR
    f.write(head + "1:200:0:0:callee:0\n")
PY

cat >"$WORK/kamailio.cfg" <<EOF
#!KAMAILIO
# Generated by bench/calls/kamailio.sh: stateful proxy benchmark.

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
loadmodule "tmx.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "sanity.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "usrloc.so"
loadmodule "registrar.so"
loadmodule "ctl.so"
loadmodule "db_text.so"
loadmodule "htable.so"
loadmodule "auth.so"

modparam("ctl", "binrpc", "unix:$WORK/kamailio_ctl")
modparam("usrloc", "db_mode", 0)
modparam("registrar", "min_expires", 60)
modparam("registrar", "max_expires", 3600)
modparam("registrar", "default_expires", 3600)
modparam("auth", "nonce_expire", 300)
modparam("auth", "nonce_count", 1)
modparam("auth", "qop", "auth")
modparam("htable", "db_url", "text://$DB")
modparam("htable", "htable", "ha1=>size=4;dbtable=ha1;")
modparam("htable", "htable", "ext=>size=4;dbtable=ext;")
# No answer within 30 s ends the call attempt (our server's calls.no_answer_secs = 30).
modparam("tm", "fr_inv_timer", 30000)

request_route {
	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}
	if (!sanity_check("17895", "7")) {
		exit;
	}
	# Retransmissions of requests that have a transaction (as Kamailio's sample config).
	if (!is_method("ACK")) {
		if (t_precheck_trans()) {
			t_check_trans();
			exit;
		}
		t_check_trans();
	}
	if (has_totag()) {
		route(WITHINDLG);
		exit;
	}
	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}
	if (is_method("ACK")) {
		exit;
	}
	if (!is_method("REGISTER|INVITE")) {
		sl_send_reply("405", "Method Not Allowed");
		exit;
	}
	# Digest auth for both: 401 to a REGISTER, 407 to an INVITE, sent statelessly.
	if (!is_present_hf("Authorization") && !is_present_hf("Proxy-Authorization")) {
		auth_challenge("$REALM", "1");
		exit;
	}
	if (pv_auth_check("$REALM", "\$sht(ha1=>\$au)", "1", "1") != 1) {
		auth_challenge("$REALM", "1");
		exit;
	}
	consume_credentials();
	if (is_method("REGISTER")) {
		if (!save("location")) {
			sl_reply_error();
		}
		exit;
	}
	remove_hf("Route");
	if (\$sht(ext=>\$rU) == \$null) {
		sl_send_reply("404", "Not Found");
		exit;
	}
	\$rU = \$sht(ext=>\$rU);
	if (!lookup("location")) {
		sl_send_reply("480", "Temporarily Unavailable");
		exit;
	}
	record_route();
	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}

route[WITHINDLG] {
	if (loose_route()) {
		t_relay();
		exit;
	}
	# No Route header: SIPp's caller sends its ACK and BYE here with the callee's Contact as
	# Request-URI. (The ACK to our own stateless 407 never gets here: sl absorbs it.)
	if (is_method("ACK")) {
		if (t_check_trans()) {
			t_relay();
			exit;
		}
		if (uri == myself) {
			exit;
		}
		t_relay();
		exit;
	}
	if (uri == myself) {
		sl_send_reply("404", "Not Here");
		exit;
	}
	t_relay();
	exit;
}
EOF

start_kamailio "$WORK/kamailio.cfg"
echo "== kamailio pid $KAM_PID, SIP udp:127.0.0.1:$SIP_PORT, ${#KAM_PIDS[@]} processes counted (= core.psx):"
kam_print_processes

(cd "$WORK" && sipp "127.0.0.1:$SIP_PORT" -sf "$SCENARIOS/register.xml" -m 1 -i 127.0.0.1 -p "$UAS_PORT" \
  -s callee -au callee -ap callee-secret -set expires 3600 -timeout 10s -timeout_error -nostdin \
  >"$WORK/register.out" 2>&1) || die "the callee could not register ($WORK/register.out)"
[ "$(kam_stat location_contacts)" = 1 ] || die "the callee's contact is not in usrloc"
(cd "$WORK" && exec sipp -sf "$SCENARIOS/call_uas.xml" -i 127.0.0.1 -p "$UAS_PORT" -nostdin -buff_size "$SIPP_BUFFER" \
  -max_recv_loops 10000 -trace_err -error_file "$WORK/uas_errors.log" >"$WORK/uas.out" 2>&1) &
UAS_PID=$!
sleep 0.5

printf '   %-6s %8s %8s %8s %10s %14s %10s\n' rate ok failed "failed%" "placed_s" "server_us/call" held
BEST=0; BEST_US=""; TOTAL_OK=0; LAST=""
for r in $RATES; do
  count=$(( r * STEP_SECS ))
  group_stat "$KAM_PID" >"$WORK/procs_$r.before"
  c0="$(group_ticks "$KAM_PID")"
  (cd "$WORK" && sipp "127.0.0.1:$SIP_PORT" -sf "$SCENARIOS/call_uac.xml" -i 127.0.0.1 -p "$UAC_PORT" -buff_size "$SIPP_BUFFER" \
     -s 200 -au caller -ap caller-secret -d "$HOLD_MS" -r "$r" -m "$count" -l $(( r * 3 + 100 )) \
     -recv_timeout 8000 -timeout "$(( STEP_SECS + 15 ))s" -nostdin -max_recv_loops 10000 -max_sched_loops 10000 \
     -trace_stat -stf "$WORK/stat_$r.csv" -fd 1 -trace_err -error_file "$WORK/uac_errors_$r.log" \
     >"$WORK/uac_$r.out" 2>&1) || true
  c1="$(group_ticks "$KAM_PID")"
  group_stat "$KAM_PID" >"$WORK/procs_$r.after"
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
  TOTAL_OK=$(( TOTAL_OK + ok )); LAST="$r"
  us="$(awk -v t="$(( c1 - c0 ))" -v k="$CLK_TCK" -v n="$ok" 'BEGIN {printf "%.1f", n ? t * 1e6 / k / n : 0}')"
  pct="$(awk -v f="$failed" -v n="$count" 'BEGIN {printf "%.3f", f * 100 / n}')"
  held="$(awk -v ok="$ok" -v f="$failed" -v n="$count" -v p="$placed" -v s="$STEP_SECS" -v m="$MAX_FAILED_PCT" \
    'BEGIN {print (f * 100 < m * n && ok + f >= n && p <= s + 1.5) ? "yes" : "no"}')"
  printf '   %-6s %8s %8s %8s %10s %14s %10s\n' "$r" "$ok" "$failed" "$pct" "$placed" "$us" "$held"
  if [ "$held" = yes ]; then BEST="$r"; BEST_US="$us"; else break; fi
  sleep 3
done
if [ -n "$LAST" ]; then
  echo "   kamailio processes during the last rate ($LAST/s):"
  kam_process_report "$WORK/procs_$LAST.before" "$WORK/procs_$LAST.after" "$STEP_SECS"
fi
COUNTERS=""
for s in rcv_requests_invite 407_replies rcv_requests_ack rcv_requests_bye fwd_requests rcv_replies_2xx_invite \
         rcv_replies_2xx_bye 2xx_transactions 4xx_transactions; do
  COUNTERS+="$s=$(kam_stat "$s") "
done
SHM_MAX="$(kam_shm_used max_used)"
echo "== results (Kamailio $KVER, children=$CHILDREN, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, $(lscpu | sed -n 's/^Model name: *//p' | head -1))"
echo "   highest rate held ${STEP_SECS} s with < ${MAX_FAILED_PCT}% failed: ${BEST}/s, server CPU ${BEST_US:-n/a} µs per call"
echo "   kamailio counters: $COUNTERS(SIPp: $TOTAL_OK successful calls in all)"
echo "   shared memory peak (core.shmmem max_used): $SHM_MAX B of $SHM_MB MiB"
kam_log_errors

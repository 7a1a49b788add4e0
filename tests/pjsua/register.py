"""Registers one account with PJSIP (pjsua2) and holds the registration until told to stop.

Usage: python register.py USER PASSWORD HOST:PORT udp|tcp

Prints PJSIP's log (level 5: every SIP message sent and received) on stdout, then a line
"REGISTERED <code>" or "FAILED <code> <reason>" once the first registration settles. It keeps
the registration until a line arrives on stdin (or stdin closes), unregisters, and exits.
This is the test suite's RFC 8760 peer: PJSIP computes SHA-256 digests when the challenge asks.
"""
import sys

import pjsua2 as pj

from pjcommon import endpoint

user, password, hostport, transport = sys.argv[1:5]

# Named with its version, so the binding shows who registered.
ep = endpoint(user_agent="pjsua2/{version}")
kind = pj.PJSIP_TRANSPORT_TCP if transport == "tcp" else pj.PJSIP_TRANSPORT_UDP
tcfg = pj.TransportConfig()
tcfg.boundAddress = "127.0.0.1"
ep.transportCreate(kind, tcfg)
ep.audDevManager().setNullDev()
ep.libStart()

acfg = pj.AccountConfig()
acfg.idUri = "sip:%s@%s" % (user, hostport.rsplit(":", 1)[0])
acfg.regConfig.registrarUri = "sip:%s;transport=%s" % (hostport, transport)
acfg.regConfig.timeoutSec = 600
acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
acc = pj.Account()
acc.create(acfg)

settled = None
for _ in range(100):
    ep.libHandleEvents(50)
    info = acc.getInfo()
    if info.regIsActive:
        settled = "REGISTERED %d" % info.regStatus
        break
    if info.regLastErr != 0 or (info.regStatus >= 300 and info.regStatus != 401):
        settled = "FAILED %d %s" % (info.regStatus, info.regStatusText)
        break
print(settled or "FAILED 0 no answer", flush=True)

sys.stdin.readline()
acc.setRegistration(False)
for _ in range(20):
    ep.libHandleEvents(50)
    if not acc.getInfo().regIsActive:
        break
print("UNREGISTERED", flush=True)
acc.shutdown()
ep.libDestroy()

"""An ITSP reached over TLS, played by PJSIP (pjsua2): it listens for TLS on IP:PORT with CERT
and KEY, answers every incoming call with 200, and hangs up when the caller does.

Usage: python itsp_tls.py IP PORT CERT KEY [CLIENT_CA]

With CLIENT_CA, it requires a client certificate that chains to CLIENT_CA (mutual TLS) and drops
connections without one.

Prints PJSIP's log (level 5: every SIP message, with the transport it came over) on stdout,
"LISTENING" once the TLS listener is up, "ANSWERED" when it answered a call and "ENDED" when the
call ended. Exits after the first call ends, or after 30 s.
"""
import sys
import time

import pjsua2 as pj

from pjcommon import endpoint

ip, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
client_ca = sys.argv[5] if len(sys.argv) > 5 else None


class Call(pj.Call):
    def __init__(self, acc, call_id):
        pj.Call.__init__(self, acc, call_id)
        self.ended = False

    def onCallState(self, prm):
        if self.getInfo().state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.ended = True


class Account(pj.Account):
    def __init__(self):
        pj.Account.__init__(self)
        self.calls = []

    def onIncomingCall(self, prm):
        call = Call(self, prm.callId)
        answer = pj.CallOpParam()
        answer.statusCode = 200
        call.answer(answer)
        print("ANSWERED", flush=True)
        self.calls.append(call)


ep = endpoint(user_agent="pjsua2-itsp")
tcfg = pj.TransportConfig()
tcfg.boundAddress = ip
tcfg.port = port
tcfg.tlsConfig.certFile = cert
tcfg.tlsConfig.privKeyFile = key
if client_ca:
    tcfg.tlsConfig.CaListFile = client_ca
    tcfg.tlsConfig.verifyClient = True
    tcfg.tlsConfig.requireClientCert = True
ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
ep.audDevManager().setNullDev()
ep.libStart()

acfg = pj.AccountConfig()
acfg.idUri = "sip:itsp@%s:%d;transport=tls" % (ip, port)
acc = Account()
acc.create(acfg, True)
print("LISTENING", flush=True)

deadline = time.time() + 30
while time.time() < deadline:
    ep.libHandleEvents(20)
    if acc.calls and all(c.ended for c in acc.calls):
        print("ENDED", flush=True)
        break
    sys.stdout.flush()

acc.calls = []
ep.libDestroy()

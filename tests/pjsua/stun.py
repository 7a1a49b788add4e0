"""PJSIP (pjsua2) takes HOST:PORT, a SIP UDP address, as its STUN server: at start it sends a
Binding request (RFC 5389) to learn its public address, and its SIP UDP transport sends a classic
(RFC 3489) one from its own socket. Both are answered on a SIP port that answers STUN keep-alives.

Usage: python stun.py HOST:PORT

Prints PJSIP's log (level 4) on stdout and exits about a second after the transport started.
"""
import sys

import pjsua2 as pj

from pjcommon import endpoint

ep = endpoint(level=4, stun_server=sys.argv[1])
tcfg = pj.TransportConfig()
tcfg.boundAddress = "127.0.0.1"
ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
ep.libStart()
for _ in range(20):
    ep.libHandleEvents(50)
sys.stdout.flush()
ep.libDestroy()

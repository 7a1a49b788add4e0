#!/usr/bin/env python3
"""Mutation fuzzing of a running Switchboard over UDP, past the parser.

tests/sip_torture.rs shows that no datagram makes the parser panic. This goes further: it plays
two registered phones (digest auth in Python) through whole calls, and at each step sends a
well-formed message with one or two header-level mutations (a header dropped, duplicated or
given a hostile value; CSeq numbers and methods, tags, Via branches, status codes and session
descriptions changed; requests of every method sent inside the dialog), so that what it sends
parses and reaches the transaction layer, the dialogs and the B2BUA. After every call it checks
that the server still answers OPTIONS; at the end the caller scans the server log for panics.

    scripts/sip-netfuzz.py HOST:PORT CALLER:SECRET CALLEE:SECRET EXTENSION [SECONDS] [SEED] [TCP_PORT]

With TCP_PORT, half the calls are followed by a TCP connection carrying mutated messages cut at
random places, pipelined, with lying Content-Lengths and junk between them.

Exit status 1 when the server stopped answering. Not a test of outcomes: the server may answer
a mutated message with any error; it must only keep working.
"""
import hashlib
import random
import re
import socket
import sys
import time
from collections import Counter

STATS = Counter()

HOST, PORT = sys.argv[1].rsplit(":", 1)
PORT = int(PORT)
CALLER, CALLER_PW = sys.argv[2].split(":", 1)
CALLEE, CALLEE_PW = sys.argv[3].split(":", 1)
EXTENSION = sys.argv[4]
SECONDS = float(sys.argv[5]) if len(sys.argv) > 5 else 30
rng = random.Random(int(sys.argv[6]) if len(sys.argv) > 6 else 1)
# The server's TCP port, when it listens on TCP too (same address).
TCP_PORT = int(sys.argv[7]) if len(sys.argv) > 7 else None

HOSTILE = [
    "", " ", ";", ",", "<>", "<sip:>", "\"", "sip:", "tel:", "*", "0", "-1", "4294967296",
    "99999999999999999999", "a" * 300, "<sip:a@b>;tag=", ";tag", "z9hG4bK", "SIP/2.0/UDP",
    "SIP/2.0/UDP [::1]:0", "SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx;received=x",
    "<sip:x@[::1]:65535;transport=tls>", "1 INVITE", "1 BYE", "2 ACK", "0 CANCEL",
    "application/sdp", "multipart/mixed;boundary=x", "100rel", "replaces, timer",
    "a;from-tag=b;to-tag=c", "x;from-tag=;to-tag=", "90;refresher=uac", "0;refresher=uas",
    "<sip:200@127.0.0.1>", "<sip:200@127.0.0.1?Replaces=a%3Bfrom-tag%3Db>",
    "1 1 INVITE", "0 0 INVITE", "sip:%00@h", "\"\\\"\" <sip:a@b>",
]
EXTRA_HEADERS = ["Require", "Supported", "Replaces", "Session-Expires", "Min-SE", "RSeq", "RAck",
                 "Refer-To", "Referred-By", "Event", "Reason", "Record-Route", "Route",
                 "Content-Type", "Allow", "Expires", "Max-Forwards", "P-Asserted-Identity"]
METHODS = ["INVITE", "ACK", "BYE", "CANCEL", "UPDATE", "INFO", "NOTIFY", "REFER", "PRACK",
           "OPTIONS", "MESSAGE", "SUBSCRIBE", "PUBLISH", "REGISTER", "FOO"]
STATUSES = [100, 180, 181, 183, 199, 200, 202, 299, 301, 302, 380, 400, 401, 407, 408, 481, 486,
            487, 488, 491, 500, 503, 600, 603, 699]


def sdp(port):
    body = ("v=0\r\no=fuzz 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n"
            "a=rtpmap:101 telephone-event/8000\r\n")
    r = rng.random()
    if r < 0.1:
        body = body.replace("m=audio", "m=video")
    elif r < 0.2:
        body = body.replace(f"m=audio {port}", "m=audio 0")
    elif r < 0.3:
        body = body.replace("c=IN IP4 127.0.0.1", "c=IN IP6 ::1")
    elif r < 0.4:
        body = body[: rng.randrange(len(body))]
    elif r < 0.5:
        body = body.replace("RTP/AVP 0 8 101", "RTP/SAVP 96")
    elif r < 0.55:
        body += "m=audio 1 RTP/AVP 0\r\n" * rng.randrange(1, 40)
    return body


class Message:
    def __init__(self, start, headers, body=""):
        self.start, self.headers, self.body = start, list(headers), body

    def render(self):
        hs = [(n, v) for n, v in self.headers if n.lower() != "content-length"]
        hs.append(("Content-Length", str(len(self.body.encode()))))
        head = "".join(f"{n}: {v}\r\n" for n, v in hs)
        return f"{self.start}\r\n{head}\r\n{self.body}".encode()

    def mutate(self, times=1):
        for _ in range(times):
            r = rng.random()
            if r < 0.2 and self.headers:
                del self.headers[rng.randrange(len(self.headers))]
            elif r < 0.35 and self.headers:
                self.headers.insert(rng.randrange(len(self.headers) + 1), rng.choice(self.headers))
            elif r < 0.6 and self.headers:
                i = rng.randrange(len(self.headers))
                self.headers[i] = (self.headers[i][0], rng.choice(HOSTILE))
            elif r < 0.75:
                self.headers.append((rng.choice(EXTRA_HEADERS), rng.choice(HOSTILE)))
            elif r < 0.85 and self.headers:
                # Keep the header but edit one character-class of its value.
                i = rng.randrange(len(self.headers))
                n, v = self.headers[i]
                v = re.sub(r"\d+", lambda m: str(rng.choice([0, 1, 2, 65535, 2**31, 2**32 + 1])), v, count=1)
                self.headers[i] = (n, v)
            elif r < 0.92:
                self.body = sdp(rng.randrange(1, 65536))
            else:
                self.body = rng.choice(["", "x" * rng.randrange(1, 2000), "--x\r\n\r\n--x--"])
        return self


class Phone:
    def __init__(self, user, password):
        self.user, self.password = user, password
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.3)

    def send(self, data):
        self.sock.sendto(data if isinstance(data, bytes) else data.render(), (HOST, PORT))

    def recv_all(self, wait=0.3, quiet=0.04):
        """What arrives within `wait` seconds, stopping early `quiet` seconds after the last."""
        out, deadline = [], time.time() + wait
        while time.time() < deadline:
            try:
                left = deadline - time.time()
                self.sock.settimeout(max(0.005, min(left, quiet) if out else left))
                data, _ = self.sock.recvfrom(65536)
                out.append(data.decode("utf-8", "replace"))
            except socket.timeout:
                break
        return out

    def contact(self):
        return f"<sip:{self.user}@127.0.0.1:{self.port}>"

    def via(self):
        return f"SIP/2.0/UDP 127.0.0.1:{self.port};branch=z9hG4bK{rng.getrandbits(48):x};rport"


def header(msg, name):
    m = re.search(rf"^{name}:\s*(.*)$", msg, re.M | re.I)
    return m.group(1).strip() if m else None


def headers(msg, name):
    return [m.strip() for m in re.findall(rf"^{name}:\s*(.*)$", msg, re.M | re.I)]


def status(msg):
    m = re.match(r"SIP/2.0 (\d{3})", msg)
    return int(m.group(1)) if m else None


def authorization(challenge, user, password, method, uri, name):
    params = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge))
    algo = params.get("algorithm", "MD5")
    h = hashlib.sha256 if algo.upper().startswith("SHA-256") else hashlib.md5
    H = lambda s: h(s.encode()).hexdigest()
    ha1 = H(f"{user}:{params['realm']}:{password}")
    ha2 = H(f"{method}:{uri}")
    if "qop" in params:
        cnonce, nc = f"{rng.getrandbits(32):x}", "00000001"
        resp = H(f"{ha1}:{params['nonce']}:{nc}:{cnonce}:auth:{ha2}")
        extra = f', qop=auth, nc={nc}, cnonce="{cnonce}"'
    else:
        resp, extra = H(f"{ha1}:{params['nonce']}:{ha2}"), ""
    return (name, f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
                  f'uri="{uri}", response="{resp}", algorithm={algo}{extra}')


def register(phone, mutate=False):
    """Registers `phone`; with `mutate`, the authenticated REGISTER is mutated (its Contact may
    then be a binding the B2BUA later tries to call)."""
    call_id, uri = f"reg-{rng.getrandbits(64):x}", f"sip:{HOST}:{PORT}"
    base = lambda cseq: [("Via", phone.via()), ("From", f"<sip:{phone.user}@{HOST}>;tag=r{phone.port}"),
                         ("To", f"<sip:{phone.user}@{HOST}>"), ("Call-ID", call_id),
                         ("CSeq", f"{cseq} REGISTER"), ("Contact", phone.contact()),
                         ("Expires", "60" if mutate else "3600"), ("Max-Forwards", "70")]
    phone.send(Message(f"REGISTER {uri} SIP/2.0", base(1)))
    for r in phone.recv_all(1):
        # This REGISTER's own challenge: a late answer to an earlier request may be waiting too.
        if status(r) == 401 and header(r, "Call-ID") == call_id and header(r, "WWW-Authenticate"):
            auth = authorization(header(r, "WWW-Authenticate"), phone.user, phone.password, "REGISTER", uri,
                                 "Authorization")
            msg = Message(f"REGISTER {uri} SIP/2.0", base(2))
            if mutate:
                msg.mutate(rng.randrange(1, 3))
            msg.headers.append(auth)
            phone.send(msg)
            return any(status(x) == 200 for x in phone.recv_all(1))
    return False


def alive(phone):
    msg = Message(f"OPTIONS sip:{HOST}:{PORT} SIP/2.0",
                  [("Via", phone.via()), ("From", f"<sip:probe@{HOST}>;tag=p"), ("To", f"<sip:{HOST}>"),
                   ("Call-ID", f"probe-{rng.getrandbits(64):x}"), ("CSeq", "1 OPTIONS"), ("Max-Forwards", "70")])
    for _ in range(3):
        phone.send(msg)
        if any(status(r) for r in phone.recv_all(1.0)):
            return True
    return False


def reply_to(req, code, extra=(), body=""):
    """A response to request text `req`, copying Via/From/To/Call-ID/CSeq."""
    hs = [("Via", v) for v in headers(req, "Via")]
    to = header(req, "To") or ""
    if code > 100 and ";tag=" not in to:
        to += f";tag=callee{abs(hash(header(req, 'Call-ID'))) % 100000}"
    hs += [("From", header(req, "From") or ""), ("To", to), ("Call-ID", header(req, "Call-ID") or ""),
           ("CSeq", header(req, "CSeq") or "")]
    hs += list(extra)
    return Message(f"SIP/2.0 {code} {'OK' if code == 200 else 'Fuzz'}", hs, body)


def maybe(msg, p=0.5):
    return msg.mutate(rng.randrange(1, 3)) if rng.random() < p else msg


def one_call(caller, callee):
    call_id, tag = f"fuzz-{rng.getrandbits(64):x}", f"c{rng.getrandbits(32):x}"
    uri = f"sip:{EXTENSION}@{HOST}:{PORT}"
    cseq = 1

    def req(method, n, ruri=uri, to=f"<{uri}>", body="", extra=()):
        hs = [("Via", caller.via()), ("From", f"\"Fuzz\" <sip:{caller.user}@{HOST}>;tag={tag}"), ("To", to),
              ("Call-ID", call_id), ("CSeq", f"{n} {method}"), ("Contact", caller.contact()),
              ("Max-Forwards", "70")] + list(extra)
        if body:
            hs.append(("Content-Type", "application/sdp"))
        return Message(f"{method} {ruri} SIP/2.0", hs, body)

    caller.send(req("INVITE", cseq, body=sdp(40000)))
    # This INVITE's own challenge: a late answer from the previous call may be waiting too.
    challenge = next((r for r in caller.recv_all(0.5) if status(r) == 407 and header(r, "Call-ID") == call_id
                      and header(r, "Proxy-Authenticate")), None)
    if challenge is None:
        STATS["no challenge"] += 1
        return
    caller.send(req("ACK", cseq))
    cseq += 1
    auth = authorization(header(challenge, "Proxy-Authenticate"), caller.user, caller.password, "INVITE", uri,
                         "Proxy-Authorization")
    caller.send(maybe(req("INVITE", cseq, body=sdp(40000), extra=[auth]), 0.3))
    # The callee's side: answer the B2BUA's INVITE, with mutations.
    invite = next((r for r in callee.recv_all(0.5) if r.startswith("INVITE ")), None)
    to_tag = None
    STATS["callee rang" if invite else "callee not rung"] += 1
    if invite:
        contact = [("Contact", callee.contact())]
        for code in sorted(rng.sample(STATUSES, rng.randrange(1, 4))):
            callee.send(maybe(reply_to(invite, code, contact, sdp(41000) if code in (183, 200) else ""), 0.4))
        callee.send(maybe(reply_to(invite, 200, contact, sdp(41000)), 0.3))
        if rng.random() < 0.3:
            # Requests from the callee inside (or beside) its dialog.
            m = rng.choice(METHODS)
            to = header(invite, "From") or ""
            fr = (header(invite, "To") or "") + ";tag=callee-x"
            hs = [("Via", callee.via()), ("From", fr), ("To", to), ("Call-ID", header(invite, "Call-ID") or ""),
                  ("CSeq", f"{rng.randrange(1, 100)} {m}"), ("Contact", callee.contact()), ("Max-Forwards", "70")]
            callee.send(maybe(Message(f"{m} sip:pbx@{HOST}:{PORT} SIP/2.0", hs, ""), 0.6))
    responses = caller.recv_all(0.4)
    for r in responses:
        if status(r) and status(r) >= 200 and "INVITE" in (header(r, "CSeq") or ""):
            to_tag = header(r, "To")
            STATS[f"caller got {status(r)}"] += 1
    to = to_tag or f"<{uri}>"
    caller.send(maybe(req("ACK", cseq, to=to), 0.3))
    # Requests inside the caller's dialog, of any method, some mutated.
    for _ in range(rng.randrange(0, 4)):
        cseq += 1
        m = rng.choice(METHODS)
        caller.send(maybe(req(m, cseq if rng.random() < 0.8 else rng.randrange(0, 2**32), to=to,
                              body=sdp(40000) if m in ("INVITE", "UPDATE") else ""), 0.5))
        for r in callee.recv_all(0.15):
            if not status(r) and not r.startswith("ACK "):
                callee.send(maybe(reply_to(r, rng.choice(STATUSES[5:])), 0.3))
        caller.recv_all(0.1)
    if rng.random() < 0.2:
        caller.send(maybe(req("CANCEL", 2), 0.5))
    cseq += 1
    caller.send(maybe(req("BYE", cseq, to=to), 0.2))
    for r in callee.recv_all(0.3):
        if r.startswith("BYE "):
            callee.send(maybe(reply_to(r, 200), 0.2))
    caller.recv_all(0.1)


def tcp_round(tcp_port):
    """One TCP connection carrying mutated messages cut at random places, pipelined, with
    Content-Length too small or too large, junk between them, and an abrupt end."""
    try:
        conn = socket.create_connection((HOST, tcp_port), timeout=1)
    except OSError:
        STATS["tcp connect failed"] += 1
        return
    conn.settimeout(0.2)
    me = conn.getsockname()[1]
    stream = b""
    for _ in range(rng.randrange(1, 5)):
        m = rng.choice(["OPTIONS", "INVITE", "REGISTER", "BYE", "MESSAGE"])
        msg = Message(f"{m} sip:{EXTENSION}@{HOST}:{tcp_port};transport=tcp SIP/2.0",
                      [("Via", f"SIP/2.0/TCP 127.0.0.1:{me};branch=z9hG4bK{rng.getrandbits(48):x}"),
                       ("From", f"<sip:fuzz@{HOST}>;tag=t{me}"), ("To", f"<sip:{EXTENSION}@{HOST}>"),
                       ("Call-ID", f"tcp-{rng.getrandbits(64):x}"), ("CSeq", f"1 {m}"),
                       ("Contact", f"<sip:fuzz@127.0.0.1:{me};transport=tcp>"), ("Max-Forwards", "70")],
                      sdp(40000) if m == "INVITE" else "")
        data = maybe(msg, 0.5).render()
        r = rng.random()
        if r < 0.15:
            # A Content-Length that lies: the next message's bytes become this one's body, or
            # the stream waits for bytes that never come.
            data = re.sub(rb"Content-Length: \d+", f"Content-Length: {rng.choice([0, 1, 5, 99999, 2**31])}".encode(),
                          data)
        elif r < 0.25:
            data = bytes(rng.choice(b"\r\n:; \x00\xffA") for _ in range(rng.randrange(1, 200))) + data
        elif r < 0.3:
            data += b"\r\n\r\n" * rng.randrange(1, 4)
        stream += data
    try:
        at = 0
        while at < len(stream):
            step = rng.choice([1, 7, 64, 1500, len(stream)])
            conn.sendall(stream[at:at + step])
            at += step
        conn.recv(65536)
        STATS["tcp answered"] += 1
    except OSError:
        STATS["tcp unanswered"] += 1
    finally:
        conn.close()


def main():
    caller, callee, probe = Phone(CALLER, CALLER_PW), Phone(CALLEE, CALLEE_PW), Phone("probe", "")
    if not register(callee):
        sys.exit("the callee could not register")
    calls, end = 0, time.time() + SECONDS
    while time.time() < end:
        one_call(caller, callee)
        calls += 1
        if TCP_PORT and rng.random() < 0.5:
            tcp_round(TCP_PORT)
        if rng.random() < 0.1:
            STATS["mutated REGISTER accepted" if register(Phone(CALLEE, CALLEE_PW), True)
                  else "mutated REGISTER refused"] += 1
        if calls % 10 == 0 and not register(callee) and not alive(probe):
            sys.exit(f"server stopped answering after {calls} fuzzed calls")
    if not alive(probe):
        sys.exit(f"server stopped answering after {calls} fuzzed calls")
    print(f"{calls} fuzzed calls; the server still answers; {dict(STATS)}")


main()

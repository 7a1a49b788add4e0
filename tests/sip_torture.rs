//! RFC 4475 and RFC 5118 torture messages, driven by the EXPECT.tsv tables
//! in `shared/testdata/sip-torture`, plus truncation and mutation sweeps to
//! show that nothing panics and that whatever parses also re-serialises to
//! something that parses.
//!
//! Decisions where the RFCs allow a choice (each is asserted below):
//! - "may reject" is taken as reject with 400 (lwsstart, trws, escruri,
//!   regbadct, badaspec, baddn, badbranch).
//! - baddate is accepted: RFC 4475 §3.1.2.12 says an element should not
//!   reject it unless Date matters to its processing, and to a PBX it does
//!   not; the Date header stays available raw.
//! - mismatch02 gets 400, which RFC 4475 §3.1.2.18 allows: the message layer
//!   cannot know whether the transaction user implements NEWMETHOD, and a
//!   CSeq mismatch is malformed regardless.
//! - scalarlg and bigcode are responses: parse() refuses them and
//!   `response_bytes()` is `None`, so the transport drops them silently.
//! - baddn as shipped lacks the empty line ending its header section; over
//!   UDP that alone is a 400, and with the CRLF added it is still a 400 for
//!   the display name.

use std::fs;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};

use switchboard::sip::header::{HeaderName, NameAddr, Transport, Via};
use switchboard::sip::message::{
    frame, parse, ErrorKind, Frame, Message, Method, ParseError, MAX_MESSAGE_SIZE,
};
use switchboard::sip::uri::{Host, Uri};

fn corpus_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/sip-torture");
    assert!(
        root.is_dir(),
        "torture corpus missing at {}: the repository must sit beside shared/",
        root.display()
    );
    root
}

struct Case {
    name: String,
    valid: bool,
    bytes: Vec<u8>,
}

fn load(suite: &str) -> Vec<Case> {
    let dir = corpus_root().join(suite);
    let tsv = fs::read_to_string(dir.join("EXPECT.tsv")).expect("EXPECT.tsv readable");
    assert!(
        dir.join("EXPECT.md").is_file(),
        "EXPECT.md missing in {suite}"
    );
    tsv.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut cols = line.split('\t');
            let name = cols.next().expect("file column").to_owned();
            let valid = match cols.next() {
                Some("valid") => true,
                Some("invalid") => false,
                other => panic!("{name}: bad validity column {other:?}"),
            };
            assert!(
                cols.next().is_some_and(|t| !t.is_empty()),
                "{name}: no expectation text"
            );
            // RFC 5118's archive is LF-only and unframed; wire/ is the
            // sendable copy (see its EXPECT.md).
            let wire = dir.join("wire").join(&name);
            let path = if wire.is_file() {
                wire
            } else {
                dir.join("dat").join(&name)
            };
            let bytes = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Case { name, valid, bytes }
        })
        .collect()
}

fn ok(case: &Case) -> Message {
    parse(&case.bytes).unwrap_or_else(|e| panic!("{}: rejected: {e}", case.name))
}

fn err(case: &Case) -> ParseError {
    match parse(&case.bytes) {
        Ok(m) => panic!("{}: accepted:\n{m}", case.name),
        Err(e) => e,
    }
}

/// Rejected with 400 and an addressable stateless answer.
fn bad_request(case: &Case) -> ParseError {
    let e = err(case);
    assert_eq!(e.status(), 400, "{}: {e}", case.name);
    let rsp = e
        .response_bytes()
        .unwrap_or_else(|| panic!("{}: no response", case.name));
    assert!(rsp.starts_with(b"SIP/2.0 400 "), "{}", case.name);
    e
}

fn header_err(case: &Case, name: HeaderName) {
    let e = bad_request(case);
    assert!(
        matches!(e.kind(), ErrorKind::Header { name: n, .. } if *n == name),
        "{}: {e}",
        case.name
    );
}

fn v6(s: &str) -> Host {
    Host::V6(s.parse::<Ipv6Addr>().expect("test address"))
}

fn user(uri: &Uri) -> String {
    uri.user().map(|u| u.into_owned()).unwrap_or_default()
}

fn check_rfc4475(case: &Case) {
    match case.name.as_str() {
        "wsinv.dat" => {
            let m = ok(case);
            assert_eq!(m.method(), Some(&Method::Invite));
            assert_eq!(m.max_forwards(), Some(68));
            assert_eq!(
                m.cseq().map(|c| (c.seq, &c.method)),
                Some((9, &Method::Invite))
            );
            let hosts: Vec<String> = m.via_headers().iter().map(|v| v.host.to_string()).collect();
            assert_eq!(
                hosts,
                ["192.0.2.2", "spindle.example.com", "192.168.255.111"]
            );
            assert_eq!(m.top_via().and_then(Via::branch), Some("390skdjuw"));
            assert_eq!(
                m.via_headers().get(2).and_then(Via::branch),
                Some("z9hG4bK30239")
            );
            let from = m.from().expect("From");
            assert_eq!(from.display_name.as_deref(), Some("J Rosenberg \\\""));
            assert_eq!(from.tag(), Some("98asjd8"));
            assert_eq!(m.to().and_then(NameAddr::tag), Some("1918181833n"));
            assert_eq!(m.header(&HeaderName::Subject), Some(""));
            assert_eq!(
                m.header(&HeaderName::parse("newfangledheader")),
                Some("newfangled value continued newfangled value")
            );
            assert_eq!(
                m.header(&HeaderName::parse("UnknownHeaderWithUnusualValue")),
                Some(";;,,;;,;")
            );
            let c = m.contacts().first().expect("contact");
            assert_eq!(c.display_name.as_deref(), Some("Quoted string \"\""));
            assert_eq!(c.params.value("newparam"), Some("newvalue"));
            assert!(c.params.contains("secondparam"));
            assert_eq!(c.q(), Some(330));
            assert_eq!(m.routes().map(|r| r.len()), Ok(1));
            assert_eq!(m.body().len(), 150);
            assert!(m.uri().and_then(|u| u.param("unknownparam")).is_some());
        }
        "intmeth.dat" => {
            let m = ok(case);
            let method = Method::Extension("!interesting-Method0123456789_*+`.%indeed'~".into());
            assert_eq!(m.method(), Some(&method));
            assert_eq!(m.cseq().map(|c| &c.method), Some(&method));
            assert_eq!(m.max_forwards(), Some(255));
            let to = m.to().expect("To");
            assert_eq!(
                to.display_name.as_deref(),
                Some("BEL:\u{7} NUL:\u{0} DEL:\u{7f}")
            );
            assert_eq!(
                m.from().and_then(|f| f.display_name.as_deref()),
                Some("token1~` token2'+_ token3*%!.-")
            );
            assert_eq!(m.from().and_then(NameAddr::tag), Some("_token~1'+`*%!-."));
            let uri = m.uri().and_then(Uri::as_sip).expect("sip R-URI");
            assert_eq!(
                uri.user_raw(),
                Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
            );
            assert_eq!(uri.host(), &Host::Domain("example.com".into()));
            assert_eq!(
                m.call_id(),
                Some("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{")
            );
        }
        "esc01.dat" => {
            let m = ok(case);
            assert_eq!(m.uri().map(user).as_deref(), Some("sips:user@example.com"));
            assert_eq!(m.to().map(|t| user(&t.uri)).as_deref(), Some("user"));
            assert_eq!(
                m.from().map(|f| user(&f.uri)).as_deref(),
                Some("I have spaces")
            );
            let c = m.contacts().first().expect("contact");
            assert_eq!(user(&c.uri), "caller");
            assert!(c.uri.param("lr").is_some());
            assert_eq!(
                c.uri.param("name").and_then(|p| p.value()),
                Some("value%41")
            );
        }
        "escnull.dat" => {
            let m = ok(case);
            let to = m
                .to()
                .and_then(|t| t.uri.as_sip().cloned())
                .expect("sip To");
            assert_eq!(to.user_bytes().as_deref(), Some(&b"null-\0-null"[..]));
            let users: Vec<Vec<u8>> = m
                .contacts()
                .iter()
                .filter_map(|c| c.uri.as_sip()?.user_bytes().map(|u| u.into_owned()))
                .collect();
            assert_eq!(users, [b"\0".to_vec(), b"\0\0".to_vec()]);
        }
        "esc02.dat" => {
            let m = ok(case);
            assert_eq!(m.method(), Some(&Method::Extension("RE%47IST%45R".into())));
            assert_ne!(m.method(), Some(&Method::Register));
            assert_eq!(
                m.to().and_then(|t| t.display_name.as_deref()),
                Some("%Z%45")
            );
            assert_eq!(m.contacts().len(), 2);
            assert_eq!(
                m.header(&HeaderName::parse("C%6Fntact")),
                Some("<sip:alias2@host2.example.com>")
            );
            assert_eq!(
                m.top_via().and_then(Via::branch),
                Some("z9hG4bK209%fzsnel234")
            );
        }
        "lwsdisp.dat" => {
            let m = ok(case);
            assert_eq!(
                m.from().and_then(|f| f.display_name.as_deref()),
                Some("caller")
            );
            assert_eq!(m.method(), Some(&Method::Options));
        }
        "longreq.dat" => {
            let m = ok(case);
            assert_eq!(m.via_headers().len(), 34);
            assert_eq!(
                m.via_headers().last().and_then(Via::received),
                "192.0.2.5".parse().ok()
            );
            let to = m.to().expect("To");
            assert!(to.display_name.as_deref().is_some_and(|d| d.len() > 100));
            assert_eq!(to.uri.port(), Some(6000));
            assert_eq!(to.uri.as_sip().map(|u| u.params().len()), Some(3));
            assert!(m
                .from()
                .and_then(NameAddr::tag)
                .is_some_and(|t| t.len() > 100));
            assert!(m.call_id().is_some_and(|c| c.len() > 100));
            assert_eq!(m.body().len(), 150);
        }
        "dblreq.dat" => {
            let m = ok(case);
            assert_eq!(m.method(), Some(&Method::Register));
            assert!(m.body().is_empty());
            let out = String::from_utf8(m.to_bytes()).expect("utf-8");
            assert!(!out.contains("INVITE"), "trailing octets forwarded");
        }
        "semiuri.dat" => {
            let m = ok(case);
            let uri = m.uri().expect("R-URI");
            assert_eq!(user(uri), "user;par=u@example.net");
            assert!(uri.as_sip().is_some_and(|u| u.params().is_empty()));
            assert_eq!(m.headers(&HeaderName::Accept).count(), 6);
        }
        "transports.dat" => {
            let m = ok(case);
            let t: Vec<&Transport> = m.via_headers().iter().map(|v| &v.transport).collect();
            assert_eq!(
                t,
                [
                    &Transport::Udp,
                    &Transport::Sctp,
                    &Transport::Tls,
                    &Transport::Other("UNKNOWN".into()),
                    &Transport::Tcp
                ]
            );
        }
        "mpart01.dat" => {
            let m = ok(case);
            let cl: usize = m
                .header(&HeaderName::ContentLength)
                .and_then(|v| v.parse().ok())
                .expect("Content-Length");
            assert_eq!(m.body().len(), cl);
            assert!(m.body().contains(&0));
            assert_eq!(m.method(), Some(&Method::Message));
        }
        "unreason.dat" => {
            let m = ok(case);
            assert_eq!(m.status(), Some(200));
            assert!(m.reason().is_some_and(|r| !r.is_ascii()));
        }
        "noreason.dat" => {
            let m = ok(case);
            assert_eq!(m.status(), Some(100));
            assert_eq!(m.reason(), Some(""));
        }
        "badinv01.dat" => header_err(case, HeaderName::Via),
        "clerr.dat" => {
            assert_eq!(bad_request(case).kind(), &ErrorKind::BodyTruncated);
            // A stream waits for the rest of the body instead.
            assert!(matches!(
                frame(&case.bytes, MAX_MESSAGE_SIZE),
                Frame::Body(total) if total > case.bytes.len()
            ));
        }
        "ncl.dat" => {
            assert_eq!(bad_request(case).kind(), &ErrorKind::ContentLength);
            assert!(matches!(
                frame(&case.bytes, MAX_MESSAGE_SIZE),
                Frame::Invalid(_)
            ));
        }
        "scalar02.dat" => header_err(case, HeaderName::CSeq),
        "scalarlg.dat" | "bigcode.dat" => {
            let e = err(case);
            assert!(
                e.response_bytes().is_none(),
                "{}: responses are never answered",
                case.name
            );
        }
        "quotbal.dat" => header_err(case, HeaderName::To),
        "ltgtruri.dat" | "lwsruri.dat" | "lwsstart.dat" => {
            assert!(matches!(bad_request(case).kind(), ErrorKind::RequestUri(_)));
        }
        "trws.dat" => assert_eq!(bad_request(case).kind(), &ErrorKind::StartLine),
        "escruri.dat" => assert_eq!(bad_request(case).kind(), &ErrorKind::RequestUriHeaders),
        "baddate.dat" => {
            let m = ok(case);
            assert_eq!(
                m.header(&HeaderName::Date),
                Some("Fri, 01 Jan 2010 16:00:00 EST")
            );
        }
        "regbadct.dat" => header_err(case, HeaderName::Contact),
        "badaspec.dat" => header_err(case, HeaderName::To),
        "baddn.dat" => {
            let e = err(case);
            assert_eq!(e.kind(), &ErrorKind::Truncated);
            assert_eq!(e.status(), 400);
            let mut fixed = case.bytes.clone();
            fixed.extend_from_slice(b"\r\n");
            let e = parse(&fixed).expect_err("display name with a comma");
            assert!(
                matches!(
                    e.kind(),
                    ErrorKind::Header {
                        name: HeaderName::From,
                        ..
                    }
                ),
                "{e}"
            );
            assert!(e.response_bytes().is_some());
        }
        "badvers.dat" => {
            let e = err(case);
            assert_eq!(e.status(), 505);
            let rsp = e.response_bytes().expect("505 is sent");
            let rsp = parse(&rsp).expect("our 505 parses");
            assert_eq!(rsp.status(), Some(505));
            assert_eq!(rsp.call_id(), Some("badvers.31417@c.example.com"));
            assert_eq!(rsp.to().and_then(NameAddr::tag).map(str::len), Some(16));
        }
        "mismatch01.dat" | "mismatch02.dat" => {
            assert_eq!(bad_request(case).kind(), &ErrorKind::CSeqMismatch);
        }
        "badbranch.dat" => assert_eq!(bad_request(case).kind(), &ErrorKind::BareBranch),
        "insuf.dat" => {
            let e = err(case);
            assert_eq!(e.status(), 400);
            assert!(matches!(e.kind(), ErrorKind::Missing(_)));
            // No From/To/Call-ID: nothing to address a response with.
            assert!(e.response_bytes().is_none());
        }
        "unkscm.dat" => {
            let m = ok(case);
            assert_eq!(m.uri().map(Uri::scheme), Some("nobodyknowsthisscheme"));
        }
        "novelsc.dat" => {
            let m = ok(case);
            assert_eq!(m.uri().map(Uri::scheme), Some("soap.beep"));
        }
        "unksm2.dat" => {
            let m = ok(case);
            assert_eq!(m.to().map(|t| t.uri.scheme()), Some("isbn"));
            assert_eq!(m.from().map(|f| f.uri.scheme()), Some("http"));
            assert_eq!(
                m.contacts().first().map(|c| c.uri.to_string()).as_deref(),
                Some("name:John_Smith")
            );
        }
        "bext01.dat" => {
            let m = ok(case);
            assert_eq!(
                m.headers(&HeaderName::Require).collect::<Vec<_>>(),
                ["nothingSupportsThis", "nothingSupportsThisEither"]
            );
            assert_eq!(m.headers(&HeaderName::ProxyRequire).count(), 2);
        }
        "invut.dat" => {
            let m = ok(case);
            assert_eq!(m.content_type(), Some("application/unknownformat"));
            assert_eq!(m.body().len(), 40);
        }
        "regaut01.dat" => {
            let m = ok(case);
            let creds: Vec<_> = m.credentials(&HeaderName::Authorization).collect();
            let c = creds
                .first()
                .and_then(|c| c.as_ref().ok())
                .expect("credentials");
            assert_eq!(c.scheme, "NoOneKnowsThisScheme");
            assert!(!c.is_digest());
        }
        "multi01.dat" => {
            assert!(matches!(bad_request(case).kind(), ErrorKind::Duplicate(_)));
        }
        "mcl01.dat" => {
            let e = bad_request(case);
            assert_eq!(e.kind(), &ErrorKind::Duplicate(HeaderName::ContentLength));
            assert!(matches!(
                frame(&case.bytes, MAX_MESSAGE_SIZE),
                Frame::Invalid(_)
            ));
        }
        "bcast.dat" => {
            let m = ok(case);
            assert_eq!(m.status(), Some(200));
            assert_eq!(
                m.via_headers().get(1).map(|v| &v.host),
                Some(&Host::V4("255.255.255.255".parse().expect("ip")))
            );
        }
        "zeromf.dat" => assert_eq!(ok(case).max_forwards(), Some(0)),
        "cparam01.dat" => {
            let m = ok(case);
            let c = m.contacts().first().expect("contact");
            assert!(c.params.contains("unknownparam"));
            assert!(c.uri.param("unknownparam").is_none());
        }
        "cparam02.dat" => {
            let m = ok(case);
            let c = m.contacts().first().expect("contact");
            assert!(c.params.is_empty());
            assert!(c.uri.param("unknownparam").is_some());
        }
        "regescrt.dat" => {
            let m = ok(case);
            let c = m
                .contacts()
                .first()
                .and_then(|c| c.uri.as_sip())
                .expect("sip contact");
            assert_eq!(
                c.headers(),
                [("Route".to_owned(), "<sip:sip.example.com>".to_owned())]
            );
            assert_eq!(
                c.to_string(),
                "sip:user@example.com?Route=%3Csip:sip.example.com%3E"
            );
        }
        "sdp01.dat" => {
            let m = ok(case);
            assert_eq!(
                m.headers(&HeaderName::Accept).collect::<Vec<_>>(),
                ["text/nobodyKnowsThis"]
            );
        }
        "inv2543.dat" => {
            let m = ok(case);
            assert_eq!(m.max_forwards(), None);
            assert_eq!(m.top_via().and_then(Via::branch), None);
            assert!(m.top_via().is_some_and(|v| !v.is_rfc3261_branch()));
            assert_eq!(m.from().and_then(NameAddr::tag), None);
            assert_eq!(m.header(&HeaderName::ContentLength), None);
            let head_len = case
                .bytes
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .expect("header end")
                + 4;
            assert_eq!(m.body().len(), case.bytes.len() - head_len);
        }
        "test.dat" => {
            let e = err(case);
            assert_eq!(e.kind(), &ErrorKind::StartLine);
            assert!(e.response_bytes().is_none());
        }
        other => panic!("no expectation coded for {other}"),
    }
}

fn check_rfc5118(case: &Case) {
    let m = if case.valid { Some(ok(case)) } else { None };
    let m = m.as_ref();
    let uri_host = || m.and_then(Message::uri).and_then(Uri::host).cloned();
    match case.name.as_str() {
        "ipv6-good" => {
            let m = m.expect("valid");
            assert_eq!(uri_host(), Some(v6("2001:db8::10")));
            assert_eq!(m.top_via().map(|v| &v.host), Some(&v6("2001:db8::9:1")));
            assert_eq!(
                m.contacts().first().and_then(|c| c.uri.host()),
                Some(&v6("2001:db8::1"))
            );
        }
        "ipv6-bad" => {
            assert!(matches!(bad_request(case).kind(), ErrorKind::RequestUri(_)));
        }
        "port-ambiguous" => {
            let uri = m.and_then(Message::uri).expect("R-URI");
            assert_eq!(uri.host(), Some(&v6("2001:db8::10:5070")));
            assert_eq!(uri.port(), None);
            assert_eq!(uri.host_port().map(|(_, p)| p), Some(5060));
        }
        "port-unambiguous" => {
            let uri = m.and_then(Message::uri).expect("R-URI");
            assert_eq!(uri.host(), Some(&v6("2001:db8::10")));
            assert_eq!(uri.port(), Some(5070));
        }
        "via-received-param-with-delim" | "via-received-param-no-delim" => {
            let via = m.and_then(Message::top_via).expect("Via");
            assert_eq!(via.host, v6("2001:db8::9:1"));
            assert_eq!(via.received(), "2001:db8::9:255".parse().ok());
            assert!(via.branch().is_some_and(|b| b.starts_with("z9hG4bKas3")));
        }
        "ipv6-in-sdp" | "mult-ip-in-sdp" => {
            let m = m.expect("valid");
            let text = String::from_utf8_lossy(m.body());
            assert!(text.contains("IN IP6 2001:db8::"), "{text}");
            assert_eq!(uri_host(), Some(v6("2001:db8::10")));
        }
        "mult-ip-in-header" => {
            let vias = m.map(Message::via_headers).expect("valid");
            let sent_by: Vec<(Host, Option<u16>)> =
                vias.iter().map(|v| (v.host.clone(), v.port)).collect();
            assert_eq!(
                sent_by,
                [
                    (v6("2001:db8::9:1"), Some(6050)),
                    (Host::V4("192.0.2.1".parse().expect("ip")), None),
                    (v6("2001:db8::9:255"), None),
                ]
            );
            assert_eq!(vias.get(2).map(|v| &v.transport), Some(&Transport::Tcp));
            assert_eq!(
                vias.get(2).and_then(Via::received),
                "192.0.2.200".parse().ok()
            );
        }
        "ipv4-mapped-ipv6" => {
            let m = m.expect("valid");
            let top = m.top_via().expect("Via");
            assert_eq!(
                (&top.host, top.port),
                (&v6("::ffff:192.0.2.10"), Some(19823))
            );
            assert_eq!(
                m.via_headers().get(1).map(|v| &v.host),
                Some(&v6("::ffff:192.0.2.2"))
            );
            assert_eq!(
                m.contacts().first().and_then(|c| c.uri.host()),
                Some(&v6("::ffff:192.0.2.2"))
            );
        }
        "ipv6-bug-abnf-3-colons" | "ipv6-correct-abnf-2-colons" => {
            let m = m.expect("valid");
            assert_eq!(uri_host(), Some(v6("2001:db8::192.0.2.1")));
            assert_eq!(
                m.to().and_then(|t| t.uri.host()),
                Some(&v6("2001:db8::192.0.2.1"))
            );
        }
        other => panic!("no expectation coded for {other}"),
    }
}

/// Whatever parses must serialise to bytes that parse again, and do so
/// stably (the second serialisation equals the first).
fn assert_round_trip(m: &Message, what: &str) {
    let wire = m.to_bytes();
    let again = parse(&wire).unwrap_or_else(|e| {
        panic!(
            "{what}: re-parse failed: {e}\n{}",
            String::from_utf8_lossy(&wire)
        )
    });
    assert_eq!(again.to_bytes(), wire, "{what}: unstable serialisation");
    assert_eq!(again.body(), m.body(), "{what}");
    assert_eq!(again.via_headers(), m.via_headers(), "{what}");
}

fn run_suite(suite: &str, check: fn(&Case)) -> usize {
    let cases = load(suite);
    assert!(!cases.is_empty());
    for case in &cases {
        check(case);
        match parse(&case.bytes) {
            Ok(m) => {
                assert!(
                    case.valid || case.name == "baddate.dat",
                    "{} should be refused",
                    case.name
                );
                assert_round_trip(&m, &case.name);
            }
            Err(e) => assert!(!case.valid, "{}: {e}", case.name),
        }
    }
    cases.len()
}

#[test]
fn rfc4475_torture_messages() {
    assert_eq!(run_suite("rfc4475", check_rfc4475), 50);
}

#[test]
fn rfc5118_ipv6_torture_messages() {
    assert_eq!(run_suite("rfc5118", check_rfc5118), 12);
}

/// The raw RFC 5118 archive copies are LF-only with no closing empty line
/// or wrong Content-Length: over UDP they are malformed and must be refused
/// cleanly, never half-accepted.
#[test]
fn rfc5118_unframed_archive_copies_are_refused() {
    let dir = corpus_root().join("rfc5118/dat");
    let mut n = 0;
    for entry in fs::read_dir(&dir).expect("dat dir") {
        let path = entry.expect("entry").path();
        let bytes = fs::read(&path).expect("readable");
        let e = parse(&bytes).expect_err("LF-only message");
        assert_eq!(e.status(), 400, "{}", path.display());
        let _ = frame(&bytes, MAX_MESSAGE_SIZE);
        n += 1;
    }
    assert_eq!(n, 12);
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n.max(1) as u64).unwrap_or(0)
    }
}

fn all_messages() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = load("rfc4475")
        .into_iter()
        .chain(load("rfc5118"))
        .map(|c| (c.name, c.bytes))
        .collect();
    let extra = corpus_root().join("rfc5118/dat");
    for entry in fs::read_dir(extra).expect("dat dir").flatten() {
        if let Ok(b) = fs::read(entry.path()) {
            out.push((format!("dat/{}", entry.file_name().to_string_lossy()), b));
        }
    }
    out
}

fn exercise(input: &[u8], what: &str) {
    if let Ok(m) = parse(input) {
        assert_round_trip(&m, what);
        if m.is_request() {
            let rsp = Message::response_to(&m, 200, "OK").to_bytes();
            assert!(
                parse(&rsp).is_ok(),
                "{what}: response_to output does not parse"
            );
        }
    } else if let Err(e) = parse(input) {
        if let Some(rsp) = e.response_bytes() {
            assert!(rsp.ends_with(b"Content-Length: 0\r\n\r\n"), "{what}");
        }
    }
    match frame(input, MAX_MESSAGE_SIZE) {
        Frame::Message(n) | Frame::KeepAlive(n) => assert!(n > 0 && n <= input.len(), "{what}"),
        Frame::Body(total) => assert!(total > input.len(), "{what}"),
        Frame::Incomplete | Frame::Invalid(_) => {}
    }
}

#[test]
fn truncation_at_every_offset_never_panics() {
    for (name, bytes) in all_messages() {
        for cut in 0..=bytes.len() {
            exercise(
                bytes.get(..cut).unwrap_or_default(),
                &format!("{name}[..{cut}]"),
            );
        }
    }
}

#[test]
fn random_mutations_never_panic() {
    // Bytes that matter to the grammar are far likelier to find bugs than
    // uniformly random ones.
    const INTERESTING: &[u8] = b":;,<>\"\\ \t\r\n%[]@?=/0123456789*\x00\xff\xc3";
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for (name, bytes) in all_messages() {
        for round in 0..300 {
            let mut m = bytes.clone();
            for _ in 0..=rng.below(3) {
                let pos = rng.below(m.len());
                let byte = if rng.next() & 1 == 0 {
                    INTERESTING
                        .get(rng.below(INTERESTING.len()))
                        .copied()
                        .unwrap_or(b'x')
                } else {
                    (rng.next() & 0xff) as u8
                };
                match rng.below(3) {
                    0 => {
                        if let Some(b) = m.get_mut(pos) {
                            *b = byte;
                        }
                    }
                    1 => m.insert(pos.min(m.len()), byte),
                    _ => {
                        if pos < m.len() {
                            m.remove(pos);
                        }
                    }
                }
            }
            exercise(&m, &format!("{name} mutation {round}"));
        }
    }
}

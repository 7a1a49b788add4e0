//! Kernel forwarding (`media::netfilter`) against the real kernel: nftables rewrites and
//! forwards the streams the relay hands over, the relay takes them back when a call ends, a
//! party moves or the media needs us (transcoding). Each test runs in a network namespace of
//! its own (`enter_private_netns`), so the host's tables are never touched; needs root and the
//! `nft` and `ip` commands (Debian packages nftables and iproute2).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::in_kernel;
use switchboard::media::netfilter::{enter_private_netns, POLL_EVERY};
use switchboard::media::relay::{Relay, RelayConfig, Session, Side};
use switchboard::media::sdp::Endpoint;

fn relay() -> Relay {
    enter_private_netns().expect("a network namespace of our own (root, iproute2)");
    Relay::start(config()).expect("kernel forwarding starts (nft installed)")
}

fn config() -> RelayConfig {
    RelayConfig {
        // Bound to any address: the kernel's packets must leave from the source our own
        // sockets' would have, which the relay asks the routing table for.
        bind: "0.0.0.0".parse().unwrap(),
        advertise: "127.0.0.1".parse().unwrap(),
        port_min: 30000,
        port_max: 30040,
        threads: 1,
        reuse_after: RelayConfig::REUSE_AFTER,
        close_after: RelayConfig::CLOSE_AFTER,
        kernel_forwarding: true,
    }
}

fn party() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

fn endpoint(s: &UdpSocket) -> Endpoint {
    let a = s.local_addr().unwrap();
    Endpoint {
        rtp: a,
        rtcp: SocketAddr::new(a.ip(), a.port() + 1),
    }
}

/// An RTP packet of payload type `pt` with `seq`, 160 bytes of `fill`.
fn rtp(pt: u8, seq: u16, fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, pt, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p.resize(12 + 160, fill);
    p
}

fn recv(s: &UdpSocket) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = [0u8; 2048];
    s.recv_from(&mut buf)
        .ok()
        .map(|(n, a)| (buf[..n].to_vec(), a))
}

fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ok() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Both parties speak once through the relay (latching them), and wait until their two RTP
/// streams are in the kernel.
fn connect(sess: &Session) -> (UdpSocket, UdpSocket) {
    let (a, b) = (party(), party());
    sess.set_remote(Side::Caller, endpoint(&a));
    sess.set_remote(Side::Callee, endpoint(&b));
    a.send_to(&rtp(0, 1, 1), sess.caller_facing()).unwrap();
    let (_, from) = recv(&b).expect("the first packet, relayed in user space");
    assert_eq!(from, sess.callee_facing());
    b.send_to(&rtp(0, 1, 2), sess.callee_facing()).unwrap();
    let (_, from) = recv(&a).expect("the first answer, relayed in user space");
    assert_eq!(from, sess.caller_facing());
    wait_for("both streams in the kernel", Duration::from_secs(2), || {
        in_kernel().is_some_and(|e| e.len() == 2)
    });
    (a, b)
}

#[test]
fn plain_streams_go_through_the_kernel_until_the_call_ends() {
    let r = relay();
    let sess = r.session().unwrap();
    let (a, b) = connect(&sess);
    let relayed_by_us = r
        .counters()
        .packets
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(relayed_by_us, 2);

    // Each stream's entry: the party's address and the port of ours it sends to.
    let mut streams = in_kernel().unwrap();
    streams.sort();
    let mut want = vec![
        (
            a.local_addr().unwrap().to_string(),
            sess.caller_facing().port(),
            0,
        ),
        (
            b.local_addr().unwrap().to_string(),
            sess.callee_facing().port(),
            0,
        ),
    ];
    want.sort();
    assert_eq!(streams, want);

    for seq in 2..52 {
        a.send_to(&rtp(0, seq, 3), sess.caller_facing()).unwrap();
        b.send_to(&rtp(0, seq, 4), sess.callee_facing()).unwrap();
        let (p, from) = recv(&b).expect("forwarded to the callee");
        assert_eq!((from, p), (sess.callee_facing(), rtp(0, seq, 3)));
        let (p, from) = recv(&a).expect("forwarded to the caller");
        assert_eq!((from, p), (sess.caller_facing(), rtp(0, seq, 4)));
    }
    // The kernel counted them; our sockets saw none.
    let counted: u64 = in_kernel().unwrap().iter().map(|e| e.2).sum();
    assert_eq!(counted, 100);
    // Read at the next poll: the relay's counters and the session's activity include them.
    wait_for(
        "the kernel's packets in the relay's counters",
        POLL_EVERY * 2,
        || {
            r.counters()
                .packets
                .load(std::sync::atomic::Ordering::Relaxed)
                == 102
        },
    );
    assert!(sess.idle() < Duration::from_secs(1), "{:?}", sess.idle());

    // The call ends: the streams are taken back at once, and nothing is forwarded any more.
    let ours = sess.caller_facing();
    drop(sess);
    wait_for("the streams gone", Duration::from_secs(1), || {
        in_kernel().is_some_and(|e| e.is_empty())
    });
    a.send_to(&rtp(0, 60, 5), ours).unwrap();
    assert!(recv(&b).is_none(), "forwarded after the call ended");

    // And the table goes with the relay, before dropping it returns.
    drop(r);
    assert_eq!(in_kernel(), None);
}

#[test]
fn a_transcoded_call_stays_in_user_space() {
    let r = relay();
    let sess = r.session().unwrap();
    sess.set_transcoding(Some((0, 8)));
    let (a, b) = (party(), party());
    sess.set_remote(Side::Caller, endpoint(&a));
    sess.set_remote(Side::Callee, endpoint(&b));
    for seq in 1..20 {
        a.send_to(&rtp(0, seq, 0xFF), sess.caller_facing()).unwrap();
        let (p, _) = recv(&b).expect("relayed");
        assert_eq!(p[1] & 0x7F, 8, "converted to PCMA");
        b.send_to(&rtp(8, seq, 0xD5), sess.callee_facing()).unwrap();
        let (p, _) = recv(&a).expect("relayed");
        assert_eq!(p[1] & 0x7F, 0, "converted to PCMU");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(in_kernel(), Some(vec![]));

    // Once the legs agree, the same call is handed over.
    sess.set_transcoding(None);
    a.send_to(&rtp(0, 30, 1), sess.caller_facing()).unwrap();
    recv(&b).expect("relayed");
    wait_for("both streams in the kernel", Duration::from_secs(2), || {
        in_kernel().is_some_and(|e| e.len() == 2)
    });
    sess.set_transcoding(Some((0, 8)));
    wait_for("both streams back", Duration::from_secs(1), || {
        in_kernel().is_some_and(|e| e.is_empty())
    });
}

#[test]
fn a_party_that_moves_is_followed() {
    let r = relay();
    let sess = r.session().unwrap();
    let (a, b) = connect(&sess);

    // A re-INVITE moves the caller to a new address: the old stream is taken back (the
    // callee's now goes where the description says), the new one latched in user space and
    // handed over in its turn.
    let moved = party();
    let old = a.local_addr().unwrap().to_string();
    sess.set_remote(Side::Caller, endpoint(&moved));
    wait_for(
        "the caller's stream taken back",
        Duration::from_secs(1),
        || in_kernel().is_some_and(|e| e.len() == 1 && e[0].0 != old),
    );
    moved
        .send_to(&rtp(0, 100, 6), sess.caller_facing())
        .unwrap();
    let (p, _) = recv(&b).expect("the moved caller reaches the callee");
    assert_eq!(p, rtp(0, 100, 6));
    b.send_to(&rtp(0, 100, 7), sess.callee_facing()).unwrap();
    let (p, from) = recv(&moved).expect("the callee reaches the moved caller");
    assert_eq!((from, p), (sess.caller_facing(), rtp(0, 100, 7)));
    wait_for(
        "both streams in the kernel again",
        Duration::from_secs(2),
        || {
            in_kernel().is_some_and(|e| {
                e.len() == 2
                    && e.iter()
                        .any(|s| s.0 == moved.local_addr().unwrap().to_string())
            })
        },
    );
    b.send_to(&rtp(0, 101, 8), sess.callee_facing()).unwrap();
    let (p, _) = recv(&moved).expect("forwarded by the kernel to where the caller is now");
    assert_eq!(p, rtp(0, 101, 8));
    // The caller's old address is nobody now: what it sends is not forwarded.
    a.send_to(&rtp(0, 102, 9), sess.caller_facing()).unwrap();
    assert!(
        recv(&b).is_none(),
        "the old address still reaches the callee"
    );
}

#[test]
fn without_forwarding_the_relay_refuses_to_start_and_says_why() {
    enter_private_netns().expect("a network namespace of our own (root, iproute2)");
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "0").unwrap();
    let e = Relay::start(config())
        .err()
        .expect("no start without ip_forward");
    assert_eq!(
        e.to_string(),
        "media kernel forwarding: needs net.ipv4.ip_forward=1 (sysctl -w net.ipv4.ip_forward=1)"
    );
}

#[test]
fn rtcp_goes_through_the_kernel_too() {
    let r = relay();
    let sess = r.session().unwrap();
    let (a, b) = connect(&sess);
    let rtcp = |addr: SocketAddr| SocketAddr::new(addr.ip(), addr.port() + 1);
    let (a_rtcp, b_rtcp) = (party_at(&a, 1), party_at(&b, 1));
    // Each side's first RTCP packet is relayed by us and latches it; the rest is the kernel's.
    a_rtcp
        .send_to(b"rtcp-a", rtcp(sess.caller_facing()))
        .unwrap();
    assert_eq!(
        recv(&b_rtcp).unwrap(),
        (b"rtcp-a".to_vec(), rtcp(sess.callee_facing()))
    );
    b_rtcp
        .send_to(b"rtcp-b", rtcp(sess.callee_facing()))
        .unwrap();
    assert_eq!(
        recv(&a_rtcp).unwrap(),
        (b"rtcp-b".to_vec(), rtcp(sess.caller_facing()))
    );
    wait_for("four streams in the kernel", Duration::from_secs(2), || {
        in_kernel().is_some_and(|e| e.len() == 4)
    });
    a_rtcp
        .send_to(b"rtcp-a2", rtcp(sess.caller_facing()))
        .unwrap();
    assert_eq!(
        recv(&b_rtcp).unwrap(),
        (b"rtcp-a2".to_vec(), rtcp(sess.callee_facing()))
    );
    let rtcp_port = rtcp(sess.caller_facing()).port();
    let counted = in_kernel()
        .unwrap()
        .into_iter()
        .find(|e| e.1 == rtcp_port)
        .unwrap()
        .2;
    assert_eq!(counted, 1, "the second RTCP packet went through the kernel");
    drop((a, b));
}

/// A party's socket on the port `offset` above another's (RTCP beside RTP).
fn party_at(s: &UdpSocket, offset: u16) -> UdpSocket {
    let a = s.local_addr().unwrap();
    let p = UdpSocket::bind(SocketAddr::new(a.ip(), a.port() + offset)).unwrap();
    p.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    p
}

#[test]
fn a_call_put_on_hold_or_turned_into_an_echo_test_is_taken_back() {
    let r = relay();
    let sess = r.session().unwrap();
    let (a, b) = connect(&sess);

    // The callee holds with the RFC 2543 `c=0.0.0.0`: nothing goes to it, through us or the
    // kernel.
    let mut held = endpoint(&b);
    held.rtp.set_ip("0.0.0.0".parse().unwrap());
    held.rtcp.set_ip("0.0.0.0".parse().unwrap());
    sess.set_remote(Side::Callee, held);
    wait_for("both streams taken back", Duration::from_secs(1), || {
        in_kernel().is_some_and(|e| e.is_empty())
    });
    a.send_to(&rtp(0, 10, 1), sess.caller_facing()).unwrap();
    assert!(recv(&b).is_none(), "relayed to a held party");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        in_kernel(),
        Some(vec![]),
        "a stream towards 0.0.0.0 handed over"
    );

    // Resumed, then made an echo test: the caller's RTP comes back to it, from us.
    sess.set_remote(Side::Callee, endpoint(&b));
    a.send_to(&rtp(0, 11, 2), sess.caller_facing()).unwrap();
    recv(&b).expect("relayed after the resume");
    wait_for(
        "the caller's stream in the kernel",
        Duration::from_secs(2),
        || in_kernel().is_some_and(|e| !e.is_empty()),
    );
    sess.set_echo();
    wait_for("the streams taken back", Duration::from_secs(1), || {
        in_kernel().is_some_and(|e| e.is_empty())
    });
    a.send_to(&rtp(0, 12, 3), sess.caller_facing()).unwrap();
    let (p, from) = recv(&a).expect("echoed");
    assert_eq!((from, p), (sess.caller_facing(), rtp(0, 12, 3)));
    assert!(
        recv(&b).is_none(),
        "the callee still gets the caller's audio"
    );
}

/// A firewall reload that flushes the whole ruleset takes our table with it: the streams go back
/// to the relay (the call goes on), and the table is written again at the next reading of its
/// counters.
#[test]
fn a_flushed_ruleset_is_written_again() {
    let r = relay();
    let sess = r.session().unwrap();
    let (a, b) = connect(&sess);
    let flushed = std::process::Command::new("nft")
        .args(["flush", "ruleset"])
        .status()
        .unwrap();
    assert!(flushed.success());
    assert_eq!(in_kernel(), None);
    // Relayed by us meanwhile.
    a.send_to(&rtp(0, 20, 1), sess.caller_facing()).unwrap();
    let (p, from) = recv(&b).expect("relayed while the table is gone");
    assert_eq!((from, p), (sess.callee_facing(), rtp(0, 20, 1)));
    wait_for("the table written again", POLL_EVERY * 3, || {
        in_kernel().is_some_and(|e| e.len() == 2)
    });
    b.send_to(&rtp(0, 21, 2), sess.callee_facing()).unwrap();
    let (p, from) = recv(&a).expect("forwarded by the kernel again");
    assert_eq!((from, p), (sess.caller_facing(), rtp(0, 21, 2)));
    let counted: u64 = in_kernel().unwrap().iter().map(|e| e.2).sum();
    assert_eq!(counted, 1);
}

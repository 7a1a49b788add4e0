//! The little of SDP (RFC 4566, RFC 3264) that anchoring media needs: where a party wants its
//! audio sent (connection address and port of the first audio stream, and the RTCP port when
//! `a=rtcp` names one, RFC 3605), and rewriting a description so that both parties send to
//! us instead.
//!
//! "The audio stream" is the first `m=audio` whose port is not 0: a stream with port 0 is
//! refused or disabled (RFC 3264 §6, §8.2; an answer to a "best effort" offer of SRTP and RTP
//! as two streams refuses one of them), and it stays as it is.
//!
//! Descriptions are edited line by line and everything we do not understand is passed through
//! untouched: phones put all sorts of attributes in there, and a B2BUA that drops what it does
//! not know breaks features it never heard of. Codec negotiation is not here.

use std::net::{IpAddr, SocketAddr};

use crate::sip::lex::{push_decimal, split_once_byte};
use crate::sip::uri::push_ip;

/// Where a party's audio should go, from its description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    pub rtp: SocketAddr,
    /// RTCP: `a=rtcp` when present, else RTP's port + 1 (RFC 3550 §11).
    pub rtcp: SocketAddr,
}

/// The audio endpoint of a description, `None` when it has no usable audio stream (no
/// `m=audio`, port 0 = stream refused, or no connection address for it).
pub fn audio_endpoint(sdp: &str) -> Option<Endpoint> {
    let mut session_ip: Option<IpAddr> = None;
    let mut seen_media = false;
    let mut in_audio = false;
    let mut audio_ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    let mut rtcp_port: Option<u16> = None;
    let mut rtcp_ip: Option<IpAddr> = None;
    for line in lines(sdp) {
        if let Some(m) = line.strip_prefix("m=") {
            if port.is_some() {
                break; // only the first audio stream
            }
            seen_media = true;
            in_audio = active_audio(m);
            if in_audio {
                port = m
                    .split(' ')
                    .nth(1)
                    .and_then(|p| p.split('/').next()?.parse().ok());
            }
        } else if let Some(c) = line.strip_prefix("c=") {
            let ip = connection_ip(c);
            if in_audio {
                audio_ip = ip;
            } else if !seen_media {
                // Session level only: a video stream's own address is not the audio's.
                session_ip = ip;
            }
        } else if let Some(a) = line.strip_prefix("a=rtcp:") {
            if in_audio {
                let mut parts = a.split(' ');
                rtcp_port = parts.next().and_then(|p| p.trim().parse().ok());
                // a=rtcp:PORT IN IP4 ADDR
                rtcp_ip = parts.nth(2).and_then(|ip| ip.trim().parse().ok());
            }
        }
    }
    let port = port.filter(|p| *p != 0)?;
    let ip = audio_ip.or(session_ip)?;
    let rtcp = SocketAddr::new(
        rtcp_ip.unwrap_or(ip),
        rtcp_port.unwrap_or(port.wrapping_add(1)),
    );
    Some(Endpoint {
        rtp: SocketAddr::new(ip, port),
        rtcp,
    })
}

/// Whether a description has its party sending and receiving audio (RFC 3264 §5.1:
/// `a=sendrecv`, the default), or holds the call: `a=sendonly`, `a=recvonly` or `a=inactive`
/// for the first audio stream (its own attribute, else the session's), or the RFC 2543 hold
/// address `c=0.0.0.0`. During a hold one side or both send nothing, by design.
pub fn holds(sdp: &str) -> bool {
    // Some(whether it holds) for a direction attribute, None for any other line.
    let direction = |l: &str| match l {
        "a=sendrecv" => Some(false),
        "a=sendonly" | "a=recvonly" | "a=inactive" => Some(true),
        _ => None,
    };
    let mut session_level: Option<bool> = None;
    let mut in_audio = false;
    let mut seen_audio = false;
    let mut seen_media = false;
    let mut media_level: Option<bool> = None;
    let mut zero_address = false;
    for line in lines(sdp) {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            if seen_audio {
                break;
            }
            seen_media = true;
            in_audio = active_audio(m);
            seen_audio |= in_audio;
            continue;
        }
        // The session level, and the audio stream; not the streams before it.
        if !seen_media || in_audio {
            if let Some(c) = line.strip_prefix("c=") {
                zero_address = connection_ip(c).is_some_and(|ip| ip.is_unspecified());
            }
            if let Some(held) = direction(line) {
                if in_audio {
                    media_level = Some(held);
                } else {
                    session_level = Some(held);
                }
            }
        }
    }
    zero_address || media_level.or(session_level).unwrap_or(false)
}

/// `sdp` with its first audio stream pointed at `rtp` (and RTCP at `rtp`'s port + 1): the
/// audio stream's connection address and port, the session-level connection and the `o=`
/// address become ours, an `a=rtcp` line of the audio stream is dropped (our RTCP port is the
/// implicit one). Other streams keep the address they had (given their own `c=` line when they
/// relied on the session-level one), and every other line stays as it was. `None` when there is
/// no audio stream to anchor.
pub fn anchor(sdp: &str, rtp: SocketAddr) -> Option<String> {
    audio_endpoint(sdp)?;
    let (ip, port) = (rtp.ip(), rtp.port());
    let family = if ip.is_ipv4() { "IP4" } else { "IP6" };
    // Rendered by hand, not with `format!`: this runs twice per call, on every offer and answer.
    let mut ip_text = String::with_capacity(40);
    push_ip(&mut ip_text, ip);
    let ip_text = ip_text.as_str();
    let ours = ["c=IN ", family, " ", ip_text].concat();
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let all: Vec<&str> = lines(sdp).collect();

    // Which media sections have a c= line of their own, and the session-level one.
    let mut own_c = Vec::new(); // per m= section, in order
    let mut session_c: Option<&str> = None;
    for l in &all {
        if l.starts_with("m=") {
            own_c.push(false);
        } else if l.starts_with("c=") {
            match own_c.last_mut() {
                Some(has) => *has = true,
                None => session_c = Some(l),
            }
        }
    }

    let mut out = String::with_capacity(sdp.len() + 32);
    let mut section: Option<usize> = None;
    let mut audio: Option<usize> = None;
    for l in all {
        if let Some(m) = l.strip_prefix("m=") {
            let n = section.map_or(0, |s| s + 1);
            section = Some(n);
            let has_own = own_c.get(n).copied().unwrap_or(false);
            if audio.is_none() && active_audio(m) {
                audio = Some(n);
                let tail = m.splitn(3, ' ').nth(2).unwrap_or("");
                out.push_str("m=audio ");
                push_decimal(&mut out, u64::from(port));
                out.push(' ');
                push(&mut out, tail, eol);
                if !has_own && session_c.is_none() {
                    push(&mut out, &ours, eol);
                }
            } else {
                push(&mut out, l, eol);
                // It relied on the session-level address, which is ours now; a refused stream
                // (port 0) goes nowhere and may inherit ours.
                if let (false, Some(c), false) = (has_own, session_c, refused(m)) {
                    push(&mut out, c, eol);
                }
            }
            continue;
        }
        let in_audio = section.is_some() && section == audio;
        if l.starts_with("c=") && (section.is_none() || in_audio) {
            push(&mut out, &ours, eol);
        } else if l.starts_with("a=rtcp:") && in_audio {
            // Dropped: our RTCP is on the next port.
        } else if let Some(o) = l.strip_prefix("o=") {
            // o=<user> <sess-id> <version> IN IP4 <addr>: informational, but some phones
            // check it, and ours is the right one now.
            let f: Vec<&str> = o.split(' ').collect();
            if f.len() == 6 {
                for part in [
                    "o=", f[0], " ", f[1], " ", f[2], " IN ", family, " ", ip_text,
                ] {
                    out.push_str(part);
                }
                out.push_str(eol);
            } else {
                push(&mut out, l, eol);
            }
        } else {
            push(&mut out, l, eol);
        }
    }
    Some(out)
}

/// The payload types of the first audio stream, in the order of preference given.
pub fn audio_formats(sdp: &str) -> Vec<u8> {
    audio_m_line(sdp)
        .map(|m| {
            m.split(' ')
                .skip(2)
                .filter_map(|f| f.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the audio stream is SRTP: an `RTP/SAVP`-family profile (`RTP/SAVPF`,
/// `UDP/TLS/RTP/SAVP…` too), or keys for it (`a=crypto`, RFC 4568, offered "best effort" on
/// `RTP/AVP` as RFC 8643 describes; `a=fingerprint` for DTLS-SRTP, on the stream or the
/// session). Its payloads are encrypted end to end, so the relay passes them on but cannot
/// convert them.
pub fn audio_encrypted(sdp: &str) -> bool {
    if audio_m_line(sdp)
        .and_then(|m| m.split(' ').nth(1))
        .is_some_and(|proto| proto.contains("SAVP"))
    {
        return true;
    }
    let mut seen_media = false;
    let mut in_audio = false;
    for l in lines(sdp) {
        if let Some(m) = l.strip_prefix("m=") {
            if in_audio {
                break;
            }
            seen_media = true;
            in_audio = active_audio(m);
        } else if (!seen_media || in_audio)
            && (l.starts_with("a=crypto:") || l.starts_with("a=fingerprint:"))
        {
            return true;
        }
    }
    false
}

/// Whether an `m=` line (without `m=`) is a refused or disabled stream: port 0.
fn refused(m: &str) -> bool {
    // `<media> <port>[/<count>] ...`: the port field is exactly `0`. Looked at as bytes, as
    // every stream of every description passes through here several times per call.
    let b = m.as_bytes();
    let Some(port) = memchr::memchr(b' ', b).and_then(|sp| b.get(sp + 1..)) else {
        return false;
    };
    port.first() == Some(&b'0') && matches!(port.get(1), None | Some(b' ' | b'/'))
}

/// Whether an `m=` line (without `m=`) is an audio stream in use.
fn active_audio(m: &str) -> bool {
    m.starts_with("audio ") && !refused(m)
}

/// The first audio stream in use's `m=` line, without `m=audio `.
fn audio_m_line(sdp: &str) -> Option<&str> {
    lines(sdp)
        .filter_map(|l| l.strip_prefix("m="))
        .find(|m| active_audio(m))
        .and_then(|m| m.strip_prefix("audio "))
}

/// RTP payload types of G.711 (RFC 3551).
pub const PCMU: u8 = 0;
pub const PCMA: u8 = 8;

fn g711_name(pt: u8) -> &'static str {
    if pt == PCMA {
        "PCMA/8000"
    } else {
        "PCMU/8000"
    }
}

/// An offer that also lists the other G.711 law when it lists only one of them, so that a
/// callee that speaks only the other one can still be reached: we transcode between the two.
pub fn offer_both_g711(sdp: &str) -> String {
    if audio_encrypted(sdp) {
        // We could not transcode what the callee would send: offer only what the caller can
        // take as it is.
        return sdp.to_owned();
    }
    let formats = audio_formats(sdp);
    let extra = match (formats.contains(&PCMU), formats.contains(&PCMA)) {
        (true, false) => PCMA,
        (false, true) => PCMU,
        _ => return sdp.to_owned(),
    };
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let rtpmap = format!("a=rtpmap:{extra} {}", g711_name(extra));
    let mut out = String::with_capacity(sdp.len() + 32);
    let mut done = false;
    // The new rtpmap goes before the stream's first attribute (or the next stream): RFC 4566
    // puts a stream's i=, c=, b= and k= lines before its a= lines.
    let mut pending = false;
    for l in lines(sdp) {
        if pending && (l.starts_with("a=") || l.starts_with("m=")) {
            push(&mut out, &rtpmap, eol);
            pending = false;
        }
        if !done && l.strip_prefix("m=").is_some_and(active_audio) {
            push(&mut out, &format!("{l} {extra}"), eol);
            done = true;
            pending = true;
        } else {
            push(&mut out, l, eol);
        }
    }
    if pending {
        push(&mut out, &rtpmap, eol);
    }
    out
}

/// `sdp` with G.711 payload type `from` on the first audio stream replaced by `to` (the
/// format list and its `a=rtpmap`): how an answer in one law is shown to a party that offered
/// only the other.
pub fn swap_g711(sdp: &str, from: u8, to: u8) -> String {
    let eol = if sdp.contains("\r\n") { "\r\n" } else { "\n" };
    let mut out = String::with_capacity(sdp.len());
    let mut section = 0usize;
    let mut audio: Option<usize> = None;
    let mut had_to = false;
    for l in lines(sdp) {
        if let Some(m) = l.strip_prefix("m=") {
            section += 1;
            if audio.is_none() && active_audio(m) {
                audio = Some(section);
                let mut f: Vec<String> = m.split(' ').map(str::to_owned).collect();
                let pt = |x: &String| x.parse::<u8>().ok();
                had_to = f.iter().skip(3).any(|x| pt(x) == Some(to));
                let mut kept = Vec::with_capacity(f.len());
                for (i, x) in f.drain(..).enumerate() {
                    match (i >= 3, pt(&x)) {
                        // Listed already: the other law just goes (no `0 0`).
                        (true, Some(p)) if p == from && had_to => {}
                        (true, Some(p)) if p == from => kept.push(to.to_string()),
                        _ => kept.push(x),
                    }
                }
                push(&mut out, &format!("m={}", kept.join(" ")), eol);
                continue;
            }
        } else if Some(section) == audio
            && l.strip_prefix("a=rtpmap:")
                .and_then(|r| r.split(' ').next())
                .and_then(|p| p.parse::<u8>().ok())
                == Some(from)
        {
            if !had_to {
                push(&mut out, &format!("a=rtpmap:{to} {}", g711_name(to)), eol);
            }
            continue;
        }
        push(&mut out, l, eol);
    }
    out
}

fn push(out: &mut String, line: &str, eol: &str) {
    out.push_str(line);
    out.push_str(eol);
}

/// The description's non-empty lines, CRLF or bare LF ended. Split with `memchr`: the
/// anchoring of a call goes over its two descriptions some twenty times, and `str::split` with a
/// `char` was a third of that.
fn lines(sdp: &str) -> impl Iterator<Item = &str> {
    let mut rest = sdp;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        // '\n' is ASCII, so both sides of it are on character boundaries.
        let (line, tail) = match memchr::memchr(b'\n', rest.as_bytes()) {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i + 1..).unwrap_or("")),
            None => (rest, ""),
        };
        rest = tail;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if !line.is_empty() {
            return Some(line);
        }
    })
}

/// `IN IP4 192.0.2.1` (possibly with a TTL `/127`) → the address.
fn connection_ip(c: &str) -> Option<IpAddr> {
    let (net, rest) = split_once_byte(c, b' ')?;
    if net != "IN" {
        return None;
    }
    let (_family, rest) = split_once_byte(rest, b' ')?;
    let end = rest.bytes().position(|b| b == b' ' || b == b'/');
    rest.get(..end.unwrap_or(rest.len()))?.parse().ok()
}

#[cfg(test)]
mod tests {

    #[test]
    fn refused_streams_and_lines() {
        for (m, want) in [
            ("audio 0 RTP/AVP 0", true),
            ("audio 0/2 RTP/AVP 0", true),
            ("audio 0", true),
            ("audio 10 RTP/AVP 0", false),
            ("audio 4000/2 RTP/AVP 0", false),
            ("audio  0 RTP/AVP 0", false),
            ("audio", false),
        ] {
            assert_eq!(refused(m), want, "{m}");
        }
        let got: Vec<&str> = lines("v=0\r\n\r\ns=-\nt=0 0\r\n\nm=audio 1 RTP/AVP 0").collect();
        assert_eq!(got, ["v=0", "s=-", "t=0 0", "m=audio 1 RTP/AVP 0"]);
        assert_eq!(lines("").count(), 0);
        let ip = |c: &str| connection_ip(c).map(|ip| ip.to_string());
        assert_eq!(ip("IN IP4 192.0.2.1").as_deref(), Some("192.0.2.1"));
        assert_eq!(ip("IN IP4 224.2.1.1/127/3").as_deref(), Some("224.2.1.1"));
        assert_eq!(ip("IN IP6 2001:db8::1 x").as_deref(), Some("2001:db8::1"));
        assert_eq!(ip("IN IP4"), None);
        assert_eq!(ip("ATM NSAP 1.2.3.4"), None);
        assert_eq!(lines("\r\n\n").count(), 0);
    }

    #[test]
    fn g711_edits_keep_sdp_well_formed() {
        // The added rtpmap comes after the stream's c= line, before its attributes.
        let offer = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nt=0 0\r\n\
                     m=audio 4000 RTP/AVP 0\r\nc=IN IP4 10.0.0.1\r\na=rtpmap:0 PCMU/8000\r\n";
        let both = offer_both_g711(offer);
        assert!(
            both.contains(
                "m=audio 4000 RTP/AVP 0 8\r\nc=IN IP4 10.0.0.1\r\na=rtpmap:8 PCMA/8000\r\n"
            ),
            "{both}"
        );
        // An answer listing both laws, shown to a party that offered only PCMU: no `0 0`.
        let answer = "v=0\r\no=b 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
                      m=audio 5000 RTP/AVP 8 0\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n";
        let swapped = swap_g711(answer, PCMA, PCMU);
        assert!(swapped.contains("m=audio 5000 RTP/AVP 0\r\n"), "{swapped}");
        assert_eq!(swapped.matches("a=rtpmap:0 ").count(), 1, "{swapped}");
        assert!(!swapped.contains("PCMA"), "{swapped}");
    }

    #[test]
    fn a_video_streams_address_is_not_the_audios() {
        let sdp = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
                   m=video 5000 RTP/AVP 96\r\nc=IN IP4 10.0.0.9\r\n\
                   m=audio 4000 RTP/AVP 0\r\n";
        let ep = audio_endpoint(sdp).expect("audio");
        assert_eq!(ep.rtp, "10.0.0.1:4000".parse().unwrap());
    }

    /// An answer to a "best effort" offer of SRTP and RTP as two streams: the SRTP one refused
    /// (port 0) comes first. The stream in use is the second: it is the one anchored, looked at
    /// for codecs, hold and encryption; the refused one stays refused.
    #[test]
    fn a_refused_audio_stream_is_passed_over() {
        let sdp = "v=0\r\no=b 1 1 IN IP4 10.0.0.2\r\ns=-\r\nc=IN IP4 10.0.0.2\r\nt=0 0\r\n\
                   m=audio 0 RTP/SAVP 8\r\na=inactive\r\n\
                   m=audio 5000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let ep = audio_endpoint(sdp).expect("the second stream");
        assert_eq!(ep.rtp, "10.0.0.2:5000".parse().unwrap());
        assert_eq!(audio_formats(sdp), vec![0]);
        assert!(!audio_encrypted(sdp));
        assert!(!holds(sdp), "the refused stream's a=inactive is its own");
        let out = anchor(sdp, addr("192.0.2.9:30000")).unwrap();
        assert!(out.contains("m=audio 0 RTP/SAVP 8\r\n"), "{out}");
        assert!(out.contains("m=audio 30000 RTP/AVP 0\r\n"), "{out}");
        assert!(!out.contains("10.0.0.2"), "{out}");
        let offer = offer_both_g711(sdp);
        assert!(offer.contains("m=audio 0 RTP/SAVP 8\r\n"), "{offer}");
        assert!(offer.contains("m=audio 5000 RTP/AVP 0 8\r\n"), "{offer}");
        let swapped = swap_g711(&offer, PCMA, PCMU);
        assert!(swapped.contains("m=audio 0 RTP/SAVP 8\r\n"), "{swapped}");
    }

    #[test]
    fn hold_is_told_from_the_direction_attributes_and_the_zero_address() {
        let base = "v=0\r\no=a 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n";
        let audio = "m=audio 4000 RTP/AVP 0\r\n";
        assert!(!holds(&format!("{base}{audio}")));
        assert!(!holds(&format!("{base}{audio}a=sendrecv\r\n")));
        for attr in ["a=sendonly", "a=recvonly", "a=inactive"] {
            assert!(holds(&format!("{base}{audio}{attr}\r\n")), "{attr}");
            // Session level, unless the stream says otherwise.
            assert!(holds(&format!("{base}{attr}\r\n{audio}")), "{attr}");
            assert!(!holds(&format!("{base}{attr}\r\n{audio}a=sendrecv\r\n")));
        }
        // Only the audio stream counts.
        assert!(!holds(&format!(
            "{base}{audio}m=video 5000 RTP/AVP 96\r\na=inactive\r\n"
        )));
        // RFC 2543 hold.
        let zero = base.replace("c=IN IP4 10.0.0.1", "c=IN IP4 0.0.0.0");
        assert!(holds(&format!("{zero}{audio}")));
    }
    use super::*;

    const OFFER: &str = "v=0\r\no=alice 2890844526 2890844526 IN IP4 10.0.0.1\r\ns=-\r\n\
c=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 49170 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n";

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn finds_the_audio_endpoint() {
        let e = audio_endpoint(OFFER).unwrap();
        assert_eq!(e.rtp, addr("10.0.0.1:49170"));
        assert_eq!(e.rtcp, addr("10.0.0.1:49171"));
    }

    #[test]
    fn media_level_connection_and_rtcp_attribute_win() {
        let sdp = "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nc=IN IP4 10.0.0.1\nt=0 0\n\
m=video 5000 RTP/AVP 96\nc=IN IP4 10.9.9.9\nm=audio 6000 RTP/AVP 0\nc=IN IP4 10.0.0.7\n\
a=rtcp:6100 IN IP4 10.0.0.8\n";
        let e = audio_endpoint(sdp).unwrap();
        assert_eq!(e.rtp, addr("10.0.0.7:6000"));
        assert_eq!(e.rtcp, addr("10.0.0.8:6100"));
    }

    #[test]
    fn no_usable_audio_is_none() {
        assert!(audio_endpoint("v=0\nc=IN IP4 10.0.0.1\nm=video 5000 RTP/AVP 96\n").is_none());
        assert!(audio_endpoint("v=0\nc=IN IP4 10.0.0.1\nm=audio 0 RTP/AVP 0\n").is_none());
        assert!(audio_endpoint("v=0\nm=audio 5000 RTP/AVP 0\n").is_none());
        assert!(anchor("v=0\nm=video 5000 RTP/AVP 96\n", addr("192.0.2.1:20000")).is_none());
        assert!(audio_endpoint("").is_none());
    }

    #[test]
    fn anchoring_points_audio_at_us_and_keeps_the_rest() {
        let out = anchor(OFFER, addr("192.0.2.9:20000")).unwrap();
        assert_eq!(
            audio_endpoint(&out).unwrap().rtp,
            addr("192.0.2.9:20000"),
            "{out}"
        );
        assert!(out.contains("o=alice 2890844526 2890844526 IN IP4 192.0.2.9\r\n"));
        assert!(out.contains("m=audio 20000 RTP/AVP 0 8 101\r\n"));
        for kept in [
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=sendrecv",
            "t=0 0",
        ] {
            assert!(out.contains(kept), "{kept} lost: {out}");
        }
        assert!(!out.contains("10.0.0.1"), "{out}");
        assert!(out.ends_with("\r\n"));
    }

    #[test]
    fn other_streams_keep_their_addresses() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\na=rtcp:6001\r\nm=video 7000 RTP/AVP 96\r\n";
        let out = anchor(sdp, addr("192.0.2.9:30000")).unwrap();
        let e = audio_endpoint(&out).unwrap();
        assert_eq!(e.rtp, addr("192.0.2.9:30000"));
        assert_eq!(e.rtcp, addr("192.0.2.9:30001"));
        // The video stream still resolves to the session-level address.
        assert!(out.contains("c=IN IP4 10.0.0.1\r\n"));
        assert!(out.contains("m=video 7000 RTP/AVP 96\r\n"));
        assert!(!out.contains("a=rtcp:6001"));
    }

    #[test]
    fn one_connection_line_for_the_audio_stream() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
m=audio 6000 RTP/AVP 0\r\nc=IN IP4 10.0.0.2\r\n";
        let out = anchor(sdp, addr("192.0.2.9:30000")).unwrap();
        let media_section = out.split("m=audio").nth(1).unwrap();
        assert_eq!(media_section.matches("c=").count(), 1, "{out}");
        assert!(media_section.contains("c=IN IP4 192.0.2.9"), "{out}");
        assert!(!out.contains("10.0.0.2"), "{out}");
    }

    #[test]
    fn g711_alternatives() {
        let only_u = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 4000 RTP/AVP 0 101\r\n\
a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        assert_eq!(audio_formats(only_u), vec![0, 101]);
        let offer = offer_both_g711(only_u);
        assert_eq!(audio_formats(&offer), vec![0, 101, 8]);
        assert!(offer.contains("a=rtpmap:8 PCMA/8000\r\n"), "{offer}");
        // Both already there, or neither: unchanged.
        let both = only_u.replace(" 0 101", " 0 8 101");
        assert_eq!(offer_both_g711(&both), both);
        // SRTP: encrypted payloads cannot be transcoded, so nothing is added.
        let srtp = only_u.replace("RTP/AVP", "RTP/SAVP");
        assert!(audio_encrypted(&srtp) && !audio_encrypted(only_u));
        assert!(audio_encrypted(
            &only_u.replace("RTP/AVP", "UDP/TLS/RTP/SAVPF")
        ));
        assert_eq!(offer_both_g711(&srtp), srtp);
        // Keys offered on RTP/AVP (best-effort SDES) or a DTLS fingerprint: encrypted too.
        let sdes = format!("{only_u}a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n");
        assert!(audio_encrypted(&sdes));
        assert_eq!(offer_both_g711(&sdes), sdes);
        let dtls = only_u.replace("m=audio", "a=fingerprint:sha-256 AB:CD\r\nm=audio");
        assert!(audio_encrypted(&dtls));

        let answer_a = "v=0\r\nc=IN IP4 10.0.0.2\r\nm=audio 5000 RTP/AVP 8 101\r\n\
a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n";
        let shown = swap_g711(answer_a, PCMA, PCMU);
        assert_eq!(audio_formats(&shown), vec![0, 101]);
        assert!(shown.contains("a=rtpmap:0 PCMU/8000"), "{shown}");
        assert!(!shown.contains("PCMA"), "{shown}");
        assert!(shown.contains("a=rtpmap:101 telephone-event/8000"));
    }

    #[test]
    fn ipv6_is_written_as_ip6() {
        let out = anchor(OFFER, addr("[2001:db8::9]:20000")).unwrap();
        assert!(out.contains("c=IN IP6 2001:db8::9\r\n"), "{out}");
        assert_eq!(
            audio_endpoint(&out).unwrap().rtp,
            addr("[2001:db8::9]:20000")
        );
    }
}

//! STUN keep-alives on SIP's UDP ports (RFC 5626 §4.4.2 and §8.4): a phone using SIP outbound
//! sends STUN Binding requests (RFC 5389) over the same flow as its SIP, both to keep its NAT
//! binding open and to learn whether its public address changed. We answer each with the
//! address it came from (XOR-MAPPED-ADDRESS) and a FINGERPRINT, which tells the response from
//! SIP on a shared port (§7.2.1 of RFC 5389).
//!
//! Sans-IO: the endpoint hands over a datagram and its source and sends what comes back. Only
//! what a keep-alive needs is here: no authentication, no other methods, no TURN. A datagram
//! that only looks like STUN is dropped (never answered with SIP). A request of RFC 3489's
//! classic STUN (no magic cookie; PJSIP still sends them to learn its transport's address) gets
//! MAPPED-ADDRESS as RFC 5389 §12.2 has it.
//!
//! Owns: STUN framing. Must not touch: sockets, SIP parsing.
//!
//! Written by hand: the whole of it is a header check and two attributes, less than a crate's
//! interface would take to describe.

use std::net::{IpAddr, SocketAddr};

/// RFC 5389 §6: the fixed value in every STUN message, which SIP text never has there.
const MAGIC_COOKIE: u32 = 0x2112_A442;
const HEADER_LEN: usize = 20;
const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const MAPPED_ADDRESS: u16 = 0x0001;
const XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT: u16 = 0x8028;
/// §15.5: the CRC-32 is XOR-ed with this ("STUN").
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// Whether `datagram` is framed as a STUN message (§6: the two top bits zero, a length that is
/// the rest of the datagram and a multiple of four; the magic cookie too, unless classic STUN).
/// SIP starts with a letter, so it never is.
pub fn is_stun(datagram: &[u8]) -> bool {
    if datagram.len() < HEADER_LEN || datagram[0] & 0xC0 != 0 {
        return false;
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    length % 4 == 0 && HEADER_LEN + length == datagram.len()
}

fn has_cookie(datagram: &[u8]) -> bool {
    u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]) == MAGIC_COOKIE
}

/// The Binding success response to `datagram` when it is a Binding request from `from`; `None`
/// for anything else (other STUN methods, responses, indications).
pub fn binding_response(datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    if !is_stun(datagram) || u16::from_be_bytes([datagram[0], datagram[1]]) != BINDING_REQUEST {
        return None;
    }
    if !has_cookie(datagram) {
        return Some(classic_response(datagram, from));
    }
    let transaction = &datagram[8..HEADER_LEN];
    let mut out = Vec::with_capacity(HEADER_LEN + 24 + 8);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&[0, 0]); // the length, once known
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(transaction);

    // §15.2: the port XOR-ed with the cookie's top half, the address with the cookie (and,
    // for IPv6, the transaction id after it).
    let port = from.port() ^ (MAGIC_COOKIE >> 16) as u16;
    let (family, address): (u8, Vec<u8>) = match from.ip() {
        IpAddr::V4(a) => (0x01, xor(&a.octets(), &MAGIC_COOKIE.to_be_bytes())),
        IpAddr::V6(a) => {
            let mut key = MAGIC_COOKIE.to_be_bytes().to_vec();
            key.extend_from_slice(transaction);
            (0x02, xor(&a.octets(), &key))
        }
    };
    out.extend_from_slice(&XOR_MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(4 + address.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&address);

    // §15.5: the length counts the FINGERPRINT before its CRC is taken.
    let length = (out.len() - HEADER_LEN + 8) as u16;
    out[2..4].copy_from_slice(&length.to_be_bytes());
    let crc = crc32(&out) ^ FINGERPRINT_XOR;
    out.extend_from_slice(&FINGERPRINT.to_be_bytes());
    out.extend_from_slice(&4u16.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    Some(out)
}

/// RFC 3489 §11.2.1: the 16-byte transaction id copied, the source in MAPPED-ADDRESS as it is.
fn classic_response(request: &[u8], from: SocketAddr) -> Vec<u8> {
    let (family, address) = match from.ip() {
        IpAddr::V4(a) => (0x01, a.octets().to_vec()),
        IpAddr::V6(a) => (0x02, a.octets().to_vec()),
    };
    let mut out = Vec::with_capacity(HEADER_LEN + 24);
    out.extend_from_slice(&BINDING_SUCCESS.to_be_bytes());
    out.extend_from_slice(&(8 + address.len() as u16).to_be_bytes());
    out.extend_from_slice(&request[4..HEADER_LEN]);
    out.extend_from_slice(&MAPPED_ADDRESS.to_be_bytes());
    out.extend_from_slice(&(4 + address.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, family]);
    out.extend_from_slice(&from.port().to_be_bytes());
    out.extend_from_slice(&address);
    out
}

fn xor(bytes: &[u8], key: &[u8]) -> Vec<u8> {
    bytes.iter().zip(key).map(|(b, k)| b ^ k).collect()
}

/// CRC-32 as ISO 3309 and ITU-T V.42 define it (the one zlib and Ethernet use), bit by bit: it
/// runs over fifty bytes per keep-alive.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5769 §2.1's sample request, without its attributes (a bare keep-alive).
    fn request() -> Vec<u8> {
        let mut m = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
        m.extend_from_slice(&[
            0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
        ]);
        m
    }

    #[test]
    fn crc32_is_the_iso_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_binding_request_gets_the_address_it_came_from_rfc_5769() {
        // RFC 5769 §2.2's sample response maps 192.0.2.1:32853 to exactly these bytes.
        let r = binding_response(&request(), "192.0.2.1:32853".parse().unwrap()).unwrap();
        assert!(is_stun(&r));
        assert_eq!(&r[0..2], &[0x01, 0x01]);
        assert_eq!(&r[8..20], &request()[8..20]);
        assert_eq!(
            &r[20..32],
            &[0x00, 0x20, 0x00, 0x08, 0x00, 0x01, 0xa1, 0x47, 0xe1, 0x12, 0xa6, 0x43]
        );
        // FINGERPRINT over everything before it, with the length already counting it.
        let (body, fp) = r.split_at(r.len() - 8);
        assert_eq!(&fp[0..4], &[0x80, 0x28, 0x00, 0x04]);
        let crc = u32::from_be_bytes([fp[4], fp[5], fp[6], fp[7]]);
        assert_eq!(crc, crc32(body) ^ FINGERPRINT_XOR);
    }

    #[test]
    fn ipv6_is_xored_with_the_transaction_too_rfc_5769() {
        // RFC 5769 §2.3: 2001:db8:1234:5678:11:2233:4455:6677 port 32853.
        let from = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
            .parse()
            .unwrap();
        let r = binding_response(&request(), from).unwrap();
        assert_eq!(
            &r[20..44],
            &[
                0x00, 0x20, 0x00, 0x14, 0x00, 0x02, 0xa1, 0x47, 0x01, 0x13, 0xa9, 0xfa, 0xa5, 0xd3,
                0xf1, 0x79, 0xbc, 0x25, 0xf4, 0xb5, 0xbe, 0xd2, 0xb9, 0xd9
            ]
        );
    }

    #[test]
    fn sip_and_other_stun_are_not_answered() {
        let from: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        assert!(!is_stun(b"OPTIONS sip:a@b SIP/2.0\r\n\r\n"));
        assert!(!is_stun(b"\r\n\r\n"));
        let mut response = request();
        response[1] = 0x01;
        response[0] = 0x01;
        assert!(binding_response(&response, from).is_none());
        let mut truncated = request();
        truncated[3] = 4;
        assert!(!is_stun(&truncated));
    }

    #[test]
    fn a_classic_rfc_3489_request_gets_mapped_address() {
        let mut classic = request();
        classic[4] = 0x55; // no magic cookie: the transaction id is 16 bytes
        let r = binding_response(&classic, "192.0.2.1:32853".parse().unwrap()).unwrap();
        assert_eq!(&r[0..4], &[0x01, 0x01, 0x00, 0x0c]);
        assert_eq!(&r[4..20], &classic[4..20]);
        assert_eq!(
            &r[20..32],
            &[0x00, 0x01, 0x00, 0x08, 0x00, 0x01, 0x80, 0x55, 192, 0, 2, 1]
        );
    }
}

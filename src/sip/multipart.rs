//! Multipart message bodies (RFC 5621, framed as RFC 2046 §5.1 says): finding one part, such as
//! the session description beside an ISUP part of a SIP-I trunk, so that it can be read or
//! rewritten in place while every other byte of the body stays as it was.
//!
//! Owns the delimiter rules and the part headers' `Content-Type`. Must not touch what a part
//! means (SDP is `media::sdp`'s), nor the message's own headers.

use std::ops::Range;

/// Where in `body` the content of the first part of type `wanted` (`application/sdp`) lies,
/// when `content_type`, the message's, is `multipart/…` with a boundary. `None` otherwise, or
/// when the body is not framed by that boundary.
pub fn part(body: &[u8], content_type: &str, wanted: &str) -> Option<Range<usize>> {
    let boundary = boundary(content_type)?;
    let delimiter = [b"--", boundary.as_bytes()].concat();
    // Delimiters begin a line: the body's first, or one after a CRLF (which belongs to the
    // delimiter, not to the part before it).
    let mut starts = Vec::new();
    if body.starts_with(&delimiter) {
        starts.push((0, 0));
    }
    let line_delimiter = [b"\r\n".as_slice(), &delimiter].concat();
    let mut from = 0;
    while let Some(at) = memchr::memmem::find(body.get(from..)?, &line_delimiter) {
        starts.push((from + at, from + at + 2));
        from += at + line_delimiter.len();
    }
    for pair in starts.windows(2) {
        let (_, this) = pair[0];
        let (next_crlf, _) = pair[1];
        // The delimiter line: `--boundary`, optional white space, CRLF. The final one has
        // `--` after the boundary and starts no part.
        let after = this + delimiter.len();
        if body.get(after..after + 2) == Some(b"--") {
            return None;
        }
        // A part that is not well formed is passed over, not the end of the search.
        let Some(line_end) = body
            .get(after..next_crlf)
            .and_then(|l| memchr::memmem::find(l, b"\r\n"))
            .map(|at| after + at)
        else {
            continue;
        };
        let Some(part) = body.get(line_end + 2..next_crlf) else {
            continue;
        };
        // Part headers, an empty line, the content (no headers at all: text/plain).
        let (headers, content_at) = if part.starts_with(b"\r\n") {
            (&part[..0], 2)
        } else {
            match memchr::memmem::find(part, b"\r\n\r\n") {
                Some(end) => (&part[..end], end + 4),
                None => continue,
            }
        };
        let Ok(headers) = std::str::from_utf8(headers) else {
            continue;
        };
        let is_wanted = headers.split("\r\n").any(|line| {
            line.split_once(':').is_some_and(|(name, value)| {
                name.trim().eq_ignore_ascii_case("content-type")
                    && media_type(value).eq_ignore_ascii_case(wanted)
            })
        });
        if is_wanted {
            let start = line_end + 2 + content_at;
            return Some(start..next_crlf.max(start));
        }
    }
    None
}

/// `type/subtype` of a Content-Type value, without parameters.
fn media_type(value: &str) -> &str {
    value.split(';').next().unwrap_or("").trim()
}

/// The `boundary` parameter of a `multipart/…` Content-Type, unquoted.
fn boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let kind = params.next()?.trim();
    if !kind
        .get(..10)
        .is_some_and(|k| k.eq_ignore_ascii_case("multipart/"))
    {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        (!value.is_empty() && value.len() <= 70).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SIP-I: an INVITE's body with the offer and an ISUP IAM (RFC 3204), as ITSPs send it.
    const BODY: &str = "--unique-boundary-1\r\n\
        Content-Type: application/sdp\r\n\
        \r\n\
        v=0\r\nc=IN IP4 192.0.2.4\r\nm=audio 5004 RTP/AVP 8\r\n\
        \r\n--unique-boundary-1\r\n\
        Content-Type: application/ISUP; version=itu-t92+\r\n\
        Content-Disposition: signal; handling=optional\r\n\
        \r\n\
        \x01\x00\x49\x00\x00\x03\x02\x00\x07\x04\x10\x00\x33\x63\x21\x43\x00\x00\x03\r\n\
        --unique-boundary-1--\r\n";
    const CT: &str = "multipart/mixed; boundary=unique-boundary-1";

    #[test]
    fn finds_the_session_description_among_the_parts() {
        let r = part(BODY.as_bytes(), CT, "application/sdp").expect("the SDP part");
        assert_eq!(
            &BODY[r],
            "v=0\r\nc=IN IP4 192.0.2.4\r\nm=audio 5004 RTP/AVP 8\r\n"
        );
        // The other part by its type, whatever the case and parameters.
        let r = part(BODY.as_bytes(), CT, "application/isup").expect("the ISUP part");
        assert!(BODY[r].starts_with('\x01'));
        // Quoted boundary, upper-case type.
        let ct = "Multipart/Mixed;boundary=\"unique-boundary-1\"";
        assert!(part(BODY.as_bytes(), ct, "application/sdp").is_some());
    }

    #[test]
    fn anything_else_is_not_a_part() {
        assert!(part(BODY.as_bytes(), "application/sdp", "application/sdp").is_none());
        assert!(part(BODY.as_bytes(), "multipart/mixed", "application/sdp").is_none());
        let other = "multipart/mixed; boundary=other";
        assert!(part(BODY.as_bytes(), other, "application/sdp").is_none());
        assert!(part(BODY.as_bytes(), CT, "text/plain").is_none());
        // Cut short: no closing delimiter after the part, so its end is unknown.
        let cut = &BODY.as_bytes()[..40];
        assert!(part(cut, CT, "application/sdp").is_none());
    }

    /// A part before it that is not well formed (no blank line after its headers, headers not
    /// UTF-8) does not hide the session description.
    #[test]
    fn a_malformed_part_before_is_passed_over() {
        let body = [
            b"--b\r\nContent-Type: text/plain\r\nno blank line\r\n".as_slice(),
            b"--b\r\nX-Bin: \xff\xfe\r\n\r\nbinary\r\n",
            b"--b\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\r\n--b--\r\n",
        ]
        .concat();
        let r = part(&body, "multipart/mixed; boundary=b", "application/sdp").expect("found");
        assert_eq!(&body[r], b"v=0\r\n");
    }
}

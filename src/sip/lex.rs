//! Lexical building blocks shared by the URI and header grammars (RFC 3261
//! §25.1): character classes, quoted strings, percent escapes, unfolding and
//! quote/angle-aware list splitting.
//!
//! Hand-written rather than taken from a SIP crate: `rsip`, the obvious
//! candidate, is unmaintained and gets compact forms, folded lines, IPv6 Via
//! hosts and `tel:` URIs wrong, and every other module here leans on these
//! few primitives being exactly right.

use std::borrow::Cow;

use smol_str::SmolStr;

/// `token` characters (RFC 3261 §25.1).
const fn token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.' | b'!' | b'%' | b'*' | b'_' | b'+' | b'`' | b'\'' | b'~'
        )
}

/// [`token_char`] for every byte: one load per byte in the scans that run over every header
/// name, parameter and auth-param of every message, instead of a chain of comparisons.
static TOKEN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = token_char(b as u8);
        b += 1;
    }
    t
};

/// `token` characters (RFC 3261 §25.1).
#[inline]
pub(crate) fn is_token(b: u8) -> bool {
    TOKEN[usize::from(b)]
}

pub(crate) fn is_token_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token)
}

/// `unreserved` = alphanum / mark.
pub(crate) fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'\'' | b'(' | b')'
        )
}

pub(crate) fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub(crate) fn trim_ws(s: &str) -> &str {
    let s = trim_ws_start(s);
    let end = s.len() - s.bytes().rev().take_while(|&b| is_ws(b)).count();
    // Only ASCII bytes were cut, so `end` is a char boundary.
    s.get(..end).unwrap_or(s)
}

pub(crate) fn trim_ws_start(s: &str) -> &str {
    s.get(span(s, is_ws)..).unwrap_or(s)
}

/// Length of the leading run of ASCII bytes satisfying `pred`. Stopping at
/// the first non-ASCII byte keeps every split on a char boundary whatever
/// the predicate says.
pub(crate) fn span(s: &str, pred: impl Fn(u8) -> bool) -> usize {
    s.bytes()
        .position(|b| !b.is_ascii() || !pred(b))
        .unwrap_or(s.len())
}

/// `name` borrowed from `known` when it is one of them (exactly as written), else copied: the
/// parameter names every message carries need not be allocated for each message.
pub(crate) fn known_or_owned(name: &str, known: &[&'static str]) -> Cow<'static, str> {
    match known.iter().find(|&&k| k == name) {
        Some(&k) => Cow::Borrowed(k),
        None => Cow::Owned(name.to_owned()),
    }
}

/// Offset of the first byte of `s` that is one of `set` (all ASCII, so the offset is a char
/// boundary). A byte scan: `str::find` with a char set decodes UTF-8 as it goes.
pub(crate) fn find_byte(s: &str, set: &[u8]) -> Option<usize> {
    s.bytes().position(|b| set.contains(&b))
}

/// Whether `s` holds a CR or an LF: checked on every header value a builder adds. `memchr2`
/// rather than `str::contains` with a char pattern, which decodes the text char by char and
/// was 2 % of the SIP core's instructions.
pub(crate) fn has_line_break(s: &str) -> bool {
    memchr::memchr2(b'\r', b'\n', s.as_bytes()).is_some()
}

/// `s.split_once(sep)` for an ASCII separator, by a byte scan: URIs and parameters are split
/// this way many times per message, and `str`'s char searcher costs several times more on
/// such short strings.
pub(crate) fn split_once_byte(s: &str, sep: u8) -> Option<(&str, &str)> {
    debug_assert!(sep.is_ascii());
    let i = memchr::memchr(sep, s.as_bytes())?;
    // An ASCII byte is always a char boundary, on both sides.
    Some((s.get(..i)?, s.get(i + 1..)?))
}

/// Splits off the leading run of ASCII bytes satisfying `pred`.
pub(crate) fn take_while(s: &str, pred: impl Fn(u8) -> bool) -> (&str, &str) {
    s.split_at(span(s, pred))
}

/// Replaces every line fold (optional WS, CRLF, WS) by a single SP, which is
/// what RFC 3261 §7.3.1 says a fold is semantically equivalent to.
pub(crate) fn unfold(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for c in s.chars() {
        match c {
            '\r' | '\n' => {
                while out.ends_with([' ', '\t']) {
                    out.pop();
                }
                pending_space = true;
            }
            ' ' | '\t' if pending_space => {}
            _ => {
                if pending_space {
                    out.push(' ');
                    pending_space = false;
                }
                out.push(c);
            }
        }
    }
    out
}

pub(crate) fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Checks that every `%` starts a well-formed `escaped` triplet and every
/// other byte satisfies `allowed`.
pub(crate) fn valid_escaped(s: &str, allowed: impl Fn(u8) -> bool) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let ok = matches!(
                (
                    b.get(i + 1).copied().and_then(hex_val),
                    b.get(i + 2).copied().and_then(hex_val)
                ),
                (Some(_), Some(_))
            );
            if !ok {
                return false;
            }
            i += 3;
        } else if allowed(c) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Decodes `%HH` escapes exactly once. Borrows when there is nothing to
/// decode, which is the overwhelmingly common case. Returns `None` for a
/// truncated or non-hex escape.
pub(crate) fn percent_decode(s: &str) -> Option<Cow<'_, [u8]>> {
    if !s.contains('%') {
        return Some(Cow::Borrowed(s.as_bytes()));
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hi = b.get(i + 1).copied().and_then(hex_val)?;
            let lo = b.get(i + 2).copied().and_then(hex_val)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    Some(Cow::Owned(out))
}

/// `n` in decimal, in a buffer: the digits are `buf[start..]` for the returned `start`.
fn decimal_digits(mut n: u64, digits: &mut [u8; 20]) -> usize {
    let mut i = digits.len();
    loop {
        i -= 1;
        // `n % 10` is below 10, so the cast and the index are in range.
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return i;
        }
    }
}

/// Appends `n` in decimal: the hot paths write ports, expiry times and sequence numbers into
/// every message, and `fmt` machinery costs several times this loop.
pub(crate) fn push_decimal(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let start = decimal_digits(n, &mut digits);
    // Digits only, so always UTF-8.
    out.push_str(std::str::from_utf8(&digits[start..]).unwrap_or_default());
}

/// `n` in decimal, held inline ([`push_decimal`]).
pub(crate) fn decimal(n: u64) -> SmolStr {
    let mut digits = [0u8; 20];
    let start = decimal_digits(n, &mut digits);
    SmolStr::new(std::str::from_utf8(&digits[start..]).unwrap_or_default())
}

/// `n` as 16 lowercase hex digits, zero-padded: what `format!("{n:016x}")` writes.
fn hex16_digits(n: u64) -> [u8; 16] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 16];
    for (i, d) in text.iter_mut().enumerate() {
        // A nibble is below 16.
        *d = DIGITS[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    text
}

/// Appends `n` as 16 lowercase hex digits ([`hex16_digits`]): for the branches, tags and
/// Call-IDs every call makes (through `fmt` that was 2 % of the SIP core's instructions).
pub(crate) fn push_hex16(out: &mut String, n: u64) {
    // Hex digits only, so always UTF-8.
    out.push_str(std::str::from_utf8(&hex16_digits(n)).unwrap_or_default());
}

/// `n` as 16 lowercase hex digits ([`push_hex16`]).
pub(crate) fn hex16(n: u64) -> String {
    let mut s = String::with_capacity(16);
    push_hex16(&mut s, n);
    s
}

/// `prefix` followed by `n` as 16 lowercase hex digits, held inline when it fits (a prefix of
/// up to 7 bytes, such as the branch's magic cookie).
pub(crate) fn prefixed_hex16(prefix: &str, n: u64) -> SmolStr {
    const INLINE: usize = 23;
    let len = prefix.len() + 16;
    if len > INLINE {
        let mut s = String::with_capacity(len);
        s.push_str(prefix);
        push_hex16(&mut s, n);
        return SmolStr::from(s);
    }
    let mut text = [0u8; INLINE];
    text[..prefix.len()].copy_from_slice(prefix.as_bytes());
    text[prefix.len()..len].copy_from_slice(&hex16_digits(n));
    // A string followed by hex digits: UTF-8.
    SmolStr::new(std::str::from_utf8(&text[..len]).unwrap_or_default())
}

/// Percent-encodes every byte for which `keep` is false.
pub(crate) fn percent_encode(out: &mut String, s: &[u8], keep: impl Fn(u8) -> bool) {
    // Most values need no escape: their longest kept ASCII prefix goes in with one append.
    let clean = s
        .iter()
        .position(|&b| !(b.is_ascii() && keep(b)))
        .unwrap_or(s.len());
    let (head, rest) = s.split_at(clean);
    out.push_str(std::str::from_utf8(head).unwrap_or_default());
    for &b in rest {
        if keep(b) {
            out.push(char::from(b));
        } else {
            const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
    }
}

/// Parses a `quoted-string` at the start of `s` (which must begin with `"`),
/// returning its unescaped content and the text after the closing quote.
/// `None` when the quote is never closed: RFC 4475 §3.1.2.6 warns that
/// guessing where it should have ended is how parsers go wrong.
pub(crate) fn parse_quoted(s: &str) -> Option<(Cow<'_, str>, &str)> {
    let body = s.strip_prefix('"')?;
    // Most quoted strings (nonces, realms, display names) have no escapes: borrow those.
    let end = memchr::memchr2(b'"', b'\\', body.as_bytes())?;
    if body.as_bytes().get(end) == Some(&b'"') {
        return Some((Cow::Borrowed(body.get(..end)?), body.get(end + 1..)?));
    }
    let mut out = String::with_capacity(body.len());
    out.push_str(body.get(..end)?);
    let mut chars = body.get(end..)?.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((Cow::Owned(out), body.get(end + i + 1..).unwrap_or(""))),
            // quoted-pair excludes CR and LF (RFC 3261 §25.1).
            '\\' => match chars.next() {
                Some((_, e)) if e.is_ascii() && e != '\r' && e != '\n' => out.push(e),
                _ => return None,
            },
            _ => out.push(c),
        }
    }
    None
}

/// Writes `s` as a quoted-string, escaping what must be escaped. CR and LF
/// cannot be represented even as quoted-pairs, so they degrade to spaces
/// rather than breaking the header line.
pub(crate) fn write_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\r' | '\n' => out.push(' '),
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_ascii_control() && c != '\t' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Iterator over the elements of a separated list, ignoring separators that
/// sit inside quoted strings or `<...>`: display names and URIs may both
/// contain commas (RFC 3261 §7.3.1). Elements are WS-trimmed and may be
/// empty; callers decide whether that is an error.
/// With `sep == None` the whole value is one element, which lets callers
/// treat list and non-list headers through one iterator type.
pub(crate) struct ListIter<'a> {
    rest: Option<&'a str>,
    sep: Option<u8>,
}

pub(crate) fn split_list(s: &str, sep: u8) -> ListIter<'_> {
    ListIter {
        rest: Some(s),
        sep: Some(sep),
    }
}

pub(crate) fn split_maybe(s: &str, sep: Option<u8>) -> ListIter<'_> {
    ListIter { rest: Some(s), sep }
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        let Some(sep) = self.sep else {
            self.rest = None;
            return Some(trim_ws(s));
        };
        let bytes = s.as_bytes();
        let mut in_quote = false;
        let mut in_angle = false;
        let mut i = 0;
        // Jumps from one byte that matters in the current state to the next: lists are scanned
        // for every Via, Contact and Authorization a server reads.
        while let Some(rest) = bytes.get(i..) {
            let found = if in_quote {
                memchr::memchr2(b'"', b'\\', rest)
            } else if in_angle {
                memchr::memchr2(b'"', b'>', rest)
            } else {
                memchr::memchr3(sep, b'"', b'<', rest)
            };
            let Some(n) = found else { break };
            let at = i + n;
            i = at + 1;
            match bytes.get(at) {
                Some(b'\\') => i += 1, // only looked for inside quotes: skip the escaped byte
                Some(b'"') => in_quote = !in_quote,
                Some(b'<') => in_angle = true,
                Some(b'>') => in_angle = false,
                _ => {
                    // The separator, outside quotes and angle brackets; it is ASCII, so both
                    // sides are on char boundaries.
                    self.rest = Some(s.get(at + 1..).unwrap_or(""));
                    return Some(trim_ws(s.get(..at).unwrap_or(s)));
                }
            }
        }
        self.rest = None;
        Some(trim_ws(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_texts_are_what_fmt_writes() {
        // The branch's cookie fits inline; a longer prefix takes the heap, with the same text.
        for (prefix, n) in [
            ("z9hG4bK", 0xfeed_u64),
            ("", u64::MAX),
            ("x".repeat(8).as_str(), 1),
        ] {
            assert_eq!(prefixed_hex16(prefix, n), format!("{prefix}{n:016x}"));
        }
        assert!(!prefixed_hex16("z9hG4bK", 7).is_heap_allocated());
        for n in [0, 9, 10, 5060, 65535, u64::MAX] {
            assert_eq!(decimal(n), n.to_string());
        }
    }

    #[test]
    fn hex16_is_what_fmt_writes() {
        let mut n = 0x0123_4567_89ab_cdef_u64;
        for v in [0, 1, 0xf, u64::MAX, 1 << 63] {
            assert_eq!(hex16(v), format!("{v:016x}"));
        }
        for _ in 0..1000 {
            n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            assert_eq!(hex16(n), format!("{n:016x}"));
        }
    }

    #[test]
    fn decimals() {
        for n in [0, 7, 10, 255, 5060, 4_294_967_295, u64::MAX] {
            let mut out = String::from("x=");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x={n}"));
        }
    }

    #[test]
    fn token_charset() {
        assert!(is_token_str("!interesting-Method0123456789_*+`.%indeed'~"));
        assert!(!is_token_str("a,b"));
        assert!(!is_token_str(""));
        // The table is exactly the grammar's set: 26 + 26 + 10 + 10 marks.
        let all: Vec<u8> = (0..=255u8).filter(|&b| is_token(b)).collect();
        assert_eq!(all.len(), 72);
        assert!(all.iter().all(|&b| token_char(b)));
    }

    #[test]
    fn unfold_collapses_folds() {
        assert_eq!(unfold("a  \r\n   b\r\n\tc"), "a b c");
        assert_eq!(unfold("\r\n sip:x"), " sip:x");
    }

    #[test]
    fn quoted_strings() {
        let (s, rest) = parse_quoted(r#""J Rosenberg \\\""  <x>"#).unwrap();
        assert_eq!(s, r#"J Rosenberg \""#);
        assert_eq!(rest, "  <x>");
        assert!(parse_quoted("\"unterminated <sip:a@b>").is_none());
        let mut out = String::new();
        write_quoted(&mut out, "a\"b\\c\u{0}");
        assert_eq!(out, "\"a\\\"b\\\\c\\\u{0}\"");
    }

    #[test]
    fn percent_decoding_once_and_keeps_nul() {
        assert_eq!(&*percent_decode("null-%00-null").unwrap(), b"null-\0-null");
        assert_eq!(&*percent_decode("v%61lue%25%34%31").unwrap(), b"value%41");
        assert!(percent_decode("%4").is_none());
        assert!(percent_decode("%zz").is_none());
        assert!(valid_escaped("a%20b", is_unreserved));
        assert!(!valid_escaped("a%2", is_unreserved));
    }

    #[test]
    fn list_splitting_respects_quotes_and_angles() {
        let v: Vec<_> = split_list(r#""a,b" <sip:x,y@h>;p=1 , <sip:z@h>"#, b',').collect();
        assert_eq!(v, vec![r#""a,b" <sip:x,y@h>;p=1"#, "<sip:z@h>"]);
        let v: Vec<_> = split_list(";;,,", b',').collect();
        assert_eq!(v, vec![";;", "", ""]);
    }
}

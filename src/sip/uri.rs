//! SIP, SIPS and tel URIs (RFC 3261 §19.1, §25.1; RFC 3966; RFC 5118), plus
//! an opaque form for any other absolute URI.
//!
//! This module owns the URI grammar: where the userinfo ends, how IPv6
//! references are delimited, which characters each component admits and
//! how escapes are decoded. It is hand-written because `rsip` is
//! unmaintained and mishandles `tel:` URIs and bracketed IPv6 hosts, and
//! because the torture tests (RFC 4475 §3.1.1.3-5, RFC 5118 §4.3, §4.10)
//! depend on exact escaping and port rules that a generic URL crate does
//! not follow.

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;

use smol_str::SmolStr;

use super::lex;

/// Why a URI was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    #[error("missing or invalid URI scheme")]
    Scheme,
    #[error("invalid character in URI")]
    Char,
    #[error("invalid userinfo")]
    User,
    #[error("invalid host")]
    Host,
    #[error("invalid port")]
    Port,
    #[error("invalid URI parameter")]
    Param,
    #[error("invalid URI header")]
    Header,
    #[error("invalid telephone number")]
    Tel,
}

/// The host part of a SIP URI or Via sent-by.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Domain(SmolStr),
    V4(Ipv4Addr),
    /// Written as `[...]` on the wire; the brackets are not part of the value.
    V6(Ipv6Addr),
}

impl Host {
    /// Parses `hostname / IPv4address / IPv6reference`. A bare IPv6 address
    /// (no brackets) is rejected: RFC 5118 §4.2 is exactly that mistake.
    pub fn parse(s: &str) -> Result<Host, UriError> {
        if let Some(inner) = s.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(UriError::Host)?;
            return parse_v6(inner).map(Host::V6).ok_or(UriError::Host);
        }
        // Most hosts on the wire are dotted quads: try that first, cheaply.
        if let Some(a) = dotted_quad(s) {
            return Ok(Host::V4(a));
        }
        let name = s.strip_suffix('.').unwrap_or(s);
        // One pass over the labels: each is 1*(alphanum / '-' / '_'), not starting or ending
        // with '-' ('_' is outside the ABNF but shows up in real deployments' host names;
        // accepting it costs nothing and avoids 400s).
        let b = name.as_bytes();
        let mut label_start = 0;
        let mut labels_ok = !b.is_empty();
        for (i, &c) in b.iter().enumerate() {
            if c == b'.' {
                labels_ok &= i > label_start && b[i - 1] != b'-';
                label_start = i + 1;
            } else if i == label_start {
                labels_ok &= c.is_ascii_alphanumeric() || c == b'_';
            } else {
                labels_ok &= c.is_ascii_alphanumeric() || c == b'-' || c == b'_';
            }
        }
        labels_ok &= label_start < b.len() && b.last() != Some(&b'-');
        // RFC 3261 `toplabel` starts with ALPHA, so a name whose last label
        // starts with a digit can only be an IPv4 address.
        if b.get(label_start).is_some_and(|c| c.is_ascii_digit()) {
            return s.parse().map(Host::V4).map_err(|_| UriError::Host);
        }
        if labels_ok {
            Ok(Host::Domain(SmolStr::new(s)))
        } else {
            Err(UriError::Host)
        }
    }

    /// Case-insensitive comparison for domains (RFC 3261 §19.1.4).
    pub fn matches(&self, other: &Host) -> bool {
        match (self, other) {
            (Host::Domain(a), Host::Domain(b)) => a
                .trim_end_matches('.')
                .eq_ignore_ascii_case(b.trim_end_matches('.')),
            _ => self == other,
        }
    }

    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Domain(_) => None,
            Host::V4(a) => Some(IpAddr::V4(*a)),
            Host::V6(a) => Some(IpAddr::V6(*a)),
        }
    }
}

impl From<IpAddr> for Host {
    fn from(ip: IpAddr) -> Host {
        match ip {
            IpAddr::V4(a) => Host::V4(a),
            IpAddr::V6(a) => Host::V6(a),
        }
    }
}

impl Host {
    /// Appends the host as it goes on the wire (IPv6 in brackets).
    pub(crate) fn push_to(&self, out: &mut String) {
        match self {
            Host::Domain(d) => out.push_str(d),
            Host::V4(a) => push_ip(out, IpAddr::V4(*a)),
            Host::V6(a) => {
                out.push('[');
                push_ip(out, IpAddr::V6(*a));
                out.push(']');
            }
        }
    }
}

/// `a` as dotted-quad text in a buffer: the text is `buf[..len]` for the returned `len`.
fn ipv4_digits(a: Ipv4Addr, text: &mut [u8; 15]) -> usize {
    let mut len = 0;
    for (i, octet) in a.octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        if octet >= 100 {
            text[len] = b'0' + octet / 100;
            len += 1;
        }
        if octet >= 10 {
            text[len] = b'0' + octet / 10 % 10;
            len += 1;
        }
        text[len] = b'0' + octet % 10;
        len += 1;
    }
    len
}

/// Appends an address as text, IPv6 without brackets (a Via's `received`, an SDP `c=` line).
/// IPv4 without `fmt`: it is written into most messages the server sends.
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(a) => {
            // Written into a buffer and appended once: a message carries a dozen of these,
            // and appending digit by digit was 2 % of the SIP core's instructions.
            let mut text = [0u8; 15];
            let len = ipv4_digits(a, &mut text);
            // Digits and dots only, so always UTF-8.
            out.push_str(std::str::from_utf8(&text[..len]).unwrap_or_default());
        }
        IpAddr::V6(a) => {
            use std::fmt::Write;
            // Writing to a String cannot fail.
            let _ = write!(out, "{a}");
        }
    }
}

/// An address as text ([`push_ip`]), held inline for IPv4: a Via's `received` on every
/// request the server receives.
pub(crate) fn ip_text(ip: IpAddr) -> SmolStr {
    match ip {
        IpAddr::V4(a) => {
            let mut text = [0u8; 15];
            let len = ipv4_digits(a, &mut text);
            SmolStr::new(std::str::from_utf8(&text[..len]).unwrap_or_default())
        }
        IpAddr::V6(_) => {
            let mut text = String::with_capacity(39);
            push_ip(&mut text, ip);
            SmolStr::from(text)
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(48);
        self.push_to(&mut s);
        f.write_str(&s)
    }
}

/// `a.b.c.d`, each part 0-255 in decimal without leading zeros: exactly what
/// `Ipv4Addr::from_str` accepts, in a fraction of its instructions (every message carries
/// four or five hosts).
fn dotted_quad(s: &str) -> Option<Ipv4Addr> {
    let b = s.as_bytes();
    if b.len() < 7 || b.len() > 15 {
        return None;
    }
    let mut octets = [0u8; 4];
    let mut part = 0;
    let mut i = 0;
    loop {
        let start = i;
        let mut value: u16 = 0;
        while let Some(&c) = b.get(i).filter(|c| c.is_ascii_digit()) {
            value = value * 10 + u16::from(c - b'0');
            i += 1;
            if i - start > 3 {
                return None;
            }
        }
        let digits = i - start;
        if digits == 0 || value > 255 || (digits > 1 && b[start] == b'0') {
            return None;
        }
        octets[part] = value as u8;
        part += 1;
        if part == 4 {
            return (i == b.len()).then(|| Ipv4Addr::from(octets));
        }
        if b.get(i) != Some(&b'.') {
            return None;
        }
        i += 1;
    }
}

/// Parses an IPv6 address, also accepting the `x:::y` form that RFC 3261's
/// ABNF admits by mistake (RFC 5118 §4.10 asks receivers to tolerate it).
pub(crate) fn parse_v6(s: &str) -> Option<Ipv6Addr> {
    if let Ok(a) = s.parse() {
        return Some(a);
    }
    let (head, tail) = s.split_once(":::")?;
    format!("{head}::{tail}").parse().ok()
}

/// One `;name[=value]` parameter. For URIs the name and value are stored
/// unescaped exactly once (RFC 4475 §3.1.1.3: `v%61lue%25%34%31` is
/// `value%41`); header parameters are stored as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Borrowed for the names every message carries (`tag`, `branch`, `rport`...), so that
    /// parsing them allocates only for their values.
    name: Cow<'static, str>,
    /// Inline up to 23 bytes (every branch, tag, `rport` and `received` we see): the values
    /// were a tenth of the SIP core's allocations, each a block the allocator had to find.
    value: Option<SmolStr>,
}

/// Parameter names common enough on the hot path to be worth not copying. Matched exactly as
/// written: a name in another case is kept as it came.
const WELL_KNOWN_PARAMS: [&str; 14] = [
    "tag",
    "branch",
    "rport",
    "received",
    "expires",
    "q",
    "transport",
    "lr",
    "user",
    "maddr",
    "ttl",
    "ob",
    "reg-id",
    "+sip.instance",
];

impl Param {
    pub fn new(name: &str, value: Option<SmolStr>) -> Param {
        Param {
            name: lex::known_or_owned(name, &WELL_KNOWN_PARAMS),
            value,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `None` for a flag parameter such as `;lr`.
    pub fn value(&self) -> Option<&str> {
        self.value.as_deref()
    }
}

/// An ordered parameter list with case-insensitive names. A `Vec` rather
/// than a map: lists are short, order is significant when forwarding, and
/// a linear scan beats hashing at these sizes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<Param>);

impl Params {
    pub fn new() -> Params {
        Params(Vec::new())
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.0.iter().find(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// Value of `name`; `None` when absent or when it is a flag.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(Param::value)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Sets `name`, replacing an existing value in place so order is kept.
    pub fn set(&mut self, name: &str, value: Option<SmolStr>) {
        match self
            .0
            .iter_mut()
            .find(|p| p.name.eq_ignore_ascii_case(name))
        {
            Some(p) => p.value = value,
            None => self.0.push(Param::new(name, value)),
        }
    }

    pub fn push(&mut self, param: Param) {
        self.0.push(param);
    }

    pub fn remove(&mut self, name: &str) -> Option<Param> {
        let i = self
            .0
            .iter()
            .position(|p| p.name.eq_ignore_ascii_case(name))?;
        Some(self.0.remove(i))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn is_user_char(b: u8) -> bool {
    lex::is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    lex::is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

fn is_param_char(b: u8) -> bool {
    lex::is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

fn is_header_char(b: u8) -> bool {
    lex::is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

/// `uric` from RFC 2396, plus `[` `]` for IPv6 literals (RFC 2732).
fn is_uric(b: u8) -> bool {
    lex::is_unreserved(b)
        || matches!(
            b,
            b';' | b'/' | b'?' | b':' | b'@' | b'&' | b'=' | b'+' | b'$' | b',' | b'[' | b']'
        )
}

/// Parses `;p1;p2=v` (with `s` starting after the first `;`), decoding each
/// name and value once.
fn parse_uri_params(s: &str, out: &mut Params) -> Result<(), UriError> {
    let mut rest = Some(s);
    while let Some(r) = rest {
        let item = match lex::split_once_byte(r, b';') {
            Some((item, tail)) => {
                rest = Some(tail);
                item
            }
            None => {
                rest = None;
                r
            }
        };
        let (name, value) = match lex::split_once_byte(item, b'=') {
            Some((n, v)) => (n, Some(v)),
            None => (item, None),
        };
        fn decode(t: &str) -> Result<Cow<'_, str>, UriError> {
            if t.is_empty() || !lex::valid_escaped(t, is_param_char) {
                return Err(UriError::Param);
            }
            match lex::percent_decode(t).ok_or(UriError::Param)? {
                // Nothing was escaped: the text is its own decoding.
                Cow::Borrowed(_) => Ok(Cow::Borrowed(t)),
                Cow::Owned(bytes) => String::from_utf8(bytes)
                    .map(Cow::Owned)
                    .map_err(|_| UriError::Param),
            }
        }
        let name = decode(name)?;
        let value = value.map(decode).transpose()?;
        out.push(Param::new(&name, value.as_deref().map(SmolStr::new)));
    }
    Ok(())
}

fn write_uri_params(out: &mut String, params: &Params) {
    for p in params.iter() {
        out.push(';');
        lex::percent_encode(out, p.name.as_bytes(), is_param_char);
        if let Some(v) = &p.value {
            out.push('=');
            lex::percent_encode(out, v.as_bytes(), is_param_char);
        }
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri {
    secure: bool,
    /// As written (escapes intact); decoded on access so `%00` survives.
    /// Inline when short, as user parts and host names nearly always are ([`Param`]'s value).
    user: Option<SmolStr>,
    password: Option<SmolStr>,
    host: Host,
    port: Option<u16>,
    params: Params,
    /// The `?h=v&...` part as written, without the `?`.
    headers: Option<SmolStr>,
}

impl SipUri {
    pub fn new(host: Host) -> SipUri {
        SipUri {
            secure: false,
            user: None,
            password: None,
            host,
            port: None,
            params: Params::new(),
            headers: None,
        }
    }

    pub fn secure(mut self, secure: bool) -> SipUri {
        self.secure = secure;
        self
    }

    /// Sets the user from its unescaped form, escaping as needed.
    pub fn with_user(mut self, user: &[u8]) -> SipUri {
        let mut s = String::with_capacity(user.len());
        lex::percent_encode(&mut s, user, is_user_char);
        self.user = if s.is_empty() { None } else { Some(s.into()) };
        self
    }

    pub fn with_port(mut self, port: Option<u16>) -> SipUri {
        self.port = port;
        self
    }

    pub fn with_param(mut self, name: &str, value: Option<&str>) -> SipUri {
        self.params.set(name, value.map(SmolStr::new));
        self
    }

    fn parse(rest: &str, secure: bool) -> Result<SipUri, UriError> {
        // No component admits a raw '@' except the userinfo delimiter, so
        // the first one ends the userinfo even though the user part may
        // itself contain ';', '?' and '/' (RFC 4475 §3.1.1.2, §3.1.1.9).
        let (userinfo, hostpart) = match lex::split_once_byte(rest, b'@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(u) => {
                let (user, pw) = match lex::split_once_byte(u, b':') {
                    Some((user, pw)) => (user, Some(pw)),
                    None => (u, None),
                };
                if user.is_empty() || !lex::valid_escaped(user, is_user_char) {
                    return Err(UriError::User);
                }
                if let Some(pw) = pw {
                    if !lex::valid_escaped(pw, is_password_char) {
                        return Err(UriError::User);
                    }
                }
                (Some(SmolStr::new(user)), pw.map(SmolStr::new))
            }
        };

        // The port is only ever looked for after ']' (RFC 5118 §4.3): in
        // `[2001:db8::10:5070]` the 5070 is part of the address.
        let (host_text, after_host) = if hostpart.starts_with('[') {
            let close = lex::find_byte(hostpart, b"]").ok_or(UriError::Host)?;
            hostpart.split_at(close + 1)
        } else {
            let end = lex::find_byte(hostpart, b":;?").unwrap_or(hostpart.len());
            hostpart.split_at(end)
        };
        let host = Host::parse(host_text)?;

        let (port, after_port) = match after_host.strip_prefix(':') {
            Some(p) => {
                let (digits, tail) = lex::take_while(p, |b| b.is_ascii_digit());
                (Some(parse_port(digits)?), tail)
            }
            None => (None, after_host),
        };

        let (params_text, headers) = match lex::split_once_byte(after_port, b'?') {
            Some((p, h)) => (p, Some(h)),
            None => (after_port, None),
        };
        let mut params = Params::new();
        if let Some(p) = params_text.strip_prefix(';') {
            parse_uri_params(p, &mut params)?;
        } else if !params_text.is_empty() {
            return Err(UriError::Char);
        }

        if let Some(h) = headers {
            let ok = h.split('&').all(|hv| match hv.split_once('=') {
                Some((n, v)) => {
                    !n.is_empty()
                        && lex::valid_escaped(n, is_header_char)
                        && lex::valid_escaped(v, is_header_char)
                }
                None => false,
            });
            if !ok {
                return Err(UriError::Header);
            }
        }

        Ok(SipUri {
            secure,
            user,
            password,
            host,
            port,
            params,
            headers: headers.map(SmolStr::new),
        })
    }

    pub fn is_sips(&self) -> bool {
        self.secure
    }

    /// The user part with escapes decoded (lossy only for bytes that are
    /// not UTF-8; use [`SipUri::user_bytes`] when that matters).
    pub fn user(&self) -> Option<Cow<'_, str>> {
        match self.user_bytes()? {
            Cow::Borrowed(b) => Some(String::from_utf8_lossy(b)),
            Cow::Owned(v) => {
                Some(Cow::Owned(String::from_utf8(v).unwrap_or_else(|e| {
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                })))
            }
        }
    }

    /// The user part decoded to raw bytes: `null-%00-null` keeps its NUL
    /// (RFC 4475 §3.1.1.4) rather than being cut there.
    pub fn user_bytes(&self) -> Option<Cow<'_, [u8]>> {
        self.user.as_deref().and_then(lex::percent_decode)
    }

    /// The user part as written on the wire.
    pub fn user_raw(&self) -> Option<&str> {
        self.user.as_deref()
    }

    pub fn password(&self) -> Option<Cow<'_, [u8]>> {
        self.password.as_deref().and_then(lex::percent_decode)
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    pub fn params_mut(&mut self) -> &mut Params {
        &mut self.params
    }

    /// The raw `?headers` part, without the `?`.
    pub fn headers_raw(&self) -> Option<&str> {
        self.headers.as_deref()
    }

    pub fn set_headers_raw(&mut self, headers: Option<String>) {
        self.headers = headers.map(SmolStr::from);
    }

    /// The `?headers` part decoded into name/value pairs.
    pub fn headers(&self) -> Vec<(String, String)> {
        let dec = |s: &str| {
            lex::percent_decode(s)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        self.headers
            .as_deref()
            .map(|h| {
                h.split('&')
                    .filter_map(|hv| hv.split_once('='))
                    .map(|(n, v)| (dec(n), dec(v)))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn transport(&self) -> Option<&str> {
        self.params.value("transport")
    }

    /// 5061 for `sips:` or `transport=tls`, else 5060 (RFC 3261 §19.1.2).
    pub fn default_port(&self) -> u16 {
        let tls = self
            .transport()
            .is_some_and(|t| t.eq_ignore_ascii_case("tls"));
        if self.secure || tls {
            5061
        } else {
            5060
        }
    }
}

fn parse_port(digits: &str) -> Result<u16, UriError> {
    if digits.is_empty() {
        return Err(UriError::Port);
    }
    digits.parse().map_err(|_| UriError::Port)
}

impl SipUri {
    /// Appends the URI's wire form to `out` (what `Display` writes).
    pub fn push_to(&self, out: &mut String) {
        out.push_str(if self.secure { "sips:" } else { "sip:" });
        if let Some(u) = &self.user {
            out.push_str(u);
            if let Some(p) = &self.password {
                out.push(':');
                out.push_str(p);
            }
            out.push('@');
        }
        self.host.push_to(out);
        if let Some(p) = self.port {
            out.push(':');
            lex::push_decimal(out, u64::from(p));
        }
        write_uri_params(out, &self.params);
        if let Some(h) = &self.headers {
            out.push('?');
            out.push_str(h);
        }
    }
}

impl fmt::Display for SipUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        self.push_to(&mut s);
        f.write_str(&s)
    }
}

/// A `tel:` URI (RFC 3966). The number is kept as written, visual
/// separators included, because it is what gets echoed back to peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri {
    number: String,
    params: Params,
}

impl TelUri {
    fn parse(rest: &str) -> Result<TelUri, UriError> {
        let (number, params_text) = match rest.split_once(';') {
            Some((n, p)) => (n, Some(p)),
            None => (rest, None),
        };
        let visual = |b: u8| matches!(b, b'-' | b'.' | b'(' | b')');
        let ok = match number.strip_prefix('+') {
            Some(digits) => {
                digits.bytes().all(|b| b.is_ascii_digit() || visual(b))
                    && digits.bytes().any(|b| b.is_ascii_digit())
            }
            None => {
                number
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || matches!(b, b'*' | b'#') || visual(b))
                    && number.bytes().any(|b| !visual(b))
            }
        };
        if !ok {
            return Err(UriError::Tel);
        }
        let mut params = Params::new();
        if let Some(p) = params_text {
            parse_uri_params(p, &mut params)?;
        }
        Ok(TelUri {
            number: number.to_owned(),
            params,
        })
    }

    pub fn number(&self) -> &str {
        &self.number
    }

    /// The number without visual separators, e.g. `+12015550123`.
    pub fn digits(&self) -> String {
        self.number
            .chars()
            .filter(|c| !matches!(c, '-' | '.' | '(' | ')'))
            .collect()
    }

    pub fn is_global(&self) -> bool {
        self.number.starts_with('+')
    }

    pub fn params(&self) -> &Params {
        &self.params
    }
}

impl TelUri {
    /// Appends the URI's wire form to `out` (what `Display` writes).
    pub fn push_to(&self, out: &mut String) {
        out.push_str("tel:");
        out.push_str(&self.number);
        write_uri_params(out, &self.params);
    }
}

impl fmt::Display for TelUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(self.number.len() + 8);
        self.push_to(&mut s);
        f.write_str(&s)
    }
}

/// Any URI a SIP message may carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri {
    /// Shared: a URI is copied into dialogs, transactions and call state far more often than
    /// it is changed, and a copy is then a reference count, not a string per part.
    Sip(Arc<SipUri>),
    Tel(TelUri),
    /// Any other absolute URI (`http:`, `mailto:`, `isbn:` ...). Kept opaque:
    /// a PBX only needs to carry these, and RFC 4475 §3.3.2-4 wants them
    /// parsed rather than rejected. The scheme is lower-cased.
    Other {
        scheme: String,
        rest: String,
    },
}

impl Uri {
    /// Parses an absolute URI. Whitespace, `<`, `>` and `"` are never part of
    /// one (RFC 4475 §3.1.2.7, §3.1.2.8), so callers must strip the angle
    /// brackets of a name-addr themselves.
    pub fn parse(s: &str) -> Result<Uri, UriError> {
        let (scheme, rest) = lex::split_once_byte(s, b':').ok_or(UriError::Scheme)?;
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
        if !scheme_ok {
            return Err(UriError::Scheme);
        }
        if rest
            .bytes()
            .any(|b| b <= b' ' || matches!(b, b'<' | b'>' | b'"' | 0x7f))
        {
            return Err(UriError::Char);
        }
        if scheme.eq_ignore_ascii_case("sip") {
            SipUri::parse(rest, false).map(Uri::from)
        } else if scheme.eq_ignore_ascii_case("sips") {
            SipUri::parse(rest, true).map(Uri::from)
        } else if scheme.eq_ignore_ascii_case("tel") {
            TelUri::parse(rest).map(Uri::Tel)
        } else if rest.is_empty() || !lex::valid_escaped(rest, is_uric) {
            Err(UriError::Char)
        } else {
            Ok(Uri::Other {
                scheme: scheme.to_ascii_lowercase(),
                rest: rest.to_owned(),
            })
        }
    }

    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) if u.secure => "sips",
            Uri::Sip(_) => "sip",
            Uri::Tel(_) => "tel",
            Uri::Other { scheme, .. } => scheme,
        }
    }

    pub fn as_sip(&self) -> Option<&SipUri> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The SIP URI to change; a copy of it first if it is shared.
    pub fn as_sip_mut(&mut self) -> Option<&mut SipUri> {
        match self {
            Uri::Sip(u) => Some(Arc::make_mut(u)),
            _ => None,
        }
    }

    pub fn is_sips(&self) -> bool {
        matches!(self, Uri::Sip(u) if u.secure)
    }

    /// Decoded user of a SIP URI, or the number of a tel URI.
    pub fn user(&self) -> Option<Cow<'_, str>> {
        match self {
            Uri::Sip(u) => u.user(),
            Uri::Tel(t) => Some(Cow::Borrowed(&t.number)),
            Uri::Other { .. } => None,
        }
    }

    pub fn host(&self) -> Option<&Host> {
        self.as_sip().map(SipUri::host)
    }

    pub fn port(&self) -> Option<u16> {
        self.as_sip().and_then(SipUri::port)
    }

    /// Where to send to, before any DNS (RFC 3263) lookup: host and explicit
    /// or default port.
    pub fn host_port(&self) -> Option<(&Host, u16)> {
        let u = self.as_sip()?;
        Some((&u.host, u.port.unwrap_or_else(|| u.default_port())))
    }

    pub fn default_port(&self) -> Option<u16> {
        self.as_sip().map(SipUri::default_port)
    }

    pub fn param(&self, name: &str) -> Option<&Param> {
        match self {
            Uri::Sip(u) => u.params.get(name),
            Uri::Tel(t) => t.params.get(name),
            Uri::Other { .. } => None,
        }
    }

    pub fn transport(&self) -> Option<&str> {
        self.as_sip().and_then(SipUri::transport)
    }
}

impl From<SipUri> for Uri {
    fn from(u: SipUri) -> Uri {
        Uri::Sip(Arc::new(u))
    }
}

impl FromStr for Uri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Uri, UriError> {
        Uri::parse(s)
    }
}

impl Uri {
    /// Appends the URI's wire form to `out` (what `Display` writes).
    pub fn push_to(&self, out: &mut String) {
        match self {
            Uri::Sip(u) => u.push_to(out),
            Uri::Tel(t) => t.push_to(out),
            Uri::Other { scheme, rest } => {
                out.push_str(scheme);
                out.push(':');
                out.push_str(rest);
            }
        }
    }
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(64);
        self.push_to(&mut s);
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri {
        match Uri::parse(s) {
            Ok(Uri::Sip(u)) => Arc::unwrap_or_clone(u),
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn ipv4_is_written_as_std_writes_it() {
        let mut seed = 0x9e37_79b9_u32;
        let mut cases = vec![
            Ipv4Addr::new(0, 0, 0, 0),
            Ipv4Addr::new(255, 255, 255, 255),
            Ipv4Addr::new(10, 100, 9, 199),
        ];
        for _ in 0..2000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            cases.push(Ipv4Addr::from(seed));
        }
        for a in cases {
            let mut out = String::from("x=");
            push_ip(&mut out, IpAddr::V4(a));
            assert_eq!(out, format!("x={a}"));
        }
    }

    #[test]
    fn dotted_quads_are_what_std_accepts() {
        let mut cases: Vec<String> = [
            "0.0.0.0",
            "255.255.255.255",
            "192.0.2.1",
            "1.2.3.4",
            "01.2.3.4",
            "1.2.3.04",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.",
            ".1.2.3",
            "1.2.3.4a",
            "a.b.c.d",
            "1000.1.1.1",
            "1.2.3.-4",
            "+1.2.3.4",
            "00.0.0.0",
            "1.2.3.0000",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // And a deterministic spread of short strings over the characters that matter.
        let alphabet = b"0123456789.a";
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = 7 + (x % 9) as usize;
            let s: String = (0..len)
                .map(|i| alphabet[((x >> (i * 4)) % alphabet.len() as u64) as usize] as char)
                .collect();
            cases.push(s);
            // A well-formed quad, sometimes with a leading zero that makes it ill-formed.
            let [a, b, c, d, z, ..] = x.to_le_bytes();
            let lead = if z % 8 == 0 { "0" } else { "" };
            cases.push(format!("{a}.{b}.{lead}{c}.{d}"));
        }
        assert!(
            cases
                .iter()
                .filter(|c| c.parse::<Ipv4Addr>().is_ok())
                .count()
                > 10_000
        );
        for c in &cases {
            assert_eq!(dotted_quad(c), c.parse::<Ipv4Addr>().ok(), "{c:?}");
        }
    }

    #[test]
    fn host_names_and_addresses() {
        for ok in [
            "a",
            "pbx.example.com",
            "pbx.example.com.",
            "_sip._udp.example",
            "9pbx.example",
            "a-b.c-d",
            "x1",
        ] {
            assert_eq!(Host::parse(ok), Ok(Host::Domain(ok.into())), "{ok}");
        }
        assert_eq!(
            Host::parse("192.0.2.10"),
            Ok(Host::V4(Ipv4Addr::new(192, 0, 2, 10)))
        );
        assert_eq!(
            Host::parse("[2001:db8::1]"),
            Ok(Host::V6("2001:db8::1".parse().unwrap()))
        );
        for bad in [
            "",
            ".",
            "a..b",
            ".a",
            "-a.b",
            "a-.b",
            "a.b-",
            "a.-b",
            "a b",
            "a.b..",
            "192.0.2.256",
            "192.0.2",
            "1.2.3.4.",
            "2001:db8::1",
            "a.1b",
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn basic_sip_uri() {
        let u =
            sip("sip:alice:secret@Example.COM:5070;transport=tcp;lr?Subject=hi&Priority=urgent");
        assert_eq!(u.user().as_deref(), Some("alice"));
        assert_eq!(u.password().as_deref(), Some(&b"secret"[..]));
        assert_eq!(u.host(), &Host::Domain("Example.COM".into()));
        assert_eq!(u.port(), Some(5070));
        assert_eq!(u.transport(), Some("tcp"));
        assert!(u.params().contains("LR"));
        assert_eq!(u.headers().len(), 2);
        assert_eq!(
            u.to_string(),
            "sip:alice:secret@Example.COM:5070;transport=tcp;lr?Subject=hi&Priority=urgent"
        );
    }

    #[test]
    fn default_ports() {
        let u = Uri::parse("sips:bob@example.com").unwrap();
        assert!(u.is_sips());
        assert_eq!(u.host_port().map(|(_, p)| p), Some(5061));
        let u = Uri::parse("sip:bob@example.com;transport=TLS").unwrap();
        assert_eq!(u.default_port(), Some(5061));
        let u = Uri::parse("SIP:bob@192.0.2.1").unwrap();
        assert_eq!(
            u.host_port(),
            Some((&Host::V4("192.0.2.1".parse().unwrap()), 5060))
        );
        assert_eq!(u.to_string(), "sip:bob@192.0.2.1");
    }

    #[test]
    fn escapes_decode_once() {
        let u = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.user().as_deref(), Some("caller"));
        assert!(u.params().contains("lr"));
        assert_eq!(u.params().value("name"), Some("value%41"));
        // Re-escaped on output so a re-parse yields the same value.
        let again = sip(&u.to_string());
        assert_eq!(again.params().value("name"), Some("value%41"));
    }

    #[test]
    fn escaped_nul_is_not_a_terminator() {
        let u = sip("sip:null-%00-null@example.com");
        assert_eq!(u.user_bytes().as_deref(), Some(&b"null-\0-null"[..]));
        assert_ne!(
            sip("sip:%00@h").user_bytes(),
            sip("sip:%00%00@h").user_bytes()
        );
    }

    #[test]
    fn semicolons_in_user_part() {
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user().as_deref(), Some("user;par=u@example.net"));
        assert!(u.params().is_empty());
        assert_eq!(u.host(), &Host::Domain("example.com".into()));
    }

    #[test]
    fn ipv6_references() {
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.host(), &Host::V6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port(), Some(5070));
        let u = sip("sip:[2001:db8::10:5070]");
        assert_eq!(u.port(), None);
        assert_eq!(u.host(), &Host::V6("2001:db8::10:5070".parse().unwrap()));
        let u = sip("sip:user@[2001:db8:::192.0.2.1]");
        assert_eq!(u.host(), &Host::V6("2001:db8::192.0.2.1".parse().unwrap()));
        assert!(Uri::parse("sip:2001:db8::10").is_err());
        assert!(Uri::parse("sip:[2001:db8::10").is_err());
        assert!(Uri::parse("sip:[::1]x").is_err());
    }

    #[test]
    fn rejects_lws_brackets_and_junk() {
        for bad in [
            "<sip:user@example.com>",
            "sip:user@example.com; lr",
            "sip:user@exa mple.com",
            "sip:user@example.com:",
            "sip:user@example.com:99999",
            "sip:user@example.com;;lr",
            "sip:user@example.com;",
            "sip:user@-bad-.com",
            "sip:@example.com",
            "sip:user@192.0.2.300",
            "sip:us%zzer@example.com",
            "sip:a@b@c",
            "sip:user@example.com?Route",
            "1sip:x",
            "nocolon",
            "tel:abc-xyz",
        ] {
            assert!(Uri::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tel_and_other_schemes() {
        let u = Uri::parse("tel:+1-201-555-0123;ext=22").unwrap();
        match &u {
            Uri::Tel(t) => {
                assert!(t.is_global());
                assert_eq!(t.digits(), "+12015550123");
                assert_eq!(t.params().value("ext"), Some("22"));
            }
            _ => panic!(),
        }
        assert_eq!(u.to_string(), "tel:+1-201-555-0123;ext=22");
        assert!(Uri::parse("tel:7042;phone-context=example.com").is_ok());
        let u = Uri::parse("soap.beep://192.0.2.103:3002").unwrap();
        assert_eq!(u.scheme(), "soap.beep");
        assert_eq!(u.to_string(), "soap.beep://192.0.2.103:3002");
        assert!(Uri::parse("mailto:a@example.com").is_ok());
        assert!(Uri::parse("http:").is_err());
    }

    #[test]
    fn extreme_userinfo() {
        let u = sip("sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com");
        assert_eq!(
            u.user_raw(),
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert!(u.password().is_some());
    }

    #[test]
    fn builder_escapes_user() {
        let u = SipUri::new(Host::Domain("h".into())).with_user(b"a b@c");
        assert_eq!(u.to_string(), "sip:a%20b%40c@h");
        assert_eq!(
            sip(&u.to_string()).user_bytes().as_deref(),
            Some(&b"a b@c"[..])
        );
    }
}

//! Header names and the typed values a PBX needs from header fields
//! (RFC 3261 §7.3, §20, §25; RFC 3581; RFC 5118 §4.5).
//!
//! This module owns the header grammars: name lookup including compact
//! forms, list splitting, `name-addr`/`addr-spec`, Via, CSeq, Contact and
//! digest auth-params. It knows nothing about message framing; the message
//! layer hands it unfolded value text. Hand-written because `rsip` is
//! unmaintained and gets compact forms, folded values and bracketed IPv6
//! Via hosts wrong, all of which RFC 4475 and RFC 5118 exercise.

use std::fmt;
use std::net::IpAddr;

use smol_str::SmolStr;

use super::lex;
use super::message::Method;
use super::uri::{self, Host, Param, Params, Uri, UriError};

/// Why a header value was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeaderError {
    #[error("empty value")]
    Empty,
    #[error("empty list element")]
    EmptyElement,
    #[error("malformed value")]
    Syntax,
    #[error("unterminated quoted string")]
    UnterminatedQuote,
    #[error("invalid display name")]
    DisplayName,
    #[error("URI with ',', ';' or '?' must be enclosed in <>")]
    NeedsAngleBrackets,
    #[error("invalid parameter")]
    Param,
    #[error("number out of range")]
    Range,
    #[error("invalid method")]
    Method,
    #[error("'*' mixed with other contacts")]
    Wildcard,
    #[error("value contains a line break")]
    LineBreak,
    #[error("invalid URI: {0}")]
    Uri(#[from] UriError),
}

macro_rules! header_names {
    ($($variant:ident => $canon:literal, list: $list:literal;)*) => {
        /// A header field name. Known names are matched case-insensitively
        /// and from their compact forms; anything else is kept as written.
        #[derive(Debug, Clone)]
        #[non_exhaustive]
        pub enum HeaderName {
            $($variant,)*
            Other(String),
        }

        impl HeaderName {
            /// The canonical long form, as written on output.
            pub fn as_str(&self) -> &str {
                match self {
                    $(HeaderName::$variant => $canon,)*
                    HeaderName::Other(s) => s,
                }
            }

            /// Whether the header's grammar is a comma-separated list, so
            /// that one field may carry several values (RFC 3261 §7.3.1).
            /// Unknown headers are never split: we cannot know their
            /// grammar, and forwarding them untouched is what §16 asks.
            pub fn is_list(&self) -> bool {
                match self {
                    $(HeaderName::$variant => $list,)*
                    HeaderName::Other(_) => false,
                }
            }

            fn known(name: &str) -> Option<HeaderName> {
                $(if name.eq_ignore_ascii_case($canon) {
                    return Some(HeaderName::$variant);
                })*
                None
            }
        }
    };
}

header_names! {
    Via => "Via", list: true;
    From => "From", list: false;
    To => "To", list: false;
    CallId => "Call-ID", list: false;
    CSeq => "CSeq", list: false;
    Contact => "Contact", list: true;
    MaxForwards => "Max-Forwards", list: false;
    Expires => "Expires", list: false;
    MinExpires => "Min-Expires", list: false;
    ContentLength => "Content-Length", list: false;
    ContentType => "Content-Type", list: false;
    ContentEncoding => "Content-Encoding", list: true;
    ContentDisposition => "Content-Disposition", list: false;
    ContentLanguage => "Content-Language", list: true;
    Route => "Route", list: true;
    RecordRoute => "Record-Route", list: true;
    Authorization => "Authorization", list: false;
    ProxyAuthorization => "Proxy-Authorization", list: false;
    WwwAuthenticate => "WWW-Authenticate", list: false;
    ProxyAuthenticate => "Proxy-Authenticate", list: false;
    AuthenticationInfo => "Authentication-Info", list: false;
    UserAgent => "User-Agent", list: false;
    Server => "Server", list: false;
    Allow => "Allow", list: true;
    AllowEvents => "Allow-Events", list: true;
    Supported => "Supported", list: true;
    Require => "Require", list: true;
    ProxyRequire => "Proxy-Require", list: true;
    Unsupported => "Unsupported", list: true;
    Accept => "Accept", list: true;
    AcceptEncoding => "Accept-Encoding", list: true;
    AcceptLanguage => "Accept-Language", list: true;
    Date => "Date", list: false;
    Subject => "Subject", list: false;
    Reason => "Reason", list: true;
    Warning => "Warning", list: true;
    RetryAfter => "Retry-After", list: false;
    SessionExpires => "Session-Expires", list: false;
    MinSE => "Min-SE", list: false;
    Event => "Event", list: false;
    SubscriptionState => "Subscription-State", list: false;
    ReferTo => "Refer-To", list: false;
    ReferredBy => "Referred-By", list: false;
    Replaces => "Replaces", list: false;
    Path => "Path", list: true;
    PAssertedIdentity => "P-Asserted-Identity", list: true;
    PPreferredIdentity => "P-Preferred-Identity", list: true;
    Privacy => "Privacy", list: false;
    RSeq => "RSeq", list: false;
    RAck => "RAck", list: false;
    Timestamp => "Timestamp", list: false;
    Identity => "Identity", list: false;
}

impl HeaderName {
    /// Looks a name up, expanding compact forms (RFC 3261 §7.3.3, RFC 3265,
    /// RFC 3515, RFC 3892, RFC 4028, RFC 3841, RFC 4474).
    pub fn parse(name: &str) -> HeaderName {
        if let [c] = name.as_bytes() {
            let compact = match c.to_ascii_lowercase() {
                b'i' => Some(HeaderName::CallId),
                b'm' => Some(HeaderName::Contact),
                b'e' => Some(HeaderName::ContentEncoding),
                b'l' => Some(HeaderName::ContentLength),
                b'c' => Some(HeaderName::ContentType),
                b'f' => Some(HeaderName::From),
                b's' => Some(HeaderName::Subject),
                b'k' => Some(HeaderName::Supported),
                b't' => Some(HeaderName::To),
                b'v' => Some(HeaderName::Via),
                b'o' => Some(HeaderName::Event),
                b'u' => Some(HeaderName::AllowEvents),
                b'r' => Some(HeaderName::ReferTo),
                b'b' => Some(HeaderName::ReferredBy),
                b'x' => Some(HeaderName::SessionExpires),
                b'y' => Some(HeaderName::Identity),
                b'a' => Some(HeaderName::Other("Accept-Contact".into())),
                b'j' => Some(HeaderName::Other("Reject-Contact".into())),
                b'd' => Some(HeaderName::Other("Request-Disposition".into())),
                b'n' => Some(HeaderName::Other("Identity-Info".into())),
                _ => None,
            };
            if let Some(h) = compact {
                return h;
            }
        }
        HeaderName::known(name).unwrap_or_else(|| HeaderName::Other(name.to_owned()))
    }
}

impl PartialEq for HeaderName {
    fn eq(&self, other: &HeaderName) -> bool {
        match (self, other) {
            (HeaderName::Other(a), HeaderName::Other(b)) => a.eq_ignore_ascii_case(b),
            _ => std::mem::discriminant(self) == std::mem::discriminant(other),
        }
    }
}

impl Eq for HeaderName {}

impl From<&str> for HeaderName {
    fn from(s: &str) -> HeaderName {
        HeaderName::parse(s)
    }
}

impl fmt::Display for HeaderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Splits a list-valued header into its elements, refusing empty ones
/// (RFC 4475 §3.1.2.1: `;;,;,,` is malformed, not "no values").
pub fn split_list(value: &str) -> impl Iterator<Item = Result<&str, HeaderError>> {
    lex::split_list(value, b',').map(|v| {
        if v.is_empty() {
            Err(HeaderError::EmptyElement)
        } else {
            Ok(v)
        }
    })
}

/// Characters of a `gen-value` that is not a quoted-string: a token or a
/// host, which adds ':' and brackets for IPv6 (RFC 3261 §25.1).
fn is_gen_value(b: u8) -> bool {
    lex::is_token(b) || matches!(b, b':' | b'[' | b']')
}

/// Parses `*( SEMI generic-param )` from the start of `s` and returns the
/// unparsed remainder. Values are kept as written, quotes included, so that
/// forwarding reproduces them exactly.
pub(crate) fn parse_params<'a>(mut s: &'a str, out: &mut Params) -> Result<&'a str, HeaderError> {
    loop {
        let t = lex::trim_ws_start(s);
        let Some(t) = t.strip_prefix(';') else {
            return Ok(s);
        };
        let t = lex::trim_ws_start(t);
        let (name, t) = lex::take_while(t, lex::is_token);
        if name.is_empty() {
            return Err(HeaderError::Param);
        }
        let after_name = lex::trim_ws_start(t);
        let (value, rest) = match after_name.strip_prefix('=') {
            Some(v) => {
                let v = lex::trim_ws_start(v);
                if v.starts_with('"') {
                    let (_, tail) = lex::parse_quoted(v).ok_or(HeaderError::UnterminatedQuote)?;
                    let len = v.len() - tail.len();
                    let (quoted, tail) = v.split_at(len);
                    (Some(SmolStr::new(quoted)), tail)
                } else {
                    let (tok, tail) = lex::take_while(v, is_gen_value);
                    if tok.is_empty() {
                        return Err(HeaderError::Param);
                    }
                    (Some(SmolStr::new(tok)), tail)
                }
            }
            None => (None, t),
        };
        out.push(Param::new(name, value));
        s = rest;
    }
}

/// Appends `;name[=value]` for each header parameter, as stored.
fn push_params(out: &mut String, params: &Params) {
    for p in params.iter() {
        out.push(';');
        out.push_str(p.name());
        if let Some(v) = p.value() {
            out.push('=');
            out.push_str(v);
        }
    }
}

/// Strips the quotes of a quoted parameter value, if it has them.
pub fn unquote(v: &str) -> std::borrow::Cow<'_, str> {
    match lex::parse_quoted(v) {
        Some((s, "")) => s,
        _ => std::borrow::Cow::Borrowed(v),
    }
}

/// Via transport, from `sent-protocol`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Sctp,
    TlsSctp,
    Ws,
    Wss,
    /// Unknown transports are legal (RFC 4475 §3.1.1.10) and forwarded as is.
    Other(String),
}

impl Transport {
    pub fn parse(s: &str) -> Transport {
        // As written by nearly every peer: no case folding needed.
        match s {
            "UDP" => return Transport::Udp,
            "TCP" => return Transport::Tcp,
            "TLS" => return Transport::Tls,
            _ => {}
        }
        const KNOWN: [(&str, Transport); 7] = [
            ("UDP", Transport::Udp),
            ("TCP", Transport::Tcp),
            ("TLS", Transport::Tls),
            ("SCTP", Transport::Sctp),
            ("TLS-SCTP", Transport::TlsSctp),
            ("WS", Transport::Ws),
            ("WSS", Transport::Wss),
        ];
        KNOWN
            .into_iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s))
            .map(|(_, t)| t)
            .unwrap_or_else(|| Transport::Other(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
            Transport::Sctp => "SCTP",
            Transport::TlsSctp => "TLS-SCTP",
            Transport::Ws => "WS",
            Transport::Wss => "WSS",
            Transport::Other(s) => s,
        }
    }

    /// Reliable transports need no retransmission timers (RFC 3261 §17).
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Transport::Udp | Transport::Other(_))
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The RFC 3261 branch magic cookie (§8.1.1.7).
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// One Via value (RFC 3261 §20.42, RFC 3581).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `protocol-name/protocol-version`, normally `SIP/2.0` (not copied then).
    pub protocol: std::borrow::Cow<'static, str>,
    pub transport: Transport,
    pub host: Host,
    pub port: Option<u16>,
    pub params: Params,
}

impl Via {
    /// A Via for an outgoing request; `branch` should come from
    /// [`new_branch`].
    pub fn new(transport: Transport, host: Host, port: Option<u16>, branch: &str) -> Via {
        let mut params = Params::new();
        params.set("branch", Some(SmolStr::new(branch)));
        Via {
            protocol: "SIP/2.0".into(),
            transport,
            host,
            port,
            params,
        }
    }

    pub fn parse(s: &str) -> Result<Via, HeaderError> {
        let s = lex::trim_ws(s);
        // sent-protocol: LWS is allowed around each '/' (RFC 3261 SLASH).
        let mut rest = s;
        let mut parts = [""; 3];
        for (i, part) in parts.iter_mut().enumerate() {
            if i > 0 {
                rest = lex::trim_ws_start(rest)
                    .strip_prefix('/')
                    .map(lex::trim_ws_start)
                    .ok_or(HeaderError::Syntax)?;
            }
            let (tok, tail) = lex::take_while(rest, lex::is_token);
            if tok.is_empty() {
                return Err(HeaderError::Syntax);
            }
            *part = tok;
            rest = tail;
        }
        let [name, version, transport] = parts;
        let after = lex::trim_ws_start(rest);
        if after.len() == rest.len() {
            return Err(HeaderError::Syntax);
        }

        let (host_text, after_host) = if after.starts_with('[') {
            let close = after.find(']').ok_or(HeaderError::Syntax)?;
            after.split_at(close + 1)
        } else {
            lex::take_while(after, |b| {
                b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
            })
        };
        let host = Host::parse(host_text)?;
        let t = lex::trim_ws_start(after_host);
        let (port, rest) = match t.strip_prefix(':') {
            Some(p) => {
                let (digits, tail) = lex::take_while(lex::trim_ws_start(p), |b| b.is_ascii_digit());
                (
                    Some(digits.parse::<u16>().map_err(|_| HeaderError::Range)?),
                    tail,
                )
            }
            None => (None, after_host),
        };

        let mut params = Params::new();
        let rest = parse_params(rest, &mut params)?;
        if !lex::trim_ws(rest).is_empty() {
            return Err(HeaderError::Syntax);
        }
        let via = Via {
            protocol: if name == "SIP" && version == "2.0" {
                std::borrow::Cow::Borrowed("SIP/2.0")
            } else {
                std::borrow::Cow::Owned(format!("{name}/{version}"))
            },
            transport: Transport::parse(transport),
            host,
            port,
            params,
        };
        via.check_params()?;
        Ok(via)
    }

    /// Enforces the value grammar of the parameters the stack acts on, so a
    /// message that parses never yields a surprise later.
    fn check_params(&self) -> Result<(), HeaderError> {
        // Only the first parameter of each name counts, as `Params::get` finds it: a later
        // duplicate is never read.
        let mut seen = [false; 5];
        for p in self.params.iter() {
            let name = p.name();
            let k = match name.len() {
                6 if name.eq_ignore_ascii_case("branch") => 0,
                8 if name.eq_ignore_ascii_case("received") => 1,
                5 if name.eq_ignore_ascii_case("rport") => 2,
                3 if name.eq_ignore_ascii_case("ttl") => 3,
                5 if name.eq_ignore_ascii_case("maddr") => 4,
                _ => continue,
            };
            if std::mem::replace(&mut seen[k], true) {
                continue;
            }
            let v = p.value();
            let ok = match (k, v) {
                (0, v) => v.is_some_and(lex::is_token_str),
                (1, v) => v.and_then(parse_ip).is_some(),
                (2, None) => true,
                (2, Some(v)) => v.parse::<u16>().is_ok(),
                (3, v) => v.is_some_and(|v| v.parse::<u8>().is_ok()),
                (_, None) => false,
                (_, Some(v)) => {
                    Host::parse(v)?;
                    true
                }
            };
            if !ok {
                return Err(HeaderError::Param);
            }
        }
        Ok(())
    }

    pub fn branch(&self) -> Option<&str> {
        self.params.value("branch")
    }

    /// Whether the branch carries the RFC 3261 magic cookie, i.e. whether
    /// RFC 3261 (rather than RFC 2543) transaction matching applies.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch()
            .is_some_and(|b| b.starts_with(MAGIC_COOKIE) && b.len() > MAGIC_COOKIE.len())
    }

    /// `received`, accepted with or without `[ ]` (RFC 5118 §4.5).
    pub fn received(&self) -> Option<IpAddr> {
        self.params.value("received").and_then(parse_ip)
    }

    /// `Some(None)` for a bare `;rport` request, `Some(Some(port))` once a
    /// server has filled it in (RFC 3581).
    pub fn rport(&self) -> Option<Option<u16>> {
        let p = self.params.get("rport")?;
        Some(p.value().and_then(|v| v.parse().ok()))
    }

    pub fn maddr(&self) -> Option<&str> {
        self.params.value("maddr")
    }

    pub fn ttl(&self) -> Option<u8> {
        self.params.value("ttl").and_then(|v| v.parse().ok())
    }

    /// sent-by port, or the transport default (RFC 3261 §18.2.2).
    pub fn sent_by_port(&self) -> u16 {
        self.port.unwrap_or(match self.transport {
            Transport::Tls | Transport::TlsSctp => 5061,
            Transport::Ws => 80,
            Transport::Wss => 443,
            _ => 5060,
        })
    }
}

fn parse_ip(v: &str) -> Option<IpAddr> {
    let inner = v.strip_prefix('[').and_then(|v| v.strip_suffix(']'));
    match inner {
        Some(v6) => uri::parse_v6(v6).map(IpAddr::V6),
        None => v.parse().ok().or_else(|| uri::parse_v6(v).map(IpAddr::V6)),
    }
}

impl Via {
    /// Appends the Via value's wire form to `out` (what `Display` writes). Every request the
    /// server receives has its top Via re-rendered (`received`/`rport`), so this avoids `fmt`.
    pub fn push_to(&self, out: &mut String) {
        out.push_str(&self.protocol);
        out.push('/');
        out.push_str(self.transport.as_str());
        out.push(' ');
        self.host.push_to(out);
        if let Some(p) = self.port {
            out.push(':');
            lex::push_decimal(out, u64::from(p));
        }
        push_params(out, &self.params);
    }
}

impl fmt::Display for Via {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(96);
        self.push_to(&mut s);
        f.write_str(&s)
    }
}

/// Parses every Via value of one header field.
pub fn parse_vias(value: &str) -> Result<Vec<Via>, HeaderError> {
    split_list(value).map(|v| v.and_then(Via::parse)).collect()
}

/// `name-addr` or `addr-spec` with header parameters: the value of From,
/// To, Contact, Route, Record-Route, Refer-To, P-Asserted-Identity...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr {
    /// Unquoted and unescaped.
    pub display_name: Option<String>,
    pub uri: Uri,
    pub params: Params,
}

impl NameAddr {
    pub fn new(uri: Uri) -> NameAddr {
        NameAddr {
            display_name: None,
            uri,
            params: Params::new(),
        }
    }

    pub fn parse(s: &str) -> Result<NameAddr, HeaderError> {
        let s = lex::trim_ws(s);
        if s.is_empty() {
            return Err(HeaderError::Empty);
        }
        let (display_name, angle) = if s.starts_with('"') {
            let (dn, rest) = lex::parse_quoted(s).ok_or(HeaderError::UnterminatedQuote)?;
            let rest = lex::trim_ws_start(rest);
            if !rest.starts_with('<') {
                return Err(HeaderError::Syntax);
            }
            (Some(dn.into_owned()), Some(rest))
        } else if let Some(lt) =
            lex::find_byte(s, b"<;\"").filter(|&i| s.as_bytes().get(i) == Some(&b'<'))
        {
            // Only a '<' ahead of any ';' or '"' opens a name-addr; later
            // ones belong to quoted parameter values of a bare addr-spec.
            let (dn, rest) = s.split_at(lt);
            let dn = lex::trim_ws(dn);
            // Unquoted display names are `*(token LWS)` (RFC 4475 §3.1.2.15);
            // no LWS before '<' is tolerated (RFC 4475 §3.1.1.6).
            if !dn.bytes().all(|b| lex::is_token(b) || lex::is_ws(b)) {
                return Err(HeaderError::DisplayName);
            }
            ((!dn.is_empty()).then(|| dn.to_owned()), Some(rest))
        } else {
            (None, None)
        };

        let (uri, rest) = match angle {
            Some(a) => {
                let inner = a.strip_prefix('<').ok_or(HeaderError::Syntax)?;
                let (uri_text, rest) =
                    lex::split_once_byte(inner, b'>').ok_or(HeaderError::Syntax)?;
                // Uri::parse rejects the spaces of RFC 4475 §3.1.2.14.
                (Uri::parse(uri_text)?, rest)
            }
            None => {
                // In a bare addr-spec, ';' starts header parameters
                // (RFC 3261 §20.10, RFC 4475 §3.3.12).
                let end = lex::find_byte(s, b"; \t").unwrap_or(s.len());
                let (uri_text, rest) = s.split_at(end);
                if uri_text.contains(['?', ',']) {
                    return Err(HeaderError::NeedsAngleBrackets);
                }
                (Uri::parse(uri_text)?, rest)
            }
        };
        let mut params = Params::new();
        let rest = parse_params(rest, &mut params)?;
        if !lex::trim_ws(rest).is_empty() {
            return Err(HeaderError::Syntax);
        }
        Ok(NameAddr {
            display_name,
            uri,
            params,
        })
    }

    pub fn tag(&self) -> Option<&str> {
        self.params.value("tag")
    }

    pub fn set_tag(&mut self, tag: &str) {
        self.params.set("tag", Some(SmolStr::new(tag)));
    }

    /// The `expires` contact parameter; `None` when absent or not a valid
    /// delta-seconds, which RFC 3261 §10.3 lets a registrar treat as its
    /// default (RFC 4475 §3.1.2.4).
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires").and_then(|v| v.parse().ok())
    }

    /// The `q` contact parameter in thousandths (0..=1000), avoiding float
    /// comparisons when ordering contacts.
    pub fn q(&self) -> Option<u16> {
        let v = self.params.value("q")?;
        let (int, frac) = v.split_once('.').unwrap_or((v, ""));
        if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let whole = match int {
            "0" => 0,
            "1" if frac.bytes().all(|b| b == b'0') => 1000,
            _ => return None,
        };
        let milli = frac
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
        Some(whole + milli)
    }
}

impl NameAddr {
    /// Appends the wire form to `out` (what `Display` writes).
    pub fn push_to(&self, out: &mut String) {
        if let Some(dn) = &self.display_name {
            lex::write_quoted(out, dn);
            out.push(' ');
        }
        out.push('<');
        self.uri.push_to(out);
        out.push('>');
        push_params(out, &self.params);
    }
}

impl fmt::Display for NameAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::with_capacity(96);
        self.push_to(&mut s);
        f.write_str(&s)
    }
}

/// Parses a list-valued name-addr header such as Route or Record-Route.
pub fn parse_name_addrs(value: &str) -> Result<Vec<NameAddr>, HeaderError> {
    split_list(value)
        .map(|v| v.and_then(NameAddr::parse))
        .collect()
}

/// The combined value of all Contact fields of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// `Contact: *`, only meaningful in a REGISTER removing all bindings.
    Wildcard,
    List(Vec<NameAddr>),
}

impl Contacts {
    /// Parses the Contact field values of one message, in order.
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Contacts, HeaderError> {
        let mut list = Vec::new();
        let mut wildcard = false;
        for value in values {
            for item in split_list(value) {
                let item = item?;
                if item == "*" {
                    wildcard = true;
                } else {
                    list.push(NameAddr::parse(item)?);
                }
            }
        }
        match (wildcard, list.is_empty()) {
            (true, true) => Ok(Contacts::Wildcard),
            (true, false) => Err(HeaderError::Wildcard),
            (false, _) => Ok(Contacts::List(list)),
        }
    }

    /// The contacts, empty for the wildcard.
    pub fn as_slice(&self) -> &[NameAddr] {
        match self {
            Contacts::Wildcard => &[],
            Contacts::List(l) => l,
        }
    }
}

/// CSeq (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq {
    pub seq: u32,
    pub method: Method,
}

impl CSeq {
    pub fn parse(s: &str) -> Result<CSeq, HeaderError> {
        let s = lex::trim_ws(s);
        let (digits, rest) = lex::take_while(s, |b| b.is_ascii_digit());
        let method = lex::trim_ws_start(rest);
        if digits.is_empty() || method.len() == rest.len() {
            return Err(HeaderError::Syntax);
        }
        Ok(CSeq {
            seq: parse_u32(digits)?,
            method: Method::parse(method).map_err(|_| HeaderError::Method)?,
        })
    }
}

impl fmt::Display for CSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method)
    }
}

/// Replaces (RFC 3891 §6.1): the dialog an INVITE is to take the place of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaces {
    pub call_id: String,
    /// The tag of the dialog's party that receives the INVITE (ours, when it is for us).
    pub to_tag: String,
    /// The tag of the party being replaced.
    pub from_tag: String,
    /// Only an early dialog may be replaced.
    pub early_only: bool,
}

impl Replaces {
    pub fn parse(s: &str) -> Result<Replaces, HeaderError> {
        let s = lex::trim_ws(s);
        let end = s
            .find(|c: char| c == ';' || c.is_ascii_whitespace())
            .unwrap_or(s.len());
        let (call_id, rest) = s.split_at(end);
        check_call_id(call_id)?;
        let mut params = Params::new();
        if !lex::trim_ws(parse_params(rest, &mut params)?).is_empty() {
            return Err(HeaderError::Syntax);
        }
        let tag = |name: &str| {
            params
                .value(name)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or(HeaderError::Param)
        };
        Ok(Replaces {
            call_id: call_id.to_owned(),
            to_tag: tag("to-tag")?,
            from_tag: tag("from-tag")?,
            early_only: params.get("early-only").is_some(),
        })
    }
}

/// Parses `1*DIGIT` into a u32, allowing leading zeros (RFC 4475 §3.1.1.1)
/// and refusing anything over 2^32-1 (RFC 4475 §3.1.2.4).
pub fn parse_u32(s: &str) -> Result<u32, HeaderError> {
    let s = lex::trim_ws(s);
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HeaderError::Syntax);
    }
    s.bytes().try_fold(0u32, |acc, b| {
        acc.checked_mul(10)
            .and_then(|a| a.checked_add(u32::from(b - b'0')))
            .ok_or(HeaderError::Range)
    })
}

/// Validates a Call-ID: `word ["@" word]` (RFC 3261 §25.1).
pub fn check_call_id(s: &str) -> Result<(), HeaderError> {
    let is_word = |w: &str| {
        !w.is_empty()
            && w.bytes().all(|b| {
                lex::is_token(b)
                    || matches!(
                        b,
                        b'(' | b')'
                            | b'<'
                            | b'>'
                            | b':'
                            | b'\\'
                            | b'"'
                            | b'/'
                            | b'['
                            | b']'
                            | b'?'
                            | b'{'
                            | b'}'
                    )
            })
    };
    let ok = match s.split_once('@') {
        Some((a, b)) => is_word(a) && is_word(b),
        None => is_word(s),
    };
    if ok {
        Ok(())
    } else {
        Err(HeaderError::Syntax)
    }
}

/// One `auth-param` of a challenge or credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AuthParam {
    /// Borrowed for the names digest uses, which every REGISTER and INVITE carries.
    name: std::borrow::Cow<'static, str>,
    /// Where the unquoted value lies in its header's `values`.
    value: std::ops::Range<usize>,
    /// Whether it was (and will be written as) a quoted-string; some
    /// servers insist on `qop=auth` and `nc=...` being unquoted.
    quoted: bool,
}

/// The parameters of a challenge or credentials: every unquoted value in one string, one after
/// another, so that a digest header of ten parameters costs two allocations, not ten or more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct AuthParams {
    params: Vec<AuthParam>,
    values: String,
}

impl AuthParams {
    fn with_capacity(params: usize, text: usize) -> AuthParams {
        AuthParams {
            params: Vec::with_capacity(params),
            values: String::with_capacity(text),
        }
    }

    fn push(&mut self, name: std::borrow::Cow<'static, str>, value: &str, quoted: bool) {
        let start = self.values.len();
        self.values.push_str(value);
        self.params.push(AuthParam {
            name,
            value: start..self.values.len(),
            quoted,
        });
    }

    fn value(&self, p: &AuthParam) -> &str {
        self.values.get(p.value.clone()).unwrap_or("")
    }

    /// The same parameters with those called `name` (any case) left out, or given `value`.
    fn rebuilt(&self, name: &str, value: Option<&str>) -> AuthParams {
        let mut out = AuthParams::with_capacity(self.params.len(), self.values.len());
        for p in &self.params {
            match (p.name.eq_ignore_ascii_case(name), value) {
                (false, _) => out.push(p.name.clone(), self.value(p), p.quoted),
                (true, Some(v)) => out.push(p.name.clone(), v, p.quoted),
                (true, None) => {}
            }
        }
        out
    }

    /// Case-insensitive lookup of an auth-param's unquoted value.
    fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
            .map(|p| self.value(p))
    }
}

/// `name` as an [`AuthParam`] name, not copied when it is one digest defines (as written).
fn auth_param_name(name: &str) -> std::borrow::Cow<'static, str> {
    const DIGEST: [&str; 11] = [
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "cnonce",
        "qop",
        "nc",
        "opaque",
        "stale",
    ];
    lex::known_or_owned(name, &DIGEST)
}

fn parse_auth(s: &str) -> Result<(String, AuthParams), HeaderError> {
    let s = lex::trim_ws(s);
    let (scheme, rest) = lex::take_while(s, lex::is_token);
    if scheme.is_empty() {
        return Err(HeaderError::Syntax);
    }
    let rest = lex::trim_ws(rest);
    // At most one parameter per comma, plus one; the values are shorter than the text.
    let mut params = AuthParams::with_capacity(
        memchr::memchr_iter(b',', rest.as_bytes()).count() + 1,
        rest.len(),
    );
    if !rest.is_empty() {
        for item in split_list(rest) {
            let item = item?;
            let (name, t) = lex::take_while(item, lex::is_token);
            let v = lex::trim_ws_start(t)
                .strip_prefix('=')
                .map(lex::trim_ws_start)
                .ok_or(HeaderError::Param)?;
            if name.is_empty() {
                return Err(HeaderError::Param);
            }
            let (value, quoted) = if v.starts_with('"') {
                match lex::parse_quoted(v) {
                    Some((q, tail)) if lex::trim_ws(tail).is_empty() => (q, true),
                    Some(_) => return Err(HeaderError::Param),
                    None => return Err(HeaderError::UnterminatedQuote),
                }
            } else if lex::is_token_str(v) {
                (std::borrow::Cow::Borrowed(v), false)
            } else {
                return Err(HeaderError::Param);
            };
            params.push(auth_param_name(name), &value, quoted);
        }
    }
    Ok((scheme.to_owned(), params))
}

fn write_auth(f: &mut fmt::Formatter<'_>, scheme: &str, params: &AuthParams) -> fmt::Result {
    f.write_str(scheme)?;
    for (i, p) in params.params.iter().enumerate() {
        f.write_str(if i == 0 { " " } else { ", " })?;
        let value = params.value(p);
        if p.quoted {
            let mut s = String::with_capacity(value.len() + 2);
            lex::write_quoted(&mut s, value);
            write!(f, "{}={}", p.name, s)?;
        } else {
            write!(f, "{}={}", p.name, value)?;
        }
    }
    Ok(())
}

macro_rules! auth_type {
    ($(#[$doc:meta])* $ty:ident { $($getter:ident => $pname:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $ty {
            pub scheme: String,
            params: AuthParams,
        }

        impl $ty {
            pub fn new(scheme: &str) -> $ty {
                $ty { scheme: scheme.to_owned(), params: AuthParams::default() }
            }

            pub fn parse(s: &str) -> Result<$ty, HeaderError> {
                let (scheme, params) = parse_auth(s)?;
                Ok($ty { scheme, params })
            }

            pub fn is_digest(&self) -> bool {
                self.scheme.eq_ignore_ascii_case("Digest")
            }

            /// Case-insensitive lookup of an auth-param's unquoted value.
            pub fn param(&self, name: &str) -> Option<&str> {
                self.params.get(name)
            }

            pub fn push(&mut self, name: &str, value: &str, quoted: bool) -> &mut $ty {
                self.params.push(auth_param_name(name), value, quoted);
                self
            }

            /// Drops every parameter called `name` (any case).
            pub fn remove(&mut self, name: &str) -> &mut $ty {
                self.params = self.params.rebuilt(name, None);
                self
            }

            /// Gives every parameter called `name` (any case) this unquoted value, in its place
            /// and with its quoting.
            pub fn set(&mut self, name: &str, value: &str) -> &mut $ty {
                self.params = self.params.rebuilt(name, Some(value));
                self
            }

            $(pub fn $getter(&self) -> Option<&str> { self.param($pname) })*
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_auth(f, &self.scheme, &self.params)
            }
        }
    };
}

auth_type!(
    /// WWW-Authenticate / Proxy-Authenticate (RFC 3261 §20.44, §20.27).
    Challenge {
        realm => "realm",
        nonce => "nonce",
        opaque => "opaque",
        algorithm => "algorithm",
        qop => "qop",
        domain => "domain",
    }
);

auth_type!(
    /// Authorization / Proxy-Authorization (RFC 3261 §20.7, §20.28).
    Credentials {
        username => "username",
        realm => "realm",
        nonce => "nonce",
        uri => "uri",
        response => "response",
        algorithm => "algorithm",
        cnonce => "cnonce",
        opaque => "opaque",
        qop => "qop",
        nc => "nc",
    }
);

impl Challenge {
    pub fn stale(&self) -> bool {
        self.param("stale")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    }

    /// The qop-options, e.g. `["auth", "auth-int"]`.
    pub fn qop_options(&self) -> impl Iterator<Item = &str> {
        self.qop()
            .unwrap_or("")
            .split(',')
            .map(lex::trim_ws)
            .filter(|s| !s.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_compact_forms() {
        assert_eq!(HeaderName::parse("MaX-fOrWaRdS"), HeaderName::MaxForwards);
        assert_eq!(HeaderName::parse("i"), HeaderName::CallId);
        assert_eq!(HeaderName::parse("L"), HeaderName::ContentLength);
        assert_eq!(HeaderName::parse("r"), HeaderName::ReferTo);
        assert_eq!(HeaderName::parse("x"), HeaderName::SessionExpires);
        assert_eq!(HeaderName::parse("k"), HeaderName::Supported);
        assert_eq!(HeaderName::parse("a").as_str(), "Accept-Contact");
        assert_eq!(
            HeaderName::parse("www-authenticate").as_str(),
            "WWW-Authenticate"
        );
        assert_eq!(
            HeaderName::parse("C%6Fntact"),
            HeaderName::Other("c%6fntact".into())
        );
        assert_ne!(HeaderName::parse("C%6Fntact"), HeaderName::Contact);
        assert!(HeaderName::Via.is_list());
        assert!(!HeaderName::Date.is_list());
    }

    #[test]
    fn via_with_lws_everywhere() {
        let v = Via::parse("SIP  /   2.0 /UDP 192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v.transport, Transport::Udp);
        assert_eq!(v.host, Host::V4("192.0.2.2".parse().unwrap()));
        assert_eq!(v.branch(), Some("390skdjuw"));
        let v =
            Via::parse("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8")
                .unwrap();
        assert_eq!(v.host, Host::Domain("spindle.example.com".into()));
        assert_eq!(v.branch(), Some("z9hG4bK9ikj8"));
        assert_eq!(
            v.to_string(),
            "SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8"
        );
    }

    #[test]
    fn via_ipv6_rport_received() {
        let v = Via::parse("SIP/2.0/UDP [2001:db8::9:1]:6050;branch=z9hG4bKas3-111;rport").unwrap();
        assert_eq!(v.host, Host::V6("2001:db8::9:1".parse().unwrap()));
        assert_eq!(v.port, Some(6050));
        assert_eq!(v.rport(), Some(None));
        let v =
            Via::parse("SIP/2.0/UDP [2001:db8::9:1];received=[2001:db8::9:255];branch=z9hG4bKas3")
                .unwrap();
        assert_eq!(v.received(), "2001:db8::9:255".parse().ok());
        let v = Via::parse(
            "SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3;rport=5062",
        )
        .unwrap();
        assert_eq!(v.received(), "2001:db8::9:255".parse().ok());
        assert_eq!(v.rport(), Some(Some(5062)));
        let v = Via::parse(
            "SIP/2.0/TLS host.example.com:5061;maddr=224.2.0.1;ttl=16;received=192.0.2.1",
        )
        .unwrap();
        assert_eq!(v.maddr(), Some("224.2.0.1"));
        assert_eq!(v.ttl(), Some(16));
        assert!(v.transport.is_reliable());
    }

    #[test]
    fn via_rejects_malformed() {
        for bad in [
            "SIP/2.0/UDP 192.0.2.15;;",
            "SIP/2.0/UDP",
            "SIP/2.0 host",
            "SIP/2.0/UDPhost",
            "SIP/2.0/UDP host;branch=",
            "SIP/2.0/UDP host;received=example.com",
            "SIP/2.0/UDP host;ttl=300",
            "SIP/2.0/UDP host;ttl",
            "SIP/2.0/UDP host;rport=65536",
            "SIP/2.0/UDP host;maddr",
            "SIP/2.0/UDP host;MADDR=[::1",
            "SIP/2.0/UDP host;Branch=a b",
            "SIP/2.0/UDP host;RECEIVED=x;branch=z9hG4bK1",
            "SIP/2.0/UDP host:99999",
            "SIP/2.0/UDP 2001:db8::1",
            "SIP/2.0/UDP host junk",
        ] {
            assert!(Via::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_vias("SIP/2.0/UDP 192.0.2.15;;,;,,"),
            Err(HeaderError::Param)
        );
        // The first of a repeated parameter is the one read, and so the one checked.
        let v =
            Via::parse(r#"SIP/2.0/udp host;branch=z9hG4bK1;branch="a b";rport;rport=x"#).unwrap();
        assert_eq!(v.branch(), Some("z9hG4bK1"));
        assert_eq!(v.transport, Transport::Udp);
        assert_eq!(
            parse_vias("SIP/2.0/UDP a, SIP/2.0/TCP b").map(|v| v.len()),
            Ok(2)
        );
        assert_eq!(parse_vias("SIP/2.0/UDP a,"), Err(HeaderError::EmptyElement));
    }

    #[test]
    fn name_addr_forms() {
        let n = NameAddr::parse(
            r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ; tag = 98asjd8"#,
        )
        .unwrap();
        assert_eq!(n.display_name.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(n.tag(), Some("98asjd8"));
        let n =
            NameAddr::parse("sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n").unwrap();
        assert_eq!(n.tag(), Some("1918181833n"));
        let n = NameAddr::parse("caller<sip:caller@example.com>;tag=323").unwrap();
        assert_eq!(n.display_name.as_deref(), Some("caller"));
        let n = NameAddr::parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert!(n.params.contains("unknownparam"));
        assert!(n.uri.param("unknownparam").is_none());
        let n = NameAddr::parse("<sip:+19725552222@gw1.example.net;unknownparam>").unwrap();
        assert!(n.params.is_empty());
        assert!(n.uri.param("unknownparam").is_some());
        let n = NameAddr::parse(r#"<sip:a@b>;+sip.instance="<urn:uuid:1;2>";expires=60;q=0.7"#)
            .unwrap();
        assert_eq!(n.params.value("+sip.instance"), Some(r#""<urn:uuid:1;2>""#));
        assert_eq!(n.expires(), Some(60));
        assert_eq!(n.q(), Some(700));
        assert_eq!(
            n.to_string(),
            r#"<sip:a@b>;+sip.instance="<urn:uuid:1;2>";expires=60;q=0.7"#
        );
    }

    #[test]
    fn name_addr_rejections() {
        assert_eq!(
            NameAddr::parse(r#""Mr. J. User <sip:j.user@example.com>"#),
            Err(HeaderError::UnterminatedQuote)
        );
        assert!(matches!(
            NameAddr::parse(r#""Watson, Thomas" < sip:t.watson@example.org >"#),
            Err(HeaderError::Uri(_))
        ));
        assert_eq!(
            NameAddr::parse("Bell, Alexander <sip:a.g.bell@example.com>;tag=43"),
            Err(HeaderError::DisplayName)
        );
        assert_eq!(
            NameAddr::parse("sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
            Err(HeaderError::NeedsAngleBrackets)
        );
        assert!(NameAddr::parse(r#""Joe" <sip:joe@example.org>;;;;"#).is_err());
        assert!(NameAddr::parse("<sip:a@b").is_err());
        assert!(NameAddr::parse("<sip:a@b> junk").is_err());
        assert!(NameAddr::parse("").is_err());
    }

    #[test]
    fn contacts_and_wildcard() {
        let c = Contacts::parse(["<sip:a@h>, \"B, x\" <sip:b@h>;expires=0", "sip:c@h"]).unwrap();
        assert_eq!(c.as_slice().len(), 3);
        assert_eq!(Contacts::parse(["*"]), Ok(Contacts::Wildcard));
        assert_eq!(
            Contacts::parse(["*", "<sip:a@h>"]),
            Err(HeaderError::Wildcard)
        );
    }

    #[test]
    fn cseq_range_and_method() {
        let c = CSeq::parse("0009 INVITE").unwrap();
        assert_eq!((c.seq, c.method), (9, Method::Invite));
        assert_eq!(CSeq::parse("4294967295 ACK").map(|c| c.seq), Ok(u32::MAX));
        assert_eq!(CSeq::parse("4294967296 ACK"), Err(HeaderError::Range));
        assert_eq!(
            CSeq::parse("36893488147419103232 REGISTER"),
            Err(HeaderError::Range)
        );
        assert!(CSeq::parse("INVITE").is_err());
        assert!(CSeq::parse("1INVITE").is_err());
        assert!(CSeq::parse("1 INVITE x").is_err());
        assert_eq!(
            CSeq::parse("1 RE%47IST%45R").map(|c| c.method),
            Ok(Method::Extension("RE%47IST%45R".into()))
        );
    }

    #[test]
    fn call_id_words() {
        assert!(check_call_id("intmeth.word%ZK-!.*_+'@word`~)(><:\\/\"][?}{").is_ok());
        assert!(check_call_id("a@b@c").is_err());
        assert!(check_call_id("a b").is_err());
        assert!(check_call_id("").is_err());
    }

    #[test]
    fn digest_credentials_and_challenges() {
        let c = Credentials::parse(
            r#"Digest username="bob", realm="biloxi.com", nonce="dcd98b, 7102", uri="sip:bob@biloxi.com", qop=auth, nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert!(c.is_digest());
        assert_eq!(c.username(), Some("bob"));
        assert_eq!(c.nonce(), Some("dcd98b, 7102"));
        assert_eq!(c.qop(), Some("auth"));
        assert_eq!(c.nc(), Some("00000001"));
        assert_eq!(Credentials::parse(&c.to_string()), Ok(c));

        let ch = Challenge::parse(r#"Digest realm="atlanta.com", qop="auth,auth-int", nonce="84a4cc6f", stale=TRUE, algorithm=MD5"#).unwrap();
        assert!(ch.stale());
        assert_eq!(ch.qop_options().collect::<Vec<_>>(), ["auth", "auth-int"]);
        assert_eq!(ch.algorithm(), Some("MD5"));

        let odd = Credentials::parse("NoOneKnowsThisScheme opaque-data=here").unwrap();
        assert_eq!(odd.scheme, "NoOneKnowsThisScheme");
        assert_eq!(odd.param("opaque-data"), Some("here"));
        assert!(Credentials::parse(r#"Digest realm="x"#).is_err());
        assert!(Credentials::parse("Digest realm").is_err());
        assert!(Credentials::parse("Digest a=b,,c=d").is_err());
    }

    #[test]
    fn auth_params_are_removed_and_replaced_in_place() {
        let mut c =
            Credentials::parse(r#"Digest username="al\"ice", nc=00000001, qop=auth, uri="sip:x""#)
                .unwrap();
        assert_eq!(c.username(), Some("al\"ice"));
        c.set("NC", "00000002").remove("qop");
        assert_eq!(
            c.to_string(),
            r#"Digest username="al\"ice", nc=00000002, uri="sip:x""#
        );
        assert_eq!(c.nc(), Some("00000002"));
        assert_eq!(c.qop(), None);
        assert_eq!(Credentials::parse(&c.to_string()), Ok(c));
    }

    #[test]
    fn replaces_names_a_dialog_by_call_id_and_both_tags() {
        let r = Replaces::parse("425928@bobster.example.org;to-tag=7743;from-tag=6472").unwrap();
        assert_eq!(r.call_id, "425928@bobster.example.org");
        assert_eq!((r.to_tag.as_str(), r.from_tag.as_str()), ("7743", "6472"));
        assert!(!r.early_only);
        let r = Replaces::parse(" abc ; from-tag=1 ;early-only; TO-TAG=2").unwrap();
        assert_eq!((r.call_id.as_str(), r.to_tag.as_str()), ("abc", "2"));
        assert!(r.early_only);
        for bad in [
            "",
            ";to-tag=1;from-tag=2",
            "abc;to-tag=1",
            "abc;to-tag=1;from-tag=",
        ] {
            assert!(Replaces::parse(bad).is_err(), "{bad:?}");
        }
    }
}

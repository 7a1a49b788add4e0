//! SIP messages: parsing, stream framing, error responses and building
//! (RFC 3261 §7, §8.2.6, §18.3, §20.14; RFC 5626 §3.5.1).
//!
//! This module owns the message as a whole: the start line, where each
//! header field sits, the body boundary, which headers are mandatory and
//! how a rejected request is answered. Header *values* are left to
//! `super::header`.
//!
//! Parsing keeps the header section as one string and records, per field,
//! its name and the byte range of its value, so that headers nobody asks
//! about cost a range and nothing more. The headers every transaction and
//! dialog needs (Via, From, To, Call-ID, CSeq, Max-Forwards, Contact) are
//! typed once at parse time, because a server must validate them anyway to
//! answer 400 statelessly; everything else is typed on request.
//!
//! Hand-written rather than built on `rsip`, which is unmaintained and
//! fails compact forms, folded lines, IPv6 Via hosts and tel: URIs.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use smol_str::SmolStr;

use super::header::{
    self, CSeq, Challenge, Contacts, Credentials, HeaderError, HeaderName, NameAddr, Via,
    MAGIC_COOKIE,
};
use super::lex;
use super::uri::{self, Uri, UriError};

/// Largest message accepted by [`parse`] and sensible for [`frame`]: a
/// UDP datagram cannot be bigger, and nothing a PBX handles needs more.
pub const MAX_MESSAGE_SIZE: usize = 64 * 1024;

/// Request method. Methods are case-sensitive (RFC 3261 §7.1), so
/// `invite` and `RE%47IST%45R` are extension methods.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Invite,
    Ack,
    Bye,
    Cancel,
    Register,
    Options,
    Info,
    Update,
    Prack,
    Subscribe,
    Notify,
    Refer,
    Message,
    Publish,
    Extension(String),
}

impl Method {
    pub fn parse(s: &str) -> Result<Method, HeaderError> {
        Ok(match s {
            "INVITE" => Method::Invite,
            "ACK" => Method::Ack,
            "BYE" => Method::Bye,
            "CANCEL" => Method::Cancel,
            "REGISTER" => Method::Register,
            "OPTIONS" => Method::Options,
            "INFO" => Method::Info,
            "UPDATE" => Method::Update,
            "PRACK" => Method::Prack,
            "SUBSCRIBE" => Method::Subscribe,
            "NOTIFY" => Method::Notify,
            "REFER" => Method::Refer,
            "MESSAGE" => Method::Message,
            "PUBLISH" => Method::Publish,
            _ if lex::is_token_str(s) => Method::Extension(s.to_owned()),
            _ => return Err(HeaderError::Method),
        })
    }

    pub fn as_str(&self) -> &str {
        match self {
            Method::Invite => "INVITE",
            Method::Ack => "ACK",
            Method::Bye => "BYE",
            Method::Cancel => "CANCEL",
            Method::Register => "REGISTER",
            Method::Options => "OPTIONS",
            Method::Info => "INFO",
            Method::Update => "UPDATE",
            Method::Prack => "PRACK",
            Method::Subscribe => "SUBSCRIBE",
            Method::Notify => "NOTIFY",
            Method::Refer => "REFER",
            Method::Message => "MESSAGE",
            Method::Publish => "PUBLISH",
            Method::Extension(s) => s,
        }
    }
}

impl FromStr for Method {
    type Err = HeaderError;
    fn from_str(s: &str) -> Result<Method, HeaderError> {
        Method::parse(s)
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong, at the granularity a server needs to pick a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    #[error("empty message")]
    Empty,
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
    #[error("header section not terminated by an empty line")]
    Truncated,
    #[error("header section is not UTF-8")]
    NotUtf8,
    #[error("malformed start line")]
    StartLine,
    #[error("unsupported SIP version")]
    Version,
    #[error("invalid status code")]
    StatusCode,
    #[error("invalid Request-URI: {0}")]
    RequestUri(#[source] UriError),
    #[error("Request-URI must not contain headers")]
    RequestUriHeaders,
    #[error("malformed header line")]
    HeaderLine,
    #[error("invalid {name} header: {error}")]
    Header {
        name: HeaderName,
        #[source]
        error: HeaderError,
    },
    #[error("missing {0} header")]
    Missing(HeaderName),
    #[error("more than one {0} header")]
    Duplicate(HeaderName),
    #[error("invalid Content-Length")]
    ContentLength,
    #[error("Content-Length is mandatory on stream transports")]
    ContentLengthMissing,
    #[error("body shorter than Content-Length")]
    BodyTruncated,
    #[error("CSeq method does not match the request method")]
    CSeqMismatch,
    #[error("Via branch is only the magic cookie")]
    BareBranch,
}

impl ErrorKind {
    /// The status a server answers a request failing this way with.
    pub fn status(&self) -> u16 {
        match self {
            ErrorKind::Version => 505,
            ErrorKind::TooLarge(_) => 513,
            _ => 400,
        }
    }
}

/// A message that could not be accepted.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    kind: ErrorKind,
    /// What a stateless error response needs, when the failed message was
    /// a request whose dialog-identifying headers could still be found.
    reply: Option<Box<ReplyContext>>,
}

#[derive(Debug, Clone)]
struct ReplyContext {
    vias: Vec<String>,
    from: String,
    to: String,
    call_id: String,
    cseq: String,
}

impl ParseError {
    fn new(kind: ErrorKind, raw: &[u8]) -> ParseError {
        ParseError {
            kind,
            reply: salvage(raw).map(Box::new),
        }
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// 400, 505 or 513.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The stateless error response (RFC 3261 §8.2.6) for a rejected
    /// request, with Via, From, To, Call-ID and CSeq copied raw and a To
    /// tag added. `None` for responses (never answered, RFC 3261 §8.1.3.3
    /// / RFC 4475 §3.1.2.5), for ACK (never answered), and for input too
    /// broken to address a reply to.
    ///
    /// The tag is derived from the request rather than random so that a
    /// retransmitted bad request gets a byte-identical answer, which is
    /// what a stateless UAS should do (RFC 3261 §8.2.7).
    pub fn response_bytes(&self) -> Option<Vec<u8>> {
        let r = self.reply.as_deref()?;
        let status = self.status();
        let mut out = format!(
            "SIP/2.0 {status} {} ({})\r\n",
            reason_phrase(status),
            self.kind
        );
        for v in &r.vias {
            push_field(&mut out, "Via", v);
        }
        push_field(&mut out, "From", &r.from);
        let has_tag = match NameAddr::parse(&r.to) {
            Ok(n) => n.tag().is_some(),
            Err(_) => r.to.to_ascii_lowercase().contains(";tag="),
        };
        if has_tag {
            push_field(&mut out, "To", &r.to);
        } else {
            let tag = fnv1a(&[
                &r.call_id,
                &r.cseq,
                &r.from,
                r.vias.first().map_or("", |v| v),
            ]);
            push_field(&mut out, "To", &format!("{};tag={tag:016x}", r.to));
        }
        push_field(&mut out, "Call-ID", &r.call_id);
        push_field(&mut out, "CSeq", &r.cseq);
        out.push_str("Content-Length: 0\r\n\r\n");
        Some(out.into_bytes())
    }
}

fn push_field(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

fn fnv1a(parts: &[&str]) -> u64 {
    parts
        .iter()
        .flat_map(|p| p.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
}

/// Default reason phrase for the statuses this layer produces.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Trying",
        180 => "Ringing",
        183 => "Session Progress",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        413 => "Request Entity Too Large",
        415 => "Unsupported Media Type",
        416 => "Unsupported URI Scheme",
        420 => "Bad Extension",
        423 => "Interval Too Brief",
        481 => "Call/Transaction Does Not Exist",
        483 => "Too Many Hops",
        486 => "Busy Here",
        487 => "Request Terminated",
        500 => "Server Internal Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "Version Not Supported",
        513 => "Message Too Large",
        _ => "Unknown",
    }
}

/// Request line or status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    Request {
        method: Method,
        uri: Uri,
    },
    /// The standard phrase for the status is borrowed, not copied (almost every response).
    Response {
        status: u16,
        reason: Cow<'static, str>,
    },
}

/// `reason` as stored in a status line: the standard phrase when it is that.
fn reason_of(status: u16, reason: &str) -> Cow<'static, str> {
    let standard = reason_phrase(status);
    if reason == standard {
        Cow::Borrowed(standard)
    } else {
        Cow::Owned(reason.to_owned())
    }
}

#[derive(Debug, Clone)]
enum FieldValue {
    /// Byte range of the (trimmed) value inside `Message::head`.
    Raw(usize, usize),
    /// Values added by builders, and folded values, unfolded once at parse
    /// time so accessors can hand out `&str` (folding is rare on the wire). Inline when short
    /// (CSeq, Max-Forwards, Call-ID, Content-Type: most of a built message's fields), else
    /// shared, so that copying a built message (the B2BUA keeps the requests it sends) copies
    /// no text and costs no allocation.
    Owned(SmolStr),
}

#[derive(Debug, Clone)]
struct Field {
    name: HeaderName,
    value: FieldValue,
}

impl Field {
    fn text<'a>(&'a self, head: &'a str) -> &'a str {
        match &self.value {
            FieldValue::Raw(a, b) => head.get(*a..*b).unwrap_or(""),
            FieldValue::Owned(s) => s,
        }
    }
}

/// The typed core headers. Invariant: always consistent with `fields`.
///
/// Via, From and To are shared (`Arc`): a response copies them from its request, and most
/// responses never change them (a To tag is the usual exception, copied on write).
#[derive(Debug, Clone, Default)]
struct Core {
    vias: Arc<Vec<Via>>,
    from: Option<Arc<NameAddr>>,
    to: Option<Arc<NameAddr>>,
    cseq: Option<CSeq>,
    max_forwards: Option<u8>,
    contacts: Option<Contacts>,
}

enum CoreError {
    Duplicate,
    Invalid(HeaderError),
}

impl From<HeaderError> for CoreError {
    fn from(e: HeaderError) -> CoreError {
        CoreError::Invalid(e)
    }
}

const CORE_HEADERS: [HeaderName; 7] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::MaxForwards,
    HeaderName::Contact,
];

/// The text of a typed header value, checked as any new value is ([`Message::validate_new`]): a
/// display name from the directory could hold a line break.
fn rendered(render: impl FnOnce(&mut String)) -> Result<String, HeaderError> {
    let mut text = String::with_capacity(96);
    render(&mut text);
    Message::validate_new(&text)?;
    Ok(text)
}

fn is_core(name: &HeaderName) -> bool {
    core_slot(name).is_some()
}

/// Where `name` is in [`CORE_HEADERS`].
fn core_slot(name: &HeaderName) -> Option<usize> {
    Some(match name {
        HeaderName::Via => 0,
        HeaderName::From => 1,
        HeaderName::To => 2,
        HeaderName::CallId => 3,
        HeaderName::CSeq => 4,
        HeaderName::MaxForwards => 5,
        HeaderName::Contact => 6,
        _ => return None,
    })
}

fn single<'a>(mut values: impl Iterator<Item = &'a str>) -> Result<Option<&'a str>, CoreError> {
    let first = values.next();
    if values.next().is_some() {
        return Err(CoreError::Duplicate);
    }
    Ok(first)
}

fn parse_max_forwards(v: &str) -> Result<u8, HeaderError> {
    // RFC 3261 §20.22 bounds it to 0-255; a larger value is refused rather
    // than guessed at (RFC 4475 §3.1.2.4 allows either).
    u8::try_from(header::parse_u32(v)?).map_err(|_| HeaderError::Range)
}

impl Core {
    /// Types the core headers of a parsed message. One pass finds the fields of each core
    /// header (most appear once); only a header given in several fields goes back over the
    /// list. Errors are reported in `CORE_HEADERS` order, whatever the fields' order.
    fn build(fields: &[Field], head: &str) -> Result<Core, ErrorKind> {
        // For each core header: its first field, and whether more fields follow.
        let mut at: [Option<(usize, bool)>; CORE_HEADERS.len()] = [None; CORE_HEADERS.len()];
        for (i, f) in fields.iter().enumerate() {
            if let Some(k) = core_slot(&f.name) {
                match &mut at[k] {
                    None => at[k] = Some((i, false)),
                    Some((_, more)) => *more = true,
                }
            }
        }
        let mut core = Core::default();
        for (name, at) in CORE_HEADERS.iter().zip(at) {
            let done = match at {
                // Absent: the default is what typing no value gives.
                None => Ok(()),
                Some((i, false)) => core.assign(name, std::iter::once(fields[i].text(head))),
                Some((_, true)) => core.refresh(name, fields, head),
            };
            done.map_err(|e| match e {
                CoreError::Duplicate => ErrorKind::Duplicate(name.clone()),
                CoreError::Invalid(error) => ErrorKind::Header {
                    name: name.clone(),
                    error,
                },
            })?;
        }
        Ok(core)
    }

    /// Types header `name` again from all its fields (after an edit).
    fn refresh(
        &mut self,
        name: &HeaderName,
        fields: &[Field],
        head: &str,
    ) -> Result<(), CoreError> {
        self.assign(
            name,
            fields
                .iter()
                .filter(|f| &f.name == name)
                .map(|f| f.text(head)),
        )
    }

    /// Types header `name` from `values`, its fields' texts in order.
    fn assign<'a>(
        &mut self,
        name: &HeaderName,
        mut values: impl Iterator<Item = &'a str>,
    ) -> Result<(), CoreError> {
        match name {
            HeaderName::Via => {
                // Most messages carry one Via field: its list is the result, not a copy.
                let mut vias = match values.next() {
                    Some(first) => header::parse_vias(first)?,
                    None => Vec::new(),
                };
                for v in values {
                    vias.extend(header::parse_vias(v)?);
                }
                self.vias = Arc::new(vias);
            }
            HeaderName::From => {
                self.from = single(values)?
                    .map(NameAddr::parse)
                    .transpose()?
                    .map(Arc::new);
            }
            HeaderName::To => {
                self.to = single(values)?
                    .map(NameAddr::parse)
                    .transpose()?
                    .map(Arc::new);
            }
            HeaderName::CSeq => self.cseq = single(values)?.map(CSeq::parse).transpose()?,
            HeaderName::CallId => {
                single(values)?.map(header::check_call_id).transpose()?;
            }
            HeaderName::MaxForwards => {
                self.max_forwards = single(values)?.map(parse_max_forwards).transpose()?;
            }
            HeaderName::Contact => {
                self.contacts = match values.next() {
                    None => None,
                    Some(first) => Some(Contacts::parse(std::iter::once(first).chain(values))?),
                };
            }
            _ => {}
        }
        Ok(())
    }
}

/// A parsed or built SIP message.
#[derive(Debug, Clone)]
pub struct Message {
    start: StartLine,
    /// The header section as received (empty for built messages; a response built from a
    /// request shares the request's); `Raw` field values index into it.
    head: Arc<str>,
    fields: Vec<Field>,
    body: Vec<u8>,
    core: Core,
}

/// Parses one complete message from a datagram, limited to
/// [`MAX_MESSAGE_SIZE`].
pub fn parse(datagram: &[u8]) -> Result<Message, ParseError> {
    parse_with_limit(datagram, MAX_MESSAGE_SIZE)
}

/// Parses one complete message. Octets beyond Content-Length are ignored
/// (RFC 3261 §18.3, RFC 4475 §3.1.1.8); without Content-Length the body
/// is the rest of the datagram (RFC 4475 §3.4.1).
pub fn parse_with_limit(datagram: &[u8], max: usize) -> Result<Message, ParseError> {
    let data = skip_leading_crlf(datagram);
    if data.len() > max {
        return Err(ParseError::new(ErrorKind::TooLarge(max), data));
    }
    parse_inner(data).map_err(|kind| ParseError::new(kind, data))
}

/// RFC 3261 §7.5: CRLFs before the start line are ignored (they are
/// keep-alives or leftovers of the previous message on a stream).
fn skip_leading_crlf(mut data: &[u8]) -> &[u8] {
    while let Some(rest) = data.strip_prefix(b"\r\n") {
        data = rest;
    }
    data
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, tail) = needle.split_first()?;
    let mut from = 0;
    // Jump between candidates for the first byte (a CR, in practice), then compare the rest:
    // the needles are two or four bytes, too short for `memmem`'s setup to pay.
    while let Some(i) = memchr::memchr(first, hay.get(from..)?) {
        let at = from + i;
        if hay.get(at + 1..at + needle.len()) == Some(tail) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn parse_inner(data: &[u8]) -> Result<Message, ErrorKind> {
    if data.is_empty() {
        return Err(ErrorKind::Empty);
    }
    let head_end = find(data, b"\r\n\r\n").ok_or(ErrorKind::Truncated)?;
    let (head_bytes, rest) = data.split_at(head_end);
    let after_head = rest.get(4..).unwrap_or_default();
    let head = std::str::from_utf8(head_bytes).map_err(|_| ErrorKind::NotUtf8)?;

    let start_line = find(head_bytes, b"\r\n").map_or(head, |end| head.get(..end).unwrap_or(""));
    let start = parse_start_line(start_line)?;
    let fields = locate_fields(head)?;

    let mut content_length = None;
    for f in fields
        .iter()
        .filter(|f| f.name == HeaderName::ContentLength)
    {
        if content_length.is_some() {
            // Conflicting or not, a second Content-Length makes framing
            // ambiguous (RFC 4475 §3.3.9).
            return Err(ErrorKind::Duplicate(HeaderName::ContentLength));
        }
        content_length = Some(parse_content_length(f.text(head))?);
    }
    let body = match content_length {
        Some(n) => after_head.get(..n).ok_or(ErrorKind::BodyTruncated)?,
        None => after_head,
    };

    let core = Core::build(&fields, head)?;
    let msg = Message {
        start,
        head: head.into(),
        fields,
        body: body.to_vec(),
        core,
    };
    msg.check_mandatory()?;
    Ok(msg)
}

fn parse_content_length(v: &str) -> Result<usize, ErrorKind> {
    // Digits only: "-999" and "abc" must never reach arithmetic
    // (RFC 4475 §3.1.2.3).
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ErrorKind::ContentLength);
    }
    v.parse().map_err(|_| ErrorKind::ContentLength)
}

/// `SIP/2.0` is accepted; any other well-formed version is a 505 and
/// anything else is a malformed start line.
fn check_version(v: &str) -> Result<(), ErrorKind> {
    if v == "SIP/2.0" {
        // Every message we see, and two per message: the general path below splits twice.
        return Ok(());
    }
    let (proto, num) = v.split_once('/').ok_or(ErrorKind::StartLine)?;
    let (major, minor) = num.split_once('.').ok_or(ErrorKind::StartLine)?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !proto.eq_ignore_ascii_case("SIP") || !digits(major) || !digits(minor) {
        return Err(ErrorKind::StartLine);
    }
    if num == "2.0" {
        Ok(())
    } else {
        Err(ErrorKind::Version)
    }
}

fn parse_start_line(line: &str) -> Result<StartLine, ErrorKind> {
    let (first, rest) = line.split_once(' ').ok_or(ErrorKind::StartLine)?;
    if first.len() >= 4
        && first
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case("SIP/"))
    {
        check_version(first)?;
        let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|d| d.is_ascii_digit()) => code.parse().ok(),
            _ => None,
        }
        .filter(|s| (100..=699).contains(s))
        .ok_or(ErrorKind::StatusCode)?;
        return Ok(StartLine::Response {
            status,
            reason: reason_of(status, reason),
        });
    }
    let method = Method::parse(first).map_err(|_| ErrorKind::StartLine)?;
    // Exactly one SP between elements (RFC 3261 §7.1): the URI is what lies
    // between the first and last SP, so stray SPs end up inside it and are
    // rejected there (RFC 4475 §3.1.2.8-10).
    let (uri, version) = rest.rsplit_once(' ').ok_or(ErrorKind::StartLine)?;
    check_version(version)?;
    let uri = Uri::parse(uri).map_err(ErrorKind::RequestUri)?;
    Ok(StartLine::Request { method, uri })
}

/// The error of a malformed header line. A function rather than `ok_or(ErrorKind::HeaderLine)`
/// on the per-line path: that builds and drops an `ErrorKind` (a call, as it is not inlined)
/// for every line that is fine.
fn bad_line() -> ErrorKind {
    ErrorKind::HeaderLine
}

/// Finds every header field of the header section (after the start line),
/// joining folded lines.
fn locate_fields(head: &str) -> Result<Vec<Field>, ErrorKind> {
    let mut fields: Vec<Field> = Vec::with_capacity(16);
    // (name, value start, value end, folded) of the field being read.
    let mut current: Option<(HeaderName, usize, usize, bool)> = None;
    // The start line is parsed on its own; fields begin after its CRLF.
    let Some(first_end) = find(head.as_bytes(), b"\r\n") else {
        return Ok(fields);
    };
    let bytes = head.as_bytes();
    let mut offset = first_end + 2;
    while offset <= head.len() {
        let line_start = offset;
        // A bare CR or LF would make the field boundaries a matter of
        // interpretation; RFC 3261 requires CRLF. One scan finds the line's
        // end and refuses a stray CR or LF on the way.
        let rest = bytes.get(line_start..).unwrap_or_default();
        let line_end = match memchr::memchr2(b'\r', b'\n', rest) {
            None => head.len(),
            Some(n) if rest.get(n..n + 2) == Some(b"\r\n") => line_start + n,
            Some(_) => return Err(ErrorKind::HeaderLine),
        };
        offset = line_end + 2;
        let line = head.get(line_start..line_end).ok_or_else(bad_line)?;
        if line.starts_with([' ', '\t']) {
            let cur = current.as_mut().ok_or_else(bad_line)?;
            cur.2 = line_start + line.len();
            cur.3 = true;
            continue;
        }
        if let Some(done) = current.take() {
            fields.push(finish_field(head, done));
        }
        let colon = memchr::memchr(b':', line.as_bytes()).ok_or_else(bad_line)?;
        // The colon is ASCII, so both sides are on character boundaries.
        let (name, value) = (
            line.get(..colon).ok_or_else(bad_line)?,
            line.get(colon + 1..).ok_or_else(bad_line)?,
        );
        let name = lex::trim_ws(name);
        if !lex::is_token_str(name) {
            return Err(ErrorKind::HeaderLine);
        }
        let value_start = line_start + line.len() - value.len();
        current = Some((
            HeaderName::parse(name),
            value_start,
            line_start + line.len(),
            false,
        ));
    }
    if let Some(done) = current {
        fields.push(finish_field(head, done));
    }
    Ok(fields)
}

fn finish_field(head: &str, (name, start, end, folded): (HeaderName, usize, usize, bool)) -> Field {
    let raw = head.get(start..end).unwrap_or("");
    let value = if folded {
        FieldValue::Owned(lex::trim_ws(&lex::unfold(raw)).into())
    } else {
        let lead = raw.len() - lex::trim_ws_start(raw).len();
        let trimmed = lex::trim_ws(raw);
        FieldValue::Raw(start + lead, start + lead + trimmed.len())
    };
    Field { name, value }
}

impl Message {
    /// An empty request to be filled with headers.
    pub fn request(method: Method, uri: Uri) -> Message {
        Message::with_start(StartLine::Request { method, uri })
    }

    /// An empty response. `status` must be 100..=699; CR and LF in
    /// `reason` are replaced so the status line cannot be split.
    pub fn response(status: u16, reason: &str) -> Message {
        Message::with_start(StartLine::Response {
            status,
            reason: if lex::has_line_break(reason) {
                Cow::Owned(reason.replace(['\r', '\n'], " "))
            } else {
                reason_of(status, reason)
            },
        })
    }

    fn with_start(start: StartLine) -> Message {
        /// One empty header text for every built message, instead of an allocation each.
        fn empty_head() -> Arc<str> {
            static EMPTY: std::sync::LazyLock<Arc<str>> =
                std::sync::LazyLock::new(|| Arc::from(""));
            Arc::clone(&EMPTY)
        }
        Message {
            start,
            head: empty_head(),
            fields: Vec::new(),
            body: Vec::new(),
            core: Core::default(),
        }
    }

    /// A response to `request` per RFC 3261 §8.2.6: Via (all, in order),
    /// From, To, Call-ID and CSeq copied, plus Timestamp for 100 Trying
    /// (§8.2.6.1). The To tag is left to the caller ([`Message::set_to_tag`])
    /// because only the dialog layer knows whether one is needed.
    pub fn response_to(request: &Message, status: u16, reason: &str) -> Message {
        let mut rsp = Message::response(status, reason);
        let copy = |name: &HeaderName| match name {
            HeaderName::Via
            | HeaderName::From
            | HeaderName::To
            | HeaderName::CallId
            | HeaderName::CSeq => true,
            HeaderName::Timestamp => status == 100,
            _ => false,
        };
        // The copied fields keep pointing into the request's header text, which the response
        // shares instead of copying each value.
        rsp.head = request.head.clone();
        rsp.fields = request
            .fields
            .iter()
            .filter(|f| copy(&f.name))
            .cloned()
            .collect();
        rsp.core = Core {
            vias: request.core.vias.clone(),
            from: request.core.from.clone(),
            to: request.core.to.clone(),
            cseq: request.core.cseq.clone(),
            max_forwards: None,
            contacts: None,
        };
        rsp
    }

    pub fn start_line(&self) -> &StartLine {
        &self.start
    }

    pub fn is_request(&self) -> bool {
        matches!(self.start, StartLine::Request { .. })
    }

    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    pub fn uri(&self) -> Option<&Uri> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    pub fn set_uri(&mut self, new: Uri) {
        if let StartLine::Request { uri, .. } = &mut self.start {
            *uri = new;
        }
    }

    pub fn status(&self) -> Option<u16> {
        match &self.start {
            StartLine::Response { status, .. } => Some(*status),
            StartLine::Request { .. } => None,
        }
    }

    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            StartLine::Response { reason, .. } => Some(reason),
            StartLine::Request { .. } => None,
        }
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The first field named `name`, whole (not split at commas).
    pub fn header(&self, name: &HeaderName) -> Option<&str> {
        self.fields
            .iter()
            .find(|f| &f.name == name)
            .map(|f| f.text(&self.head))
    }

    /// Every value of `name` in order, with comma-separated list headers
    /// split into their elements (RFC 3261 §7.3.1); empty elements are
    /// skipped.
    pub fn headers<'a>(&'a self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> + 'a {
        let sep = name.is_list().then_some(b',');
        self.fields
            .iter()
            .filter(move |f| &f.name == name)
            .flat_map(move |f| lex::split_maybe(f.text(&self.head), sep))
            .filter(|v| !v.is_empty())
    }

    /// All fields in wire order, as (name, unfolded value).
    pub fn fields(&self) -> impl Iterator<Item = (&HeaderName, &str)> {
        self.fields.iter().map(|f| (&f.name, f.text(&self.head)))
    }

    /// Every Via value, top first.
    pub fn via_headers(&self) -> &[Via] {
        &self.core.vias
    }

    pub fn top_via(&self) -> Option<&Via> {
        self.core.vias.first()
    }

    pub fn from(&self) -> Option<&NameAddr> {
        self.core.from.as_deref()
    }

    pub fn to(&self) -> Option<&NameAddr> {
        self.core.to.as_deref()
    }

    pub fn call_id(&self) -> Option<&str> {
        self.header(&HeaderName::CallId)
    }

    pub fn cseq(&self) -> Option<&CSeq> {
        self.core.cseq.as_ref()
    }

    pub fn max_forwards(&self) -> Option<u8> {
        self.core.max_forwards
    }

    /// The Contact values of all Contact fields, in order; empty for
    /// `Contact: *` (see [`Message::is_contact_wildcard`]) or no Contact.
    pub fn contacts(&self) -> &[NameAddr] {
        self.core.contacts.as_ref().map_or(&[], Contacts::as_slice)
    }

    pub fn is_contact_wildcard(&self) -> bool {
        matches!(self.core.contacts, Some(Contacts::Wildcard))
    }

    /// The Expires header; `None` when absent or not a delta-seconds that
    /// fits 32 bits, in which case RFC 3261 §20.19 says to act as if it
    /// were 3600 (RFC 4475 §3.1.2.4).
    pub fn expires(&self) -> Option<u32> {
        self.header(&HeaderName::Expires)
            .and_then(|v| header::parse_u32(v).ok())
    }

    pub fn min_expires(&self) -> Option<u32> {
        self.header(&HeaderName::MinExpires)
            .and_then(|v| header::parse_u32(v).ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header(&HeaderName::ContentType)
    }

    /// Every name-addr of a list header such as Route, Record-Route, Path
    /// or P-Asserted-Identity, typed on demand.
    pub fn name_addrs(&self, name: &HeaderName) -> Result<Vec<NameAddr>, HeaderError> {
        let mut out = Vec::new();
        for f in self.fields.iter().filter(|f| &f.name == name) {
            out.extend(header::parse_name_addrs(f.text(&self.head))?);
        }
        Ok(out)
    }

    pub fn routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.name_addrs(&HeaderName::Route)
    }

    pub fn record_routes(&self) -> Result<Vec<NameAddr>, HeaderError> {
        self.name_addrs(&HeaderName::RecordRoute)
    }

    /// Authorization or Proxy-Authorization values, one per field.
    pub fn credentials<'a>(
        &'a self,
        name: &'a HeaderName,
    ) -> impl Iterator<Item = Result<Credentials, HeaderError>> + 'a {
        self.fields
            .iter()
            .filter(move |f| &f.name == name)
            .map(|f| Credentials::parse(f.text(&self.head)))
    }

    /// WWW-Authenticate or Proxy-Authenticate values, one per field.
    pub fn challenges<'a>(
        &'a self,
        name: &'a HeaderName,
    ) -> impl Iterator<Item = Result<Challenge, HeaderError>> + 'a {
        self.fields
            .iter()
            .filter(move |f| &f.name == name)
            .map(|f| Challenge::parse(f.text(&self.head)))
    }

    fn check_mandatory(&self) -> Result<(), ErrorKind> {
        // RFC 3261 §8.1.1 for requests; responses carry the same set, and a
        // response missing them cannot be matched to a transaction anyway.
        // Max-Forwards is tolerated missing (RFC 4475 §3.4.1, RFC 2543).
        if self.core.vias.is_empty() {
            return Err(ErrorKind::Missing(HeaderName::Via));
        }
        if self.core.from.is_none() {
            return Err(ErrorKind::Missing(HeaderName::From));
        }
        if self.core.to.is_none() {
            return Err(ErrorKind::Missing(HeaderName::To));
        }
        if self.call_id().is_none() {
            return Err(ErrorKind::Missing(HeaderName::CallId));
        }
        let cseq = self
            .core
            .cseq
            .as_ref()
            .ok_or(ErrorKind::Missing(HeaderName::CSeq))?;
        if let StartLine::Request { method, uri } = &self.start {
            if &cseq.method != method {
                return Err(ErrorKind::CSeqMismatch);
            }
            // Headers are not allowed in a Request-URI (RFC 3261 §19.1.1
            // table); a proxy must not turn them into real headers
            // (RFC 4475 §3.1.2.11), and rejecting is the safe choice.
            if uri.as_sip().is_some_and(|u| u.headers_raw().is_some()) {
                return Err(ErrorKind::RequestUriHeaders);
            }
            // A branch that is only the cookie carries no transaction id
            // (RFC 4475 §3.2.1); only the top Via is ours to judge.
            if self.top_via().and_then(Via::branch) == Some(MAGIC_COOKIE) {
                return Err(ErrorKind::BareBranch);
            }
        }
        Ok(())
    }

    /// What every new value must satisfy. Core headers are also typed, by
    /// [`Message::commit`], which rolls the edit back when that fails:
    /// checking them here as well would parse each one twice.
    fn validate_new(value: &str) -> Result<(), HeaderError> {
        if lex::has_line_break(value) {
            return Err(HeaderError::LineBreak);
        }
        Ok(())
    }

    /// Re-types a core header after a change; on failure (a second From, `*` added next to
    /// real contacts) puts back `undo`, the fields of that name as they were (with their
    /// positions), so the message is left as it was. Only the fields of the one header are
    /// copied: building a response adds a dozen headers, and copying the whole list for each
    /// was a fifth of the registrar's CPU.
    fn commit(&mut self, name: &HeaderName, undo: Vec<(usize, Field)>) -> Result<(), HeaderError> {
        if !is_core(name) {
            return Ok(());
        }
        match self.core.refresh(name, &self.fields, &self.head) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.fields.retain(|f| &f.name != name);
                for (i, f) in undo {
                    let at = i.min(self.fields.len());
                    self.fields.insert(at, f);
                }
                // The old fields were consistent, so this cannot fail.
                let _ = self.core.refresh(name, &self.fields, &self.head);
                Err(match e {
                    CoreError::Duplicate => HeaderError::Syntax,
                    CoreError::Invalid(e) => e,
                })
            }
        }
    }

    /// The fields named `name` with their positions, for [`Message::commit`] to put back.
    fn saved(&self, name: &HeaderName) -> Vec<(usize, Field)> {
        if !is_core(name) {
            return Vec::new();
        }
        self.fields
            .iter()
            .enumerate()
            .filter(|(_, f)| &f.name == name)
            .map(|(i, f)| (i, f.clone()))
            .collect()
    }

    fn owned(name: HeaderName, value: &str) -> Field {
        Field {
            name,
            value: FieldValue::Owned(lex::trim_ws(value).into()),
        }
    }

    /// Appends a field. Core headers are validated. Content-Length is
    /// always derived from the body on output, so setting it is ignored.
    pub fn push_header(
        &mut self,
        name: HeaderName,
        value: &str,
    ) -> Result<&mut Message, HeaderError> {
        // Appending a Via or a Contact only adds values at the end of the typed list: type the
        // new value alone instead of every field of that name again (a B2BUA and a registrar
        // push these into every message they build).
        match name {
            HeaderName::Via => {
                Message::validate_new(value)?;
                let mut added = header::parse_vias(lex::trim_ws(value))?;
                Arc::make_mut(&mut self.core.vias).append(&mut added);
            }
            HeaderName::Contact => {
                Message::validate_new(value)?;
                let added = Contacts::parse([lex::trim_ws(value)])?;
                match (&mut self.core.contacts, added) {
                    (None, added) => self.core.contacts = Some(added),
                    (Some(Contacts::List(list)), Contacts::List(mut added)) => {
                        list.append(&mut added);
                    }
                    // A wildcard beside other contacts: the general path decides.
                    _ => return self.edit(name, value, |fields, field| fields.push(field)),
                }
            }
            _ => return self.edit(name, value, |fields, field| fields.push(field)),
        }
        self.fields.push(Message::owned(name, value));
        Ok(self)
    }

    /// Appends a Via from its typed value. The field's text is rendered from the value and the
    /// value itself joins the typed Vias, so nothing is parsed back: the message is the one
    /// `push_header(Via, &via.to_string())` makes, for the values a builder already has typed
    /// (every request a B2BUA leg sends).
    pub fn push_via(&mut self, via: Via) -> Result<&mut Message, HeaderError> {
        let text = rendered(|out| via.push_to(out))?;
        Arc::make_mut(&mut self.core.vias).push(via);
        Ok(self.push_rendered(HeaderName::Via, text))
    }

    /// Appends a From, To or Contact from its typed value, as [`Message::push_via`] does a Via.
    /// It refuses what `push_header` refuses: a second From or To, a contact beside `*`. Any
    /// other name-addr header (Route, Refer-To, ...) is not kept typed and takes the plain path.
    pub fn push_name_addr(
        &mut self,
        name: HeaderName,
        value: NameAddr,
    ) -> Result<&mut Message, HeaderError> {
        let text = rendered(|out| value.push_to(out))?;
        if value
            .display_name
            .as_deref()
            .is_some_and(lex::has_line_break)
        {
            // Rendered with spaces instead: the typed value would not be what the text says.
            return self.push_header(name, &text);
        }
        match name {
            HeaderName::From | HeaderName::To => {
                let slot = if name == HeaderName::From {
                    &mut self.core.from
                } else {
                    &mut self.core.to
                };
                if slot.is_some() {
                    return Err(HeaderError::Syntax);
                }
                *slot = Some(Arc::new(value));
            }
            HeaderName::Contact => match &mut self.core.contacts {
                None => self.core.contacts = Some(Contacts::List(vec![value])),
                Some(Contacts::List(list)) => list.push(value),
                Some(Contacts::Wildcard) => return Err(HeaderError::Syntax),
            },
            _ => return self.push_header(name, &text),
        }
        Ok(self.push_rendered(name, text))
    }

    /// Appends `CSeq: seq method` (refused when the message has one), typed without a parse.
    pub fn push_cseq(&mut self, seq: u32, method: Method) -> Result<&mut Message, HeaderError> {
        if self.core.cseq.is_some() {
            return Err(HeaderError::Syntax);
        }
        let text = rendered(|out| {
            lex::push_decimal(out, u64::from(seq));
            out.push(' ');
            out.push_str(method.as_str());
        })?;
        self.core.cseq = Some(CSeq { seq, method });
        Ok(self.push_rendered(HeaderName::CSeq, text))
    }

    /// The field of a typed push, whose value the caller has already put into `core`.
    fn push_rendered(&mut self, name: HeaderName, text: String) -> &mut Message {
        self.fields.push(Field {
            name,
            value: FieldValue::Owned(text.into()),
        });
        self
    }

    /// Inserts a field above the first field of the same name (or at the
    /// top): how proxies add Via and Record-Route (RFC 3261 §16.6).
    pub fn prepend_header(
        &mut self,
        name: HeaderName,
        value: &str,
    ) -> Result<&mut Message, HeaderError> {
        self.edit(name, value, |fields, field| {
            let at = fields
                .iter()
                .position(|f| f.name == field.name)
                .unwrap_or(0);
            fields.insert(at, field);
        })
    }

    /// Replaces every field named `name` by one with `value`, keeping the
    /// position of the first.
    pub fn set_header(
        &mut self,
        name: HeaderName,
        value: &str,
    ) -> Result<&mut Message, HeaderError> {
        self.edit(name, value, |fields, field| {
            let at = fields.iter().position(|f| f.name == field.name);
            fields.retain(|f| f.name != field.name);
            let at = at.unwrap_or(fields.len()).min(fields.len());
            fields.insert(at, field);
        })
    }

    /// The common path of the header edits: validate, place the new field,
    /// re-type the header (rolling back on failure).
    fn edit(
        &mut self,
        name: HeaderName,
        value: &str,
        place: impl FnOnce(&mut Vec<Field>, Field),
    ) -> Result<&mut Message, HeaderError> {
        Message::validate_new(value)?;
        if name == HeaderName::ContentLength {
            return Ok(self);
        }
        let undo = self.saved(&name);
        place(&mut self.fields, Message::owned(name.clone(), value));
        self.commit(&name, undo)?;
        Ok(self)
    }

    /// Removes every field named `name`; returns how many there were.
    pub fn remove_headers(&mut self, name: &HeaderName) -> usize {
        let before = self.fields.len();
        self.fields.retain(|f| &f.name != name);
        if is_core(name) {
            // Removing values cannot make the remaining ones invalid.
            let _ = self.core.refresh(name, &self.fields, &self.head);
        }
        before - self.fields.len()
    }

    /// Pops the topmost Via value, even when it shares a field with others
    /// (`Via: a, b`): what a proxy does before forwarding a response.
    pub fn remove_top_via(&mut self) -> Option<Via> {
        let i = self.fields.iter().position(|f| f.name == HeaderName::Via)?;
        let field = self.fields.get(i)?;
        let text = field.text(&self.head);
        let mut items = lex::split_list(text, b',');
        items.next();
        let rest: Vec<&str> = items.collect();
        if rest.is_empty() {
            self.fields.remove(i);
        } else {
            let joined = rest.join(", ");
            if let Some(f) = self.fields.get_mut(i) {
                f.value = FieldValue::Owned(joined.into());
            }
        }
        if self.core.vias.is_empty() {
            None
        } else {
            Some(Arc::make_mut(&mut self.core.vias).remove(0))
        }
    }

    /// Replaces the topmost Via value, even when it shares a field with
    /// others (`Via: a, b`): how a server records `received` and `rport`
    /// on an incoming request (RFC 3261 §18.2.1, RFC 3581 §4). `via` must
    /// render as exactly one valid Via value.
    pub fn set_top_via(&mut self, via: &Via) -> Result<&mut Message, HeaderError> {
        let text = via.to_string();
        if lex::has_line_break(&text) {
            return Err(HeaderError::LineBreak);
        }
        // Re-typed from its own wire form, so that `core` agrees with what
        // `to_bytes` will write.
        let mut parsed = header::parse_vias(&text)?;
        let typed = match (parsed.pop(), parsed.is_empty()) {
            (Some(v), true) => v,
            _ => return Err(HeaderError::Syntax),
        };
        self.replace_top_via(text, typed)
    }

    /// Records on the topmost Via where a request really came from: `received`, and `rport`
    /// when given (RFC 3261 §18.2.1, RFC 3581 §4). [`Message::set_top_via`] with those two
    /// parameters set, minus the re-parse: an address and a port are always valid values, so
    /// the typed Via is edited in place. This runs on every request the server receives.
    pub fn stamp_top_via(
        &mut self,
        received: std::net::IpAddr,
        rport: Option<u16>,
    ) -> Result<&mut Message, HeaderError> {
        let mut via = self.core.vias.first().cloned().ok_or(HeaderError::Empty)?;
        // `received` takes an IPv6 address without brackets (RFC 3261 §20.42).
        via.params.set("received", Some(uri::ip_text(received)));
        if let Some(port) = rport {
            via.params.set("rport", Some(lex::decimal(u64::from(port))));
        }
        let mut text = String::with_capacity(128);
        via.push_to(&mut text);
        self.replace_top_via(text, via)
    }

    /// Puts `text` (one Via value, typed as `typed`) in place of the topmost Via value.
    fn replace_top_via(&mut self, text: String, typed: Via) -> Result<&mut Message, HeaderError> {
        let i = self
            .fields
            .iter()
            .position(|f| f.name == HeaderName::Via)
            .ok_or(HeaderError::Empty)?;
        let field = self.fields.get(i).ok_or(HeaderError::Empty)?;
        let mut joined = text;
        let mut items = lex::split_list(field.text(&self.head), b',');
        items.next();
        for rest in items {
            joined.push_str(", ");
            joined.push_str(rest);
        }
        if let Some(f) = self.fields.get_mut(i) {
            f.value = FieldValue::Owned(joined.into());
        }
        let vias = Arc::make_mut(&mut self.core.vias);
        match vias.first_mut() {
            Some(top) => *top = typed,
            None => vias.push(typed),
        }
        Ok(self)
    }

    /// Adds `;tag=` to To unless it already has one (a UAS answering
    /// outside a dialog, RFC 3261 §8.2.6.2). `tag` should come from
    /// [`new_tag`].
    pub fn set_to_tag(&mut self, tag: &str) -> Result<&mut Message, HeaderError> {
        let to = self.core.to.as_ref().ok_or(HeaderError::Empty)?;
        if to.tag().is_some() {
            return Ok(self);
        }
        if !lex::is_token_str(tag) {
            return Err(HeaderError::Param);
        }
        // Appending to the text as received, rather than re-rendering the
        // parsed value, keeps To byte-identical apart from the tag: some
        // UACs compare it textually. Either form of To (name-addr or bare
        // addr-spec) takes a trailing header parameter. The typed To gets
        // the same parameter directly: a token appended to a To that
        // parsed cannot change how the rest of it parses, so there is
        // nothing to re-check (every response a UAS sends goes through
        // here).
        let mut typed = NameAddr::clone(to);
        typed.set_tag(tag);
        let i = self
            .fields
            .iter()
            .position(|f| f.name == HeaderName::To)
            .ok_or(HeaderError::Empty)?;
        let Some(field) = self.fields.get_mut(i) else {
            return Err(HeaderError::Empty);
        };
        let old = match &field.value {
            FieldValue::Raw(a, b) => self.head.get(*a..*b).unwrap_or(""),
            FieldValue::Owned(v) => v,
        };
        let mut value = String::with_capacity(old.len() + tag.len() + 5);
        value.push_str(old);
        value.push_str(";tag=");
        value.push_str(tag);
        field.value = FieldValue::Owned(value.into());
        self.core.to = Some(Arc::new(typed));
        Ok(self)
    }

    /// Sets the body and, when given, its Content-Type.
    pub fn set_body(
        &mut self,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> Result<&mut Message, HeaderError> {
        if let Some(ct) = content_type {
            self.set_header(HeaderName::ContentType, ct)?;
        }
        self.body = body;
        Ok(self)
    }

    /// Enough room for the wire form in all but odd cases (a start-line URI over 200 bytes), so
    /// that rendering allocates once: for a built message `head` is empty or another message's,
    /// and says nothing about this one's size.
    fn wire_len_estimate(&self) -> usize {
        let fields: usize = self
            .fields
            .iter()
            .map(|f| f.name.as_str().len() + f.text(&self.head).len() + 4)
            .sum();
        // Start line, Content-Length and the blank line.
        256 + fields + self.body.len()
    }

    fn write_head(&self, out: &mut String) {
        match &self.start {
            StartLine::Request { method, uri } => {
                out.push_str(method.as_str());
                out.push(' ');
                uri.push_to(out);
                out.push_str(" SIP/2.0\r\n");
            }
            StartLine::Response { status, reason } => {
                out.push_str("SIP/2.0 ");
                lex::push_decimal(out, u64::from(*status));
                out.push(' ');
                out.push_str(reason);
                out.push_str("\r\n");
            }
        }
        for f in &self.fields {
            if f.name != HeaderName::ContentLength {
                push_field(out, f.name.as_str(), f.text(&self.head));
            }
        }
        out.push_str("Content-Length: ");
        lex::push_decimal(out, self.body.len() as u64);
        out.push_str("\r\n\r\n");
    }

    /// The canonical wire form: long header names, unfolded values, one
    /// Content-Length that matches the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.wire_len_estimate());
        self.write_head(&mut out);
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// The wire form, to be kept and sent (a transaction's transmissions): written into a
    /// buffer this thread reuses and copied once into its shared block, where
    /// `Arc::from(to_bytes())` made two blocks of every message sent.
    pub fn to_shared_bytes(&self) -> Arc<[u8]> {
        thread_local! {
            static SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        // A body that is not text (rare: SDP is) cannot join the text buffer.
        let Ok(body) = std::str::from_utf8(&self.body) else {
            return Arc::from(self.to_bytes());
        };
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut out) => {
                out.clear();
                self.write_head(&mut out);
                out.push_str(body);
                let bytes = Arc::from(out.as_bytes());
                // A rare large message (over TCP) should not pin its buffer for good.
                if out.capacity() > 16 * 1024 {
                    *out = String::new();
                }
                bytes
            }
            // Only if writing a message ever wrote another: correct, just not as cheap.
            Err(_) => Arc::from(self.to_bytes()),
        })
    }
}

/// For logs: the wire form, with a non-UTF-8 body rendered lossily. Use
/// [`Message::to_bytes`] for the wire.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        self.write_head(&mut out);
        f.write_str(&out)?;
        f.write_str(&String::from_utf8_lossy(&self.body))
    }
}

/// A branch parameter for a new client transaction: the magic cookie and
/// 64 bits from the caller's random source (RFC 3261 §8.1.1.7).
pub fn new_branch(random: u64) -> SmolStr {
    lex::prefixed_hex16(MAGIC_COOKIE, random)
}

/// A From/To tag from 64 caller-supplied random bits (RFC 3261 §19.3
/// asks for at least 32).
pub fn new_tag(random: u64) -> SmolStr {
    lex::prefixed_hex16("", random)
}

/// The result of looking for a message at the front of a stream buffer.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A complete message occupies `buf[..len]`; hand it to [`parse`].
    Message(usize),
    /// `buf[..len]` is a keep-alive: 4 for the CRLFCRLF ping of RFC 5626
    /// §3.5.1 (answer it with CRLF), 2 for a lone CRLF (a pong, or the
    /// RFC 3261 §7.5 leading CRLF; nothing to answer).
    KeepAlive(usize),
    /// More bytes are needed; the header section is not complete yet.
    Incomplete,
    /// The header section is complete and says the message is `total` bytes long; framing
    /// again before that many are buffered finds nothing new.
    Body(usize),
    /// The stream cannot be framed any more: answer with
    /// [`ParseError::response_bytes`] if any, then close the connection.
    Invalid(ParseError),
}

/// Finds the extent of the first message in a stream buffer (TCP, TLS,
/// WebSocket payloads excluded), using Content-Length, which is mandatory
/// on streams (RFC 3261 §18.3, §20.14).
pub fn frame(buf: &[u8], max: usize) -> Frame {
    if buf.starts_with(b"\r\n\r\n") {
        return Frame::KeepAlive(4);
    }
    if let Some(after) = buf.strip_prefix(b"\r\n") {
        // Wait to tell a CRLF pong from the first half of a CRLFCRLF ping.
        return if after.is_empty() || after == b"\r" {
            Frame::Incomplete
        } else {
            Frame::KeepAlive(2)
        };
    }
    if buf.is_empty() || buf == b"\r" {
        return Frame::Incomplete;
    }
    let window = buf.get(..max.min(buf.len())).unwrap_or(buf);
    let invalid = |kind| Frame::Invalid(ParseError::new(kind, window));

    if let Some(eol) = find(buf, b"\r\n") {
        if !plausible_start_line(buf.get(..eol).unwrap_or_default()) {
            return invalid(ErrorKind::StartLine);
        }
    } else if !plausible_start_line(buf) && !plausible_prefix(buf) {
        return invalid(ErrorKind::StartLine);
    }

    let Some(head_end) = find(window, b"\r\n\r\n") else {
        return if buf.len() >= max {
            invalid(ErrorKind::TooLarge(max))
        } else {
            Frame::Incomplete
        };
    };
    let head = window.get(..head_end + 2).unwrap_or(window);
    let mut length = None;
    for (name, value) in RawFields::new(head) {
        if HeaderName::parse(&name) != HeaderName::ContentLength {
            continue;
        }
        if length.is_some() {
            return invalid(ErrorKind::Duplicate(HeaderName::ContentLength));
        }
        match parse_content_length(lex::trim_ws(&value)) {
            Ok(n) => length = Some(n),
            Err(k) => return invalid(k),
        }
    }
    let Some(length) = length else {
        return invalid(ErrorKind::ContentLengthMissing);
    };
    match (head_end + 4).checked_add(length) {
        Some(total) if total <= max => {
            if buf.len() >= total {
                Frame::Message(total)
            } else {
                Frame::Body(total)
            }
        }
        _ => invalid(ErrorKind::TooLarge(max)),
    }
}

/// A request line starts with a method token and SP; a status line with
/// `SIP/`. Finer checks are left to [`parse`], whose 400 does not require
/// closing the connection.
fn plausible_start_line(line: &[u8]) -> bool {
    if line.len() >= 4
        && line
            .get(..4)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/"))
    {
        return true;
    }
    let tok = line.iter().take_while(|&&b| lex::is_token(b)).count();
    tok > 0 && line.get(tok) == Some(&b' ')
}

/// The longest method an unterminated first line may still be growing.
const MAX_METHOD_LEN: usize = 64;

/// Whether framing `buf`, a stream buffer [`frame`] found incomplete, can tell nothing new
/// until a header end (CRLFCRLF) arrives: its first line has ended, or already passed the check
/// [`frame`] makes of it (a token and a space, or `SIP/`). A reader fed a byte at a time then
/// need not frame after every byte.
pub fn awaits_header_end(buf: &[u8]) -> bool {
    find(buf, b"\r\n").is_some() || plausible_start_line(buf)
}

/// Whether an unterminated first line may still become a start line.
fn plausible_prefix(buf: &[u8]) -> bool {
    let n = buf.len().min(4);
    if buf
        .get(..n)
        .is_some_and(|p| p.eq_ignore_ascii_case(b"SIP/".get(..n).unwrap_or_default()))
    {
        return true;
    }
    let tok = buf.iter().take_while(|&&b| lex::is_token(b)).count();
    match buf.get(tok) {
        // No method is this long: a stream is not kept waiting on one.
        None => tok <= MAX_METHOD_LEN,
        Some(b' ') => tok > 0,
        Some(b'\r') => tok + 1 == buf.len(),
        _ => false,
    }
}

/// A forgiving header-line walker over raw bytes, for framing and for
/// salvaging a reply context from a message the strict parser refused.
struct RawFields<'a> {
    lines: std::iter::Peekable<std::vec::IntoIter<&'a [u8]>>,
}

impl<'a> RawFields<'a> {
    fn new(head: &'a [u8]) -> RawFields<'a> {
        let mut lines: Vec<&[u8]> = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .collect();
        if !lines.is_empty() {
            lines.remove(0); // the start line
        }
        RawFields {
            lines: lines.into_iter().peekable(),
        }
    }
}

impl Iterator for RawFields<'_> {
    /// (name, unfolded value), both lossily decoded.
    type Item = (String, String);

    fn next(&mut self) -> Option<(String, String)> {
        loop {
            let line = self.lines.next()?;
            if line.is_empty() {
                return None;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            if line.first().is_some_and(|&b| lex::is_ws(b)) {
                continue;
            }
            let (name, value) = line.split_at(colon);
            let mut value =
                String::from_utf8_lossy(value.get(1..).unwrap_or_default()).into_owned();
            while let Some(next) = self.lines.peek() {
                if !next.first().is_some_and(|&b| lex::is_ws(b)) {
                    break;
                }
                value.push(' ');
                value.push_str(&String::from_utf8_lossy(next));
                self.lines.next();
            }
            let name = String::from_utf8_lossy(name);
            return Some((
                lex::trim_ws(&name).to_owned(),
                lex::trim_ws(&lex::unfold(&value)).to_owned(),
            ));
        }
    }
}

/// Recovers what a stateless error response needs from bytes the parser
/// refused. Only requests other than ACK are answered.
fn salvage(raw: &[u8]) -> Option<ReplyContext> {
    let head = raw.get(..find(raw, b"\r\n\r\n").map_or(raw.len(), |i| i + 2))?;
    let first = head.split(|&b| b == b'\n').next()?;
    let method_len = first.iter().take_while(|&&b| lex::is_token(b)).count();
    let method = first.get(..method_len)?;
    if method.is_empty() || first.get(method_len) != Some(&b' ') || method == b"ACK" {
        return None;
    }
    let mut vias = Vec::new();
    let (mut from, mut to, mut call_id, mut cseq) = (None, None, None, None);
    for (name, value) in RawFields::new(head) {
        if value.is_empty() {
            continue;
        }
        match HeaderName::parse(&name) {
            HeaderName::Via => vias.push(value),
            HeaderName::From => {
                from.get_or_insert(value);
            }
            HeaderName::To => {
                to.get_or_insert(value);
            }
            HeaderName::CallId => {
                call_id.get_or_insert(value);
            }
            HeaderName::CSeq => {
                cseq.get_or_insert(value);
            }
            _ => {}
        }
    }
    if vias.is_empty() {
        return None;
    }
    Some(ReplyContext {
        vias,
        from: from?,
        to: to?,
        call_id: call_id?,
        cseq: cseq?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::header::Transport;
    use crate::sip::uri::Host;

    const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 70\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
        Content-Type: application/sdp\r\n\
        Content-Length: 4\r\n\
        \r\n\
        v=0\n";

    fn ok(s: &str) -> Message {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    fn err(s: &str) -> ParseError {
        match parse(s.as_bytes()) {
            Ok(m) => panic!("accepted: {m}"),
            Err(e) => e,
        }
    }

    #[test]
    fn parses_a_plain_invite() {
        let m = ok(INVITE);
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(
            m.uri().map(Uri::to_string).as_deref(),
            Some("sip:bob@biloxi.example.com")
        );
        assert_eq!(m.top_via().and_then(Via::branch), Some("z9hG4bK776asdhds"));
        assert_eq!(m.top_via().map(|v| &v.transport), Some(&Transport::Udp));
        assert_eq!(m.from().and_then(NameAddr::tag), Some("1928301774"));
        assert_eq!(m.to().and_then(|t| t.display_name.as_deref()), Some("Bob"));
        assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.atlanta.example.com"));
        assert_eq!(m.cseq().map(|c| c.seq), Some(314159));
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.contacts().len(), 1);
        assert_eq!(m.body(), b"v=0\n");
        assert_eq!(m.header(&HeaderName::ContentType), Some("application/sdp"));
    }

    #[test]
    fn round_trips_through_to_bytes() {
        let m = ok(INVITE);
        let again = parse(&m.to_bytes()).unwrap();
        assert_eq!(again.to_bytes(), m.to_bytes());
        assert_eq!(again.body(), m.body());
    }

    #[test]
    fn shared_bytes_are_the_wire_form() {
        let mut m = ok(INVITE);
        assert_eq!(&m.to_shared_bytes()[..], &m.to_bytes()[..]);
        // Twice in a row: the reused buffer starts empty each time.
        assert_eq!(&m.to_shared_bytes()[..], &m.to_bytes()[..]);
        // A body that is not UTF-8 goes out as it is.
        m.set_body(vec![0xff, 0x00, 0xfe], Some("application/octet-stream"))
            .unwrap();
        let wire = m.to_shared_bytes();
        assert_eq!(&wire[..], &m.to_bytes()[..]);
        assert!(wire.ends_with(&[0xff, 0x00, 0xfe]));
    }

    #[test]
    fn folding_compact_forms_and_list_splitting() {
        let m = ok("OPTIONS sip:a@b SIP/2.0\r\n\
            v: SIP/2.0/UDP h1;branch=z9hG4bK1 ,\r\n SIP/2.0/TCP [::1]:5070;branch=z9hG4bK2\r\n\
            Via: SIP/2.0/UDP h3;branch=z9hG4bK3\r\n\
            f: <sip:x@y>;tag=1\r\nt: sip:a@b\r\ni: cid\r\nCSeq: 1 OPTIONS\r\n\
            k: timer,\r\n  100rel\r\nl: 0\r\n\r\n");
        assert_eq!(m.via_headers().len(), 3);
        assert_eq!(
            m.via_headers().get(1).map(|v| &v.host),
            Some(&Host::V6("::1".parse().unwrap()))
        );
        assert_eq!(
            m.headers(&HeaderName::Supported).collect::<Vec<_>>(),
            ["timer", "100rel"]
        );
        assert_eq!(m.header(&HeaderName::Supported), Some("timer, 100rel"));
        assert_eq!(m.headers(&HeaderName::Via).count(), 3);
        assert_eq!(m.max_forwards(), None);
    }

    #[test]
    fn body_framing_rules() {
        let base = INVITE.replace("Content-Length: 4\r\n", "");
        assert_eq!(ok(&base).body(), b"v=0\n");
        assert_eq!(ok(&format!("{INVITE}trailing junk")).body(), b"v=0\n");
        for (cl, status) in [("5", 400), ("-1", 400), ("x", 400), ("", 400)] {
            let e = err(&INVITE.replace("Content-Length: 4", &format!("Content-Length: {cl}")));
            assert_eq!(e.status(), status, "{cl}");
        }
        let e = err(&INVITE.replace("Content-Length: 4\r\n", "Content-Length: 4\r\nl: 4\r\n"));
        assert_eq!(e.kind(), &ErrorKind::Duplicate(HeaderName::ContentLength));
        assert_eq!(
            ok(&format!("\r\n\r\n{INVITE}")).method(),
            Some(&Method::Invite)
        );
    }

    #[test]
    fn error_statuses() {
        assert_eq!(
            err(&INVITE.replace(
                "bob@biloxi.example.com SIP/2.0",
                "bob@biloxi.example.com SIP/3.0"
            ))
            .status(),
            505
        );
        assert_eq!(
            err(&INVITE.replace("CSeq: 314159 INVITE", "CSeq: 314159 BYE")).kind(),
            &ErrorKind::CSeqMismatch
        );
        assert_eq!(
            err(&INVITE.replace("Max-Forwards: 70", "Max-Forwards: 256")).status(),
            400
        );
        assert_eq!(
            err(&INVITE.replace("Call-ID", "X-Call-ID")).kind(),
            &ErrorKind::Missing(HeaderName::CallId)
        );
        assert_eq!(
            err(&INVITE.replace("z9hG4bK776asdhds", "z9hG4bK")).kind(),
            &ErrorKind::BareBranch
        );
        assert_eq!(err("").kind(), &ErrorKind::Empty);
        assert_eq!(
            err("INVITE sip:a@b SIP/2.0\r\n").kind(),
            &ErrorKind::Truncated
        );
        assert_eq!(
            err("INVITE sip:a@b SIP/2.0\r\nVia: x\nTo: y\r\n\r\n").kind(),
            &ErrorKind::HeaderLine
        );
        assert_eq!(
            err("SIP/2.0 1000 Huge\r\n\r\n").kind(),
            &ErrorKind::StatusCode
        );
        assert_eq!(
            err("SIP/2.0 099 Small\r\n\r\n").kind(),
            &ErrorKind::StatusCode
        );
        let big = format!("{INVITE}{}", "x".repeat(MAX_MESSAGE_SIZE));
        let e = err(&big);
        assert_eq!(e.status(), 513);
        assert!(e.response_bytes().is_some());
        let e = parse_with_limit(INVITE.as_bytes(), 100).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::TooLarge(100));
    }

    #[test]
    fn error_response_is_addressable_and_tagged() {
        let e = err(&INVITE.replace("Max-Forwards: 70", "Max-Forwards: 700"));
        let rsp = e.response_bytes().unwrap();
        let m = parse(&rsp).unwrap();
        assert_eq!(m.status(), Some(400));
        assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.atlanta.example.com"));
        assert!(m.to().and_then(NameAddr::tag).is_some());
        assert_eq!(m.top_via().and_then(Via::branch), Some("z9hG4bK776asdhds"));
        assert_eq!(
            m.cseq(),
            Some(&CSeq {
                seq: 314159,
                method: Method::Invite
            })
        );
        // Deterministic, so retransmissions get the same answer.
        assert_eq!(e.response_bytes(), Some(rsp));

        // Even a CSeq the parser refused is echoed verbatim: it is what the
        // client will try to match.
        let e = err(&INVITE.replace("CSeq: 314159 INVITE", "CSeq: 99999999999 INVITE"));
        let text = String::from_utf8(e.response_bytes().unwrap()).unwrap();
        assert!(text.contains("\r\nCSeq: 99999999999 INVITE\r\n"), "{text}");

        let rsp_err =
            err("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h\r\nCSeq: 99999999999 INVITE\r\n\r\n");
        assert!(rsp_err.response_bytes().is_none());
        assert!(err("garbage\r\n\r\n").response_bytes().is_none());
        let ack = INVITE
            .replace("INVITE", "ACK")
            .replace("SIP/2.0\r\n", "SIP/9.0\r\n");
        assert!(err(&ack).response_bytes().is_none());
    }

    #[test]
    fn stamping_the_top_via_matches_setting_it() {
        // Two Via values in one field: only the first changes, the second is kept as sent.
        let text = INVITE.replace(
            "branch=z9hG4bK776asdhds\r\n",
            "branch=z9hG4bK776asdhds;rport, SIP/2.0/TCP proxy.example.com;branch=z9hG4bKp\r\n",
        );
        let req = ok(&text);
        let src: std::net::IpAddr = "2001:db8::7".parse().unwrap();
        let mut stamped = req.clone();
        stamped.stamp_top_via(src, Some(5062)).unwrap();
        let mut via = req.top_via().unwrap().clone();
        via.params.set("received", Some(src.to_string().into()));
        via.params.set("rport", Some("5062".into()));
        let mut set = req.clone();
        set.set_top_via(&via).unwrap();
        assert_eq!(stamped.to_bytes(), set.to_bytes());
        assert_eq!(stamped.top_via(), set.top_via());
        let wire = parse(&stamped.to_bytes()).unwrap();
        assert_eq!(wire.top_via(), stamped.top_via());
        assert_eq!(wire.via_headers().len(), 2);
        assert_eq!(wire.top_via().and_then(Via::received), Some(src));
    }

    #[test]
    fn pushed_vias_and_contacts_are_typed_as_a_reparse_would() {
        let raw = b"REGISTER sip:a.example SIP/2.0\r\n\
            Via: SIP/2.0/UDP h1;branch=z9hG4bK1, SIP/2.0/TCP h2;branch=z9hG4bK2\r\n\
            From: <sip:a@a.example>;tag=1\r\nTo: <sip:a@a.example>\r\n\
            Call-ID: c\r\nCSeq: 1 REGISTER\r\nContact: <sip:a@h1>\r\n\
            Content-Length: 0\r\n\r\n";
        let mut m = parse(raw).unwrap();
        m.push_header(HeaderName::Via, "SIP/2.0/UDP h3;branch=z9hG4bK3")
            .unwrap()
            .push_header(
                HeaderName::Contact,
                "<sip:a@h2>;expires=60, \"B\" <sip:b@h3>",
            )
            .unwrap();
        // A wildcard beside real contacts is refused and changes nothing.
        assert!(m.push_header(HeaderName::Contact, "*").is_err());
        assert!(m.push_header(HeaderName::Via, "not a via").is_err());
        let again = parse(&m.to_bytes()).unwrap();
        assert_eq!(m.contacts(), again.contacts());
        assert_eq!(m.contacts().len(), 3);
        let hosts = |m: &Message| -> Vec<String> {
            m.core.vias.iter().map(|v| v.host.to_string()).collect()
        };
        assert_eq!(hosts(&m), ["h1", "h2", "h3"]);
        assert_eq!(hosts(&m), hosts(&again));

        // Onto a message with no Contact, and a lone wildcard.
        let mut r = Message::response(200, "OK");
        r.push_header(HeaderName::Contact, "*").unwrap();
        assert!(r.push_header(HeaderName::Contact, "<sip:x@y>").is_err());
        assert!(matches!(r.core.contacts, Some(Contacts::Wildcard)));
    }

    #[test]
    fn typed_pushes_make_the_message_a_reparse_would() {
        let uri = |s: &str| Uri::parse(s).unwrap();
        let mut from = NameAddr::new(uri("sip:100@pbx.example;user=phone"));
        from.display_name = Some("Ann \"the\" O\\Brien".into());
        from.set_tag("f1");
        let mut to = NameAddr::new(uri("sip:200@[2001:db8::1]:5070"));
        to.set_tag("t1");
        let contact = NameAddr::new(uri("sips:pbx@192.0.2.1:5061;transport=tls"));
        let via = Via::parse("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKab;rport").unwrap();

        let mut m = Message::request(Method::Invite, uri("sip:200@pbx.example"));
        m.push_via(via.clone())
            .unwrap()
            .push_header(HeaderName::MaxForwards, "70")
            .unwrap()
            .push_name_addr(HeaderName::From, from.clone())
            .unwrap()
            .push_name_addr(HeaderName::To, to.clone())
            .unwrap()
            .push_header(HeaderName::CallId, "c1")
            .unwrap()
            .push_cseq(7, Method::Invite)
            .unwrap()
            .push_name_addr(HeaderName::Contact, contact.clone())
            .unwrap()
            .push_via(via.clone())
            .unwrap();
        let again = parse(&m.to_bytes()).unwrap();
        assert_eq!(m.from(), again.from());
        assert_eq!(m.to(), again.to());
        assert_eq!(m.cseq(), again.cseq());
        assert_eq!(m.contacts(), again.contacts());
        assert_eq!(m.core.vias, again.core.vias);
        assert_eq!(m.from(), Some(&from));
        assert_eq!(m.core.vias.len(), 2);
        assert_eq!(m.to_bytes(), again.to_bytes());

        // Refused as push_header refuses them, and nothing changes.
        let before = m.to_bytes();
        assert!(m.push_name_addr(HeaderName::From, from.clone()).is_err());
        assert!(m.push_name_addr(HeaderName::To, to).is_err());
        assert!(m.push_cseq(8, Method::Bye).is_err());
        assert_eq!(m.to_bytes(), before);
        let mut r = Message::response(200, "OK");
        r.push_header(HeaderName::Contact, "*").unwrap();
        assert!(r
            .push_name_addr(HeaderName::Contact, contact.clone())
            .is_err());

        // A line break in a display name goes out as a space, and is typed as the text says.
        let mut broken = contact.clone();
        broken.display_name = Some("line\r\nX-Evil: 1".into());
        m.push_name_addr(HeaderName::Contact, broken).unwrap();
        let again = parse(&m.to_bytes()).unwrap();
        assert_eq!(m.contacts(), again.contacts());
        assert_eq!(m.contacts().len(), 2);
        assert!(!String::from_utf8_lossy(&m.to_bytes()).contains("\r\nX-Evil"));

        // Other name-addr headers take the plain path and stay untyped text.
        m.push_name_addr(HeaderName::Route, from).unwrap();
        assert_eq!(
            parse(&m.to_bytes()).unwrap().header(&HeaderName::Route),
            m.header(&HeaderName::Route)
        );
    }

    #[test]
    fn builds_responses() {
        let req = ok(INVITE);
        let mut rsp = Message::response_to(&req, 180, "Ringing");
        rsp.set_to_tag("a6c85cf").unwrap();
        rsp.push_header(HeaderName::Contact, "<sip:bob@192.0.2.4>")
            .unwrap();
        let wire = rsp.to_bytes();
        let m = parse(&wire).unwrap();
        assert_eq!(m.status(), Some(180));
        assert_eq!(m.to().and_then(NameAddr::tag), Some("a6c85cf"));
        assert_eq!(m.via_headers(), req.via_headers());
        assert_eq!(m.cseq(), req.cseq());
        assert_eq!(m.header(&HeaderName::ContentLength), Some("0"));
        // An existing tag is kept.
        rsp.set_to_tag("other").unwrap();
        assert_eq!(rsp.to().and_then(NameAddr::tag), Some("a6c85cf"));
    }

    #[test]
    fn core_slots_follow_the_core_header_order() {
        for (i, name) in CORE_HEADERS.iter().enumerate() {
            assert_eq!(core_slot(name), Some(i), "{name:?}");
        }
        assert_eq!(core_slot(&HeaderName::ContentLength), None);
    }

    #[test]
    fn builds_requests_and_validates_core_headers() {
        let uri = Uri::parse("sip:bob@example.com").unwrap();
        let mut m = Message::request(Method::Options, uri);
        let via = Via::new(
            Transport::Tcp,
            Host::Domain("pbx.example.com".into()),
            Some(5060),
            &new_branch(0xfeed),
        );
        m.push_header(HeaderName::Via, &via.to_string())
            .unwrap()
            .push_header(
                HeaderName::From,
                &format!("<sip:pbx@example.com>;tag={}", new_tag(7)),
            )
            .unwrap()
            .push_header(HeaderName::To, "<sip:bob@example.com>")
            .unwrap()
            .push_header(HeaderName::CallId, "abc@pbx")
            .unwrap()
            .push_header(HeaderName::CSeq, "1 OPTIONS")
            .unwrap()
            .push_header(HeaderName::MaxForwards, "70")
            .unwrap();
        assert!(m.push_header(HeaderName::From, "<sip:other@x>").is_err());
        assert!(m.push_header(HeaderName::CSeq, "x").is_err());
        assert!(m
            .push_header(HeaderName::Subject, "a\r\nInjected: 1")
            .is_err());
        assert!(m.push_header(HeaderName::Contact, "*").is_ok());
        assert!(m.push_header(HeaderName::Contact, "<sip:a@b>").is_err());
        assert!(m.is_contact_wildcard());
        m.set_body(b"hello".to_vec(), Some("text/plain")).unwrap();
        m.prepend_header(
            HeaderName::Via,
            "SIP/2.0/UDP proxy.example.com;branch=z9hG4bKp1",
        )
        .unwrap();
        assert_eq!(
            m.top_via().map(|v| &v.host),
            Some(&Host::Domain("proxy.example.com".into()))
        );
        let parsed = parse(&m.to_bytes()).unwrap();
        assert_eq!(parsed.via_headers().len(), 2);
        assert_eq!(parsed.body(), b"hello");
        assert_eq!(parsed.top_via().and_then(Via::branch), Some("z9hG4bKp1"));
        assert!(new_branch(1).starts_with(MAGIC_COOKIE));

        assert_eq!(
            m.remove_top_via()
                .and_then(|v| v.branch().map(str::to_owned))
                .as_deref(),
            Some("z9hG4bKp1")
        );
        assert_eq!(m.via_headers().len(), 1);
        assert_eq!(m.remove_headers(&HeaderName::Contact), 1);
        assert!(!m.is_contact_wildcard());
    }

    #[test]
    fn remove_top_via_in_a_combined_field() {
        let mut m = ok(&INVITE.replace(
            "branch=z9hG4bK776asdhds",
            "branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2",
        ));
        assert_eq!(m.via_headers().len(), 2);
        m.remove_top_via();
        assert_eq!(
            m.header(&HeaderName::Via),
            Some("SIP/2.0/UDP b;branch=z9hG4bK2")
        );
        assert_eq!(parse(&m.to_bytes()).unwrap().via_headers().len(), 1);
    }

    #[test]
    fn lazily_typed_headers() {
        let m = ok(&INVITE.replace(
            "Content-Type",
            "Route: <sip:p1;lr>, <sip:p2;lr>\r\nAuthorization: Digest username=\"a\", realm=\"r\"\r\nExpires: 3600\r\nContent-Type",
        ));
        assert_eq!(m.routes().map(|r| r.len()), Ok(2));
        let creds: Vec<_> = m.credentials(&HeaderName::Authorization).collect();
        assert_eq!(
            creds
                .first()
                .and_then(|c| c.as_ref().ok())
                .and_then(Credentials::username),
            Some("a")
        );
        assert_eq!(m.expires(), Some(3600));
    }

    #[test]
    fn stream_framing() {
        let msg = INVITE.as_bytes();
        assert!(matches!(frame(msg, MAX_MESSAGE_SIZE), Frame::Message(n) if n == msg.len()));
        let two = [msg, msg].concat();
        assert!(matches!(frame(&two, MAX_MESSAGE_SIZE), Frame::Message(n) if n == msg.len()));
        let head = INVITE.find("\r\n\r\n").unwrap() + 4;
        for cut in 0..msg.len() {
            let r = frame(&msg[..cut], MAX_MESSAGE_SIZE);
            if cut < head {
                assert!(matches!(r, Frame::Incomplete), "cut {cut}: {r:?}");
            } else {
                assert!(
                    matches!(r, Frame::Body(n) if n == msg.len()),
                    "cut {cut}: {r:?}"
                );
            }
        }
        assert!(matches!(frame(b"\r\n\r\n", 100), Frame::KeepAlive(4)));
        assert!(matches!(frame(b"\r\nINVITE", 100), Frame::KeepAlive(2)));
        assert!(matches!(frame(b"\r\n", 100), Frame::Incomplete));
        // A first line that cannot become a start line is refused before its end: no method is
        // 65 characters long.
        assert!(matches!(frame(&[b'A'; 64], 1000), Frame::Incomplete));
        assert!(matches!(frame(&[b'A'; 65], 1000), Frame::Invalid(_)));
        // Once a start line shows (or the first line ended) only a header end tells more.
        assert!(!awaits_header_end(b"INVI"));
        assert!(awaits_header_end(b"INVITE sip:x"));
        assert!(awaits_header_end(b"SIP/2.0 200"));
        assert!(awaits_header_end(b"INVITE sip:x SIP/2.0\r\nVia: x"));
        let no_cl = INVITE.replace("Content-Length: 4\r\n", "");
        assert!(
            matches!(frame(no_cl.as_bytes(), MAX_MESSAGE_SIZE), Frame::Invalid(e) if e.kind() == &ErrorKind::ContentLengthMissing)
        );
        let neg = INVITE.replace("Content-Length: 4", "Content-Length: -4");
        assert!(matches!(
            frame(neg.as_bytes(), MAX_MESSAGE_SIZE),
            Frame::Invalid(_)
        ));
        assert!(matches!(
            frame(b"\x16\x03\x01\x02\x00", 100),
            Frame::Invalid(_)
        ));
        assert!(matches!(frame(msg, 100), Frame::Invalid(e) if e.status() == 513));
        let huge = INVITE.replace("Content-Length: 4", "Content-Length: 99999999");
        assert!(
            matches!(frame(huge.as_bytes(), MAX_MESSAGE_SIZE), Frame::Invalid(e) if e.status() == 513)
        );
    }

    #[test]
    fn methods_are_case_sensitive() {
        assert_eq!(Method::parse("INVITE"), Ok(Method::Invite));
        assert_eq!(
            Method::parse("invite"),
            Ok(Method::Extension("invite".into()))
        );
        assert!(Method::parse("IN VITE").is_err());
        assert_eq!(Method::Extension("FOO".into()).to_string(), "FOO");
    }
}

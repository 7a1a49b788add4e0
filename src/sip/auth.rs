//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 7616, RFC 8760):
//! the hash helpers shared by the client and server sides,
//! [`DigestServer`], which issues nonces and checks `Authorization` /
//! `Proxy-Authorization` credentials, and [`authorize`], which answers a
//! challenge when we are the client (a trunk's registration and calls).
//!
//! Owns: nonce format and lifetime, the per-nonce `nc` replay record, the
//! challenge header values. Does not own: which realm a request belongs
//! to, where HA1 values come from (the store), what to answer on failure,
//! or ban counting; those are the caller's (the registrar's) business.
//! Sans-IO: time comes in as unix milliseconds and the secret key as
//! bytes, so nothing here reads a clock or a random source.
//!
//! Nothing here panics on any input.

use std::collections::BTreeMap;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::sip::header::{Challenge, Credentials};

/// Digest hash algorithm (RFC 7616 §3.3, RFC 8760). The `-sess` variants
/// are not supported: no SIP phone we know of needs them, and they only
/// matter for third-party authentication servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Md5,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    /// The `algorithm` parameter value, case-insensitively; `-sess` and
    /// unknown algorithms are `None`.
    pub fn parse(s: &str) -> Option<Algorithm> {
        if s.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else if s.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else {
            None
        }
    }

    /// Lowercase hex of H(data).
    pub fn hash_hex(self, data: &[u8]) -> String {
        self.hash_hex_parts(&[data])
    }

    /// Lowercase hex of H(the parts, concatenated), without concatenating them first: digest
    /// inputs are `a:b:c` strings, and building each one would cost an allocation per hash.
    pub fn hash_hex_parts(self, parts: &[&[u8]]) -> String {
        fn run<D: Digest>(parts: &[&[u8]]) -> String {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            hex(&d.finalize())
        }
        match self {
            Algorithm::Sha256 => run::<Sha256>(parts),
            Algorithm::Md5 => run::<Md5>(parts),
        }
    }
}

/// HA1 = H(username ":" realm ":" password), lowercase hex.
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash_hex_parts(&[
        username.as_bytes(),
        b":",
        realm.as_bytes(),
        b":",
        password.as_bytes(),
    ])
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Appends the lowercase hex of `bytes` to `out`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

/// The `response` value of RFC 7616 §3.4.1 for the qop `auth` (when `qop`
/// is `Some((nc, cnonce))`) or, when `qop` is `None`, the RFC 2069 form
/// `H(HA1:nonce:HA2)`. HA2 = H(method:uri); `auth-int` is not supported.
pub fn response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    qop: Option<(&str, &str)>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = alg.hash_hex_parts(&[method.as_bytes(), b":", uri.as_bytes()]);
    let (ha1, nonce, ha2) = (ha1.as_bytes(), nonce.as_bytes(), ha2.as_bytes());
    match qop {
        Some((nc, cnonce)) => alg.hash_hex_parts(&[
            ha1,
            b":",
            nonce,
            b":",
            nc.as_bytes(),
            b":",
            cnonce.as_bytes(),
            b":auth:",
            ha2,
        ]),
        None => alg.hash_hex_parts(&[ha1, b":", nonce, b":", ha2]),
    }
}

/// An HMAC-SHA256 (RFC 2104) key, for nonces and tokens. Written out rather than taking the `hmac`
/// crate: it is a dozen lines over `sha2`, which we need anyway. A plain
/// H(key || data) would also be unforgeable here (nonces are short, fixed
/// layout, and SHA-256 length extension only lets an attacker append to
/// the data, which the fixed-width parse rejects), but HMAC removes the
/// need for that argument.
#[derive(Clone)]
struct HmacKey {
    /// SHA-256 states that have absorbed the key block XOR ipad and XOR opad: the first
    /// compression of each hash is the same for every message, so it is done once. That halves
    /// the work for the short inputs signed here (a nonce, a To tag).
    inner: Sha256,
    outer: Sha256,
}

impl HmacKey {
    fn new(secret: &[u8]) -> HmacKey {
        let mut block = [0u8; 64];
        if secret.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            block[..secret.len()].copy_from_slice(secret);
        }
        let mut inner = Sha256::new();
        inner.update(block.map(|b| b ^ 0x36));
        let mut outer = Sha256::new();
        outer.update(block.map(|b| b ^ 0x5c));
        HmacKey { inner, outer }
    }

    /// HMAC-SHA256 of the concatenation of `parts`.
    fn sign(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        for p in parts {
            inner.update(p);
        }
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        outer.finalize().into()
    }
}

/// Equality whose running time does not depend on where the inputs differ,
/// so the response cannot be guessed byte by byte through timing. Lengths
/// are public (they follow from the algorithm).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why credentials were refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The response does not match: wrong password, or unknown user (the
    /// caller passes no HA1). The only failure that is a password guess.
    Response,
    /// A correct response with an `nc` not higher than one already
    /// accepted for this nonce.
    Replay,
    /// The nonce was not issued by us (tampered, other realm, or from a
    /// previous secret key). The response is not even checked, so this
    /// tells an attacker nothing about the password.
    Nonce,
    /// The realm parameter is not the expected realm.
    Realm,
    /// `-sess` or an unknown algorithm.
    Algorithm,
    /// No qop, or a qop other than `auth` (see [`DigestServer::verify`]).
    Qop,
}

impl Failure {
    /// Whether this failure means someone tried a password and got it
    /// wrong: the only kind that brute-force protection should count.
    pub fn is_password_guess(self) -> bool {
        self == Failure::Response
    }
}

/// Outcome of checking credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Correct response for a nonce of ours that has expired (or whose
    /// replay record was evicted): challenge again with `stale=true` so
    /// the phone retries without asking its user (RFC 7616 §3.3).
    Stale,
    Failed(Failure),
    /// Not Digest, or a required parameter is missing or ill-formed.
    Malformed,
}

/// Default nonce lifetime: long enough for a phone to answer a challenge
/// and reuse the nonce for a few quick requests, short enough that a
/// captured nonce is soon useless.
pub const DEFAULT_NONCE_LIFETIME_MS: u64 = 300_000;

/// Default bound on the replay record; each entry is ~40 bytes of map.
pub const DEFAULT_MAX_TRACKED_NONCES: usize = 100_000;

/// Hex digits of a nonce: 16 (issue time) + 16 (counter) + 32 (MAC).
const NONCE_LEN: usize = 64;

/// Stateless nonce issuer and credential checker.
///
/// A nonce is `hex(issued_ms) hex(counter) hex(HMAC(key, time, counter,
/// realm)[..16])`: authenticity and age are checked without storing
/// anything per challenge, so a flood of unauthenticated REGISTERs cannot
/// grow memory. The counter makes every nonce unique even within one
/// millisecond, which the per-nonce `nc` record below relies on (two
/// phones sharing a nonce would otherwise trip each other's replay check).
///
/// The only state is, for nonces that have actually been *used* with a
/// correct response, the highest `nc` accepted: a bounded ordered map,
/// pruned of expired nonces as it goes.
#[derive(Clone)]
pub struct DigestServer {
    key: HmacKey,
    lifetime_ms: u64,
    max_tracked: usize,
    counter: u64,
    /// (issued_ms, counter) → highest nc accepted. Ordered by issue time,
    /// so expiry and eviction take from the front.
    seen: BTreeMap<(u64, u64), u32>,
    /// Highest key evicted for lack of room while still valid: a nonce at
    /// or below it that is no longer in `seen` has lost its replay record
    /// and is answered `Stale` rather than trusted afresh.
    evicted_upto: Option<(u64, u64)>,
    /// Algorithms offered, in order of preference; only these are accepted.
    algorithms: Vec<Algorithm>,
}

/// By hand so that the key never reaches a log.
impl std::fmt::Debug for DigestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestServer")
            .field("key", &"<redacted>")
            .field("lifetime_ms", &self.lifetime_ms)
            .field("max_tracked", &self.max_tracked)
            .field("counter", &self.counter)
            .field("tracked", &self.seen.len())
            .finish()
    }
}

/// The parts of one of our nonces.
struct NonceParts {
    issued_ms: u64,
    counter: u64,
}

impl DigestServer {
    /// `secret` should be at least 32 random bytes, kept across restarts
    /// (otherwise every outstanding nonce fails as [`Failure::Nonce`]
    /// and phones see a plain 401 instead of a stale one).
    pub fn new(secret: &[u8]) -> DigestServer {
        DigestServer {
            key: HmacKey::new(secret),
            lifetime_ms: DEFAULT_NONCE_LIFETIME_MS,
            max_tracked: DEFAULT_MAX_TRACKED_NONCES,
            counter: 0,
            seen: BTreeMap::new(),
            evicted_upto: None,
            algorithms: vec![Algorithm::Sha256, Algorithm::Md5],
        }
    }

    /// Offers (and accepts) exactly `algs`, in this order of preference. RFC 8760 §2.4 puts the
    /// preferred one first; phones that only read the first challenge (SIPp 3.6, some old desk
    /// phones) need MD5 first. An empty list keeps the default (SHA-256, MD5).
    pub fn with_algorithms(mut self, algs: &[Algorithm]) -> DigestServer {
        if !algs.is_empty() {
            self.algorithms = algs.to_vec();
        }
        self
    }

    pub fn with_lifetime_ms(mut self, ms: u64) -> DigestServer {
        self.lifetime_ms = ms.max(1);
        self
    }

    pub fn with_max_tracked(mut self, n: usize) -> DigestServer {
        self.max_tracked = n.max(1);
        self
    }

    pub fn lifetime_ms(&self) -> u64 {
        self.lifetime_ms
    }

    /// Number of nonces with a replay record.
    pub fn tracked(&self) -> usize {
        self.seen.len()
    }

    fn mac(&self, issued_ms: u64, counter: u64, realm: &str) -> [u8; 32] {
        self.key.sign(&[
            b"nonce\0",
            &issued_ms.to_be_bytes(),
            &counter.to_be_bytes(),
            realm.as_bytes(),
        ])
    }

    /// A fresh nonce for `realm`.
    pub fn nonce(&mut self, realm: &str, now_ms: u64) -> String {
        self.counter = self.counter.wrapping_add(1);
        let mac = self.mac(now_ms, self.counter, realm);
        let mut nonce = String::with_capacity(NONCE_LEN);
        push_hex(&mut nonce, &now_ms.to_be_bytes());
        push_hex(&mut nonce, &self.counter.to_be_bytes());
        push_hex(&mut nonce, mac.get(..16).unwrap_or(&mac));
        nonce
    }

    fn check_nonce(&self, nonce: &str, realm: &str) -> Option<NonceParts> {
        if nonce.len() != NONCE_LEN || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let issued_ms = u64::from_str_radix(nonce.get(..16)?, 16).ok()?;
        let counter = u64::from_str_radix(nonce.get(16..32)?, 16).ok()?;
        let mac = self.mac(issued_ms, counter, realm);
        let expected = hex(mac.get(..16)?);
        let given = nonce.get(32..)?.to_ascii_lowercase();
        constant_time_eq(expected.as_bytes(), given.as_bytes())
            .then_some(NonceParts { issued_ms, counter })
    }

    /// A short token derived from the secret (domain-separated from
    /// nonces by `label`), e.g. a To tag that is unpredictable without a
    /// random source: 16 hex digits.
    pub fn token(&self, label: &str, data: &[u8]) -> String {
        let mac = self.key.sign(&[b"token\0", label.as_bytes(), b"\0", data]);
        hex(mac.get(..8).unwrap_or(&mac))
    }

    /// Values for WWW-Authenticate (or Proxy-Authenticate), one field
    /// each: SHA-256 first, then MD5, sharing one nonce (RFC 8760 §2.4:
    /// the client picks the first algorithm it supports, so preference
    /// order is list order). MD5 stays because most deployed phones still
    /// only do MD5. `qop="auth"` is always offered; no `opaque` (it adds
    /// nothing when the nonce is already authenticated).
    pub fn challenge(&mut self, realm: &str, stale: bool, now_ms: u64) -> Vec<String> {
        let nonce = self.nonce(realm, now_ms);
        let realm = quote(realm);
        let stale = if stale { ", stale=true" } else { "" };
        self.algorithms
            .iter()
            .map(|alg| {
                let mut v = String::with_capacity(96 + realm.len());
                for part in [
                    "Digest realm=",
                    &realm,
                    ", nonce=\"",
                    &nonce,
                    "\", algorithm=",
                    alg.as_str(),
                    ", qop=\"auth\"",
                    stale,
                ] {
                    v.push_str(part);
                }
                v
            })
            .collect()
    }

    /// Checks `creds` for a request with `method` against the HA1 that
    /// `ha1_for` returns for the algorithm the client chose (`None`:
    /// unknown user; the full check still runs against a dummy so that
    /// the answer and its timing match a wrong password).
    ///
    /// Order matters: a nonce that is not ours fails before the response
    /// is looked at; a wrong response fails as a password guess even on
    /// an expired nonce; only a correct response can be `Stale` (RFC 7616
    /// §3.3) or a replay.
    ///
    /// qop is required. We always offer `qop="auth"`, RFC 7616 makes it
    /// mandatory, and without `nc` there is no replay protection within
    /// the nonce lifetime; RFC 2069-only phones are long gone, so a PBX
    /// gains nothing by accepting them. `uri` must be present but is not
    /// compared with the Request-URI: phones differ on what they put there
    /// (AOR, registrar, with or without port) and the value is covered by
    /// the response anyway.
    pub fn verify(
        &mut self,
        creds: &Credentials,
        method: &str,
        ha1_for: impl Fn(Algorithm) -> Option<String>,
        realm: &str,
        now_ms: u64,
    ) -> Verdict {
        if !creds.is_digest() {
            return Verdict::Malformed;
        }
        let (Some(_user), Some(c_realm), Some(nonce), Some(uri), Some(resp)) = (
            creds.username(),
            creds.realm(),
            creds.nonce(),
            creds.uri(),
            creds.response(),
        ) else {
            return Verdict::Malformed;
        };
        let alg = match creds.algorithm() {
            None => Algorithm::Md5,
            Some(a) => match Algorithm::parse(a) {
                Some(alg) => alg,
                None => return Verdict::Failed(Failure::Algorithm),
            },
        };
        if !self.algorithms.contains(&alg) {
            return Verdict::Failed(Failure::Algorithm);
        }
        let (nc_text, cnonce, nc) = match creds.qop() {
            None => return Verdict::Failed(Failure::Qop),
            Some(q) if !q.eq_ignore_ascii_case("auth") => {
                return Verdict::Failed(Failure::Qop);
            }
            Some(_) => {
                let (Some(nc_text), Some(cnonce)) = (creds.nc(), creds.cnonce()) else {
                    return Verdict::Malformed;
                };
                match parse_nc(nc_text) {
                    Some(nc) if !cnonce.is_empty() => (nc_text, cnonce, nc),
                    _ => return Verdict::Malformed,
                }
            }
        };
        if c_realm != realm {
            return Verdict::Failed(Failure::Realm);
        }
        let Some(parts) = self.check_nonce(nonce, realm) else {
            return Verdict::Failed(Failure::Nonce);
        };

        // A dummy that is not hex never matches, but costs the same work.
        let (ha1, known) = match ha1_for(alg) {
            Some(h) => (h.to_ascii_lowercase(), true),
            None => ("-".repeat(64), false),
        };
        let expected = response(alg, &ha1, nonce, Some((nc_text, cnonce)), method, uri);
        let given = resp.to_ascii_lowercase();
        if !(constant_time_eq(expected.as_bytes(), given.as_bytes()) && known) {
            return Verdict::Failed(Failure::Response);
        }

        if self.expired(parts.issued_ms, now_ms) {
            return Verdict::Stale;
        }
        self.prune(now_ms);
        let key = (parts.issued_ms, parts.counter);
        match self.seen.get_mut(&key) {
            Some(highest) if nc <= *highest => return Verdict::Failed(Failure::Replay),
            Some(highest) => *highest = nc,
            None if self.evicted_upto.is_some_and(|w| key <= w) => return Verdict::Stale,
            None => {
                self.seen.insert(key, nc);
                while self.seen.len() > self.max_tracked {
                    if let Some((k, _)) = self.seen.pop_first() {
                        self.evicted_upto = Some(self.evicted_upto.map_or(k, |w| w.max(k)));
                    }
                }
            }
        }
        Verdict::Ok
    }

    fn expired(&self, issued_ms: u64, now_ms: u64) -> bool {
        // A nonce from far in the future means the clock was set back a
        // lot; treat it as expired rather than valid for ages.
        now_ms >= issued_ms.saturating_add(self.lifetime_ms)
            || issued_ms > now_ms.saturating_add(self.lifetime_ms)
    }

    /// Drops replay records of expired nonces (they can only ever be
    /// `Stale` now). Called by `verify`; callers may also run it on a
    /// timer.
    pub fn prune(&mut self, now_ms: u64) {
        while let Some((&(issued, _), _)) = self.seen.first_key_value() {
            if now_ms >= issued.saturating_add(self.lifetime_ms) {
                self.seen.pop_first();
            } else {
                break;
            }
        }
    }
}

/// `nc` is exactly 8 hex digits (RFC 7616 §3.4); 0 is never valid.
fn parse_nc(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(s, 16).ok().filter(|&n| n > 0)
}

/// Whether the `uri` of digest credentials names the request's own Request-URI (RFC 7616
/// §3.4: the server checks it). The response only covers that `uri`, so without the check a
/// request seen on the way could be sent again to another target (another number) with the
/// same credentials. Compared as written first, then as URIs (a phone may write the same URI
/// with another case of host, or without parameters the Request-URI has): same user, host
/// and port. Some clients (SIPp among them) write only the server's host and port: such a
/// `uri` names no user, so it is held to the Request-URI's host and port only.
pub fn uri_matches(creds_uri: &str, request_uri: &crate::sip::uri::Uri) -> bool {
    let creds_uri = creds_uri.trim();
    if request_uri.to_string() == creds_uri {
        return true;
    }
    let Ok(creds_uri) = crate::sip::uri::Uri::parse(creds_uri) else {
        return false;
    };
    if &creds_uri == request_uri {
        return true;
    }
    match (creds_uri.as_sip(), request_uri.as_sip()) {
        (Some(c), Some(r)) => {
            (c.user().is_none() || c.user() == r.user())
                && c.host().matches(r.host())
                && c.port().unwrap_or(5060) == r.port().unwrap_or(5060)
        }
        _ => false,
    }
}

/// Answers a server's digest challenge as a client: of the challenges given (a server may offer
/// several, RFC 8760 §2.4), the first Digest one whose algorithm we support, SHA-256 preferred
/// over MD5; `qop=auth` with `nc`/`cnonce` when the server offers it, the RFC 2069 form when it
/// offers no qop at all. `None` when nothing offered is answerable (only `auth-int`, `-sess` or
/// an unknown algorithm): the caller then treats the request as refused.
pub fn authorize<'a>(
    challenges: impl IntoIterator<Item = &'a Challenge>,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Option<Credentials> {
    let mut best: Option<(Algorithm, &Challenge)> = None;
    for ch in challenges {
        if !ch.is_digest() || ch.realm().is_none() || ch.nonce().is_none() {
            continue;
        }
        let Some(alg) = ch
            .algorithm()
            .map_or(Some(Algorithm::Md5), Algorithm::parse)
        else {
            continue;
        };
        let qop_ok = ch.qop().is_none() || ch.qop_options().any(|q| q.eq_ignore_ascii_case("auth"));
        if !qop_ok {
            continue;
        }
        let better = match best {
            None => true,
            Some((b, _)) => b == Algorithm::Md5 && alg == Algorithm::Sha256,
        };
        if better {
            best = Some((alg, ch));
        }
    }
    let (alg, ch) = best?;
    let realm = ch.realm()?;
    let nonce = ch.nonce()?;
    let h = ha1(alg, username, realm, password);
    let nc_text = format!("{nc:08x}");
    let with_qop = ch.qop().is_some();
    let qop = with_qop.then_some((nc_text.as_str(), cnonce));
    let r = response(alg, &h, nonce, qop, method, uri);
    let mut c = Credentials::new("Digest");
    c.push("username", username, true)
        .push("realm", realm, true)
        .push("nonce", nonce, true)
        .push("uri", uri, true)
        .push("response", &r, true)
        .push("algorithm", alg.as_str(), false);
    if with_qop {
        c.push("qop", "auth", false)
            .push("nc", &nc_text, false)
            .push("cnonce", cnonce, true);
    }
    if let Some(opaque) = ch.opaque() {
        c.push("opaque", opaque, true);
    }
    Some(c)
}

/// A quoted-string with `"` and `\` escaped; control characters (which a
/// configured realm should never hold) are dropped so the header cannot
/// be split.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn digest_uri_must_name_the_request_uri() {
        let r = crate::sip::uri::Uri::parse("sip:201@pbx.example:5060").unwrap();
        assert!(uri_matches("sip:201@pbx.example:5060", &r));
        assert!(uri_matches("SIP:201@PBX.example:5060", &r));
        // Host and port only (SIPp writes these): held to the host and port.
        assert!(uri_matches("sip:pbx.example:5060", &r));
        assert!(!uri_matches("sip:pbx.example:5070", &r));
        // Made for another number, another host, or not a URI at all.
        assert!(!uri_matches("sip:00900123@pbx.example:5060", &r));
        assert!(!uri_matches("sip:201@other.example:5060", &r));
        assert!(!uri_matches("*", &r));
    }

    use super::*;
    use crate::sip::header::Challenge;

    #[test]
    fn md5_ha1_rfc2617() {
        assert_eq!(
            ha1(
                Algorithm::Md5,
                "Mufasa",
                "testrealm@host.com",
                "Circle Of Life"
            ),
            "939e7578ed9e3c518a452acee763bce9"
        );
    }

    #[test]
    fn sha256_ha1_rfc7616() {
        assert_eq!(
            ha1(
                Algorithm::Sha256,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life"
            ),
            "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
        );
    }

    /// RFC 7616 §3.9.1, both algorithms.
    #[test]
    fn rfc7616_responses() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let cnonce = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";
        let realm = "http-auth@example.org";
        let sha = ha1(Algorithm::Sha256, "Mufasa", realm, "Circle of Life");
        assert_eq!(
            response(
                Algorithm::Sha256,
                &sha,
                nonce,
                Some(("00000001", cnonce)),
                "GET",
                "/dir/index.html"
            ),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let md5 = ha1(Algorithm::Md5, "Mufasa", realm, "Circle of Life");
        assert_eq!(
            response(
                Algorithm::Md5,
                &md5,
                nonce,
                Some(("00000001", cnonce)),
                "GET",
                "/dir/index.html"
            ),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
    }

    /// RFC 2617 §3.5 (MD5, qop=auth).
    #[test]
    fn rfc2617_response() {
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        assert_eq!(
            response(
                Algorithm::Md5,
                &h,
                "dcd98b7102dd2f0e8b11d0f600bfb0c093",
                Some(("00000001", "0a4f113b")),
                "GET",
                "/dir/index.html"
            ),
            "6629fae49393a05397450978507c4ef1"
        );
    }

    /// RFC 4231 test case 2.
    #[test]
    fn hmac_sha256_rfc4231() {
        let mac = HmacKey::new(b"Jefe").sign(&[b"what do ya ", b"want for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Keys longer than a block are hashed first (test case 6).
        let key = [0xaau8; 131];
        let mac =
            HmacKey::new(&key).sign(&[b"Test Using Larger Than Block-Size Key - Hash Key First"]);
        assert_eq!(
            hex(&mac),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    const REALM: &str = "pbx.example.com";
    const PASS: &str = "s3cret";
    const T0: u64 = 1_700_000_000_000;

    struct Client<'a> {
        user: &'a str,
        realm: &'a str,
        password: &'a str,
        alg: Option<Algorithm>,
    }

    impl Client<'_> {
        fn creds(&self, nonce: &str, nc: u32, method: &str) -> Credentials {
            let alg = self.alg.unwrap_or(Algorithm::Md5);
            let h = ha1(alg, self.user, self.realm, self.password);
            let nc = format!("{nc:08x}");
            let uri = "sip:pbx.example.com";
            let r = response(alg, &h, nonce, Some((&nc, "abc123")), method, uri);
            let mut c = Credentials::new("Digest");
            c.push("username", self.user, true)
                .push("realm", self.realm, true)
                .push("nonce", nonce, true)
                .push("uri", uri, true)
                .push("response", &r, true)
                .push("qop", "auth", false)
                .push("nc", &nc, false)
                .push("cnonce", "abc123", true);
            if let Some(a) = self.alg {
                c.push("algorithm", a.as_str(), false);
            }
            c
        }
    }

    fn alice(alg: Option<Algorithm>) -> Client<'static> {
        Client {
            user: "alice",
            realm: REALM,
            password: PASS,
            alg,
        }
    }

    fn store(alg: Algorithm) -> Option<String> {
        Some(ha1(alg, "alice", REALM, PASS))
    }

    fn server() -> DigestServer {
        DigestServer::new(b"0123456789abcdef0123456789abcdef")
    }

    fn nonce_of(header: &str) -> String {
        Challenge::parse(header)
            .ok()
            .and_then(|c| c.nonce().map(str::to_owned))
            .unwrap_or_default()
    }

    #[test]
    fn challenge_shape() {
        let mut s = server();
        let ch = s.challenge(REALM, false, T0);
        assert_eq!(ch.len(), 2);
        let a = Challenge::parse(&ch[0]).unwrap();
        let b = Challenge::parse(&ch[1]).unwrap();
        assert!(a.is_digest());
        assert_eq!(a.algorithm(), Some("SHA-256"));
        assert_eq!(b.algorithm(), Some("MD5"));
        assert_eq!(a.realm(), Some(REALM));
        assert_eq!(a.nonce(), b.nonce());
        assert_eq!(a.qop_options().collect::<Vec<_>>(), ["auth"]);
        assert!(!a.stale());
        let st = s.challenge(REALM, true, T0);
        assert!(Challenge::parse(&st[0]).unwrap().stale());
        assert!(Challenge::parse(&st[1]).unwrap().stale());
        // Nonces are unique even within one millisecond.
        assert_ne!(nonce_of(&ch[0]), nonce_of(&st[0]));
        // Realms with quotes cannot break out of the quoted-string.
        let odd = s.challenge("a\"b\\c\r\n", false, T0);
        assert_eq!(Challenge::parse(&odd[0]).unwrap().realm(), Some("a\"b\\c"));
    }

    #[test]
    fn accepts_both_algorithms_and_missing_algorithm_is_md5() {
        for alg in [Some(Algorithm::Sha256), Some(Algorithm::Md5), None] {
            let mut s = server();
            let n = s.nonce(REALM, T0);
            let c = alice(alg).creds(&n, 1, "REGISTER");
            assert_eq!(
                s.verify(&c, "REGISTER", store, REALM, T0 + 10),
                Verdict::Ok,
                "{alg:?}"
            );
        }
    }

    #[test]
    fn nonce_count_replay() {
        let mut s = server();
        let n = s.nonce(REALM, T0);
        let v = |s: &mut DigestServer, nc| {
            s.verify(
                &alice(None).creds(&n, nc, "REGISTER"),
                "REGISTER",
                store,
                REALM,
                T0 + 1,
            )
        };
        assert_eq!(v(&mut s, 1), Verdict::Ok);
        assert_eq!(v(&mut s, 1), Verdict::Failed(Failure::Replay));
        assert_eq!(v(&mut s, 3), Verdict::Ok);
        assert_eq!(v(&mut s, 2), Verdict::Failed(Failure::Replay));
        assert_eq!(v(&mut s, 4), Verdict::Ok);
        // A second nonce has its own count.
        let n2 = s.nonce(REALM, T0);
        let c = alice(None).creds(&n2, 1, "REGISTER");
        assert_eq!(s.verify(&c, "REGISTER", store, REALM, T0 + 2), Verdict::Ok);
    }

    #[test]
    fn stale_only_with_correct_response() {
        let mut s = server().with_lifetime_ms(1000);
        let n = s.nonce(REALM, T0);
        let good = alice(None).creds(&n, 1, "REGISTER");
        assert_eq!(
            s.verify(&good, "REGISTER", store, REALM, T0 + 1000),
            Verdict::Stale
        );
        let bad = Client {
            password: "guess",
            ..alice(None)
        }
        .creds(&n, 1, "REGISTER");
        assert_eq!(
            s.verify(&bad, "REGISTER", store, REALM, T0 + 1000),
            Verdict::Failed(Failure::Response)
        );
        // Still valid just before expiry.
        let n = s.nonce(REALM, T0);
        let good = alice(None).creds(&n, 1, "REGISTER");
        assert_eq!(
            s.verify(&good, "REGISTER", store, REALM, T0 + 999),
            Verdict::Ok
        );
    }

    #[test]
    fn default_lifetime_is_300s() {
        let mut s = server();
        let n = s.nonce(REALM, T0);
        let c = alice(None).creds(&n, 1, "REGISTER");
        assert_eq!(
            s.verify(&c, "REGISTER", store, REALM, T0 + 300_000),
            Verdict::Stale
        );
    }

    #[test]
    fn tampered_and_foreign_nonces() {
        let mut s = server();
        let n = s.nonce(REALM, T0);
        // Flip the issue time (to extend its life) and one MAC digit.
        let later = format!("{:016x}{}", T0 + 1_000_000, &n[16..]);
        let mut mac_flip = n.clone().into_bytes();
        mac_flip[40] = if mac_flip[40] == b'0' { b'1' } else { b'0' };
        let mac_flip = String::from_utf8(mac_flip).unwrap();
        for bad in [later.as_str(), &mac_flip, "abc", "", &format!("{n}0")] {
            let c = alice(None).creds(bad, 1, "REGISTER");
            assert_eq!(
                s.verify(&c, "REGISTER", store, REALM, T0 + 1),
                Verdict::Failed(Failure::Nonce),
                "{bad}"
            );
        }
        // Another key's nonce, and our nonce for another realm.
        let mut other = DigestServer::new(b"other key");
        let n = other.nonce(REALM, T0);
        let c = alice(None).creds(&n, 1, "REGISTER");
        assert_eq!(
            s.verify(&c, "REGISTER", store, REALM, T0 + 1),
            Verdict::Failed(Failure::Nonce)
        );
        let n = s.nonce("other.realm", T0);
        let c = alice(None).creds(&n, 1, "REGISTER");
        assert_eq!(
            s.verify(&c, "REGISTER", store, REALM, T0 + 1),
            Verdict::Failed(Failure::Nonce)
        );
    }

    #[test]
    fn wrong_password_unknown_user_wrong_realm_wrong_method() {
        let mut s = server();
        let n = s.nonce(REALM, T0);
        let bad = Client {
            password: "nope",
            ..alice(Some(Algorithm::Sha256))
        };
        let v = s.verify(&bad.creds(&n, 1, "REGISTER"), "REGISTER", store, REALM, T0);
        assert_eq!(v, Verdict::Failed(Failure::Response));
        assert!(Failure::Response.is_password_guess());
        assert!(!Failure::Replay.is_password_guess());

        let c = alice(None).creds(&n, 2, "REGISTER");
        let v = s.verify(&c, "REGISTER", |_| None, REALM, T0);
        assert_eq!(v, Verdict::Failed(Failure::Response));

        let other = Client {
            realm: "evil.example.com",
            ..alice(None)
        };
        let v = s.verify(
            &other.creds(&n, 3, "REGISTER"),
            "REGISTER",
            store,
            REALM,
            T0,
        );
        assert_eq!(v, Verdict::Failed(Failure::Realm));

        // The method is part of HA2.
        let c = alice(None).creds(&n, 4, "INVITE");
        let v = s.verify(&c, "REGISTER", store, REALM, T0);
        assert_eq!(v, Verdict::Failed(Failure::Response));
    }

    #[test]
    fn missing_and_bad_fields() {
        let mut s = server();
        let n = s.nonce(REALM, T0);
        let good = alice(None).creds(&n, 1, "REGISTER");
        for name in [
            "username", "realm", "nonce", "uri", "response", "nc", "cnonce",
        ] {
            let mut c = good.clone();
            c.remove(name);
            assert_eq!(
                s.verify(&c, "REGISTER", store, REALM, T0),
                Verdict::Malformed,
                "{name}"
            );
        }
        let mut c = good.clone();
        c.remove("qop");
        assert_eq!(
            s.verify(&c, "REGISTER", store, REALM, T0),
            Verdict::Failed(Failure::Qop)
        );
        let set = |name: &str, value: &str| {
            let mut c = good.clone();
            c.set(name, value);
            c
        };
        for nc in ["1", "0000000g", "+0000001", "00000000", "000000001"] {
            assert_eq!(
                s.verify(&set("nc", nc), "REGISTER", store, REALM, T0),
                Verdict::Malformed,
                "{nc}"
            );
        }
        assert_eq!(
            s.verify(&set("qop", "auth-int"), "REGISTER", store, REALM, T0),
            Verdict::Failed(Failure::Qop)
        );
        let mut c = good.clone();
        c.push("algorithm", "MD5-sess", false);
        assert_eq!(
            s.verify(&c, "REGISTER", store, REALM, T0),
            Verdict::Failed(Failure::Algorithm)
        );
        let mut basic = good.clone();
        basic.scheme = "Basic".into();
        assert_eq!(
            s.verify(&basic, "REGISTER", store, REALM, T0),
            Verdict::Malformed
        );
        // None of that consumed the nonce count.
        assert_eq!(s.verify(&good, "REGISTER", store, REALM, T0), Verdict::Ok);
    }

    #[test]
    fn uppercase_hex_response_is_accepted() {
        let mut s = server();
        let n = s.nonce(REALM, T0);
        let mut c = alice(None).creds(&n, 1, "REGISTER");
        let upper = c
            .response()
            .map(str::to_ascii_uppercase)
            .unwrap_or_default();
        c.set("response", &upper);
        assert_eq!(s.verify(&c, "REGISTER", store, REALM, T0), Verdict::Ok);
    }

    #[test]
    fn replay_record_is_bounded_and_pruned() {
        let mut s = server().with_max_tracked(2).with_lifetime_ms(10_000);
        let nonces: Vec<String> = (0..3).map(|i| s.nonce(REALM, T0 + i)).collect();
        for n in &nonces {
            let c = alice(None).creds(n, 1, "REGISTER");
            assert_eq!(s.verify(&c, "REGISTER", store, REALM, T0 + 5), Verdict::Ok);
        }
        assert_eq!(s.tracked(), 2);
        // The evicted (oldest) nonce lost its record: stale, not trusted.
        let c = alice(None).creds(&nonces[0], 2, "REGISTER");
        assert_eq!(
            s.verify(&c, "REGISTER", store, REALM, T0 + 6),
            Verdict::Stale
        );
        s.prune(T0 + 20_000);
        assert_eq!(s.tracked(), 0);
    }

    #[test]
    fn tokens_are_keyed_and_labelled() {
        let s = server();
        let t = s.token("tag", b"x");
        assert_eq!(t.len(), 16);
        assert_eq!(t, s.token("tag", b"x"));
        assert_ne!(t, s.token("tag", b"y"));
        assert_ne!(t, s.token("other", b"x"));
        assert_ne!(t, DigestServer::new(b"k2").token("tag", b"x"));
    }

    #[test]
    fn debug_hides_the_key() {
        let s = DigestServer::new(b"supersecretkey");
        let text = format!("{s:?}");
        assert!(text.contains("redacted"));
        assert!(!text.contains("115, 117")); // "su" as bytes
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn client_answers_our_own_challenge_with_sha256() {
        let mut s = server();
        let offered: Vec<Challenge> = s
            .challenge(REALM, false, T0)
            .iter()
            .map(|h| Challenge::parse(h).unwrap())
            .collect();
        let c = authorize(&offered, "alice", PASS, "INVITE", "sip:bob@x", "c0ffee", 1).unwrap();
        assert_eq!(c.algorithm(), Some("SHA-256"));
        assert_eq!(c.nc(), Some("00000001"));
        let v = s.verify(&c, "INVITE", store, REALM, T0 + 10);
        assert_eq!(v, Verdict::Ok);
        // A wrong password fails at the server.
        let bad = authorize(
            &offered,
            "alice",
            "nope",
            "INVITE",
            "sip:bob@x",
            "c0ffee",
            2,
        )
        .unwrap();
        assert!(matches!(
            s.verify(&bad, "INVITE", store, REALM, T0 + 10),
            Verdict::Failed(_)
        ));
    }

    #[test]
    fn client_rfc2617_example_and_unanswerable_challenges() {
        // RFC 2617 §3.5 with qop=auth: the response is the RFC's own figure.
        let ch = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", qop=\"auth,auth-int\", \
             nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", opaque=\"5ccc069c403ebaf9f0171e9517f40e41\"",
        )
        .unwrap();
        let c = authorize(
            [&ch],
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
            1,
        )
        .unwrap();
        assert_eq!(c.response(), Some("6629fae49393a05397450978507c4ef1"));
        assert_eq!(c.opaque(), Some("5ccc069c403ebaf9f0171e9517f40e41"));
        assert_eq!(c.algorithm(), Some("MD5"));
        // Only auth-int, an unknown algorithm, or no nonce: nothing to answer with.
        for text in [
            "Digest realm=\"r\", nonce=\"n\", qop=\"auth-int\"",
            "Digest realm=\"r\", nonce=\"n\", algorithm=MD5-sess",
            "Digest realm=\"r\"",
            "Basic realm=\"r\"",
        ] {
            let ch = Challenge::parse(text).unwrap();
            assert!(
                authorize([&ch], "u", "p", "GET", "/", "c", 1).is_none(),
                "{text}"
            );
        }
        // No qop offered: the RFC 2069 form, without nc/cnonce.
        let ch = Challenge::parse("Digest realm=\"r\", nonce=\"n\"").unwrap();
        let c = authorize([&ch], "u", "p", "REGISTER", "sip:r", "c", 1).unwrap();
        assert!(c.nc().is_none() && c.cnonce().is_none() && c.qop().is_none());
    }
}

//! The SIP registrar (RFC 3261 §10.3), sans-IO.
//!
//! Owns: the decision for every REGISTER (authenticate, authorize, apply
//! Contact changes, build the response), the in-memory binding table, and
//! binding expiry. Does not own, and must not touch: sockets, clocks (time
//! comes in as unix milliseconds), the database (it returns
//! [`BindingChange`]s that the driver persists *before* sending the
//! response, so a phone is never told it is registered when the store
//! does not know it), transactions and retransmissions, RFC 3581
//! `received`/`rport` (the transport and transaction layers; we only keep
//! the [`Source`] the request really came from), and bans ([`guard`]; we
//! only report `auth_failure`).
//!
//! Flow for the driver:
//! 1. [`Registrar::auth_username`] → fetch that phone's credentials from
//!    the store (possibly none).
//! 2. [`Registrar::handle_register`] with them → persist `changes`, count
//!    `auth_failure` in the guard, send `response`.
//! 3. On a timer at [`Registrar::next_expiry`]: [`Registrar::expire`] and
//!    delete what it returns.
//!
//! Choices where RFC 3261 leaves room, in one place:
//! - The AOR is the phone's SIP username: the To user must equal the
//!   authenticated username (else 403). The To and Request-URI hosts are
//!   not checked: Switchboard serves one domain, and phones configured
//!   with an IP or a different host name must still register.
//! - A binding is identified by its Contact URI (RFC 3261 §19.1.4
//!   comparison) or by `+sip.instance` plus `reg-id` (RFC 5626 §6, RFC
//!   5627): a phone that reboots onto a new port replaces its old binding
//!   instead of piling up stale ones.
//! - Same Call-ID with a CSeq not higher than the stored one fails the
//!   whole request with 500, as §10.3 step 7 says; nothing is changed.
//! - Too many contacts for one AOR: 403 "Too Many Contacts", nothing
//!   changed. Not 503, which tells phones the server is overloaded and
//!   invites failover and retry storms; this is a policy refusal.
//! - Contacts must be `sip:`/`sips:` URIs (we have to route to them).
//! - Outbound (RFC 5626 `Require: outbound`), GRUU and Path are not done;
//!   `+sip.instance` and `reg-id` are stored and echoed.

pub mod guard;
pub mod service;

use std::collections::HashMap;
use std::net::SocketAddr;

use crate::sip::auth::{DigestServer, Failure, Verdict};
use crate::sip::header::{unquote, Credentials, HeaderName, NameAddr};
use crate::sip::lex::push_decimal;
use crate::sip::message::{reason_phrase, Message, Method};
use crate::sip::uri::{SipUri, Uri};

/// Registrar policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrarConfig {
    /// Digest realm; the store's HA1 values must be computed with it.
    pub realm: String,
    /// Shorter non-zero requests get 423 (RFC 3261 §10.3 step 7).
    pub min_expires: u32,
    /// Longer requests are clamped to this.
    pub max_expires: u32,
    /// When neither the contact nor the request says.
    pub default_expires: u32,
    /// The most a contact behind NAT over UDP gets ([`behind_nat`]); 0: no such limit.
    pub nat_max_expires: u32,
    /// The most a contact registered over TCP or TLS gets: less than the time the transports
    /// keep a quiet connection open, so that its re-registration keeps it open.
    pub stream_max_expires: u32,
    pub max_contacts_per_aor: usize,
}

impl RegistrarConfig {
    pub fn new(realm: &str) -> RegistrarConfig {
        RegistrarConfig {
            realm: realm.to_owned(),
            ..RegistrarConfig::default()
        }
    }
}

impl Default for RegistrarConfig {
    fn default() -> RegistrarConfig {
        RegistrarConfig {
            realm: "switchboard".to_owned(),
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            nat_max_expires: 60,
            stream_max_expires: 600,
            max_contacts_per_aor: 10,
        }
    }
}

/// Transport the REGISTER arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

/// Where a REGISTER really came from. Behind NAT the Contact is useless
/// for reaching the phone; requests go to `addr`, and on TCP/TLS through
/// the same connection (`flow`, the transport layer's id for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub flow: u64,
}

/// Whether a phone registering `contact` from `source` sits behind NAT over UDP: its Contact
/// names an address that is not the one its packets come from. Such a phone is reached at
/// `source` only while the NAT keeps its mapping, which on UDP lasts as long as traffic flows
/// (30 s to a few minutes). A host name in the Contact tells nothing; streams have their own
/// limit (`stream_max_expires`).
pub fn behind_nat(contact: &Uri, source: &Source) -> bool {
    if source.transport != Transport::Udp {
        return false;
    }
    let Some(uri) = contact.as_sip() else {
        return false;
    };
    // Canonical: on a dual-stack socket an IPv4 source reads `::ffff:a.b.c.d`.
    match uri.host().ip() {
        Some(ip) => {
            ip.to_canonical() != source.addr.ip().to_canonical()
                || uri.port().unwrap_or(5060) != source.addr.port()
        }
        None => false,
    }
}

/// One registered contact of an AOR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The phone's SIP username.
    pub aor: String,
    pub phone_id: i64,
    pub user_id: i64,
    /// The Contact URI as sent (without the name-addr brackets and header
    /// parameters).
    pub contact: String,
    /// In thousandths (`q=0.5` is 500).
    pub q: Option<u16>,
    pub expires_at_ms: u64,
    pub call_id: String,
    pub cseq: u32,
    pub source: Source,
    pub user_agent: Option<String>,
    /// `+sip.instance` without its quotes, e.g. `<urn:uuid:…>`.
    pub instance: Option<String>,
    pub reg_id: Option<u32>,
    pub updated_ms: u64,
}

impl Binding {
    /// Whole seconds left, rounded up, 0 once expired.
    pub fn remaining_secs(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms).div_ceil(1000)
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at_ms
    }
}

/// What the store knows about a phone, looked up by the Authorization username: the store's
/// own record (HA1s are lowercase hex for the configured realm; the registrar always checks
/// against the configured realm, so HA1s computed for another realm simply fail).
pub use crate::store::PhoneCredentials;

/// A change for the driver to persist. A store keyed by (aor, contact)
/// applies them in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindingChange {
    Upsert(Binding),
    Remove { aor: String, contact: String },
}

#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    pub response: Message,
    /// Persist these before sending `response`.
    pub changes: Vec<BindingChange>,
    /// Someone presented credentials with a wrong password, or for a user
    /// that does not exist: count it toward a ban of the source IP. Never
    /// set for a REGISTER without credentials (every phone's first
    /// attempt), a stale nonce, or a replay (which needs the password).
    pub auth_failure: bool,
    /// `response` challenges a request that could not be authenticated (no credentials, a
    /// stale or foreign nonce): it may be sent statelessly (RFC 3261 §8.2.7), since answering a
    /// retransmission afresh gives the same answer with the same To tag. Not set for a wrong
    /// password: a retransmission must not count as a second failure toward a ban.
    pub stateless: bool,
}

// Caps on per-binding strings: the memory target is under 1 KiB per
// binding, and an authenticated phone must not be able to park 64 KiB
// User-Agents in our table. Real values are far shorter.
const MAX_CONTACT_LEN: usize = 512;
const MAX_CALL_ID_LEN: usize = 256;
const MAX_INSTANCE_LEN: usize = 128;
const MAX_USER_AGENT_LEN: usize = 128;

/// The binding table plus the digest server that guards it.
#[derive(Debug)]
pub struct Registrar {
    config: RegistrarConfig,
    digest: DigestServer,
    bindings: HashMap<String, Vec<Binding>>,
    /// The Date header of the current second, with that second: every 200 carries one.
    date: (u64, String),
}

/// A contact of the request, checked and typed.
struct Wanted {
    uri: Uri,
    text: String,
    expires: u32,
    q: Option<u16>,
    instance: Option<String>,
    reg_id: Option<u32>,
}

/// A binding being worked on during one REGISTER.
struct Slot {
    binding: Binding,
    /// Contact as stored before this request; `None` for new bindings.
    stored_as: Option<String>,
    touched: bool,
    removed: bool,
}

impl Registrar {
    /// `secret` keys nonces and To tags; see [`DigestServer::new`].
    pub fn new(config: RegistrarConfig, secret: &[u8]) -> Registrar {
        Registrar {
            config,
            digest: DigestServer::new(secret),
            bindings: HashMap::new(),
            date: (0, http_date(0)),
        }
    }

    /// Replaces the digest server, e.g. one with another nonce lifetime.
    pub fn with_digest(mut self, digest: DigestServer) -> Registrar {
        self.digest = digest;
        self
    }

    pub fn config(&self) -> &RegistrarConfig {
        &self.config
    }

    /// The username of the first Digest `Authorization` field, for the
    /// driver to fetch credentials with. [`Registrar::handle_register`]
    /// checks that same field.
    pub fn auth_username(req: &Message) -> Option<String> {
        Registrar::username_of(&Registrar::digest_credentials(req))
    }

    /// The username of credentials from [`Registrar::digest_credentials`].
    pub fn username_of(creds: &Option<Result<Credentials, ()>>) -> Option<String> {
        creds.as_ref()?.as_ref().ok()?.username().map(str::to_owned)
    }

    /// The first Digest Authorization field, or its parse error; other
    /// schemes are skipped (a phone may add Basic for some other server).
    pub fn digest_credentials(req: &Message) -> Option<Result<Credentials, ()>> {
        // Judged by the scheme before parsing: Basic's token68 does not
        // parse as auth-params and must not turn the request into a 400.
        req.headers(&HeaderName::Authorization)
            .find(|v| {
                v.split([' ', '\t'])
                    .next()
                    .is_some_and(|s| s.eq_ignore_ascii_case("Digest"))
            })
            .map(|v| Credentials::parse(v).map_err(drop))
    }

    /// Decides one REGISTER. `creds` are the store's record for
    /// [`Registrar::auth_username`], `None` when unknown (or when the
    /// request had no credentials).
    pub fn handle_register(
        &mut self,
        req: &Message,
        source: Source,
        creds: Option<&PhoneCredentials>,
        now_ms: u64,
    ) -> RegisterOutcome {
        let authorization = Registrar::digest_credentials(req);
        self.handle_register_with(req, authorization, source, creds, now_ms)
    }

    /// [`Registrar::handle_register`] with the request's credentials already parsed (by
    /// [`Registrar::digest_credentials`]: the driver needs the username first, to fetch the
    /// phone's record, and parsing the Authorization field once is a few per cent of a
    /// registration).
    pub fn handle_register_with(
        &mut self,
        req: &Message,
        authorization: Option<Result<Credentials, ()>>,
        source: Source,
        creds: Option<&PhoneCredentials>,
        now_ms: u64,
    ) -> RegisterOutcome {
        if req.method() != Some(&Method::Register) {
            let mut rsp = self.reply(req, 405);
            let _ = rsp.push_header(HeaderName::Allow, "REGISTER");
            return RegisterOutcome::reply(rsp);
        }
        let Some(to_user) = req.to().and_then(|t| t.uri.as_sip()).map(SipUri::user) else {
            return RegisterOutcome::reply(self.reply(req, 400));
        };
        if req.call_id().is_none() || req.cseq().is_none() {
            return RegisterOutcome::reply(self.reply(req, 400));
        }

        // Step 3: authentication.
        let c = match authorization {
            None => return RegisterOutcome::challenge(self.challenge(req, false, now_ms)),
            Some(Err(())) => return RegisterOutcome::reply(self.reply(req, 400)),
            Some(Ok(c)) => c,
        };
        // Credentials made for another Request-URI are not these (RFC 7616 §3.4).
        let for_this_uri = match (c.uri(), req.uri()) {
            (Some(u), Some(r)) => crate::sip::auth::uri_matches(u, r),
            _ => false,
        };
        if !for_this_uri {
            return RegisterOutcome::reply(self.reply(req, 400));
        }
        let verdict = self.digest.verify(
            &c,
            "REGISTER",
            |alg| {
                creds.map(|p| match alg {
                    crate::sip::auth::Algorithm::Md5 => p.ha1_md5.clone(),
                    crate::sip::auth::Algorithm::Sha256 => p.ha1_sha256.clone(),
                })
            },
            &self.config.realm,
            now_ms,
        );
        let phone = match (verdict, creds) {
            (Verdict::Ok, Some(p)) => p,
            (Verdict::Malformed, _) => return RegisterOutcome::reply(self.reply(req, 400)),
            (Verdict::Stale, _) => {
                return RegisterOutcome::challenge(self.challenge(req, true, now_ms));
            }
            // Replay and foreign nonces: the response was either right or
            // never checked, so stale=true lets the phone retry silently
            // with a fresh nonce and tells an attacker nothing.
            (Verdict::Failed(Failure::Replay | Failure::Nonce), _) => {
                return RegisterOutcome::challenge(self.challenge(req, true, now_ms));
            }
            // Wrong password and unknown user take this same path, so the
            // two answers cannot be told apart.
            (Verdict::Failed(f), _) => {
                let mut out = RegisterOutcome::reply(self.challenge(req, false, now_ms));
                out.auth_failure = f.is_password_guess();
                return out;
            }
            // Cannot happen (no HA1 never verifies); refuse all the same.
            (Verdict::Ok, None) => {
                let mut out = RegisterOutcome::reply(self.challenge(req, false, now_ms));
                out.auth_failure = true;
                return out;
            }
        };
        let Some(username) = c.username() else {
            return RegisterOutcome::reply(self.reply(req, 400));
        };

        // Step 4: only the phone itself may change its registrations.
        if to_user.as_deref() != Some(username) {
            return RegisterOutcome::reply(self.reply(req, 403));
        }
        let aor = username.to_owned();

        match self.update(req, &aor, phone, source, now_ms) {
            Ok(changes) => {
                let response = self.ok(req, &aor, now_ms);
                RegisterOutcome {
                    response,
                    changes,
                    auth_failure: false,
                    stateless: false,
                }
            }
            Err(rsp) => RegisterOutcome::reply(*rsp),
        }
    }

    /// Steps 6 and 7: works on a copy of the AOR's bindings and commits it
    /// only when every contact was accepted (§10.3: all or nothing).
    fn update(
        &mut self,
        req: &Message,
        aor: &str,
        phone: &PhoneCredentials,
        source: Source,
        now_ms: u64,
    ) -> Result<Vec<BindingChange>, Box<Message>> {
        let call_id = req.call_id().unwrap_or_default();
        let cseq = req.cseq().map_or(0, |c| c.seq);
        if call_id.len() > MAX_CALL_ID_LEN {
            return Err(Box::new(self.reply(req, 400)));
        }

        let wanted = if req.is_contact_wildcard() {
            // `*` is only valid with Expires: 0 (the parser already refuses
            // it next to other contacts).
            if req.expires() != Some(0) {
                return Err(Box::new(self.reply(req, 400)));
            }
            None
        } else if req.contacts().is_empty() {
            // A query: nothing changes, the 200 lists the bindings.
            return Ok(Vec::new());
        } else {
            let mut list = Vec::with_capacity(req.contacts().len());
            for na in req.contacts() {
                match self.wanted(req, na, &source) {
                    Some(w) => list.push(w),
                    None => return Err(Box::new(self.reply(req, 400))),
                }
            }
            // 423 before anything changes.
            if list
                .iter()
                .any(|w| w.expires != 0 && w.expires < self.config.min_expires)
            {
                let mut rsp = self.reply(req, 423);
                let _ =
                    rsp.push_header(HeaderName::MinExpires, &self.config.min_expires.to_string());
                return Err(Box::new(rsp));
            }
            Some(list)
        };

        let mut slots: Vec<Slot> = self
            .bindings
            .get(aor)
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|b| Slot {
                stored_as: Some(b.contact.clone()),
                binding: b.clone(),
                touched: false,
                // Expired ones go now rather than counting toward the cap.
                removed: b.is_expired(now_ms),
            })
            .collect();
        let live_before = slots.iter().filter(|s| !s.removed).count();
        // Removals of contacts we no longer hold are written all the same: after a write that
        // failed (the phone got 500/503 and retries) memory may have forgotten a binding the
        // store still has, and a 200 must not leave it there to come back at the next start.
        // Removing what is not stored changes nothing.
        let mut forgotten = Vec::new();

        match wanted {
            None => {
                for s in slots.iter_mut().filter(|s| !s.removed) {
                    if s.binding.call_id == call_id && cseq <= s.binding.cseq {
                        return Err(Box::new(self.reply(req, 500)));
                    }
                    s.removed = true;
                }
            }
            Some(list) => {
                let user_agent = req.header(&HeaderName::UserAgent).map(|ua| {
                    let mut end = ua.len().min(MAX_USER_AGENT_LEN);
                    while !ua.is_char_boundary(end) {
                        end -= 1;
                    }
                    ua.get(..end).unwrap_or_default().to_owned()
                });
                for w in list {
                    let found = slots.iter_mut().find(|s| !s.removed && same_binding(s, &w));
                    let expires_at_ms = now_ms.saturating_add(u64::from(w.expires) * 1000);
                    match found {
                        Some(s) => {
                            // A contact listed twice in one request: the
                            // later one wins, no CSeq check against itself.
                            if !s.touched && s.binding.call_id == call_id && cseq <= s.binding.cseq
                            {
                                return Err(Box::new(self.reply(req, 500)));
                            }
                            s.touched = true;
                            if w.expires == 0 {
                                s.removed = true;
                                continue;
                            }
                            let b = &mut s.binding;
                            b.phone_id = phone.phone_id;
                            b.user_id = phone.user_id;
                            b.contact = w.text;
                            b.q = w.q;
                            b.expires_at_ms = expires_at_ms;
                            b.call_id = call_id.to_owned();
                            b.cseq = cseq;
                            b.source = source;
                            b.user_agent.clone_from(&user_agent);
                            b.instance = w.instance;
                            b.reg_id = w.reg_id;
                            b.updated_ms = now_ms;
                        }
                        None if w.expires == 0 => forgotten.push(BindingChange::Remove {
                            aor: aor.to_owned(),
                            contact: w.text,
                        }),
                        None => slots.push(Slot {
                            binding: Binding {
                                aor: aor.to_owned(),
                                phone_id: phone.phone_id,
                                user_id: phone.user_id,
                                contact: w.text,
                                q: w.q,
                                expires_at_ms,
                                call_id: call_id.to_owned(),
                                cseq,
                                source,
                                user_agent: user_agent.clone(),
                                instance: w.instance,
                                reg_id: w.reg_id,
                                updated_ms: now_ms,
                            },
                            stored_as: None,
                            touched: true,
                            removed: false,
                        }),
                    }
                }
            }
        }

        // Only growth is refused: refreshes and removals must keep working
        // for an AOR that is over a (since lowered) limit.
        let live = slots.iter().filter(|s| !s.removed).count();
        if live > self.config.max_contacts_per_aor && live > live_before {
            return Err(Box::new(self.reply_with(req, 403, "Too Many Contacts")));
        }

        // Commit.
        let mut removals = forgotten;
        let mut upserts = Vec::new();
        let mut kept = Vec::with_capacity(slots.len());
        for s in slots {
            if s.removed {
                if let Some(old) = s.stored_as {
                    removals.push(BindingChange::Remove {
                        aor: aor.to_owned(),
                        contact: old,
                    });
                }
                continue;
            }
            if s.touched {
                if let Some(old) = s.stored_as.filter(|o| *o != s.binding.contact) {
                    removals.push(BindingChange::Remove {
                        aor: aor.to_owned(),
                        contact: old,
                    });
                }
                upserts.push(BindingChange::Upsert(s.binding.clone()));
            }
            kept.push(s.binding);
        }
        if kept.is_empty() {
            self.bindings.remove(aor);
        } else {
            kept.shrink_to_fit();
            // A refresh replaces the list under the key it already has.
            match self.bindings.get_mut(aor) {
                Some(list) => *list = kept,
                None => {
                    self.bindings.insert(aor.to_owned(), kept);
                }
            }
        }
        removals.extend(upserts);
        Ok(removals)
    }

    /// Types one Contact of the request; `None` means 400.
    fn wanted(&self, req: &Message, na: &NameAddr, source: &Source) -> Option<Wanted> {
        na.uri.as_sip()?;
        let mut text = String::with_capacity(64);
        na.uri.push_to(&mut text);
        if text.len() > MAX_CONTACT_LEN {
            return None;
        }
        let instance = match na.params.value("+sip.instance") {
            Some(v) => {
                let v = unquote(v).into_owned();
                if v.len() > MAX_INSTANCE_LEN {
                    return None;
                }
                Some(v)
            }
            None => None,
        };
        // Contact param, else Expires header, else default; an unparsable
        // value counts as absent (RFC 3261 §10.3, RFC 4475 §3.1.2.4).
        let expires = na
            .expires()
            .or_else(|| req.expires())
            .unwrap_or(self.config.default_expires)
            .min(self.config.max_expires);
        // Shortened, never refused: §10.3 step 7 lets the registrar grant less than asked, and
        // the 200 tells the phone what it got.
        let expires = match self.config.nat_max_expires {
            0 => expires,
            nat if behind_nat(&na.uri, source) => expires.min(nat),
            _ => expires,
        };
        let expires = match source.transport {
            Transport::Udp => expires,
            Transport::Tcp | Transport::Tls => expires.min(self.config.stream_max_expires),
        };
        Some(Wanted {
            uri: na.uri.clone(),
            text,
            expires,
            q: na.q(),
            instance,
            reg_id: na.params.value("reg-id").and_then(|v| v.parse().ok()),
        })
    }

    /// A response with To tag. The tag is a keyed hash of the request's
    /// transaction identity: unpredictable without a random source, and
    /// the same for a retransmission.
    fn reply_with(&self, req: &Message, status: u16, reason: &str) -> Message {
        let mut rsp = Message::response_to(req, status, reason);
        let mut id = Vec::new();
        for part in [
            req.call_id().unwrap_or_default(),
            req.from().and_then(NameAddr::tag).unwrap_or_default(),
            req.top_via().and_then(|v| v.branch()).unwrap_or_default(),
        ] {
            id.extend_from_slice(part.as_bytes());
            id.push(0);
        }
        id.extend_from_slice(&req.cseq().map_or(0, |c| c.seq).to_be_bytes());
        let _ = rsp.set_to_tag(&self.digest.token("to-tag", &id));
        rsp
    }

    fn reply(&self, req: &Message, status: u16) -> Message {
        self.reply_with(req, status, reason_phrase(status))
    }

    fn challenge(&mut self, req: &Message, stale: bool, now_ms: u64) -> Message {
        let mut rsp = self.reply(req, 401);
        for value in self.digest.challenge(&self.config.realm, stale, now_ms) {
            let _ = rsp.push_header(HeaderName::WwwAuthenticate, &value);
        }
        rsp
    }

    /// 200 listing every current binding of the AOR (§10.3 step 8).
    fn ok(&mut self, req: &Message, aor: &str, now_ms: u64) -> Message {
        let second = now_ms / 1000;
        if self.date.0 != second {
            self.date = (second, http_date(now_ms));
        }
        let mut rsp = self.reply(req, 200);
        for b in self.lookup(aor, now_ms) {
            let _ = rsp.push_header(HeaderName::Contact, &contact_value(b, now_ms));
        }
        let _ = rsp.push_header(HeaderName::Date, &self.date.1);
        rsp
    }

    /// Removes expired bindings and returns them for deletion.
    pub fn expire(&mut self, now_ms: u64) -> Vec<BindingChange> {
        let mut gone = Vec::new();
        self.bindings.retain(|aor, list| {
            list.retain(|b| {
                let keep = !b.is_expired(now_ms);
                if !keep {
                    gone.push(BindingChange::Remove {
                        aor: aor.clone(),
                        contact: b.contact.clone(),
                    });
                }
                keep
            });
            !list.is_empty()
        });
        gone
    }

    /// When the next binding expires: the driver's timer for
    /// [`Registrar::expire`].
    pub fn next_expiry(&self) -> Option<u64> {
        self.bindings
            .values()
            .flatten()
            .map(|b| b.expires_at_ms)
            .min()
    }

    /// Live bindings of `aor`, best first: q descending (no q counts as
    /// 1.0), then most recently refreshed.
    pub fn lookup(&self, aor: &str, now_ms: u64) -> Vec<&Binding> {
        let mut out: Vec<&Binding> = self
            .bindings_for(aor)
            .iter()
            .filter(|b| !b.is_expired(now_ms))
            .collect();
        out.sort_by(|a, b| {
            b.q.unwrap_or(1000)
                .cmp(&a.q.unwrap_or(1000))
                .then(b.updated_ms.cmp(&a.updated_ms))
        });
        out
    }

    /// All stored bindings of `aor`, expired ones included until
    /// [`Registrar::expire`] runs.
    pub fn bindings_for(&self, aor: &str) -> &[Binding] {
        self.bindings.get(aor).map_or(&[], Vec::as_slice)
    }

    /// Rebuilds the table from the store at start. A binding with the
    /// same (aor, contact) as one already present replaces it. Expired
    /// ones are kept so that the next [`Registrar::expire`] reports them
    /// for deletion.
    pub fn restore(&mut self, bindings: impl IntoIterator<Item = Binding>) {
        for b in bindings {
            // Most AORs have one binding; a Vec grown by `push` reserves four, which was two
            // thirds of a restored binding's memory.
            let list = self
                .bindings
                .entry(b.aor.clone())
                .or_insert_with(|| Vec::with_capacity(1));
            match list.iter_mut().find(|x| x.contact == b.contact) {
                Some(x) => *x = b,
                None => list.push(b),
            }
        }
    }

    /// Total number of bindings.
    pub fn len(&self) -> usize {
        self.bindings.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}

impl RegisterOutcome {
    fn reply(response: Message) -> RegisterOutcome {
        RegisterOutcome {
            response,
            changes: Vec::new(),
            auth_failure: false,
            stateless: false,
        }
    }

    /// A challenge to a request that could not be authenticated.
    fn challenge(response: Message) -> RegisterOutcome {
        RegisterOutcome {
            stateless: true,
            ..RegisterOutcome::reply(response)
        }
    }
}

fn same_binding(slot: &Slot, w: &Wanted) -> bool {
    let b = &slot.binding;
    if let (Some(a), Some(i)) = (&b.instance, &w.instance) {
        if a == i && b.reg_id == w.reg_id {
            return true;
        }
    }
    // The stored contact is the rendering of an earlier request's URI, as `w.text` is of this
    // one: the same text is the same URI, and a refresh nearly always sends the same text.
    b.contact == w.text || Uri::parse(&b.contact).is_ok_and(|u| uri_equivalent(&u, &w.uri))
}

/// URI equality per RFC 3261 §19.1.4, enough for Contact matching:
/// scheme, user and password byte-exact after unescaping, host
/// case-insensitive, port explicit-vs-default significant; parameters in
/// both must match case-insensitively, `user`/`ttl`/`method`/`maddr` in
/// only one never match, others in only one are ignored; URI headers are
/// ignored (they never appear in a Contact we store).
pub fn uri_equivalent(a: &Uri, b: &Uri) -> bool {
    let (Some(x), Some(y)) = (a.as_sip(), b.as_sip()) else {
        return a == b;
    };
    if x.is_sips() != y.is_sips()
        || x.user_bytes() != y.user_bytes()
        || x.password() != y.password()
        || !x.host().matches(y.host())
        || x.port() != y.port()
    {
        return false;
    }
    let strict = |name: &str| {
        ["user", "ttl", "method", "maddr"]
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
    };
    let one_way = |p: &SipUri, q: &SipUri| {
        p.params().iter().all(|pp| match q.params().get(pp.name()) {
            Some(qp) => match (pp.value(), qp.value()) {
                (Some(v), Some(w)) => v.eq_ignore_ascii_case(w),
                (None, None) => true,
                _ => false,
            },
            None => !strict(pp.name()),
        })
    };
    one_way(x, y) && one_way(y, x)
}

fn contact_value(b: &Binding, now_ms: u64) -> String {
    let mut v = String::with_capacity(b.contact.len() + 24);
    v.push('<');
    v.push_str(&b.contact);
    v.push_str(">;expires=");
    push_decimal(&mut v, b.remaining_secs(now_ms));
    if let Some(q) = b.q {
        v.push_str(";q=");
        v.push_str(&format_q(q));
    }
    if let Some(i) = &b.instance {
        v.push_str(";+sip.instance=");
        v.push_str(&crate::sip::auth::quote(i));
    }
    if let Some(r) = b.reg_id {
        v.push_str(";reg-id=");
        push_decimal(&mut v, u64::from(r));
    }
    v
}

/// Thousandths back to a qvalue: 1000 → "1", 500 → "0.5", 0 → "0".
fn format_q(q: u16) -> String {
    if q >= 1000 {
        return "1".to_owned();
    }
    let frac = format!("{q:03}");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        "0".to_owned()
    } else {
        format!("0.{frac}")
    }
}

/// RFC 1123 date in GMT, as SIP's Date header wants (RFC 3261 §20.17).
fn http_date(now_ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = now_ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS.get((days % 7) as usize).unwrap_or(&"Thu"),
        d,
        MONTHS.get(m.saturating_sub(1) as usize).unwrap_or(&"Jan"),
        y,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's algorithm, unsigned since we never go before 1970).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::{ha1, response, Algorithm};
    use crate::sip::message::parse;

    const REALM: &str = "pbx.example.com";
    const T0: u64 = 1_700_000_000_000;

    fn src(addr: &str, transport: Transport, flow: u64) -> Source {
        Source {
            addr: addr.parse().unwrap(),
            transport,
            flow,
        }
    }

    fn udp() -> Source {
        src("198.51.100.7:40000", Transport::Udp, 0)
    }

    fn phone_creds(user: &str, password: &str, id: i64) -> PhoneCredentials {
        PhoneCredentials {
            phone_id: id,
            user_id: id * 10,
            realm: REALM.to_owned(),
            ha1_md5: ha1(Algorithm::Md5, user, REALM, password),
            ha1_sha256: ha1(Algorithm::Sha256, user, REALM, password),
        }
    }

    /// The registrar, the store and a virtual clock.
    struct World {
        reg: Registrar,
        store: HashMap<String, PhoneCredentials>,
        now: u64,
    }

    impl World {
        /// The registrar without its limits for phones behind NAT and on streams: the phones
        /// here register contacts that are not their source address; those rules have a test
        /// of their own.
        fn new() -> World {
            World::with(RegistrarConfig {
                nat_max_expires: 0,
                stream_max_expires: u32::MAX,
                ..RegistrarConfig::new(REALM)
            })
        }

        fn with(config: RegistrarConfig) -> World {
            let mut store = HashMap::new();
            store.insert("alice".to_owned(), phone_creds("alice", "wonderland", 1));
            store.insert("bob".to_owned(), phone_creds("bob", "builder", 2));
            World {
                reg: Registrar::new(config, b"test secret, 32 bytes at least!!"),
                store,
                now: T0,
            }
        }

        /// What the driver does: parse, look the username up, decide.
        fn send(&mut self, text: &str, source: Source) -> RegisterOutcome {
            let req = parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}\n{text}"));
            let creds = Registrar::auth_username(&req).and_then(|u| self.store.get(&u).cloned());
            self.reg
                .handle_register(&req, source, creds.as_ref(), self.now)
        }
    }

    struct Phone {
        user: String,
        password: String,
        call_id: String,
        cseq: u32,
        alg: Algorithm,
        challenge: Option<Message>,
        nc: u32,
        source: Source,
    }

    impl Phone {
        fn new(user: &str, password: &str) -> Phone {
            Phone {
                user: user.to_owned(),
                password: password.to_owned(),
                call_id: format!("{user}-call@192.0.2.10"),
                cseq: 0,
                alg: Algorithm::Md5,
                challenge: None,
                nc: 0,
                source: udp(),
            }
        }

        fn authorization(&self) -> String {
            let ch = self
                .challenge
                .as_ref()
                .into_iter()
                .flat_map(|m| m.challenges(&HeaderName::WwwAuthenticate))
                .filter_map(Result::ok)
                .find(|c| c.algorithm() == Some(self.alg.as_str()))
                .expect("challenge for our algorithm");
            let nonce = ch.nonce().unwrap_or_default();
            let realm = ch.realm().unwrap_or_default();
            let h = ha1(self.alg, &self.user, realm, &self.password);
            let nc = format!("{:08x}", self.nc);
            let uri = "sip:pbx.example.com";
            let r = response(
                self.alg,
                &h,
                nonce,
                Some((&nc, "0a4f113b")),
                "REGISTER",
                uri,
            );
            format!(
                "Authorization: Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", \
                 uri=\"{uri}\", response=\"{r}\", algorithm={}, qop=auth, nc={nc}, \
                 cnonce=\"0a4f113b\"\r\n",
                self.user,
                self.alg.as_str()
            )
        }

        /// A REGISTER with the next CSeq; `to` overrides the To user.
        fn request(&mut self, extra: &str, auth: bool, to: Option<&str>) -> String {
            self.cseq += 1;
            let auth = if auth {
                self.authorization()
            } else {
                String::new()
            };
            format!(
                "REGISTER sip:pbx.example.com SIP/2.0\r\n\
                 Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{cseq}a;rport\r\n\
                 Max-Forwards: 70\r\n\
                 From: <sip:{user}@pbx.example.com>;tag=ft{cseq}\r\n\
                 To: <sip:{to}@pbx.example.com>\r\n\
                 Call-ID: {call_id}\r\n\
                 CSeq: {cseq} REGISTER\r\n\
                 User-Agent: TestPhone/1.0\r\n\
                 {auth}{extra}Content-Length: 0\r\n\r\n",
                cseq = self.cseq,
                user = self.user,
                to = to.unwrap_or(&self.user),
                call_id = self.call_id,
            )
        }

        /// One authorized REGISTER on the current challenge, no retry.
        fn once(&mut self, w: &mut World, extra: &str) -> RegisterOutcome {
            self.nc += 1;
            let req = self.request(extra, true, None);
            w.send(&req, self.source)
        }

        /// Registers, fetching a challenge first when we have none.
        fn register(&mut self, w: &mut World, extra: &str) -> RegisterOutcome {
            self.register_as(w, extra, None)
        }

        fn register_as(&mut self, w: &mut World, extra: &str, to: Option<&str>) -> RegisterOutcome {
            if self.challenge.is_none() {
                let req = self.request(extra, false, to);
                let out = w.send(&req, self.source);
                assert_eq!(out.response.status(), Some(401));
                self.challenge = Some(out.response);
                self.nc = 0;
            }
            self.nc += 1;
            let req = self.request(extra, true, to);
            let out = w.send(&req, self.source);
            // Like a real phone: a stale challenge is answered at once.
            let stale = out
                .response
                .challenges(&HeaderName::WwwAuthenticate)
                .any(|c| c.is_ok_and(|c| c.stale()));
            if !stale {
                return out;
            }
            self.challenge = Some(out.response);
            self.nc = 1;
            let req = self.request(extra, true, to);
            w.send(&req, self.source)
        }
    }

    fn alice() -> Phone {
        Phone::new("alice", "wonderland")
    }

    fn contacts_of(m: &Message) -> Vec<String> {
        m.headers(&HeaderName::Contact).map(str::to_owned).collect()
    }

    fn upserts(changes: &[BindingChange]) -> Vec<&Binding> {
        changes
            .iter()
            .filter_map(|c| match c {
                BindingChange::Upsert(b) => Some(b),
                BindingChange::Remove { .. } => None,
            })
            .collect()
    }

    fn removals(changes: &[BindingChange]) -> Vec<&str> {
        changes
            .iter()
            .filter_map(|c| match c {
                BindingChange::Remove { contact, .. } => Some(contact.as_str()),
                BindingChange::Upsert(_) => None,
            })
            .collect()
    }

    const C1: &str = "Contact: <sip:alice@192.0.2.10:5060>\r\n";

    #[test]
    fn no_credentials_get_two_challenges_and_do_not_count() {
        let mut w = World::new();
        let mut p = alice();
        let req = p.request(C1, false, None);
        let out = w.send(&req, udp());
        let rsp = &out.response;
        assert_eq!(rsp.status(), Some(401));
        assert!(!out.auth_failure);
        // Unauthenticated: may go statelessly, and a retransmission gets the same To tag.
        assert!(out.stateless);
        assert!(out.changes.is_empty());
        assert!(rsp.to().and_then(NameAddr::tag).is_some());
        let again = w.send(&req, udp());
        assert_eq!(
            again.response.to().and_then(NameAddr::tag),
            rsp.to().and_then(NameAddr::tag)
        );
        let ch: Vec<_> = rsp
            .challenges(&HeaderName::WwwAuthenticate)
            .map(Result::unwrap)
            .collect();
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].algorithm(), Some("SHA-256"));
        assert_eq!(ch[1].algorithm(), Some("MD5"));
        assert_eq!(ch[0].realm(), Some(REALM));
        assert!(!ch[0].stale());
        assert!(w.reg.is_empty());
    }

    #[test]
    fn successful_registration() {
        let mut w = World::new();
        let mut p = alice();
        p.source = src("203.0.113.5:61000", Transport::Tcp, 42);
        let out = p.register(
            &mut w,
            "Contact: \"Alice\" <sip:alice@10.0.0.5:5060;transport=tcp>;q=0.7\r\n",
        );
        let rsp = &out.response;
        assert_eq!(rsp.status(), Some(200), "{rsp}");
        assert!(!out.auth_failure);
        assert!(rsp
            .header(&HeaderName::Date)
            .is_some_and(|d| d.ends_with(" GMT")));
        assert!(rsp.to().and_then(NameAddr::tag).is_some());
        assert_eq!(
            contacts_of(rsp),
            ["<sip:alice@10.0.0.5:5060;transport=tcp>;expires=3600;q=0.7"]
        );
        let up = upserts(&out.changes);
        assert_eq!(up.len(), 1);
        let b = up[0];
        assert_eq!(b.aor, "alice");
        assert_eq!((b.phone_id, b.user_id), (1, 10));
        assert_eq!(b.contact, "sip:alice@10.0.0.5:5060;transport=tcp");
        assert_eq!(b.q, Some(700));
        assert_eq!(b.expires_at_ms, T0 + 3_600_000);
        assert_eq!(b.call_id, "alice-call@192.0.2.10");
        assert_eq!(b.cseq, 2);
        assert_eq!(b.source, p.source);
        assert_eq!(b.user_agent.as_deref(), Some("TestPhone/1.0"));
        assert_eq!(b.updated_ms, T0);
        assert_eq!(w.reg.bindings_for("alice"), std::slice::from_ref(b));
        assert_eq!(w.reg.len(), 1);
        // SHA-256 works as well.
        let mut q = Phone::new("bob", "builder");
        q.alg = Algorithm::Sha256;
        assert_eq!(q.register(&mut w, C1).response.status(), Some(200));
        assert_eq!(w.reg.len(), 2);
    }

    /// Masks the values that legitimately differ between two answers.
    fn mask(m: &Message) -> String {
        let text = m.to_string();
        let mut out = String::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("tag=").or_else(|| rest.find("nonce=\"")) {
            let (head, tail) = rest.split_at(i);
            out.push_str(head);
            let (key, value) = if tail.starts_with("tag=") {
                tail.split_at(4)
            } else {
                tail.split_at(7)
            };
            out.push_str(key);
            out.push('*');
            let end = value
                .find(['"', ';', ',', '\r', '>'])
                .unwrap_or(value.len());
            rest = &value[end..];
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn unknown_user_looks_exactly_like_wrong_password() {
        // The same request bytes, to a store that knows alice (wrong
        // password) and to one that does not (unknown user).
        let mut known = World::new();
        let mut unknown = World::new();
        unknown.store.clear();
        let mut p = Phone::new("alice", "not the password");
        let first = p.request(C1, false, None);
        let c1 = known.send(&first, udp());
        let c2 = unknown.send(&first, udp());
        assert_eq!(mask(&c1.response), mask(&c2.response));
        p.challenge = Some(c1.response);
        p.nc = 1;
        let req = p.request(C1, true, None);
        let a = known.send(&req, udp());
        let b = unknown.send(&req, udp());
        for out in [&a, &b] {
            assert_eq!(out.response.status(), Some(401));
            assert!(out.auth_failure);
            // Stateful, so a retransmission is absorbed instead of counting twice.
            assert!(!out.stateless);
            assert!(out.changes.is_empty());
        }
        assert_eq!(mask(&a.response), mask(&b.response));
        assert_eq!(a.response.reason(), b.response.reason());
        assert!(known.reg.is_empty() && unknown.reg.is_empty());
    }

    #[test]
    fn credentials_for_another_request_uri_are_refused() {
        // Right password, but the digest was made for another Request-URI: 400, no binding,
        // and not a password failure (whoever re-aimed it is not the phone).
        let mut w = World::new();
        let mut p = alice();
        let first = p.request(C1, false, None);
        p.challenge = Some(w.send(&first, udp()).response);
        p.nc = 1;
        let signed = p.request(C1, true, None);
        let moved = signed.replacen(
            "REGISTER sip:pbx.example.com SIP/2.0",
            "REGISTER sip:other.example.com SIP/2.0",
            1,
        );
        assert_ne!(moved, signed);
        let out = w.send(&moved, udp());
        assert_eq!(out.response.status(), Some(400));
        assert!(!out.auth_failure);
        assert!(w.reg.is_empty());
        // The same credentials on the request they were made for are fine.
        let ok = w.send(&signed, udp());
        assert_eq!(ok.response.status(), Some(200));
    }

    #[test]
    fn stale_nonce_is_rechallenged_without_counting() {
        let mut w = World::new();
        let mut p = alice();
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
        w.now += 301_000;
        let out = p.once(&mut w, C1);
        assert_eq!(out.response.status(), Some(401));
        assert!(!out.auth_failure);
        assert!(out.stateless);
        assert!(out.changes.is_empty());
        let ch = out
            .response
            .challenges(&HeaderName::WwwAuthenticate)
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        assert!(ch.iter().all(|c| c.stale()));
        // Retrying on the new nonce works.
        p.challenge = Some(out.response);
        p.nc = 0;
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
    }

    #[test]
    fn replayed_nonce_count_is_rechallenged_stale() {
        let mut w = World::new();
        let mut p = alice();
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
        p.nc = 0; // the next register reuses nc=1
        let out = p.once(&mut w, C1);
        assert_eq!(out.response.status(), Some(401));
        assert!(!out.auth_failure);
        assert!(out.changes.is_empty());
        assert!(out
            .response
            .challenges(&HeaderName::WwwAuthenticate)
            .all(|c| c.is_ok_and(|c| c.stale())));
        // Reusing the nonce with a higher nc is fine.
        p.nc = 5;
        let out = p.once(&mut w, C1);
        assert_eq!(out.response.status(), Some(200));
    }

    #[test]
    fn malformed_authorization_is_400_and_not_counted() {
        let mut w = World::new();
        let mut p = alice();
        let req = p.request(
            &format!("{C1}Authorization: Digest username=\"alice\", realm=\"{REALM}\"\r\n"),
            false,
            None,
        );
        let out = w.send(&req, udp());
        assert_eq!(out.response.status(), Some(400));
        assert!(!out.auth_failure);
        let req = p.request(&format!("{C1}Authorization: Digest ,,, =\r\n"), false, None);
        let out = w.send(&req, udp());
        assert_eq!(out.response.status(), Some(400));
        assert!(!out.auth_failure);
        // Basic alone is ignored, i.e. treated as no credentials.
        let req = p.request(
            &format!("{C1}Authorization: Basic YWxpY2U6eA==\r\n"),
            false,
            None,
        );
        assert_eq!(
            Registrar::auth_username(&parse(req.as_bytes()).unwrap()),
            None
        );
        let out = w.send(&req, udp());
        assert_eq!(out.response.status(), Some(401));
        assert!(!out.auth_failure);
    }

    #[test]
    fn wrong_realm_is_rechallenged_without_counting() {
        let mut w = World::new();
        let mut p = alice();
        let first = p.request(C1, false, None);
        let out = w.send(&first, udp());
        p.nc = 1;
        p.challenge = Some(out.response);
        let req = p
            .request(C1, true, None)
            .replace(&format!("realm=\"{REALM}\""), "realm=\"elsewhere\"");
        let out = w.send(&req, udp());
        assert_eq!(out.response.status(), Some(401));
        assert!(!out.auth_failure);
    }

    #[test]
    fn to_must_be_the_authenticated_user() {
        let mut w = World::new();
        let mut p = alice();
        let out = p.register_as(&mut w, C1, Some("bob"));
        assert_eq!(out.response.status(), Some(403));
        assert!(!out.auth_failure);
        assert!(out.changes.is_empty());
        assert!(w.reg.is_empty());
    }

    #[test]
    fn wildcard_removes_everything() {
        let mut w = World::new();
        let mut p = alice();
        let two = "Contact: <sip:alice@10.0.0.5>, <sip:alice@10.0.0.6>\r\n";
        assert_eq!(p.register(&mut w, two).response.status(), Some(200));
        assert_eq!(w.reg.len(), 2);

        for bad in ["Contact: *\r\n", "Contact: *\r\nExpires: 60\r\n"] {
            let out = p.register(&mut w, bad);
            assert_eq!(out.response.status(), Some(400), "{bad}");
            assert_eq!(w.reg.len(), 2);
        }
        // `*` next to a contact never gets past the parser, with 400.
        let mixed = p.request(
            "Contact: *, <sip:alice@10.0.0.5>\r\nExpires: 0\r\n",
            false,
            None,
        );
        assert_eq!(parse(mixed.as_bytes()).err().map(|e| e.status()), Some(400));

        let out = p.register(&mut w, "Contact: *\r\nExpires: 0\r\n");
        assert_eq!(out.response.status(), Some(200));
        let mut gone = removals(&out.changes);
        gone.sort_unstable();
        assert_eq!(gone, ["sip:alice@10.0.0.5", "sip:alice@10.0.0.6"]);
        assert!(contacts_of(&out.response).is_empty());
        assert!(w.reg.is_empty());
        assert_eq!(w.reg.bindings_for("alice"), []);
    }

    #[test]
    fn expires_sources_clamping_and_removal() {
        let mut w = World::new();
        let mut p = alice();
        let out = p.register(
            &mut w,
            "Contact: <sip:alice@10.0.0.1>;expires=120, <sip:alice@10.0.0.2>, \
             <sip:alice@10.0.0.3>;expires=99999\r\nExpires: 300\r\n",
        );
        assert_eq!(out.response.status(), Some(200));
        let at = |c: &str| {
            w.reg
                .bindings_for("alice")
                .iter()
                .find(|b| b.contact == c)
                .map(|b| b.expires_at_ms - T0)
        };
        assert_eq!(at("sip:alice@10.0.0.1"), Some(120_000));
        assert_eq!(at("sip:alice@10.0.0.2"), Some(300_000));
        assert_eq!(at("sip:alice@10.0.0.3"), Some(3_600_000));

        // No contact param, no header: default; bad values count as absent.
        let out = p.register(
            &mut w,
            "Contact: <sip:alice@10.0.0.4>;expires=soon\r\nExpires: never\r\n",
        );
        assert_eq!(out.response.status(), Some(200));
        let at = |c: &str| {
            w.reg
                .bindings_for("alice")
                .iter()
                .find(|b| b.contact == c)
                .map(|b| b.expires_at_ms - T0)
        };
        assert_eq!(at("sip:alice@10.0.0.4"), Some(3_600_000));

        // expires=0 removes just that contact; one not held is removed from the store all the
        // same (memory may have lost it to a failed write), which changes nothing there.
        let out = p.register(
            &mut w,
            "Contact: <sip:alice@10.0.0.2>;expires=0, <sip:alice@10.9.9.9>;expires=0\r\n",
        );
        assert_eq!(out.response.status(), Some(200));
        assert_eq!(
            removals(&out.changes),
            ["sip:alice@10.9.9.9", "sip:alice@10.0.0.2"]
        );
        assert!(upserts(&out.changes).is_empty());
        assert_eq!(contacts_of(&out.response).len(), 3);
        assert_eq!(w.reg.len(), 3);

        // Expires: 0 header removes contacts without their own param.
        let out = p.register(&mut w, "Contact: <sip:alice@10.0.0.1>\r\nExpires: 0\r\n");
        assert_eq!(removals(&out.changes), ["sip:alice@10.0.0.1"]);
        assert_eq!(w.reg.len(), 2);
    }

    #[test]
    fn too_brief_is_423_and_changes_nothing() {
        let mut w = World::new();
        let mut p = alice();
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
        let before = w.reg.bindings_for("alice").to_vec();
        let out = p.register(
            &mut w,
            "Contact: <sip:alice@10.0.0.7>, <sip:alice@192.0.2.10:5060>;expires=59\r\n",
        );
        assert_eq!(out.response.status(), Some(423));
        assert_eq!(out.response.min_expires(), Some(60));
        assert!(out.changes.is_empty());
        assert_eq!(w.reg.bindings_for("alice"), before);
        // Exactly the minimum is fine.
        let out = p.register(&mut w, "Contact: <sip:alice@10.0.0.7>\r\nExpires: 60\r\n");
        assert_eq!(out.response.status(), Some(200));
    }

    #[test]
    fn q_values_order_lookup() {
        let mut w = World::new();
        let mut p = alice();
        let out = p.register(
            &mut w,
            "Contact: <sip:a@10.0.0.1>;q=0.1, <sip:a@10.0.0.2>;q=1.0, <sip:a@10.0.0.3>;q=0.55, \
             <sip:a@10.0.0.4>\r\n",
        );
        assert_eq!(out.response.status(), Some(200));
        let order: Vec<_> = w
            .reg
            .lookup("alice", w.now)
            .iter()
            .map(|b| (b.contact.as_str(), b.q))
            .collect();
        // No q counts as 1.0; ties go to the fresher binding, then order.
        assert_eq!(order[2], ("sip:a@10.0.0.3", Some(550)));
        assert_eq!(order[3], ("sip:a@10.0.0.1", Some(100)));
        assert!(order[..2].iter().all(|(_, q)| q.unwrap_or(1000) == 1000));
        let listed = contacts_of(&out.response);
        assert!(listed.iter().any(|c| c.ends_with(";q=0.55")));
        assert!(listed.iter().any(|c| c.ends_with(";q=1")));
        assert!(listed.iter().any(|c| c.ends_with(";q=0.1")));
        assert_eq!(w.reg.lookup("nobody", w.now).len(), 0);
    }

    #[test]
    fn call_id_and_cseq_ordering() {
        let mut w = World::new();
        let mut p = alice();
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
        assert_eq!(w.reg.bindings_for("alice")[0].cseq, 2);
        // Same Call-ID, CSeq not higher: 500, nothing changed.
        for seq in [2, 1] {
            p.cseq = seq - 1;
            let out = p.register(&mut w, C1);
            assert_eq!(out.response.status(), Some(500), "cseq {seq}");
            assert!(out.changes.is_empty());
        }
        // Also for removals, including the wildcard.
        p.cseq = 0;
        let out = p.register(&mut w, "Contact: *\r\nExpires: 0\r\n");
        assert_eq!(out.response.status(), Some(500));
        assert_eq!(w.reg.len(), 1);
        // Higher CSeq is fine.
        p.cseq = 10;
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
        assert_eq!(w.reg.bindings_for("alice")[0].cseq, 11);
        // A different Call-ID may use any CSeq (e.g. the phone rebooted).
        p.call_id = "rebooted@192.0.2.10".to_owned();
        p.cseq = 0;
        let out = p.register(&mut w, C1);
        assert_eq!(out.response.status(), Some(200));
        let b = &w.reg.bindings_for("alice")[0];
        assert_eq!((b.call_id.as_str(), b.cseq), ("rebooted@192.0.2.10", 1));
        assert_eq!(w.reg.len(), 1);
    }

    #[test]
    fn refresh_updates_expiry_and_source() {
        let mut w = World::new();
        let mut p = alice();
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
        w.now += 1_800_000;
        p.source = src("198.51.100.7:40999", Transport::Udp, 0);
        let out = p.register(&mut w, C1);
        assert_eq!(out.response.status(), Some(200));
        assert!(removals(&out.changes).is_empty());
        let up = upserts(&out.changes);
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].expires_at_ms, w.now + 3_600_000);
        assert_eq!(up[0].source.addr.port(), 40999);
        assert_eq!(up[0].updated_ms, w.now);
        assert_eq!(w.reg.len(), 1);
        assert_eq!(
            contacts_of(&out.response),
            ["<sip:alice@192.0.2.10:5060>;expires=3600"]
        );
        // The same URI written differently is the same binding.
        let out = p.register(
            &mut w,
            "Contact: <sip:alice@192.0.2.10:5060;Transport=UDP;x=1>\r\n",
        );
        assert_eq!(out.response.status(), Some(200));
        assert_eq!(w.reg.len(), 1);
    }

    /// Behind NAT over UDP (the Contact is not where the REGISTER came from) a phone gets at
    /// most `nat_max_expires`, and its 200 says so; over a stream at most
    /// `stream_max_expires`.
    #[test]
    fn a_phone_behind_nat_over_udp_gets_a_short_registration() {
        let mut w = World::with(RegistrarConfig::new(REALM));
        assert_eq!(w.reg.config().nat_max_expires, 60);
        let mut p = alice();
        let out = p.register(&mut w, "Contact: <sip:alice@192.0.2.10:5060>\r\n");
        assert_eq!(out.response.status(), Some(200));
        assert_eq!(
            contacts_of(&out.response),
            ["<sip:alice@192.0.2.10:5060>;expires=60"]
        );
        // From its own address it gets what it asked for; over a stream, less than a quiet
        // connection is kept open.
        for (source, granted) in [
            (src("192.0.2.10:5060", Transport::Udp, 0), 3600),
            (src("198.51.100.7:40000", Transport::Tcp, 7), 600),
        ] {
            let mut w = World::with(RegistrarConfig::new(REALM));
            let mut p = alice();
            p.source = source;
            let out = p.register(&mut w, "Contact: <sip:alice@192.0.2.10:5060>\r\n");
            assert_eq!(
                contacts_of(&out.response),
                [format!("<sip:alice@192.0.2.10:5060>;expires={granted}")],
                "{source:?}"
            );
        }
        assert!(!behind_nat(
            &Uri::parse("sip:alice@phone.example").unwrap(),
            &udp()
        ));
        // A dual-stack socket reports an IPv4 phone as `::ffff:…`: not a NAT.
        assert!(!behind_nat(
            &Uri::parse("sip:alice@192.0.2.10:5060").unwrap(),
            &src("[::ffff:192.0.2.10]:5060", Transport::Udp, 0)
        ));
    }

    #[test]
    fn remaining_time_is_listed() {
        let mut w = World::new();
        let mut p = alice();
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
        w.now += 1_000_500;
        let mut q = Phone::new("alice", "wonderland");
        q.call_id = "second".to_owned();
        let out = q.register(&mut w, "Contact: <sip:alice@10.1.1.1>;expires=120\r\n");
        let mut listed = contacts_of(&out.response);
        listed.sort();
        assert_eq!(
            listed,
            [
                "<sip:alice@10.1.1.1>;expires=120",
                "<sip:alice@192.0.2.10:5060>;expires=2600"
            ]
        );
    }

    #[test]
    fn no_contact_is_a_query() {
        let mut w = World::new();
        let mut p = alice();
        let out = p.register(&mut w, "");
        assert_eq!(out.response.status(), Some(200));
        assert!(contacts_of(&out.response).is_empty());
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
        let out = p.register(&mut w, "Expires: 0\r\n");
        assert_eq!(out.response.status(), Some(200));
        assert!(out.changes.is_empty());
        assert_eq!(
            contacts_of(&out.response),
            ["<sip:alice@192.0.2.10:5060>;expires=3600"]
        );
        assert_eq!(w.reg.len(), 1);
    }

    #[test]
    fn too_many_contacts_is_403_and_changes_nothing() {
        let mut w = World::with(RegistrarConfig {
            max_contacts_per_aor: 2,
            ..RegistrarConfig::new(REALM)
        });
        let mut p = alice();
        let two = "Contact: <sip:alice@10.0.0.1>, <sip:alice@10.0.0.2>\r\n";
        assert_eq!(p.register(&mut w, two).response.status(), Some(200));
        let out = p.register(&mut w, "Contact: <sip:alice@10.0.0.3>\r\n");
        assert_eq!(out.response.status(), Some(403));
        assert_eq!(out.response.reason(), Some("Too Many Contacts"));
        assert!(out.changes.is_empty());
        assert_eq!(w.reg.len(), 2);
        // Replacing one in the same request fits.
        let out = p.register(
            &mut w,
            "Contact: <sip:alice@10.0.0.1>;expires=0, <sip:alice@10.0.0.3>\r\n",
        );
        assert_eq!(out.response.status(), Some(200));
        // An AOR over a lowered limit can still refresh and shrink.
        w.reg.config.max_contacts_per_aor = 1;
        let out = p.register(&mut w, "Contact: <sip:alice@10.0.0.2>\r\n");
        assert_eq!(out.response.status(), Some(200));
        let out = p.register(&mut w, "Contact: <sip:alice@10.0.0.2>;expires=0\r\n");
        assert_eq!(out.response.status(), Some(200));
        assert_eq!(w.reg.len(), 1);
        w.reg.config.max_contacts_per_aor = 2;
        // Expired bindings do not count and are removed on the way.
        w.now += 3_600_000;
        let out = p.register(
            &mut w,
            "Contact: <sip:alice@10.0.0.8>, <sip:alice@10.0.0.9>\r\n",
        );
        assert_eq!(out.response.status(), Some(200));
        assert_eq!(removals(&out.changes), ["sip:alice@10.0.0.3"]);
        assert_eq!(w.reg.len(), 2);
    }

    #[test]
    fn instance_id_replaces_the_old_contact() {
        let mut w = World::new();
        let mut p = alice();
        let inst = "+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>\";reg-id=1";
        let out = p.register(
            &mut w,
            &format!("Contact: <sip:alice@10.0.0.1:5060>;{inst}\r\n"),
        );
        assert_eq!(out.response.status(), Some(200));
        let b = &w.reg.bindings_for("alice")[0];
        assert_eq!(
            b.instance.as_deref(),
            Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>")
        );
        assert_eq!(b.reg_id, Some(1));
        assert_eq!(
            contacts_of(&out.response),
            [format!("<sip:alice@10.0.0.1:5060>;expires=3600;{inst}")]
        );
        // Rebooted onto another port, new Call-ID: replaces, not adds.
        p.call_id = "after-reboot".to_owned();
        let out = p.register(
            &mut w,
            &format!("Contact: <sip:alice@10.0.0.1:5062>;{inst}\r\n"),
        );
        assert_eq!(out.response.status(), Some(200));
        assert_eq!(removals(&out.changes), ["sip:alice@10.0.0.1:5060"]);
        assert_eq!(upserts(&out.changes)[0].contact, "sip:alice@10.0.0.1:5062");
        assert_eq!(w.reg.len(), 1);
    }

    #[test]
    fn duplicate_contact_in_one_request_is_not_a_conflict() {
        let mut w = World::new();
        let mut p = alice();
        let out = p.register(
            &mut w,
            "Contact: <sip:alice@10.0.0.1>, <sip:alice@10.0.0.1>;expires=120\r\n",
        );
        assert_eq!(out.response.status(), Some(200));
        assert_eq!(w.reg.len(), 1);
        assert_eq!(w.reg.bindings_for("alice")[0].expires_at_ms, T0 + 120_000);
        assert_eq!(upserts(&out.changes).len(), 1);
    }

    #[test]
    fn bad_contacts_are_400() {
        let mut w = World::new();
        let mut p = alice();
        let long = format!("Contact: <sip:alice@10.0.0.1;x={}>\r\n", "a".repeat(600));
        for bad in ["Contact: <tel:+15551234567>\r\n", long.as_str()] {
            let out = p.register(&mut w, bad);
            assert_eq!(out.response.status(), Some(400), "{bad}");
            assert!(out.changes.is_empty());
        }
        assert!(w.reg.is_empty());
    }

    #[test]
    fn long_user_agent_is_truncated() {
        let mut w = World::new();
        let mut p = alice();
        assert_eq!(p.register(&mut w, C1).response.status(), Some(200));
        p.nc += 1;
        let req = p
            .request(C1, true, None)
            .replace("TestPhone/1.0", &"é".repeat(200));
        let out = w.send(&req, udp());
        assert_eq!(out.response.status(), Some(200));
        let ua = w.reg.bindings_for("alice")[0].user_agent.clone();
        assert_eq!(ua, Some("é".repeat(MAX_USER_AGENT_LEN / 2)));
    }

    #[test]
    fn non_register_is_405() {
        let mut w = World::new();
        let text = "OPTIONS sip:pbx.example.com SIP/2.0\r\n\
            Via: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKo1\r\n\
            From: <sip:alice@pbx.example.com>;tag=1\r\nTo: <sip:alice@pbx.example.com>\r\n\
            Call-ID: o1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let out = w.send(text, udp());
        assert_eq!(out.response.status(), Some(405));
        assert_eq!(out.response.header(&HeaderName::Allow), Some("REGISTER"));
    }

    #[test]
    fn expiry_timer_and_removal() {
        let mut w = World::new();
        assert_eq!(w.reg.next_expiry(), None);
        let mut p = alice();
        p.register(
            &mut w,
            "Contact: <sip:alice@10.0.0.1>;expires=60, <sip:alice@10.0.0.2>;expires=120\r\n",
        );
        let mut q = Phone::new("bob", "builder");
        q.register(&mut w, "Contact: <sip:bob@10.0.0.3>;expires=90\r\n");
        assert_eq!(w.reg.next_expiry(), Some(T0 + 60_000));
        assert!(w.reg.expire(T0 + 59_999).is_empty());
        assert_eq!(w.reg.lookup("alice", T0 + 60_000).len(), 1);
        let gone = w.reg.expire(T0 + 60_000);
        assert_eq!(
            gone,
            [BindingChange::Remove {
                aor: "alice".into(),
                contact: "sip:alice@10.0.0.1".into()
            }]
        );
        assert_eq!(w.reg.next_expiry(), Some(T0 + 90_000));
        assert_eq!(w.reg.expire(T0 + 200_000).len(), 2);
        assert!(w.reg.is_empty());
        assert_eq!(w.reg.next_expiry(), None);
    }

    #[test]
    fn restore_rebuilds_the_table() {
        let mut w = World::new();
        let mut p = alice();
        p.register(
            &mut w,
            "Contact: <sip:alice@10.0.0.1>, <sip:alice@10.0.0.2>\r\n",
        );
        let saved: Vec<Binding> = w.reg.bindings_for("alice").to_vec();
        let mut fresh = Registrar::new(RegistrarConfig::new(REALM), b"another");
        fresh.restore(saved.clone());
        fresh.restore(saved[..1].to_vec());
        assert_eq!(fresh.len(), 2);
        assert_eq!(fresh.bindings_for("alice"), saved.as_slice());
        assert_eq!(fresh.lookup("alice", T0).len(), 2);
        // Restored bindings take part in CSeq checks.
        let mut w2 = World::new();
        w2.reg.restore(saved);
        p.challenge = None;
        p.cseq = 0;
        let out = p.register(&mut w2, "Contact: <sip:alice@10.0.0.2>\r\n");
        assert_eq!(out.response.status(), Some(500));
    }

    #[test]
    fn binding_stays_small() {
        assert!(std::mem::size_of::<Binding>() <= 256);
        let mut w = World::new();
        let mut p = alice();
        p.register(
            &mut w,
            "Contact: <sip:alice@192.168.100.200:50600;transport=tcp;ob>;\
             +sip.instance=\"<urn:uuid:12345678-1234-1234-1234-123456789abc>\";reg-id=1\r\n",
        );
        let b = &w.reg.bindings_for("alice")[0];
        let heap = b.aor.capacity()
            + b.contact.capacity()
            + b.call_id.capacity()
            + b.user_agent.as_ref().map_or(0, String::capacity)
            + b.instance.as_ref().map_or(0, String::capacity);
        assert!(std::mem::size_of::<Binding>() + heap < 1024, "{heap}");
        // Worst case allowed by the caps, plus the aor.
        assert!(
            std::mem::size_of::<Binding>()
                + MAX_CONTACT_LEN
                + MAX_CALL_ID_LEN
                + MAX_INSTANCE_LEN
                + MAX_USER_AGENT_LEN
                < 1400
        );
    }

    #[test]
    fn uri_comparison() {
        let u = |s: &str| Uri::parse(s).unwrap();
        let eq = |a: &str, b: &str| uri_equivalent(&u(a), &u(b));
        assert!(eq("sip:a@EXAMPLE.com", "sip:a@example.com"));
        assert!(eq("sip:%61@h", "sip:a@h"));
        assert!(eq("sip:a@h;transport=TCP", "sip:a@h;transport=tcp"));
        assert!(eq("sip:a@h;foo=1", "sip:a@h"));
        assert!(!eq("sip:A@h", "sip:a@h"));
        assert!(!eq("sip:a@h", "sip:a@h:5060"));
        assert!(!eq("sip:a@h", "sips:a@h"));
        assert!(!eq("sip:a@h;maddr=1.2.3.4", "sip:a@h"));
        assert!(!eq("sip:a@h;user=phone", "sip:a@h"));
        assert!(!eq("sip:a@h;transport=udp", "sip:a@h;transport=tcp"));
    }

    #[test]
    fn date_and_q_formatting() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(1_700_000_000_999),
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
        assert_eq!(http_date(951_782_400_000), "Tue, 29 Feb 2000 00:00:00 GMT");
        let _ = http_date(u64::MAX);
        assert_eq!(format_q(1000), "1");
        assert_eq!(format_q(500), "0.5");
        assert_eq!(format_q(55), "0.055");
        assert_eq!(format_q(0), "0");
    }

    /// Byte mutations of an authorized REGISTER: whatever parses must be
    /// answered without panicking.
    #[test]
    fn mutated_requests_never_panic() {
        let mut w = World::new();
        let mut p = alice();
        p.register(&mut w, C1);
        let base = p
            .request(
                "Contact: <sip:alice@10.0.0.1>;expires=30;q=0.5;+sip.instance=\"<x>\";reg-id=2\r\n\
                 Expires: 0\r\n",
                true,
                None,
            )
            .into_bytes();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let alphabet = b"*0:;,=\"<>@ \r\n\\aZ9%-.";
        let mut handled = 0;
        for _ in 0..3000 {
            let mut m = base.clone();
            for _ in 0..(next() % 4 + 1) {
                let i = (next() % m.len() as u64) as usize;
                m[i] = alphabet[(next() % alphabet.len() as u64) as usize];
            }
            if let Ok(req) = parse(&m) {
                let creds = Registrar::auth_username(&req).and_then(|u| w.store.get(&u).cloned());
                let out = w.reg.handle_register(&req, udp(), creds.as_ref(), w.now);
                assert!(out.response.status().is_some());
                handled += 1;
            }
        }
        assert!(handled > 100);
    }
}

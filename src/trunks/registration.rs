//! Registering a trunk's account with the ITSP (RFC 3261 §10.2, the client side), as a sans-IO
//! state machine.
//!
//! [`Registration::poll_register`] hands out a REGISTER when one is due; the driver sends it on
//! a client transaction and feeds back the final response ([`Registration::on_response`]) or
//! the transaction's failure ([`Registration::on_failure`]). A 401/407 is answered once with
//! digest credentials ([`crate::sip::auth::authorize`]); a second challenge for the same nonce
//! means the password is wrong. A 423 retries at once with the `Min-Expires` asked for. The
//! binding is refreshed before it runs out; failures are retried with a growing pause.
//!
//! One Call-ID and a rising CSeq for the account's whole life (§10.2.4), so the registrar sees
//! refreshes of one binding and not new ones.
//!
//! Owns: the REGISTER's content and timing. Must not touch: sockets, the transaction layer,
//! DNS (the driver gives the destination), the status table (the driver publishes [`Status`]).

use std::time::{Duration, Instant};

use crate::sip::auth;
use crate::sip::header::{HeaderName, NameAddr, Via};
use crate::sip::message::{self, Message, Method};
use crate::sip::uri::Uri;

/// First pause after a failure; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(30);
const MAX_RETRY: Duration = Duration::from_secs(300);

/// Where the registration stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Not registered yet; a REGISTER is on its way or due.
    Registering,
    /// Registered until `until`.
    Registered { until: Instant },
    /// The last attempt failed for `reason` ("403", "timeout", "wrong password" …); the next
    /// one is at `retry_at`.
    Failed { reason: String, retry_at: Instant },
}

/// What the REGISTERs need.
#[derive(Debug, Clone)]
pub struct Account {
    /// Request-URI: `sip:domain[:port]`.
    pub registrar: Uri,
    /// The address of record, `sip:username@domain` (From and To).
    pub aor: Uri,
    /// Digest username and password.
    pub auth_user: String,
    pub password: String,
    /// Expiry we ask for, in seconds.
    pub expiry: u32,
}

/// One account's registration. See the module documentation.
#[derive(Debug)]
pub struct Registration {
    account: Account,
    call_id: String,
    from_tag: String,
    cseq: u32,
    expiry: u32,
    status: Status,
    /// When the next REGISTER is due; `None` while one is in flight.
    due: Option<Instant>,
    /// The challenge answered in the REGISTER in flight, if any (its nonce).
    answered_nonce: Option<String>,
    nc: u32,
    retry: Duration,
    random: u64,
    /// The REGISTER in flight, to answer a challenge to it.
    last: Option<Message>,
}

impl Registration {
    /// A registration that starts at once.
    pub fn new(account: Account, seed: u64, now: Instant) -> Registration {
        let mut random = seed;
        let call_id = format!(
            "{:016x}{:016x}",
            crate::b2bua::call::splitmix(&mut random),
            crate::b2bua::call::splitmix(&mut random)
        );
        let from_tag = message::new_tag(crate::b2bua::call::splitmix(&mut random)).to_string();
        Registration {
            expiry: account.expiry,
            account,
            call_id,
            from_tag,
            cseq: 0,
            status: Status::Registering,
            due: Some(now),
            answered_nonce: None,
            nc: 0,
            retry: FIRST_RETRY,
            random,
            last: None,
        }
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    /// When [`Registration::poll_register`] has something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due
    }

    /// A new REGISTER, when one is due at `now`. `via` is our Via (transport and sent-by;
    /// the branch is set here) and `contact` our Contact.
    pub fn poll_register(
        &mut self,
        via: &Via,
        contact: &NameAddr,
        now: Instant,
    ) -> Option<Message> {
        if !self.due.is_some_and(|t| t <= now) {
            return None;
        }
        self.due = None;
        self.answered_nonce = None;
        let req = self.build(via, contact, None);
        self.last = Some(req.clone());
        Some(req)
    }

    /// The final response to the REGISTER in flight. Returns a REGISTER to send at once (the
    /// same one with credentials, or with a longer expiry after 423).
    pub fn on_response(
        &mut self,
        rsp: &Message,
        via: &Via,
        contact: &NameAddr,
        now: Instant,
    ) -> Option<Message> {
        let status = rsp.status()?;
        if status < 200 {
            return None;
        }
        match status {
            200..=299 => {
                let granted = granted_expiry(rsp, contact).unwrap_or(self.expiry);
                if granted == 0 {
                    // The registrar took the binding away at once: treat as a failure.
                    self.fail("registrar granted 0 s", now);
                    return None;
                }
                let until = now + Duration::from_secs(u64::from(granted));
                self.status = Status::Registered { until };
                self.due = Some(now + refresh_after(granted));
                self.retry = FIRST_RETRY;
                self.last = None;
                None
            }
            401 | 407 => {
                let name = if status == 401 {
                    HeaderName::WwwAuthenticate
                } else {
                    HeaderName::ProxyAuthenticate
                };
                let challenges: Vec<_> = rsp.challenges(&name).filter_map(Result::ok).collect();
                let stale = challenges.iter().any(|c| c.stale());
                let nonce = challenges.iter().find_map(|c| c.nonce()).map(str::to_owned);
                if self.answered_nonce.is_some() && (!stale && self.answered_nonce == nonce) {
                    self.fail("wrong password", now);
                    return None;
                }
                if self.answered_nonce.is_some() && !stale {
                    // A fresh nonce right after our answer: the registrar did not take our
                    // credentials either.
                    self.fail(&status.to_string(), now);
                    return None;
                }
                let uri = self.account.registrar.to_string();
                self.nc += 1;
                let cnonce = format!("{:016x}", crate::b2bua::call::splitmix(&mut self.random));
                let Some(creds) = auth::authorize(
                    &challenges,
                    &self.account.auth_user,
                    &self.account.password,
                    "REGISTER",
                    &uri,
                    &cnonce,
                    self.nc,
                ) else {
                    self.fail("unsupported challenge", now);
                    return None;
                };
                let header = if status == 401 {
                    HeaderName::Authorization
                } else {
                    HeaderName::ProxyAuthorization
                };
                self.answered_nonce = nonce;
                let req = self.build(via, contact, Some((header, creds.to_string())));
                self.last = Some(req.clone());
                Some(req)
            }
            423 => match rsp.min_expires() {
                Some(min) if min > self.expiry && min <= 86_400 => {
                    self.expiry = min;
                    let req = self.build(via, contact, None);
                    self.answered_nonce = None;
                    self.last = Some(req.clone());
                    Some(req)
                }
                _ => {
                    self.fail("423", now);
                    None
                }
            },
            _ => {
                self.fail(&status.to_string(), now);
                None
            }
        }
    }

    /// The REGISTER's transaction timed out or could not be sent.
    pub fn on_failure(&mut self, reason: &str, now: Instant) {
        self.fail(reason, now);
    }

    /// The trunk has no address to send to yet: try again later.
    pub fn postpone(&mut self, reason: &str, now: Instant) {
        self.fail(reason, now);
    }

    fn fail(&mut self, reason: &str, now: Instant) {
        let retry_at = now + self.retry;
        // A registration that still has time left stays usable until then; the status says
        // what went wrong either way.
        self.status = Status::Failed {
            reason: reason.to_owned(),
            retry_at,
        };
        self.due = Some(retry_at);
        self.retry = (self.retry * 2).min(MAX_RETRY);
        self.answered_nonce = None;
        self.last = None;
    }

    fn build(
        &mut self,
        via: &Via,
        contact: &NameAddr,
        auth: Option<(HeaderName, String)>,
    ) -> Message {
        self.cseq += 1;
        let mut via = via.clone();
        via.params.set(
            "branch",
            Some(message::new_branch(crate::b2bua::call::splitmix(
                &mut self.random,
            ))),
        );
        via.params.set("rport", None);
        let mut from = NameAddr::new(self.account.aor.clone());
        from.set_tag(&self.from_tag);
        let to = NameAddr::new(self.account.aor.clone());
        let mut req = Message::request(Method::Register, self.account.registrar.clone());
        let headers = [
            (HeaderName::Via, via.to_string()),
            (HeaderName::MaxForwards, "70".to_owned()),
            (HeaderName::From, from.to_string()),
            (HeaderName::To, to.to_string()),
            (HeaderName::CallId, self.call_id.clone()),
            (HeaderName::CSeq, format!("{} REGISTER", self.cseq)),
            (HeaderName::Contact, contact.to_string()),
            (HeaderName::Expires, self.expiry.to_string()),
            (
                HeaderName::UserAgent,
                crate::sip::endpoint::SERVER.to_owned(),
            ),
        ];
        for (name, value) in headers {
            // Every value is built from typed parts.
            let _ = req.push_header(name, &value);
        }
        if let Some((name, value)) = auth {
            let _ = req.push_header(name, &value);
        }
        req
    }
}

/// The expiry the registrar granted our contact: its `expires` parameter in the 200's Contact
/// list (matched by URI), else the `Expires` header.
fn granted_expiry(rsp: &Message, ours: &NameAddr) -> Option<u32> {
    let own = rsp
        .contacts()
        .iter()
        .find(|c| c.uri == ours.uri)
        .and_then(NameAddr::expires);
    own.or_else(|| rsp.expires())
}

/// Refresh before the binding runs out: halfway for short ones, a minute early for long ones,
/// never sooner than 5 s from now.
fn refresh_after(granted: u32) -> Duration {
    let g = u64::from(granted);
    let early = (g / 2).min(60);
    Duration::from_secs((g - early).max(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::auth::{Algorithm, DigestServer, Verdict};
    use crate::sip::header::Transport;
    use crate::sip::uri::Host;

    const REALM: &str = "itsp.test";

    fn account() -> Account {
        Account {
            registrar: Uri::parse("sip:itsp.test").unwrap(),
            aor: Uri::parse("sip:4930555@itsp.test").unwrap(),
            auth_user: "4930555".into(),
            password: "secret".into(),
            expiry: 600,
        }
    }

    fn via() -> Via {
        Via::new(
            Transport::Udp,
            Host::parse("192.0.2.1").unwrap(),
            Some(5060),
            "z9hG4bK",
        )
    }

    fn contact() -> NameAddr {
        NameAddr::parse("<sip:4930555@192.0.2.1:5060>").unwrap()
    }

    /// The ITSP's side: a digest server with the account's password.
    fn answer(server: &mut DigestServer, req: &Message, status: u16, now_ms: u64) -> Message {
        let mut rsp = Message::response_to(req, status, message::reason_phrase(status));
        let _ = rsp.set_to_tag("itsp");
        if status == 401 {
            for v in server.challenge(REALM, false, now_ms) {
                let _ = rsp.push_header(HeaderName::WwwAuthenticate, &v);
            }
        }
        rsp
    }

    fn verify(server: &mut DigestServer, req: &Message, password: &str, now_ms: u64) -> Verdict {
        let creds = req
            .credentials(&HeaderName::Authorization)
            .find_map(Result::ok)
            .expect("credentials");
        server.verify(
            &creds,
            "REGISTER",
            |alg| Some(auth::ha1(alg, "4930555", REALM, password)),
            REALM,
            now_ms,
        )
    }

    #[test]
    fn challenge_answer_register_and_refresh() {
        let t0 = Instant::now();
        let mut server = DigestServer::new(b"0123456789abcdef0123456789abcdef")
            .with_algorithms(&[Algorithm::Sha256, Algorithm::Md5]);
        let mut r = Registration::new(account(), 7, t0);
        assert_eq!(r.poll_timeout(), Some(t0));
        let first = r
            .poll_register(&via(), &contact(), t0)
            .expect("due at once");
        assert_eq!(first.cseq().map(|c| c.seq), Some(1));
        assert_eq!(first.expires(), Some(600));
        assert!(
            r.poll_register(&via(), &contact(), t0).is_none(),
            "one in flight"
        );
        assert_eq!(r.poll_timeout(), None);

        let challenge = answer(&mut server, &first, 401, 1_000);
        let second = r
            .on_response(&challenge, &via(), &contact(), t0)
            .expect("answers the challenge");
        assert_eq!(second.cseq().map(|c| c.seq), Some(2));
        assert_eq!(second.call_id(), first.call_id());
        assert_ne!(
            second.top_via().and_then(|v| v.branch().map(str::to_owned)),
            first.top_via().and_then(|v| v.branch().map(str::to_owned))
        );
        assert_eq!(verify(&mut server, &second, "secret", 1_001), Verdict::Ok);

        let mut ok = answer(&mut server, &second, 200, 1_002);
        let _ = ok.push_header(
            HeaderName::Contact,
            "<sip:4930555@192.0.2.1:5060>;expires=120",
        );
        assert!(r.on_response(&ok, &via(), &contact(), t0).is_none());
        assert_eq!(
            r.status(),
            &Status::Registered {
                until: t0 + Duration::from_secs(120)
            }
        );
        // Refreshed a minute early (60 s of 120): same Call-ID, next CSeq.
        assert_eq!(r.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        assert!(r
            .poll_register(&via(), &contact(), t0 + Duration::from_secs(59))
            .is_none());
        let refresh = r
            .poll_register(&via(), &contact(), t0 + Duration::from_secs(60))
            .unwrap();
        assert_eq!(refresh.cseq().map(|c| c.seq), Some(3));
        assert_eq!(refresh.call_id(), first.call_id());
        assert!(refresh
            .credentials(&HeaderName::Authorization)
            .next()
            .is_none());
    }

    #[test]
    fn wrong_password_fails_and_backs_off() {
        let t0 = Instant::now();
        let mut server = DigestServer::new(b"0123456789abcdef0123456789abcdef");
        let mut acc = account();
        acc.password = "wrong".into();
        let mut r = Registration::new(acc, 1, t0);
        let first = r.poll_register(&via(), &contact(), t0).unwrap();
        let second = r
            .on_response(
                &answer(&mut server, &first, 401, 1_000),
                &via(),
                &contact(),
                t0,
            )
            .unwrap();
        assert!(matches!(
            verify(&mut server, &second, "secret", 1_001),
            Verdict::Failed(_)
        ));
        // The registrar challenges again: no third try with the same password.
        assert!(r
            .on_response(
                &answer(&mut server, &second, 401, 1_002),
                &via(),
                &contact(),
                t0
            )
            .is_none());
        let Status::Failed { reason, retry_at } = r.status().clone() else {
            panic!("{:?}", r.status());
        };
        assert_eq!(reason, "401");
        assert_eq!(retry_at, t0 + FIRST_RETRY);
        // Then 60 s, 120 s … up to 5 minutes.
        let mut at = retry_at;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let req = r.poll_register(&via(), &contact(), at).unwrap();
            r.on_response(&answer(&mut server, &req, 403, 0), &via(), &contact(), at);
            let next = r.poll_timeout().unwrap();
            pauses.push((next - at).as_secs());
            at = next;
        }
        assert_eq!(pauses, [60, 120, 240, 300, 300, 300]);
    }

    #[test]
    fn interval_too_brief_and_timeout() {
        let t0 = Instant::now();
        let mut r = Registration::new(account(), 3, t0);
        let first = r.poll_register(&via(), &contact(), t0).unwrap();
        let mut rsp = Message::response_to(&first, 423, "Interval Too Brief");
        let _ = rsp.push_header(HeaderName::MinExpires, "1800");
        let again = r.on_response(&rsp, &via(), &contact(), t0).unwrap();
        assert_eq!(again.expires(), Some(1800));
        r.on_failure("timeout", t0);
        assert!(matches!(r.status(), Status::Failed { reason, .. } if reason == "timeout"));
        // The 200 without a Contact expiry: the Expires header counts.
        let req = r
            .poll_register(&via(), &contact(), t0 + FIRST_RETRY)
            .unwrap();
        let mut ok = Message::response_to(&req, 200, "OK");
        let _ = ok.push_header(HeaderName::Expires, "3600");
        r.on_response(&ok, &via(), &contact(), t0 + FIRST_RETRY);
        assert_eq!(
            r.poll_timeout(),
            Some(t0 + FIRST_RETRY + Duration::from_secs(3540))
        );
    }
}

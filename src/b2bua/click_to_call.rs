//! Click-to-call: the groupware asks us to call a number for a user. We ring the user's own
//! current location first (the phones show "Call to <target>"); when one answers it hears
//! ringback from our media engine while we dial the target; when the target answers the two
//! are bridged through one relay session.
//!
//! A click-to-call is two ordinary [`super::call::Call`]s whose caller leg is ours rather than a
//! phone's (a *virtual* caller): leg A rings the user's location, leg B the target. Their
//! descriptions are our own offers pointing at the two sides of one relay session, so nothing
//! has to be re-negotiated when they are joined: the relay already connects side A to side B.
//! The driver (`service`) glues the two: B starts when A answers, the end of either ends the
//! other, and a target that fails gets a busy or congestion tone before A is hung up.
//!
//! This module owns the API's side: validating and routing a request ([`ClickToCall::start`],
//! database reads, off the endpoint's task), the state the API shows ([`CallView`]), and the
//! builders for the virtual caller's INVITE and our SDP offer. Must not touch: transactions,
//! sockets, the call state machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::Serialize;
use tokio::sync::mpsc;
use utoipa::ToSchema;

use super::service::{from_user, ring_user, Decision, Lookup, Party, Routed};
use crate::sip::header::{HeaderName, NameAddr};
use crate::sip::message::{Message, Method};
use crate::sip::uri::Uri;

/// How long a finished click-to-call stays visible to `GET /calls/{id}`.
const KEEP_ENDED: Duration = Duration::from_secs(3600);

/// Where a click-to-call stands, as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CallView {
    pub id: String,
    /// The number dialled for the user.
    pub to: String,
    /// `calling_you` (your phones ring), `calling_target` (you answered; the target rings),
    /// `connected`, `ended`.
    pub state: String,
    /// Once ended: `answered`, `no_answer`, `busy`, `failed` or `cancelled`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// Once ended: why, in words ("your phone did not answer", "the target is busy" …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix milliseconds.
    pub started_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<i64>,
}

/// Why a click-to-call could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no phone or number of your current location is reachable")]
    Unreachable,
    #[error("{0} is not a number that can be dialled")]
    NotDialable(String),
    #[error("the user does not exist")]
    NoUser,
    #[error("too many calls being set up; try again")]
    Busy,
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// What the endpoint's task needs to start a click-to-call.
#[derive(Debug)]
pub struct Start {
    pub(super) id: String,
    pub(super) user: Party,
    pub(super) to: String,
    /// Ringing the user's location (targets, caller ID "Call to …").
    pub(super) a: Decision,
    /// The target, dialled once A answers.
    pub(super) b: Decision,
}

#[derive(Debug)]
struct Tracked {
    user_id: i64,
    view: CallView,
    ended: Option<Instant>,
}

/// The API's handle: start, look at, hang up. Cheap to clone.
#[derive(Clone)]
pub struct ClickToCall {
    lookup: Arc<Lookup>,
    work: mpsc::Sender<Routed>,
    calls: Arc<DashMap<String, Tracked>>,
}

impl std::fmt::Debug for ClickToCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClickToCall")
            .field("calls", &self.calls.len())
            .finish()
    }
}

/// The driver's side of the shared state.
#[derive(Clone, Debug)]
pub(super) struct Status {
    calls: Arc<DashMap<String, Tracked>>,
}

impl Status {
    pub(super) fn update(&self, id: &str, f: impl FnOnce(&mut CallView)) {
        if let Some(mut t) = self.calls.get_mut(id) {
            f(&mut t.view);
            if t.view.state == "ended" && t.ended.is_none() {
                t.ended = Some(Instant::now());
            }
        }
    }
}

impl ClickToCall {
    pub(super) fn new(lookup: Arc<Lookup>, work: mpsc::Sender<Routed>) -> (ClickToCall, Status) {
        let calls = Arc::new(DashMap::new());
        (
            ClickToCall {
                lookup,
                work,
                calls: calls.clone(),
            },
            Status { calls },
        )
    }

    /// Validates and routes a click-to-call for `user_id` to `to`, and hands it to the
    /// endpoint's task. Returns as soon as the user's phones are being rung.
    pub async fn start(&self, user_id: i64, to: &str) -> Result<CallView, StartError> {
        let to = crate::routing::strip_separators(to);
        if to.is_empty()
            || to.len() > 32
            || !to
                .bytes()
                .enumerate()
                .all(|(i, b)| b.is_ascii_digit() || b == b'*' || b == b'#' || (b == b'+' && i == 0))
        {
            return Err(StartError::NotDialable(to));
        }
        let lookup = &self.lookup;
        let user = lookup.user(user_id).await?.ok_or(StartError::NoUser)?;
        // The target first: a number that goes nowhere is refused before any phone rings.
        let b = from_user(lookup, &user, to.clone()).await?;
        let (target_number, target_name) = match &b {
            Decision::Ring { parties, .. } => {
                (parties.callee.number.clone(), parties.callee.name.clone())
            }
            _ => return Err(StartError::NotDialable(to)),
        };
        let shown = NameAddr::parse(&format!("<sip:{}@{}>", user.extension, lookup.realm))
            .ok()
            .map(|mut n| {
                n.display_name = Some(format!("Call to {to}"));
                n
            })
            .ok_or_else(|| StartError::NotDialable(to.clone()))?;
        let me = Party {
            user_id: Some(user.id),
            number: user.extension.as_str().into(),
            name: user.display_name.as_str().into(),
        };
        let a = ring_user(lookup, &user.extension, to.clone(), me.clone(), shown, None).await?;
        let Decision::Ring {
            caller_id,
            targets,
            mut parties,
        } = a
        else {
            return Err(StartError::Unreachable);
        };
        if targets.is_empty() {
            return Err(StartError::Unreachable);
        }
        // Leg A's record and events are the user's outgoing call to the target.
        parties.caller = me.clone();
        parties.callee = Party {
            user_id: None,
            number: target_number,
            name: target_name,
        };
        let id = format!("{:016x}", rand::random::<u64>());
        let view = CallView {
            id: id.clone(),
            to: to.clone(),
            state: "calling_you".into(),
            outcome: None,
            reason: None,
            started_at: crate::store::now_ms(),
            answered_at: None,
            ended_at: None,
        };
        self.forget_old();
        self.calls.insert(
            id.clone(),
            Tracked {
                user_id,
                view: view.clone(),
                ended: None,
            },
        );
        let start = Start {
            id: id.clone(),
            user: me,
            to,
            a: Decision::Ring {
                caller_id,
                targets,
                parties,
            },
            b,
        };
        if self
            .work
            .try_send(Routed::ClickToCall(Box::new(start)))
            .is_err()
        {
            self.calls.remove(&id);
            return Err(StartError::Busy);
        }
        Ok(view)
    }

    /// A click-to-call of `user_id` (someone else's is `None`, as if it did not exist).
    pub fn get(&self, user_id: i64, id: &str) -> Option<CallView> {
        self.calls
            .get(id)
            .filter(|t| t.user_id == user_id)
            .map(|t| t.view.clone())
    }

    /// Hangs up a click-to-call of `user_id`; false when there is no such call (or it is
    /// someone else's).
    pub fn hang_up(&self, user_id: i64, id: &str) -> bool {
        if self.get(user_id, id).is_none() {
            return false;
        }
        let _ = self.work.try_send(Routed::HangUp(id.to_owned()));
        true
    }

    fn forget_old(&self) {
        let now = Instant::now();
        self.calls
            .retain(|_, t| t.ended.map_or(true, |e| now.duration_since(e) < KEEP_ENDED));
    }
}

/// Our SDP for one side of a click-to-call at `rtp` (a relay session's side): the offer lists
/// both G.711 laws (`law = None`), an answer the one law in use; telephone-events either way.
pub(super) fn offer(rtp: std::net::SocketAddr, session: u64, law: Option<u8>) -> String {
    description(rtp, session, law, "sendrecv")
}

/// Our answer to a phone's re-offer (hold, resume) on a leg whose other side is ours: the law
/// in use, and the direction RFC 3264 §6.1 pairs with the offered one (sendonly → recvonly,
/// recvonly → sendonly, inactive → inactive, else sendrecv).
pub(super) fn answer(rtp: std::net::SocketAddr, law: u8, offer: &str) -> String {
    let offered = offer
        .lines()
        .map(str::trim)
        .rev()
        .find_map(|l| match l {
            "a=sendonly" => Some("recvonly"),
            "a=recvonly" => Some("sendonly"),
            "a=inactive" => Some("inactive"),
            "a=sendrecv" => Some("sendrecv"),
            _ => None,
        })
        .unwrap_or("sendrecv");
    description(rtp, 1, Some(law), offered)
}

fn description(
    rtp: std::net::SocketAddr,
    session: u64,
    law: Option<u8>,
    direction: &str,
) -> String {
    let (family, ip) = match rtp.ip() {
        std::net::IpAddr::V4(a) => ("IP4", a.to_string()),
        std::net::IpAddr::V6(a) => ("IP6", a.to_string()),
    };
    let (formats, maps) = match law {
        Some(8) => ("8 101", "a=rtpmap:8 PCMA/8000\r\n"),
        Some(_) => ("0 101", "a=rtpmap:0 PCMU/8000\r\n"),
        None => (
            "0 8 101",
            "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n",
        ),
    };
    format!(
        "v=0\r\no=switchboard {session} {session} IN {family} {ip}\r\ns=switchboard\r\n\
         c=IN {family} {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {formats}\r\n\
         {maps}a=rtpmap:101 telephone-event/8000\r\n\
         a=fmtp:101 0-15\r\na=ptime:20\r\na={direction}\r\n",
        port = rtp.port()
    )
}

/// The virtual caller's INVITE for one leg: what a phone of ours would have sent, so that an
/// ordinary [`super::call::Call`] can run the leg. It never goes on the wire.
pub(super) fn virtual_invite(
    id: &str,
    leg: &str,
    from: &NameAddr,
    to: &str,
    realm: &str,
    contact: &NameAddr,
    sdp: String,
) -> Option<Message> {
    let uri = Uri::parse(&format!("sip:{}@{realm}", to.trim_start_matches('+'))).ok()?;
    let mut m = Message::request(Method::Invite, uri.clone());
    let mut from = from.clone();
    from.set_tag(&format!("c2c{id}{leg}"));
    let headers = [
        (
            HeaderName::Via,
            format!("SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKc2c{id}{leg}"),
        ),
        (HeaderName::MaxForwards, "70".to_owned()),
        (HeaderName::From, from.to_string()),
        (HeaderName::To, NameAddr::new(uri).to_string()),
        (HeaderName::CallId, format!("c2c-{id}-{leg}")),
        (HeaderName::CSeq, "1 INVITE".to_owned()),
        (HeaderName::Contact, contact.to_string()),
    ];
    for (name, value) in headers {
        m.push_header(name, &value).ok()?;
    }
    m.set_body(sdp.into_bytes(), Some("application/sdp")).ok()?;
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_pair_the_offered_direction() {
        let at: std::net::SocketAddr = "192.0.2.1:20000".parse().unwrap();
        let hold = "v=0\r\nm=audio 4000 RTP/AVP 0\r\na=sendonly\r\n";
        assert!(answer(at, 0, hold).contains("a=recvonly\r\n"));
        assert!(answer(at, 0, "m=audio 1 RTP/AVP 0\r\na=inactive\r\n").contains("a=inactive"));
        assert!(answer(at, 8, "m=audio 1 RTP/AVP 8\r\n").contains("a=sendrecv"));
        let a = answer(at, 8, hold);
        assert!(a.contains("m=audio 20000 RTP/AVP 8 101\r\n"), "{a}");
        assert!(!a.contains("PCMU"));
        let o = offer(at, 7, None);
        assert!(o.contains("m=audio 20000 RTP/AVP 0 8 101\r\n") && o.contains("a=sendrecv"));
        assert!(o.contains("c=IN IP4 192.0.2.1"));
    }
}

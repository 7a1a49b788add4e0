//! One call through the B2BUA, as a sans-IO state machine.
//!
//! The caller's INVITE arrives on a server transaction the driver owns; the call answers it with
//! [`Action::AnswerCaller`]. Ringing a location means one branch per [`Target`] (every
//! registered contact of every phone, every external number through its trunk), each an INVITE
//! of its own with its own Call-ID (two contacts of one phone must not look like a merged
//! request, RFC 3261 §8.2.2.2). The first 2xx wins: its branch becomes the callee's leg, the
//! caller gets a 200 with the callee's session description, and every other branch is
//! cancelled with a `Reason` saying the call was completed elsewhere (RFC 3326, as phones show
//! it to the user). A 2xx that crosses our CANCEL is acknowledged and hung up at once.
//!
//! Once answered, the call relays in-dialog requests (re-INVITE, UPDATE, INFO, NOTIFY, REFER …)
//! from one leg into the other and maps the answers back, and ends on BYE from either side or on
//! an in-dialog request that times out or gets 481/408 (the other side vanished: the call ends
//! within one transaction timeout instead of lingering).
//!
//! The driver feeds it: [`Call::on_invite_response`] / [`Call::on_invite_timeout`] for the
//! branches, [`Call::on_caller_cancel`], [`Call::on_request`] for in-dialog requests (matched
//! to a leg with [`Call::leg_of`]), [`Call::on_response`] / [`Call::on_request_timeout`] for
//! requests the call sent, and [`Call::handle_timeout`] at [`Call::poll_timeout`]. It carries
//! out [`Call::poll_action`]. Identifiers of transactions are the driver's own (`Key`s); the
//! call never sees a socket, a transaction or the clock.
//!
//! A 3xx from a target whose redirects are followed (a phone's own call forwarding) does not
//! end its branch's part in the call: the call asks the driver to route the Contact's number
//! ([`Action::Redirect`]) and rings what comes back beside the branches still ringing
//! ([`Call::on_redirect`]). A trunk's 3xx is not followed, and a call follows at most
//! [`MAX_REDIRECTS`].
//!
//! An INVITE with `Replaces` (RFC 3891, the last step of an attended transfer) can take the
//! place of either leg of an answered call ([`Call::replace`]): the replaced phone gets BYE and
//! the INVITE goes on to the other party as a re-INVITE, so that the two agree on the new
//! session between them.
//!
//! RFC 4028 session timers are kept here when the caller asks for them (the caller refreshes,
//! or we do when it names us, `refresher=uas`; a session nobody refreshes ends). Media is not: the driver (`b2bua::service`) rewrites the
//! session descriptions the call carries so that both legs send RTP to our relay.
//!
//! RFC 3262: to a caller whose INVITE requires `100rel`, provisional answers go reliably (one
//! unacknowledged at a time, repeated until PRACKed, the 2xx held back behind one with a session
//! description). We offer it to ITSPs ([`Target::offers_100rel`]), whose early media may come
//! only reliably, and PRACK the reliable provisionals of any callee in their early dialog.
//!
//! A trunk's 401/407 is answered with its credentials, once per request: to our INVITE, to our
//! own BYE, and to an in-dialog request we relay to it (hold, resume, INFO...). A challenge
//! that cannot be answered never reaches the other party: it gets 503 instead, and 480 for a
//! redirect of a relayed request.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::idmap::{self, IdMap};
use crate::sip::dialog::{Dialog, DialogError, DialogId, DialogRef, OutgoingRequest};
use crate::sip::header::{HeaderName, NameAddr, Via};
use crate::sip::message::{self, Message, Method};
use crate::sip::uri::Uri;

/// The driver's handle for a transaction (server or client), opaque to the call.
pub type Key = u64;

/// `Reason` on the CANCELs of the branches that lost (RFC 3326; the text is what phones
/// display).
pub const COMPLETED_ELSEWHERE: &str = "SIP;cause=200;text=\"Call completed elsewhere\"";

/// The shortest session interval we accept (RFC 4028 §5: never below 90 s).
pub const MIN_SE: u32 = 90;

/// Redirects followed in one call at most: forwarding chains end there, and two phones
/// forwarding to each other cannot ring for ever.
pub const MAX_REDIRECTS: u8 = 5;

/// Methods we accept inside a call, for `Allow` on the callee's INVITE.
const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, NOTIFY, REFER, PRACK";

/// Which of the two dialogs of an answered call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    Caller,
    Callee,
}

impl Leg {
    fn other(self) -> Leg {
        match self {
            Leg::Caller => Leg::Callee,
            Leg::Callee => Leg::Caller,
        }
    }
}

/// Somewhere to ring: a contact of a phone or an external number at a trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Request-URI of the branch's INVITE.
    pub uri: Uri,
    /// What answered, for the call record ("phone:12", "+4930…").
    pub label: String,
    /// From of this branch when not the call's caller ID (a trunk wants a number of its own
    /// account); no tag.
    pub from: Option<NameAddr>,
    /// Digest credentials for a 401/407 on this branch (a trunk that challenges our INVITE).
    pub credentials: Option<std::sync::Arc<BranchCredentials>>,
    /// Our Contact on this branch when not the call's (a trunk over another transport than
    /// the caller's).
    pub contact: Option<NameAddr>,
    /// Offer RFC 3262 reliable provisionals (`Supported: 100rel`): to an ITSP, whose early
    /// media may come only that way. A reliable provisional from any target is PRACKed.
    pub offers_100rel: bool,
    /// A 3xx from this target is followed, routed as if this user had dialled the number it
    /// redirects to (a phone's own call forwarding). `None` (a trunk, click-to-call): a 3xx
    /// ends the branch.
    pub forwarded_as: Option<i64>,
}

impl Target {
    /// A phone's contact: our caller ID, no credentials.
    pub fn phone(uri: Uri, label: String) -> Target {
        Target {
            uri,
            label,
            from: None,
            credentials: None,
            contact: None,
            offers_100rel: false,
            forwarded_as: None,
        }
    }
}

/// What we answer a trunk's challenge with.
#[derive(Debug, PartialEq, Eq)]
pub struct BranchCredentials {
    pub username: String,
    pub password: String,
}

/// What the call needs from the configuration and the caller's side.
#[derive(Debug, Clone)]
pub struct CallConfig {
    /// Ringing longer than this ends the attempt with `no_answer_status`.
    pub no_answer: Duration,
    /// 480 (Temporarily Unavailable) by default; 408 is the other sensible choice.
    pub no_answer_status: u16,
    /// Our Contact on both legs.
    pub contact: NameAddr,
    /// The Via we add to requests we send (transport and sent-by; the branch is ours).
    pub via: Via,
    /// From of the callee's INVITE: the calling user's extension and name (no tag).
    pub caller_id: NameAddr,
}

/// How a call attempt ended, as the call record puts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Answered,
    NoAnswer,
    Busy,
    Failed,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::NoAnswer => "no_answer",
            Outcome::Busy => "busy",
            Outcome::Failed => "failed",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// Where an in-dialog request goes: the caller, or the phone of one branch (the callee's leg is
/// the winning branch). The driver knows the address and connection of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Towards {
    Caller,
    Branch(usize),
}

/// What the driver has to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send this response on the caller's INVITE server transaction.
    AnswerCaller(Message),
    /// Start an INVITE client transaction for `branch`.
    Invite { branch: usize, request: Message },
    /// CANCEL the INVITE of `branch` (RFC 3261 §9.1), with this `Reason` when given.
    Cancel {
        branch: usize,
        reason: Option<&'static str>,
    },
    /// Send an ACK for a 2xx: no transaction of its own (§13.2.2.4); the driver retransmits it
    /// when the 2xx is retransmitted.
    Ack {
        towards: Towards,
        request: OutgoingRequest,
    },
    /// Start a client transaction for an in-dialog request; its answer comes back through
    /// [`Call::on_response`] with the same key.
    Request {
        key: Key,
        towards: Towards,
        request: OutgoingRequest,
    },
    /// Answer the in-dialog request received under `tx`.
    Respond { tx: Key, response: Message },
    /// The caller described its media anew in an answer the call took itself (to our refresh
    /// re-INVITE) and that goes nowhere else: the relay has to hear of it.
    CallerDescribed(Message),
    /// A branch's target redirected the call (3xx, its call forwarding): route the first
    /// usable of `contacts` (best first) as user `user` would dial it, and give the targets to
    /// [`Call::on_redirect`] for `branch`.
    Redirect {
        branch: usize,
        user: i64,
        contacts: Vec<Uri>,
    },
    /// A leg was replaced ([`Call::replace`]): from here on, requests to it go `towards`, to
    /// where the replacing INVITE came from (for the callee's leg, a new branch the driver
    /// adds at that index). Requests queued before this action still go to the replaced
    /// phone.
    LegReplaced { towards: Towards },
    /// The call is over: write its record ([`Call::summary`]).
    Ended,
}

/// The call record's view of the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub outcome: Outcome,
    pub started: Instant,
    pub answered: Option<Instant>,
    pub ended: Option<Instant>,
    /// The target that answered.
    pub answered_by: Option<String>,
    /// Who or what ended it: "caller", "callee", "no_answer", "cancelled", "timeout", or the
    /// status the caller got ("486", "404" …).
    pub cause: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the caller's INVITE cannot start a dialog: {0}")]
    Dialog(#[from] DialogError),
    #[error("the caller's INVITE is not an INVITE")]
    NotInvite,
}

/// Why an INVITE with `Replaces` cannot take a leg's place (RFC 3891 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReplaceError {
    /// The call is not answered (an early dialog we did not start: §3 says 481), or has no
    /// other leg to join (the echo test).
    #[error("no confirmed dialog to replace")]
    NotConfirmed,
    /// `early-only` named a confirmed dialog.
    #[error("the dialog is confirmed and early-only was asked")]
    EarlyOnly,
    /// A re-INVITE is under way on the call: the replacement would cross it.
    #[error("an offer is pending")]
    Pending,
    /// The INVITE cannot start a dialog (no Contact, a To tag…).
    #[error("the INVITE cannot start a dialog")]
    Dialog,
}

impl ReplaceError {
    /// The answer to the replacing INVITE.
    pub fn status(self) -> u16 {
        match self {
            ReplaceError::NotConfirmed => 481,
            ReplaceError::EarlyOnly => 486,
            ReplaceError::Pending => 491,
            ReplaceError::Dialog => 400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BranchState {
    Calling,
    Ringing,
    /// Final answer received (the status), or our CANCEL's 487.
    Done(u16),
    Cancelling,
    Winner,
}

#[derive(Debug)]
struct Branch {
    target: Target,
    invite: Message,
    state: BranchState,
    /// The INVITE has been sent again with credentials (once per branch: a second challenge
    /// means they were refused).
    authorized: bool,
    /// The early dialog of the last reliable provisional answer we PRACKed (RFC 3262 §4).
    early: Option<Box<Early>>,
}

/// An early dialog with a callee that sends provisional answers reliably.
#[derive(Debug)]
struct Early {
    dialog: Dialog,
    /// The RSeq we PRACKed last: a retransmission repeats it, and only the next one counts.
    rseq: u32,
}

impl Branch {
    fn live(&self) -> bool {
        matches!(self.state, BranchState::Calling | BranchState::Ringing)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ringing,
    Answered,
    Ended,
}

/// A request of our own (a BYE), kept until its final answer.
#[derive(Debug)]
struct Own {
    towards: Towards,
    /// What was sent, when a challenge to it can be answered (towards a trunk).
    request: Option<OutgoingRequest>,
    /// Sent again with credentials already: a second challenge is a refusal.
    authorized: bool,
}

/// A request received on one leg and sent on the other, waiting for the answer.
#[derive(Debug)]
struct Relay {
    /// Sent again with a trunk's credentials already: a second challenge is a refusal.
    authorized: bool,
    from: Leg,
    tx: Key,
    /// As received from `from`: what the answer there is built from.
    request: Message,
    /// As sent on the other leg: what that leg's dialog checks the answer against (target
    /// refresh, §12.2.1.2) and what the ACK of a 2xx to a re-INVITE takes its CSeq from.
    sent: Message,
    /// Where `sent` went: its CANCEL must go there too (§9.1), whatever the route set says.
    next_hop: Uri,
    /// The other leg has answered provisionally, so a CANCEL may follow (§9.1).
    provisional: bool,
    /// The sender CANCELled it before that: the CANCEL goes at the first provisional answer.
    cancel_pending: bool,
    /// The INVITE of a phone replacing `from`'s party ([`Call::replace`]): if the other leg
    /// refuses it, nobody is left to talk to.
    replacing: bool,
}

/// One call. See the module documentation.
#[derive(Debug)]
pub struct Call {
    config: CallConfig,
    caller_invite: Message,
    caller: Dialog,
    callee: Option<Dialog>,
    branches: Vec<Branch>,
    phase: Phase,
    started: Instant,
    answered: Option<Instant>,
    ended: Option<Instant>,
    outcome: Option<Outcome>,
    cause: String,
    winner: Option<usize>,
    deadline: Option<Instant>,
    forwarded_ringing: bool,
    forwarded_early_media: bool,
    relays: IdMap<Key, Relay>,
    /// Requests the call started on its own (BYEs); their answers need no relaying, only a
    /// challenge from a trunk needs answering.
    own: IdMap<Key, Own>,
    /// A relayed re-INVITE's 2xx went to `Leg`; its ACK goes on to the other leg with this CSeq.
    pending_ack: Option<(Leg, u32)>,
    next_key: Key,
    random: u64,
    actions: VecDeque<Action>,
    /// RFC 4028 session interval agreed with the caller, once answered.
    session_interval: Option<u32>,
    /// The caller asked us to refresh the session (`refresher=uas`); otherwise it does.
    we_refresh: bool,
    /// When we refresh it next, if we do.
    refresh_at: Option<Instant>,
    /// Our refresh waiting for its answer: its key and the request.
    refreshing: Option<(Key, Message)>,
    /// The latest session description the caller got from us (before the driver anchors it):
    /// what a re-INVITE that only refreshes the session carries again.
    caller_sdp: Option<Vec<u8>>,
    /// Answered by the PBX itself (the echo test): our session description, which also
    /// answers the caller's re-INVITEs; there is no callee leg.
    local_answer: Option<Vec<u8>>,
    /// RFC 3262 towards a caller whose INVITE requires it (`Require: 100rel`).
    reliable: Option<Reliable>,
    /// Redirects followed so far ([`MAX_REDIRECTS`]).
    redirects: u8,
    /// Redirects the driver is routing: the caller is not answered while one is.
    redirecting: u8,
    /// The dialogs of phones replaced by others (RFC 3891), for the driver's index.
    replaced: Vec<DialogId>,
}

/// Reliable provisional answers to the caller (RFC 3262 §3): one unacknowledged at a time,
/// repeated until its PRACK comes.
#[derive(Debug)]
struct Reliable {
    first_rseq: u32,
    next_rseq: u32,
    /// The final answer went: nothing more is sent reliably, but a PRACK for one sent before
    /// it (still on its way) is answered 200 (§3).
    finished: bool,
    unacked: Option<Unacked>,
    /// Answers waiting for the unacknowledged one: later provisionals, and a 2xx that may not
    /// overtake a provisional with a session description.
    waiting: VecDeque<Message>,
}

impl Reliable {
    fn finish(&mut self) {
        self.finished = true;
        self.unacked = None;
        self.waiting.clear();
    }

    /// The callee's 2xx waits here for a PRACK.
    fn holds_answer(&self) -> bool {
        self.waiting
            .iter()
            .any(|m| m.status().is_some_and(|s| (200..300).contains(&s)))
    }
}

#[derive(Debug)]
struct Unacked {
    rseq: u32,
    msg: Message,
    sdp: bool,
    next: Instant,
    interval: Duration,
    until: Instant,
}

/// RFC 3261 timers as RFC 3262 uses them for reliable provisionals.
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

impl Call {
    /// Starts ringing `targets` for the caller's INVITE (already authenticated and routed).
    /// `caller_tag` is our To tag towards the caller; `seed` feeds the tags, branches and
    /// Call-IDs the call makes.
    pub fn new(
        caller_invite: Message,
        caller_tag: &str,
        targets: Vec<Target>,
        config: CallConfig,
        seed: u64,
        now: Instant,
    ) -> Result<Call, CallError> {
        Call::start(caller_invite, caller_tag, targets, None, config, seed, now)
    }

    /// A call the PBX answers itself (the echo test) with the session description `sdp`: a 200
    /// to the caller at once, no callee leg; re-INVITEs and UPDATEs get `sdp` again, BYE ends it.
    pub fn answer_here(
        caller_invite: Message,
        caller_tag: &str,
        sdp: Vec<u8>,
        config: CallConfig,
        seed: u64,
        now: Instant,
    ) -> Result<Call, CallError> {
        Call::start(
            caller_invite,
            caller_tag,
            Vec::new(),
            Some(sdp),
            config,
            seed,
            now,
        )
    }

    fn start(
        caller_invite: Message,
        caller_tag: &str,
        targets: Vec<Target>,
        local: Option<Vec<u8>>,
        config: CallConfig,
        seed: u64,
        now: Instant,
    ) -> Result<Call, CallError> {
        if caller_invite.method() != Some(&Method::Invite) {
            return Err(CallError::NotInvite);
        }
        let random = seed;
        let caller = Dialog::uas(&caller_invite, caller_tag, config.contact.clone())?;
        let mut call = Call {
            deadline: Some(now + config.no_answer),
            config,
            caller_invite,
            caller,
            callee: None,
            branches: Vec::new(),
            phase: Phase::Ringing,
            started: now,
            answered: None,
            ended: None,
            outcome: None,
            cause: String::new(),
            winner: None,
            forwarded_ringing: false,
            forwarded_early_media: false,
            relays: idmap::new(),
            own: idmap::new(),
            pending_ack: None,
            next_key: 1,
            random,
            actions: VecDeque::new(),
            session_interval: None,
            we_refresh: false,
            refresh_at: None,
            refreshing: None,
            caller_sdp: None,
            local_answer: None,
            reliable: None,
            redirects: 0,
            redirecting: 0,
            replaced: Vec::new(),
        };
        if requires(&call.caller_invite, "100rel") {
            // The first RSeq is chosen between 1 and 2^31 - 1 (RFC 3262 §3).
            let first = u32::try_from(call.random() % 0x7FFF_FFFF).unwrap_or(0) + 1;
            call.reliable = Some(Reliable {
                first_rseq: first,
                next_rseq: first,
                finished: false,
                unacked: None,
                waiting: VecDeque::new(),
            });
        }
        if call.caller_invite.max_forwards() == Some(0) {
            call.fail_caller(483, "Too Many Hops", Outcome::Failed, now);
            return Ok(call);
        }
        // RFC 4028: the caller asks for session timers. We take the UAS part and let the caller
        // refresh (refresher=uac) when it supports the extension; an interval below our
        // minimum gets 422 with Min-SE so it can retry.
        if let Some(se) = session_expires(&call.caller_invite) {
            if se < MIN_SE {
                if let Ok(mut rsp) =
                    call.caller
                        .response(&call.caller_invite, 422, "Session Interval Too Small")
                {
                    let _ = rsp.push_header(HeaderName::MinSE, &MIN_SE.to_string());
                    call.actions.push_back(Action::AnswerCaller(rsp));
                }
                call.end(Outcome::Failed, "422", now);
                return Ok(call);
            }
            if supports_timer(&call.caller_invite) {
                call.session_interval = Some(se);
                // RFC 4028 §9, table 2: a refresher the caller names is the refresher.
                call.we_refresh =
                    refresher(&call.caller_invite).is_some_and(|r| r.eq_ignore_ascii_case("uas"));
            }
        }
        if let Some(body) = local {
            // The PBX answers the call itself: no branch, no callee leg.
            if let Ok(mut ok) = call.caller.response(&call.caller_invite, 200, "OK") {
                let _ = ok.set_body(body.clone(), Some("application/sdp"));
                call.add_session_timer(&mut ok);
                call.actions.push_back(Action::AnswerCaller(ok));
            }
            call.caller_sdp = Some(body.clone());
            call.local_answer = Some(body);
            call.phase = Phase::Answered;
            call.arm_session_timer(now);
            call.answered = Some(now);
            call.outcome = Some(Outcome::Answered);
            return Ok(call);
        }
        if targets.is_empty() {
            // Nobody of the location is reachable (no phone registered, no number).
            call.fail_caller(480, "Temporarily Unavailable", Outcome::Failed, now);
            return Ok(call);
        }
        // Exactly as many as there are: a call keeps its branches to its end, and a `Vec`
        // grown by pushing holds room for four (a kilobyte and more) for the usual one.
        call.branches.reserve_exact(targets.len());
        for (i, target) in targets.into_iter().enumerate() {
            let invite = call.branch_invite(&target);
            call.actions.push_back(Action::Invite {
                branch: i,
                request: invite.clone(),
            });
            call.branches.push(Branch {
                target,
                invite,
                state: BranchState::Calling,
                authorized: false,
                early: None,
            });
        }
        Ok(call)
    }

    /// The next thing for the driver to do.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Call::handle_timeout`] wants to run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let reliable = self
            .reliable
            .as_ref()
            .and_then(|r| r.unacked.as_ref())
            .map(|u| u.next.min(u.until));
        [self.deadline, self.refresh_at, reliable]
            .into_iter()
            .flatten()
            .min()
    }

    /// The no-answer timer, and the session timer once answered.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.repeat_reliable(now);
        if self.phase == Phase::Answered && self.refresh_at.is_some_and(|t| t <= now) {
            self.refresh_at = None;
            self.send_refresh(now);
        }
        match self.deadline {
            Some(d) if d <= now && self.phase == Phase::Answered => {
                // The session was not refreshed in time (RFC 4028 §10): by the caller, which
                // is gone, or by us, whose refreshes failed.
                self.deadline = None;
                self.hang_up_both("session_timer", now);
            }
            Some(d) if d <= now && self.phase == Phase::Ringing => {
                self.deadline = None;
                let status = self.config.no_answer_status;
                self.cancel_branches(None);
                self.fail_caller(
                    status,
                    message::reason_phrase(status),
                    Outcome::NoAnswer,
                    now,
                );
                self.cause = "no_answer".into();
            }
            _ => {}
        }
    }

    /// True once the call has ended and no branch is still waiting for a final answer (the
    /// driver can forget it then).
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Ended
            && self
                .branches
                .iter()
                .all(|b| matches!(b.state, BranchState::Done(_) | BranchState::Winner))
    }

    /// True once the call is finished and waits for nothing more: no request of its own (a
    /// BYE) or relayed one without its final answer, no refresh, no reliable provisional that
    /// a late PRACK could still acknowledge, no timer, nothing for the driver to do. Such a
    /// call can only see retransmissions again, which its driver answers from the ACKs it kept.
    pub fn is_settled(&self) -> bool {
        self.is_finished()
            && self.relays.is_empty()
            && self.own.is_empty()
            && self.refreshing.is_none()
            && self.reliable.is_none()
            && self.pending_ack.is_none()
            && self.actions.is_empty()
            && self.poll_timeout().is_none()
    }

    /// Gives back what only a call in progress uses, once [`Self::is_finished`]: the driver
    /// keeps a finished call a few seconds for the responses still in flight, and thousands
    /// of calls a second keep that much more memory cold for nothing.
    pub fn release(&mut self) {
        if !self.is_finished() {
            return;
        }
        self.caller_sdp = None;
        self.local_answer = None;
        if self.actions.is_empty() {
            self.actions = VecDeque::new();
        }
    }

    pub fn summary(&self) -> Summary {
        Summary {
            outcome: self.outcome.unwrap_or(Outcome::Failed),
            started: self.started,
            answered: self.answered,
            ended: self.ended,
            answered_by: self
                .winner
                .and_then(|i| self.branches.get(i))
                .map(|b| b.target.label.clone()),
            cause: self.cause.clone(),
        }
    }

    /// The caller's INVITE, as received.
    pub fn caller_invite(&self) -> &Message {
        &self.caller_invite
    }

    /// Which leg an in-dialog request or response belongs to.
    pub fn leg_of(&self, id: DialogRef<'_>) -> Option<Leg> {
        if self.caller.id().as_ref() == id {
            Some(Leg::Caller)
        } else if self.callee.as_ref().is_some_and(|d| d.id().as_ref() == id) {
            Some(Leg::Callee)
        } else {
            None
        }
    }

    /// A response on a branch's INVITE client transaction.
    pub fn on_invite_response(&mut self, branch: usize, response: &Message, now: Instant) {
        let Some(status) = response.status() else {
            return;
        };
        let Some(b) = self.branches.get(branch) else {
            return;
        };
        let state = b.state;
        match status {
            100 => {}
            101..=199 => {
                if b.live() && self.phase == Phase::Ringing {
                    if requires(response, "100rel") && !self.prack(branch, response) {
                        // A retransmission, or one out of order (§4): already handled, or
                        // to be dropped.
                        return;
                    }
                    self.branches[branch].state = BranchState::Ringing;
                    self.forward_provisional(status, response, now);
                }
            }
            200..=299 => {
                if state == BranchState::Winner {
                    let tag = response.to().and_then(|t| t.tag()).unwrap_or_default();
                    if self
                        .callee
                        .as_ref()
                        .is_some_and(|d| d.id().remote_tag != tag)
                    {
                        // Another dialog: a fork further on answered too (§13.2.2.4). Only
                        // one can be the call; take this one and hang it up.
                        self.ack_and_bye(branch, response);
                    }
                    // Otherwise a retransmitted 2xx: the driver re-sends the ACK it has.
                    return;
                }
                if self.phase == Phase::Ringing && state != BranchState::Cancelling {
                    self.answer(branch, response, now);
                } else {
                    // Too late: another branch won, or the caller gave up, and this 2xx crossed
                    // our CANCEL. Take the call and hang up at once (§15).
                    self.branches[branch].state = BranchState::Done(status);
                    self.ack_and_bye(branch, response);
                }
            }
            _ => {
                if matches!(state, BranchState::Done(_) | BranchState::Winner) {
                    return;
                }
                if matches!(status, 401 | 407)
                    && self.phase == Phase::Ringing
                    && state != BranchState::Cancelling
                    && self.reauthorize(branch, response)
                {
                    return;
                }
                self.branches[branch].state = BranchState::Done(status);
                if (300..400).contains(&status)
                    && self.phase == Phase::Ringing
                    && state != BranchState::Cancelling
                    && self.follow_redirect(branch, response)
                {
                    return;
                }
                self.after_branch_failure(now);
            }
        }
    }

    /// PRACKs a reliable provisional answer on `branch` (RFC 3262 §4): in its early dialog,
    /// with `RAck` naming its RSeq and the INVITE's CSeq. False for one to drop: a
    /// retransmission of the last one (our PRACK's own transaction repeats itself), one out of
    /// order, or one without a usable RSeq or early dialog.
    fn prack(&mut self, branch: usize, response: &Message) -> bool {
        let Some(rseq) = response
            .header(&HeaderName::RSeq)
            .and_then(|v| crate::sip::header::parse_u32(v).ok())
        else {
            return false;
        };
        let tag = response.to().and_then(NameAddr::tag).unwrap_or_default();
        let b = &mut self.branches[branch];
        let same_dialog = b
            .early
            .as_ref()
            .is_some_and(|e| e.dialog.id().remote_tag == tag);
        if same_dialog {
            let last = b.early.as_ref().map_or(0, |e| e.rseq);
            if rseq != last.wrapping_add(1) {
                return false;
            }
        } else {
            // The first reliable answer of this early dialog (a fork further on may start
            // another): its dialog is ours from here.
            let Ok(dialog) = Dialog::uac(&b.invite, response) else {
                return false;
            };
            b.early = Some(Box::new(Early { dialog, rseq }));
        }
        let via = self.via();
        let random = self.random();
        let invite_seq = cseq_of(&self.branches[branch].invite);
        let Some(early) = self.branches[branch].early.as_mut() else {
            return false;
        };
        early.rseq = rseq;
        let Ok(mut prack) = early.dialog.request(Method::Prack, &via, random) else {
            return false;
        };
        let _ = prack
            .message
            .push_header(HeaderName::RAck, &format!("{rseq} {invite_seq} INVITE"));
        self.send_own(Towards::Branch(branch), prack, false);
        true
    }

    /// Answers a trunk's 401/407 on `branch`: the same INVITE (same Call-ID, From tag and To)
    /// with the next CSeq, a new Via branch and the credentials (RFC 3261 §22.2). False when
    /// the branch has no credentials, already answered a challenge, or cannot answer this one.
    fn reauthorize(&mut self, branch: usize, response: &Message) -> bool {
        let b = &self.branches[branch];
        let (Some(creds), false) = (b.target.credentials.clone(), b.authorized) else {
            return false;
        };
        let Some(invite) = self.with_credentials(&creds, response, b.invite.clone()) else {
            return false;
        };
        let b = &mut self.branches[branch];
        b.invite = invite.clone();
        b.authorized = true;
        b.state = BranchState::Calling;
        self.actions.push_back(Action::Invite {
            branch,
            request: invite,
        });
        true
    }

    /// Asks the driver to route a branch's 3xx when its target's redirects are followed and
    /// the call has redirects left. The contacts go best first (highest `q`, RFC 3261 §8.1.3.4;
    /// the order given among equals).
    fn follow_redirect(&mut self, branch: usize, response: &Message) -> bool {
        let Some(user) = self.branches[branch].target.forwarded_as else {
            return false;
        };
        if self.redirects >= MAX_REDIRECTS {
            return false;
        }
        let mut contacts: Vec<(u32, Uri)> = response
            .contacts()
            .iter()
            .map(|c| (q_millis(c), c.uri.clone()))
            .collect();
        if contacts.is_empty() {
            return false;
        }
        contacts.sort_by_key(|(q, _)| std::cmp::Reverse(*q));
        self.redirects += 1;
        self.redirecting += 1;
        self.actions.push_back(Action::Redirect {
            branch,
            user,
            contacts: contacts.into_iter().map(|(_, uri)| uri).collect(),
        });
        true
    }

    /// Where [`Action::Redirect`] for `branch` leads: new branches to ring, beside those still
    /// ringing (none when the number goes nowhere). Returns the index of the first new branch,
    /// or `None` when the call no longer rings (answered, cancelled or timed out meanwhile):
    /// then nothing was added.
    pub fn on_redirect(
        &mut self,
        branch: usize,
        targets: Vec<Target>,
        now: Instant,
    ) -> Option<usize> {
        if branch >= self.branches.len() || self.redirecting == 0 {
            return None;
        }
        self.redirecting -= 1;
        if self.phase != Phase::Ringing {
            return None;
        }
        let first = self.branches.len();
        self.branches.reserve_exact(targets.len());
        for target in targets {
            let invite = self.branch_invite(&target);
            self.actions.push_back(Action::Invite {
                branch: self.branches.len(),
                request: invite.clone(),
            });
            self.branches.push(Branch {
                target,
                invite,
                state: BranchState::Calling,
                authorized: false,
                early: None,
            });
        }
        self.after_branch_failure(now);
        Some(first)
    }

    /// A branch's INVITE got no final answer in time (Timer B).
    pub fn on_invite_timeout(&mut self, branch: usize, now: Instant) {
        self.branch_failed(branch, 408, now);
    }

    /// A branch's INVITE could not be sent (its connection could not be made): for the
    /// caller, as a 503 from there (RFC 3261 §8.1.3.1).
    pub fn on_invite_unreachable(&mut self, branch: usize, now: Instant) {
        self.branch_failed(branch, 503, now);
    }

    fn branch_failed(&mut self, branch: usize, status: u16, now: Instant) {
        if let Some(b) = self.branches.get_mut(branch) {
            if !matches!(b.state, BranchState::Done(_) | BranchState::Winner) {
                b.state = BranchState::Done(status);
                self.after_branch_failure(now);
            }
        }
    }

    /// The caller sent CANCEL for its INVITE (the transaction layer answered the CANCEL).
    pub fn on_caller_cancel(&mut self, now: Instant) {
        if self.phase != Phase::Ringing {
            return;
        }
        self.cancel_branches(None);
        self.fail_caller(487, "Request Terminated", Outcome::Cancelled, now);
        self.cause = "cancelled".into();
    }

    /// Our 2xx to the caller was never acknowledged (64·T1): the session is over (§13.3.1.4),
    /// ended with a BYE on both legs.
    pub fn on_caller_gone(&mut self, now: Instant) {
        self.hang_up_both("timeout", now);
    }

    /// Ends an answered call from our side: BYE on both legs, `cause` in the record (for
    /// example "media_timeout" when no RTP has come from either party for too long).
    pub fn hang_up_both(&mut self, cause: &str, now: Instant) {
        if self.phase != Phase::Answered {
            return;
        }
        self.hang_up(Leg::Callee);
        self.hang_up(Leg::Caller);
        self.end(Outcome::Answered, cause, now);
    }

    /// Whether the call is answered and not over.
    pub fn is_answered(&self) -> bool {
        self.phase == Phase::Answered
    }

    /// An in-dialog request from `leg`, received on the driver's server transaction `tx`
    /// (`tx` is not used for ACK, which has none).
    pub fn on_request(&mut self, leg: Leg, tx: Key, request: &Message, now: Instant) {
        let Some(method) = request.method().cloned() else {
            return;
        };
        let dialog = match leg {
            Leg::Caller => Some(&mut self.caller),
            Leg::Callee => self.callee.as_mut(),
        };
        let Some(dialog) = dialog else {
            return;
        };
        if let Err(e) = dialog.receive_request(request) {
            if method != Method::Ack {
                let status = e.status();
                self.respond(leg, tx, request, status, message::reason_phrase(status));
            }
            return;
        }
        match method {
            Method::Ack => self.on_ack(leg, request),
            // Only our reliable provisionals are PRACKed: we offer none to callees.
            Method::Prack if leg == Leg::Caller => self.on_prack(tx, request, now),
            Method::Prack => {
                self.respond(leg, tx, request, 481, "Call/Transaction Does Not Exist");
            }
            Method::Bye
                if leg == Leg::Caller
                    && self.reliable.as_ref().is_some_and(Reliable::holds_answer) =>
            {
                // The caller never saw the callee's 2xx (it waited for a PRACK): its early
                // dialog ends as by CANCEL (§15.1.2), and the callee, which answered, gets BYE.
                self.respond(leg, tx, request, 200, "OK");
                self.hang_up(Leg::Callee);
                self.fail_caller(487, "Request Terminated", Outcome::Cancelled, now);
                self.cause = "caller".into();
            }
            Method::Bye => {
                self.respond(leg, tx, request, 200, "OK");
                if self.phase == Phase::Ringing && leg == Leg::Caller {
                    // §15: the caller may end an early dialog with a BYE. As for a CANCEL, the
                    // branches are cancelled and the pending INVITE gets 487 (§15.1.2);
                    // otherwise the callees would ring on until the no-answer timer.
                    self.on_caller_cancel(now);
                } else if self.phase == Phase::Answered {
                    self.hang_up(leg.other());
                    self.end(
                        Outcome::Answered,
                        match leg {
                            Leg::Caller => "caller",
                            Leg::Callee => "callee",
                        },
                        now,
                    );
                }
            }
            _ if self.phase != Phase::Answered => {
                // Before the answer there is no other dialog to relay into. RFC 3261 §14.1:
                // a re-INVITE while one is pending gets 491; anything else is refused.
                let (status, reason) = match method {
                    Method::Invite | Method::Update => (491, "Request Pending"),
                    _ => (403, "Forbidden"),
                };
                self.respond(leg, tx, request, status, reason);
            }
            _ => {
                if leg == Leg::Caller && matches!(method, Method::Invite | Method::Update) {
                    self.refreshed(request, now);
                }
                if self.local_answer.is_some() {
                    self.answer_locally(tx, request, method);
                } else {
                    self.relay(leg, tx, request, method);
                }
            }
        }
    }

    /// An in-dialog request to a call the PBX answered itself: a re-INVITE or UPDATE gets our
    /// description again (hold and the like change nothing here), INFO, NOTIFY and OPTIONS a
    /// plain 200, anything else (REFER: nowhere to transfer to) 403.
    fn answer_locally(&mut self, tx: Key, request: &Message, method: Method) {
        let (status, reason) = match method {
            Method::Invite | Method::Update | Method::Info | Method::Notify | Method::Options => {
                (200, "OK")
            }
            _ => (403, "Forbidden"),
        };
        let Ok(mut rsp) = self.caller.response(request, status, reason) else {
            return;
        };
        if matches!(method, Method::Invite | Method::Update) {
            if let Some(body) = &self.local_answer {
                let _ = rsp.set_body(body.clone(), Some("application/sdp"));
            }
            self.add_session_timer(&mut rsp);
        }
        self.actions
            .push_back(Action::Respond { tx, response: rsp });
    }

    /// A re-INVITE or UPDATE from the caller refreshes the session (RFC 4028 §10), possibly
    /// with a new interval.
    fn refreshed(&mut self, request: &Message, now: Instant) {
        let Some(current) = self.session_interval else {
            return;
        };
        let se = session_expires(request)
            .filter(|se| *se >= MIN_SE)
            .unwrap_or(current);
        self.session_interval = Some(se);
        // Table 2 again for each refresh: a refresher the caller names is the refresher; with
        // none named, the roles stay.
        if let Some(r) = refresher(request) {
            self.we_refresh = r.eq_ignore_ascii_case("uas");
        }
        self.arm_session_timer(now);
    }

    /// The session began or was refreshed now: when it expires unrefreshed and, when the
    /// refreshing is ours, when we refresh it (half-way, RFC 4028 §10).
    fn arm_session_timer(&mut self, now: Instant) {
        let Some(se) = self.session_interval else {
            self.deadline = None;
            return;
        };
        if self.we_refresh {
            self.deadline = Some(now + Duration::from_secs(se.into()));
            self.refresh_at = Some(now + Duration::from_secs((se / 2).into()));
        } else {
            self.deadline = Some(now + expiry_margin(se));
            self.refresh_at = None;
        }
    }

    /// Keeps the session description in `m` for a refresh that offers it again: `m` is one the
    /// caller has taken (our 2xx to it, or our offer it answered 2xx).
    fn note_sent_to_caller(&mut self, m: &Message) {
        let sdp = m
            .content_type()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/sdp"));
        if sdp && !m.body().is_empty() {
            self.caller_sdp = Some(m.body().to_vec());
        }
    }

    /// Session-Expires (with who refreshes) and Require: timer on a 2xx to the caller.
    fn add_session_timer(&self, rsp: &mut Message) {
        if let Some(se) = self.session_interval {
            let refresher = if self.we_refresh { "uas" } else { "uac" };
            let _ = rsp.push_header(
                HeaderName::SessionExpires,
                &format!("{se};refresher={refresher}"),
            );
            let _ = rsp.push_header(HeaderName::Require, "timer");
        }
    }

    /// Refreshes the session with the caller, the refreshing being ours (RFC 4028 §7.4): an
    /// UPDATE when the caller takes them (no new offer needed), else a re-INVITE with the
    /// description the caller already has.
    ///
    /// In that transaction we are the UAC, so the request names us `refresher=uac`.
    fn send_refresh(&mut self, now: Instant) {
        let Some(se) = self.session_interval else {
            return;
        };
        if self.refreshing.is_some() {
            return;
        }
        let update = allows(&self.caller_invite, "UPDATE");
        let invite_pending = self.pending_ack.is_some()
            || self
                .relays
                .values()
                .any(|r| r.sent.method() == Some(&Method::Invite));
        if !update && invite_pending {
            // No INVITE while another is under way on the dialog (RFC 3261 §14.1); that one
            // refreshes the session anyway if it succeeds.
            self.refresh_at = Some(now + REFRESH_RETRY);
            return;
        }
        let body = match (&self.caller_sdp, update) {
            (_, true) => None,
            (Some(body), false) => Some(body.clone()),
            // Nothing to offer again: no refresh; the session expires and ends.
            (None, false) => return,
        };
        let via = self.via();
        let random = self.random();
        let method = if update {
            Method::Update
        } else {
            Method::Invite
        };
        let Ok(mut out) = self.caller.request(method, &via, random) else {
            return;
        };
        let _ = out
            .message
            .push_header(HeaderName::SessionExpires, &format!("{se};refresher=uac"));
        let _ = out.message.push_header(HeaderName::Supported, "timer");
        if let Some(body) = body {
            let _ = out.message.set_body(body, Some("application/sdp"));
        }
        let key = self.key();
        self.refreshing = Some((key, out.message.clone()));
        self.actions.push_back(Action::Request {
            key,
            towards: Towards::Caller,
            request: out,
        });
    }

    /// The caller's answer to our refresh.
    fn refresh_answered(&mut self, sent: &Message, response: &Message, now: Instant) {
        if self.phase != Phase::Answered {
            return;
        }
        let status = response.status().unwrap_or(500);
        let _ = self.caller.receive_response(sent, response);
        match status {
            200..=299 => {
                if sent.method() == Some(&Method::Invite) {
                    let via = self.via();
                    let random = self.random();
                    let seq = sent.cseq().map_or(0, |c| c.seq);
                    if let Ok(ack) = self.caller.ack(seq, &via, random) {
                        self.actions.push_back(Action::Ack {
                            towards: Towards::Caller,
                            request: ack,
                        });
                    }
                    if !response.body().is_empty() {
                        // Normally the caller's description again, but it may have moved.
                        self.actions
                            .push_back(Action::CallerDescribed(response.clone()));
                    }
                }
                if let Some(se) = session_expires(response).filter(|se| *se >= MIN_SE) {
                    self.session_interval = Some(se);
                }
                // The caller may take the refreshing over (`refresher=uas` in its answer: the
                // UAS of this transaction, itself).
                if let Some(r) = refresher(response) {
                    self.we_refresh = r.eq_ignore_ascii_case("uac");
                }
                self.arm_session_timer(now);
            }
            // The caller's dialog is gone (§12.2.1.2).
            408 | 481 => self.hang_up_both("session_timer", now),
            // Our refresh crossed one of the caller's (491), or the caller could not take it
            // just now: the session stands until it expires; try again meanwhile.
            _ => self.refresh_at = Some(now + REFRESH_RETRY),
        }
    }

    /// The answer to a request the call sent ([`Action::Request`]).
    pub fn on_response(&mut self, key: Key, response: &Message, now: Instant) {
        let Some(status) = response.status() else {
            return;
        };
        // Provisional answers to a relayed request tell the other side nothing its own
        // transaction's 100 Trying did not; answers to our own BYEs end nothing more.
        if status < 200 {
            if let Some(relay) = self.relays.get_mut(&key) {
                relay.provisional = true;
                if std::mem::take(&mut relay.cancel_pending) {
                    self.cancel_relayed(key);
                }
            }
            return;
        }
        if self.refreshing.as_ref().is_some_and(|(k, _)| *k == key) {
            if let Some((_, sent)) = self.refreshing.take() {
                self.refresh_answered(&sent, response, now);
            }
            return;
        }
        if let Some(own) = self.own.remove(&key) {
            if matches!(status, 401 | 407) && !own.authorized {
                self.reauthorize_own(own, response);
            }
            return;
        }
        let Some(relay) = self.relays.remove(&key) else {
            return;
        };
        if matches!(status, 401 | 407) && !relay.authorized {
            if let Some((key, sent)) = self.reauthorize_relay(&relay, response) {
                let again = Relay {
                    authorized: true,
                    sent,
                    provisional: false,
                    ..relay
                };
                self.relays.insert(key, again);
                return;
            }
        }
        // Answers that are not the other party's to act on are mapped as a call's failures are
        // (`final_for_caller`). A challenge nobody here can answer: passing it on would have a
        // phone answer a foreign realm with its own credentials, and a 401/407 without the
        // challenge (which is not ours to pass) is malformed (§21.4.2, §21.4.8). A redirect:
        // where it points is not the phone's to reach around us, and a 3xx without its Contact
        // is malformed too (§21.3).
        let (status, reason) = match status {
            401 | 407 => (503, message::reason_phrase(503)),
            300..=399 => (480, message::reason_phrase(480)),
            s => (s, response.reason().unwrap_or("")),
        };
        let to = relay.from.other();
        if let Some(d) = self.dialog_mut(to) {
            // Keeps the target and state of the leg we sent on in step (target refresh,
            // termination on 481/408).
            let _ = d.receive_response(&relay.sent, response);
        }
        let method = relay.request.method().cloned();
        let mut answer = match self.dialog_mut(relay.from) {
            Some(d) => match d.response(&relay.request, status, reason) {
                Ok(m) => m,
                Err(_) => return,
            },
            None => return,
        };
        copy_body(response, &mut answer);
        if relay.from == Leg::Caller
            && (200..300).contains(&status)
            && matches!(method, Some(Method::Invite) | Some(Method::Update))
        {
            self.add_session_timer(&mut answer);
            self.note_sent_to_caller(&answer);
        }
        if relay.from == Leg::Callee
            && (200..300).contains(&status)
            && matches!(method, Some(Method::Invite) | Some(Method::Update))
        {
            // The caller took the callee's offer we relayed.
            self.note_sent_to_caller(&relay.sent);
        }
        self.actions.push_back(Action::Respond {
            tx: relay.tx,
            response: answer,
        });
        if (200..300).contains(&status) && method == Some(Method::Invite) {
            // The re-INVITE's own CSeq (§13.2.2.4): another request may have gone out on that
            // leg since.
            if let Some(seq) = relay.sent.cseq().map(|c| c.seq) {
                self.pending_ack = Some((relay.from, seq));
            }
        }
        if matches!(status, 408 | 481) && self.phase == Phase::Answered {
            // The leg we relayed into is gone: hang up the other and end the call.
            self.hang_up(relay.from);
            self.end(Outcome::Answered, "timeout", now);
        } else if relay.replacing && status >= 300 && self.phase == Phase::Answered {
            // The other party refused the phone that replaced its peer, which has no dialog
            // now (its INVITE failed); the replaced one has had its BYE.
            self.hang_up(to);
            self.end(Outcome::Answered, "transfer_failed", now);
        }
    }

    /// The party that sent the in-dialog request received under `tx` CANCELled it (§9.2): a
    /// relayed re-INVITE still unanswered is cancelled on the other leg too, and that leg's
    /// answer (487, or whatever it had already sent) comes back as any answer does.
    pub fn on_cancel(&mut self, tx: Key) {
        let relay = self
            .relays
            .iter_mut()
            .find(|(_, r)| r.tx == tx && r.sent.method() == Some(&Method::Invite));
        let Some((&key, relay)) = relay else {
            return;
        };
        if relay.provisional {
            self.cancel_relayed(key);
        } else {
            // Not before a provisional answer (§9.1): the CANCEL could overtake its INVITE.
            relay.cancel_pending = true;
        }
    }

    fn cancel_relayed(&mut self, key: Key) {
        let Some(relay) = self.relays.get(&key) else {
            return;
        };
        let towards = self.towards(relay.from.other());
        let Some(cancel) = cancel_for(&relay.sent, None) else {
            return;
        };
        let next_hop = relay.next_hop.clone();
        // A transaction of its own, whose 200 nobody waits for: its key is known to nobody.
        let key = self.key();
        self.actions.push_back(Action::Request {
            key,
            towards,
            request: OutgoingRequest {
                message: cancel,
                next_hop,
            },
        });
    }

    /// A request the call sent got no answer in time.
    pub fn on_request_timeout(&mut self, key: Key, now: Instant) {
        if self.refreshing.as_ref().is_some_and(|(k, _)| *k == key) {
            // The caller did not answer our refresh: it is gone.
            self.refreshing = None;
            self.hang_up_both("session_timer", now);
            return;
        }
        if self.own.remove(&key).is_some() {
            return;
        }
        let Some(relay) = self.relays.remove(&key) else {
            return;
        };
        self.respond(relay.from, relay.tx, &relay.request, 408, "Request Timeout");
        if self.phase == Phase::Answered {
            self.hang_up(relay.from);
            self.end(Outcome::Answered, "timeout", now);
        }
    }

    // --- internals ----------------------------------------------------------------------------

    fn random(&mut self) -> u64 {
        splitmix(&mut self.random)
    }

    fn key(&mut self) -> Key {
        let k = self.next_key;
        self.next_key += 1;
        k
    }

    fn via(&mut self) -> Via {
        let mut via = self.config.via.clone();
        via.params
            .set("branch", Some(message::new_branch(self.random())));
        via
    }

    fn dialog(&self, leg: Leg) -> Option<&Dialog> {
        match leg {
            Leg::Caller => Some(&self.caller),
            Leg::Callee => self.callee.as_ref(),
        }
    }

    fn dialog_mut(&mut self, leg: Leg) -> Option<&mut Dialog> {
        match leg {
            Leg::Caller => Some(&mut self.caller),
            Leg::Callee => self.callee.as_mut(),
        }
    }

    /// The INVITE of a new branch: a fresh dialog of ours towards the target, carrying the
    /// caller's session description.
    fn branch_invite(&mut self, target: &Target) -> Message {
        let mut req = Message::request(Method::Invite, target.uri.clone());
        let via = self.via();
        let mut from = target
            .from
            .clone()
            .unwrap_or_else(|| self.config.caller_id.clone());
        from.set_tag(&message::new_tag(self.random()));
        let mut call_id = String::with_capacity(32);
        crate::sip::lex::push_hex16(&mut call_id, self.random());
        crate::sip::lex::push_hex16(&mut call_id, self.random());
        // A B2BUA starts new requests, but passing the hop count down keeps two PBXs routing to
        // each other from looping for ever.
        let hops = self
            .caller_invite
            .max_forwards()
            .map_or(70, |m| m.saturating_sub(1).min(70));
        // Every value here is built from parsed, typed parts, and a fresh request has none of
        // these headers yet: only a line break in a display name could be refused.
        let _ = req.push_via(via);
        let _ = req.push_header(HeaderName::MaxForwards, &hops.to_string());
        let _ = req.push_name_addr(HeaderName::From, from);
        let _ = req.push_name_addr(HeaderName::To, NameAddr::new(target.uri.clone()));
        let _ = req.push_header(HeaderName::CallId, &call_id);
        let _ = req.push_cseq(1, Method::Invite);
        let contact = target.contact.as_ref().unwrap_or(&self.config.contact);
        let _ = req.push_name_addr(HeaderName::Contact, contact.clone());
        let _ = req.push_header(HeaderName::Allow, ALLOW);
        // Only with an offer of ours: a reliable provisional's offer would need its answer in
        // our PRACK, which a late-offer caller has not given us.
        if target.offers_100rel && !self.caller_invite.body().is_empty() {
            let _ = req.push_header(HeaderName::Supported, "100rel");
        }
        copy_body(&self.caller_invite, &mut req);
        req
    }

    fn forward_provisional(&mut self, status: u16, response: &Message, now: Instant) {
        // To a late-offer caller a reliable provisional's description would be an offer,
        // answered in the PRACK, which we do not relay: the 2xx makes the offer instead.
        let late_offer = self.caller_invite.body().is_empty();
        let offers_reliably = late_offer && self.reliable.is_some();
        let has_sdp = !response.body().is_empty() && !offers_reliably;
        let forward = if has_sdp {
            !self.forwarded_early_media
        } else {
            status == 180 && !self.forwarded_ringing && !self.forwarded_early_media
        };
        if !forward {
            return;
        }
        let reason = response.reason().unwrap_or("Ringing").to_owned();
        let Ok(mut rsp) = self.caller.response(&self.caller_invite, status, &reason) else {
            return;
        };
        if has_sdp {
            copy_body(response, &mut rsp);
            self.forwarded_early_media = true;
        }
        self.forwarded_ringing = true;
        self.answer_caller(rsp, now);
    }

    /// Sends an answer to the caller's INVITE: at once, or (to a caller that requires
    /// reliable provisionals, RFC 3262 §3) reliably and in turn.
    fn answer_caller(&mut self, mut rsp: Message, now: Instant) {
        let status = rsp.status().unwrap_or(0);
        let Some(rel) = self.reliable.as_mut().filter(|r| !r.finished) else {
            self.actions.push_back(Action::AnswerCaller(rsp));
            return;
        };
        match status {
            101..=199 if rel.unacked.is_some() => rel.waiting.push_back(rsp),
            101..=199 => {
                let rseq = rel.next_rseq;
                rel.next_rseq = rel.next_rseq.wrapping_add(1);
                let _ = rsp.push_header(HeaderName::Require, "100rel");
                let _ = rsp.push_header(HeaderName::RSeq, &rseq.to_string());
                rel.unacked = Some(Unacked {
                    rseq,
                    sdp: !rsp.body().is_empty(),
                    msg: rsp.clone(),
                    next: now + T1,
                    interval: T1,
                    until: now + 64 * T1,
                });
                self.actions.push_back(Action::AnswerCaller(rsp));
            }
            // A 2xx may not overtake a provisional with a session description the caller has
            // not acknowledged; provisionals still waiting are moot once it goes.
            200..=299 if rel.unacked.as_ref().is_some_and(|u| u.sdp) => {
                rel.waiting.clear();
                rel.waiting.push_back(rsp);
            }
            _ => {
                // A final answer ends the INVITE transaction, and with it the repeating.
                rel.finish();
                self.actions.push_back(Action::AnswerCaller(rsp));
            }
        }
    }

    /// A PRACK from the caller (RFC 3262 §3): it acknowledges our unacknowledged reliable
    /// provisional, whose repeating stops and whose successor goes; one that matches none gets
    /// 481.
    fn on_prack(&mut self, tx: Key, request: &Message, now: Instant) {
        let invite_seq = self.caller_invite.cseq().map(|c| c.seq);
        let rack = request.header(&HeaderName::RAck).and_then(|v| {
            let mut it = v.split_ascii_whitespace();
            let rseq = it.next()?.parse::<u32>().ok()?;
            let seq = it.next()?.parse::<u32>().ok()?;
            let method = it.next()?;
            Some((rseq, seq, method == "INVITE"))
        });
        let matches = match (&self.reliable, rack) {
            (Some(rel), Some((rseq, seq, true))) if Some(seq) == invite_seq => {
                if rel.finished {
                    // One we sent before the final answer.
                    rseq.wrapping_sub(rel.first_rseq) < rel.next_rseq.wrapping_sub(rel.first_rseq)
                } else {
                    rel.unacked.as_ref().is_some_and(|u| u.rseq == rseq)
                }
            }
            _ => false,
        };
        if !matches {
            self.respond(
                Leg::Caller,
                tx,
                request,
                481,
                "Call/Transaction Does Not Exist",
            );
            return;
        }
        self.respond(Leg::Caller, tx, request, 200, "OK");
        let next = self.reliable.as_mut().and_then(|rel| {
            if rel.finished {
                return None;
            }
            rel.unacked = None;
            rel.waiting.pop_front()
        });
        if let Some(next) = next {
            self.answer_caller(next, now);
        }
    }

    /// Repeats the unacknowledged reliable provisional (T1 doubling up to T2); after 64·T1
    /// without PRACK the caller's INVITE fails (RFC 3262 §3: a 5xx).
    fn repeat_reliable(&mut self, now: Instant) {
        let Some(u) = self.reliable.as_mut().and_then(|r| r.unacked.as_mut()) else {
            return;
        };
        if now >= u.until {
            if self.phase == Phase::Answered {
                // The callee answered, and its 2xx waited for this PRACK: its leg goes too.
                self.hang_up(Leg::Callee);
            }
            self.cancel_branches(None);
            self.fail_caller(500, "No PRACK", Outcome::Failed, now);
            self.cause = "no_prack".into();
        } else if now >= u.next {
            self.actions.push_back(Action::AnswerCaller(u.msg.clone()));
            u.interval = (u.interval * 2).min(T2);
            u.next = now + u.interval;
        }
    }

    fn answer(&mut self, branch: usize, response: &Message, now: Instant) {
        let invite = self.branches[branch].invite.clone();
        let callee = match Dialog::uac(&invite, response) {
            Ok(mut d) => {
                // The early dialog's PRACKs used CSeq numbers of this same dialog.
                if let Some(seq) = self.branches[branch]
                    .early
                    .take()
                    .and_then(|e| e.dialog.local_seq())
                {
                    d.advance_local_seq(seq);
                }
                d
            }
            Err(e) => {
                // A 2xx we cannot build a dialog from (no To tag, say): take it down like a
                // failed branch.
                tracing::debug!(error = %e, "b2bua: unusable 2xx");
                self.branches[branch].state = BranchState::Done(502);
                self.after_branch_failure(now);
                return;
            }
        };
        self.branches[branch].state = BranchState::Winner;
        self.winner = Some(branch);
        if self.caller_invite.body().is_empty() {
            // Late offer: the callee's 2xx carries the offer, and the answer comes in the
            // caller's ACK (§13.2.1), so our ACK to the callee waits for it.
            self.pending_ack = Some((Leg::Caller, cseq_of(&invite)));
        } else {
            let via = self.via();
            let random = self.random();
            if let Ok(ack) = callee.ack(cseq_of(&invite), &via, random) {
                self.actions.push_back(Action::Ack {
                    towards: Towards::Branch(branch),
                    request: ack,
                });
            }
        }
        self.callee = Some(callee);
        self.cancel_branches(Some(COMPLETED_ELSEWHERE));
        if let Ok(mut ok) = self.caller.response(&self.caller_invite, 200, "OK") {
            copy_body(response, &mut ok);
            self.add_session_timer(&mut ok);
            self.note_sent_to_caller(&ok);
            self.answer_caller(ok, now);
        }
        self.phase = Phase::Answered;
        self.arm_session_timer(now);
        self.answered = Some(now);
        self.outcome = Some(Outcome::Answered);
    }

    fn ack_and_bye(&mut self, branch: usize, response: &Message) {
        let invite = self.branches[branch].invite.clone();
        let Ok(mut dialog) = Dialog::uac(&invite, response) else {
            return;
        };
        let via = self.via();
        let random = self.random();
        if let Ok(ack) = dialog.ack(cseq_of(&invite), &via, random) {
            self.actions.push_back(Action::Ack {
                towards: Towards::Branch(branch),
                request: ack,
            });
        }
        let via = self.via();
        let random = self.random();
        if let Ok(bye) = dialog.request(Method::Bye, &via, random) {
            self.send_own(Towards::Branch(branch), bye, false);
        }
    }

    /// Sends a request of our own and keeps it for its answer.
    fn send_own(&mut self, towards: Towards, request: OutgoingRequest, authorized: bool) {
        let key = self.key();
        // Kept only where a challenge can be answered: towards a branch with credentials.
        let can_authorize = match towards {
            Towards::Branch(b) => self
                .branches
                .get(b)
                .is_some_and(|b| b.target.credentials.is_some()),
            Towards::Caller => false,
        };
        self.own.insert(
            key,
            Own {
                towards,
                request: can_authorize.then(|| request.clone()),
                authorized,
            },
        );
        self.actions.push_back(Action::Request {
            key,
            towards,
            request,
        });
    }

    /// A trunk challenged a request of ours (a BYE: some ITSPs authenticate every request, and
    /// an unanswered challenge would leave the trunk's leg up, and billed): the same request
    /// again with the branch's credentials, next CSeq, new Via branch (RFC 3261 §22.2).
    fn reauthorize_own(&mut self, own: Own, response: &Message) {
        let Some(mut request) = own.request else {
            return;
        };
        let Some(msg) = self.resend_with_credentials(own.towards, response, request.message) else {
            return;
        };
        request.message = msg;
        self.send_own(own.towards, request, true);
    }

    /// A trunk challenged a request we relayed to it (some ITSPs authenticate every request,
    /// hold and resume included): sends the same request again with the branch's credentials,
    /// next CSeq, new Via branch, and returns its key and what was sent, for its answer to be
    /// relayed as the first one's would have been. `None` when the other leg has no
    /// credentials or the challenge cannot be answered.
    fn reauthorize_relay(&mut self, relay: &Relay, response: &Message) -> Option<(Key, Message)> {
        let towards = self.towards(relay.from.other());
        let msg = self.resend_with_credentials(towards, response, relay.sent.clone())?;
        let key = self.key();
        self.actions.push_back(Action::Request {
            key,
            towards,
            request: OutgoingRequest {
                message: msg.clone(),
                next_hop: relay.next_hop.clone(),
            },
        });
        Some((key, msg))
    }

    /// `sent`, an in-dialog request towards a branch, again with that branch's credentials
    /// answering `response`'s challenge ([`Call::with_credentials`]); the dialog's CSeq moves
    /// on to it. `None` towards the caller, a branch without credentials, or a challenge that
    /// cannot be answered.
    fn resend_with_credentials(
        &mut self,
        towards: Towards,
        response: &Message,
        sent: Message,
    ) -> Option<Message> {
        let Towards::Branch(b) = towards else {
            return None;
        };
        let creds = self.branches.get(b)?.target.credentials.clone()?;
        let msg = self.with_credentials(&creds, response, sent)?;
        if let (Some(d), Some(seq)) = (self.dialog_mut(own_leg(towards)), msg.cseq()) {
            // Later requests on this dialog must go on from the new CSeq.
            d.advance_local_seq(seq.seq);
        }
        Some(msg)
    }

    /// `msg` again with credentials answering the challenge in `response` (401 or 407): the
    /// next CSeq, a new Via branch, the answer in place of any earlier one (RFC 3261 §22.2).
    /// `None` when nothing offered can be answered.
    fn with_credentials(
        &mut self,
        creds: &BranchCredentials,
        response: &Message,
        mut msg: Message,
    ) -> Option<Message> {
        let (challenge, answer) = if response.status() == Some(401) {
            (HeaderName::WwwAuthenticate, HeaderName::Authorization)
        } else {
            (
                HeaderName::ProxyAuthenticate,
                HeaderName::ProxyAuthorization,
            )
        };
        let challenges: Vec<_> = response
            .challenges(&challenge)
            .filter_map(Result::ok)
            .collect();
        let method = msg.method().cloned()?;
        let uri = msg.uri()?.to_string();
        let cnonce = format!("{:016x}", self.random());
        let credentials = crate::sip::auth::authorize(
            &challenges,
            &creds.username,
            &creds.password,
            method.as_str(),
            &uri,
            &cnonce,
            1,
        )?;
        let seq = cseq_of(&msg) + 1;
        let via = self.via();
        let _ = msg.set_top_via(&via);
        let _ = msg.set_header(HeaderName::CSeq, &format!("{seq} {}", method.as_str()));
        msg.remove_headers(&HeaderName::Authorization);
        msg.remove_headers(&HeaderName::ProxyAuthorization);
        let _ = msg.push_header(answer, &credentials.to_string());
        Some(msg)
    }

    fn cancel_branches(&mut self, reason: Option<&'static str>) {
        for (i, b) in self.branches.iter_mut().enumerate() {
            if b.live() {
                b.state = BranchState::Cancelling;
                self.actions.push_back(Action::Cancel { branch: i, reason });
            }
        }
    }

    /// After a branch failed: if none is left ringing, the caller gets the most telling answer.
    fn after_branch_failure(&mut self, now: Instant) {
        if self.phase != Phase::Ringing
            || self.redirecting > 0
            || self.branches.iter().any(Branch::live)
        {
            return;
        }
        let statuses: Vec<u16> = self
            .branches
            .iter()
            .filter_map(|b| match b.state {
                BranchState::Done(s) => Some(s),
                _ => None,
            })
            .collect();
        let (status, outcome) = final_for_caller(&statuses);
        self.fail_caller(status, message::reason_phrase(status), outcome, now);
    }

    fn fail_caller(&mut self, status: u16, reason: &str, outcome: Outcome, now: Instant) {
        if let Ok(rsp) = self.caller.response(&self.caller_invite, status, reason) {
            self.answer_caller(rsp, now);
        }
        self.end(outcome, &status.to_string(), now);
    }

    fn end(&mut self, outcome: Outcome, cause: &str, now: Instant) {
        if self.phase == Phase::Ended {
            return;
        }
        self.phase = Phase::Ended;
        self.deadline = None;
        self.refresh_at = None;
        if let Some(rel) = &mut self.reliable {
            rel.finish();
        }
        self.outcome = Some(outcome);
        self.cause = cause.to_owned();
        self.ended = Some(now);
        self.actions.push_back(Action::Ended);
    }

    /// Sends BYE on `leg` (the side that did not hang up).
    fn hang_up(&mut self, leg: Leg) {
        let via = self.via();
        let random = self.random();
        let towards = self.towards(leg);
        let Some(dialog) = self.dialog_mut(leg) else {
            return;
        };
        if let Ok(bye) = dialog.request(Method::Bye, &via, random) {
            self.send_own(towards, bye, false);
        }
    }

    fn respond(&mut self, leg: Leg, tx: Key, request: &Message, status: u16, reason: &str) {
        let response = match self.dialog_mut(leg) {
            Some(d) => d.response(request, status, reason).ok(),
            None => None,
        }
        // A request we cannot tie to the dialog still gets its answer.
        .unwrap_or_else(|| Message::response_to(request, status, reason));
        self.actions.push_back(Action::Respond { tx, response });
    }

    /// Where requests to `leg` go.
    pub fn towards(&self, leg: Leg) -> Towards {
        match (leg, self.winner) {
            (Leg::Callee, Some(b)) => Towards::Branch(b),
            _ => Towards::Caller,
        }
    }

    /// The dialog of `leg` (none for the callee's before the answer).
    pub fn dialog_id(&self, leg: Leg) -> Option<&DialogId> {
        self.dialog(leg).map(Dialog::id)
    }

    /// The caller's dialog: the call's reference in its record.
    pub fn caller_dialog(&self) -> &DialogId {
        self.caller.id()
    }

    /// The ids of the call's dialogs, for the driver's index: the caller's, the callee's once
    /// answered, then those of replaced legs. The set only grows, and in that order except
    /// when a leg is replaced ([`Action::LegReplaced`]: the driver indexes the new one then).
    pub fn dialog_ids(&self) -> impl Iterator<Item = &DialogId> {
        std::iter::once(self.caller.id())
            .chain(self.callee.as_ref().map(Dialog::id))
            .chain(self.replaced.iter())
    }

    /// An INVITE with `Replaces` naming `leg`'s dialog (RFC 3891): its sender takes the place
    /// of that leg's phone. The replaced phone gets BYE; the INVITE goes on to the other leg
    /// as a re-INVITE, so that party hears of the new session description, and its answer
    /// comes back as the answer to `tx` (an [`Action::Respond`]) with `tag` as our To tag. A
    /// refusal there ends the call. `early_only` is the header's parameter.
    pub fn replace(
        &mut self,
        leg: Leg,
        tx: Key,
        invite: &Message,
        tag: &str,
        early_only: bool,
        now: Instant,
    ) -> Result<(), ReplaceError> {
        if self.phase != Phase::Answered || (leg == Leg::Callee && self.callee.is_none()) {
            return Err(ReplaceError::NotConfirmed);
        }
        if self.local_answer.is_some() {
            return Err(ReplaceError::NotConfirmed);
        }
        if early_only {
            return Err(ReplaceError::EarlyOnly);
        }
        let pending = |r: &Relay| r.sent.method() == Some(&Method::Invite);
        if self.relays.values().any(pending) || self.refreshing.is_some() {
            return Err(ReplaceError::Pending);
        }
        let dialog = Dialog::uas(invite, tag, self.config.contact.clone())
            .map_err(|_| ReplaceError::Dialog)?;
        // Where the new phone is reached, standing for the callee: checked before anything
        // changes (a dialog needs a Contact, so it is there).
        let contact = invite.contacts().first().map(|c| c.uri.clone());
        let Some(contact) = contact else {
            return Err(ReplaceError::Dialog);
        };
        // The BYE goes first, while `towards(leg)` still means the replaced phone.
        self.hang_up(leg);
        let old = match leg {
            Leg::Caller => std::mem::replace(&mut self.caller, dialog),
            Leg::Callee => match self.callee.replace(dialog) {
                Some(d) => d,
                None => return Err(ReplaceError::NotConfirmed),
            },
        };
        self.replaced.push(old.id().clone());
        self.pending_ack = None;
        let towards = match leg {
            Leg::Caller => {
                // Session timers are agreed with the caller: with this one now, or none.
                self.session_interval =
                    session_expires(invite).filter(|se| *se >= MIN_SE && supports_timer(invite));
                self.we_refresh = refresher(invite).is_some_and(|r| r.eq_ignore_ascii_case("uas"));
                self.arm_session_timer(now);
                Towards::Caller
            }
            Leg::Callee => {
                // The new phone stands in the old winner's place, under its label (the record
                // says who answered the call).
                let label = self
                    .winner
                    .and_then(|w| self.branches.get(w))
                    .map(|b| b.target.label.clone())
                    .unwrap_or_default();
                if let Some(old) = self.winner.and_then(|w| self.branches.get_mut(w)) {
                    old.state = BranchState::Done(200);
                }
                let index = self.branches.len();
                self.branches.push(Branch {
                    target: Target::phone(contact, label),
                    invite: invite.clone(),
                    state: BranchState::Winner,
                    authorized: false,
                    early: None,
                });
                self.winner = Some(index);
                Towards::Branch(index)
            }
        };
        self.actions.push_back(Action::LegReplaced { towards });
        if let Some(key) = self.relay(leg, tx, invite, Method::Invite) {
            if let Some(r) = self.relays.get_mut(&key) {
                r.replacing = true;
            }
        }
        Ok(())
    }

    fn on_ack(&mut self, leg: Leg, ack_in: &Message) {
        // The ACK of our 200 to the caller ends nothing; the ACK of a relayed re-INVITE's 2xx
        // goes on to the leg that answered it.
        if let Some((to_leg, seq)) = self.pending_ack {
            if to_leg == leg {
                self.pending_ack = None;
                let via = self.via();
                let random = self.random();
                if let Some(Ok(mut ack)) =
                    self.dialog(leg.other()).map(|d| d.ack(seq, &via, random))
                {
                    // An offer in a 2xx is answered in the ACK (§13.2.1, late offer): the
                    // answer goes on with it.
                    copy_body(ack_in, &mut ack.message);
                    self.actions.push_back(Action::Ack {
                        towards: self.towards(leg.other()),
                        request: ack,
                    });
                }
            }
        }
    }

    fn relay(&mut self, from: Leg, tx: Key, request: &Message, method: Method) -> Option<Key> {
        let via = self.via();
        let random = self.random();
        let towards = self.towards(from.other());
        let other = self.dialog_mut(from.other())?;
        let mut out = match other.request(method, &via, random) {
            Ok(out) => out,
            Err(e) => {
                let status = e.status();
                self.respond(from, tx, request, status, message::reason_phrase(status));
                return None;
            }
        };
        for name in [
            HeaderName::Event,
            HeaderName::SubscriptionState,
            HeaderName::ReferTo,
        ] {
            for v in request.headers(&name) {
                let _ = out.message.push_header(name.clone(), v);
            }
        }
        copy_body(request, &mut out.message);
        let key = self.key();
        self.relays.insert(
            key,
            Relay {
                authorized: false,
                from,
                tx,
                request: request.clone(),
                sent: out.message.clone(),
                next_hop: out.next_hop.clone(),
                provisional: false,
                cancel_pending: false,
                replacing: false,
            },
        );
        self.actions.push_back(Action::Request {
            key,
            towards,
            request: out,
        });
        Some(key)
    }
}

/// How soon a refresh that failed (not for good) is tried again.
const REFRESH_RETRY: Duration = Duration::from_secs(10);

/// The `refresher` parameter of a request's Session-Expires.
fn refresher(m: &Message) -> Option<&str> {
    m.header(&HeaderName::SessionExpires)?
        .split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("refresher"))
        .map(|(_, v)| v.trim())
}

/// Whether `m`'s Allow lists `method`.
fn allows(m: &Message, method: &str) -> bool {
    m.headers(&HeaderName::Allow)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(method))
}

/// Whether `m` requires option tag `tag` (`Require`).
fn requires(m: &Message, tag: &str) -> bool {
    m.headers(&HeaderName::Require)
        .any(|t| t.trim().eq_ignore_ascii_case(tag))
}

/// The Session-Expires interval of a request (RFC 4028 §4), without its parameters.
fn session_expires(m: &Message) -> Option<u32> {
    m.header(&HeaderName::SessionExpires)?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// Whether the request lists the `timer` option in Supported or Require.
fn supports_timer(m: &Message) -> bool {
    [HeaderName::Supported, HeaderName::Require]
        .iter()
        .any(|h| {
            m.headers(h)
                .flat_map(|v| v.split(','))
                .any(|t| t.trim().eq_ignore_ascii_case("timer"))
        })
}

/// When to give up on a session of interval `se` seconds without a refresh: RFC 4028 §10 has
/// the side that does not refresh send its BYE a little before the end, min(32 s, se/3).
fn expiry_margin(se: u32) -> Duration {
    let se = u64::from(se);
    Duration::from_secs(se - (se / 3).min(32))
}

/// The answer for the caller once every branch failed. Busy only when every branch was busy;
/// a decline on any phone is a decline; branches that rang out or were unreachable make the
/// callee temporarily unavailable; otherwise the lowest failure (a 404 beats a 500).
fn final_for_caller(statuses: &[u16]) -> (u16, Outcome) {
    let busy = |s: &u16| matches!(*s, 486 | 600);
    if !statuses.is_empty() && statuses.iter().all(busy) {
        return (486, Outcome::Busy);
    }
    if statuses.contains(&603) {
        return (603, Outcome::Busy);
    }
    if statuses
        .iter()
        .any(|s| matches!(*s, 408 | 480 | 487) || busy(s))
    {
        return (480, Outcome::NoAnswer);
    }
    // A challenge we could not answer is ours to handle, never the caller's: passing a trunk's
    // 401/407 on would have the phone answer with its own credentials for a foreign realm.
    // A redirect we did not follow (a trunk's, or one that led nowhere) is not passed on
    // either: following it would be the caller's to decide on our account, and passing a 3xx
    // on without its Contact would be malformed (§21.3). The target is unavailable as far as
    // the caller can tell.
    let lowest = statuses
        .iter()
        .map(|&s| match s {
            401 | 407 => 503,
            300..=399 => 480,
            s => s,
        })
        .min()
        .unwrap_or(480);
    (lowest, Outcome::Failed)
}

/// A Contact's `q` in thousandths (RFC 3261 §20.10: 0 to 1, three decimals); 1000 when absent
/// or unreadable.
fn q_millis(contact: &NameAddr) -> u32 {
    let Some(q) = contact.params.value("q") else {
        return 1000;
    };
    let (whole, frac) = q.split_once('.').unwrap_or((q, ""));
    let digits: String = frac.chars().chain("000".chars()).take(3).collect();
    match (whole, digits.parse::<u32>()) {
        ("0", Ok(f)) => f,
        ("1", _) => 1000,
        _ => 1000,
    }
}

fn cseq_of(m: &Message) -> u32 {
    m.cseq().map_or(1, |c| c.seq)
}

/// A CANCEL for `invite` (RFC 3261 §9.1): same Request-URI, Call-ID, From, To, Route and top
/// Via (so the same branch), CSeq number with method CANCEL.
pub(super) fn cancel_for(invite: &Message, reason: Option<&str>) -> Option<Message> {
    let mut c = Message::request(Method::Cancel, invite.uri()?.clone());
    if let Some(via) = invite.top_via() {
        let _ = c.push_via(via.clone());
    }
    let _ = c.push_header(HeaderName::MaxForwards, "70");
    for name in [HeaderName::From, HeaderName::To, HeaderName::CallId] {
        if let Some(v) = invite.header(&name) {
            let _ = c.push_header(name, v);
        }
    }
    let seq = invite.cseq().map_or(1, |s| s.seq);
    let _ = c.push_cseq(seq, Method::Cancel);
    for v in invite.headers(&HeaderName::Route) {
        let _ = c.push_header(HeaderName::Route, v);
    }
    if let Some(reason) = reason {
        let _ = c.push_header(HeaderName::Reason, reason);
    }
    Some(c)
}

fn copy_body(from: &Message, to: &mut Message) {
    if from.body().is_empty() {
        return;
    }
    let _ = to.set_body(from.body().to_vec(), from.content_type());
}

/// SplitMix64: the tags, branches and Call-IDs the B2BUA makes (not secrets).
pub(crate) fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;

/// The leg a request of ours went to.
fn own_leg(towards: Towards) -> Leg {
    match towards {
        Towards::Caller => Leg::Caller,
        Towards::Branch(_) => Leg::Callee,
    }
}

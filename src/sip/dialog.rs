//! SIP dialogs (RFC 3261 §12, with the dialog parts of §13 to §15), written
//! sans-IO.
//!
//! # What it owns
//!
//! The dialog state one user agent keeps: the dialog id and how a received
//! message is mapped to one (§12), creation on the UAS side from a
//! dialog-creating request (§12.1.1) and on the UAC side from a 1xx with a
//! To tag or a 2xx (§12.1.2), the route set and how it turns into a
//! Request-URI and Route header for loose and strict routers (§12.2.1.1),
//! local and remote CSeq numbering (§12.2.1.1, §12.2.2), target refresh
//! (§12.2.1.2, §12.2.2), the early → confirmed → terminated life cycle
//! (§12.3, §13.2.2.4, §15) and the ACK for a 2xx (§13.2.2.4). The B2BUA
//! keeps one [`Dialog`] per leg.
//!
//! # What it must not touch
//!
//! Transactions (retransmissions, the ACK of a non-2xx, CANCEL: see
//! `super::transaction`), sockets, DNS (the caller resolves
//! [`OutgoingRequest::next_hop`] per RFC 3263), randomness (tags and branch
//! bits come from the caller) and clocks: no dialog rule depends on time,
//! so session timers and 2xx retransmission live with the caller.
//!
//! Transport is not visible here either, so `secure` (§12.1.1, §12.1.2)
//! is derived from the `sips:` Request-URI alone; the driver must refuse a
//! `sips:` request that did not arrive over TLS (RFC 5630 §3.1.3) for that
//! to hold.

use std::fmt;

use super::header::{CSeq, HeaderError, HeaderName, NameAddr, Via};
use super::message::{self, Message, Method};
use super::uri::Uri;

/// Identifies a dialog from our side (§12): the remote tag is empty when
/// the peer sent none, which RFC 3261 asks us to treat as a null tag for
/// RFC 2543 peers. Compared byte for byte, as every stack that generates
/// tags does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

/// A dialog id borrowed from a message: what finding a dialog needs, without copying the
/// Call-ID and tags (a lookup happens for every in-dialog request and every ACK).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DialogRef<'a> {
    pub call_id: &'a str,
    pub local_tag: &'a str,
    pub remote_tag: &'a str,
}

impl DialogId {
    /// The dialog a received in-dialog request belongs to: we are the UAS
    /// for it, so our tag is in To. A request without a To tag is outside
    /// any dialog.
    pub fn for_request(request: &Message) -> Result<DialogId, DialogError> {
        DialogRef::of_request(request).map(DialogRef::to_id)
    }

    /// The dialog a response to one of our requests belongs to: our tag is
    /// in From. A 2xx without a To tag (RFC 2543 peer) maps to a null
    /// remote tag; a 1xx without one creates no dialog (§12.1).
    pub fn for_response(response: &Message) -> Result<DialogId, DialogError> {
        DialogRef::of_response(response).map(DialogRef::to_id)
    }

    pub fn as_ref(&self) -> DialogRef<'_> {
        DialogRef {
            call_id: &self.call_id,
            local_tag: &self.local_tag,
            remote_tag: &self.remote_tag,
        }
    }
}

impl<'a> DialogRef<'a> {
    /// See [`DialogId::for_request`].
    pub fn of_request(request: &'a Message) -> Result<DialogRef<'a>, DialogError> {
        if !request.is_request() {
            return Err(DialogError::NotARequest);
        }
        let local_tag = request
            .to()
            .ok_or(DialogError::Missing(HeaderName::To))?
            .tag()
            .ok_or(DialogError::NoToTag)?;
        let remote_tag = request
            .from()
            .ok_or(DialogError::Missing(HeaderName::From))?
            .tag()
            .unwrap_or_default();
        Ok(DialogRef {
            call_id: call_id(request)?,
            local_tag,
            remote_tag,
        })
    }

    /// See [`DialogId::for_response`].
    pub fn of_response(response: &'a Message) -> Result<DialogRef<'a>, DialogError> {
        let status = response.status().ok_or(DialogError::NotAResponse)?;
        let local_tag = response
            .from()
            .ok_or(DialogError::Missing(HeaderName::From))?
            .tag()
            .ok_or(DialogError::NoFromTag)?;
        let remote_tag = match response
            .to()
            .ok_or(DialogError::Missing(HeaderName::To))?
            .tag()
        {
            Some(t) => t,
            None if (200..300).contains(&status) => "",
            None => return Err(DialogError::NoToTag),
        };
        Ok(DialogRef {
            call_id: call_id(response)?,
            local_tag,
            remote_tag,
        })
    }

    pub fn to_id(self) -> DialogId {
        DialogId {
            call_id: self.call_id.to_owned(),
            local_tag: self.local_tag.to_owned(),
            remote_tag: self.remote_tag.to_owned(),
        }
    }
}

/// Lets a map keyed by [`DialogId`] be searched with a [`DialogRef`]:
/// `map.get(&dialog_ref as &dyn DialogKey)`. Both hash and compare as their
/// [`DialogRef`], which is what `Borrow` requires.
pub trait DialogKey {
    fn key(&self) -> DialogRef<'_>;
}

impl DialogKey for DialogId {
    fn key(&self) -> DialogRef<'_> {
        self.as_ref()
    }
}

impl DialogKey for DialogRef<'_> {
    fn key(&self) -> DialogRef<'_> {
        *self
    }
}

impl<'a> std::borrow::Borrow<dyn DialogKey + 'a> for DialogId {
    fn borrow(&self) -> &(dyn DialogKey + 'a) {
        self
    }
}

impl std::hash::Hash for DialogId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl std::hash::Hash for dyn DialogKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialEq for dyn DialogKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for dyn DialogKey + '_ {}

impl fmt::Display for DialogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{};local={};remote={}",
            self.call_id, self.local_tag, self.remote_tag
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Created by a provisional response; may still fail or fork.
    Early,
    Confirmed,
    Terminated,
}

/// Which side of the dialog-creating request we were. It decides who may
/// confirm an early dialog: the UAC on receiving a 2xx, the UAS on
/// sending one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Uac,
    Uas,
}

/// Why a message could not create, update or be sent in a dialog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    #[error("not a request")]
    NotARequest,
    #[error("not a response")]
    NotAResponse,
    #[error("missing {0} header")]
    Missing(HeaderName),
    #[error("invalid {name} header: {error}")]
    Header {
        name: HeaderName,
        #[source]
        error: HeaderError,
    },
    #[error("From has no tag")]
    NoFromTag,
    #[error("To has no tag")]
    NoToTag,
    #[error("a dialog-creating request must not carry a To tag")]
    ToTagPresent,
    #[error("{0} cannot create a dialog")]
    NotDialogCreating(String),
    #[error("message does not belong to dialog {0}")]
    Mismatch(DialogId),
    #[error("response does not answer the request given (Call-ID or CSeq differ)")]
    NotTheResponse,
    #[error("CSeq {got} is not above the last remote CSeq {last}")]
    CSeqOutOfOrder { got: u32, last: u32 },
    #[error("local CSeq space exhausted")]
    CSeqExhausted,
    #[error("{0} is built by the transaction layer or with Dialog::ack, not Dialog::request")]
    Method(Method),
    #[error("dialog is terminated")]
    Terminated,
}

impl DialogError {
    /// The status a UAS answers a request failing this way with: 500 for
    /// an out-of-order CSeq (§12.2.2), 481 for a request matching no
    /// dialog (§12.2.2), 400 for the rest.
    pub fn status(&self) -> u16 {
        match self {
            DialogError::CSeqOutOfOrder { .. } => 500,
            DialogError::Mismatch(_) | DialogError::Terminated => 481,
            _ => 400,
        }
    }
}

/// An in-dialog request ready for a client transaction, and where it goes
/// first: the first Route's URI, or the Request-URI when there is no route
/// set or its first hop is a strict router (§8.1.2). The caller resolves
/// it per RFC 3263.
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    pub message: Message,
    pub next_hop: Uri,
}

/// The state of one dialog, from our side (§12).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    id: DialogId,
    role: Role,
    state: State,
    local_seq: Option<u32>,
    remote_seq: Option<u32>,
    /// From (UAC) or To (UAS) of the creating request, with our tag.
    local_uri: NameAddr,
    /// To (UAC) or From (UAS), with the peer's tag when it sent one.
    remote_uri: NameAddr,
    remote_target: Uri,
    /// In the order requests use it: first entry is the next hop.
    route_set: Vec<NameAddr>,
    secure: bool,
    local_contact: NameAddr,
}

impl Dialog {
    /// The UAS half of §12.1.1, from a received dialog-creating request
    /// (INVITE, SUBSCRIBE, REFER, or an RFC 6665 NOTIFY). The dialog
    /// starts early and is confirmed when we send the 2xx
    /// ([`Dialog::response`] or [`Dialog::confirm`]). `local_tag` should
    /// come from [`message::new_tag`]; `local_contact` is what we put in
    /// Contact.
    pub fn uas(
        request: &Message,
        local_tag: &str,
        local_contact: NameAddr,
    ) -> Result<Dialog, DialogError> {
        let method = request.method().ok_or(DialogError::NotARequest)?;
        if !creates_dialog(method) {
            return Err(DialogError::NotDialogCreating(method.to_string()));
        }
        let to = request.to().ok_or(DialogError::Missing(HeaderName::To))?;
        if to.tag().is_some() {
            return Err(DialogError::ToTagPresent);
        }
        let from = request
            .from()
            .ok_or(DialogError::Missing(HeaderName::From))?;
        let mut local_uri = to.clone();
        local_uri.set_tag(local_tag);
        Ok(Dialog {
            id: DialogId {
                call_id: call_id(request)?.to_owned(),
                local_tag: local_tag.to_owned(),
                remote_tag: from.tag().unwrap_or_default().to_owned(),
            },
            role: Role::Uas,
            state: State::Early,
            local_seq: None,
            remote_seq: Some(cseq(request)?.seq),
            local_uri,
            remote_uri: from.clone(),
            remote_target: contact_uri(request)?,
            // Record-Route order already runs from us towards the caller.
            route_set: record_routes(request)?,
            secure: request.uri().is_some_and(Uri::is_sips),
            local_contact,
        })
    }

    /// The UAC half of §12.1.2, from the request we sent and a 1xx with a
    /// To tag (early dialog) or a 2xx (confirmed). Each forked answer with
    /// a new To tag makes a dialog of its own.
    pub fn uac(request: &Message, response: &Message) -> Result<Dialog, DialogError> {
        let method = request.method().ok_or(DialogError::NotARequest)?;
        if !creates_dialog(method) {
            return Err(DialogError::NotDialogCreating(method.to_string()));
        }
        let status = response.status().ok_or(DialogError::NotAResponse)?;
        let state = match status {
            101..=199 => State::Early,
            200..=299 => State::Confirmed,
            _ => return Err(DialogError::NotDialogCreating(status.to_string())),
        };
        check_answers(request, response)?;
        let id = DialogId::for_response(response)?;
        let local_uri = request
            .from()
            .ok_or(DialogError::Missing(HeaderName::From))?
            .clone();
        let remote_uri = response
            .to()
            .ok_or(DialogError::Missing(HeaderName::To))?
            .clone();
        let local_contact = request
            .contacts()
            .first()
            .ok_or(DialogError::Missing(HeaderName::Contact))?
            .clone();
        let remote_target = match contact_uri(response) {
            Ok(uri) => uri,
            // Plenty of phones send 180 without Contact. The early dialog
            // is still worth having to match the 2xx, so aim at where the
            // request went until a response names a target. A 2xx must
            // have one (§12.1.2), but a peer that leaves it out is better
            // reached where the request went than left unacknowledged,
            // repeating its 2xx, with a session up that nobody can end.
            Err(DialogError::Missing(_)) => {
                request.uri().cloned().ok_or(DialogError::NotARequest)?
            }
            Err(e) => return Err(e),
        };
        Ok(Dialog {
            id,
            role: Role::Uac,
            state,
            local_seq: Some(cseq(request)?.seq),
            remote_seq: None,
            local_uri,
            remote_uri,
            remote_target,
            route_set: reversed_record_routes(response)?,
            secure: request.uri().is_some_and(Uri::is_sips),
            local_contact,
        })
    }

    pub fn id(&self) -> &DialogId {
        &self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn local_seq(&self) -> Option<u32> {
        self.local_seq
    }

    /// Moves our CSeq on to `seq` when a request of this dialog was sent again outside
    /// [`Dialog::request`] (with credentials, §22.2); it never goes back.
    pub fn advance_local_seq(&mut self, seq: u32) {
        self.local_seq = Some(self.local_seq.map_or(seq, |s| s.max(seq)));
    }

    pub fn remote_seq(&self) -> Option<u32> {
        self.remote_seq
    }

    pub fn local_uri(&self) -> &NameAddr {
        &self.local_uri
    }

    pub fn remote_uri(&self) -> &NameAddr {
        &self.remote_uri
    }

    pub fn remote_target(&self) -> &Uri {
        &self.remote_target
    }

    pub fn route_set(&self) -> &[NameAddr] {
        &self.route_set
    }

    pub fn secure(&self) -> bool {
        self.secure
    }

    pub fn local_contact(&self) -> &NameAddr {
        &self.local_contact
    }

    /// Early → confirmed, for a UAS that sent a 2xx by other means than
    /// [`Dialog::response`]. A terminated dialog stays terminated.
    pub fn confirm(&mut self) {
        if self.state == State::Early {
            self.state = State::Confirmed;
        }
    }

    /// Ends the dialog: BYE answered or timed out, session expired, or an
    /// early dialog losing a fork race.
    pub fn terminate(&mut self) {
        self.state = State::Terminated;
    }

    /// Checks and records a request received in this dialog (§12.2.2).
    /// On `Err`, answer with [`DialogError::status`]: 481 when the request
    /// is not ours, 500 for a CSeq that went backwards.
    ///
    /// ACK and CANCEL reuse the CSeq number of the INVITE they belong to,
    /// so they are neither checked nor counted.
    pub fn receive_request(&mut self, request: &Message) -> Result<(), DialogError> {
        let method = request.method().ok_or(DialogError::NotARequest)?;
        let id = DialogId::for_request(request)?;
        if id != self.id {
            return Err(DialogError::Mismatch(self.id.clone()));
        }
        if matches!(method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        if self.state == State::Terminated {
            return Err(DialogError::Terminated);
        }
        let seq = cseq(request)?.seq;
        // Equal is refused too: a retransmission never reaches us (the
        // server transaction absorbs it), so an equal number on a new
        // transaction is a peer reusing its CSeq.
        if let Some(last) = self.remote_seq.filter(|&last| seq <= last) {
            return Err(DialogError::CSeqOutOfOrder { got: seq, last });
        }
        if refreshes_target(method) {
            if let Some(contact) = request.contacts().first() {
                self.remote_target = contact.uri.clone();
            }
        }
        self.remote_seq = Some(seq);
        Ok(())
    }

    /// Records a response to a request we sent in this dialog (including
    /// further responses to the dialog-creating INVITE): target refresh on
    /// a 2xx (§12.2.1.2), confirmation of an early dialog with the route
    /// set taken from the 2xx (§12.1.2, §13.2.2.4), and termination on
    /// 481/408 (§12.2.1.2), on a final answer to BYE (§15.1.1) or on a
    /// failure of the INVITE that created an early dialog (§12.3).
    pub fn receive_response(
        &mut self,
        request: &Message,
        response: &Message,
    ) -> Result<(), DialogError> {
        let method = request.method().ok_or(DialogError::NotARequest)?;
        check_answers(request, response)?;
        let status = response.status().ok_or(DialogError::NotAResponse)?;
        if DialogId::for_response(response)? != self.id {
            return Err(DialogError::Mismatch(self.id.clone()));
        }
        if self.state == State::Terminated {
            return Ok(());
        }
        let early_invite =
            self.state == State::Early && self.role == Role::Uac && *method == Method::Invite;
        match status {
            101..=199 if early_invite => {
                // Not a target refresh in RFC 3261 terms, but a later
                // (often reliable) 1xx is the peer's most recent word on
                // where it lives, and the early dialog needs somewhere to
                // send PRACK and UPDATE.
                if let Some(c) = response.contacts().first() {
                    self.remote_target = c.uri.clone();
                }
            }
            200..=299 => {
                if early_invite {
                    self.route_set = reversed_record_routes(response)?;
                    self.state = State::Confirmed;
                }
                if refreshes_target(method) {
                    if let Some(c) = response.contacts().first() {
                        self.remote_target = c.uri.clone();
                    }
                }
                if *method == Method::Bye {
                    self.state = State::Terminated;
                }
            }
            408 | 481 => self.state = State::Terminated,
            300..=699 if early_invite || *method == Method::Bye => {
                self.state = State::Terminated;
            }
            _ => {}
        }
        Ok(())
    }

    /// Our response to `request`, a request of this dialog (the creating
    /// one included): To tag added, Contact on 1xx/2xx to target refresh
    /// and creating requests, and the Record-Route of the creating request
    /// copied back (§12.1.1). Sending a 2xx to the creating request
    /// confirms the dialog, a failure ends it (§13.3.1.4); a 2xx to BYE
    /// ends it.
    pub fn response(
        &mut self,
        request: &Message,
        status: u16,
        reason: &str,
    ) -> Result<Message, DialogError> {
        let method = request.method().ok_or(DialogError::NotARequest)?;
        let creating = request.to().is_some_and(|t| t.tag().is_none());
        let from_tag = request.from().and_then(NameAddr::tag).unwrap_or_default();
        let ours = call_id(request)? == self.id.call_id
            && from_tag == self.id.remote_tag
            && (creating
                || request.to().and_then(NameAddr::tag) == Some(self.id.local_tag.as_str()));
        if !ours {
            return Err(DialogError::Mismatch(self.id.clone()));
        }
        let mut rsp = Message::response_to(request, status, reason);
        rsp.set_to_tag(&self.id.local_tag)
            .map_err(header_error(HeaderName::To))?;
        let answers = (101..300).contains(&status);
        if answers && creating {
            let rr: Vec<_> = request.headers(&HeaderName::RecordRoute).collect();
            if !rr.is_empty() {
                rsp.push_header(HeaderName::RecordRoute, &rr.join(", "))
                    .map_err(header_error(HeaderName::RecordRoute))?;
            }
        }
        if answers && (creating || refreshes_target(method)) {
            rsp.push_name_addr(HeaderName::Contact, self.local_contact.clone())
                .map_err(header_error(HeaderName::Contact))?;
        }
        match status {
            200..=299 if *method == Method::Bye => self.state = State::Terminated,
            200..=299 if creating => self.confirm(),
            300..=699 if creating && self.state == State::Early => {
                self.state = State::Terminated;
            }
            _ => {}
        }
        Ok(rsp)
    }

    /// A new in-dialog request (§12.2.1.1) with the next local CSeq.
    /// `via` is the Via this element adds (transport, sent-by, `rport`
    /// ...); its branch is replaced by one made from `branch_random`.
    /// ACK for a 2xx comes from [`Dialog::ack`] and CANCEL from the
    /// transaction layer, as both reuse the INVITE's CSeq.
    pub fn request(
        &mut self,
        method: Method,
        via: &Via,
        branch_random: u64,
    ) -> Result<OutgoingRequest, DialogError> {
        if matches!(method, Method::Ack | Method::Cancel) {
            return Err(DialogError::Method(method));
        }
        if self.state == State::Terminated {
            return Err(DialogError::Terminated);
        }
        // §12.2.1.1 lets an empty local sequence start anywhere below 2^31;
        // 1 keeps UAS-side traces readable.
        let seq = match self.local_seq {
            None => 1,
            Some(s) => s.checked_add(1).ok_or(DialogError::CSeqExhausted)?,
        };
        let out = self.build(method, seq, via, branch_random, true)?;
        self.local_seq = Some(seq);
        Ok(out)
    }

    /// The ACK for a 2xx to the INVITE numbered `invite_cseq` (§13.2.2.4):
    /// its own transaction, same CSeq number, and no effect on the local
    /// sequence.
    pub fn ack(
        &self,
        invite_cseq: u32,
        via: &Via,
        branch_random: u64,
    ) -> Result<OutgoingRequest, DialogError> {
        self.build(Method::Ack, invite_cseq, via, branch_random, false)
    }

    fn build(
        &self,
        method: Method,
        seq: u32,
        via: &Via,
        branch_random: u64,
        with_contact: bool,
    ) -> Result<OutgoingRequest, DialogError> {
        let (ruri, routes, next_hop) = self.request_uri_and_routes();
        let mut via = via.clone();
        via.params
            .set("branch", Some(message::new_branch(branch_random)));
        let mut to = self.remote_uri.clone();
        if !self.id.remote_tag.is_empty() {
            to.set_tag(&self.id.remote_tag);
        }
        let mut from = self.local_uri.clone();
        from.set_tag(&self.id.local_tag);

        let mut m = Message::request(method.clone(), ruri);
        m.push_via(via).map_err(header_error(HeaderName::Via))?;
        m.push_header(HeaderName::MaxForwards, "70")
            .map_err(header_error(HeaderName::MaxForwards))?;
        if !routes.is_empty() {
            let mut list = String::new();
            for (i, r) in routes.iter().enumerate() {
                if i > 0 {
                    list.push_str(", ");
                }
                r.push_to(&mut list);
            }
            m.push_header(HeaderName::Route, &list)
                .map_err(header_error(HeaderName::Route))?;
        }
        m.push_name_addr(HeaderName::To, to)
            .map_err(header_error(HeaderName::To))?;
        m.push_name_addr(HeaderName::From, from)
            .map_err(header_error(HeaderName::From))?;
        m.push_header(HeaderName::CallId, &self.id.call_id)
            .map_err(header_error(HeaderName::CallId))?;
        m.push_cseq(seq, method)
            .map_err(header_error(HeaderName::CSeq))?;
        if with_contact {
            m.push_name_addr(HeaderName::Contact, self.local_contact.clone())
                .map_err(header_error(HeaderName::Contact))?;
        }
        Ok(OutgoingRequest {
            message: m,
            next_hop,
        })
    }

    /// §12.2.1.1: a loose first hop leaves the remote target in the
    /// Request-URI; a strict (RFC 2543) one must be the Request-URI, with
    /// the remote target appended to Route so it is not lost. The next hop
    /// is the first Route, except towards a strict router, which is the
    /// Request-URI itself (§8.1.2).
    fn request_uri_and_routes(&self) -> (Uri, Vec<NameAddr>, Uri) {
        let target = without_headers(self.remote_target.clone());
        match self.route_set.first() {
            None => (target.clone(), Vec::new(), target),
            Some(first) if first.uri.param("lr").is_some() => {
                (target, self.route_set.clone(), first.uri.clone())
            }
            Some(first) => {
                let ruri = without_headers(first.uri.clone());
                let mut routes: Vec<NameAddr> = self.route_set.iter().skip(1).cloned().collect();
                routes.push(NameAddr::new(target));
                (ruri.clone(), routes, ruri)
            }
        }
    }
}

/// Methods that may open a dialog: INVITE (§12), SUBSCRIBE and NOTIFY
/// (RFC 6665 §4.1.2.4, §4.2.2), REFER (RFC 3515 §2.4.7).
fn creates_dialog(method: &Method) -> bool {
    matches!(
        method,
        Method::Invite | Method::Subscribe | Method::Notify | Method::Refer
    )
}

/// Target refresh requests: INVITE (§12.2), UPDATE (RFC 3311 §5.1),
/// SUBSCRIBE and NOTIFY (RFC 6665 §4.1.2.1, §4.2.2).
fn refreshes_target(method: &Method) -> bool {
    matches!(
        method,
        Method::Invite | Method::Update | Method::Subscribe | Method::Notify
    )
}

/// A Request-URI cannot carry `?headers` (§19.1.1, table 1), but a Contact
/// or Record-Route URI may.
fn without_headers(mut uri: Uri) -> Uri {
    if let Some(sip) = uri.as_sip_mut() {
        sip.set_headers_raw(None);
    }
    uri
}

fn header_error(name: HeaderName) -> impl FnOnce(HeaderError) -> DialogError {
    move |error| DialogError::Header { name, error }
}

fn call_id(m: &Message) -> Result<&str, DialogError> {
    m.call_id().ok_or(DialogError::Missing(HeaderName::CallId))
}

fn cseq(m: &Message) -> Result<&CSeq, DialogError> {
    m.cseq().ok_or(DialogError::Missing(HeaderName::CSeq))
}

/// The remote target: the first Contact. §12.1.1 asks for exactly one;
/// taking the first of several is what peers that send more expect.
fn contact_uri(m: &Message) -> Result<Uri, DialogError> {
    m.contacts()
        .first()
        .map(|c| c.uri.clone())
        .ok_or(DialogError::Missing(HeaderName::Contact))
}

fn record_routes(m: &Message) -> Result<Vec<NameAddr>, DialogError> {
    m.record_routes()
        .map_err(header_error(HeaderName::RecordRoute))
}

/// A response's Record-Route lists proxies from the UAS towards us; we
/// need them from us outwards.
fn reversed_record_routes(m: &Message) -> Result<Vec<NameAddr>, DialogError> {
    let mut routes = record_routes(m)?;
    routes.reverse();
    Ok(routes)
}

/// Guards against pairing a response with the wrong request: same Call-ID
/// and CSeq (number and method).
fn check_answers(request: &Message, response: &Message) -> Result<(), DialogError> {
    if call_id(request)? != call_id(response)? || cseq(request)? != cseq(response)? {
        return Err(DialogError::NotTheResponse);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_of_dialog_ids_is_searched_by_a_borrowed_id() {
        let id = |c: &str, l: &str, r: &str| DialogId {
            call_id: c.into(),
            local_tag: l.into(),
            remote_tag: r.into(),
        };
        let map: std::collections::HashMap<DialogId, u32> = [
            (id("c1", "a", "b"), 1),
            (id("c1", "a", ""), 2),
            (id("c1", "ab", ""), 3),
        ]
        .into_iter()
        .collect();
        let find = |c, l, r| {
            let key = DialogRef {
                call_id: c,
                local_tag: l,
                remote_tag: r,
            };
            map.get(&key as &dyn DialogKey).copied()
        };
        assert_eq!(find("c1", "a", "b"), Some(1));
        assert_eq!(find("c1", "a", ""), Some(2));
        assert_eq!(find("c1", "ab", ""), Some(3));
        // The parts are not simply concatenated.
        assert_eq!(find("c1", "", "ab"), None);
        assert_eq!(find("c1a", "", "b"), None);
        assert_eq!(find("c2", "a", "b"), None);
    }
    use crate::sip::header::Transport;
    use crate::sip::message::parse;
    use crate::sip::uri::Host;

    /// Alice's INVITE as it reaches us (Bob's side) through two
    /// record-routing proxies; p2 is the one next to us.
    const INVITE_IN: &str = "INVITE sip:bob@pbx.biloxi.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP p2.example.com;branch=z9hG4bKp2\r\n\
        Via: SIP/2.0/UDP p1.example.com;branch=z9hG4bKp1\r\n\
        Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds\r\n\
        Max-Forwards: 68\r\n\
        Record-Route: <sip:p2.example.com;lr>\r\n\
        Record-Route: <sip:p1.example.com;lr>\r\n\
        To: Bob <sip:bob@biloxi.example.com>\r\n\
        From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
        Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
        CSeq: 314159 INVITE\r\n\
        Contact: <sip:alice@pc33.atlanta.example.com>\r\n\
        Content-Length: 0\r\n\r\n";

    /// Our INVITE towards Carol, sent through p1 then p2.
    const INVITE_OUT: &str = "INVITE sip:carol@chicago.example.com SIP/2.0\r\n\
        Via: SIP/2.0/UDP pbx.example.com;branch=z9hG4bK74bf9\r\n\
        Max-Forwards: 70\r\n\
        Route: <sip:p1.example.com;lr>\r\n\
        To: Carol <sip:carol@chicago.example.com>\r\n\
        From: PBX <sip:pbx@example.com>;tag=9fxced76sl\r\n\
        Call-ID: 3848276298220188511@pbx.example.com\r\n\
        CSeq: 101 INVITE\r\n\
        Contact: <sip:pbx@192.0.2.10:5060>\r\n\
        Content-Length: 0\r\n\r\n";

    /// Carol's answer as it comes back: Record-Route lists p2 (nearest
    /// Carol) first.
    const OK_IN: &str = "SIP/2.0 200 OK\r\n\
        Via: SIP/2.0/UDP pbx.example.com;branch=z9hG4bK74bf9;received=192.0.2.10\r\n\
        Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n\
        To: Carol <sip:carol@chicago.example.com>;tag=314159\r\n\
        From: PBX <sip:pbx@example.com>;tag=9fxced76sl\r\n\
        Call-ID: 3848276298220188511@pbx.example.com\r\n\
        CSeq: 101 INVITE\r\n\
        Contact: <sip:carol@cube2214a.chicago.example.com>\r\n\
        Content-Length: 0\r\n\r\n";

    fn msg(s: &str) -> Message {
        parse(s.as_bytes()).unwrap_or_else(|e| panic!("{e}: {s}"))
    }

    fn contact() -> NameAddr {
        NameAddr::parse("<sip:bob@192.0.2.4:5060>").unwrap()
    }

    fn via() -> Via {
        Via::new(
            Transport::Udp,
            Host::Domain("pbx.example.com".into()),
            Some(5060),
            "placeholder",
        )
    }

    fn uas() -> Dialog {
        Dialog::uas(&msg(INVITE_IN), "a6c85cf", contact()).unwrap()
    }

    fn uac() -> Dialog {
        Dialog::uac(&msg(INVITE_OUT), &msg(OK_IN)).unwrap()
    }

    fn uris(routes: &[NameAddr]) -> Vec<String> {
        routes.iter().map(|r| r.uri.to_string()).collect()
    }

    /// A request from Alice inside the UAS dialog.
    fn in_dialog(method: &str, seq: u32, extra: &str) -> Message {
        msg(&format!(
            "{method} sip:bob@192.0.2.4:5060 SIP/2.0\r\n\
            Via: SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK{seq}{method}\r\n\
            Max-Forwards: 70\r\n\
            To: Bob <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n\
            From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
            Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
            CSeq: {seq} {method}\r\n\
            {extra}Content-Length: 0\r\n\r\n"
        ))
    }

    #[test]
    fn uas_dialog_from_invite_with_record_routes() {
        let d = uas();
        assert_eq!(
            d.id(),
            &DialogId {
                call_id: "a84b4c76e66710@pc33.atlanta.example.com".into(),
                local_tag: "a6c85cf".into(),
                remote_tag: "1928301774".into(),
            }
        );
        assert_eq!(d.role(), Role::Uas);
        assert_eq!(d.state(), State::Early);
        assert_eq!(d.remote_seq(), Some(314159));
        assert_eq!(d.local_seq(), None);
        assert_eq!(
            uris(d.route_set()),
            ["sip:p2.example.com;lr", "sip:p1.example.com;lr"]
        );
        assert_eq!(
            d.remote_target().to_string(),
            "sip:alice@pc33.atlanta.example.com"
        );
        assert_eq!(d.local_uri().tag(), Some("a6c85cf"));
        assert_eq!(d.local_uri().uri.to_string(), "sip:bob@biloxi.example.com");
        assert_eq!(d.remote_uri().tag(), Some("1928301774"));
        assert!(!d.secure());

        // A request already in a dialog cannot create one.
        let again = in_dialog("INVITE", 314160, "Contact: <sip:a@b>\r\n");
        assert_eq!(
            Dialog::uas(&again, "x", contact()),
            Err(DialogError::ToTagPresent)
        );
        let bye = msg(&INVITE_IN.replace("INVITE", "BYE"));
        assert!(matches!(
            Dialog::uas(&bye, "x", contact()),
            Err(DialogError::NotDialogCreating(_))
        ));
        let no_contact =
            msg(&INVITE_IN.replace("Contact: <sip:alice@pc33.atlanta.example.com>\r\n", ""));
        assert_eq!(
            Dialog::uas(&no_contact, "x", contact()),
            Err(DialogError::Missing(HeaderName::Contact))
        );
    }

    #[test]
    fn uas_responses_carry_tag_contact_and_record_route_and_confirm() {
        let mut d = uas();
        let invite = msg(INVITE_IN);
        let ringing = parse(&d.response(&invite, 180, "Ringing").unwrap().to_bytes()).unwrap();
        assert_eq!(ringing.to().and_then(NameAddr::tag), Some("a6c85cf"));
        assert_eq!(
            ringing
                .headers(&HeaderName::RecordRoute)
                .collect::<Vec<_>>(),
            ["<sip:p2.example.com;lr>", "<sip:p1.example.com;lr>"]
        );
        assert_eq!(ringing.contacts(), [contact()]);
        assert_eq!(d.state(), State::Early);

        let ok = d.response(&invite, 200, "OK").unwrap();
        assert_eq!(ok.status(), Some(200));
        assert_eq!(d.state(), State::Confirmed);
        assert_eq!(
            DialogId::for_response(&ok).ok().map(|i| i.call_id),
            Some(d.id().call_id.clone())
        );

        // A failure of the creating INVITE ends an early dialog.
        let mut early = uas();
        early.response(&invite, 486, "Busy Here").unwrap();
        assert_eq!(early.state(), State::Terminated);

        // Someone else's request is refused.
        let other = msg(&INVITE_IN.replace("tag=1928301774", "tag=other"));
        assert!(matches!(
            d.response(&other, 200, "OK"),
            Err(DialogError::Mismatch(_))
        ));

        let bye = in_dialog("BYE", 314160, "");
        d.receive_request(&bye).unwrap();
        let ok = d.response(&bye, 200, "OK").unwrap();
        assert!(ok.contacts().is_empty());
        assert!(ok.header(&HeaderName::RecordRoute).is_none());
        assert_eq!(d.state(), State::Terminated);
    }

    #[test]
    fn uac_dialog_reverses_record_route() {
        let d = uac();
        assert_eq!(d.role(), Role::Uac);
        assert_eq!(d.state(), State::Confirmed);
        assert_eq!(
            d.id(),
            &DialogId {
                call_id: "3848276298220188511@pbx.example.com".into(),
                local_tag: "9fxced76sl".into(),
                remote_tag: "314159".into(),
            }
        );
        assert_eq!(
            uris(d.route_set()),
            ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
        );
        assert_eq!(
            d.remote_target().to_string(),
            "sip:carol@cube2214a.chicago.example.com"
        );
        assert_eq!(d.local_seq(), Some(101));
        assert_eq!(d.remote_seq(), None);
        assert_eq!(d.local_contact().uri.to_string(), "sip:pbx@192.0.2.10:5060");

        let wrong_cseq = msg(&OK_IN.replace("CSeq: 101", "CSeq: 102"));
        assert_eq!(
            Dialog::uac(&msg(INVITE_OUT), &wrong_cseq),
            Err(DialogError::NotTheResponse)
        );
        let trying = msg(&OK_IN.replace("200 OK", "100 Trying"));
        assert!(matches!(
            Dialog::uac(&msg(INVITE_OUT), &trying),
            Err(DialogError::NotDialogCreating(_))
        ));
        let untagged = msg(&OK_IN
            .replace("200 OK", "180 Ringing")
            .replace(";tag=314159", ""));
        assert_eq!(
            Dialog::uac(&msg(INVITE_OUT), &untagged),
            Err(DialogError::NoToTag)
        );
    }

    #[test]
    fn loose_routing_request() {
        let mut d = uas();
        d.confirm();
        let out = d.request(Method::Bye, &via(), 0xabc).unwrap();
        let m = parse(&out.message.to_bytes()).unwrap();
        assert_eq!(
            m.uri().map(Uri::to_string).as_deref(),
            Some("sip:alice@pc33.atlanta.example.com")
        );
        assert_eq!(
            m.header(&HeaderName::Route),
            Some("<sip:p2.example.com;lr>, <sip:p1.example.com;lr>")
        );
        assert_eq!(out.next_hop.to_string(), "sip:p2.example.com;lr");
        assert_eq!(m.to().and_then(NameAddr::tag), Some("1928301774"));
        assert_eq!(
            m.to().map(|t| t.uri.to_string()).as_deref(),
            Some("sip:alice@atlanta.example.com")
        );
        assert_eq!(m.from().and_then(NameAddr::tag), Some("a6c85cf"));
        assert_eq!(m.call_id(), Some("a84b4c76e66710@pc33.atlanta.example.com"));
        assert_eq!(m.cseq().map(CSeq::to_string).as_deref(), Some("1 BYE"));
        assert_eq!(m.max_forwards(), Some(70));
        assert_eq!(m.contacts(), [contact()]);
        assert_eq!(
            m.top_via().and_then(Via::branch),
            Some(message::new_branch(0xabc).as_str())
        );
        assert_eq!(m.top_via().map(|v| v.sent_by_port()), Some(5060));
        assert_eq!(
            DialogId::for_request(&m).map(|i| i.remote_tag),
            Ok("a6c85cf".to_owned())
        );
    }

    #[test]
    fn strict_routing_request() {
        let invite = msg(&INVITE_IN.replace(
            "Record-Route: <sip:p2.example.com;lr>\r\n",
            "Record-Route: <sip:p2.example.com;transport=tcp?X-Hint=1>\r\n",
        ));
        let mut d = Dialog::uas(&invite, "a6c85cf", contact()).unwrap();
        let out = d.request(Method::Info, &via(), 1).unwrap();
        let m = parse(&out.message.to_bytes()).unwrap();
        assert_eq!(
            m.uri().map(Uri::to_string).as_deref(),
            Some("sip:p2.example.com;transport=tcp")
        );
        assert_eq!(
            m.header(&HeaderName::Route),
            Some("<sip:p1.example.com;lr>, <sip:alice@pc33.atlanta.example.com>")
        );
        assert_eq!(out.next_hop.to_string(), "sip:p2.example.com;transport=tcp");
    }

    #[test]
    fn request_without_route_set_goes_to_remote_target() {
        let invite = msg(&INVITE_IN
            .replace("Record-Route: <sip:p2.example.com;lr>\r\n", "")
            .replace("Record-Route: <sip:p1.example.com;lr>\r\n", ""));
        let mut d = Dialog::uas(&invite, "a6c85cf", contact()).unwrap();
        assert!(d.route_set().is_empty());
        let out = d.request(Method::Bye, &via(), 1).unwrap();
        assert!(out.message.header(&HeaderName::Route).is_none());
        assert_eq!(
            out.next_hop.to_string(),
            "sip:alice@pc33.atlanta.example.com"
        );
        assert_eq!(out.message.uri(), Some(&out.next_hop));
    }

    #[test]
    fn local_cseq_is_monotonic_and_ack_reuses_the_invite_number() {
        let mut d = uac();
        let info = d.request(Method::Info, &via(), 1).unwrap().message;
        assert_eq!(info.cseq().map(|c| c.seq), Some(102));
        let reinvite = d.request(Method::Invite, &via(), 2).unwrap().message;
        assert_eq!(reinvite.cseq().map(|c| c.seq), Some(103));
        assert_eq!(d.local_seq(), Some(103));

        let ack = d.ack(103, &via(), 3).unwrap().message;
        let ack = parse(&ack.to_bytes()).unwrap();
        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.cseq().map(CSeq::to_string).as_deref(), Some("103 ACK"));
        assert_eq!(
            ack.top_via().and_then(Via::branch),
            Some(message::new_branch(3).as_str())
        );
        assert_eq!(
            ack.header(&HeaderName::Route),
            Some("<sip:p1.example.com;lr>, <sip:p2.example.com;lr>")
        );
        assert_eq!(d.local_seq(), Some(103));

        let bye = d.request(Method::Bye, &via(), 4).unwrap().message;
        assert_eq!(bye.cseq().map(|c| c.seq), Some(104));
        assert_eq!(
            d.request(Method::Ack, &via(), 5).err(),
            Some(DialogError::Method(Method::Ack))
        );
        assert_eq!(
            d.request(Method::Cancel, &via(), 5).err(),
            Some(DialogError::Method(Method::Cancel))
        );
        assert_eq!(d.local_seq(), Some(104));
    }

    #[test]
    fn local_cseq_exhaustion_is_an_error() {
        let invite = msg(&INVITE_OUT.replace("CSeq: 101", "CSeq: 4294967295"));
        let ok = msg(&OK_IN.replace("CSeq: 101", "CSeq: 4294967295"));
        let mut d = Dialog::uac(&invite, &ok).unwrap();
        assert_eq!(
            d.request(Method::Bye, &via(), 1).err(),
            Some(DialogError::CSeqExhausted)
        );
    }

    #[test]
    fn remote_cseq_must_increase() {
        let mut d = uas();
        d.confirm();
        let err = d
            .receive_request(&in_dialog("INFO", 314158, ""))
            .unwrap_err();
        assert_eq!(
            err,
            DialogError::CSeqOutOfOrder {
                got: 314158,
                last: 314159
            }
        );
        assert_eq!(err.status(), 500);
        assert_eq!(
            d.receive_request(&in_dialog("INFO", 314159, ""))
                .map_err(|e| e.status()),
            Err(500)
        );
        // The ACK for the 2xx carries the INVITE's number and must pass.
        d.receive_request(&in_dialog("ACK", 314159, "")).unwrap();
        assert_eq!(d.remote_seq(), Some(314159));

        // Gaps are fine: requests may have been lost or CANCELled.
        d.receive_request(&in_dialog("INFO", 314170, "")).unwrap();
        assert_eq!(d.remote_seq(), Some(314170));
        assert!(d.receive_request(&in_dialog("INFO", 314160, "")).is_err());
        assert_eq!(d.remote_seq(), Some(314170));

        let stranger = msg(&in_dialog("INFO", 314171, "")
            .to_string()
            .replace("tag=a6c85cf", "tag=nope"));
        let err = d.receive_request(&stranger).unwrap_err();
        assert!(matches!(err, DialogError::Mismatch(_)));
        assert_eq!(err.status(), 481);
        assert_eq!(d.remote_seq(), Some(314170));
    }

    #[test]
    fn uac_side_first_remote_request_sets_remote_seq() {
        let mut d = uac();
        let bye = msg("BYE sip:pbx@192.0.2.10:5060 SIP/2.0\r\n\
            Via: SIP/2.0/UDP cube2214a.chicago.example.com;branch=z9hG4bKnashds10\r\n\
            To: PBX <sip:pbx@example.com>;tag=9fxced76sl\r\n\
            From: Carol <sip:carol@chicago.example.com>;tag=314159\r\n\
            Call-ID: 3848276298220188511@pbx.example.com\r\n\
            CSeq: 5 BYE\r\nContent-Length: 0\r\n\r\n");
        d.receive_request(&bye).unwrap();
        assert_eq!(d.remote_seq(), Some(5));
    }

    #[test]
    fn target_refresh_from_reinvite() {
        let mut d = uas();
        d.confirm();
        let info = in_dialog("INFO", 314160, "Contact: <sip:alice@198.51.100.9>\r\n");
        d.receive_request(&info).unwrap();
        assert_eq!(
            d.remote_target().to_string(),
            "sip:alice@pc33.atlanta.example.com",
            "INFO is not a target refresh"
        );
        let reinvite = in_dialog(
            "INVITE",
            314161,
            "Contact: <sip:alice@198.51.100.7:5070;transport=tcp>\r\n",
        );
        d.receive_request(&reinvite).unwrap();
        assert_eq!(
            d.remote_target().to_string(),
            "sip:alice@198.51.100.7:5070;transport=tcp"
        );
        let out = d.request(Method::Bye, &via(), 9).unwrap();
        assert_eq!(
            out.message.uri().map(Uri::to_string).as_deref(),
            Some("sip:alice@198.51.100.7:5070;transport=tcp")
        );
        // The 2xx to a re-INVITE carries our Contact but no Record-Route.
        let ok = d.response(&reinvite, 200, "OK").unwrap();
        assert_eq!(ok.contacts(), [contact()]);
        assert!(ok.header(&HeaderName::RecordRoute).is_none());
        assert_eq!(d.state(), State::Confirmed);
    }

    #[test]
    fn target_refresh_from_2xx_to_our_reinvite() {
        let mut d = uac();
        let reinvite = d.request(Method::Invite, &via(), 7).unwrap().message;
        let mut ok = Message::response_to(&reinvite, 200, "OK");
        ok.push_header(HeaderName::Contact, "<sip:carol@203.0.113.5>")
            .unwrap();
        d.receive_response(&reinvite, &ok).unwrap();
        assert_eq!(d.remote_target().to_string(), "sip:carol@203.0.113.5");
        // The route set of a confirmed dialog never changes.
        assert_eq!(
            uris(d.route_set()),
            ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
        );

        // A 2xx to a non-refresh request leaves the target alone.
        let info = d.request(Method::Info, &via(), 8).unwrap().message;
        let mut ok = Message::response_to(&info, 200, "OK");
        ok.push_header(HeaderName::Contact, "<sip:elsewhere@203.0.113.6>")
            .unwrap();
        d.receive_response(&info, &ok).unwrap();
        assert_eq!(d.remote_target().to_string(), "sip:carol@203.0.113.5");

        // Nor does a failure of the re-INVITE end the dialog.
        let reinvite = d.request(Method::Invite, &via(), 9).unwrap().message;
        d.receive_response(
            &reinvite,
            &Message::response_to(&reinvite, 491, "Request Pending"),
        )
        .unwrap();
        assert_eq!(d.state(), State::Confirmed);
    }

    #[test]
    fn early_dialog_is_confirmed_by_2xx_which_replaces_the_route_set() {
        let invite = msg(INVITE_OUT);
        let ringing = msg(&OK_IN
            .replace("200 OK", "180 Ringing")
            .replace(
                "Record-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>",
                "Record-Route: <sip:p1.example.com;lr>",
            )
            .replace("cube2214a", "early"));
        let mut d = Dialog::uac(&invite, &ringing).unwrap();
        assert_eq!(d.state(), State::Early);
        assert_eq!(uris(d.route_set()), ["sip:p1.example.com;lr"]);
        assert_eq!(
            d.remote_target().to_string(),
            "sip:carol@early.chicago.example.com"
        );

        // A 2xx from another fork is another dialog.
        let forked = msg(&OK_IN.replace("tag=314159", "tag=fork2"));
        assert!(matches!(
            d.receive_response(&invite, &forked),
            Err(DialogError::Mismatch(_))
        ));
        assert_eq!(d.state(), State::Early);

        d.receive_response(&invite, &msg(OK_IN)).unwrap();
        assert_eq!(d.state(), State::Confirmed);
        assert_eq!(
            uris(d.route_set()),
            ["sip:p1.example.com;lr", "sip:p2.example.com;lr"]
        );
        assert_eq!(
            d.remote_target().to_string(),
            "sip:carol@cube2214a.chicago.example.com"
        );
    }

    #[test]
    fn early_dialog_without_contact_and_its_failure() {
        let invite = msg(INVITE_OUT);
        let ringing = msg(&OK_IN
            .replace("200 OK", "180 Ringing")
            .replace("Contact: <sip:carol@cube2214a.chicago.example.com>\r\n", ""));
        let mut d = Dialog::uac(&invite, &ringing).unwrap();
        assert_eq!(
            d.remote_target().to_string(),
            "sip:carol@chicago.example.com"
        );
        let busy = msg(&ringing.to_string().replace("180 Ringing", "486 Busy Here"));
        d.receive_response(&invite, &busy).unwrap();
        assert_eq!(d.state(), State::Terminated);
        assert_eq!(
            d.request(Method::Bye, &via(), 1).err(),
            Some(DialogError::Terminated)
        );
        // A 2xx should name the remote target; one that does not is reached where the
        // INVITE went, so that it can be acknowledged and ended.
        let bare_ok =
            msg(&OK_IN.replace("Contact: <sip:carol@cube2214a.chicago.example.com>\r\n", ""));
        let d = Dialog::uac(&invite, &bare_ok).unwrap();
        assert_eq!(d.state(), State::Confirmed);
        assert_eq!(
            d.remote_target().to_string(),
            "sip:carol@chicago.example.com"
        );
    }

    #[test]
    fn termination_by_bye_response_and_481() {
        let mut d = uac();
        let bye = d.request(Method::Bye, &via(), 1).unwrap().message;
        d.receive_response(&bye, &Message::response_to(&bye, 200, "OK"))
            .unwrap();
        assert_eq!(d.state(), State::Terminated);

        let mut d = uac();
        let info = d.request(Method::Info, &via(), 1).unwrap().message;
        d.receive_response(
            &info,
            &Message::response_to(&info, 481, "Call/Transaction Does Not Exist"),
        )
        .unwrap();
        assert_eq!(d.state(), State::Terminated);

        let mut d = uas();
        d.terminate();
        assert_eq!(
            d.receive_request(&in_dialog("INFO", 314160, "")),
            Err(DialogError::Terminated)
        );
        d.confirm();
        assert_eq!(d.state(), State::Terminated);
    }

    #[test]
    fn dialog_ids_of_requests_and_responses() {
        let req = in_dialog("BYE", 1, "");
        assert_eq!(
            DialogId::for_request(&req),
            Ok(DialogId {
                call_id: "a84b4c76e66710@pc33.atlanta.example.com".into(),
                local_tag: "a6c85cf".into(),
                remote_tag: "1928301774".into(),
            })
        );
        assert_eq!(DialogId::for_request(&req).as_ref(), Ok(uas().id()));
        assert_eq!(
            DialogId::for_request(&msg(INVITE_IN)),
            Err(DialogError::NoToTag)
        );
        assert_eq!(
            DialogId::for_request(&msg(OK_IN)),
            Err(DialogError::NotARequest)
        );

        let rsp = msg(OK_IN);
        assert_eq!(
            DialogId::for_response(&rsp),
            Ok(DialogId {
                call_id: "3848276298220188511@pbx.example.com".into(),
                local_tag: "9fxced76sl".into(),
                remote_tag: "314159".into(),
            })
        );
        assert_eq!(DialogId::for_response(&rsp).as_ref(), Ok(uac().id()));
        assert_eq!(DialogId::for_response(&req), Err(DialogError::NotAResponse));

        // RFC 2543 peers: no From tag on a request, no To tag on a 2xx.
        let old = msg(&req.to_string().replace(";tag=1928301774", ""));
        assert_eq!(
            DialogId::for_request(&old).map(|i| i.remote_tag),
            Ok(String::new())
        );
        let old_ok = msg(&OK_IN.replace(";tag=314159", ""));
        assert_eq!(
            DialogId::for_response(&old_ok).map(|i| i.remote_tag),
            Ok(String::new())
        );
        let d = Dialog::uac(&msg(INVITE_OUT), &old_ok).unwrap();
        let mut d2 = d.clone();
        let bye = d2.request(Method::Bye, &via(), 1).unwrap().message;
        assert_eq!(bye.to().and_then(NameAddr::tag), None);
        let untagged_1xx = msg(&OK_IN
            .replace("200 OK", "183 Session Progress")
            .replace(";tag=314159", ""));
        assert_eq!(
            DialogId::for_response(&untagged_1xx),
            Err(DialogError::NoToTag)
        );
    }

    #[test]
    fn sips_request_uri_makes_the_dialog_secure() {
        let invite = msg(&INVITE_IN.replace(
            "INVITE sip:bob@pbx.biloxi.example.com",
            "INVITE sips:bob@pbx.biloxi.example.com",
        ));
        assert!(Dialog::uas(&invite, "t", contact()).unwrap().secure());
        assert!(!uas().secure());

        let out = msg(&INVITE_OUT.replace(
            "INVITE sip:carol@chicago.example.com",
            "INVITE sips:carol@chicago.example.com",
        ));
        assert!(Dialog::uac(&out, &msg(OK_IN)).unwrap().secure());
        assert!(!uac().secure());
    }
}

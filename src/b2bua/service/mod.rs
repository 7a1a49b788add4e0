//! The B2BUA's driver: runs [`Call`]s on the SIP endpoint's task, next to the transaction layer
//! it feeds.
//!
//! A new INVITE is authenticated here (407 with the calling phone's own credentials, digest as
//! for REGISTER; an ITSP's INVITE is recognised by its address instead). The route is decided
//! in [`route`]: on this task when the facts are cached, else off it (database reads), coming
//! back on the channel [`Calls::new`] returns for the endpoint to pass to [`Calls::start`].
//! From then on everything is in memory:
//! the driver turns each [`Action`] into transactions, CANCELs and stateless ACKs, keeps the
//! indexes that map transactions and dialogs back to calls, retransmits our 2xx to the caller
//! until its ACK arrives (RFC 6026 leaves that to the TU), and re-sends the ACK when a callee
//! retransmits its 2xx.
//!
//! A branch's redirect (a phone's call forwarding, [`Action::Redirect`]) is routed like a new
//! call's number, as the forwarding phone's user would dial it (so a forward reaches nothing
//! that user could not call), and what it resolves to rings in the same call.
//!
//! Requests to a leg go where that phone really is: the caller's source address and connection,
//! the binding's source and flow for a callee (phones behind NAT), not the Contact's host. A
//! phone on TCP or TLS whose connection broke during the call and that registered again over a
//! new one is reached through the new one ([`Reach::current_flow`]).
//!
//! Besides calls between phones and trunks it runs the PBX's own legs: the echo test (a call it
//! answers itself) and the two legs of a click-to-call (see `click_to_call`), joined through one
//! relay session; it publishes the call events (`events`); [`records`] writes each call's record.
//!
//! Owns: the call table and its indexes, digest state for INVITE. Must not touch: binding
//! storage (the registrar), call state rules (`call`), sockets (the endpoint's transports, which
//! it only asks whether a phone's connection is still open).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

mod records;
mod route;

use self::records::{call_outcome, call_record, record_writer, write_record};
use self::route::{
    caller_id, forwarded, resolve, uri_number, Caller, DirectoryCache, Hop, Parties, StreamPhone,
};
pub(in crate::b2bua) use self::route::{from_user, ring_user, Decision, Lookup, Party};
use super::call::{cancel_for, Action, Call, CallConfig, Key, Outcome, Target, Towards};
use super::events::{CallEvent, EventKind, Events};
use crate::config::Transport;
use crate::idmap::{self, IdMap};
use crate::media::relay::{Relay, Session, Side};
use crate::media::sdp;
use crate::registrar;
use crate::routing::DialplanFile;
use crate::sip::auth::{Algorithm, DigestServer, Failure, Verdict};
use crate::sip::dialog::{DialogId, DialogKey, DialogRef, OutgoingRequest};
use crate::sip::header::{Credentials, HeaderName, NameAddr, Via};
use crate::sip::message::{self, Message, Method};
use crate::sip::transaction::{self, ClientTxId, ServerTxId, TransactionLayer, TxId};
use crate::sip::transport::Peer;
use crate::sip::uri::{Host, Uri};
use crate::store::{now_ms, CallDirection, NewCallRecord, PartyOutcome, Store};
use crate::trunks::Trunks;

/// RFC 3261 timer values for our own 2xx retransmissions to the caller (§13.3.1.4).
const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);
/// A finished call is kept this long (T4, the longest a message stays in the network): every
/// branch is resolved by then (`Call::is_finished`), and retransmissions — a BYE, an INVITE
/// after our 2xx, a 487 — are absorbed by the transaction layer, which keeps its own state for
/// Timer J/K and RFC 6026's Accepted state. What still finds the call are responses in flight
/// (the 200 to our BYE) and 2xx responses sent again; once nothing is in flight any more the
/// call keeps only its ACKs for the rest of the time ([`Settled`]). Kept whole for 64*T1
/// instead, a finished call held ~30 KiB for 32 s: at 1,000 calls/s, a gigabyte, and page
/// faults for all of it were a fifth of the SIP core's CPU.
const LINGER: Duration = Duration::from_secs(5);
/// Routes being resolved at once; past this a new call gets 503.
const ROUTE_QUEUE: usize = 1024;
/// Call records waiting for the writer.
const RECORD_QUEUE: usize = 16384;
/// The most records one commit carries.
const RECORD_BATCH: usize = 512;
/// How long the record writer waits after a partial batch for more records to come. Each
/// commit rewrites the last, partly filled page of each of the records' nine B-trees (the WAL
/// takes whole pages), so fewer, larger commits cost less per record: at 3,500 calls/s, 150 ms
/// fills a batch, and SQLite's CPU per call fell from 24–25 to 19–20 µs against 50 ms. A
/// record shows in the history at most this long after its call ended.
const RECORD_LINGER: Duration = Duration::from_millis(150);

/// What the driver needs from the configuration.
#[derive(Debug, Clone)]
pub struct CallsConfig {
    pub realm: String,
    pub algorithms: Vec<Algorithm>,
    pub no_answer: Duration,
    pub no_answer_status: u16,
    /// An answered call from whose parties no RTP or RTCP has come for this long is hung up
    /// (the other side vanished without a BYE); `None` never.
    pub media_timeout: Option<Duration>,
    /// What click-to-call plays to the user while the target rings or when it fails.
    pub tones: crate::media::tone::Tones,
    /// Played instead of the congestion tone when a click-to-call's target is unreachable.
    pub unreachable_prompt: Option<crate::media::tone::Prompt>,
}

/// Where routes come from: the directory (store), the registrar's bindings, the dialplan and
/// the trunks.
pub struct Routing {
    pub store: Store,
    pub registrar: registrar::service::Handle,
    pub dialplan: Arc<DialplanFile>,
    pub trunks: Arc<Trunks>,
    /// The SIP transports, to tell a phone's closed connection (none without SIP sockets:
    /// then connections count as open).
    pub transports: Option<Arc<crate::sip::transport::Transports>>,
}

/// Work for the endpoint's task from elsewhere: a route resolved off the task, or a
/// click-to-call from the API.
#[derive(Debug)]
// Routes are the common case by far: boxing them would cost an allocation per call to save
// channel slots that hold a few hundred bytes each.
#[allow(clippy::large_enum_variant)]
pub enum Routed {
    Route(RouteDone),
    ClickToCall(Box<super::click_to_call::Start>),
    HangUp(String),
    Redirect(Redirected),
}

/// Where a branch's redirect leads, resolved off the endpoint's task.
#[derive(Debug)]
pub struct Redirected {
    call: u64,
    branch: usize,
    decision: Decision,
}

/// A route resolved off the endpoint's task, to start a call with.
#[derive(Debug)]
pub struct RouteDone {
    tx: ServerTxId,
    invite: Message,
    caller: Peer,
    /// The caller is a trunk reached without an outbound proxy (see [`Hop::follow_dialog`]).
    caller_follows_dialog: bool,
    /// The caller is a phone on a stream (see [`Hop::stream_phone`]).
    stream_caller: Option<StreamPhone>,
    decision: Decision,
}

#[derive(Debug, Clone, Copy)]
enum Purpose {
    Branch(usize),
    Cancel,
    Request(Key),
}

#[derive(Debug)]
struct Retransmit {
    msg: Message,
    interval: Duration,
    next: Instant,
    until: Instant,
}

impl Retransmit {
    /// Over a reliable transport nothing is sent again (the transport delivers), but the ACK
    /// is still awaited for 64·T1 (§13.3.1.4), or a caller that never sends it would keep the
    /// call up for ever.
    fn new(msg: Message, now: Instant, reliable: bool) -> Retransmit {
        let (interval, until) = (T1, now + 64 * T1);
        Retransmit {
            msg,
            interval,
            next: if reliable { until } else { now + interval },
            until,
        }
    }
}

/// A 2xx we relayed to a re-INVITE, sent again until its ACK comes (RFC 3261 §13.3.1.4: the
/// UAS core retransmits a 2xx, not the transaction). One at a time: a dialog has at most one
/// INVITE pending (§14.1).
#[derive(Debug)]
struct ReinviteOk {
    tx: ServerTxId,
    leg: super::call::Leg,
    seq: u32,
    retransmit: Retransmit,
}

struct Entry {
    call: Call,
    parties: Parties,
    /// Wall-clock start, for the record (the call itself only knows `Instant`s).
    started_ms: i64,
    /// The caller's INVITE transaction; none for a click-to-call leg (our own caller).
    invite_tx: Option<ServerTxId>,
    caller: Peer,
    /// In-dialog requests to the caller follow its dialog (see [`Hop::follow_dialog`]).
    caller_follows_dialog: bool,
    /// The caller is a phone on a stream (see [`Hop::stream_phone`]).
    stream_caller: Option<StreamPhone>,
    /// The id the API and the events know the call by.
    api_id: Arc<str>,
    /// Set on the two legs of a click-to-call.
    c2c: Option<C2cLeg>,
    /// `answered` has been announced.
    announced: bool,
    branches: Vec<BranchIo>,
    /// In-dialog requests received (and from which leg), waiting for the call's answer.
    waiting: HashMap<Key, (ServerTxId, super::call::Leg)>,
    /// The call's media through our relay; dropped (ports freed) when the call ends. The two
    /// legs of a click-to-call share one session.
    media: Option<Arc<Session>>,
    /// The relay converts between the G.711 laws: (the caller's, the callee's).
    transcode: Option<(u8, u8)>,
    next_key: Key,
    ok_retransmit: Option<Retransmit>,
    reinvite_ok: Option<ReinviteOk>,
    /// The last ACK sent to the caller for a 2xx (to a re-INVITE the callee sent): sent again
    /// when that 2xx is (the callee's leg keeps its ACKs in its branch).
    caller_ack: Option<(Message, Peer)>,
    linger_until: Option<Instant>,
    /// Timer-heap entries already pushed for this call (the heap keeps stale ones; these keep
    /// it from filling with copies of the same deadline).
    armed_deadline: Option<Instant>,
    armed_retransmit: Option<Instant>,
    /// When to look at the media's idle time next (answered calls with media).
    media_check: Option<Instant>,
    /// How many of the call's dialog ids are in `Calls::dialogs` already.
    indexed_dialogs: usize,
    /// Users a redirect (call forwarding) rang besides the callee: the call is in their
    /// history too.
    forwarded: Vec<Party>,
    /// The phone that took a leg's place (RFC 3891), until its leg is switched over.
    replacement: Option<Box<Replacement>>,
}

/// An INVITE with `Replaces` that a call took ([`Call::replace`]).
struct Replacement {
    /// Where the new phone is: its leg's requests go there from [`Action::LegReplaced`] on.
    peer: Peer,
    stream_phone: Option<StreamPhone>,
    /// Its INVITE, when it replaced the caller: the ACK of our 2xx is told from a stale
    /// challenge's by this CSeq, no longer by the first caller's.
    caller_invite: Option<Message>,
}

/// One leg of a click-to-call (see `click_to_call`).
struct C2cLeg {
    id: String,
    /// The relay side this leg's phones talk to: `Caller` for leg A (the user's phones),
    /// `Callee` for leg B (the target).
    side: Side,
    /// The other leg's call: B for A once dialled, A for B.
    other: Option<u64>,
    /// Leg A: the target's route, until A answers.
    target: Option<Box<Decision>>,
    /// The G.711 payload type this leg's phone answered with.
    pt: u8,
    /// Leg A: hang up then (after a busy or congestion tone for a target that failed).
    hangup_at: Option<Instant>,
    /// This leg has ended.
    over: bool,
}

/// What one call's actions mean for the other leg of a click-to-call; carried out once the
/// first call is no longer borrowed.
enum Linked {
    /// Leg A answered: dial the target.
    DialTarget(u64),
    /// Leg B answered: join the two.
    Bridge { a: u64, b: u64 },
    /// This leg ended: end the other one too.
    End(u64),
    /// Leg B ended unanswered: tell leg A with a tone, then hang up.
    TargetFailed { a: u64, outcome: Outcome },
}

/// How long a tone tells a click-to-call's user that the target failed before we hang up.
const FAILURE_TONE: Duration = Duration::from_secs(4);

struct BranchIo {
    peer: Peer,
    /// In-dialog requests to this branch follow its dialog (see [`Hop::follow_dialog`]).
    follows_dialog: bool,
    /// It goes to a trunk.
    trunk: bool,
    /// A phone on a stream (see [`Hop::stream_phone`]).
    stream_phone: Option<StreamPhone>,
    invite: Option<Message>,
    tx: Option<ClientTxId>,
    /// A provisional answer came: a CANCEL may go now (§9.1).
    provisional: bool,
    cancel_pending: Option<Option<&'static str>>,
    /// Our ACKs of 2xx responses on this branch (the call's, a re-INVITE's, a downstream
    /// fork's we hung up), the latest few: each is sent again when its 2xx is (same To tag
    /// and CSeq), which means it got lost.
    acks: VecDeque<(Message, Peer)>,
}

/// How many ACKs a branch keeps for 2xx retransmissions.
const KEPT_ACKS: usize = 4;

/// What a settled call keeps for the rest of its [`LINGER`] (see [`Call::is_settled`]): the
/// ACKs of the 2xx responses that may still come again, nothing else. A finished call used to
/// keep its whole entry (its messages, dialogs and parties: dozens of blocks) those 5 s, and
/// by then all of it had left the CPU's caches: dropping it cost 5–7 % of the SIP core's time
/// under load (bench/RESULTS.md, twenty-second session). The entry is dropped when the call
/// settles instead, still warm from the request that ended it.
struct Settled {
    acks: Vec<KeptAck>,
    until: Instant,
}

/// An ACK of a 2xx in its wire form, with where it went.
struct KeptAck {
    /// [`ack_key`] of the ACK: a 2xx it answers has the same.
    key: u64,
    bytes: Arc<[u8]>,
    to: Peer,
    /// A phone on a stream, and the ACK's request URI: what finds the phone again when it
    /// moved to a new connection ([`Reach::again`]).
    phone: Option<(StreamPhone, Option<Uri>)>,
}

impl KeptAck {
    fn new(ack: Message, to: Peer, phone: Option<StreamPhone>) -> KeptAck {
        KeptAck {
            key: ack_key(&ack),
            bytes: ack.to_shared_bytes(),
            to,
            phone: phone.map(|p| (p, ack.uri().cloned())),
        }
    }
}

/// What an ACK of a 2xx shares with the 2xx (see [`acknowledges`]), as one number: Call-ID,
/// To tag and CSeq number. Two ACKs of one call with the same key, one in 2^64, would only
/// mean the wrong one of the two is sent again.
fn ack_key(m: &Message) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    m.call_id().hash(&mut h);
    m.to().and_then(|t| t.tag()).hash(&mut h);
    m.cseq().map(|c| c.seq).hash(&mut h);
    h.finish()
}

/// The ACK among `acks` that answers `response` (a 2xx): same dialog, same CSeq number; with
/// where it went.
fn ack_of<'a>(
    acks: impl IntoIterator<Item = &'a (Message, Peer)>,
    response: &Message,
) -> Option<&'a (Message, Peer)> {
    acks.into_iter().find(|(a, _)| acknowledges(a, response))
}

/// Whether `ack` is the ACK of `response` (a 2xx): same dialog, same CSeq number.
fn acknowledges(ack: &Message, response: &Message) -> bool {
    fn tag(m: &Message) -> Option<&str> {
        m.to().and_then(|t| t.tag())
    }
    let seq = |m: &Message| m.cseq().map(|c| c.seq);
    ack.call_id() == response.call_id() && seq(ack) == seq(response) && tag(ack) == tag(response)
}

/// The calls in progress. Lives on the endpoint's task.
pub struct Calls {
    lookup: Arc<Lookup>,
    /// See [`Routing::transports`].
    transports: Option<Arc<crate::sip::transport::Transports>>,
    digest: DigestServer,
    realm: String,
    no_answer: Duration,
    no_answer_status: u16,
    media_timeout: Option<Duration>,
    routed_tx: mpsc::Sender<Routed>,
    /// Boxed: an entry is about 4 KiB, and a table of them that grows with the load would
    /// move every entry on each resize.
    calls: IdMap<u64, Box<Entry>>,
    /// Calls that ended and wait for nothing, reduced to what their last seconds need.
    settled: IdMap<u64, Settled>,
    next_call: u64,
    invites: IdMap<ServerTxId, u64>,
    clients: IdMap<ClientTxId, (u64, Purpose)>,
    dialogs: HashMap<DialogId, u64>,
    timers: BinaryHeap<Reverse<(Instant, u64)>>,
    random: u64,
    /// Our Contact and Via for each transport (from its first listening address), made once.
    local: HashMap<Transport, Local>,
    /// Records of ended calls, for the writer task.
    records: mpsc::Sender<NewCallRecord>,
    /// The RTP relay every call's media goes through; `None` passes descriptions unchanged.
    relay: Option<Relay>,
    writer: Option<tokio::task::JoinHandle<()>>,
    /// INVITEs the caller cancelled while their route was being resolved.
    cancelled: std::collections::HashSet<ServerTxId>,
    /// Live call events for the API.
    events: Arc<super::events::Events>,
    /// Click-to-calls: leg A's call by id, and the state the API shows.
    c2c_calls: HashMap<String, u64>,
    c2c_status: super::click_to_call::Status,
    c2c_handle: super::click_to_call::ClickToCall,
    tones: crate::media::tone::Tones,
    unreachable_prompt: Option<crate::media::tone::Prompt>,
    /// The runtime the server was started on. `Calls` runs on the SIP core's thread; lookups
    /// that wait on the store go to the main runtime so that thread only does SIP.
    rt: tokio::runtime::Handle,
}

impl Calls {
    pub fn new(
        config: CallsConfig,
        routing: Routing,
        bound: &[crate::config::SipListen],
        relay: Option<Relay>,
        seed: u64,
    ) -> (Calls, mpsc::Receiver<Routed>) {
        let Routing {
            store,
            registrar,
            dialplan,
            trunks,
            transports,
        } = routing;
        let mut local = HashMap::new();
        for l in bound {
            local.entry(l.transport).or_insert(l.addr);
        }
        let secret: [u8; 32] = rand::random();
        let (routed_tx, routed_rx) = mpsc::channel(ROUTE_QUEUE);
        let (records, records_rx) = mpsc::channel(RECORD_QUEUE);
        let rt = tokio::runtime::Handle::current();
        let writer = rt.spawn(record_writer(store.clone(), records_rx));
        let lookup = Arc::new(Lookup {
            store,
            registrar,
            dialplan,
            trunks,
            realm: config.realm.clone(),
            cache: DirectoryCache::default(),
        });
        let (c2c_handle, c2c_status) =
            super::click_to_call::ClickToCall::new(lookup.clone(), routed_tx.clone());
        let calls = Calls {
            lookup,
            transports,
            events: Arc::new(super::events::Events::new()),
            c2c_calls: HashMap::new(),
            c2c_status,
            c2c_handle,
            tones: config.tones.clone(),
            unreachable_prompt: config.unreachable_prompt.clone(),
            digest: DigestServer::new(&secret).with_algorithms(&config.algorithms),
            realm: config.realm,
            no_answer: config.no_answer,
            no_answer_status: config.no_answer_status,
            media_timeout: config.media_timeout,
            routed_tx,
            calls: idmap::new(),
            settled: idmap::new(),
            next_call: 1,
            invites: idmap::new(),
            clients: idmap::new(),
            dialogs: HashMap::new(),
            timers: BinaryHeap::new(),
            random: seed,
            local: local
                .into_iter()
                .filter_map(|(t, addr)| Some((t, local_for(t, addr)?)))
                .collect(),
            records,
            relay,
            writer: Some(writer),
            cancelled: Default::default(),
            rt,
        };
        (calls, routed_rx)
    }

    /// The live call events (for the API's stream).
    pub fn events(&self) -> Arc<super::events::Events> {
        self.events.clone()
    }

    /// The API's handle for click-to-call.
    pub fn click_to_call(&self) -> super::click_to_call::ClickToCall {
        self.c2c_handle.clone()
    }

    /// The call-record writer, for the server to wait on at shutdown: it ends once the calls
    /// are dropped (with the endpoint's task) and every queued record is written.
    pub fn take_record_writer(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        self.writer.take()
    }

    /// Number of calls in progress (ringing or answered).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    /// Takes a request the endpoint does not answer itself. Returns it when it is not ours
    /// (an out-of-dialog request other than INVITE).
    pub fn on_request(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ServerTxId,
        msg: Message,
        from: Peer,
        now: Instant,
    ) -> Option<Message> {
        let in_dialog = msg.to().is_some_and(|t| t.tag().is_some());
        if in_dialog {
            self.in_dialog(layer, tx, &msg, now);
            return None;
        }
        if msg.method() != Some(&Method::Invite) {
            return Some(msg);
        }
        if let Some(trunk) = self.lookup.trunks.by_source(from.addr.ip()).cloned() {
            // An ITSP is trusted by its address (it cannot answer our challenges); what it
            // may reach is limited to its DIDs and the dialplan's routes for trunk callers.
            self.route(layer, tx, msg, from, now, Caller::Trunk(trunk));
            return None;
        }
        if self.lookup.registrar.is_banned(from.addr.ip()) {
            // A banned source gets no answer at all, as for REGISTER (not even 100 Trying).
            tracing::debug!(ip = %from.addr.ip(), "INVITE from a banned address dropped");
            layer.discard(tx);
            return None;
        }
        self.authenticate(layer, tx, msg, from, now);
        None
    }

    /// The ACK of a 2xx (no transaction).
    pub fn on_ack(&mut self, layer: &mut TransactionLayer, msg: &Message, now: Instant) {
        let Ok(id) = DialogRef::of_request(msg) else {
            return;
        };
        let Some(&call_id) = self.dialogs.get(&id as &dyn DialogKey) else {
            return;
        };
        let Some(e) = self.calls.get_mut(&call_id) else {
            return;
        };
        let Some(leg) = e.call.leg_of(id) else {
            return;
        };
        if leg == super::call::Leg::Caller {
            // The ACK of a challenge sent statelessly (no transaction absorbed it) carries this
            // dialog's identifiers too, the To tag being derived from the request, but the
            // challenged INVITE's lower CSeq. It ends nothing.
            let seq = |m: &Message| m.cseq().map(|c| c.seq);
            let invite = e
                .replacement
                .as_ref()
                .and_then(|r| r.caller_invite.as_ref())
                .unwrap_or(e.call.caller_invite());
            if seq(msg) < seq(invite) {
                return;
            }
            e.ok_retransmit = None;
        }
        if e.reinvite_ok
            .as_ref()
            .is_some_and(|r| r.leg == leg && msg.cseq().map(|c| c.seq) == Some(r.seq))
        {
            e.reinvite_ok = None;
        }
        e.call.on_request(leg, 0, msg, now);
        self.apply(call_id, layer, now);
    }

    /// The caller CANCELled its INVITE (`invite`): the CANCEL (`tx`) gets its 200 here.
    pub fn on_cancel(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ServerTxId,
        cancel: &Message,
        invite: ServerTxId,
        now: Instant,
    ) {
        // The CANCEL shares its INVITE's Call-ID and From tag, so `reply` gives its 200 the To
        // tag the INVITE's final response carries (§9.2: they should be the same).
        let ok = self.reply(cancel, 200);
        let _ = layer.send_response(tx, ok, now);
        if let Some(&id) = self.invites.get(&invite) {
            if let Some(e) = self.calls.get_mut(&id) {
                e.call.on_caller_cancel(now);
            }
            self.apply(id, layer, now);
        } else if cancel.to().and_then(|t| t.tag()).is_some() {
            // A CANCEL of an in-dialog request (it carries the dialog's To tag): a re-INVITE
            // we relayed, cancelled on the other leg too.
            let call = DialogRef::of_request(cancel)
                .ok()
                .and_then(|d| self.dialogs.get(&d as &dyn DialogKey).copied());
            let Some(id) = call else {
                return;
            };
            let Some(e) = self.calls.get_mut(&id) else {
                return;
            };
            let key = e
                .waiting
                .iter()
                .find(|(_, (server_tx, _))| *server_tx == invite)
                .map(|(key, _)| *key);
            if let Some(key) = key {
                e.call.on_cancel(key);
                self.apply(id, layer, now);
            }
        } else if let Some((id, key)) = self.replacing(cancel, invite) {
            // An INVITE with Replaces (see `replace`): its re-INVITE to the other party is
            // cancelled, and the call ends with it (the replaced phone is gone already).
            if let Some(e) = self.calls.get_mut(&id) {
                e.call.on_cancel(key);
            }
            self.apply(id, layer, now);
        } else {
            // Still being authenticated or routed: nobody rings yet. The INVITE gets its 487
            // when the route comes back (only then do we hold it to answer from).
            self.cancelled.insert(invite);
        }
    }

    /// The call and key of `invite` when it is an INVITE with Replaces a call took: its dialog
    /// is the one `replace` made, whose tag ours derives from the Call-ID and From tag the
    /// CANCEL shares.
    fn replacing(&self, cancel: &Message, invite: ServerTxId) -> Option<(u64, Key)> {
        let tag = self.caller_tag(cancel);
        let dialog = DialogRef {
            call_id: cancel.call_id()?,
            local_tag: &tag,
            remote_tag: cancel.from()?.tag()?,
        };
        let id = *self.dialogs.get(&dialog as &dyn DialogKey)?;
        let e = self.calls.get(&id)?;
        let key = e
            .waiting
            .iter()
            .find(|(_, (server_tx, _))| *server_tx == invite)
            .map(|(key, _)| *key)?;
        Some((id, key))
    }

    /// A response on one of our client transactions.
    pub fn on_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ClientTxId,
        msg: &Message,
        now: Instant,
    ) {
        let Some(&(id, purpose)) = self.clients.get(&tx) else {
            return;
        };
        let reach = Reach {
            registrar: &self.lookup.registrar,
            transports: self.transports.as_deref(),
        };
        let Some(e) = self.calls.get_mut(&id) else {
            if let Some(s) = self.settled.get(&id) {
                // A 2xx again (the callee's, or a re-INVITE's): our ACK got lost.
                // (A 200 to a CANCEL shares the INVITE's CSeq number, and perhaps its tag.)
                let invite_2xx = msg.status().is_some_and(|s| (200..300).contains(&s))
                    && msg.cseq().is_some_and(|c| c.method == Method::Invite);
                let key = ack_key(msg);
                if let Some(k) = s.acks.iter().find(|k| invite_2xx && k.key == key) {
                    let to = match &k.phone {
                        Some((phone, uri)) => reach.current_flow(phone, k.to, uri.as_ref()),
                        None => k.to,
                    };
                    layer.send_stateless_bytes(k.bytes.clone(), tx_peer(&to));
                }
            }
            return;
        };
        match purpose {
            Purpose::Branch(b) => {
                let status = msg.status().unwrap_or(0);
                if let Some(io) = e.branches.get_mut(b) {
                    // Any provisional, a 100 Trying too (§9.1): a callee that only ever
                    // sends 100 (a trunk that is still routing) can be cancelled all the same.
                    if (100..200).contains(&status) {
                        io.provisional = true;
                    }
                    if (200..300).contains(&status) {
                        if let Some((ack, to)) = ack_of(&io.acks, msg) {
                            // A retransmitted 2xx: our ACK got lost.
                            let to = reach.again(io.stream_phone.as_ref(), ack, *to);
                            layer.send_stateless(ack, tx_peer(&to));
                            return;
                        }
                    }
                }
                e.call.on_invite_response(b, msg, now);
                // A CANCEL that had to wait for the first provisional can go now.
                if let Some(io) = e.branches.get_mut(b) {
                    if io.provisional && status < 200 {
                        if let Some(reason) = io.cancel_pending.take() {
                            follow_branch(io, &reach);
                            send_cancel(&mut self.clients, id, b, io, reason, layer, now);
                        }
                    }
                }
            }
            Purpose::Request(key) => {
                if let Some((ack, peer)) = ack_for_retransmitted_2xx(e, msg, &reach) {
                    // A re-INVITE's 2xx again: the ACK we relayed got lost.
                    layer.send_stateless(&ack, tx_peer(&peer));
                    return;
                }
                e.call.on_response(key, msg, now)
            }
            Purpose::Cancel => return,
        }
        self.apply(id, layer, now);
    }

    /// A client transaction timed out or could not be sent.
    /// A client transaction of ours ended without an answer: timed out, or `unreachable` (its
    /// request could not be sent).
    pub fn on_client_failure(
        &mut self,
        layer: &mut TransactionLayer,
        tx: TxId,
        unreachable: bool,
        now: Instant,
    ) {
        let TxId::Client(tx) = tx else {
            return;
        };
        let Some((id, purpose)) = self.clients.remove(&tx) else {
            return;
        };
        let Some(e) = self.calls.get_mut(&id) else {
            return;
        };
        match purpose {
            Purpose::Branch(b) => {
                // A trunk that did not answer our INVITE: its next address, if it has one,
                // takes the calls after this one.
                if let Some(io) = e.branches.get(b).filter(|io| io.trunk) {
                    self.lookup.trunks.next_hop_failed(io.peer.addr);
                }
                if unreachable {
                    e.call.on_invite_unreachable(b, now)
                } else {
                    e.call.on_invite_timeout(b, now)
                }
            }
            Purpose::Request(key) => e.call.on_request_timeout(key, now),
            Purpose::Cancel => return,
        }
        self.apply(id, layer, now);
    }

    /// A transaction ended: forget it.
    pub fn on_terminated(&mut self, tx: TxId) {
        match tx {
            TxId::Client(c) => {
                self.clients.remove(&c);
            }
            TxId::Server(s) => {
                self.invites.remove(&s);
                self.cancelled.remove(&s);
            }
        }
    }

    /// Starts (or refuses) a call whose route has been resolved.
    pub fn start(&mut self, layer: &mut TransactionLayer, routed: Routed, now: Instant) {
        let RouteDone {
            tx,
            invite,
            caller,
            caller_follows_dialog,
            stream_caller,
            decision,
        } = match routed {
            Routed::Route(r) => r,
            Routed::ClickToCall(start) => {
                self.start_click_to_call(layer, *start, now);
                return;
            }
            Routed::HangUp(id) => {
                self.hang_up_click_to_call(layer, &id, now);
                return;
            }
            Routed::Redirect(r) => {
                self.redirected(layer, r, now);
                return;
            }
        };
        if self.cancelled.remove(&tx) {
            let rsp = self.reply(&invite, 487);
            let _ = layer.send_response(tx, rsp, now);
            return;
        }
        let (caller_id, targets, parties) = match decision {
            Decision::Reject(status) => {
                let rsp = self.reply(&invite, status);
                let _ = layer.send_response(tx, rsp, now);
                return;
            }
            Decision::Ring {
                caller_id,
                targets,
                parties,
            } => (*caller_id, targets, *parties),
            Decision::Echo { parties } => {
                self.start_echo(layer, tx, invite, caller, *parties, now);
                return;
            }
        };
        let Some(local) = self.local.get(&caller.transport).cloned() else {
            tracing::warn!(transport = %caller.transport, "b2bua: no local address for the caller's transport");
            let rsp = self.reply(&invite, 500);
            let _ = layer.send_response(tx, rsp, now);
            return;
        };
        let config = self.call_config(local, caller_id);
        let media = match &self.relay {
            None => None,
            Some(relay) => match relay.session() {
                Ok(m) => Some(Arc::new(m)),
                Err(e) => {
                    tracing::warn!(error = %e, "b2bua: no media ports for a call");
                    let mut rsp = self.reply(&invite, 503);
                    let _ = rsp.push_header(HeaderName::RetryAfter, "5");
                    let _ = layer.send_response(tx, rsp, now);
                    return;
                }
            },
        };
        let (targets, peers): (Vec<Target>, Vec<Hop>) = self.with_contacts(targets);
        let seed = self.next_random();
        let tag = self.caller_tag(&invite);
        let call = match Call::new(invite.clone(), &tag, targets, config, seed, now) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "b2bua: INVITE refused");
                let rsp = self.reply(&invite, 400);
                let _ = layer.send_response(tx, rsp, now);
                return;
            }
        };
        let branches = peers.into_iter().map(BranchIo::new).collect();
        let api_id = crate::sip::lex::hex16(self.next_random());
        let id = self.add(Entry {
            invite_tx: Some(tx),
            caller_follows_dialog,
            stream_caller,
            api_id: api_id.into(),
            branches,
            ..Entry::new(call, parties, caller, media)
        });
        self.invites.insert(tx, id);
        tracing::debug!(call = id, "b2bua: call started");
        if let Some(e) = self.calls.get(&id) {
            emit(&self.events, e, EventKind::Ringing, None);
        }
        self.apply(id, layer, now);
    }

    /// Timers: no-answer, 2xx retransmission, forgetting finished calls.
    pub fn handle_timeout(&mut self, layer: &mut TransactionLayer, now: Instant) {
        while let Some(Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(e) = self.calls.get_mut(&id) else {
                if self.settled.get(&id).is_some_and(|s| s.until <= now) {
                    self.settled.remove(&id);
                }
                continue;
            };
            if e.linger_until.is_some_and(|t| t <= now) {
                self.forget(id);
                continue;
            }
            if let Some(r) = &mut e.ok_retransmit {
                if r.next <= now {
                    if now >= r.until {
                        // No ACK for our 200 within 64·T1: the caller is gone (§13.3.1.4).
                        e.ok_retransmit = None;
                        e.call.on_caller_gone(now);
                    } else {
                        layer.send_stateless(&r.msg, tx_peer(&e.caller));
                        r.interval = (r.interval * 2).min(T2);
                        r.next = now + r.interval;
                    }
                }
            }
            if let Some(r) = &mut e.reinvite_ok {
                let rt = &mut r.retransmit;
                if rt.next <= now {
                    if now >= rt.until {
                        // No ACK within 64·T1: the session is over (§13.3.1.4).
                        e.reinvite_ok = None;
                        e.call.hang_up_both("timeout", now);
                    } else {
                        // The server transaction is in Accepted (RFC 6026) until Timer L,
                        // which is as long as this goes on.
                        let _ = layer.send_response(r.tx, rt.msg.clone(), now);
                        rt.interval = (rt.interval * 2).min(T2);
                        rt.next = now + rt.interval;
                    }
                }
            }
            if let Some(c) = e.c2c.as_mut() {
                if c.hangup_at.is_some_and(|t| t <= now) {
                    c.hangup_at = None;
                    e.call.hang_up_both("target_failed", now);
                }
            }
            if let (Some(at), Some(limit)) = (e.media_check, self.media_timeout) {
                if at <= now {
                    e.media_check = None;
                    // On hold one side or both send nothing by design (RFC 3264 §5.1,
                    // `a=inactive`): silence then says nothing about the parties.
                    let idle = e
                        .media
                        .as_ref()
                        .filter(|m| !m.is_held())
                        .map_or(Duration::ZERO, |m| m.idle());
                    if idle >= limit {
                        tracing::info!(
                            call = id,
                            idle_ms = idle.as_millis() as u64,
                            "no media from either party; hanging up"
                        );
                        e.call.hang_up_both("media_timeout", now);
                    } else {
                        let next = now + (limit - idle);
                        e.media_check = Some(next);
                        self.timers.push(Reverse((next, id)));
                    }
                }
            }
            e.call.handle_timeout(now);
            self.apply(id, layer, now);
        }
    }

    // --- internals ----------------------------------------------------------------------------

    /// The configuration of a call whose legs use our address `local`, presenting `caller_id`
    /// to the parties it rings.
    fn call_config(&self, local: Local, caller_id: NameAddr) -> CallConfig {
        CallConfig {
            no_answer: self.no_answer,
            no_answer_status: self.no_answer_status,
            contact: local.contact,
            via: local.via,
            caller_id,
        }
    }

    /// Files a new call under a fresh id.
    fn add(&mut self, entry: Entry) -> u64 {
        let id = self.next_call;
        self.next_call += 1;
        self.calls.insert(id, Box::new(entry));
        id
    }

    fn next_random(&mut self) -> u64 {
        super::call::splitmix(&mut self.random)
    }

    /// Our To tag for a caller's INVITE: derived from its Call-ID and From tag, so the 407,
    /// any refusal and the call's own dialog all carry the same one. Clients that keep the tag
    /// of the first response they see (SIPp does) then still address the dialog right.
    fn caller_tag(&self, req: &Message) -> String {
        let call_id = req.call_id().unwrap_or_default();
        let from_tag = req.from().and_then(|f| f.tag()).unwrap_or_default();
        self.digest
            .token("to-tag", [call_id, "\0", from_tag].concat().as_bytes())
    }

    fn reply(&mut self, req: &Message, status: u16) -> Message {
        let mut rsp = Message::response_to(req, status, message::reason_phrase(status));
        if rsp.to().and_then(|t| t.tag()).is_none() {
            let tag = self.caller_tag(req);
            let _ = rsp.set_to_tag(&tag);
        }
        let _ = rsp.push_header(HeaderName::Server, crate::sip::endpoint::SERVER);
        rsp
    }

    fn in_dialog(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ServerTxId,
        msg: &Message,
        now: Instant,
    ) {
        let call = DialogRef::of_request(msg)
            .ok()
            .and_then(|id| self.dialogs.get(&id as &dyn DialogKey).map(|c| (id, *c)));
        let Some((dialog, id)) = call else {
            // §12.2.2: a request for a dialog we do not know.
            let rsp = self.reply(msg, 481);
            let _ = layer.send_response(tx, rsp, now);
            return;
        };
        let Some(e) = self.calls.get_mut(&id) else {
            return;
        };
        let Some(leg) = e.call.leg_of(dialog) else {
            // The dialog of a phone another one replaced (RFC 3891): it is over.
            let rsp = self.reply(msg, 481);
            let _ = layer.send_response(tx, rsp, now);
            return;
        };
        let key = e.next_key;
        e.next_key += 1;
        e.waiting.insert(key, (tx, leg));
        e.call.on_request(leg, key, msg, now);
        self.apply(id, layer, now);
    }

    /// Checks a new INVITE's credentials (407 when missing or wrong) and sends an
    /// authenticated one off to be routed. Decided from memory, a name not in the credentials
    /// cache as an unknown one.
    fn authenticate(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ServerTxId,
        msg: Message,
        from: Peer,
        now: Instant,
    ) {
        let now_ms = now_ms().max(0) as u64;
        let creds = digest_credentials(&msg);
        let Some(creds) = creds else {
            // Unauthenticated: challenged as a stateless UAS would (RFC 3261 §8.2.7), keeping
            // no transaction for it (the To tag is derived from the request; the ACK is
            // ignored in `on_ack`).
            let rsp = self.challenge(&msg, false, now_ms);
            let _ = layer.respond_statelessly(tx, rsp, now);
            return;
        };
        let username = creds.username().unwrap_or_default().to_owned();
        let phone = self.lookup.store.cached_phone_credentials(&username);
        if phone.is_none() {
            // Answered now as a wrong password would be (no wait, no other kind of answer that
            // would tell a name that exists); the lookup only fills the cache for the phone's
            // next try (a phone just added by the CLI, say).
            self.lookup
                .store
                .prefetch_phone_credentials(&username, &self.rt);
        }
        // Credentials made for another Request-URI are not these (RFC 7616 §3.4): the
        // response covers only its `uri`, and a seen INVITE must not be re-aimed at another
        // number with them.
        let for_this_uri = match (creds.uri(), msg.uri()) {
            (Some(u), Some(r)) => crate::sip::auth::uri_matches(u, r),
            _ => false,
        };
        if !for_this_uri {
            let rsp = self.reply(&msg, 400);
            let _ = layer.send_response(tx, rsp, now);
            return;
        }
        let verdict = self.digest.verify(
            &creds,
            "INVITE",
            |alg| {
                phone.as_ref().map(|p| match alg {
                    Algorithm::Md5 => p.ha1_md5.clone(),
                    Algorithm::Sha256 => p.ha1_sha256.clone(),
                })
            },
            &self.realm.clone(),
            now_ms,
        );
        let phone = match (verdict, phone) {
            (Verdict::Ok, Some(p)) => p,
            (Verdict::Malformed, _) => {
                let rsp = self.reply(&msg, 400);
                let _ = layer.send_response(tx, rsp, now);
                return;
            }
            // Replay and foreign nonces (a nonce from before a restart, say) as in the
            // registrar: the response was right or never checked, so stale=true lets the phone
            // retry with a fresh nonce instead of deciding its password is wrong.
            (Verdict::Stale | Verdict::Failed(Failure::Replay | Failure::Nonce), _) => {
                let rsp = self.challenge(&msg, true, now_ms);
                let _ = layer.respond_statelessly(tx, rsp, now);
                return;
            }
            // A wrong password and an unknown user get the same fresh challenge, and count
            // toward a ban of the source just as a failed REGISTER does.
            (Verdict::Failed(f), _) => {
                if f.is_password_guess() {
                    self.lookup.registrar.auth_failed(from.addr.ip());
                }
                let rsp = self.challenge(&msg, false, now_ms);
                let _ = layer.send_response(tx, rsp, now);
                return;
            }
            _ => {
                let rsp = self.challenge(&msg, false, now_ms);
                let _ = layer.send_response(tx, rsp, now);
                return;
            }
        };
        let caller = Caller::Phone {
            credentials: phone,
            username: Arc::from(username),
        };
        self.route(layer, tx, msg, from, now, caller);
    }

    /// Resolves the route of an accepted INVITE off this task; it comes back through
    /// [`Calls::start`].
    fn route(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ServerTxId,
        msg: Message,
        from: Peer,
        now: Instant,
        caller: Caller,
    ) {
        // What routing needs is nearly always in memory (the directory cache, the registrar's
        // bindings): try it here, without waiting, and hand off to a task only when the store
        // has to be asked. Two task hand-offs per call were a large part of a call's CPU.
        let caller_follows_dialog = matches!(&caller, Caller::Trunk(t) if t.dialog_routed());
        // Which of its registrations is the call's: the one on the connection it called over,
        // else the one with the INVITE's Contact.
        let stream_caller = match &caller {
            Caller::Phone { username, .. } if from.transport != Transport::Udp => {
                let bindings = self.lookup.registrar.bindings_for(username);
                let contact = msg.contacts().first().map(|c| &c.uri);
                let binding = bindings
                    .iter()
                    .find(|b| b.source.flow == from.flow)
                    .or_else(|| {
                        bindings
                            .iter()
                            .find(|b| contact.is_some_and(|c| same_uri(&b.contact, c)))
                    });
                Some(StreamPhone {
                    username: username.clone(),
                    instance: binding.and_then(|b| b.instance.as_deref().map(Arc::from)),
                    flow: binding.map(|b| b.source.flow),
                })
            }
            _ => None,
        };
        let replaces = msg
            .header(&HeaderName::Replaces)
            .map(crate::sip::header::Replaces::parse);
        if let Some(replaces) = replaces {
            // Not routed: the INVITE names the call it joins (RFC 3891).
            self.replace(layer, tx, msg, replaces, from, stream_caller, now);
            return;
        }
        let ready = futures_util::FutureExt::now_or_never(resolve(&self.lookup, &caller, &msg));
        if let Some(decision) = ready {
            let done = RouteDone {
                tx,
                invite: msg,
                caller: from,
                caller_follows_dialog,
                stream_caller,
                decision,
            };
            self.start(layer, Routed::Route(done), now);
            return;
        }
        let lookup = self.lookup.clone();
        let routed = self.routed_tx.clone();
        let permit = match routed.try_reserve_owned() {
            Ok(p) => p,
            Err(_) => {
                let mut rsp = self.reply(&msg, 503);
                let _ = rsp.push_header(HeaderName::RetryAfter, "5");
                let _ = layer.send_response(tx, rsp, now);
                return;
            }
        };
        self.rt.spawn(async move {
            let decision = resolve(&lookup, &caller, &msg).await;
            permit.send(Routed::Route(RouteDone {
                tx,
                invite: msg,
                caller: from,
                caller_follows_dialog,
                stream_caller,
                decision,
            }));
        });
    }

    fn challenge(&mut self, req: &Message, stale: bool, now_ms: u64) -> Message {
        let mut rsp = self.reply(req, 407);
        for value in self.digest.challenge(&self.realm, stale, now_ms) {
            let _ = rsp.push_header(HeaderName::ProxyAuthenticate, &value);
        }
        rsp
    }

    /// Carries out everything the call asked for, then files its timers and dialogs.
    fn apply(&mut self, id: u64, layer: &mut TransactionLayer, now: Instant) {
        let reach = Reach {
            registrar: &self.lookup.registrar,
            transports: self.transports.as_deref(),
        };
        let Some(e) = self.calls.get_mut(&id) else {
            return;
        };
        let mut ended = false;
        let mut redirects = Vec::new();
        // A click-to-call leg's caller is ourselves: nothing goes to it, and every description
        // on the leg is already our own (no anchoring).
        let virtual_caller = e.c2c.is_some();
        let media = if virtual_caller {
            None
        } else {
            e.media.clone()
        };
        while let Some(action) = e.call.poll_action() {
            match action {
                Action::AnswerCaller(rsp) if virtual_caller => {
                    on_virtual_answer(e, &rsp);
                }
                Action::Ack {
                    towards: Towards::Caller,
                    ..
                } if virtual_caller => {}
                Action::Request {
                    key,
                    towards: Towards::Caller,
                    request,
                } if virtual_caller => {
                    let rsp = virtual_reply(e, &request.message);
                    e.call.on_response(key, &rsp, now);
                }
                Action::AnswerCaller(rsp) => {
                    let Some(invite_tx) = e.invite_tx else {
                        continue;
                    };
                    let rsp = match &e.media {
                        Some(m) => {
                            let (rsp, transcode) = bridge_codecs(m, e.call.caller_invite(), rsp);
                            e.transcode = transcode;
                            rsp
                        }
                        None => rsp,
                    };
                    let rsp = anchor(&media, rsp, Side::Caller);
                    if let Some(phone) = &e.stream_caller {
                        // Its connection broke while the call was being set up: the answer
                        // goes over the one it registered over since, as its requests do.
                        let target = e.call.caller_invite().contacts().first();
                        let to = reach.current_flow(phone, e.caller, target.map(|c| &c.uri));
                        if to != e.caller {
                            e.caller = to;
                            layer.reroute(invite_tx, tx_peer(&to));
                        }
                    }
                    let ok = rsp.status().is_some_and(|s| (200..300).contains(&s));
                    if ok {
                        let reliable = e.caller.is_reliable();
                        e.ok_retransmit = Some(Retransmit::new(rsp.clone(), now, reliable));
                    }
                    let _ = layer.send_response(invite_tx, rsp, now);
                }
                Action::Invite { branch, request } => {
                    let Some(io) = e.branches.get_mut(branch) else {
                        continue;
                    };
                    let request = for_transport(request, io.peer.transport);
                    let request = anchor(&media, request, Side::Callee);
                    let request = match &media {
                        Some(_) => with_sdp(request, |sdp| Some(sdp::offer_both_g711(sdp))),
                        None => request,
                    };
                    io.invite = Some(request.clone());
                    // A new transaction (the first, or one answering a trunk's challenge): a
                    // CANCEL waits for its own provisional.
                    io.provisional = false;
                    match layer.send_request(request, tx_peer(&io.peer), now) {
                        Ok(tx) => {
                            io.tx = Some(tx);
                            self.clients.insert(tx, (id, Purpose::Branch(branch)));
                        }
                        Err(err) => {
                            tracing::debug!(error = %err, "b2bua: branch INVITE not sent");
                            e.call.on_invite_timeout(branch, now);
                        }
                    }
                }
                Action::Cancel { branch, reason } => {
                    let Some(io) = e.branches.get_mut(branch) else {
                        continue;
                    };
                    if io.provisional {
                        follow_branch(io, &reach);
                        send_cancel(&mut self.clients, id, branch, io, reason, layer, now);
                    } else {
                        io.cancel_pending = Some(reason);
                    }
                }
                Action::Ack { towards, request } => {
                    let peer = hop_towards(e, towards, &request, &reach);
                    let msg = for_transport(request.message, peer.transport);
                    let msg = anchor(&media, msg, side_of(towards));
                    let msg = shown_laws(e.transcode, msg, side_of(towards));
                    layer.send_stateless(&msg, tx_peer(&peer));
                    match towards {
                        Towards::Branch(b) => {
                            if let Some(io) = e.branches.get_mut(b) {
                                if io.acks.len() == KEPT_ACKS {
                                    io.acks.pop_front();
                                }
                                io.acks.push_back((msg, peer));
                            }
                        }
                        Towards::Caller => e.caller_ack = Some((msg, peer)),
                    }
                }
                Action::Request {
                    key,
                    towards,
                    request,
                } => {
                    let peer = hop_towards(e, towards, &request, &reach);
                    let msg = for_transport(request.message, peer.transport);
                    let msg = anchor(&media, msg, side_of(towards));
                    let msg = shown_laws(e.transcode, msg, side_of(towards));
                    match layer.send_request(msg, tx_peer(&peer), now) {
                        Ok(tx) => {
                            self.clients.insert(tx, (id, Purpose::Request(key)));
                        }
                        Err(err) => {
                            tracing::debug!(error = %err, "b2bua: in-dialog request not sent");
                            e.call.on_request_timeout(key, now);
                        }
                    }
                }
                Action::Respond { tx, response } => {
                    if let Some((server_tx, leg)) = e.waiting.remove(&tx) {
                        // The answer goes back to `leg`; its body came from the other one.
                        let to = match leg {
                            super::call::Leg::Caller => Side::Caller,
                            super::call::Leg::Callee => Side::Callee,
                        };
                        let response = anchor(&media, response, to);
                        let response = shown_laws(e.transcode, response, to);
                        let reinvite_2xx =
                            response.status().is_some_and(|s| (200..300).contains(&s))
                                && response.cseq().is_some_and(|c| c.method == Method::Invite);
                        if reinvite_2xx {
                            let reliable = peer_towards(e, e.call.towards(leg)).is_reliable();
                            e.reinvite_ok = response.cseq().map(|c| ReinviteOk {
                                tx: server_tx,
                                leg,
                                seq: c.seq,
                                retransmit: Retransmit::new(response.clone(), now, reliable),
                            });
                        }
                        let _ = layer.send_response(server_tx, response, now);
                    }
                }
                Action::CallerDescribed(answer) => {
                    // Only the relay's view of the caller changes; the rewritten copy goes
                    // nowhere.
                    let _ = anchor(&media, answer, Side::Callee);
                }
                Action::Redirect {
                    branch,
                    user,
                    contacts,
                } => redirects.push((branch, user, contacts)),
                Action::LegReplaced { towards } => {
                    let Some(r) = e.replacement.as_ref() else {
                        continue;
                    };
                    match towards {
                        Towards::Caller => {
                            e.caller = r.peer;
                            e.caller_follows_dialog = false;
                            e.stream_caller = r.stream_phone.clone();
                        }
                        Towards::Branch(b) => {
                            // The call added the branch at the end; so does the driver.
                            debug_assert_eq!(b, e.branches.len());
                            e.branches.push(BranchIo::new(Hop {
                                peer: r.peer,
                                follow_dialog: false,
                                trunk: false,
                                stream_phone: r.stream_phone.clone(),
                            }));
                        }
                    }
                    let leg = match towards {
                        Towards::Caller => super::call::Leg::Caller,
                        Towards::Branch(_) => super::call::Leg::Callee,
                    };
                    // Indexed here: it takes the place of an id indexed already.
                    if let Some(d) = e.call.dialog_id(leg) {
                        self.dialogs.insert(d.clone(), id);
                    }
                }
                Action::Ended => ended = true,
            }
        }
        for d in e.call.dialog_ids().skip(e.indexed_dialogs) {
            self.dialogs.insert(d.clone(), id);
            e.indexed_dialogs += 1;
        }
        let mut linked = Vec::new();
        if e.call.is_answered() && !e.announced {
            e.announced = true;
            match &e.c2c {
                Some(c) if c.side == Side::Caller => linked.push(Linked::DialTarget(id)),
                Some(c) => {
                    if let Some(a) = c.other {
                        linked.push(Linked::Bridge { a, b: id });
                    }
                    emit(&self.events, e, EventKind::Answered, None);
                }
                None => emit(&self.events, e, EventKind::Answered, None),
            }
        }
        // Leg A of a click-to-call that went on to its target leaves the record and the
        // `ended` event to leg B.
        let quiet = e
            .c2c
            .as_ref()
            .is_some_and(|c| c.side == Side::Caller && c.other.is_some());
        if ended {
            // The media ports go back to the pool at once (for a click-to-call, once both
            // legs let go of the session).
            e.media = None;
            let s = e.call.summary();
            if let Some(c) = e.c2c.as_mut() {
                c.over = true;
                match (c.side, c.other) {
                    (Side::Caller, Some(b)) => linked.push(Linked::End(b)),
                    (Side::Callee, Some(a)) if s.outcome == Outcome::Answered => {
                        linked.push(Linked::End(a))
                    }
                    (Side::Callee, Some(a)) => linked.push(Linked::TargetFailed {
                        a,
                        outcome: s.outcome,
                    }),
                    _ => {}
                }
            }
            if !quiet {
                emit(&self.events, e, EventKind::Ended, Some(s.outcome));
            }
        }
        if ended {
            let s = e.call.summary();
            if !quiet {
                let record = call_record(e, &s);
                if self.records.try_send(record).is_err() {
                    // The writer is far behind (the store is down): keep the record anyway, on
                    // a task of its own that retries.
                    let record = call_record(e, &s);
                    self.rt
                        .spawn(write_record(self.lookup.store.clone(), record));
                }
            }
            tracing::info!(
                call = id,
                outcome = s.outcome.as_str(),
                cause = %s.cause,
                answered_by = s.answered_by.as_deref().unwrap_or(""),
                duration_ms = s
                    .answered
                    .zip(s.ended)
                    .map_or(0, |(a, b)| b.saturating_duration_since(a).as_millis() as u64),
                "call ended"
            );
            if s.outcome != Outcome::Answered {
                e.ok_retransmit = None;
            }
        }
        if ended {
            self.c2c_ended(id);
        }
        let Some(e) = self.calls.get_mut(&id) else {
            return;
        };
        if e.call.is_finished() && e.linger_until.is_none() {
            e.ok_retransmit = None;
            // Lingering, the call only answers responses and 2xx retransmissions: no CANCEL
            // goes out any more, so the INVITEs kept for one go now.
            e.call.release();
            for io in &mut e.branches {
                io.invite = None;
                io.acks.shrink_to_fit();
            }
            e.linger_until = Some(now + LINGER);
            self.timers.push(Reverse((now + LINGER, id)));
        }
        // Settled only with nothing left from this round either (a redirect to route, a
        // click-to-call leg to tell), which the rest of this function would carry out.
        let nothing_left = linked.is_empty() && redirects.is_empty();
        if let Some(until) = e.linger_until.filter(|_| nothing_left && is_settled(e)) {
            self.settle(id, until);
            return;
        }
        if let (true, None, Some(limit), Some(_)) = (
            e.call.is_answered(),
            e.media_check,
            self.media_timeout,
            e.media.as_ref(),
        ) {
            let at = now + limit;
            e.media_check = Some(at);
            self.timers.push(Reverse((at, id)));
        }
        if let Some(t) = e.call.poll_timeout() {
            if e.armed_deadline != Some(t) {
                e.armed_deadline = Some(t);
                self.timers.push(Reverse((t, id)));
            }
        }
        let next_retransmit = [
            e.ok_retransmit.as_ref(),
            e.reinvite_ok.as_ref().map(|r| &r.retransmit),
        ]
        .into_iter()
        .flatten()
        .map(|r| r.next)
        .min();
        if let Some(next) = next_retransmit {
            if e.armed_retransmit != Some(next) {
                e.armed_retransmit = Some(next);
                self.timers.push(Reverse((next, id)));
            }
        }
        for l in linked {
            self.link(l, layer, now);
        }
        for (branch, user, contacts) in redirects {
            self.redirect(id, branch, user, &contacts, layer, now);
        }
    }

    /// An authenticated INVITE with `Replaces` (RFC 3891; attended transfer): its sender takes
    /// the place of the phone in the dialog it names, in that dialog's call. The dialog is
    /// looked up with its tags either way round (phones differ on which tag is whose).
    /// Knowing a dialog's Call-ID and both random tags is what entitles a phone to this, as
    /// the RFC has it; the INVITE was authenticated like any other.
    #[allow(clippy::too_many_arguments)]
    fn replace(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ServerTxId,
        invite: Message,
        replaces: Result<crate::sip::header::Replaces, crate::sip::header::HeaderError>,
        from: Peer,
        stream_phone: Option<StreamPhone>,
        now: Instant,
    ) {
        let Ok(r) = replaces else {
            let rsp = self.reply(&invite, 400);
            let _ = layer.send_response(tx, rsp, now);
            return;
        };
        let found = [(&r.to_tag, &r.from_tag), (&r.from_tag, &r.to_tag)]
            .into_iter()
            .find_map(|(local, remote)| {
                let key = DialogRef {
                    call_id: &r.call_id,
                    local_tag: local,
                    remote_tag: remote,
                };
                let id = *self.dialogs.get(&key as &dyn DialogKey)?;
                let leg = self.calls.get(&id)?.call.leg_of(key)?;
                Some((id, leg))
            });
        let tag = self.caller_tag(&invite);
        let refused = match found {
            None => Some(481),
            // A click-to-call's legs have ourselves at one end: nobody to join.
            Some((id, _)) if self.calls.get(&id).is_some_and(|e| e.c2c.is_some()) => Some(481),
            Some(_) => None,
        };
        let (Some((id, leg)), None) = (found, refused) else {
            let rsp = self.reply(&invite, refused.unwrap_or(481));
            let _ = layer.send_response(tx, rsp, now);
            return;
        };
        let Some(e) = self.calls.get_mut(&id) else {
            return;
        };
        let key = e.next_key;
        e.next_key += 1;
        match e.call.replace(leg, key, &invite, &tag, r.early_only, now) {
            Ok(()) => {
                tracing::info!(call = id, ?leg, "b2bua: a leg replaced (RFC 3891)");
                e.waiting.insert(key, (tx, leg));
                // The new phone and the other party agree on a codec between them (the
                // re-INVITE carries the new phone's offer as it is): no conversion.
                e.transcode = None;
                if let Some(m) = &e.media {
                    m.set_transcoding(None);
                }
                e.replacement = Some(Box::new(Replacement {
                    peer: from,
                    stream_phone,
                    caller_invite: (leg == super::call::Leg::Caller).then_some(invite),
                }));
            }
            Err(err) => {
                tracing::debug!(call = id, error = %err, "b2bua: Replaces refused");
                let rsp = self.reply(&invite, err.status());
                let _ = layer.send_response(tx, rsp, now);
                return;
            }
        }
        self.apply(id, layer, now);
    }

    /// Routes a branch's redirect (its phone's call forwarding) as `user` would dial the
    /// number: on this task when the facts are cached, like a new call's route, else off it.
    fn redirect(
        &mut self,
        call: u64,
        branch: usize,
        user: i64,
        contacts: &[Uri],
        layer: &mut TransactionLayer,
        now: Instant,
    ) {
        let decision = match contacts.iter().find_map(uri_number) {
            None => {
                tracing::debug!(call, "b2bua: redirect without a number to dial");
                Some(Decision::Reject(480))
            }
            Some(number) => {
                tracing::debug!(call, %number, user, "b2bua: following a redirect");
                let ready = futures_util::FutureExt::now_or_never(forwarded(
                    &self.lookup,
                    user,
                    number.clone(),
                ));
                let reserved = || self.routed_tx.clone().try_reserve_owned();
                match ready.ok_or_else(reserved) {
                    Ok(decision) => Some(decision),
                    Err(Ok(permit)) => {
                        let lookup = self.lookup.clone();
                        self.rt.spawn(async move {
                            let decision = forwarded(&lookup, user, number).await;
                            permit.send(Routed::Redirect(Redirected {
                                call,
                                branch,
                                decision,
                            }));
                        });
                        None
                    }
                    Err(Err(_)) => Some(Decision::Reject(503)),
                }
            }
        };
        if let Some(decision) = decision {
            let r = Redirected {
                call,
                branch,
                decision,
            };
            self.redirected(layer, r, now);
        }
    }

    /// Splits routed targets from their hops, giving a branch to a TLS trunk our TLS Contact:
    /// the ITSP's requests in that dialog must not come to us in clear over the caller's
    /// transport.
    fn with_contacts(&self, targets: Vec<(Target, Hop)>) -> (Vec<Target>, Vec<Hop>) {
        targets
            .into_iter()
            .map(|(mut target, hop)| {
                if hop.trunk && hop.peer.transport == Transport::Tls {
                    target.contact = self.local.get(&Transport::Tls).map(|l| l.contact.clone());
                }
                (target, hop)
            })
            .unzip()
    }

    /// Rings where a redirect led, beside the branches still ringing.
    fn redirected(&mut self, layer: &mut TransactionLayer, r: Redirected, now: Instant) {
        let (targets, callee) = match r.decision {
            Decision::Ring {
                targets, parties, ..
            } => (targets, Some(parties.callee)),
            // The echo test, a refusal: the forward leads nowhere a caller can be put through.
            _ => (Vec::new(), None),
        };
        let (targets, hops): (Vec<Target>, Vec<Hop>) = self.with_contacts(targets);
        let Some(e) = self.calls.get_mut(&r.call) else {
            return;
        };
        if e.call.on_redirect(r.branch, targets, now).is_some() {
            e.branches.extend(hops.into_iter().map(BranchIo::new));
            let p = &e.parties;
            if let Some(callee) = callee.filter(|c| {
                c.user_id.is_some()
                    && c.user_id != p.caller.user_id
                    && c.user_id != p.callee.user_id
                    && !e.forwarded.iter().any(|f| f.user_id == c.user_id)
            }) {
                e.forwarded.push(callee);
            }
        }
        self.apply(r.call, layer, now);
    }

    /// The echo test: answered here; the relay sends the caller's RTP straight back.
    fn start_echo(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ServerTxId,
        invite: Message,
        caller: Peer,
        parties: Parties,
        now: Instant,
    ) {
        let offer = std::str::from_utf8(invite.body()).unwrap_or("");
        let law = sdp::audio_formats(offer)
            .into_iter()
            .find(|f| *f == sdp::PCMU || *f == sdp::PCMA);
        let (Some(law), Some(ep)) = (law, sdp::audio_endpoint(offer)) else {
            // No G.711 audio offered (or no offer at all): nothing we can echo.
            let rsp = self.reply(&invite, 488);
            let _ = layer.send_response(tx, rsp, now);
            return;
        };
        let session = match self.relay.as_ref().map(Relay::session) {
            Some(Ok(m)) => Arc::new(m),
            _ => {
                let mut rsp = self.reply(&invite, 503);
                let _ = rsp.push_header(HeaderName::RetryAfter, "5");
                let _ = layer.send_response(tx, rsp, now);
                return;
            }
        };
        session.set_echo();
        session.set_remote(Side::Caller, ep);
        let Some(local) = self.local.get(&caller.transport).cloned() else {
            let rsp = self.reply(&invite, 500);
            let _ = layer.send_response(tx, rsp, now);
            return;
        };
        let body =
            super::click_to_call::offer(session.caller_facing(), self.next_random(), Some(law));
        let caller_id = local.contact.clone();
        let config = self.call_config(local, caller_id);
        let seed = self.next_random();
        let tag = self.caller_tag(&invite);
        let call =
            match Call::answer_here(invite.clone(), &tag, body.into_bytes(), config, seed, now) {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "b2bua: INVITE refused");
                    let rsp = self.reply(&invite, 400);
                    let _ = layer.send_response(tx, rsp, now);
                    return;
                }
            };
        let api_id = crate::sip::lex::hex16(self.next_random());
        let id = self.add(Entry {
            invite_tx: Some(tx),
            api_id: api_id.into(),
            ..Entry::new(call, parties, caller, Some(session))
        });
        self.invites.insert(tx, id);
        if let Some(e) = self.calls.get(&id) {
            emit(&self.events, e, EventKind::Ringing, None);
        }
        self.apply(id, layer, now);
    }

    // --- click-to-call --------------------------------------------------------------------------

    /// Starts leg A of a click-to-call: the user's location rings with "Call to <target>".
    fn start_click_to_call(
        &mut self,
        layer: &mut TransactionLayer,
        start: super::click_to_call::Start,
        now: Instant,
    ) {
        let super::click_to_call::Start {
            id: c2c_id,
            user,
            to,
            a,
            b,
        } = start;
        let fail = |status: &super::click_to_call::Status, reason: &str| {
            status.update(&c2c_id, |v| {
                v.state = "ended".into();
                v.outcome = Some("failed".into());
                v.reason = Some(reason.into());
                v.ended_at = Some(now_ms());
            });
        };
        let Decision::Ring {
            caller_id,
            targets,
            parties,
        } = a
        else {
            return fail(&self.c2c_status, "nothing to ring");
        };
        let session = match self.relay.as_ref().map(Relay::session) {
            Some(Ok(s)) => Arc::new(s),
            _ => return fail(&self.c2c_status, "no media ports free"),
        };
        let caller = virtual_peer();
        let Some(local) = self.local.get(&caller.transport).cloned() else {
            return fail(&self.c2c_status, "no UDP listener");
        };
        let me = caller_id_of(&user, &self.realm);
        let body = super::click_to_call::offer(session.caller_facing(), self.next_random(), None);
        let Some(invite) = super::click_to_call::virtual_invite(
            &c2c_id,
            "a",
            &me,
            &to,
            &self.realm,
            &local.contact,
            body,
        ) else {
            return fail(&self.c2c_status, "the number does not make a SIP URI");
        };
        let config = self.call_config(local, *caller_id);
        let (targets, peers): (Vec<Target>, Vec<Hop>) = self.with_contacts(targets);
        let seed = self.next_random();
        let tag = format!("c2c{c2c_id}");
        let call = match Call::new(invite, &tag, targets, config, seed, now) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "b2bua: click-to-call leg A refused");
                return fail(&self.c2c_status, "internal error");
            }
        };
        let id = self.add(Entry {
            api_id: c2c_id.as_str().into(),
            c2c: Some(C2cLeg {
                id: c2c_id.clone(),
                side: Side::Caller,
                other: None,
                target: Some(Box::new(b)),
                pt: sdp::PCMU,
                hangup_at: None,
                over: false,
            }),
            branches: peers.into_iter().map(BranchIo::new).collect(),
            ..Entry::new(call, *parties, caller, Some(session))
        });
        self.c2c_calls.insert(c2c_id, id);
        tracing::info!(call = id, "b2bua: click-to-call started");
        if let Some(e) = self.calls.get(&id) {
            emit(&self.events, e, EventKind::Ringing, None);
        }
        self.apply(id, layer, now);
    }

    /// The API hangs up a click-to-call: both legs, whatever state they are in.
    fn hang_up_click_to_call(&mut self, layer: &mut TransactionLayer, c2c_id: &str, now: Instant) {
        let Some(&a) = self.c2c_calls.get(c2c_id) else {
            return;
        };
        let b = self
            .calls
            .get(&a)
            .and_then(|e| e.c2c.as_ref())
            .and_then(|c| c.other);
        for id in [b, Some(a)].into_iter().flatten() {
            if let Some(e) = self.calls.get_mut(&id) {
                // Whichever applies: cancel while ringing, BYE once answered.
                e.call.on_caller_cancel(now);
                e.call.hang_up_both("api", now);
                if let Some(c) = e.c2c.as_mut() {
                    c.hangup_at = None;
                }
            }
            self.apply(id, layer, now);
        }
    }

    /// Carries out what one leg of a click-to-call means for the other.
    fn link(&mut self, l: Linked, layer: &mut TransactionLayer, now: Instant) {
        match l {
            Linked::DialTarget(a) => self.dial_target(a, layer, now),
            Linked::Bridge { a, b } => {
                let b_pt = self
                    .calls
                    .get(&b)
                    .and_then(|e| e.c2c.as_ref())
                    .map_or(sdp::PCMU, |c| c.pt);
                let Some(e) = self.calls.get(&a) else {
                    return;
                };
                let a_pt = e.c2c.as_ref().map_or(sdp::PCMU, |c| c.pt);
                if let Some(m) = &e.media {
                    tracing::debug!(a_pt, b_pt, "click-to-call: legs joined");
                    m.play(Side::Caller, None);
                    m.set_transcoding((a_pt != b_pt).then_some((a_pt, b_pt)));
                }
                let c2c_id = e.api_id.clone();
                self.c2c_status.update(&c2c_id, |v| {
                    v.state = "connected".into();
                    v.answered_at = Some(now_ms());
                });
            }
            Linked::End(other) => {
                if let Some(e) = self.calls.get_mut(&other) {
                    e.call.on_caller_cancel(now);
                    e.call.hang_up_both("other_leg", now);
                }
                self.apply(other, layer, now);
            }
            Linked::TargetFailed { a, outcome } => {
                use crate::media::tone::{Sound, FRAME};
                // A busy target gets the busy tone; an unreachable one the announcement when
                // there is one (played once, then we hang up), else the congestion tone.
                let (sound, lasts) = match (outcome, &self.unreachable_prompt) {
                    (Outcome::Busy, _) => (Sound::Tone(self.tones.busy.clone()), FAILURE_TONE),
                    (_, Some(p)) => (
                        Sound::Prompt {
                            prompt: p.clone(),
                            repeat: false,
                        },
                        Duration::from_millis((p.len() / (FRAME / 20)) as u64 + 500),
                    ),
                    _ => (Sound::Tone(self.tones.congestion.clone()), FAILURE_TONE),
                };
                let Some(e) = self.calls.get_mut(&a) else {
                    return;
                };
                if !e.call.is_answered() {
                    return;
                }
                let pt = e.c2c.as_ref().map_or(sdp::PCMU, |c| c.pt);
                if let Some(m) = &e.media {
                    m.play(Side::Caller, Some((sound, pt)));
                }
                let at = now + lasts;
                if let Some(c) = e.c2c.as_mut() {
                    c.hangup_at = Some(at);
                }
                self.timers.push(Reverse((at, a)));
            }
        }
    }

    /// Leg A answered: ringback to the user, and the target's call.
    fn dial_target(&mut self, a: u64, layer: &mut TransactionLayer, now: Instant) {
        let Some(e) = self.calls.get_mut(&a) else {
            return;
        };
        let Some(c) = e.c2c.as_mut() else {
            return;
        };
        let target = c.target.take();
        let (pt, c2c_id) = (c.pt, c.id.clone());
        let Some(session) = e.media.clone() else {
            return;
        };
        session.play(
            Side::Caller,
            Some((
                crate::media::tone::Sound::Tone(self.tones.ringback.clone()),
                pt,
            )),
        );
        self.c2c_status
            .update(&c2c_id, |v| v.state = "calling_target".into());
        let Some(Decision::Ring {
            caller_id,
            targets,
            parties,
        }) = target.map(|t| *t)
        else {
            self.link(
                Linked::TargetFailed {
                    a,
                    outcome: Outcome::Failed,
                },
                layer,
                now,
            );
            return;
        };
        let caller = virtual_peer();
        let Some(local) = self.local.get(&caller.transport).cloned() else {
            return;
        };
        let body = super::click_to_call::offer(session.callee_facing(), self.next_random(), None);
        let to = parties.dialled.clone();
        let Some(invite) = super::click_to_call::virtual_invite(
            &c2c_id,
            "b",
            &caller_id,
            &to,
            &self.realm,
            &local.contact,
            body,
        ) else {
            return;
        };
        let config = self.call_config(local, *caller_id);
        let (targets, peers): (Vec<Target>, Vec<Hop>) = self.with_contacts(targets);
        let seed = self.next_random();
        let Ok(call) = Call::new(invite, &format!("c2c{c2c_id}b"), targets, config, seed, now)
        else {
            return;
        };
        let b = self.add(Entry {
            api_id: c2c_id.as_str().into(),
            c2c: Some(C2cLeg {
                id: c2c_id,
                side: Side::Callee,
                other: Some(a),
                target: None,
                pt: sdp::PCMU,
                hangup_at: None,
                over: false,
            }),
            branches: peers.into_iter().map(BranchIo::new).collect(),
            ..Entry::new(call, *parties, caller, Some(session))
        });
        if let Some(c) = self.calls.get_mut(&a).and_then(|e| e.c2c.as_mut()) {
            c.other = Some(b);
        }
        if let Some(e) = self.calls.get(&b) {
            // The user's own `ringing` came with leg A; the target's comes now.
            emit_for(&self.events, e, EventKind::Ringing, None, false, true);
        }
        self.apply(b, layer, now);
    }

    /// A click-to-call leg ended: once both have, the API shows the outcome.
    fn c2c_ended(&mut self, id: u64) {
        let Some(e) = self.calls.get(&id) else {
            return;
        };
        let Some(c) = &e.c2c else {
            return;
        };
        let other_over = c
            .other
            .and_then(|o| self.calls.get(&o))
            .and_then(|o| o.c2c.as_ref())
            .map_or(true, |o| o.over);
        let s = e.call.summary();
        let (outcome, reason) = match (c.side, s.outcome) {
            (Side::Callee, Outcome::Answered) => ("answered", "hung up".to_owned()),
            (Side::Caller, Outcome::Answered) if c.other.is_none() => {
                ("failed", "the target could not be dialled".to_owned())
            }
            (Side::Caller, Outcome::Answered) => ("", String::new()),
            (Side::Caller, Outcome::NoAnswer) => ("no_answer", "your phone did not answer".into()),
            (Side::Caller, Outcome::Busy) => ("busy", "your phone is busy or declined".into()),
            (Side::Caller, Outcome::Cancelled) => {
                ("cancelled", "hung up before you answered".into())
            }
            (Side::Caller, Outcome::Failed) => ("failed", "your phone could not be reached".into()),
            (_, Outcome::NoAnswer) => ("no_answer", "the target did not answer".into()),
            (_, Outcome::Busy) => ("busy", "the target is busy".into()),
            (_, Outcome::Cancelled) => ("cancelled", "hung up before the target answered".into()),
            (_, Outcome::Failed) => ("failed", "the target could not be reached".into()),
        };
        let both = other_over;
        self.c2c_status.update(&c.id, |v| {
            if !outcome.is_empty() && v.outcome.is_none() {
                v.outcome = Some(outcome.into());
                v.reason = Some(reason);
            }
            if both {
                v.state = "ended".into();
                v.ended_at = Some(now_ms());
            }
        });
    }

    /// Reduces a settled call (see [`is_settled`]) to its [`Settled`] ACKs for the rest of its
    /// linger, which ends at `until`. Its dialogs leave the index now: a new request in one
    /// gets 481 (§12.2.2), as it would a moment later; a retransmitted one is absorbed by its
    /// transaction.
    fn settle(&mut self, id: u64, until: Instant) {
        let Some(e) = self.unindex(id) else {
            return;
        };
        let Entry {
            branches,
            caller_ack,
            stream_caller,
            ..
        } = *e;
        let caller = caller_ack.map(|(ack, to)| KeptAck::new(ack, to, stream_caller));
        let acks = branches
            .into_iter()
            .flat_map(|io| {
                let phone = io.stream_phone;
                io.acks
                    .into_iter()
                    .map(move |(ack, to)| KeptAck::new(ack, to, phone.clone()))
            })
            .chain(caller)
            .collect();
        self.settled.insert(id, Settled { acks, until });
    }

    fn forget(&mut self, id: u64) {
        self.unindex(id);
    }

    /// Takes a call out of the table and out of every index that leads to it.
    fn unindex(&mut self, id: u64) -> Option<Box<Entry>> {
        let e = self.calls.remove(&id)?;
        for d in e.call.dialog_ids() {
            self.dialogs.remove(d);
        }
        if let Some(tx) = e.invite_tx {
            self.invites.remove(&tx);
        }
        if let Some(c) = &e.c2c {
            if c.side == Side::Caller {
                self.c2c_calls.remove(&c.id);
            }
        }
        // `clients` is left alone: each of its entries goes when its transaction terminates
        // (`on_terminated`), and until then a response for a forgotten call finds no call
        // and is dropped. Sweeping the table here cost a scan of every client transaction
        // per call.
        Some(e)
    }
}

/// Whether a finished call can be reduced to its ACKs ([`Calls::settle`]): the call waits for
/// nothing ([`Call::is_settled`]) and neither does its entry. A click-to-call leg keeps its
/// entry: the other leg may still look at it.
fn is_settled(e: &Entry) -> bool {
    e.call.is_settled()
        && e.c2c.is_none()
        && e.replacement.is_none()
        && e.waiting.is_empty()
        && e.ok_retransmit.is_none()
        && e.reinvite_ok.is_none()
}

/// The peer of a click-to-call leg's caller: ourselves, never sent to.
fn virtual_peer() -> Peer {
    Peer {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], 9)),
        transport: Transport::Udp,
        flow: 0,
    }
}

/// The user as a From: `"Name" <sip:ext@realm>`.
fn caller_id_of(user: &Party, realm: &str) -> NameAddr {
    caller_id(&user.number, &user.name, realm)
        .or_else(|| NameAddr::parse(&format!("<sip:switchboard@{realm}>")).ok())
        .unwrap_or_else(|| {
            NameAddr::new(Uri::Other {
                scheme: "sip".into(),
                rest: "switchboard".into(),
            })
        })
}

impl Entry {
    /// A call just started, with nothing sent or armed yet; the caller fills in the rest.
    fn new(call: Call, parties: Parties, caller: Peer, media: Option<Arc<Session>>) -> Entry {
        Entry {
            call,
            parties,
            started_ms: now_ms(),
            invite_tx: None,
            caller,
            caller_follows_dialog: false,
            stream_caller: None,
            api_id: "".into(),
            c2c: None,
            announced: false,
            branches: Vec::new(),
            waiting: HashMap::new(),
            media,
            transcode: None,
            next_key: 1,
            ok_retransmit: None,
            reinvite_ok: None,
            caller_ack: None,
            linger_until: None,
            armed_deadline: None,
            armed_retransmit: None,
            media_check: None,
            indexed_dialogs: 0,
            forwarded: Vec::new(),
            replacement: None,
        }
    }
}

impl BranchIo {
    fn new(hop: Hop) -> BranchIo {
        BranchIo {
            peer: hop.peer,
            follows_dialog: hop.follow_dialog,
            trunk: hop.trunk,
            stream_phone: hop.stream_phone,
            invite: None,
            tx: None,
            provisional: false,
            cancel_pending: None,
            acks: VecDeque::new(),
        }
    }
}

/// A click-to-call leg's phone answered (the answer "to the caller", which is us): where it
/// wants its audio and in which law.
fn on_virtual_answer(e: &mut Entry, rsp: &Message) {
    if !rsp.status().is_some_and(|s| (200..300).contains(&s)) {
        return;
    }
    let Ok(text) = std::str::from_utf8(rsp.body()) else {
        return;
    };
    let (Some(c), Some(m)) = (e.c2c.as_mut(), e.media.as_ref()) else {
        return;
    };
    if let Some(ep) = sdp::audio_endpoint(text) {
        tracing::debug!(side = ?c.side, rtp = %ep.rtp, "click-to-call: leg answered");
        m.set_remote(c.side, ep);
    }
    if let Some(pt) = sdp::audio_formats(text)
        .into_iter()
        .find(|f| *f == sdp::PCMU || *f == sdp::PCMA)
    {
        c.pt = pt;
    }
}

/// Our answer, as a click-to-call leg's virtual caller, to a request the phone sent in the
/// dialog (relayed to us by the call): 200, with our description for an offer.
fn virtual_reply(e: &mut Entry, request: &Message) -> Message {
    let mut rsp = Message::response_to(request, 200, "OK");
    let offer = matches!(request.method(), Some(Method::Invite | Method::Update))
        && !request.body().is_empty();
    if let (true, Some(c), Some(m)) = (offer, e.c2c.as_ref(), e.media.as_ref()) {
        if let Some(ep) = std::str::from_utf8(request.body())
            .ok()
            .and_then(sdp::audio_endpoint)
        {
            // The phone moved (or put us on hold): our side follows it.
            m.set_remote(c.side, ep);
        }
        let ours = match c.side {
            Side::Caller => m.caller_facing(),
            Side::Callee => m.callee_facing(),
        };
        let offer = std::str::from_utf8(request.body()).unwrap_or("");
        let body = super::click_to_call::answer(ours, c.pt, offer);
        let _ = rsp.set_body(body.into_bytes(), Some("application/sdp"));
    }
    rsp
}

/// Publishes `kind` for each user of the call.
fn emit(events: &Events, e: &Entry, kind: EventKind, outcome: Option<Outcome>) {
    emit_for(events, e, kind, outcome, true, true);
}

/// Publishes `kind` for the call's caller and/or callee, when they are users.
fn emit_for(
    events: &Events,
    e: &Entry,
    kind: EventKind,
    outcome: Option<Outcome>,
    caller: bool,
    callee: bool,
) {
    let p = &e.parties;
    let sides = [
        (caller, &p.caller, &p.callee, CallDirection::Outgoing),
        (callee, &p.callee, &p.caller, CallDirection::Incoming),
    ];
    for (wanted, me, other, direction) in sides {
        let Some(user_id) = me.user_id.filter(|_| wanted) else {
            continue;
        };
        if direction == CallDirection::Incoming && p.caller.user_id == Some(user_id) {
            // Calling oneself is one (outgoing) call.
            continue;
        }
        events.publish(CallEvent {
            id: 0,
            kind,
            call_id: e.api_id.clone(),
            user_id,
            direction: direction.as_str(),
            other_number: other.number.clone(),
            other_name: other.name.clone(),
            outcome: outcome.map(|o| PartyOutcome::of(call_outcome(o), direction).as_str()),
            click_to_call: e.c2c.is_some(),
            at: 0,
        });
    }
}

fn send_cancel(
    clients: &mut IdMap<ClientTxId, (u64, Purpose)>,
    id: u64,
    branch: usize,
    io: &mut BranchIo,
    reason: Option<&'static str>,
    layer: &mut TransactionLayer,
    now: Instant,
) {
    let Some(invite) = &io.invite else {
        return;
    };
    let Some(cancel) = cancel_for(invite, reason) else {
        return;
    };
    match layer.send_request(cancel, tx_peer(&io.peer), now) {
        Ok(tx) => {
            clients.insert(tx, (id, Purpose::Cancel));
        }
        Err(e) => tracing::debug!(error = %e, branch, "b2bua: CANCEL not sent"),
    }
}

fn tx_peer(p: &Peer) -> transaction::Peer {
    transaction::Peer {
        addr: p.addr,
        reliable: p.is_reliable(),
        flow: p.flow,
    }
}

/// The ACK we relayed for `response` (a 2xx to a re-INVITE, retransmitted by the party that
/// answered it), and where it went; `None` when this 2xx is not one we have acknowledged.
fn ack_for_retransmitted_2xx(
    e: &Entry,
    response: &Message,
    reach: &Reach,
) -> Option<(Message, Peer)> {
    let cseq = response.cseq()?;
    if !response.status().is_some_and(|s| (200..300).contains(&s)) || cseq.method != Method::Invite
    {
        return None;
    }
    if let Some((ack, to)) = ack_of(&e.caller_ack, response) {
        let to = reach.again(e.stream_caller.as_ref(), ack, *to);
        return Some((ack.clone(), to));
    }
    e.branches.iter().find_map(|io| {
        let (ack, to) = ack_of(&io.acks, response)?;
        let to = reach.again(io.stream_phone.as_ref(), ack, *to);
        Some((ack.clone(), to))
    })
}

/// The flow the INVITE of `towards` took (for its transport).
fn peer_towards(e: &Entry, towards: Towards) -> Peer {
    match towards {
        Towards::Caller => e.caller,
        Towards::Branch(b) => e.branches.get(b).map_or(e.caller, |io| io.peer),
    }
}

/// Where an in-dialog request (or the ACK of a 2xx) to `towards` goes. A phone: the flow it
/// registered or called from, or the one it registered over since, when that one broke (see
/// [`Reach::current_flow`]). A trunk reached directly over UDP: the dialog's next hop, its
/// first route or else its remote target (RFC 3261 §12.2.1.1), when that names an IP address,
/// from the socket the call uses. Kept on the flow instead: a host name (the SIP core does not
/// wait for DNS), a URI whose `transport` or `maddr` asks for something else, and streams (a
/// trunk's TCP or TLS connection is the one to use; a new one may not be accepted).
fn hop_towards(e: &Entry, towards: Towards, request: &OutgoingRequest, reach: &Reach) -> Peer {
    let (peer, follows, stream_phone) = match towards {
        Towards::Caller => (e.caller, e.caller_follows_dialog, e.stream_caller.as_ref()),
        Towards::Branch(b) => e.branches.get(b).map_or((e.caller, false, None), |io| {
            (io.peer, io.follows_dialog, io.stream_phone.as_ref())
        }),
    };
    if let Some(phone) = stream_phone {
        return reach.current_flow(phone, peer, request.message.uri());
    }
    let next_hop = &request.next_hop;
    if !follows || peer.transport != Transport::Udp {
        return peer;
    }
    let Some(uri) = next_hop.as_sip() else {
        return peer;
    };
    let other_transport = uri
        .transport()
        .is_some_and(|t| !t.eq_ignore_ascii_case("udp"));
    if other_transport || uri.params().contains("maddr") || uri.is_sips() {
        return peer;
    }
    let Some(ip) = uri.host().ip() else {
        return peer;
    };
    let addr = std::net::SocketAddr::new(ip, uri.port().unwrap_or(5060));
    if addr.is_ipv4() != peer.addr.is_ipv4() {
        return peer;
    }
    // The same socket (flow) as the rest of the call, so the source matches our Via.
    Peer { addr, ..peer }
}

/// What finding a phone again needs: its bindings, and whether a connection is still open.
struct Reach<'a> {
    registrar: &'a crate::registrar::service::Handle,
    transports: Option<&'a crate::sip::transport::Transports>,
}

impl Reach<'_> {
    /// Where `msg`, sent to `to` before, goes again: the same place, or for a phone on a
    /// stream that moved to a new connection meanwhile, that one.
    fn again(&self, phone: Option<&StreamPhone>, msg: &Message, to: Peer) -> Peer {
        phone.map_or(to, |p| self.current_flow(p, to, msg.uri()))
    }

    /// Where a phone on a stream (TCP, TLS) is now: `peer`, the connection the call has with
    /// it, unless the phone has moved. A phone whose connection broke (a NAT that forgot it, a
    /// restart of its network) opens a new one and registers again over it; the call's
    /// requests then go there. The call's binding is the phone's binding with the same
    /// `+sip.instance` (RFC 5626), or without one the one whose Contact is the dialog's remote
    /// target `target`, on the same transport (a TLS phone is never reached in clear), the
    /// latest. It has moved when the call's connection is closed, or when that binding is on
    /// another flow than when the call began (a NAT that forgot a connection leaves it open on
    /// our side) from the same device; the new flow must be open. RFC 5626's flow recovery,
    /// without its flow tokens.
    fn current_flow(&self, phone: &StreamPhone, peer: Peer, target: Option<&Uri>) -> Peer {
        let Some(transports) = self.transports else {
            return peer;
        };
        let is_the_calls = |b: &crate::registrar::Binding| match &phone.instance {
            Some(i) => b.instance.as_deref() == Some(&**i),
            None => target.is_some_and(|t| same_uri(&b.contact, t)),
        };
        let binding = self
            .registrar
            .bindings_for(&phone.username)
            .into_iter()
            // Flow 0: restored after a restart, its connection gone.
            .filter(|b| b.source.flow != 0)
            .filter(|b| route::transport_of(b.source.transport) == peer.transport)
            .filter(|b| is_the_calls(b))
            .max_by_key(|b| b.updated_ms);
        let Some(b) = binding else {
            return peer;
        };
        // Registered again on another flow while ours looks open: trusted when the binding is
        // surely the same device, by its instance id, or else by its address (two devices
        // sharing an account and a private Contact behind different NATs are told apart).
        let same_device = phone.instance.is_some() || b.source.addr.ip() == peer.addr.ip();
        let moved =
            !transports.is_open(peer.flow) || (phone.flow != Some(b.source.flow) && same_device);
        if !moved || b.source.flow == peer.flow || !transports.is_open(b.source.flow) {
            return peer;
        }
        Peer {
            addr: b.source.addr,
            flow: b.source.flow,
            ..peer
        }
    }
}

/// Whether a binding's stored Contact `contact` is `uri` (RFC 3261 §19.1.4).
fn same_uri(contact: &str, uri: &Uri) -> bool {
    Uri::parse(contact).is_ok_and(|c| crate::registrar::uri_equivalent(&c, uri))
}

/// A CANCEL (or anything else sent again on a branch's INVITE) follows a phone on a stream
/// that moved to a new connection while ringing (see [`Reach::current_flow`]).
fn follow_branch(io: &mut BranchIo, reach: &Reach) {
    if let Some(invite) = &io.invite {
        io.peer = reach.again(io.stream_phone.as_ref(), invite, io.peer);
    }
}

/// The top Via names the transport the request really leaves on.
fn for_transport(mut msg: Message, transport: Transport) -> Message {
    if let Some(mut via) = msg.top_via().cloned() {
        let t = crate::sip::header::Transport::parse(transport.as_str());
        if via.transport != t {
            via.transport = t;
            let _ = msg.set_top_via(&via);
        }
    }
    msg
}

/// Our Contact and Via template for a call whose caller came in on one transport.
#[derive(Clone)]
struct Local {
    contact: NameAddr,
    via: Via,
}

/// Our Contact and Via for calls whose caller reaches us over `transport`, whose first
/// listening address is `addr`. (A server behind NAT will need an advertised address here;
/// not configurable yet.)
fn local_for(transport: Transport, addr: std::net::SocketAddr) -> Option<Local> {
    let host = Host::parse(&addr.ip().to_string()).ok()?;
    let t = transport.as_str();
    let contact = NameAddr::parse(&format!(
        "<sip:switchboard@{}:{};transport={t}>",
        host_text(&addr),
        addr.port()
    ))
    .ok()?;
    let via = Via::new(
        crate::sip::header::Transport::parse(t),
        host,
        Some(addr.port()),
        "z9hG4bK",
    );
    Some(Local { contact, via })
}

fn host_text(addr: &std::net::SocketAddr) -> String {
    match addr {
        std::net::SocketAddr::V4(a) => a.ip().to_string(),
        std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

fn digest_credentials(req: &Message) -> Option<Credentials> {
    req.credentials(&HeaderName::ProxyAuthorization)
        .filter_map(Result::ok)
        .find(|c| c.is_digest())
}

/// The relay side a message towards `towards` is meant for.
fn side_of(towards: Towards) -> Side {
    match towards {
        Towards::Caller => Side::Caller,
        Towards::Branch(_) => Side::Callee,
    }
}

/// Anchors the media of a message going to `to`: its description came from the other party,
/// who is from now on reached at the address in it (until latching finds a better one), and
/// `to` is told to send to our relay instead. Messages without a description pass unchanged.
fn anchor(media: &Option<Arc<Session>>, msg: Message, to: Side) -> Message {
    let Some(session) = media else {
        return msg;
    };
    with_sdp(msg, |text| {
        let from = match to {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        };
        if let Some(ep) = sdp::audio_endpoint(text) {
            session.set_remote(from, ep);
        }
        session.set_held(from, sdp::holds(text));
        let ours = match to {
            Side::Caller => session.caller_facing(),
            Side::Callee => session.callee_facing(),
        };
        sdp::anchor(text, ours)
    })
}

/// `msg` with its SDP replaced by `edit`'s result (unchanged when it has none, or `edit`
/// declines): the body, or its `application/sdp` part when it is multipart (a SIP-I trunk's
/// offer beside its ISUP part; the other parts stay as they are).
fn with_sdp(mut msg: Message, edit: impl FnOnce(&str) -> Option<String>) -> Message {
    let Some(content_type) = msg.content_type().map(str::trim) else {
        return msg;
    };
    let range = if content_type.eq_ignore_ascii_case("application/sdp") {
        0..msg.body().len()
    } else {
        match crate::sip::multipart::part(msg.body(), content_type, "application/sdp") {
            Some(r) => r,
            None => return msg,
        }
    };
    let Some(text) = msg
        .body()
        .get(range.clone())
        .and_then(|b| std::str::from_utf8(b).ok())
    else {
        return msg;
    };
    if let Some(new) = edit(text) {
        let body = msg.body();
        let mut out = Vec::with_capacity(body.len() + new.len());
        out.extend_from_slice(body.get(..range.start).unwrap_or_default());
        out.extend_from_slice(new.as_bytes());
        out.extend_from_slice(body.get(range.end..).unwrap_or_default());
        let _ = msg.set_body(out, None);
    }
    msg
}

/// When the callee answered with the G.711 law the caller did not offer (we offered both), the
/// relay converts between the two and the caller is shown the law it offered. Also returns the
/// conversion set up: (the caller's law, the callee's).
fn bridge_codecs(
    media: &Session,
    caller_invite: &Message,
    answer: Message,
) -> (Message, Option<(u8, u8)>) {
    // The caller's offer: the body, or its SDP part (a SIP-I offer beside binary ISUP).
    let offer = match caller_invite.content_type().map(str::trim) {
        Some(ct) if !ct.eq_ignore_ascii_case("application/sdp") => {
            crate::sip::multipart::part(caller_invite.body(), ct, "application/sdp")
                .and_then(|r| caller_invite.body().get(r))
        }
        _ => Some(caller_invite.body()),
    };
    let offered = offer
        .and_then(|b| std::str::from_utf8(b).ok())
        .map(sdp::audio_formats)
        .unwrap_or_default();
    let mut set = None;
    let answer = with_sdp(answer, |text| {
        if sdp::audio_encrypted(text) {
            // SRTP payloads are encrypted: converting them would only make noise.
            media.set_transcoding(None);
            return None;
        }
        // The first G.711 law of the answer (a telephone-event may well be listed first).
        let chosen = sdp::audio_formats(text)
            .into_iter()
            .find(|f| *f == sdp::PCMU || *f == sdp::PCMA)?;
        let other = match chosen {
            sdp::PCMU => sdp::PCMA,
            sdp::PCMA => sdp::PCMU,
            _ => return None,
        };
        if offered.contains(&chosen) || !offered.contains(&other) {
            media.set_transcoding(None);
            return None;
        }
        media.set_transcoding(Some((other, chosen)));
        set = Some((other, chosen));
        Some(sdp::swap_g711(text, chosen, other))
    });
    (answer, set)
}

/// With the relay converting between the laws, each party is shown the other's descriptions
/// (re-INVITEs, their answers, the ACKs of late offers) in its own law: the callee's law
/// becomes the caller's towards the caller, and back. Otherwise a hold offered in the callee's
/// law would reach a caller that cannot speak it.
fn shown_laws(transcode: Option<(u8, u8)>, msg: Message, to: Side) -> Message {
    let Some((caller, callee)) = transcode else {
        return msg;
    };
    let (theirs, ours) = match to {
        Side::Caller => (callee, caller),
        Side::Callee => (caller, callee),
    };
    with_sdp(msg, |text| {
        sdp::audio_formats(text)
            .contains(&theirs)
            .then(|| sdp::swap_g711(text, theirs, ours))
    })
}

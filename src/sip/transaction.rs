//! The SIP transaction layer (RFC 3261 §17, as corrected by RFC 6026),
//! written sans-IO.
//!
//! # What it owns
//!
//! Client and server transactions, their matching rules (§17.1.3,
//! §17.2.3, with the RFC 2543 fallback for branches without the
//! `z9hG4bK` cookie) and their timers: A/B/D (client INVITE), E/F/K
//! (client non-INVITE), G/H/I (server INVITE), J (server non-INVITE), the
//! RFC 6026 Accepted-state timers L and M, and the automatic 100 Trying.
//! It also generates the ACK for a non-2xx final response (§17.1.1.3),
//! picks where a response goes (§18.2.2 and the server side of RFC 3581:
//! `received` and `rport` are filled in on the incoming request), and
//! answers a CANCEL that matches nothing with 481 (§9.2).
//!
//! # What it must not touch
//!
//! Dialogs (the ACK for a 2xx and the retransmission of a 2xx belong to
//! the dialog layer, RFC 6026), sockets and DNS (the driver turns
//! [`Output::Transmit`] into writes and picks the [`Peer`] for a new
//! request), authentication, and the Timer C of proxies.
//!
//! # How it is driven
//!
//! Like quinn-proto or str0m there is no I/O and no clock in here: the
//! driver passes the current [`Instant`] to every call that can start or
//! fire a timer, calls [`TransactionLayer::handle_timeout`] once
//! [`TransactionLayer::poll_timeout`] is due, and drains
//! [`TransactionLayer::poll_output`] after every call. Because time only
//! moves when the caller says so, tests drive every timer with a virtual
//! clock.
//!
//! Limitations: `maddr` in a Via is ignored when routing responses (no
//! multicast); branches are compared case-sensitively, as every
//! implementation that generates them does. A response whose top Via
//! sent-by is not the one we sent is dropped (§18.1.2).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol_str::SmolStr;

use super::header::{HeaderName, Via};
use super::message::{self, Message, Method};
use super::uri::{Host, Uri};
use crate::idmap::{self, IdMap};

/// The RFC 3261 timer base values (§17.1.1.1, table 4 of appendix A).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// RTT estimate: first retransmission interval; 64*T1 is the
    /// transaction timeout (B, F, H) and the RFC 6026 timers L and M.
    pub t1: Duration,
    /// Cap on the retransmission interval of non-INVITE requests (E) and
    /// of non-2xx final responses to INVITE (G).
    pub t2: Duration,
    /// Maximum time a message stays in the network: timers I and K.
    pub t4: Duration,
    /// Timer D on unreliable transports (at least 32 s, §17.1.1.2).
    pub d: Duration,
}

impl Default for Timers {
    fn default() -> Timers {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            d: Duration::from_secs(32),
        }
    }
}

impl Timers {
    fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }
}

/// Layer configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    pub timers: Timers,
    /// Delay after which a server INVITE transaction sends 100 Trying on
    /// its own if the TU has not sent a provisional response (§17.2.1);
    /// `None` when the TU always answers quickly itself.
    pub trying_delay: Option<Duration>,
    /// Random bits (from the caller's RNG) mixed into the To tags of the
    /// responses the layer generates itself (481 to a stray CANCEL).
    pub tag_seed: u64,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            timers: Timers::default(),
            trying_delay: Some(Duration::from_millis(200)),
            tag_seed: 0x5eed_0f5a_17c4_b0a2,
        }
    }
}

/// The far end of a message: who sent it, or where it goes.
///
/// `flow` is opaque to the layer: the driver's id for the socket (UDP) or
/// connection (TCP/TLS/WS) a request arrived on, echoed back in the
/// [`Output::Transmit`] of its responses so they leave over the same
/// connection (§18.2.2) or socket. `reliable` decides which timers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub reliable: bool,
    pub flow: u64,
}

/// A client transaction (a request we sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTxId(u64);

/// A server transaction (a request we received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerTxId(u64);

/// Either kind of transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxId {
    Client(ClientTxId),
    Server(ServerTxId),
}

/// What the layer asks of the driver and the TU.
#[derive(Debug, Clone)]
pub enum Output {
    /// Send `bytes` to `to.addr`, over `to.flow` when it still exists.
    /// `tx` is the transaction to blame in
    /// [`TransactionLayer::transport_error`] if that fails.
    Transmit {
        to: Peer,
        bytes: Arc<[u8]>,
        tx: Option<TxId>,
    },
    /// A new request (not a retransmission). The top Via already carries
    /// `received`/`rport` (RFC 3581). Answer with
    /// [`TransactionLayer::send_response`].
    Request {
        tx: ServerTxId,
        msg: Message,
        from: Peer,
    },
    /// A CANCEL matching the INVITE server transaction `invite` (§9.2).
    /// The TU answers the CANCEL (`tx`) with 200 and, if it has not sent a
    /// final response yet, the INVITE with 487. A CANCEL matching nothing
    /// never shows up here: the layer answers it 481 itself.
    Cancel {
        tx: ServerTxId,
        invite: ServerTxId,
        msg: Message,
        from: Peer,
    },
    /// A provisional or final response for a client transaction,
    /// including 2xx retransmissions in the RFC 6026 Accepted state.
    Response { tx: ClientTxId, msg: Message },
    /// An ACK that belongs to no transaction (the ACK for a 2xx, §17):
    /// for the dialog layer.
    Ack2xx { msg: Message, from: Peer },
    /// A response that matches no client transaction (RFC 6026 §7.1.1:
    /// a proxy must not forward it).
    StrayResponse { msg: Message, from: Peer },
    /// Timer B or F (client: the TU acts as on 408) or H (server: no ACK
    /// for a non-2xx final response) fired.
    Timeout { tx: TxId },
    /// The driver reported a failed send (§8.1.3.1: the TU acts as on 503).
    TransportError { tx: TxId },
    /// The transaction is gone; its id will never be reported again.
    Terminated { tx: TxId },
}

/// Why a call from the TU was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("message is not a request")]
    NotARequest,
    #[error("message is not a response")]
    NotAResponse,
    #[error("ACK has no client transaction; use send_stateless")]
    Ack,
    #[error("request has no top Via branch")]
    NoBranch,
    #[error("a client transaction with this branch and method exists")]
    Duplicate,
    #[error("no such transaction (terminated or never existed)")]
    UnknownTransaction,
    #[error("status code outside 100-699")]
    BadStatus,
    #[error("response not allowed in the transaction's state")]
    WrongState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKind {
    A,
    B,
    D,
    E,
    F,
    K,
    M,
    G,
    H,
    I,
    J,
    L,
    Trying,
}

/// Each transaction holds at most one deadline per slot; a heap entry is
/// live only while its slot still holds its deadline (lazy deletion).
#[derive(Debug, Clone, Copy)]
enum Slot {
    Retransmit,
    Timeout,
    Linger,
    Trying,
}

impl TimerKind {
    fn slot(self) -> Slot {
        use TimerKind::*;
        match self {
            A | E | G => Slot::Retransmit,
            B | F | H => Slot::Timeout,
            D | K | M | I | J | L => Slot::Linger,
            Trying => Slot::Trying,
        }
    }

    fn is_client(self) -> bool {
        use TimerKind::*;
        matches!(self, A | B | D | E | F | K | M)
    }
}

#[derive(Debug, Default)]
struct Slots {
    retransmit: Option<Instant>,
    timeout: Option<Instant>,
    linger: Option<Instant>,
    trying: Option<Instant>,
}

impl Slots {
    fn get(&self, slot: Slot) -> Option<Instant> {
        match slot {
            Slot::Retransmit => self.retransmit,
            Slot::Timeout => self.timeout,
            Slot::Linger => self.linger,
            Slot::Trying => self.trying,
        }
    }

    fn get_mut(&mut self, slot: Slot) -> &mut Option<Instant> {
        match slot {
            Slot::Retransmit => &mut self.retransmit,
            Slot::Timeout => &mut self.timeout,
            Slot::Linger => &mut self.linger,
            Slot::Trying => &mut self.trying,
        }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Instant,
    id: u64,
    kind: TimerKind,
}

/// Pending deadlines: first-in-first-out lanes, one per timer duration, plus a heap for the
/// rest. Every timer of the layer has one of a few durations, fixed by the configuration
/// (64·T1 for B, F, H, J, L, M; T4 for I and K; T1·2ⁿ capped at T2 for the retransmissions;
/// the 100 Trying delay). Armed with a `now` that does not go back, a lane is in deadline order
/// by construction, so a timer costs O(1) to arm and to fire instead of O(log n) on a heap that
/// holds every pending Timer B, F and J under load (most of them cancelled, deleted lazily: see
/// [`TransactionLayer::is_live`]). The heap takes what does not fit: a clock that went back, or
/// more distinct durations than [`MAX_LANES`].
/// Most lanes a [`TimerQueue`] keeps; finding the earliest deadline looks at each lane's front.
const MAX_LANES: usize = 16;

#[derive(Debug, Default)]
struct TimerQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    lanes: Vec<(Duration, VecDeque<Entry>)>,
}

impl TimerQueue {
    fn push(&mut self, entry: Entry, after: Duration) {
        let lane = match self.lanes.iter().position(|(d, _)| *d == after) {
            Some(i) => Some(i),
            None if self.lanes.len() < MAX_LANES => {
                self.lanes.push((after, VecDeque::new()));
                Some(self.lanes.len() - 1)
            }
            None => None,
        };
        if let Some((_, q)) = lane.and_then(|i| self.lanes.get_mut(i)) {
            if q.back().map_or(true, |last| *last <= entry) {
                q.push_back(entry);
                return;
            }
        }
        // Out of order (a clock that went back), or no lane left for this duration.
        self.heap.push(Reverse(entry));
    }

    /// The earliest entry, and where it is (`None`: the heap; `Some(i)`: lane `i`).
    fn earliest(&self) -> Option<(&Entry, Option<usize>)> {
        let mut best = self.heap.peek().map(|Reverse(e)| (e, None));
        for (i, (_, q)) in self.lanes.iter().enumerate() {
            if let Some(front) = q.front() {
                if best.map_or(true, |(b, _)| front < b) {
                    best = Some((front, Some(i)));
                }
            }
        }
        best
    }

    fn peek(&self) -> Option<&Entry> {
        self.earliest().map(|(e, _)| e)
    }

    fn pop(&mut self) -> Option<Entry> {
        let (_, lane) = self.earliest()?;
        match lane {
            None => self.heap.pop().map(|Reverse(e)| e),
            Some(i) => self.lanes.get_mut(i).and_then(|(_, q)| q.pop_front()),
        }
    }

    fn len(&self) -> usize {
        self.heap.len() + self.lanes.iter().map(|(_, q)| q.len()).sum::<usize>()
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the entries `live` accepts (order is kept).
    fn retain(&mut self, live: impl Fn(&Entry) -> bool) {
        self.heap.retain(|Reverse(e)| live(e));
        for (_, q) in &mut self.lanes {
            q.retain(|e| live(e));
        }
    }

    /// Gives back room after a burst.
    fn shrink(&mut self) {
        if self.heap.capacity() > 8 * self.heap.len() + 1024 {
            self.heap.shrink_to(2 * self.heap.len());
        }
        for (_, q) in &mut self.lanes {
            if q.capacity() > 8 * q.len() + 1024 {
                q.shrink_to(2 * q.len());
            }
        }
    }
}

/// Arms `kind` for `id` at `now + after`. A deadline past the end of
/// `Instant` (absurd configuration) leaves the timer unarmed instead of
/// panicking.
fn arm(
    timers: &mut TimerQueue,
    slots: &mut Slots,
    id: u64,
    kind: TimerKind,
    now: Instant,
    after: Duration,
) {
    let at = now.checked_add(after);
    *slots.get_mut(kind.slot()) = at;
    if let Some(at) = at {
        timers.push(Entry { at, id, kind }, after);
    }
}

/// Transaction ids sharing one index key: almost always one (an INVITE
/// and its CANCEL share a branch), so no Vec for the common case.
#[derive(Debug)]
enum Ids {
    One(u64),
    Many(Vec<u64>),
}

impl Ids {
    fn as_slice(&self) -> &[u64] {
        match self {
            Ids::One(id) => std::slice::from_ref(id),
            Ids::Many(v) => v,
        }
    }
}

/// Keys are shared with the transaction and looked up by `&str` (no allocation per message).
/// Inline up to 23 bytes, as most branches are (ours, SIPp's, baresip's): a lookup then
/// compares bytes in the table itself instead of following a pointer to a block that, with a
/// Timer J's worth of transactions in the table, is rarely in the CPU's cache.
type Index = HashMap<SmolStr, Ids>;

fn index_insert(index: &mut Index, key: SmolStr, id: u64) {
    match index.get_mut(&*key) {
        None => {
            index.insert(key, Ids::One(id));
        }
        Some(ids) => {
            let mut v = ids.as_slice().to_vec();
            v.push(id);
            *ids = Ids::Many(v);
        }
    }
}

fn index_remove(index: &mut Index, key: &str, id: u64) {
    let empty = match index.get_mut(key) {
        None => false,
        Some(Ids::One(x)) => *x == id,
        Some(Ids::Many(v)) => {
            v.retain(|x| *x != id);
            if let [only] = v[..] {
                if let Some(ids) = index.get_mut(key) {
                    *ids = Ids::One(only);
                }
                false
            } else {
                v.is_empty()
            }
        }
    };
    if empty {
        index.remove(key);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    /// INVITE before any response.
    Calling,
    /// Non-INVITE before any response.
    Trying,
    Proceeding,
    Completed,
    /// RFC 6026: INVITE after a 2xx, absorbing nothing but passing 2xx up.
    Accepted,
}

#[derive(Debug)]
struct ClientTx {
    invite: bool,
    method: Method,
    branch: SmolStr,
    state: ClientState,
    to: Peer,
    /// The sent-by (host, port) of the Via we put on top: a response must carry it (§18.1.2).
    sent_by: (Host, u16),
    /// Wire form for retransmissions; dropped once no longer needed.
    request: Option<Arc<[u8]>>,
    /// INVITE only: the request the ACK for a non-2xx is built from. Boxed: dropped at the
    /// first final response, it would otherwise keep its room in the transaction for Timer M.
    original: Option<Box<Message>>,
    ack: Option<Arc<[u8]>>,
    interval: Duration,
    slots: Slots,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    /// Non-INVITE before any response.
    Trying,
    Proceeding,
    Completed,
    Confirmed,
    /// RFC 6026: INVITE after a 2xx.
    Accepted,
}

/// What RFC 2543 matching (§17.2.3, no cookie) compares beyond the
/// index key (Call-ID, CSeq number, From tag, branch).
#[derive(Debug)]
struct Legacy {
    uri: Option<Uri>,
    /// Top Via as received, before `received`/`rport` were added.
    via: Via,
    to_tag: Option<Box<str>>,
    /// To tag of the last response sent, which an ACK must carry.
    response_to_tag: Option<Box<str>>,
}

#[derive(Debug)]
struct ServerTx {
    method: Method,
    key: SmolStr,
    sent_by: (Host, u16),
    legacy: Option<Box<Legacy>>,
    state: ServerState,
    reply_to: Peer,
    last_response: Option<Arc<[u8]>>,
    /// Pre-built 100 Trying for the automatic one (INVITE only).
    trying: Option<Arc<[u8]>>,
    interval: Duration,
    slots: Slots,
    /// Whether the TU was told about it (not so for a CANCEL answered 481
    /// by the layer), and so must hear of its end.
    visible: bool,
}

impl ServerTx {
    fn invite(&self) -> bool {
        self.method == Method::Invite
    }
}

/// The transaction layer. See the module documentation.
#[derive(Debug)]
pub struct TransactionLayer {
    config: Config,
    next_id: u64,
    /// Boxed (a client transaction is close to 1 KiB, a server one a quarter of that): the
    /// tables grow with the load for a whole Timer J/K, and a resize then moves only pointers.
    clients: IdMap<u64, Box<ClientTx>>,
    servers: IdMap<u64, Box<ServerTx>>,
    /// By branch; the CSeq method tells an INVITE from its CANCEL.
    client_index: Index,
    /// By branch (cookie) or by a legacy key starting with a space, which
    /// no branch token can contain.
    server_index: Index,
    timers: TimerQueue,
    outputs: VecDeque<Output>,
}

fn class(status: u16) -> u16 {
    status / 100
}

/// Where a response to a request from `from` with top Via `via` goes
/// (§18.2.2, RFC 3581 §4): back over the connection when reliable,
/// otherwise to `received` (or the sent-by IP) at `rport` (or the sent-by
/// port).
fn response_peer(via: &Via, from: Peer) -> Peer {
    if from.reliable {
        return from;
    }
    let ip = via
        .received()
        .or_else(|| via.host.ip())
        .unwrap_or(from.addr.ip());
    let port = match via.rport() {
        Some(Some(p)) => p,
        _ => via.sent_by_port(),
    };
    Peer {
        addr: SocketAddr::new(ip, port),
        ..from
    }
}

/// The server side of RFC 3581 and §18.2.1: `received` when the sent-by
/// is not the source address (always when `rport` is asked for), and the
/// source port into `rport`.
///
/// Only the server writes these: a `received` or an `rport` value that
/// came in the request is replaced by what the packet really came from,
/// or responses (and their retransmissions) would go wherever the sender
/// wrote, which makes us a reflector towards a third party.
fn stamp_received(msg: &mut Message, from: Peer) {
    let Some(via) = msg.top_via() else {
        return;
    };
    let src: IpAddr = from.addr.ip().to_canonical();
    let rport = via.rport();
    let received = via.received().map(|ip| ip.to_canonical());
    let differs = via.host.ip().map(|ip| ip.to_canonical()) != Some(src);
    let needs_received = differs || rport.is_some() || received.is_some();
    let received_wrong = needs_received && received != Some(src);
    let rport_wrong = rport.is_some_and(|p| p != Some(from.addr.port()));
    if !received_wrong && !rport_wrong {
        return;
    }
    // Cannot fail for a message whose Via parsed; if it somehow did, the request still goes
    // up unchanged rather than being lost.
    let _ = msg.stamp_top_via(src, rport.is_some().then(|| from.addr.port()));
}

/// RFC 2543 index key: the parts of §17.2.3 that are the same for a
/// request, its retransmissions, its ACK and its CANCEL.
fn legacy_key(msg: &Message) -> String {
    let call_id = msg.call_id().unwrap_or("");
    let seq = msg.cseq().map_or(0, |c| c.seq);
    let from_tag = msg.from().and_then(|f| f.tag()).unwrap_or("");
    let branch = msg.top_via().and_then(Via::branch).unwrap_or("");
    format!(" {call_id} {seq} {from_tag} {branch}")
}

fn to_tag(msg: &Message) -> Option<&str> {
    msg.to().and_then(|t| t.tag())
}

/// splitmix64: spreads the seed and id into tag bits.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The ACK for a non-2xx final response (§17.1.1.3): Request-URI, top
/// Via, Call-ID, From, CSeq number and Route of the INVITE, To of the
/// response. `None` only if the INVITE lacked those headers.
fn build_ack(invite: &Message, resp: &Message) -> Option<Message> {
    let via = invite.top_via()?.to_string();
    let cseq = format!("{} ACK", invite.cseq()?.seq);
    let max_forwards = invite.max_forwards().unwrap_or(70).to_string();
    let mut ack = Message::request(Method::Ack, invite.uri()?.clone());
    ack.push_header(HeaderName::Via, &via).ok()?;
    ack.push_header(HeaderName::MaxForwards, &max_forwards)
        .ok()?;
    ack.push_header(HeaderName::From, invite.header(&HeaderName::From)?)
        .ok()?;
    ack.push_header(HeaderName::To, resp.header(&HeaderName::To)?)
        .ok()?;
    ack.push_header(HeaderName::CallId, invite.call_id()?)
        .ok()?;
    ack.push_header(HeaderName::CSeq, &cseq).ok()?;
    for (name, value) in invite.fields() {
        if *name == HeaderName::Route {
            ack.push_header(HeaderName::Route, value).ok()?;
        }
    }
    Some(ack)
}

impl TransactionLayer {
    pub fn new(config: Config) -> TransactionLayer {
        let mut config = config;
        // A zero retransmission interval would make handle_timeout spin.
        let floor = Duration::from_millis(1);
        config.timers.t1 = config.timers.t1.max(floor);
        config.timers.t2 = config.timers.t2.max(floor);
        TransactionLayer {
            config,
            next_id: 1,
            clients: idmap::new(),
            servers: idmap::new(),
            client_index: HashMap::new(),
            server_index: HashMap::new(),
            timers: TimerQueue::default(),
            outputs: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Live transactions, client and server.
    pub fn len(&self) -> usize {
        self.clients.len() + self.servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next thing to do, in order. Drain after every call.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// The earliest armed timer: call [`Self::handle_timeout`] then.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        // Drop dead entries first so a cancelled timer does not cause a
        // spurious wake-up.
        while let Some(e) = self.timers.peek() {
            if self.is_live(e) {
                return Some(e.at);
            }
            self.timers.pop();
        }
        None
    }

    /// Fires every timer due at or before `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(e) = self.timers.peek() {
            if e.at > now {
                break;
            }
            if let Some(e) = self.timers.pop() {
                self.fire(e, now);
            }
        }
        self.maybe_compact();
    }

    /// A message from the network, already parsed and framed.
    pub fn handle_incoming(&mut self, msg: Message, from: Peer, now: Instant) {
        if msg.is_request() {
            self.incoming_request(msg, from, now);
        } else {
            self.incoming_response(msg, from, now);
        }
        self.maybe_compact();
    }

    /// Starts a client transaction for `req` (not ACK) towards `to`. The
    /// top Via must carry a fresh branch ([`message::new_branch`]); a
    /// CANCEL reuses its INVITE's branch (§9.1).
    pub fn send_request(
        &mut self,
        req: Message,
        to: Peer,
        now: Instant,
    ) -> Result<ClientTxId, TxError> {
        let method = req.method().cloned().ok_or(TxError::NotARequest)?;
        if method == Method::Ack {
            return Err(TxError::Ack);
        }
        let via = req.top_via().ok_or(TxError::NoBranch)?;
        let branch = via.branch().ok_or(TxError::NoBranch)?;
        let sent_by = (via.host.clone(), via.sent_by_port());
        if self.find_client(branch, &method).is_some() {
            return Err(TxError::Duplicate);
        }
        let t = self.config.timers;
        if method == Method::Cancel {
            // §9.1: with no final response 64·T1 after the CANCEL, the INVITE counts as
            // cancelled and its transaction is destroyed. Timer B stopped at the first
            // provisional, so without this an INVITE whose callee vanished after ringing would
            // wait for ever (and so would the call that sent it).
            if let Some(inv) = self.find_client(branch, &Method::Invite) {
                if let Some(c) = self.clients.get_mut(&inv) {
                    if matches!(c.state, ClientState::Calling | ClientState::Proceeding) {
                        arm(
                            &mut self.timers,
                            &mut c.slots,
                            inv,
                            TimerKind::B,
                            now,
                            t.t1x64(),
                        );
                    }
                }
            }
        }
        let branch = SmolStr::new(branch);
        let id = self.next_id;
        self.next_id += 1;
        let invite = method == Method::Invite;
        let bytes: Arc<[u8]> = req.to_shared_bytes();
        let mut tx = ClientTx {
            invite,
            method,
            branch: branch.clone(),
            state: if invite {
                ClientState::Calling
            } else {
                ClientState::Trying
            },
            to,
            sent_by,
            request: (!to.reliable).then(|| bytes.clone()),
            original: invite.then(|| Box::new(req)),
            ack: None,
            interval: t.t1,
            slots: Slots::default(),
        };
        let (retransmit, timeout) = if invite {
            (TimerKind::A, TimerKind::B)
        } else {
            (TimerKind::E, TimerKind::F)
        };
        if !to.reliable {
            arm(&mut self.timers, &mut tx.slots, id, retransmit, now, t.t1);
        }
        arm(&mut self.timers, &mut tx.slots, id, timeout, now, t.t1x64());
        self.clients.insert(id, Box::new(tx));
        index_insert(&mut self.client_index, branch, id);
        let txid = ClientTxId(id);
        self.outputs.push_back(Output::Transmit {
            to,
            bytes,
            tx: Some(TxId::Client(txid)),
        });
        Ok(txid)
    }

    /// Sends a response on a server transaction. For an INVITE, a 2xx
    /// moves it to Accepted (RFC 6026) where further 2xx (the dialog
    /// layer's retransmissions) are still accepted until Timer L; after
    /// that, use [`Self::send_stateless`].
    pub fn send_response(
        &mut self,
        tx: ServerTxId,
        resp: Message,
        now: Instant,
    ) -> Result<(), TxError> {
        let id = tx.0;
        let status = resp.status().ok_or(TxError::NotAResponse)?;
        if !(100..=699).contains(&status) {
            return Err(TxError::BadStatus);
        }
        let t = self.config.timers;
        let s = self
            .servers
            .get_mut(&id)
            .ok_or(TxError::UnknownTransaction)?;
        let class = class(status);
        let mut terminate = false;
        if s.invite() {
            match (s.state, class) {
                (ServerState::Proceeding, 1) => {}
                (ServerState::Proceeding, 2) => {
                    s.state = ServerState::Accepted;
                    arm(
                        &mut self.timers,
                        &mut s.slots,
                        id,
                        TimerKind::L,
                        now,
                        t.t1x64(),
                    );
                }
                (ServerState::Proceeding, _) => {
                    s.state = ServerState::Completed;
                    if !s.reply_to.reliable {
                        s.interval = t.t1;
                        arm(&mut self.timers, &mut s.slots, id, TimerKind::G, now, t.t1);
                    }
                    arm(
                        &mut self.timers,
                        &mut s.slots,
                        id,
                        TimerKind::H,
                        now,
                        t.t1x64(),
                    );
                }
                (ServerState::Accepted, 2) => {}
                _ => return Err(TxError::WrongState),
            }
            // The automatic 100 is not needed any more; kept, it would stay for Timer L or H.
            s.slots.trying = None;
            s.trying = None;
            if let Some(l) = s.legacy.as_mut() {
                l.response_to_tag = to_tag(&resp).map(Box::from);
            }
        } else {
            match (s.state, class) {
                (ServerState::Trying | ServerState::Proceeding, 1) => {
                    s.state = ServerState::Proceeding;
                }
                (ServerState::Trying | ServerState::Proceeding, _) => {
                    s.state = ServerState::Completed;
                    if s.reply_to.reliable {
                        terminate = true;
                    } else {
                        arm(
                            &mut self.timers,
                            &mut s.slots,
                            id,
                            TimerKind::J,
                            now,
                            t.t1x64(),
                        );
                    }
                }
                _ => return Err(TxError::WrongState),
            }
        }
        let bytes: Arc<[u8]> = resp.to_shared_bytes();
        // Accepted never sends it again (RFC 6026 §8.5: the TU retransmits a 2xx): keeping the
        // 2xx, its session description and all, for Timer L's 32 s was a kilobyte per call.
        s.last_response = (s.state != ServerState::Accepted).then(|| bytes.clone());
        self.outputs.push_back(Output::Transmit {
            to: s.reply_to,
            bytes,
            tx: Some(TxId::Server(tx)),
        });
        if terminate {
            self.remove_server(id);
        }
        Ok(())
    }

    /// Answers a request with a final response and forgets the transaction at once, as a
    /// stateless UAS does (RFC 3261 §8.2.7): no Timer G or J, no response kept for
    /// retransmissions. A retransmission of the request starts a new transaction and is
    /// answered afresh.
    ///
    /// Meant for challenges (401/407) to unauthenticated requests, the RFC's own example:
    /// keeping them stateful lets a flood of unauthenticated requests fill the table for 64·T1
    /// (§26.1.5), and under a normal load it doubles what every registration keeps. The TU must
    /// derive the response's To tag from the request, so that a retransmission gets the same
    /// one (§8.2.7). For an INVITE, no transaction absorbs the ACK of the response: it reaches
    /// the TU as [`Output::Ack2xx`], which must ignore it (§8.2.7: a stateless UAS ignores ACK).
    /// A provisional response, or a 2xx to an INVITE, is refused with [`TxError::WrongState`]:
    /// those need the state machine.
    ///
    /// Once a provisional response went out (the automatic 100 Trying of a slow INVITE), the
    /// response is sent statefully instead: the client stopped retransmitting when it got the
    /// provisional (§17.1.1.2), so only our own retransmissions (Timer G) can make up for a
    /// lost final response.
    pub fn respond_statelessly(
        &mut self,
        tx: ServerTxId,
        resp: Message,
        now: Instant,
    ) -> Result<(), TxError> {
        let status = resp.status().ok_or(TxError::NotAResponse)?;
        if !(100..=699).contains(&status) {
            return Err(TxError::BadStatus);
        }
        if status < 200 {
            return Err(TxError::WrongState);
        }
        let s = self.servers.get(&tx.0).ok_or(TxError::UnknownTransaction)?;
        let open = if s.invite() {
            s.state == ServerState::Proceeding && status >= 300
        } else {
            matches!(s.state, ServerState::Trying | ServerState::Proceeding)
        };
        if !open {
            return Err(TxError::WrongState);
        }
        if s.last_response.is_some() {
            return self.send_response(tx, resp, now);
        }
        self.outputs.push_back(Output::Transmit {
            to: s.reply_to,
            bytes: resp.to_shared_bytes(),
            tx: None,
        });
        self.remove_server(tx.0);
        Ok(())
    }

    /// The peer of server transaction `tx` is reached elsewhere now (a phone on TCP or TLS
    /// that lost its connection and made a new one): its further responses, and their
    /// retransmissions, go to `to`. RFC 3261 §18.2.2 lets a server open a new connection to
    /// send a response when the request's one is gone; this is that, with the new connection
    /// the client opened itself.
    pub fn reroute(&mut self, tx: ServerTxId, to: Peer) {
        if let Some(s) = self.servers.get_mut(&tx.0) {
            s.reply_to = to;
        }
    }

    /// Forgets a server transaction the TU will never answer (a request from a banned source):
    /// no response, no 100 Trying, no state left behind. A retransmission of the request
    /// starts a new transaction, which the TU can discard again.
    pub fn discard(&mut self, tx: ServerTxId) {
        self.remove_server(tx.0);
    }

    /// Sends a message outside any transaction: the ACK for a 2xx and 2xx
    /// retransmissions after Timer L, both the dialog layer's business.
    pub fn send_stateless(&mut self, msg: &Message, to: Peer) {
        self.send_stateless_bytes(msg.to_shared_bytes(), to);
    }

    /// [`Self::send_stateless`] for a message already in its wire form.
    pub fn send_stateless_bytes(&mut self, bytes: Arc<[u8]>, to: Peer) {
        self.outputs.push_back(Output::Transmit {
            to,
            bytes,
            tx: None,
        });
    }

    /// The driver could not send a [`Output::Transmit`] of `tx`, and the TU hears of it. A
    /// client transaction ends (§17.1.4). A server transaction stays in its state, as RFC 6026
    /// §7.1 requires (it corrects §17.2.4): a retransmitted request still finds it and gets
    /// the response again, perhaps over a new connection, and its timers end it.
    pub fn transport_error(&mut self, tx: TxId, _now: Instant) {
        match tx {
            TxId::Client(c) => {
                if self.clients.contains_key(&c.0) {
                    self.outputs.push_back(Output::TransportError { tx });
                    self.remove_client(c.0);
                }
            }
            TxId::Server(s) => {
                if self.servers.get(&s.0).is_some_and(|s| s.visible) {
                    self.outputs.push_back(Output::TransportError { tx });
                }
            }
        }
    }

    /// A connection of ours to `addr` could not be made: every client transaction that sent
    /// over a stream to it and heard nothing yet fails with a transport error (§17.1.4), as
    /// if the send itself had failed.
    pub fn peer_unreachable(&mut self, addr: SocketAddr, now: Instant) {
        let failed: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.to.addr == addr
                    && c.to.reliable
                    && matches!(c.state, ClientState::Calling | ClientState::Trying)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in failed {
            self.transport_error(TxId::Client(ClientTxId(id)), now);
        }
    }

    // ---- client side -------------------------------------------------

    fn find_client(&self, branch: &str, method: &Method) -> Option<u64> {
        let ids = self.client_index.get(branch)?;
        ids.as_slice()
            .iter()
            .copied()
            .find(|id| self.clients.get(id).is_some_and(|c| &c.method == method))
    }

    fn incoming_response(&mut self, msg: Message, from: Peer, now: Instant) {
        let found = match (msg.top_via().and_then(Via::branch), msg.cseq()) {
            (Some(branch), Some(cseq)) => self.find_client(branch, &cseq.method),
            _ => None,
        };
        let (Some(id), Some(status)) = (found, msg.status()) else {
            self.outputs.push_back(Output::StrayResponse { msg, from });
            return;
        };
        let t = self.config.timers;
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        // §18.1.2: a response whose top Via is not the one we sent (its sent-by changed on
        // the way) is not for us, whatever its branch says.
        let ours = msg
            .top_via()
            .is_some_and(|v| v.host.matches(&c.sent_by.0) && v.sent_by_port() == c.sent_by.1);
        if !ours {
            tracing::debug!(from = %from.addr, "sip: response with a foreign sent-by dropped");
            return;
        }
        let txid = ClientTxId(id);
        let class = class(status);
        let mut terminate = false;
        let mut pass_up = true;
        if c.invite {
            match (c.state, class) {
                (ClientState::Calling | ClientState::Proceeding, 1) => {
                    c.state = ClientState::Proceeding;
                    c.slots.retransmit = None;
                    c.slots.timeout = None;
                }
                (ClientState::Calling | ClientState::Proceeding, 2) => {
                    c.state = ClientState::Accepted;
                    c.slots.retransmit = None;
                    c.slots.timeout = None;
                    c.request = None;
                    c.original = None;
                    arm(
                        &mut self.timers,
                        &mut c.slots,
                        id,
                        TimerKind::M,
                        now,
                        t.t1x64(),
                    );
                }
                (ClientState::Calling | ClientState::Proceeding, _) => {
                    c.state = ClientState::Completed;
                    c.slots.retransmit = None;
                    c.slots.timeout = None;
                    c.request = None;
                    let ack = c.original.take().and_then(|inv| build_ack(&inv, &msg));
                    c.ack = ack.map(|a| a.to_shared_bytes());
                    if let Some(bytes) = c.ack.clone() {
                        self.outputs.push_back(Output::Transmit {
                            to: c.to,
                            bytes,
                            tx: Some(TxId::Client(txid)),
                        });
                    }
                    if c.to.reliable {
                        terminate = true;
                    } else {
                        arm(&mut self.timers, &mut c.slots, id, TimerKind::D, now, t.d);
                    }
                }
                (ClientState::Accepted, 2) => {}
                (ClientState::Completed, 3..) => {
                    // The ACK got lost: resend it, the TU already knows.
                    pass_up = false;
                    if let Some(bytes) = c.ack.clone() {
                        self.outputs.push_back(Output::Transmit {
                            to: c.to,
                            bytes,
                            tx: Some(TxId::Client(txid)),
                        });
                    }
                }
                _ => pass_up = false,
            }
        } else {
            match (c.state, class) {
                (ClientState::Trying | ClientState::Proceeding, 1) => {
                    // Timer E keeps running; it switches to T2 when it
                    // next fires (§17.1.2.2).
                    c.state = ClientState::Proceeding;
                }
                (ClientState::Trying | ClientState::Proceeding, _) => {
                    c.state = ClientState::Completed;
                    c.slots.retransmit = None;
                    c.slots.timeout = None;
                    c.request = None;
                    if c.to.reliable {
                        terminate = true;
                    } else {
                        arm(&mut self.timers, &mut c.slots, id, TimerKind::K, now, t.t4);
                    }
                }
                _ => pass_up = false,
            }
        }
        if pass_up {
            self.outputs.push_back(Output::Response { tx: txid, msg });
        }
        if terminate {
            self.remove_client(id);
        }
    }

    fn remove_client(&mut self, id: u64) {
        if let Some(c) = self.clients.remove(&id) {
            index_remove(&mut self.client_index, &c.branch, id);
            self.outputs.push_back(Output::Terminated {
                tx: TxId::Client(ClientTxId(id)),
            });
        }
    }

    // ---- server side -------------------------------------------------

    /// The server transaction `msg` belongs to, looking for `method`
    /// (INVITE for an ACK or for the target of a CANCEL).
    fn find_server(&self, key: &str, method: &Method, msg: &Message, ack: bool) -> Option<u64> {
        self.find_server_where(key, msg, ack, |m| m == method)
    }

    /// [`Self::find_server`] for a transaction whose method passes `wanted`.
    fn find_server_where(
        &self,
        key: &str,
        msg: &Message,
        ack: bool,
        wanted: impl Fn(&Method) -> bool,
    ) -> Option<u64> {
        let ids = self.server_index.get(key)?;
        let via = msg.top_via()?;
        ids.as_slice().iter().copied().find(|id| {
            let Some(s) = self.servers.get(id) else {
                return false;
            };
            if !wanted(&s.method)
                || !s.sent_by.0.matches(&via.host)
                || s.sent_by.1 != via.sent_by_port()
            {
                return false;
            }
            match &s.legacy {
                None => true,
                Some(l) => {
                    let want = if ack {
                        l.response_to_tag.as_deref()
                    } else {
                        l.to_tag.as_deref()
                    };
                    msg.uri() == l.uri.as_ref() && via == &l.via && to_tag(msg) == want
                }
            }
        })
    }

    fn incoming_request(&mut self, mut msg: Message, from: Peer, now: Instant) {
        let Some(method) = msg.method().cloned() else {
            return;
        };
        let Some(via) = msg.top_via() else {
            // No Via: no transaction id and nowhere to answer; drop it.
            return;
        };
        let rfc3261 = via.is_rfc3261_branch();
        let key: Cow<'_, str> = match via.branch() {
            Some(b) if rfc3261 => Cow::Borrowed(b),
            _ => Cow::Owned(legacy_key(&msg)),
        };
        let is_ack = method == Method::Ack;
        let wanted = if is_ack { &Method::Invite } else { &method };
        let found = self.find_server(&key, wanted, &msg, is_ack);
        if is_ack {
            self.incoming_ack(found, msg, from, now);
            return;
        }
        if let Some(id) = found {
            self.retransmitted_request(id);
            return;
        }
        let cancelled = if method == Method::Cancel {
            Some(self.find_server(&key, &Method::Invite, &msg, false))
        } else {
            None
        };
        // §9.2: a CANCEL that matches a non-INVITE request gets 200 like any other that
        // matches; it changes nothing for that request, whose final answer comes anyway.
        let cancels_non_invite = matches!(cancelled, Some(None))
            && self
                .find_server_where(&key, &msg, false, |m| {
                    !matches!(m, Method::Invite | Method::Cancel | Method::Ack)
                })
                .is_some();
        let key = SmolStr::new(&*key);
        let legacy = (!rfc3261).then(|| {
            Box::new(Legacy {
                uri: msg.uri().cloned(),
                via: via.clone(),
                to_tag: to_tag(&msg).map(Box::from),
                response_to_tag: None,
            })
        });
        let sent_by = (via.host.clone(), via.sent_by_port());
        stamp_received(&mut msg, from);
        let Some(via) = msg.top_via() else {
            return;
        };
        let reply_to = response_peer(via, from);
        let id = self.next_id;
        self.next_id += 1;
        let invite = method == Method::Invite;
        let mut s = ServerTx {
            method,
            key: key.clone(),
            sent_by,
            legacy,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            reply_to,
            last_response: None,
            trying: None,
            interval: self.config.timers.t1,
            slots: Slots::default(),
            visible: true,
        };
        let txid = ServerTxId(id);
        if invite {
            if let Some(delay) = self.config.trying_delay {
                let trying: Arc<[u8]> = Message::response_to(&msg, 100, "Trying").to_shared_bytes();
                if delay.is_zero() {
                    self.outputs.push_back(Output::Transmit {
                        to: reply_to,
                        bytes: trying.clone(),
                        tx: Some(TxId::Server(txid)),
                    });
                    s.last_response = Some(trying);
                } else {
                    s.trying = Some(trying);
                    arm(
                        &mut self.timers,
                        &mut s.slots,
                        id,
                        TimerKind::Trying,
                        now,
                        delay,
                    );
                }
            }
        }
        match cancelled {
            None => self.outputs.push_back(Output::Request {
                tx: txid,
                msg,
                from,
            }),
            Some(Some(invite)) => self.outputs.push_back(Output::Cancel {
                tx: txid,
                invite: ServerTxId(invite),
                msg,
                from,
            }),
            Some(None) => {
                // §9.2: nothing to cancel. Answered here so the TU never
                // sees it; the transaction stays to absorb retransmissions.
                s.visible = false;
                let status = if cancels_non_invite { 200 } else { 481 };
                let mut rsp = Message::response_to(&msg, status, message::reason_phrase(status));
                let tag = message::new_tag(mix(self.config.tag_seed ^ id));
                let _ = rsp.set_to_tag(&tag);
                self.servers.insert(id, Box::new(s));
                index_insert(&mut self.server_index, key, id);
                let _ = self.send_response(txid, rsp, now);
                return;
            }
        }
        self.servers.insert(id, Box::new(s));
        index_insert(&mut self.server_index, key, id);
    }

    fn retransmitted_request(&mut self, id: u64) {
        let Some(s) = self.servers.get(&id) else {
            return;
        };
        // Proceeding/Completed resend the last response; Trying has none
        // yet and Confirmed/Accepted absorb (RFC 6026 §8.5: the TU
        // retransmits 2xx, not us).
        let resend = match s.state {
            ServerState::Proceeding | ServerState::Completed => s.last_response.clone(),
            _ => None,
        };
        if let Some(bytes) = resend {
            self.outputs.push_back(Output::Transmit {
                to: s.reply_to,
                bytes,
                tx: Some(TxId::Server(ServerTxId(id))),
            });
        }
    }

    fn incoming_ack(&mut self, found: Option<u64>, msg: Message, from: Peer, now: Instant) {
        let Some(id) = found else {
            self.outputs.push_back(Output::Ack2xx { msg, from });
            return;
        };
        let t4 = self.config.timers.t4;
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        match s.state {
            ServerState::Completed => {
                s.state = ServerState::Confirmed;
                s.slots.retransmit = None;
                s.slots.timeout = None;
                s.last_response = None;
                if s.reply_to.reliable {
                    self.remove_server(id);
                } else {
                    arm(&mut self.timers, &mut s.slots, id, TimerKind::I, now, t4);
                }
            }
            // RFC 6026 §8.5: an ACK in Accepted is the 2xx's, for the TU.
            ServerState::Accepted => self.outputs.push_back(Output::Ack2xx { msg, from }),
            // Retransmitted ACK, or an ACK before any final response.
            _ => {}
        }
    }

    fn remove_server(&mut self, id: u64) {
        if let Some(s) = self.servers.remove(&id) {
            index_remove(&mut self.server_index, &s.key, id);
            if s.visible {
                self.outputs.push_back(Output::Terminated {
                    tx: TxId::Server(ServerTxId(id)),
                });
            }
        }
    }

    // ---- timers ------------------------------------------------------

    fn is_live(&self, e: &Entry) -> bool {
        let slots = if e.kind.is_client() {
            self.clients.get(&e.id).map(|c| &c.slots)
        } else {
            self.servers.get(&e.id).map(|s| &s.slots)
        };
        slots.is_some_and(|s| s.get(e.kind.slot()) == Some(e.at))
    }

    fn fire(&mut self, e: Entry, now: Instant) {
        if !self.is_live(&e) {
            return;
        }
        if e.kind.is_client() {
            self.fire_client(e, now);
        } else {
            self.fire_server(e, now);
        }
    }

    fn fire_client(&mut self, e: Entry, now: Instant) {
        let t = self.config.timers;
        let id = e.id;
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        *c.slots.get_mut(e.kind.slot()) = None;
        let txid = TxId::Client(ClientTxId(id));
        match e.kind {
            TimerKind::A | TimerKind::E => {
                c.interval = match (e.kind, c.state) {
                    // INVITE doubles without a cap (§17.1.1.2).
                    (TimerKind::A, _) => c.interval.saturating_mul(2),
                    (_, ClientState::Proceeding) => t.t2,
                    _ => c.interval.saturating_mul(2).min(t.t2),
                };
                if let Some(bytes) = c.request.clone() {
                    self.outputs.push_back(Output::Transmit {
                        to: c.to,
                        bytes,
                        tx: Some(txid),
                    });
                }
                arm(&mut self.timers, &mut c.slots, id, e.kind, now, c.interval);
            }
            TimerKind::B | TimerKind::F => {
                self.outputs.push_back(Output::Timeout { tx: txid });
                self.remove_client(id);
            }
            _ => self.remove_client(id),
        }
    }

    fn fire_server(&mut self, e: Entry, now: Instant) {
        let t = self.config.timers;
        let id = e.id;
        let Some(s) = self.servers.get_mut(&id) else {
            return;
        };
        *s.slots.get_mut(e.kind.slot()) = None;
        let txid = TxId::Server(ServerTxId(id));
        match e.kind {
            TimerKind::Trying => {
                if s.state == ServerState::Proceeding && s.last_response.is_none() {
                    if let Some(bytes) = s.trying.take() {
                        s.last_response = Some(bytes.clone());
                        self.outputs.push_back(Output::Transmit {
                            to: s.reply_to,
                            bytes,
                            tx: Some(txid),
                        });
                    }
                }
            }
            TimerKind::G => {
                s.interval = s.interval.saturating_mul(2).min(t.t2);
                if let Some(bytes) = s.last_response.clone() {
                    self.outputs.push_back(Output::Transmit {
                        to: s.reply_to,
                        bytes,
                        tx: Some(txid),
                    });
                }
                arm(
                    &mut self.timers,
                    &mut s.slots,
                    id,
                    TimerKind::G,
                    now,
                    s.interval,
                );
            }
            TimerKind::H => {
                if s.visible {
                    self.outputs.push_back(Output::Timeout { tx: txid });
                }
                self.remove_server(id);
            }
            _ => self.remove_server(id),
        }
    }

    /// Cancelled timers stay in the heap until they come due; with
    /// thousands of transactions a second ending early (every answered
    /// request leaves its 32 s timeout behind) that would grow large, so
    /// rebuild once dead entries clearly dominate. Amortised O(1).
    fn maybe_compact(&mut self) {
        let live_bound = 4 * self.len() + 64;
        if self.timers.len() > 2 * live_bound {
            let mut timers = std::mem::take(&mut self.timers);
            timers.retain(|e| self.is_live(e));
            self.timers = timers;
        }
        // Tables never shrink by themselves: after a burst (a registration storm keeps tens of
        // thousands of transactions for Timer J) they would hold the burst's memory for good.
        shrink_after_burst(&mut self.servers);
        shrink_after_burst(&mut self.clients);
        shrink_after_burst(&mut self.server_index);
        shrink_after_burst(&mut self.client_index);
        if self.outputs.capacity() > 8 * self.outputs.len() + 1024 {
            self.outputs.shrink_to(2 * self.outputs.len());
        }
        self.timers.shrink();
    }
}

/// Gives back most of a table's room once it is far emptier than its capacity (checked in O(1);
/// the shrink itself is rare, so its O(n) cost is amortised over the burst that grew the table).
fn shrink_after_burst<K: Eq + std::hash::Hash, V, S: std::hash::BuildHasher>(
    map: &mut HashMap<K, V, S>,
) {
    if map.capacity() > 8 * map.len() + 1024 {
        map.shrink_to(2 * map.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message::parse;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// A virtual clock: every test starts at its own epoch and moves by
    /// adding durations, never by sleeping.
    struct Clock(Instant);

    impl Clock {
        fn at(&self, s: f64) -> Instant {
            self.0 + secs(s)
        }
        fn since(&self, t: Instant) -> f64 {
            (t - self.0).as_secs_f64()
        }
    }

    fn clock() -> Clock {
        Clock(Instant::now())
    }

    fn udp() -> Peer {
        Peer {
            addr: "192.0.2.20:5060".parse().expect("addr"),
            reliable: false,
            flow: 7,
        }
    }

    fn tcp() -> Peer {
        Peer {
            addr: "192.0.2.20:5060".parse().expect("addr"),
            reliable: true,
            flow: 9,
        }
    }

    fn msg(text: &str) -> Message {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    /// A request as a phone would send it: `via` is the whole top Via.
    fn request_via(method: &str, via: &str) -> Message {
        msg(&format!(
            "{method} sip:bob@example.com SIP/2.0\r\n\
             Via: {via}\r\n\
             Max-Forwards: 70\r\n\
             Route: <sip:p1.example.com;lr>\r\n\
             Route: <sip:p2.example.com;lr>\r\n\
             To: Bob <sip:bob@example.com>\r\n\
             From: Alice <sip:alice@example.com>;tag=a1\r\n\
             Call-ID: call-1@example.com\r\n\
             CSeq: 1 {method}\r\n\
             Content-Length: 0\r\n\r\n"
        ))
    }

    fn request(method: &str, branch: &str) -> Message {
        request_via(
            method,
            &format!("SIP/2.0/UDP 192.0.2.20:5060;branch={branch}"),
        )
    }

    /// A response as it comes back over the wire (round-tripped).
    fn response(req: &Message, status: u16, tag: Option<&str>) -> Message {
        let mut r = Message::response_to(req, status, message::reason_phrase(status));
        if let Some(tag) = tag {
            r.set_to_tag(tag).expect("tag");
        }
        msg(&String::from_utf8_lossy(&r.to_bytes()))
    }

    /// Runs every timer up to `until` in deadline order, recording when
    /// each output appeared.
    fn run(l: &mut TransactionLayer, until: Instant) -> Vec<(Instant, Output)> {
        let mut out = Vec::new();
        while let Some(at) = l.poll_timeout() {
            if at > until {
                break;
            }
            l.handle_timeout(at);
            while let Some(o) = l.poll_output() {
                out.push((at, o));
            }
        }
        out
    }

    fn drain(l: &mut TransactionLayer) -> Vec<Output> {
        std::iter::from_fn(|| l.poll_output()).collect()
    }

    fn transmit_times(c: &Clock, outs: &[(Instant, Output)]) -> Vec<f64> {
        outs.iter()
            .filter(|(_, o)| matches!(o, Output::Transmit { .. }))
            .map(|(t, _)| c.since(*t))
            .collect()
    }

    fn transmitted(o: &Output) -> Option<Message> {
        match o {
            Output::Transmit { bytes, .. } => parse(bytes).ok(),
            _ => None,
        }
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    fn layer() -> TransactionLayer {
        TransactionLayer::new(Config::default())
    }

    #[test]
    fn a_discarded_request_leaves_nothing_not_even_100_trying() {
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("INVITE", "z9hG4bKbanned"), udp(), c.at(0.0));
        let tx = match &drain(&mut l)[..] {
            [Output::Request { tx, .. }] => *tx,
            other => panic!("{other:?}"),
        };
        l.discard(tx);
        // The TU hears that the transaction is gone, and nothing goes on the wire.
        assert!(
            matches!(&drain(&mut l)[..], [Output::Terminated { tx: TxId::Server(t) }] if *t == tx)
        );
        let outs = run(&mut l, c.at(60.0));
        assert!(
            outs.iter()
                .all(|(_, o)| !matches!(o, Output::Transmit { .. })),
            "{outs:?}"
        );
        assert!(l.is_empty());
        // A retransmission is a new request for the TU to discard again.
        l.handle_incoming(request("INVITE", "z9hG4bKbanned"), udp(), c.at(61.0));
        let again = drain(&mut l);
        assert!(matches!(&again[..], [Output::Request { .. }]), "{again:?}");
    }

    // ---- client INVITE -----------------------------------------------

    #[test]
    fn invite_over_udp_retransmits_doubling_then_timer_b() {
        let c = clock();
        let mut l = layer();
        let id = l
            .send_request(request("INVITE", "z9hG4bKinv1"), udp(), c.at(0.0))
            .expect("send");
        let first = drain(&mut l);
        assert!(
            matches!(&first[..], [Output::Transmit { tx: Some(TxId::Client(t)), .. }] if *t == id)
        );
        let outs = run(&mut l, c.at(60.0));
        // Intervals 0.5, 1, 2, 4, 8, 16 s; B at 64*T1 = 32 s.
        assert!(close(
            &transmit_times(&c, &outs),
            &[0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
        ));
        let tail: Vec<_> = outs
            .iter()
            .filter(|(_, o)| !matches!(o, Output::Transmit { .. }))
            .collect();
        assert!(matches!(tail[..], [
            (t1, Output::Timeout { tx: TxId::Client(a) }),
            (_, Output::Terminated { tx: TxId::Client(b) }),
        ] if *a == id && *b == id && (c.since(*t1) - 32.0).abs() < 1e-6));
        assert!(l.is_empty());
        assert_eq!(l.poll_timeout(), None);
    }

    #[test]
    fn invite_over_tcp_is_never_retransmitted() {
        let c = clock();
        let mut l = layer();
        l.send_request(request("INVITE", "z9hG4bKinv2"), tcp(), c.at(0.0))
            .expect("send");
        assert_eq!(drain(&mut l).len(), 1);
        let outs = run(&mut l, c.at(60.0));
        assert!(transmit_times(&c, &outs).is_empty());
        assert!(matches!(outs[0].1, Output::Timeout { .. }));
        assert!((c.since(outs[0].0) - 32.0).abs() < 1e-6);
    }

    #[test]
    fn provisional_stops_timer_a_and_b() {
        let c = clock();
        let mut l = layer();
        let req = request("INVITE", "z9hG4bKinv3");
        let id = l.send_request(req.clone(), udp(), c.at(0.0)).expect("send");
        drain(&mut l);
        let mut outs = run(&mut l, c.at(0.7));
        assert_eq!(transmit_times(&c, &outs), vec![0.5]);
        l.handle_incoming(response(&req, 180, Some("b1")), udp(), c.at(0.8));
        let got = drain(&mut l);
        assert!(
            matches!(&got[..], [Output::Response { tx, msg }] if *tx == id && msg.status() == Some(180))
        );
        outs = run(&mut l, c.at(300.0));
        assert!(outs.is_empty(), "{outs:?}");
        assert_eq!(l.len(), 1);
    }

    #[test]
    fn non_2xx_is_acked_once_per_response_then_timer_d() {
        let c = clock();
        let mut l = layer();
        let req = request("INVITE", "z9hG4bKinv4");
        let id = l.send_request(req.clone(), udp(), c.at(0.0)).expect("send");
        drain(&mut l);
        let busy = response(&req, 486, Some("callee"));
        l.handle_incoming(busy.clone(), udp(), c.at(0.2));
        let got = drain(&mut l);
        assert_eq!(got.len(), 2, "{got:?}");
        let ack = transmitted(&got[0]).expect("ACK");
        assert!(
            matches!(&got[1], Output::Response { tx, msg } if *tx == id && msg.status() == Some(486))
        );

        assert_eq!(ack.method(), Some(&Method::Ack));
        assert_eq!(ack.uri(), req.uri());
        assert_eq!(ack.via_headers().len(), 1);
        assert_eq!(ack.top_via().and_then(Via::branch), Some("z9hG4bKinv4"));
        let cseq = ack.cseq().expect("cseq");
        assert_eq!((cseq.seq, &cseq.method), (1, &Method::Ack));
        assert_eq!(ack.to().and_then(|t| t.tag()), Some("callee"));
        assert_eq!(ack.from().and_then(|t| t.tag()), Some("a1"));
        assert_eq!(ack.call_id(), Some("call-1@example.com"));
        let routes: Vec<_> = ack.headers(&HeaderName::Route).collect();
        assert_eq!(
            routes,
            ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
        );
        assert!(ack.body().is_empty());

        // Retransmitted 486: ACK again, TU not bothered.
        l.handle_incoming(busy.clone(), udp(), c.at(1.0));
        let got = drain(&mut l);
        assert_eq!(got.len(), 1);
        assert_eq!(
            transmitted(&got[0]).map(|m| m.to_bytes()),
            Some(ack.to_bytes())
        );
        // No more INVITE retransmissions; D ends it 32 s after the 486.
        let outs = run(&mut l, c.at(100.0));
        assert!(
            matches!(&outs[..], [(t, Output::Terminated { .. })] if (c.since(*t) - 32.2).abs() < 1e-6),
            "{outs:?}"
        );
        assert!(l.is_empty());
        // Now it is a stray.
        l.handle_incoming(busy, udp(), c.at(101.0));
        assert!(matches!(&drain(&mut l)[..], [Output::StrayResponse { .. }]));
    }

    #[test]
    fn non_2xx_over_tcp_terminates_at_once() {
        let c = clock();
        let mut l = layer();
        let req = request("INVITE", "z9hG4bKinv5");
        l.send_request(req.clone(), tcp(), c.at(0.0)).expect("send");
        drain(&mut l);
        l.handle_incoming(response(&req, 603, Some("x")), tcp(), c.at(0.1));
        let got = drain(&mut l);
        assert!(matches!(
            &got[..],
            [
                Output::Transmit { .. },
                Output::Response { .. },
                Output::Terminated { .. }
            ]
        ));
        assert!(l.is_empty());
    }

    #[test]
    fn invite_2xx_accepted_passes_retransmissions_until_timer_m() {
        let c = clock();
        let mut l = layer();
        let req = request("INVITE", "z9hG4bKinv6");
        let id = l.send_request(req.clone(), udp(), c.at(0.0)).expect("send");
        drain(&mut l);
        let ok = response(&req, 200, Some("b2"));
        l.handle_incoming(ok.clone(), udp(), c.at(1.0));
        // No ACK from the layer for a 2xx.
        assert!(matches!(&drain(&mut l)[..], [Output::Response { tx, .. }] if *tx == id));
        l.handle_incoming(ok.clone(), udp(), c.at(2.0));
        assert!(matches!(&drain(&mut l)[..], [Output::Response { tx, .. }] if *tx == id));
        // A forked 2xx with another tag goes up too.
        l.handle_incoming(response(&req, 200, Some("b3")), udp(), c.at(3.0));
        assert_eq!(drain(&mut l).len(), 1);
        let outs = run(&mut l, c.at(100.0));
        assert!(
            matches!(&outs[..], [(t, Output::Terminated { .. })] if (c.since(*t) - 33.0).abs() < 1e-6),
            "{outs:?}"
        );
        l.handle_incoming(ok, udp(), c.at(101.0));
        assert!(matches!(&drain(&mut l)[..], [Output::StrayResponse { .. }]));
    }

    // ---- client non-INVITE -------------------------------------------

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_f_times_out() {
        let c = clock();
        let mut l = layer();
        let id = l
            .send_request(request("REGISTER", "z9hG4bKreg1"), udp(), c.at(0.0))
            .expect("send");
        drain(&mut l);
        let outs = run(&mut l, c.at(40.0));
        assert!(close(
            &transmit_times(&c, &outs),
            &[0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
        ));
        let last: Vec<_> = outs.iter().rev().take(2).collect();
        assert!(
            matches!(last[1], (t, Output::Timeout { tx: TxId::Client(x) }) if *x == id && (c.since(*t) - 32.0).abs() < 1e-6)
        );
        assert!(matches!(last[0].1, Output::Terminated { .. }));
        assert!(l.is_empty());
    }

    #[test]
    fn non_invite_provisional_switches_e_to_t2() {
        let c = clock();
        let mut l = layer();
        let req = request("OPTIONS", "z9hG4bKopt1");
        l.send_request(req.clone(), udp(), c.at(0.0)).expect("send");
        drain(&mut l);
        l.handle_incoming(response(&req, 100, None), udp(), c.at(0.1));
        assert!(matches!(&drain(&mut l)[..], [Output::Response { .. }]));
        let outs = run(&mut l, c.at(13.0));
        // E already armed for 0.5 s fires, then every T2.
        assert!(close(&transmit_times(&c, &outs), &[0.5, 4.5, 8.5, 12.5]));
    }

    #[test]
    fn non_invite_final_then_timer_k() {
        let c = clock();
        let mut l = layer();
        let req = request("REGISTER", "z9hG4bKreg2");
        l.send_request(req.clone(), udp(), c.at(0.0)).expect("send");
        drain(&mut l);
        let ok = response(&req, 200, Some("r"));
        l.handle_incoming(ok.clone(), udp(), c.at(0.2));
        assert!(matches!(&drain(&mut l)[..], [Output::Response { .. }]));
        // Retransmitted final absorbed in Completed.
        l.handle_incoming(ok, udp(), c.at(0.3));
        assert!(drain(&mut l).is_empty());
        let outs = run(&mut l, c.at(60.0));
        assert!(
            matches!(&outs[..], [(t, Output::Terminated { .. })] if (c.since(*t) - 5.2).abs() < 1e-6),
            "{outs:?}"
        );
    }

    #[test]
    fn non_invite_timer_k_is_zero_over_tcp() {
        let c = clock();
        let mut l = layer();
        let req = request("REGISTER", "z9hG4bKreg3");
        l.send_request(req.clone(), tcp(), c.at(0.0)).expect("send");
        drain(&mut l);
        assert!(run(&mut l, c.at(10.0)).is_empty());
        l.handle_incoming(response(&req, 401, Some("r")), tcp(), c.at(10.0));
        assert!(matches!(
            &drain(&mut l)[..],
            [Output::Response { .. }, Output::Terminated { .. }]
        ));
        assert!(l.is_empty());
    }

    #[test]
    fn cancel_is_its_own_client_transaction() {
        let c = clock();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKinv7");
        let inv_id = l.send_request(inv.clone(), udp(), c.at(0.0)).expect("send");
        let cancel = request("CANCEL", "z9hG4bKinv7");
        let cancel_id = l
            .send_request(cancel.clone(), udp(), c.at(0.1))
            .expect("send");
        assert_ne!(inv_id, cancel_id);
        assert_eq!(
            l.send_request(cancel.clone(), udp(), c.at(0.1)),
            Err(TxError::Duplicate)
        );
        drain(&mut l);
        l.handle_incoming(response(&cancel, 200, Some("t")), udp(), c.at(0.2));
        assert!(matches!(&drain(&mut l)[..], [Output::Response { tx, .. }] if *tx == cancel_id));
        l.handle_incoming(response(&inv, 487, Some("t")), udp(), c.at(0.3));
        let got = drain(&mut l);
        assert!(matches!(&got[1], Output::Response { tx, .. } if *tx == inv_id));
    }

    #[test]
    fn a_response_whose_sent_by_is_not_ours_is_dropped() {
        let c = clock();
        let mut l = layer();
        let req = request("OPTIONS", "z9hG4bKsentby");
        l.send_request(req.clone(), udp(), c.at(0.0)).expect("send");
        drain(&mut l);
        // Same branch, but the top Via names another host, or another port (§18.1.2).
        for via in ["192.0.2.99:5060", "192.0.2.20:5070", "192.0.2.20:5061"] {
            let other = request_via(
                "OPTIONS",
                &format!("SIP/2.0/UDP {via};branch=z9hG4bKsentby"),
            );
            l.handle_incoming(response(&other, 200, Some("t")), udp(), c.at(0.1));
            let outs = drain(&mut l);
            assert!(
                !outs.iter().any(|o| matches!(o, Output::Response { .. })),
                "{via}: {outs:?}"
            );
        }
        // Ours, with the port left out: 5060 is the default.
        let ours = request_via("OPTIONS", "SIP/2.0/UDP 192.0.2.20;branch=z9hG4bKsentby");
        l.handle_incoming(response(&ours, 200, Some("t")), udp(), c.at(0.2));
        assert!(drain(&mut l)
            .iter()
            .any(|o| matches!(o, Output::Response { .. })));
    }

    #[test]
    fn a_cancelled_invite_with_no_final_answer_ends_64_t1_after_the_cancel() {
        let c = clock();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKgone");
        let inv_id = l.send_request(inv.clone(), udp(), c.at(0.0)).expect("send");
        l.handle_incoming(response(&inv, 180, Some("t")), udp(), c.at(0.1));
        drain(&mut l);
        // Ringing: Timer B is off, the INVITE may wait for its final answer as long as it takes.
        assert!(!run(&mut l, c.at(100.0))
            .iter()
            .any(|(_, o)| matches!(o, Output::Timeout { .. })));
        // The callee vanished; our CANCEL gets its 200 but the 487 never comes.
        let cancel = request("CANCEL", "z9hG4bKgone");
        l.send_request(cancel.clone(), udp(), c.at(100.0))
            .expect("cancel");
        l.handle_incoming(response(&cancel, 200, Some("t")), udp(), c.at(100.1));
        drain(&mut l);
        let outs = run(&mut l, c.at(131.0));
        assert!(
            !outs
                .iter()
                .any(|(_, o)| matches!(o, Output::Timeout { .. })),
            "{outs:?}"
        );
        let outs = run(&mut l, c.at(133.0));
        assert!(
            outs.iter()
                .any(|(_, o)| matches!(o, Output::Timeout { tx } if *tx == TxId::Client(inv_id))),
            "{outs:?}"
        );
        assert!(l.is_empty());
    }

    #[test]
    fn send_request_refuses_what_it_cannot_handle() {
        let c = clock();
        let mut l = layer();
        assert_eq!(
            l.send_request(request("ACK", "z9hG4bKa"), udp(), c.at(0.0)),
            Err(TxError::Ack)
        );
        let resp = response(&request("INVITE", "z9hG4bKb"), 200, None);
        assert_eq!(
            l.send_request(resp, udp(), c.at(0.0)),
            Err(TxError::NotARequest)
        );
        let bare = Message::request(
            Method::Options,
            Uri::parse("sip:x@example.com").expect("uri"),
        );
        assert_eq!(
            l.send_request(bare, udp(), c.at(0.0)),
            Err(TxError::NoBranch)
        );
        assert!(l.is_empty());
    }

    // ---- server non-INVITE -------------------------------------------

    fn expect_request(l: &mut TransactionLayer) -> (ServerTxId, Message) {
        match &drain(l)[..] {
            [Output::Request { tx, msg, .. }] => (*tx, msg.clone()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn server_non_invite_absorbs_retransmission_and_ends_with_j() {
        let c = clock();
        let mut l = layer();
        let reg = request("REGISTER", "z9hG4bKsreg1");
        l.handle_incoming(reg.clone(), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        // Retransmission before any response: absorbed, nothing to send.
        l.handle_incoming(reg.clone(), udp(), c.at(0.5));
        assert!(drain(&mut l).is_empty());
        l.send_response(tx, Message::response_to(&got, 200, "OK"), c.at(0.6))
            .expect("respond");
        let sent = drain(&mut l);
        let [Output::Transmit { to, bytes, .. }] = &sent[..] else {
            panic!("{sent:?}");
        };
        assert_eq!(*to, udp());
        let first = bytes.clone();
        l.handle_incoming(reg.clone(), udp(), c.at(1.5));
        let again = drain(&mut l);
        assert!(matches!(&again[..], [Output::Transmit { bytes, .. }] if *bytes == first));
        // Second final refused.
        assert_eq!(
            l.send_response(tx, Message::response_to(&got, 500, "x"), c.at(2.0)),
            Err(TxError::WrongState)
        );
        let outs = run(&mut l, c.at(100.0));
        assert!(
            matches!(&outs[..], [(t, Output::Terminated { tx: TxId::Server(x) })] if *x == tx && (c.since(*t) - 32.6).abs() < 1e-6),
            "{outs:?}"
        );
        // After J, the same request is new again.
        l.handle_incoming(reg, udp(), c.at(101.0));
        expect_request(&mut l);
    }

    #[test]
    fn timer_queue_pops_in_deadline_order_across_lanes_and_heap() {
        let t0 = Instant::now();
        let mut q = TimerQueue::default();
        let mut want = Vec::new();
        // More distinct durations than lanes, armed at increasing times, plus one armed with a
        // clock that went back: all must come out in deadline order.
        for i in 0..(MAX_LANES as u64 + 8) {
            let now = t0 + Duration::from_millis(i);
            let after = Duration::from_millis(1000 - 37 * i);
            q.push(
                Entry {
                    at: now + after,
                    id: i,
                    kind: TimerKind::E,
                },
                after,
            );
            want.push((now + after, i));
        }
        let late = t0 + Duration::from_millis(500);
        q.push(
            Entry {
                at: late,
                id: 99,
                kind: TimerKind::E,
            },
            Duration::from_millis(1000),
        );
        want.push((late, 99));
        assert!(q.lanes.len() <= MAX_LANES);
        assert!(!q.heap.is_empty());
        want.sort();
        let mut got = Vec::new();
        while let Some(e) = q.pop() {
            got.push((e.at, e.id));
        }
        assert_eq!(got, want);
        assert!(q.is_empty());
    }

    #[test]
    fn stateless_challenge_leaves_no_transaction_behind() {
        let c = clock();
        let mut l = layer();
        let reg = request("REGISTER", "z9hG4bKchal1");
        l.handle_incoming(reg.clone(), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        // A provisional response needs the state machine.
        assert_eq!(
            l.respond_statelessly(tx, Message::response_to(&got, 100, "Trying"), c.at(0.1)),
            Err(TxError::WrongState)
        );
        l.respond_statelessly(
            tx,
            Message::response_to(&got, 401, "Unauthorized"),
            c.at(0.1),
        )
        .expect("challenge");
        let sent = drain(&mut l);
        assert!(
            matches!(&sent[..], [Output::Transmit { to, tx: None, .. }, Output::Terminated { tx: TxId::Server(x) }] if *to == udp() && *x == tx),
            "{sent:?}"
        );
        // Nothing left: no Timer J, no response kept.
        assert!(l.is_empty());
        assert_eq!(l.poll_timeout(), None);
        // A retransmission of the request is a new request, for the TU to answer afresh.
        l.handle_incoming(reg, udp(), c.at(0.5));
        let (again, _) = expect_request(&mut l);
        assert_ne!(again, tx);
        l.discard(again);
        drain(&mut l);
        // An INVITE's 2xx needs the state machine; a challenge does not, and its ACK goes up
        // to the TU, there being no transaction to absorb it.
        l.handle_incoming(request("INVITE", "z9hG4bKchal2"), udp(), c.at(1.0));
        let (inv, got) = expect_request(&mut l);
        assert_eq!(
            l.respond_statelessly(inv, Message::response_to(&got, 200, "OK"), c.at(1.0)),
            Err(TxError::WrongState)
        );
        l.respond_statelessly(inv, Message::response_to(&got, 407, "x"), c.at(1.0))
            .expect("challenge");
        let sent = drain(&mut l);
        assert!(
            matches!(
                &sent[..],
                [Output::Transmit { tx: None, .. }, Output::Terminated { .. }]
            ),
            "{sent:?}"
        );
        assert!(l.is_empty());
        l.handle_incoming(request("ACK", "z9hG4bKchal2"), udp(), c.at(1.1));
        let up = drain(&mut l);
        assert!(matches!(&up[..], [Output::Ack2xx { .. }]), "{up:?}");
        // Nothing is retransmitted: no Timer G.
        assert!(run(&mut l, c.at(40.0)).is_empty());
    }

    #[test]
    fn server_non_invite_provisional_is_resent() {
        let c = clock();
        let mut l = layer();
        let req = request("MESSAGE", "z9hG4bKsmsg");
        l.handle_incoming(req.clone(), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        l.send_response(tx, Message::response_to(&got, 100, "Trying"), c.at(0.1))
            .expect("respond");
        drain(&mut l);
        l.handle_incoming(req, udp(), c.at(0.5));
        let again = drain(&mut l);
        assert_eq!(
            again.first().and_then(transmitted).and_then(|m| m.status()),
            Some(100)
        );
    }

    #[test]
    fn server_non_invite_timer_j_is_zero_over_tcp() {
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("REGISTER", "z9hG4bKsreg2"), tcp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        l.send_response(tx, Message::response_to(&got, 200, "OK"), c.at(0.1))
            .expect("respond");
        let sent = drain(&mut l);
        assert!(
            matches!(&sent[..], [Output::Transmit { to, .. }, Output::Terminated { .. }] if *to == tcp())
        );
        assert!(l.is_empty());
        assert_eq!(
            l.send_response(tx, Message::response_to(&got, 200, "OK"), c.at(0.2)),
            Err(TxError::UnknownTransaction)
        );
    }

    // ---- server INVITE -----------------------------------------------

    #[test]
    fn server_invite_sends_100_trying_after_200ms() {
        let c = clock();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKsinv1");
        l.handle_incoming(inv.clone(), udp(), c.at(0.0));
        expect_request(&mut l);
        assert_eq!(l.poll_timeout(), Some(c.at(0.2)));
        let outs = run(&mut l, c.at(0.5));
        assert_eq!(outs.len(), 1);
        assert!((c.since(outs[0].0) - 0.2).abs() < 1e-6);
        let trying = transmitted(&outs[0].1).expect("100");
        assert_eq!(trying.status(), Some(100));
        assert_eq!(trying.to().and_then(|t| t.tag()), None);
        // The INVITE retransmission gets the 100 again.
        l.handle_incoming(inv, udp(), c.at(0.5));
        assert_eq!(
            drain(&mut l)
                .first()
                .and_then(transmitted)
                .and_then(|m| m.status()),
            Some(100)
        );
    }

    #[test]
    fn a_challenge_after_100_trying_is_sent_statefully() {
        // The caller stopped retransmitting when the 100 came: a lost 407 must be resent by us.
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("INVITE", "z9hG4bKslow407"), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        let outs = run(&mut l, c.at(0.3));
        assert_eq!(transmitted(&outs[0].1).and_then(|m| m.status()), Some(100));
        let mut challenge = Message::response_to(&got, 407, "Proxy Authentication Required");
        challenge.set_to_tag("c1").expect("tag");
        l.respond_statelessly(tx, challenge, c.at(0.4))
            .expect("respond");
        assert_eq!(
            drain(&mut l)
                .first()
                .and_then(transmitted)
                .and_then(|m| m.status()),
            Some(407)
        );
        // Timer G: the 407 again, T1 later.
        let again = run(&mut l, c.at(1.0));
        assert!(
            again
                .iter()
                .any(|(_, o)| transmitted(o).and_then(|m| m.status()) == Some(407)),
            "{again:?}"
        );
    }

    #[test]
    fn server_invite_no_auto_trying_when_tu_is_quick() {
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("INVITE", "z9hG4bKsinv2"), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        let mut ringing = Message::response_to(&got, 180, "Ringing");
        ringing.set_to_tag("uas").expect("tag");
        l.send_response(tx, ringing, c.at(0.1)).expect("respond");
        assert_eq!(drain(&mut l).len(), 1);
        assert!(run(&mut l, c.at(10.0)).is_empty());
    }

    #[test]
    fn server_invite_g_retransmits_404_then_h_times_out() {
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("INVITE", "z9hG4bKsinv3"), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        let mut nf = Message::response_to(&got, 404, "Not Found");
        nf.set_to_tag("uas").expect("tag");
        l.send_response(tx, nf, c.at(0.1)).expect("respond");
        assert_eq!(drain(&mut l).len(), 1);
        let outs = run(&mut l, c.at(60.0));
        // G: 0.5, 1, 2, 4, 4, ... from 0.1 s; H at 0.1 + 32 s.
        assert!(close(
            &transmit_times(&c, &outs),
            &[0.6, 1.6, 3.6, 7.6, 11.6, 15.6, 19.6, 23.6, 27.6, 31.6]
        ));
        let tail: Vec<_> = outs
            .iter()
            .filter(|(_, o)| !matches!(o, Output::Transmit { .. }))
            .collect();
        assert!(
            matches!(tail[..], [
            (t, Output::Timeout { tx: TxId::Server(a) }),
            (_, Output::Terminated { tx: TxId::Server(b) }),
        ] if *a == tx && *b == tx && (c.since(*t) - 32.1).abs() < 1e-6),
            "{tail:?}"
        );
        assert!(l.is_empty());
    }

    #[test]
    fn server_invite_absorbs_ack_for_non_2xx_then_timer_i() {
        let c = clock();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKsinv4");
        l.handle_incoming(inv.clone(), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        let mut busy = Message::response_to(&got, 486, "Busy Here");
        busy.set_to_tag("uas").expect("tag");
        l.send_response(tx, busy, c.at(0.1)).expect("respond");
        drain(&mut l);
        // INVITE retransmission in Completed: the 486 again.
        l.handle_incoming(inv.clone(), udp(), c.at(0.3));
        assert_eq!(
            drain(&mut l)
                .first()
                .and_then(transmitted)
                .and_then(|m| m.status()),
            Some(486)
        );
        let mut ack = request("ACK", "z9hG4bKsinv4");
        ack.set_to_tag("uas").expect("tag");
        l.handle_incoming(ack.clone(), udp(), c.at(0.4));
        assert!(drain(&mut l).is_empty());
        l.handle_incoming(ack, udp(), c.at(0.5));
        assert!(drain(&mut l).is_empty());
        let outs = run(&mut l, c.at(60.0));
        // No G retransmissions after the ACK; I = T4 after it.
        assert!(
            matches!(&outs[..], [(t, Output::Terminated { .. })] if (c.since(*t) - 5.4).abs() < 1e-6),
            "{outs:?}"
        );
    }

    #[test]
    fn server_invite_ack_over_tcp_terminates_at_once() {
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("INVITE", "z9hG4bKsinv5"), tcp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        l.send_response(tx, Message::response_to(&got, 480, "x"), c.at(0.1))
            .expect("respond");
        drain(&mut l);
        assert!(run(&mut l, c.at(1.0)).is_empty());
        l.handle_incoming(request("ACK", "z9hG4bKsinv5"), tcp(), c.at(1.0));
        assert!(matches!(&drain(&mut l)[..], [Output::Terminated { .. }]));
    }

    #[test]
    fn server_invite_2xx_accepted_passes_ack_up_until_timer_l() {
        let c = clock();
        let mut l = layer();
        let inv = request("INVITE", "z9hG4bKsinv6");
        l.handle_incoming(inv.clone(), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        let mut ok = Message::response_to(&got, 200, "OK");
        ok.set_to_tag("uas").expect("tag");
        l.send_response(tx, ok.clone(), c.at(0.1)).expect("respond");
        assert_eq!(drain(&mut l).len(), 1);
        // The layer does not retransmit the 2xx; the TU may.
        assert!(run(&mut l, c.at(5.0)).is_empty());
        l.send_response(tx, ok, c.at(5.0))
            .expect("2xx retransmission");
        assert_eq!(drain(&mut l).len(), 1);
        // INVITE retransmission absorbed in Accepted.
        l.handle_incoming(inv, udp(), c.at(5.1));
        assert!(drain(&mut l).is_empty());
        // The 2xx ACK has its own branch: no transaction, up it goes.
        let mut ack = request("ACK", "z9hG4bKother");
        ack.set_to_tag("uas").expect("tag");
        l.handle_incoming(ack, udp(), c.at(5.2));
        assert!(
            matches!(&drain(&mut l)[..], [Output::Ack2xx { msg, from }] if msg.method() == Some(&Method::Ack) && *from == udp())
        );
        // Even one reusing the INVITE branch (RFC 6026 §8.5).
        l.handle_incoming(request("ACK", "z9hG4bKsinv6"), udp(), c.at(5.3));
        assert!(matches!(&drain(&mut l)[..], [Output::Ack2xx { .. }]));
        let outs = run(&mut l, c.at(60.0));
        assert!(
            matches!(&outs[..], [(t, Output::Terminated { .. })] if (c.since(*t) - 32.1).abs() < 1e-6),
            "{outs:?}"
        );
    }

    #[test]
    fn cancel_is_matched_to_its_invite() {
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("INVITE", "z9hG4bKsinv7"), udp(), c.at(0.0));
        let (inv_tx, _) = expect_request(&mut l);
        let cancel = request("CANCEL", "z9hG4bKsinv7");
        l.handle_incoming(cancel.clone(), udp(), c.at(0.1));
        let got = drain(&mut l);
        let [Output::Cancel {
            tx, invite, msg, ..
        }] = &got[..]
        else {
            panic!("{got:?}");
        };
        assert_eq!(*invite, inv_tx);
        assert_ne!(*tx, inv_tx);
        let cancel_tx = *tx;
        l.send_response(cancel_tx, Message::response_to(msg, 200, "OK"), c.at(0.2))
            .expect("200 to CANCEL");
        assert_eq!(drain(&mut l).len(), 1);
        // The CANCEL's retransmission gets its 200, the INVITE is untouched.
        l.handle_incoming(cancel, udp(), c.at(0.6));
        let got = drain(&mut l);
        assert!(
            matches!(&got[..], [Output::Transmit { tx: Some(TxId::Server(t)), .. }] if *t == cancel_tx)
        );
        assert_eq!(
            got.first().and_then(transmitted).and_then(|m| m.status()),
            Some(200)
        );
    }

    #[test]
    fn a_cancel_of_a_non_invite_gets_200_and_changes_nothing() {
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("OPTIONS", "z9hG4bKopt9"), udp(), c.at(0.0));
        let (opt_tx, opt) = expect_request(&mut l);
        l.handle_incoming(request("CANCEL", "z9hG4bKopt9"), udp(), c.at(0.1));
        let got = drain(&mut l);
        assert_eq!(
            got.first().and_then(transmitted).and_then(|m| m.status()),
            Some(200),
            "{got:?}"
        );
        // The OPTIONS still gets its own final answer.
        l.send_response(opt_tx, Message::response_to(&opt, 200, "OK"), c.at(0.2))
            .expect("the OPTIONS is still ours to answer");
    }

    #[test]
    fn unmatched_cancel_is_answered_481_by_the_layer() {
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("CANCEL", "z9hG4bKnothing"), udp(), c.at(0.0));
        let got = drain(&mut l);
        assert_eq!(got.len(), 1, "{got:?}");
        let rsp = transmitted(&got[0]).expect("481");
        assert_eq!(rsp.status(), Some(481));
        assert!(rsp.to().and_then(|t| t.tag()).is_some());
        // Never shown to the TU, so its end is silent too.
        assert!(run(&mut l, c.at(60.0)).is_empty());
        assert!(l.is_empty());
    }

    // ---- RFC 3581, legacy, robustness --------------------------------

    #[test]
    fn rport_and_received_are_filled_in_and_used() {
        let c = clock();
        let mut l = layer();
        let nat = Peer {
            addr: "203.0.113.5:40000".parse().expect("addr"),
            reliable: false,
            flow: 3,
        };
        let req = request_via(
            "REGISTER",
            "SIP/2.0/UDP 10.0.0.1:5060;rport;branch=z9hG4bKnat1",
        );
        l.handle_incoming(req, nat, c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        let via = got.top_via().expect("via");
        assert_eq!(via.received(), Some("203.0.113.5".parse().expect("ip")));
        assert_eq!(via.rport(), Some(Some(40000)));
        assert_eq!(via.branch(), Some("z9hG4bKnat1"));
        l.send_response(tx, Message::response_to(&got, 200, "OK"), c.at(0.1))
            .expect("respond");
        let sent = drain(&mut l);
        let [Output::Transmit { to, bytes, .. }] = &sent[..] else {
            panic!("{sent:?}");
        };
        assert_eq!(*to, nat);
        let text = String::from_utf8_lossy(bytes);
        assert!(text.contains("received=203.0.113.5"), "{text}");
        assert!(text.contains("rport=40000"), "{text}");

        // No rport: received only, and the sent-by port.
        let req = request_via("OPTIONS", "SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bKnat2");
        l.handle_incoming(req, nat, c.at(1.0));
        let (tx, got) = expect_request(&mut l);
        let via = got.top_via().expect("via");
        assert_eq!(via.received(), Some("203.0.113.5".parse().expect("ip")));
        assert_eq!(via.rport(), None);
        l.send_response(tx, Message::response_to(&got, 200, "OK"), c.at(1.1))
            .expect("respond");
        let sent = drain(&mut l);
        assert!(
            matches!(&sent[..], [Output::Transmit { to, .. }] if to.addr == "203.0.113.5:5070".parse().expect("addr") && to.flow == 3)
        );

        // sent-by already right: the Via is left alone.
        let req = request("OPTIONS", "z9hG4bKnat3");
        l.handle_incoming(req, udp(), c.at(2.0));
        let (_, got) = expect_request(&mut l);
        assert!(got
            .top_via()
            .is_some_and(|v| !v.params.contains("received")));
    }

    #[test]
    fn received_and_rport_written_by_the_sender_are_replaced() {
        // A request that names a third party in its own Via must not make us send there.
        let c = clock();
        let mut l = layer();
        let src = Peer {
            addr: "203.0.113.5:40000".parse().expect("addr"),
            reliable: false,
            flow: 2,
        };
        for (i, via) in [
            "SIP/2.0/UDP 203.0.113.5:40000;received=198.51.100.7;rport=9999;branch=z9hG4bKrefl1",
            "SIP/2.0/UDP 203.0.113.5:40000;received=198.51.100.7;branch=z9hG4bKrefl2",
            "SIP/2.0/UDP 203.0.113.5:40000;rport=9999;branch=z9hG4bKrefl3",
            "SIP/2.0/UDP 10.0.0.1:5060;received=198.51.100.7;rport;branch=z9hG4bKrefl4",
        ]
        .into_iter()
        .enumerate()
        {
            let t = i as f64;
            l.handle_incoming(request_via("OPTIONS", via), src, c.at(t));
            let (tx, got) = expect_request(&mut l);
            let v = got.top_via().expect("via");
            assert_eq!(
                v.received(),
                Some("203.0.113.5".parse().expect("ip")),
                "{via}"
            );
            assert!(matches!(v.rport(), None | Some(Some(40000))), "{via}");
            l.send_response(tx, Message::response_to(&got, 200, "OK"), c.at(t + 0.1))
                .expect("respond");
            let sent = drain(&mut l);
            let [Output::Transmit { to, .. }] = &sent[..] else {
                panic!("{sent:?}");
            };
            assert_eq!(to.addr, src.addr, "{via}");
        }
    }

    #[test]
    fn rport_with_multiple_vias_in_one_field() {
        let c = clock();
        let mut l = layer();
        let nat = Peer {
            addr: "203.0.113.9:1234".parse().expect("addr"),
            reliable: false,
            flow: 1,
        };
        let req = request_via(
            "OPTIONS",
            "SIP/2.0/UDP proxy.example.com;rport;branch=z9hG4bKtwo, SIP/2.0/UDP 10.1.1.1;branch=z9hG4bKfirst",
        );
        l.handle_incoming(req, nat, c.at(0.0));
        let (_, got) = expect_request(&mut l);
        assert_eq!(got.via_headers().len(), 2);
        assert_eq!(got.via_headers()[0].rport(), Some(Some(1234)));
        assert_eq!(got.via_headers()[1].branch(), Some("z9hG4bKfirst"));
        let reparsed = parse(&got.to_bytes()).expect("reparse");
        assert_eq!(reparsed.via_headers(), got.via_headers());
    }

    #[test]
    fn rport_over_ipv6() {
        let c = clock();
        let mut l = layer();
        let src = Peer {
            addr: "[2001:db8::7]:5999".parse().expect("addr"),
            reliable: false,
            flow: 2,
        };
        let req = request_via(
            "OPTIONS",
            "SIP/2.0/UDP [2001:db8::1]:5060;rport;branch=z9hG4bKv6",
        );
        l.handle_incoming(req, src, c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        let via = got.top_via().expect("via");
        assert_eq!(via.received(), Some("2001:db8::7".parse().expect("ip")));
        assert_eq!(via.rport(), Some(Some(5999)));
        l.send_response(tx, Message::response_to(&got, 200, "OK"), c.at(0.1))
            .expect("respond");
        let sent = drain(&mut l);
        assert!(matches!(&sent[..], [Output::Transmit { to, .. }] if *to == src));
        let reparsed = sent.first().and_then(transmitted).expect("reparse");
        assert_eq!(reparsed.top_via(), got.top_via());
    }

    #[test]
    fn legacy_branch_requests_match_by_rfc2543_rules() {
        let c = clock();
        let mut l = layer();
        // An RFC 2543 phone: branch without the cookie.
        let inv = request("INVITE", "oldphone1");
        l.handle_incoming(inv.clone(), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        l.handle_incoming(inv.clone(), udp(), c.at(0.5));
        // Retransmission: the auto 100, no second Request.
        let again = drain(&mut l);
        assert!(
            again.iter().all(|o| matches!(o, Output::Transmit { .. })),
            "{again:?}"
        );
        let mut busy = Message::response_to(&got, 486, "Busy Here");
        busy.set_to_tag("uas9").expect("tag");
        l.send_response(tx, busy, c.at(0.6)).expect("respond");
        drain(&mut l);
        // ACK with the wrong To tag does not match: it goes up as a 2xx ACK.
        let mut wrong = request("ACK", "oldphone1");
        wrong.set_to_tag("other").expect("tag");
        l.handle_incoming(wrong, udp(), c.at(0.7));
        assert!(matches!(&drain(&mut l)[..], [Output::Ack2xx { .. }]));
        // The right ACK is absorbed and stops G.
        let mut ack = request("ACK", "oldphone1");
        ack.set_to_tag("uas9").expect("tag");
        l.handle_incoming(ack, udp(), c.at(0.8));
        assert!(drain(&mut l).is_empty());
        let outs = run(&mut l, c.at(60.0));
        assert!(
            matches!(&outs[..], [(_, Output::Terminated { .. })]),
            "{outs:?}"
        );

        // A Via without any branch at all works too.
        let req = request_via("OPTIONS", "SIP/2.0/UDP 192.0.2.20:5060");
        l.handle_incoming(req.clone(), udp(), c.at(61.0));
        let (tx, got) = expect_request(&mut l);
        l.send_response(tx, Message::response_to(&got, 200, "OK"), c.at(61.1))
            .expect("respond");
        drain(&mut l);
        l.handle_incoming(req, udp(), c.at(61.5));
        assert!(matches!(&drain(&mut l)[..], [Output::Transmit { .. }]));
    }

    #[test]
    fn same_branch_from_another_sent_by_is_another_transaction() {
        let c = clock();
        let mut l = layer();
        l.handle_incoming(request("OPTIONS", "z9hG4bKdup"), udp(), c.at(0.0));
        expect_request(&mut l);
        let other = request_via("OPTIONS", "SIP/2.0/UDP 192.0.2.99:5060;branch=z9hG4bKdup");
        l.handle_incoming(other, udp(), c.at(0.1));
        expect_request(&mut l);
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn a_transport_error_leaves_a_server_transaction_to_its_timers() {
        // RFC 6026 §7.1: the response could not be sent; the retransmitted request still
        // finds the transaction and gets the response, and Timer J ends it as usual.
        let c = clock();
        let mut l = layer();
        let req = request("OPTIONS", "z9hG4bKterr");
        l.handle_incoming(req.clone(), udp(), c.at(0.0));
        let (tx, got) = expect_request(&mut l);
        l.send_response(tx, Message::response_to(&got, 200, "OK"), c.at(0.1))
            .expect("respond");
        drain(&mut l);
        l.transport_error(TxId::Server(tx), c.at(0.1));
        assert!(matches!(
            &drain(&mut l)[..],
            [Output::TransportError { .. }]
        ));
        l.handle_incoming(req, udp(), c.at(0.6));
        assert_eq!(
            drain(&mut l)
                .first()
                .and_then(transmitted)
                .and_then(|m| m.status()),
            Some(200)
        );
        run(&mut l, c.at(40.0));
        assert!(l.is_empty());
    }

    #[test]
    fn an_unreachable_peer_fails_what_was_sent_to_it_and_nothing_else() {
        let c = clock();
        let mut l = layer();
        let waiting = l
            .send_request(request("INVITE", "z9hG4bKu1"), tcp(), c.at(0.0))
            .expect("send");
        let answered_req = request("OPTIONS", "z9hG4bKu2");
        l.send_request(answered_req.clone(), tcp(), c.at(0.0))
            .expect("send");
        let elsewhere = Peer {
            addr: "192.0.2.99:5060".parse().unwrap(),
            ..tcp()
        };
        l.send_request(request("OPTIONS", "z9hG4bKu3"), elsewhere, c.at(0.0))
            .expect("send");
        l.handle_incoming(response(&answered_req, 100, None), tcp(), c.at(0.05));
        drain(&mut l);
        l.peer_unreachable(tcp().addr, c.at(0.1));
        let failed: Vec<TxId> = drain(&mut l)
            .into_iter()
            .filter_map(|o| match o {
                Output::TransportError { tx } => Some(tx),
                _ => None,
            })
            .collect();
        // Only the one that heard nothing yet: an answer proves the connection was made.
        assert_eq!(failed, vec![TxId::Client(waiting)]);
    }

    #[test]
    fn stray_response_and_transport_error() {
        let c = clock();
        let mut l = layer();
        let req = request("OPTIONS", "z9hG4bKte");
        l.handle_incoming(response(&req, 200, None), udp(), c.at(0.0));
        assert!(matches!(&drain(&mut l)[..], [Output::StrayResponse { .. }]));
        let id = l.send_request(req, udp(), c.at(0.0)).expect("send");
        drain(&mut l);
        l.transport_error(TxId::Client(id), c.at(0.1));
        let got = drain(&mut l);
        assert!(matches!(
            &got[..],
            [Output::TransportError { .. }, Output::Terminated { .. }]
        ));
        assert!(l.is_empty());
        assert!(run(&mut l, c.at(100.0)).is_empty());
    }

    #[test]
    fn built_messages_missing_headers_do_not_panic() {
        let c = clock();
        let mut l = layer();
        let uri = Uri::parse("sip:x@example.com").expect("uri");
        l.handle_incoming(
            Message::request(Method::Invite, uri.clone()),
            udp(),
            c.at(0.0),
        );
        l.handle_incoming(Message::request(Method::Ack, uri.clone()), udp(), c.at(0.0));
        l.handle_incoming(Message::response(200, "OK"), udp(), c.at(0.0));
        let mut via_only = Message::request(Method::Cancel, uri);
        via_only
            .push_header(HeaderName::Via, "SIP/2.0/UDP h;branch=z9hG4bKx")
            .expect("via");
        l.handle_incoming(via_only, udp(), c.at(0.0));
        drain(&mut l);
        run(&mut l, c.at(100.0));
        assert_eq!(
            l.send_response(ServerTxId(999), Message::response(200, "OK"), c.at(0.0)),
            Err(TxError::UnknownTransaction)
        );
    }

    #[test]
    fn many_transactions_leave_nothing_behind() {
        let c = clock();
        let mut l = layer();
        for i in 0..2000 {
            let req = request("REGISTER", &format!("z9hG4bKbulk{i}"));
            l.send_request(req.clone(), udp(), c.at(0.0)).expect("send");
            l.handle_incoming(response(&req, 200, Some("t")), udp(), c.at(0.1));
            let srv = request("REGISTER", &format!("z9hG4bKin{i}"));
            l.handle_incoming(srv, udp(), c.at(0.1));
        }
        let ids: Vec<_> = drain(&mut l)
            .into_iter()
            .filter_map(|o| match o {
                Output::Request { tx, msg, .. } => Some((tx, msg)),
                _ => None,
            })
            .collect();
        for (tx, msg) in ids {
            l.send_response(tx, Message::response_to(&msg, 200, "OK"), c.at(0.2))
                .expect("respond");
        }
        assert_eq!(l.len(), 4000);
        run(&mut l, c.at(100.0));
        assert!(l.is_empty());
        assert!(l.client_index.is_empty() && l.server_index.is_empty());
        assert_eq!(l.poll_timeout(), None);
        assert!(l.timers.is_empty());
    }
}

//! The RTP/RTCP relay: media of every call passes through us (anchoring), on threads of its
//! own, never on the tokio runtime that carries signalling.
//!
//! A [`Session`] is one call's media: two sides (the caller's and the callee's), each with an
//! RTP and an RTCP socket (ports `p` and `p + 1`, `p` even, from the configured range). What
//! arrives on one side leaves from the other side's socket of the same kind, towards where that
//! party really sends from (latching: the source of its first packet, which is what a phone
//! behind NAT can be reached at) or, until it has sent anything, where its description said.
//! RFC 4733 telephone-events are RTP like any other and pass through unchanged.
//!
//! Each session lives on one worker thread (round robin); a worker waits on all its sockets with
//! `mio` and relays every datagram it can read before it waits again.
//!
//! Sockets outlive their sessions. Dropping the [`Session`] parks its two port pairs in its
//! worker, still bound and still watched, and a later session on that worker takes them again
//! once they have been parked for [`RelayConfig::reuse_after`]; pairs parked for
//! [`RelayConfig::close_after`] are closed. Opening and closing four sockets per call was eight
//! per cent of a signalled call's CPU (`socket`, `bind`, `epoll_ctl`, `close`, four of each, with
//! the kernel's socket set-up behind them). Whatever reaches a parked pair is read and dropped,
//! and the wait before reuse keeps the last packets of the old call from latching the new one.
//!
//! A side can also be played to ([`Session::play`]): the worker then sends that party 20 ms
//! G.711 frames of a tone or prompt (`media::tone`) from the side's own RTP socket, with an RTP
//! stream of its own, and holds back what the other side sends it until the playing stops.
//!
//! With [`RelayConfig::kernel_forwarding`], a worker hands each stream that needs nothing of us
//! but forwarding (its sender latched, the other party's address known, no transcoding, nothing
//! played or continued, no echo) to the kernel (`media::netfilter`) as soon as that becomes
//! true, and takes it back as soon as it stops being so; the latching rules stay here, since
//! whatever the kernel does not match (a stranger, a party that moved) still arrives on our
//! sockets.
//!
//! Owns: sockets, ports, the worker threads, RTP framing of what we play. Must not touch: SIP,
//! SDP text (see `media::sdp`), tone synthesis (`media::tone`).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token, Waker};

use super::netfilter::{Forward, Netfilter, NetfilterError};
use super::sdp::{Endpoint, PCMA};
use super::tone::{Sound, Source, FRAME};
use crate::idmap::{self, IdMap};

/// Largest datagram relayed; RTP over Ethernet never comes close.
const MAX_DATAGRAM: usize = 2048;
const WAKER: Token = Token(0);

/// Which party of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Caller,
    Callee,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::Caller => Side::Callee,
            Side::Callee => Side::Caller,
        }
    }

    fn index(self) -> usize {
        match self {
            Side::Caller => 0,
            Side::Callee => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Address the sockets bind to (often the unspecified address).
    pub bind: IpAddr,
    /// Address written into descriptions: where phones send to.
    pub advertise: IpAddr,
    /// Even-numbered RTP ports are taken from `min..max` (RTCP gets the next one).
    pub port_min: u16,
    pub port_max: u16,
    /// Worker threads; 0 means one per CPU.
    pub threads: usize,
    /// How long a port pair stays parked after its session before another session takes it:
    /// long enough for the old call's packets still in flight to arrive and be dropped.
    pub reuse_after: Duration,
    /// How long a port pair stays parked unused before its sockets are closed.
    pub close_after: Duration,
    /// Hand streams that need nothing but forwarding to the kernel (`media::netfilter`).
    pub kernel_forwarding: bool,
}

impl RelayConfig {
    /// [`RelayConfig::reuse_after`] unless a test wants otherwise.
    pub const REUSE_AFTER: Duration = Duration::from_millis(500);
    /// [`RelayConfig::close_after`] unless a test wants otherwise.
    pub const CLOSE_AFTER: Duration = Duration::from_secs(10);
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no free RTP port pair in {min}-{max}")]
    NoPorts { min: u16, max: u16 },
    #[error("media worker: {0}")]
    Io(#[from] io::Error),
    #[error("media kernel forwarding: {0}")]
    Netfilter(#[from] NetfilterError),
}

/// Relay counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Packets relayed, by the workers or (as read every few seconds) by the kernel.
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// Datagrams that had nowhere to go yet (the other side not known).
    pub dropped: AtomicU64,
    /// Streams forwarded by the kernel now (`media::netfilter`).
    pub kernel_streams: AtomicU64,
}

/// The relay: port pool and workers. Cheap to share.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    config: RelayConfig,
    workers: Vec<Worker>,
    ports: Arc<Ports>,
    next_worker: AtomicUsize,
    next_session: AtomicU64,
    counters: Arc<Counters>,
    kernel: Option<Netfilter>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(k) = &self.kernel {
            k.stop();
        }
    }
}

struct Worker {
    commands: std_mpsc::Sender<Command>,
    waker: Arc<Waker>,
    /// Set by the first command since the worker last looked at its queue, which alone wakes
    /// it: the signalling side sends several commands per call in a burst, and a wake-up is
    /// a system call here and a context switch there.
    notified: Arc<AtomicBool>,
    /// The worker has sessions and looks at its queue every few milliseconds by itself.
    busy: Arc<AtomicBool>,
}

/// The RTP ports of the pairs not in a session, shared by the signalling side (which hands them
/// out and takes them back) and the workers (which close what stayed parked too long).
struct Ports {
    /// Pairs without sockets.
    unbound: Mutex<VecDeque<u16>>,
    /// Per worker, the pairs it keeps open for reuse, with when each was parked, oldest first.
    parked: Vec<Mutex<VecDeque<(u16, Instant)>>>,
    reuse_after: Duration,
    close_after: Duration,
}

/// A port pair given to a new session.
enum Pair {
    /// Just bound: the worker is to watch the sockets.
    Fresh(u16, [UdpSocket; 2]),
    /// Parked in the worker since the instant given.
    Parked(u16, Instant),
}

impl Pair {
    fn port(&self) -> u16 {
        match self {
            Pair::Fresh(p, _) | Pair::Parked(p, _) => *p,
        }
    }
}

enum Command {
    Add {
        id: u64,
        /// The caller's pair and the callee's.
        pairs: [Pair; 2],
        activity: Arc<Activity>,
    },
    Remote {
        id: u64,
        side: Side,
        endpoint: Option<Endpoint>,
    },
    Remove {
        id: u64,
    },
    Transcode {
        id: u64,
        codecs: Option<(u8, u8)>,
    },
    Play {
        id: u64,
        side: Side,
        /// The sound and the payload type (PCMU or PCMA) to send it as; `None` stops.
        sound: Option<(Sound, u8)>,
    },
    Echo {
        id: u64,
    },
}

/// One call's media. Dropping it ends the relay and frees the ports.
pub struct Session {
    id: u64,
    worker: usize,
    ports: [u16; 2],
    caller_rtp: SocketAddr,
    callee_rtp: SocketAddr,
    activity: Arc<Activity>,
    /// Each party's latest description holds the call (see [`Session::set_held`]).
    held: [AtomicBool; 2],
    inner: Arc<Inner>,
}

/// When a session last received anything (RTP or RTCP, either side), for the signalling side
/// to notice a call whose parties have gone silent for good.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: std::time::Instant,
    /// Milliseconds since `epoch` of the last datagram received.
    last_ms: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            epoch: std::time::Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Something arrived in the worker's round that began at `round`: one clock reading per
    /// round, not one per datagram (reading the clock was 2 % of the relay's CPU).
    pub(super) fn touch(&self, round: Instant) {
        let ms = round.saturating_duration_since(self.epoch).as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("caller_rtp", &self.caller_rtp)
            .field("callee_rtp", &self.callee_rtp)
            .finish()
    }
}

impl Relay {
    /// Starts the worker threads.
    pub fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.threads
        };
        let counters = Arc::new(Counters::default());
        let first = config.port_min + config.port_min % 2;
        let ports = Arc::new(Ports {
            unbound: Mutex::new(
                (first..config.port_max.saturating_sub(1))
                    .step_by(2)
                    .collect(),
            ),
            parked: (0..threads).map(|_| Mutex::default()).collect(),
            reuse_after: config.reuse_after,
            close_after: config.close_after,
        });
        let kernel = if config.kernel_forwarding {
            Some(Netfilter::start(counters.clone())?)
        } else {
            None
        };
        let mut workers = Vec::with_capacity(threads);
        for i in 0..threads {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
            let (tx, rx) = std_mpsc::channel();
            let counters = counters.clone();
            let notified = Arc::new(AtomicBool::new(false));
            let busy = Arc::new(AtomicBool::new(false));
            let flags = WorkerFlags {
                notified: notified.clone(),
                busy: busy.clone(),
            };
            let parked = Parked {
                ports: ports.clone(),
                worker: i,
                sockets: idmap::new(),
                backlog: Default::default(),
            };
            let kernel = kernel.clone().map(|nf| Kernel::new(nf, config.bind));
            std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || run_worker(poll, rx, flags, counters, parked, kernel))?;
            workers.push(Worker {
                commands: tx,
                waker,
                notified,
                busy,
            });
        }
        Ok(Relay {
            inner: Arc::new(Inner {
                config,
                workers,
                ports,
                next_worker: AtomicUsize::new(0),
                next_session: AtomicU64::new(1),
                counters,
                kernel,
            }),
        })
    }

    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// RTP port pairs not in a session (parked ones included).
    pub fn free_pairs(&self) -> usize {
        let ports = &self.inner.ports;
        lock(&ports.unbound).len() + ports.parked.iter().map(|p| lock(p).len()).sum::<usize>()
    }

    /// A new session with a port pair for each side.
    pub fn session(&self) -> Result<Session, RelayError> {
        let inner = &self.inner;
        let next = inner.next_worker.fetch_add(1, Ordering::Relaxed) % inner.workers.len();
        let (worker, [caller, callee]) = inner.take_pairs(next)?;
        let (caller_port, callee_port) = (caller.port(), callee.port());
        let id = inner.next_session.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new());
        inner.send(
            worker,
            Command::Add {
                id,
                pairs: [caller, callee],
                activity: activity.clone(),
            },
        );
        let adv = inner.config.advertise;
        Ok(Session {
            id,
            worker,
            ports: [caller_port, callee_port],
            caller_rtp: SocketAddr::new(adv, caller_port),
            callee_rtp: SocketAddr::new(adv, callee_port),
            activity,
            held: [AtomicBool::new(false), AtomicBool::new(false)],
            inner: inner.clone(),
        })
    }
}

impl Inner {
    fn send(&self, worker: usize, cmd: Command) {
        if let Some(w) = self.workers.get(worker) {
            // The command is queued before the flags are looked at. A busy worker drains its
            // queue within COMMAND_LATENCY (and looks once more when it stops being busy). An
            // idle one clears `notified` before it drains: either this swap sees `false` and
            // wakes it, or the worker has yet to drain and will find the command.
            if w.commands.send(cmd).is_ok()
                && !w.busy.load(Ordering::SeqCst)
                && !w.notified.swap(true, Ordering::SeqCst)
            {
                let _ = w.waker.wake();
            }
        }
    }

    /// The two pairs of a new session, and the worker it goes to: `worker`'s, from its parked
    /// pairs that have waited long enough or newly bound. When no port is left to bind, two
    /// pairs parked on one worker, waited or not, are better than no call.
    fn take_pairs(&self, worker: usize) -> Result<(usize, [Pair; 2]), RelayError> {
        let first = self.take_pair(worker);
        let failed = match first.map(|a| (a, self.take_pair(worker))) {
            Ok((a, Ok(b))) => return Ok((worker, [a, b])),
            Ok((a, Err(e))) => {
                self.give_back(worker, a);
                e
            }
            Err(e) => e,
        };
        let n = self.ports.parked.len();
        for w in (0..n).map(|i| (worker + i) % n) {
            let mut queue = lock(&self.ports.parked[w]);
            if queue.len() >= 2 {
                if let (Some((a, ta)), Some((b, tb))) = (queue.pop_front(), queue.pop_front()) {
                    return Ok((w, [Pair::Parked(a, ta), Pair::Parked(b, tb)]));
                }
            }
        }
        Err(failed)
    }

    /// A pair for a session on `worker`: the one parked there longest if it has waited long
    /// enough, else a newly bound one.
    fn take_pair(&self, worker: usize) -> Result<Pair, RelayError> {
        let now = Instant::now();
        {
            let mut parked = lock(&self.ports.parked[worker]);
            if let Some(&(port, since)) = parked.front() {
                if now.saturating_duration_since(since) >= self.ports.reuse_after {
                    parked.pop_front();
                    return Ok(Pair::Parked(port, since));
                }
            }
        }
        let (port, sockets) = self.bind_pair()?;
        Ok(Pair::Fresh(port, sockets))
    }

    /// Undoes [`Inner::take_pair`].
    fn give_back(&self, worker: usize, pair: Pair) {
        match pair {
            Pair::Fresh(port, sockets) => {
                drop(sockets);
                lock(&self.ports.unbound).push_back(port);
            }
            Pair::Parked(port, since) => lock(&self.ports.parked[worker]).push_front((port, since)),
        }
    }

    /// Takes the next unbound even port whose pair binds; ports in use by someone else go to
    /// the back of the queue. Any other failure (out of file descriptors, an address that is
    /// not ours) is no reason to try the next port, and is told as it is.
    fn bind_pair(&self) -> Result<(u16, [UdpSocket; 2]), RelayError> {
        let mut ports = lock(&self.ports.unbound);
        for _ in 0..ports.len() {
            let Some(p) = ports.pop_front() else { break };
            // mio's bind makes the socket non-blocking as it creates it (one system call fewer
            // per socket than std's bind and `set_nonblocking`; four sockets per call).
            let rtp = UdpSocket::bind(SocketAddr::new(self.config.bind, p));
            let rtcp = UdpSocket::bind(SocketAddr::new(self.config.bind, p + 1));
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => return Ok((p, [rtp, rtcp])),
                (Err(e), _) | (_, Err(e)) if e.kind() != io::ErrorKind::AddrInUse => {
                    ports.push_front(p);
                    return Err(RelayError::Io(e));
                }
                _ => ports.push_back(p),
            }
        }
        Err(RelayError::NoPorts {
            min: self.config.port_min,
            max: self.config.port_max,
        })
    }
}

impl Session {
    /// Where the caller is to send its media (goes into the description the caller gets).
    pub fn caller_facing(&self) -> SocketAddr {
        self.caller_rtp
    }

    /// Where the callee is to send its media.
    pub fn callee_facing(&self) -> SocketAddr {
        self.callee_rtp
    }

    /// Records whether the latest description of the party on `side` holds the call
    /// (`a=sendonly`, `a=recvonly`, `a=inactive`, `c=0.0.0.0`): then silence is expected.
    pub fn set_held(&self, side: Side, held: bool) {
        self.held[side.index()].store(held, Ordering::Relaxed);
    }

    /// Whether either party's latest description holds the call.
    pub fn is_held(&self) -> bool {
        self.held.iter().any(|h| h.load(Ordering::Relaxed))
    }

    /// How long nothing has arrived from either party (since the session began, if nothing
    /// ever did).
    pub fn idle(&self) -> Duration {
        let now = self.activity.epoch.elapsed();
        now.saturating_sub(Duration::from_millis(
            self.activity.last_ms.load(Ordering::Relaxed),
        ))
    }

    /// Converts between the two G.711 laws: RTP of payload type `caller` from the caller leaves
    /// towards the callee as `callee`, and back. `None` relays payloads untouched.
    pub fn set_transcoding(&self, codecs: Option<(u8, u8)>) {
        self.inner.send(
            self.worker,
            Command::Transcode {
                id: self.id,
                codecs,
            },
        );
    }

    /// Plays `sound` to the party on `side` as G.711 of payload type `pt` (0 PCMU, 8 PCMA),
    /// replacing what the other side sends it; `None` stops and relays again. A prompt played
    /// once stops by itself at its end.
    pub fn play(&self, side: Side, sound: Option<(Sound, u8)>) {
        self.inner.send(
            self.worker,
            Command::Play {
                id: self.id,
                side,
                sound,
            },
        );
    }

    /// The echo test: from now on the RTP a party sends comes straight back to it, from the
    /// same port (RTCP is not echoed: it describes the sender's own stream).
    pub fn set_echo(&self) {
        self.inner.send(self.worker, Command::Echo { id: self.id });
    }

    /// What a party's description says; resets latching for that side (a re-INVITE may move
    /// the party).
    pub fn set_remote(&self, side: Side, endpoint: Endpoint) {
        // A description pointing at this session's own ports would have us relay to ourselves,
        // round and round: taken as no address at all (latching still finds the party).
        let ours = [self.caller_rtp, self.callee_rtp].contains(&endpoint.rtp);
        self.inner.send(
            self.worker,
            Command::Remote {
                id: self.id,
                side,
                endpoint: (!ours).then_some(endpoint),
            },
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Queued before the pairs are offered again, so the worker parks them before any
        // session that takes them is added.
        self.inner
            .send(self.worker, Command::Remove { id: self.id });
        let now = Instant::now();
        lock(&self.inner.ports.parked[self.worker]).extend(self.ports.map(|p| (p, now)));
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A side's view of its party: where the description says and where packets really come from.
#[derive(Debug, Default, Clone, Copy)]
struct Peer {
    declared: Option<Endpoint>,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
    /// Where the party of an earlier description sent from, when a description from somewhere
    /// else replaced it (another branch answered, the call moved): its packets still in flight
    /// must not latch the side before the new party speaks. For [`STALE_FOR`] only: a party
    /// whose description moved while it kept sending from the same place (RTP that is not
    /// symmetric) is latched again after that.
    stale_rtp: Option<SocketAddr>,
    stale_rtcp: Option<SocketAddr>,
    stale_until: Option<Instant>,
}

struct WorkerSession {
    /// The RTP ports of the caller's pair and the callee's.
    ports: [u16; 2],
    /// [caller rtp, caller rtcp, callee rtp, callee rtcp]
    sockets: [UdpSocket; 4],
    peers: [Peer; 2],
    activity: Arc<Activity>,
    /// (caller's payload type, callee's payload type) when converting between G.711 laws.
    transcode: Option<(u8, u8)>,
    /// What we play to each side, if anything.
    players: [Option<Player>; 2],
    /// The echo test: RTP goes back to where it came from.
    echo: bool,
    /// After playing to a side, what is relayed to it continues our stream (see [`Rewrite`]).
    rewrite: [Option<Rewrite>; 2],
    /// The streams handed to the kernel, by socket as in `sockets`.
    offloaded: [Option<Forward>; 4],
    /// A side latched since the kernel was last told (see [`Kernel::sync`]).
    relatched: bool,
}

/// Continues the RTP stream we played to a party with the packets relayed to it afterwards:
/// same SSRC, sequence numbers and timestamps that go on from ours. Phones' jitter buffers
/// take a new SSRC badly when the new sequence numbers happen to be "older" than the last ones
/// (baresip, seen in the click-to-call test, then plays nothing at all).
#[derive(Debug, Clone, Copy)]
struct Rewrite {
    ssrc: u32,
    next_seq: u16,
    next_ts: u32,
    /// (sequence, timestamp) added to every relayed packet; fixed by the first one.
    offsets: Option<(u16, u32)>,
}

impl Rewrite {
    fn apply(&mut self, pkt: &mut [u8]) {
        if pkt.len() < 12 || pkt[0] >> 6 != 2 {
            return;
        }
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ts = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
        let first = self.offsets.is_none();
        let (ds, dt) = *self.offsets.get_or_insert((
            self.next_seq.wrapping_sub(seq),
            self.next_ts.wrapping_sub(ts),
        ));
        pkt[2..4].copy_from_slice(&seq.wrapping_add(ds).to_be_bytes());
        pkt[4..8].copy_from_slice(&ts.wrapping_add(dt).to_be_bytes());
        pkt[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        if first {
            // A new talkspurt as far as the receiver can tell.
            pkt[1] |= 0x80;
        }
    }
}

/// A sound played to one side: its own RTP stream (SSRC, sequence, timestamp).
struct Player {
    source: Source,
    pt: u8,
    ssrc: u32,
    seq: u16,
    ts: u32,
    next: Instant,
    /// The next packet carries the marker bit (start of a talkspurt).
    marker: bool,
}

/// A frame late by more than this is skipped rather than sent in a burst.
const MAX_CATCH_UP: u32 = 3;

impl Player {
    fn new(sound: Sound, pt: u8, id: u64, now: Instant) -> Player {
        let mut seed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(pt);
        let r = crate::b2bua::call::splitmix(&mut seed);
        Player {
            source: Source::new(sound),
            pt,
            ssrc: r as u32,
            seq: (r >> 32) as u16,
            ts: (r >> 48) as u32,
            next: now,
            marker: true,
        }
    }

    /// How relayed packets continue this stream once it stops.
    fn continuation(&self) -> Rewrite {
        Rewrite {
            ssrc: self.ssrc,
            next_seq: self.seq,
            next_ts: self.ts,
            offsets: None,
        }
    }

    /// One RTP packet of the next 20 ms; `None` once a prompt has ended.
    fn packet(&mut self, out: &mut [u8; 12 + FRAME]) -> Option<()> {
        let mut frame = [0i16; FRAME];
        let more = self.source.next_frame(&mut frame);
        out[0] = 0x80;
        out[1] = self.pt | if self.marker { 0x80 } else { 0 };
        out[2..4].copy_from_slice(&self.seq.to_be_bytes());
        out[4..8].copy_from_slice(&self.ts.to_be_bytes());
        out[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        let encode = if self.pt == PCMA {
            super::g711::linear_to_alaw
        } else {
            super::g711::linear_to_ulaw
        };
        for (o, &x) in out[12..].iter_mut().zip(frame.iter()) {
            *o = encode(x);
        }
        self.marker = false;
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(FRAME as u32);
        more.then_some(())
    }
}

/// A socket's token is its port (ports are 1024 or above; token 0 is the waker).
fn token(port: u16) -> Token {
    Token(usize::from(port))
}

/// The sockets a worker keeps open between sessions.
struct Parked {
    ports: Arc<Ports>,
    worker: usize,
    /// By RTP port.
    sockets: IdMap<u16, [UdpSocket; 2]>,
    /// Pairs whose last drain stopped at its budget (a flood, or a burst): emptied before reuse.
    backlog: std::collections::HashSet<u16>,
}

impl Parked {
    /// Closes the pairs parked for `close_after` and returns their ports to the unbound ones.
    fn close_idle(&mut self, now: Instant) {
        let mut closed = Vec::new();
        {
            let mut queue = lock(&self.ports.parked[self.worker]);
            while let Some(&(port, since)) = queue.front() {
                if now.saturating_duration_since(since) < self.ports.close_after {
                    break;
                }
                queue.pop_front();
                closed.push(port);
            }
        }
        if closed.is_empty() {
            return;
        }
        for port in &closed {
            // Closing the only descriptor of a socket takes it out of the epoll set.
            self.sockets.remove(port);
            self.backlog.remove(port);
        }
        lock(&self.ports.unbound).extend(closed);
    }

    /// How often [`Parked::close_idle`] runs.
    fn close_interval(&self) -> Duration {
        (self.ports.close_after / 2).min(Duration::from_secs(1))
    }
}

/// Datagrams read from one socket per wake-up at most (a phone sends one per 20 ms).
const PER_WAKE: usize = 32;

/// How long a replaced party's address may not latch (see `Peer::stale_rtp`): its packets in
/// flight arrive within this; a party that really is the same one is heard again after it.
const STALE_FOR: Duration = Duration::from_secs(2);

/// The most datagrams read from a backlogged parked socket before its pair is used again (a
/// socket's receive buffer holds a few hundred at most; this bounds the work under a flood).
const MAX_BACKLOG: usize = 4096;

/// While media flows, a worker sleeps this long between rounds and then takes every event that
/// came meanwhile, rather than sleeping in `epoll_wait` until the next datagram. A phone sends
/// one packet per 20 ms, so with a few hundred calls on a worker a datagram arrives every few
/// microseconds, and waking for each was a quarter of the relay's CPU: the sender's wake-up and
/// our context switch, per packet (`bench/media`: 0.086 % of a core per call waking per
/// datagram, 0.065-0.071 % with the tick). The cost is up to a millisecond of delay, well
/// inside the jitter a phone's buffer absorbs; a worker without traffic still waits for the
/// first datagram in `epoll_wait`.
const TICK: Duration = Duration::from_millis(1);

/// Readiness events taken per round; a full batch is followed by another round at once.
const EVENTS: usize = 1024;

/// How long a command may wait for a worker that has sessions: such a worker wakes for RTP
/// every few milliseconds anyway, so commands reach it without a wake-up of their own.
const COMMAND_LATENCY: Duration = Duration::from_millis(5);

/// The flags a worker shares with the senders of its commands.
struct WorkerFlags {
    /// Set by the first command since the worker last looked at its queue (see `Inner::send`).
    notified: Arc<AtomicBool>,
    /// The worker has sessions, so it looks at its queue at least every [`COMMAND_LATENCY`]
    /// and needs no wake-up for a command.
    busy: Arc<AtomicBool>,
}

/// A worker's sessions, and which session each of its ports belongs to.
struct Table {
    sessions: IdMap<u64, WorkerSession>,
    /// Session by the RTP port of one of its pairs.
    owners: IdMap<u16, u64>,
    parked: Parked,
    counters: Arc<Counters>,
    kernel: Option<Kernel>,
}

impl Table {
    /// Hands the streams of session `id` to the kernel or takes them back, as it now allows.
    fn sync_kernel(&mut self, id: u64) {
        if let (Some(k), Some(s)) = (self.kernel.as_mut(), self.sessions.get_mut(&id)) {
            k.sync(s);
        }
    }
}

/// A worker's side of kernel forwarding (`media::netfilter`): which of its sessions' streams
/// can do without us, and where their packets leave from.
struct Kernel {
    netfilter: Netfilter,
    bind: IpAddr,
    /// The source address the kernel picks towards a destination, when we bind to any: the one
    /// our own sockets' packets would carry.
    sources: std::collections::HashMap<Ipv4Addr, Ipv4Addr>,
}

impl Kernel {
    /// Remembered sources, at most; the cache starts afresh when full.
    const SOURCES: usize = 4096;

    fn new(netfilter: Netfilter, bind: IpAddr) -> Kernel {
        Kernel {
            netfilter,
            bind,
            sources: Default::default(),
        }
    }

    /// Hands each of a session's four streams to the kernel, or takes it back, as the session
    /// now allows.
    fn sync(&mut self, s: &mut WorkerSession) {
        let mut changes = Vec::new();
        for i in 0..4 {
            let want = self.wanted(s, i);
            if want != s.offloaded[i] {
                let port = s.ports[i / 2] + (i % 2) as u16;
                changes.push((port, want.map(|f| (f, s.activity.clone()))));
                s.offloaded[i] = want;
            }
        }
        self.netfilter.set(changes);
    }

    /// Takes back every stream of a session that ends.
    fn release(&self, s: &WorkerSession) {
        let ports = (0..4).filter(|&i| s.offloaded[i].is_some());
        self.netfilter.set(
            ports
                .map(|i| (s.ports[i / 2] + (i % 2) as u16, None))
                .collect(),
        );
    }

    /// What arrives on socket `i` (as in [`WorkerSession::sockets`]) can go through the kernel
    /// when its sender is latched, the other party has an address, and we change nothing in it:
    /// no transcoding, nothing played, no stream continued after a prompt, no echo test.
    fn wanted(&mut self, s: &WorkerSession, i: usize) -> Option<Forward> {
        if s.echo || s.transcode.is_some() || s.players.iter().any(Option::is_some) {
            return None;
        }
        let (side, other, rtcp) = (i / 2, 1 - i / 2, i % 2 == 1);
        if s.rewrite[other].is_some() {
            return None;
        }
        let (me, them) = (&s.peers[side], &s.peers[other]);
        let (from, to) = if rtcp {
            (
                me.latched_rtcp?,
                them.latched_rtcp.or(them.declared.map(|e| e.rtcp))?,
            )
        } else {
            (
                me.latched_rtp?,
                them.latched_rtp.or(them.declared.map(|e| e.rtp))?,
            )
        };
        let (SocketAddr::V4(from), SocketAddr::V4(to)) = (from, to) else {
            return None;
        };
        if to.ip().is_unspecified() {
            return None;
        }
        let via = self.source(*to.ip())?;
        let rtcp = u16::from(rtcp);
        Some(Forward {
            from,
            port: s.ports[side] + rtcp,
            via: SocketAddrV4::new(via, s.ports[other] + rtcp),
            to,
        })
    }

    fn source(&mut self, to: Ipv4Addr) -> Option<Ipv4Addr> {
        match self.bind {
            IpAddr::V4(ip) if !ip.is_unspecified() => return Some(ip),
            IpAddr::V4(_) => {}
            IpAddr::V6(_) => return None,
        }
        if let Some(src) = self.sources.get(&to) {
            return Some(*src);
        }
        // Connecting a UDP socket sends nothing; it asks the routing table.
        let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
        probe.connect((to, 9)).ok()?;
        let IpAddr::V4(src) = probe.local_addr().ok()?.ip() else {
            return None;
        };
        if self.sources.len() >= Self::SOURCES {
            self.sources.clear();
        }
        self.sources.insert(to, src);
        Some(src)
    }
}

fn run_worker(
    mut poll: Poll,
    commands: std_mpsc::Receiver<Command>,
    flags: WorkerFlags,
    counters: Arc<Counters>,
    parked: Parked,
    kernel: Option<Kernel>,
) {
    let mut events = Events::with_capacity(EVENTS);
    // The last round found datagrams, and so many events that some were left over.
    let (mut traffic, mut full) = (false, false);
    let close_interval = parked.close_interval();
    let mut next_close = Instant::now() + close_interval;
    let mut table = Table {
        sessions: idmap::new(),
        owners: idmap::new(),
        parked,
        counters: counters.clone(),
        kernel,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Sessions something is played in, and when the next frame of any of them is due.
    let mut playing: std::collections::HashSet<u64> = Default::default();
    let mut busy = false;
    loop {
        if busy == table.sessions.is_empty() {
            busy = !busy;
            flags.busy.store(busy, Ordering::SeqCst);
            if !busy {
                // A sender that still saw us busy queued without waking us: look once more
                // before sleeping for long.
                if !take_commands(&commands, &poll, &mut table, &mut playing) {
                    return;
                }
                continue;
            }
        }
        let now = Instant::now();
        let next_frame = playing
            .iter()
            .filter_map(|id| table.sessions.get(id))
            .flat_map(|s| s.players.iter().flatten().map(|p| p.next))
            .min();
        let closing = (!table.parked.sockets.is_empty()).then_some(next_close);
        let mut timeout = next_frame
            .into_iter()
            .chain(closing)
            .min()
            .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
            .min(Duration::from_secs(1));
        if busy {
            timeout = timeout.min(COMMAND_LATENCY);
        }
        if full {
            // Events were left over: no waiting for them.
            timeout = Duration::ZERO;
        } else if traffic {
            // Media is flowing: collect what a tick brought instead of waking for every
            // datagram (see TICK).
            std::thread::sleep(TICK.min(timeout));
            timeout = Duration::ZERO;
        }
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() != io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "media worker: poll failed");
                std::thread::sleep(Duration::from_millis(10));
            }
            continue;
        }
        full = events.iter().count() == events.capacity();
        traffic = events.iter().any(|ev| ev.token() != WAKER);
        let round = Instant::now();
        // Commands after every wake-up, the waker's or the timeout's: the timeout is how a
        // worker notices that the relay is gone (its command channel closed). The flag is
        // cleared first, so a command queued from here on wakes the worker again.
        flags.notified.store(false, Ordering::SeqCst);
        if !take_commands(&commands, &poll, &mut table, &mut playing) {
            return;
        }
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            let Ok(port) = u16::try_from(ev.token().0) else {
                continue;
            };
            let (pair, rtcp) = (port & !1, usize::from(port & 1));
            let session = table
                .owners
                .get(&pair)
                .and_then(|id| table.sessions.get_mut(id));
            if let Some(s) = session {
                let socket = if pair == s.ports[0] { 0 } else { 2 } + rtcp;
                relay(s, socket, &mut buf, &counters, round);
                if let (true, Some(k)) = (std::mem::take(&mut s.relatched), table.kernel.as_mut()) {
                    k.sync(s);
                }
            } else if let Some(sockets) = table.parked.sockets.get(&pair) {
                // A budget here too; what is left over is read before the pair is used again.
                if drain(&sockets[rtcp], &mut buf, &counters, PER_WAKE) {
                    table.parked.backlog.insert(pair);
                }
            }
        }
        if !playing.is_empty() {
            let now = Instant::now();
            playing.retain(|id| match table.sessions.get_mut(id) {
                Some(s) => {
                    let before = s.players.iter().flatten().count();
                    let more = play_due(s, now, &counters);
                    // A prompt that ended by itself: the party it was played to may be
                    // forwarded by the kernel again.
                    if let (true, Some(k)) = (
                        s.players.iter().flatten().count() < before,
                        table.kernel.as_mut(),
                    ) {
                        k.sync(s);
                    }
                    more
                }
                None => false,
            });
        }
        let now = Instant::now();
        if now >= next_close {
            table.parked.close_idle(now);
            next_close = now + close_interval;
        }
    }
}

/// Reads and drops what reached a parked socket: the tail of an ended call, or a stranger.
/// Reads at most `limit` datagrams; true when it stopped there, with more perhaps waiting.
fn drain(socket: &UdpSocket, buf: &mut [u8], counters: &Counters, limit: usize) -> bool {
    for _ in 0..limit {
        match socket.recv_from(buf) {
            Ok(_) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => {}
        }
    }
    true
}

/// Applies every queued command; false when the relay is gone (and so is every session).
fn take_commands(
    commands: &std_mpsc::Receiver<Command>,
    poll: &Poll,
    table: &mut Table,
    playing: &mut std::collections::HashSet<u64>,
) -> bool {
    loop {
        match commands.try_recv() {
            Ok(Command::Play { id, side, sound }) => {
                if let Some(s) = table.sessions.get_mut(&id) {
                    let i = side.index();
                    if let Some(old) = s.players[i].take() {
                        s.rewrite[i] = Some(old.continuation());
                    }
                    s.players[i] =
                        sound.map(|(sound, pt)| Player::new(sound, pt, id, Instant::now()));
                    if s.players.iter().any(Option::is_some) {
                        playing.insert(id);
                    }
                }
                table.sync_kernel(id);
            }
            Ok(cmd) => {
                // What a session now needs of us decides which of its streams the kernel
                // forwards (a session just added has latched nothing yet).
                let changed = match &cmd {
                    Command::Remote { id, .. }
                    | Command::Transcode { id, .. }
                    | Command::Echo { id } => Some(*id),
                    _ => None,
                };
                apply(poll, table, cmd);
                if let Some(id) = changed {
                    table.sync_kernel(id);
                }
            }
            Err(std_mpsc::TryRecvError::Empty) => return true,
            Err(std_mpsc::TryRecvError::Disconnected) => return false,
        }
    }
}

/// Sends the frames that are due to each side being played to; false when nothing plays any
/// more in this session.
fn play_due(s: &mut WorkerSession, now: Instant, counters: &Counters) -> bool {
    let mut pkt = [0u8; 12 + FRAME];
    for side in [Side::Caller, Side::Callee] {
        let i = side.index();
        let peer = s.peers[i];
        let Some(p) = s.players[i].as_mut() else {
            continue;
        };
        let mut sent = 0;
        while p.next <= now {
            if sent == MAX_CATCH_UP {
                // Far behind (the thread was starved): resynchronise instead of bursting.
                p.next = now;
            }
            p.next += Duration::from_millis(20);
            let more = p.packet(&mut pkt).is_some();
            let to = peer.latched_rtp.or(peer.declared.map(|e| e.rtp));
            if let Some(to) = to.filter(|a| !a.ip().is_unspecified()) {
                if s.sockets[i * 2].send_to(&pkt, to).is_ok() {
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                }
            }
            sent += 1;
            if !more {
                s.rewrite[i] = Some(p.continuation());
                s.players[i] = None;
                break;
            }
        }
    }
    s.players.iter().any(Option::is_some)
}

fn apply(poll: &Poll, table: &mut Table, cmd: Command) {
    let counters = table.counters.clone();
    let sessions = &mut table.sessions;
    match cmd {
        Command::Add {
            id,
            pairs,
            activity,
        } => {
            let ports = [pairs[0].port(), pairs[1].port()];
            let [caller, callee] = pairs.map(|pair| match pair {
                Pair::Fresh(port, mut sockets) => {
                    for (s, port) in sockets.iter_mut().zip([port, port + 1]) {
                        if let Err(e) = poll.registry().register(s, token(port), Interest::READABLE)
                        {
                            tracing::error!(error = %e, "media worker: cannot watch a socket");
                        }
                    }
                    Some(sockets)
                }
                Pair::Parked(port, _) => {
                    let sockets = table.parked.sockets.remove(&port);
                    if let (true, Some(pair)) = (table.parked.backlog.remove(&port), &sockets) {
                        let mut buf = [0u8; MAX_DATAGRAM];
                        for s in pair {
                            drain(s, &mut buf, &counters, MAX_BACKLOG);
                        }
                    }
                    sockets
                }
            });
            let ([a, b], [c, d]) = match (caller, callee) {
                (Some(caller), Some(callee)) => (caller, callee),
                (caller, callee) => {
                    // Pairs are parked before they are offered again (`Session::drop`), so this
                    // is a defect; what was found stays parked, and closing idle pairs heals
                    // the rest.
                    tracing::error!(
                        ?ports,
                        "media worker: a reused port pair was not parked here"
                    );
                    for (port, pair) in ports.into_iter().zip([caller, callee]) {
                        if let Some(pair) = pair {
                            table.parked.sockets.insert(port, pair);
                        }
                    }
                    return;
                }
            };
            for port in ports {
                table.owners.insert(port, id);
            }
            sessions.insert(
                id,
                WorkerSession {
                    ports,
                    sockets: [a, b, c, d],
                    peers: [Peer::default(); 2],
                    activity,
                    transcode: None,
                    players: [None, None],
                    rewrite: [None, None],
                    echo: false,
                    offloaded: [None; 4],
                    relatched: false,
                },
            );
        }
        Command::Remote { id, side, endpoint } => {
            if let Some(s) = sessions.get_mut(&id) {
                let old = s.peers[side.index()];
                // The same address again (hold, resume, a session refresh), or none (a hold at
                // `c=0.0.0.0`), is the same party: what it latched stays acceptable. What was
                // stale stays so until it expires.
                let moved = endpoint.is_some_and(|e| {
                    !e.rtp.ip().is_unspecified() && old.declared.map(|d| d.rtp) != Some(e.rtp)
                });
                let (stale_rtp, stale_rtcp, stale_until) = if moved {
                    (
                        old.latched_rtp.or(old.stale_rtp),
                        old.latched_rtcp.or(old.stale_rtcp),
                        Some(Instant::now() + STALE_FOR),
                    )
                } else {
                    (old.stale_rtp, old.stale_rtcp, old.stale_until)
                };
                s.peers[side.index()] = Peer {
                    declared: endpoint,
                    latched_rtp: None,
                    latched_rtcp: None,
                    stale_rtp,
                    stale_rtcp,
                    stale_until,
                };
            }
        }
        Command::Transcode { id, codecs } => {
            if let Some(s) = sessions.get_mut(&id) {
                s.transcode = codecs;
            }
        }
        // Handled by the worker loop, which tracks who plays.
        Command::Play { .. } => {}
        Command::Echo { id } => {
            if let Some(s) = sessions.get_mut(&id) {
                s.echo = true;
            }
        }
        Command::Remove { id } => {
            // The sockets stay open and watched, parked for the next session to take; an event
            // of this poll round still queued for them finds them parked and drains them.
            if let Some(s) = sessions.remove(&id) {
                // Taken back before anyone else can have the ports (they wait parked for
                // `reuse_after`, the kernel's copy goes within milliseconds).
                if let Some(k) = table.kernel.as_ref() {
                    k.release(&s);
                }
                let [a, b, c, d] = s.sockets;
                for (port, pair) in s.ports.into_iter().zip([[a, b], [c, d]]) {
                    table.owners.remove(&port);
                    table.parked.sockets.insert(port, pair);
                }
            }
        }
    }
}

/// Relays everything readable on `socket` (0/1: caller RTP/RTCP, 2/3: callee RTP/RTCP).
fn relay(
    s: &mut WorkerSession,
    socket: usize,
    buf: &mut [u8],
    counters: &Counters,
    round: Instant,
) {
    let side = if socket < 2 {
        Side::Caller
    } else {
        Side::Callee
    };
    let rtcp = socket % 2 == 1;
    // A budget per wake-up, so that a flood on one socket cannot keep the worker from every
    // other session; what is left gets its turn at the next event (each datagram raises one).
    for _ in 0..PER_WAKE {
        let (n, from) = match s.sockets[socket].recv_from(buf) {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            // ICMP errors of earlier sends surface here; keep reading.
            Err(_) => continue,
        };
        let me = &mut s.peers[side.index()];
        let declared = me.declared.map(|e| if rtcp { e.rtcp } else { e.rtp });
        // Latching: the first packet's source is where this party is reachable. From then on
        // only that source is relayed ("strict source"): a third party that guessed the port
        // can neither speak into the call nor, by sending first, take the other side's audio
        // once the party has spoken. The address the party's description gives wins over an
        // earlier latch: the party is where it said after all.
        let (latched, stale) = if rtcp {
            (&mut me.latched_rtcp, me.stale_rtcp)
        } else {
            (&mut me.latched_rtp, me.stale_rtp)
        };
        match *latched {
            None if stale == Some(from)
                && declared != Some(from)
                && me.stale_until.is_some_and(|t| round < t) =>
            {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            None => {
                *latched = Some(from);
                s.relatched = true;
            }
            Some(l) if l == from => {}
            Some(_) if declared == Some(from) => {
                *latched = Some(from);
                s.relatched = true;
            }
            Some(_) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        }
        s.activity.touch(round);
        if s.echo {
            if !rtcp && s.players[side.index()].is_none() {
                let out = side.index() * 2;
                if s.sockets[out].send_to(&buf[..n], from).is_ok() {
                    counters.packets.fetch_add(1, Ordering::Relaxed);
                    counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            continue;
        }
        let other = side.other();
        if !rtcp && s.players[other.index()].is_some() {
            // The other party hears what we play, not this.
            continue;
        }
        let them = s.peers[other.index()];
        let to = if rtcp {
            them.latched_rtcp.or(them.declared.map(|e| e.rtcp))
        } else {
            them.latched_rtp.or(them.declared.map(|e| e.rtp))
        };
        // Nowhere to go yet, or on hold with the RFC 2543 `c=0.0.0.0` (sending there would
        // reach this host itself).
        let Some(to) = to.filter(|a| !a.ip().is_unspecified()) else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if let (Some(rw), false) = (s.rewrite[other.index()].as_mut(), rtcp) {
            rw.apply(&mut buf[..n]);
        }
        if let (Some((caller_pt, callee_pt)), false) = (s.transcode, rtcp) {
            let (from, to) = match side {
                Side::Caller => (caller_pt, callee_pt),
                Side::Callee => (callee_pt, caller_pt),
            };
            transcode_g711(&mut buf[..n], from, to);
        }
        let out = other.index() * 2 + usize::from(rtcp);
        match s.sockets[out].send_to(&buf[..n], to) {
            Ok(_) => {
                counters.packets.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(_) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Rewrites an RTP packet of payload type `from` (a G.711 law) into `to` in place: the payload
/// byte by byte through the conversion table, the header's payload type. Packets of other types
/// (telephone-events, comfort noise) and malformed ones pass unchanged.
fn transcode_g711(pkt: &mut [u8], from: u8, to: u8) {
    if pkt.len() < 12 || pkt[0] >> 6 != 2 || pkt[1] & 0x7F != from || from == to {
        return;
    }
    let mut start = 12 + 4 * usize::from(pkt[0] & 0x0F);
    if pkt[0] & 0x10 != 0 {
        // Header extension: 4 bytes, then its length in 32-bit words.
        let Some(words) = pkt.get(start + 2..start + 4) else {
            return;
        };
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = pkt.len();
    if pkt[0] & 0x20 != 0 {
        end = end.saturating_sub(usize::from(pkt[end - 1]));
    }
    if start > end {
        return;
    }
    let table = match (from, to) {
        (super::sdp::PCMU, super::sdp::PCMA) => super::g711::ulaw_to_alaw_table(),
        (super::sdp::PCMA, super::sdp::PCMU) => super::g711::alaw_to_ulaw_table(),
        _ => return,
    };
    for b in &mut pkt[start..end] {
        *b = table[usize::from(*b)];
    }
    pkt[1] = (pkt[1] & 0x80) | to;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket as StdUdp;

    fn relay(threads: usize, min: u16) -> Relay {
        parking_relay(
            threads,
            min,
            RelayConfig::REUSE_AFTER,
            RelayConfig::CLOSE_AFTER,
        )
    }

    fn parking_relay(
        threads: usize,
        min: u16,
        reuse_after: Duration,
        close_after: Duration,
    ) -> Relay {
        Relay::start(RelayConfig {
            bind: "127.0.0.1".parse().unwrap(),
            advertise: "127.0.0.1".parse().unwrap(),
            port_min: min,
            port_max: min + 40,
            threads,
            reuse_after,
            close_after,
            kernel_forwarding: false,
        })
        .unwrap()
    }

    fn endpoint(s: &StdUdp) -> Endpoint {
        let a = s.local_addr().unwrap();
        Endpoint {
            rtp: a,
            rtcp: SocketAddr::new(a.ip(), a.port() + 1),
        }
    }

    /// An address described by a party behind NAT: where nobody listens.
    fn unreachable() -> Endpoint {
        Endpoint {
            rtp: "127.0.0.1:9".parse().unwrap(),
            rtcp: "127.0.0.1:10".parse().unwrap(),
        }
    }

    /// A caller and a callee on loopback, each described to `sess` where it really is.
    fn parties(sess: &Session) -> (StdUdp, StdUdp) {
        let caller = StdUdp::bind("127.0.0.1:0").unwrap();
        let callee = StdUdp::bind("127.0.0.1:0").unwrap();
        sess.set_remote(Side::Caller, endpoint(&caller));
        sess.set_remote(Side::Callee, endpoint(&callee));
        // The worker takes the descriptions before the first packet.
        std::thread::sleep(Duration::from_millis(50));
        (caller, callee)
    }

    fn recv(s: &StdUdp) -> (Vec<u8>, SocketAddr) {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 1500];
        let (n, from) = s.recv_from(&mut b).expect("a relayed packet");
        (b[..n].to_vec(), from)
    }

    #[test]
    fn packets_cross_both_ways_and_come_from_our_ports() {
        let r = relay(2, 31000);
        let sess = r.session().unwrap();
        let (caller, callee) = parties(&sess);

        caller
            .send_to(b"rtp from caller", sess.caller_facing())
            .unwrap();
        let (got, from) = recv(&callee);
        assert_eq!(got, b"rtp from caller");
        assert_eq!(
            from,
            sess.callee_facing(),
            "the callee hears us, not the caller"
        );

        callee
            .send_to(b"rtp from callee", sess.callee_facing())
            .unwrap();
        let (got, from) = recv(&caller);
        assert_eq!(got, b"rtp from callee");
        assert_eq!(from, sess.caller_facing());
        // Counted right after the send: give the worker a moment.
        for _ in 0..50 {
            if r.counters().packets.load(Ordering::Relaxed) == 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(r.counters().packets.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn once_latched_only_that_source_is_relayed() {
        let r = relay(1, 31200);
        let sess = r.session().unwrap();
        let caller = StdUdp::bind("127.0.0.1:0").unwrap();
        let callee = StdUdp::bind("127.0.0.1:0").unwrap();
        let intruder = StdUdp::bind("127.0.0.1:0").unwrap();
        sess.set_remote(Side::Callee, endpoint(&callee));
        std::thread::sleep(Duration::from_millis(50));
        // The caller speaks first and is latched.
        caller.send_to(b"caller 1", sess.caller_facing()).unwrap();
        assert_eq!(recv(&callee).0, b"caller 1");
        // Someone else on the caller's port is not heard, and does not take the latch.
        intruder.send_to(b"injected", sess.caller_facing()).unwrap();
        caller.send_to(b"caller 2", sess.caller_facing()).unwrap();
        assert_eq!(recv(&callee).0, b"caller 2");
        callee.send_to(b"to caller", sess.callee_facing()).unwrap();
        assert_eq!(recv(&caller).0, b"to caller");
        intruder
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 64];
        assert!(
            intruder.recv_from(&mut b).is_err(),
            "the intruder got audio"
        );
        assert!(r.counters().dropped.load(Ordering::Relaxed) >= 1);
    }

    #[test]
    fn a_party_on_hold_at_0_0_0_0_or_pointing_at_us_gets_nothing() {
        let r = relay(1, 31300);
        let sess = r.session().unwrap();
        let caller = StdUdp::bind("127.0.0.1:0").unwrap();
        let held = Endpoint {
            rtp: "0.0.0.0:40000".parse().unwrap(),
            rtcp: "0.0.0.0:40001".parse().unwrap(),
        };
        sess.set_remote(Side::Callee, held);
        std::thread::sleep(Duration::from_millis(50));
        caller.send_to(b"hello?", sess.caller_facing()).unwrap();
        for _ in 0..50 {
            if r.counters().dropped.load(Ordering::Relaxed) == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(r.counters().dropped.load(Ordering::Relaxed), 1);
        assert_eq!(r.counters().packets.load(Ordering::Relaxed), 0);
        // A description naming our own callee-facing port: no loop, nothing sent.
        let loop_to_us = Endpoint {
            rtp: sess.callee_facing(),
            rtcp: SocketAddr::new(sess.callee_facing().ip(), sess.callee_facing().port() + 1),
        };
        sess.set_remote(Side::Callee, loop_to_us);
        std::thread::sleep(Duration::from_millis(50));
        caller.send_to(b"hello?", sess.caller_facing()).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(r.counters().packets.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn latching_follows_where_packets_really_come_from() {
        let r = relay(1, 31100);
        let sess = r.session().unwrap();
        // The caller's description names a private address it cannot be reached at (NAT).
        let nowhere = unreachable();
        let caller = StdUdp::bind("127.0.0.1:0").unwrap();
        let callee = StdUdp::bind("127.0.0.1:0").unwrap();
        sess.set_remote(Side::Caller, nowhere);
        sess.set_remote(Side::Callee, endpoint(&callee));
        std::thread::sleep(Duration::from_millis(50));
        caller.send_to(b"hello", sess.caller_facing()).unwrap();
        assert_eq!(recv(&callee).0, b"hello");
        // The answer goes to where the caller's packet came from, not to its description.
        callee.send_to(b"back", sess.callee_facing()).unwrap();
        assert_eq!(recv(&caller).0, b"back");
    }

    /// Early media from a branch that lost (a trunk's ringback, say) is still arriving when the
    /// winner's description replaces it: it must not latch the callee side, or the winner,
    /// behind NAT and so not at its described address, would never be heard.
    #[test]
    fn a_replaced_party_cannot_latch_again() {
        let r = relay(1, 31900);
        let sess = r.session().unwrap();
        let caller = StdUdp::bind("127.0.0.1:0").unwrap();
        let loser = StdUdp::bind("127.0.0.1:0").unwrap();
        let winner = StdUdp::bind("127.0.0.1:0").unwrap();
        sess.set_remote(Side::Caller, endpoint(&caller));
        sess.set_remote(Side::Callee, endpoint(&loser));
        std::thread::sleep(Duration::from_millis(50));
        loser.send_to(b"ringback", sess.callee_facing()).unwrap();
        assert_eq!(recv(&caller).0, b"ringback");

        // The winner answers; its description names an address it is not reachable at.
        let behind_nat = unreachable();
        sess.set_remote(Side::Callee, behind_nat);
        std::thread::sleep(Duration::from_millis(50));
        loser
            .send_to(b"late ringback", sess.callee_facing())
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        winner.send_to(b"hello", sess.callee_facing()).unwrap();
        assert_eq!(recv(&caller).0, b"hello");
        caller.send_to(b"hi", sess.caller_facing()).unwrap();
        assert_eq!(recv(&winner).0, b"hi");

        // The winner describes the same address again (a hold, say): still the same party,
        // whose packets latch again.
        sess.set_remote(Side::Callee, behind_nat);
        std::thread::sleep(Duration::from_millis(50));
        winner.send_to(b"still here", sess.callee_facing()).unwrap();
        assert_eq!(recv(&caller).0, b"still here");
    }

    /// A party that holds with `c=0.0.0.0` and goes on sending (music on hold) is the same party;
    /// one whose description moved while it keeps sending from where it did (RTP that is not
    /// symmetric) is heard again once [`STALE_FOR`] has passed.
    #[test]
    fn a_party_that_stays_put_is_not_stale_for_long() {
        let r = relay(1, 32100);
        let sess = r.session().unwrap();
        let (caller, callee) = parties(&sess);
        caller.send_to(b"hello", sess.caller_facing()).unwrap();
        assert_eq!(recv(&callee).0, b"hello");

        let hold = Endpoint {
            rtp: "0.0.0.0:4000".parse().unwrap(),
            rtcp: "0.0.0.0:4001".parse().unwrap(),
        };
        sess.set_remote(Side::Caller, hold);
        std::thread::sleep(Duration::from_millis(50));
        caller.send_to(b"music", sess.caller_facing()).unwrap();
        assert_eq!(recv(&callee).0, b"music");

        let elsewhere = unreachable();
        sess.set_remote(Side::Caller, elsewhere);
        std::thread::sleep(Duration::from_millis(50));
        caller.send_to(b"too soon", sess.caller_facing()).unwrap();
        callee
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(callee.recv_from(&mut [0u8; 64]).is_err(), "stale for now");
        std::thread::sleep(STALE_FOR);
        caller.send_to(b"later", sess.caller_facing()).unwrap();
        assert_eq!(recv(&callee).0, b"later");
    }

    #[test]
    fn rtcp_goes_over_the_next_port() {
        let r = relay(1, 31200);
        let sess = r.session().unwrap();
        let caller_rtcp = StdUdp::bind("127.0.0.1:0").unwrap();
        let callee_rtcp = StdUdp::bind("127.0.0.1:0").unwrap();
        let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
        sess.set_remote(
            Side::Caller,
            Endpoint {
                rtp: unused,
                rtcp: caller_rtcp.local_addr().unwrap(),
            },
        );
        sess.set_remote(
            Side::Callee,
            Endpoint {
                rtp: unused,
                rtcp: callee_rtcp.local_addr().unwrap(),
            },
        );
        std::thread::sleep(Duration::from_millis(50));
        let to = SocketAddr::new(sess.caller_facing().ip(), sess.caller_facing().port() + 1);
        caller_rtcp.send_to(b"sr", to).unwrap();
        let (got, from) = recv(&callee_rtcp);
        assert_eq!(got, b"sr");
        assert_eq!(from.port(), sess.callee_facing().port() + 1);
    }

    #[test]
    fn ports_are_even_pairs_and_come_back_when_the_session_ends() {
        let r = parking_relay(
            1,
            31301,
            Duration::from_millis(50),
            Duration::from_millis(200),
        );
        let before = r.free_pairs();
        let sess = r.session().unwrap();
        assert_eq!(sess.caller_facing().port() % 2, 0);
        assert_eq!(sess.callee_facing().port() % 2, 0);
        assert_eq!(r.free_pairs(), before - 2);
        let port = sess.caller_facing().port();
        drop(sess);
        assert_eq!(r.free_pairs(), before);
        // Parked, the pair stays bound; once it has been idle for `close_after` the worker
        // closes it and the port binds again.
        assert!(
            StdUdp::bind(("127.0.0.1", port)).is_err(),
            "parked, still ours"
        );
        let mut ok = false;
        for _ in 0..100 {
            if StdUdp::bind(("127.0.0.1", port)).is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(ok, "port {port} still taken");
    }

    /// With every port in use or parked, a new session takes two pairs parked on another worker
    /// than its turn would give it, and runs there.
    #[test]
    fn with_no_port_left_pairs_parked_on_another_worker_are_taken() {
        let r = Relay::start(RelayConfig {
            bind: "127.0.0.1".parse().unwrap(),
            advertise: "127.0.0.1".parse().unwrap(),
            port_min: 32000,
            port_max: 32009, // four pairs
            threads: 2,
            reuse_after: Duration::from_secs(60),
            close_after: Duration::from_secs(60),
            kernel_forwarding: false,
        })
        .unwrap();
        let first = r.session().unwrap(); // worker 0
        let second = r.session().unwrap(); // worker 1
        let parked = [second.caller_facing().port(), second.callee_facing().port()];
        drop(second);
        std::thread::sleep(Duration::from_millis(50));
        let third = r.session().unwrap(); // worker 0's turn: nothing there
        assert_eq!(
            [third.caller_facing().port(), third.callee_facing().port()],
            parked
        );
        let (caller, callee) = parties(&third);
        caller.send_to(b"hello", third.caller_facing()).unwrap();
        assert_eq!(recv(&callee).0, b"hello");
        assert!(matches!(r.session(), Err(RelayError::NoPorts { .. })));
        drop(first);
    }

    /// A parked pair goes to a later session on the same worker, not before it has waited, and
    /// relays there as if new.
    #[test]
    fn parked_pairs_are_taken_again_after_their_wait() {
        let r = parking_relay(
            1,
            31801,
            Duration::from_millis(300),
            Duration::from_secs(10),
        );
        let first = r.session().unwrap();
        let ports = [first.caller_facing().port(), first.callee_facing().port()];
        drop(first);
        let second = r.session().unwrap();
        let fresh = [second.caller_facing().port(), second.callee_facing().port()];
        assert!(
            fresh.iter().all(|p| !ports.contains(p)),
            "{fresh:?} taken while {ports:?} waited"
        );
        std::thread::sleep(Duration::from_millis(350));
        let third = r.session().unwrap();
        assert_eq!(
            [third.caller_facing().port(), third.callee_facing().port()],
            ports
        );

        let (caller, callee) = parties(&third);
        caller.send_to(b"hello", third.caller_facing()).unwrap();
        assert_eq!(recv(&callee), (b"hello".to_vec(), third.callee_facing()));
        callee.send_to(b"back", third.callee_facing()).unwrap();
        assert_eq!(recv(&caller), (b"back".to_vec(), third.caller_facing()));
    }

    /// The old call's late packets reach the pair while it is parked and are dropped there, a
    /// burst of them too: they neither reach anybody nor latch the next session, whose caller
    /// (behind NAT, so its description names another address) latches with its own first
    /// packet.
    #[test]
    fn late_packets_of_an_ended_call_do_not_reach_the_next_one() {
        let r = parking_relay(
            1,
            31851,
            Duration::from_millis(200),
            Duration::from_secs(10),
        );
        let old_caller = StdUdp::bind("127.0.0.1:0").unwrap();
        let old_callee = StdUdp::bind("127.0.0.1:0").unwrap();
        let first = r.session().unwrap();
        first.set_remote(Side::Caller, endpoint(&old_caller));
        first.set_remote(Side::Callee, endpoint(&old_callee));
        let port = first.caller_facing();
        drop(first);
        std::thread::sleep(Duration::from_millis(50));
        // A burst, more than one wake-up's budget: the rest waits in the socket and is read
        // before the pair is used again.
        for _ in 0..200 {
            old_caller.send_to(b"late", port).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));

        let next = r.session().unwrap();
        assert_eq!(next.caller_facing(), port, "the parked pair is taken again");
        let caller = StdUdp::bind("127.0.0.1:0").unwrap();
        let callee = StdUdp::bind("127.0.0.1:0").unwrap();
        let unused = StdUdp::bind("127.0.0.1:0").unwrap();
        next.set_remote(Side::Caller, endpoint(&unused));
        next.set_remote(Side::Callee, endpoint(&callee));
        std::thread::sleep(Duration::from_millis(50));
        caller.send_to(b"new", port).unwrap();
        assert_eq!(recv(&callee).0, b"new".to_vec());
        old_caller.send_to(b"later", port).unwrap();
        caller.send_to(b"newer", port).unwrap();
        assert_eq!(recv(&callee).0, b"newer".to_vec());
        old_callee
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        assert!(
            old_callee.recv_from(&mut [0u8; 64]).is_err(),
            "nothing for the old callee"
        );
    }

    #[test]
    fn idle_time_restarts_with_every_packet() {
        let r = relay(1, 31500);
        let sess = r.session().unwrap();
        std::thread::sleep(Duration::from_millis(300));
        assert!(sess.idle() >= Duration::from_millis(300));
        let phone = StdUdp::bind("127.0.0.1:0").unwrap();
        phone.send_to(b"x", sess.caller_facing()).unwrap();
        let mut fresh = false;
        for _ in 0..50 {
            if sess.idle() < Duration::from_millis(200) {
                fresh = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(fresh, "idle {:?} after a packet", sess.idle());
    }

    #[test]
    fn transcoding_converts_payload_and_type_both_ways() {
        use crate::media::g711;
        let r = relay(1, 31600);
        let sess = r.session().unwrap();
        let caller = StdUdp::bind("127.0.0.1:0").unwrap();
        let callee = StdUdp::bind("127.0.0.1:0").unwrap();
        sess.set_remote(Side::Caller, endpoint(&caller));
        sess.set_remote(Side::Callee, endpoint(&callee));
        sess.set_transcoding(Some((0, 8))); // caller PCMU, callee PCMA
        std::thread::sleep(Duration::from_millis(50));

        let samples: Vec<i16> = (0..160).map(|i| (i * 200 - 16000) as i16).collect();
        let mut pkt = vec![0x80, 0x80, 0, 1, 0, 0, 0, 160, 0, 0, 0, 7]; // PCMU, marker set
        pkt.extend(samples.iter().map(|s| g711::linear_to_ulaw(*s)));
        caller.send_to(&pkt, sess.caller_facing()).unwrap();
        let (got, _) = recv(&callee);
        assert_eq!(got[1], 0x80 | 8, "PCMA with the marker kept");
        assert_eq!(&got[2..12], &pkt[2..12]);
        for (i, b) in got[12..].iter().enumerate() {
            let heard = i32::from(g711::alaw_to_linear(*b));
            let said = i32::from(samples[i]);
            assert!(
                (heard - said).abs() <= (said.abs() / 16).max(32),
                "{i}: {said} -> {heard}"
            );
        }

        // The other way, and a telephone-event (type 101) untouched.
        let mut back = vec![0x80, 8, 0, 2, 0, 0, 1, 64, 0, 0, 0, 9];
        back.extend([g711::linear_to_alaw(1000); 160]);
        callee.send_to(&back, sess.callee_facing()).unwrap();
        let (got, _) = recv(&caller);
        assert_eq!(got[1], 0);
        assert!((i32::from(g711::ulaw_to_linear(got[12])) - 1000).abs() < 64);
        let dtmf = [0x80, 101, 0, 3, 0, 0, 0, 0, 0, 0, 0, 9, 5, 0x80, 0, 160];
        callee.send_to(&dtmf, sess.callee_facing()).unwrap();
        assert_eq!(recv(&caller).0, dtmf.to_vec());
    }

    /// Failing to bind for another reason than a port in use is that reason, not "no ports".
    #[test]
    fn a_bind_that_fails_for_another_reason_says_so() {
        let r = Relay::start(RelayConfig {
            bind: "192.0.2.1".parse().unwrap(), // TEST-NET-1: not an address of this host
            advertise: "192.0.2.1".parse().unwrap(),
            port_min: 31500,
            port_max: 31540,
            threads: 1,
            reuse_after: RelayConfig::REUSE_AFTER,
            close_after: RelayConfig::CLOSE_AFTER,
            kernel_forwarding: false,
        })
        .unwrap();
        match r.session() {
            Err(RelayError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::AddrNotAvailable),
            other => panic!("{other:?}"),
        }
        assert_eq!(r.free_pairs(), 20, "the port tried is not lost");
    }

    #[test]
    fn running_out_of_ports_is_an_error_not_a_panic() {
        let r = Relay::start(RelayConfig {
            bind: "127.0.0.1".parse().unwrap(),
            advertise: "127.0.0.1".parse().unwrap(),
            port_min: 31400,
            port_max: 31404,
            threads: 1,
            reuse_after: RelayConfig::REUSE_AFTER,
            close_after: RelayConfig::CLOSE_AFTER,
            kernel_forwarding: false,
        })
        .unwrap();
        let s = r.session().unwrap();
        assert!(matches!(r.session(), Err(RelayError::NoPorts { .. })));
        // With nothing else left, pairs still waiting after their session are better than no
        // call at all.
        drop(s);
        let s = r.session().unwrap();
        assert!(matches!(r.session(), Err(RelayError::NoPorts { .. })));
        drop(s);
    }

    /// Ringback played to the caller: RTP from our port, PCMA as asked, 20 ms apart, with
    /// rising sequence numbers and timestamps; what the callee sends is held back meanwhile and
    /// relayed again once the playing stops.
    #[test]
    fn a_tone_played_to_one_side_replaces_the_other_side() {
        let r = relay(1, 31700);
        let sess = r.session().unwrap();
        let caller = StdUdp::bind("127.0.0.1:0").unwrap();
        let callee = StdUdp::bind("127.0.0.1:0").unwrap();
        sess.set_remote(Side::Caller, endpoint(&caller));
        sess.set_remote(Side::Callee, endpoint(&callee));
        let tones = crate::media::tone::Tones::default();
        sess.play(Side::Caller, Some((Sound::Tone(tones.ringback), PCMA)));
        let started = Instant::now();
        let mut samples = Vec::new();
        let mut last: Option<(u16, u32)> = None;
        for i in 0..25 {
            if i == 5 {
                // Held back while the tone plays.
                callee
                    .send_to(b"callee talks", sess.callee_facing())
                    .unwrap();
            }
            let (pkt, from) = recv(&caller);
            assert_eq!(from, sess.caller_facing());
            assert_eq!(pkt.len(), 12 + FRAME, "{:?}", &pkt[..pkt.len().min(20)]);
            assert_eq!(pkt[0], 0x80);
            assert_eq!(pkt[1] & 0x7f, PCMA);
            assert_eq!(
                pkt[1] & 0x80 != 0,
                i == 0,
                "marker on the first packet only"
            );
            let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
            let ts = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
            if let Some((s0, t0)) = last {
                assert_eq!(seq, s0.wrapping_add(1));
                assert_eq!(ts, t0.wrapping_add(160));
            }
            last = Some((seq, ts));
            samples.extend(
                pkt[12..]
                    .iter()
                    .map(|&a| crate::media::g711::alaw_to_linear(a)),
            );
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(440) && took < Duration::from_millis(900),
            "25 frames of 20 ms took {took:?}"
        );
        // 425 Hz: about 425 / 8000 · 2 zero crossings per sample.
        let crossings = samples
            .windows(2)
            .filter(|w| (w[0] < 0) != (w[1] < 0))
            .count();
        let expected = 425.0 * 2.0 * samples.len() as f64 / 8000.0;
        assert!(
            (crossings as f64 - expected).abs() < expected * 0.05,
            "{crossings} crossings, expected about {expected}"
        );
        sess.play(Side::Caller, None);
        std::thread::sleep(Duration::from_millis(60));
        // Drain what was in flight, then the callee is heard again.
        caller
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // Drained tone packets move the last sequence number on.
        let mut b = [0u8; 1500];
        let (mut s0, mut t0) = last.unwrap();
        while let Ok((n, _)) = caller.recv_from(&mut b) {
            if n >= 12 {
                s0 = u16::from_be_bytes([b[2], b[3]]);
                t0 = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            }
        }
        // The callee's RTP now continues our stream: our SSRC, the next sequence number and
        // timestamp, the marker set; the payload untouched.
        let mut rtp = vec![
            0x80, 0x00, 0x12, 0x34, 0, 0, 0x10, 0, 0xde, 0xad, 0xbe, 0xef,
        ];
        rtp.extend_from_slice(b"callee again");
        callee.send_to(&rtp, sess.callee_facing()).unwrap();
        let (got, _) = recv(&caller);
        assert_eq!(&got[12..], b"callee again");
        assert_eq!(got[1], 0x80, "marker, PCMU as sent");
        let seq = u16::from_be_bytes([got[2], got[3]]);
        let ts = u32::from_be_bytes([got[4], got[5], got[6], got[7]]);
        assert_eq!(seq, s0.wrapping_add(1), "{s0} -> {seq}");
        assert_eq!(ts, t0.wrapping_add(160), "{t0} -> {ts}");
        assert_ne!(
            &got[8..12],
            &[0xde, 0xad, 0xbe, 0xef],
            "our SSRC, not the callee's"
        );
        // The next one keeps the same offsets.
        let mut rtp2 = rtp.clone();
        rtp2[3] = 0x35;
        rtp2[7] = 0xa0;
        callee.send_to(&rtp2, sess.callee_facing()).unwrap();
        let (got2, _) = recv(&caller);
        assert_eq!(u16::from_be_bytes([got2[2], got2[3]]), seq.wrapping_add(1));
        assert_eq!(
            u32::from_be_bytes([got2[4], got2[5], got2[6], got2[7]]),
            ts.wrapping_add(160)
        );
        assert_eq!(got2[1], 0x00, "no marker after the first");
        assert_eq!(&got2[8..12], &got[8..12]);
    }

    #[test]
    fn echo_sends_rtp_back_to_where_it_came_from() {
        let r = relay(1, 31800);
        let sess = r.session().unwrap();
        sess.set_echo();
        std::thread::sleep(Duration::from_millis(20));
        let caller = StdUdp::bind("127.0.0.1:0").unwrap();
        caller.send_to(b"hello me", sess.caller_facing()).unwrap();
        let (got, from) = recv(&caller);
        assert_eq!(got, b"hello me");
        assert_eq!(from, sess.caller_facing());
    }
}

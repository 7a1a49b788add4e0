//! SIP transports (RFC 3261 §18): UDP sockets, TCP and TLS listeners and their connections.
//!
//! This is the I/O edge of the SIP stack. It owns sockets and connections, frames stream input by
//! Content-Length ([`message::frame`]), answers CRLF keep-alives (RFC 5626 §3.5.1), and hands
//! every complete stream message to the SIP core as an [`Incoming`] with the flow it arrived on.
//! UDP sockets are bound here but read by the SIP core itself ([`Transports::udp_readers`]): a
//! datagram is parsed and answered on the thread that read it, with no hand-off in between. It
//! sends bytes to a [`Peer`]: over UDP from the socket the peer talks to, over TCP/TLS through the
//! peer's own connection (which is how we reach phones behind NAT). It knows nothing of
//! transactions, dialogs or registrations.
//!
//! Streams that send garbage are answered (when a 400 can be built) and closed; a message must
//! arrive whole within [`STALL_TIMEOUT`] of its first byte, and a new connection must bring its
//! first within that time too; a stream idle for [`IDLE_TIMEOUT`] is closed (phones keep theirs
//! alive with CRLF pings or re-registrations: the registrar grants stream registrations less
//! than that). A peer that does not read what we write for [`WRITE_TIMEOUT`] is dropped.
//! Connections are limited in all ([`MAX_STREAMS`]) and per source address
//! ([`MAX_STREAMS_PER_IP`]): an office behind one NAT has many phones, a flood has more.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::message::{self, Frame, MAX_MESSAGE_SIZE};
use crate::config::{SipListen, Transport};

/// A stream that stops in the middle of a message for this long is closed.
pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A stream with no traffic at all for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(900);
/// A peer that takes none of what we write for this long is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Stream connections open at once, in all and from one IP address.
pub const MAX_STREAMS: usize = 20_000;
pub const MAX_STREAMS_PER_IP: usize = 500;
/// Set in the id of every TLS connection's flow (ids count up from 1 and never get near it).
const TLS_FLOW: u64 = 1 << 62;
/// Set in the id of every connection a peer opened to us. Once such a connection is gone,
/// nothing can reach that peer over a stream until it connects again (behind NAT its source
/// port takes no connections), so a send to it fails at once instead of dialling it.
const INBOUND_FLOW: u64 = 1 << 61;
/// How long opening a connection of ours may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a message came from, or goes to: address, transport and the flow (the UDP socket or the
/// stream connection) that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub flow: u64,
}

impl Peer {
    pub fn is_reliable(&self) -> bool {
        self.transport != Transport::Udp
    }
}

/// What the stream side hands the SIP core.
#[derive(Debug)]
pub enum Incoming {
    /// A complete message off the wire (not parsed yet: parsing happens on the core's side so
    /// a flood of garbage costs the sender's flow, not the reader's).
    Message { bytes: Vec<u8>, from: Peer },
    /// A connection of ours to `to` could not be made (refused, timed out, or its TLS
    /// certificate did not verify): what was queued for it is lost, and for
    /// [`UNREACHABLE_FOR`] sends to it fail at once (RFC 3261 §18.4: a transport error).
    Unreachable { to: SocketAddr },
}

/// How long sends to a peer we could not connect to fail at once instead of dialling again.
pub const UNREACHABLE_FOR: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        listen: SipListen,
        source: std::io::Error,
    },
    #[error("TLS: {0}")]
    Tls(String),
}

/// TLS material: configured files, or a self-signed pair generated into the data dir.
pub struct TlsFiles<'a> {
    pub cert: Option<&'a Path>,
    pub key: Option<&'a Path>,
    pub data_dir: &'a Path,
}

/// Bytes on their way out. Shared, not owned: the transaction layer keeps the same bytes for
/// retransmissions, and a send copies nothing.
pub type Payload = Arc<[u8]>;

/// A UDP socket as the transports keep it: non-blocking, shared by whoever sends.
type Udp = Arc<std::net::UdpSocket>;

enum Sender {
    Udp(Udp),
    Stream(mpsc::Sender<Payload>),
}

/// A UDP socket for the SIP core to read: its flow, its address, and its own handle on the
/// socket (to register with the core's reactor).
pub struct UdpReader {
    pub flow: u64,
    pub local: SocketAddr,
    pub socket: std::net::UdpSocket,
}

/// What a TLS connection of ours to one address must find: the name the peer's certificate
/// has to show, and the roots it has to chain to.
#[derive(Clone)]
pub struct TlsTarget {
    pub name: rustls::pki_types::ServerName<'static>,
    pub config: Arc<rustls::ClientConfig>,
}

/// The bound transports. Cheap to share (`Arc`); `send` never blocks.
pub struct Transports {
    flows: DashMap<u64, (Sender, Transport)>,
    /// Connections we open (a trunk over TCP or TLS), by destination: the queue of their
    /// writer, usable while the connection is still being made.
    outbound: DashMap<(SocketAddr, Transport), mpsc::Sender<Payload>>,
    /// Where TLS connections of ours may go, as whoever resolved the names said
    /// ([`Transports::expect_tls`]): no TLS connection is opened to an address without one.
    tls_targets: DashMap<SocketAddr, TlsTarget>,
    /// Peers we could not connect to, until when sends to them fail at once.
    unreachable: DashMap<(SocketAddr, Transport), std::time::Instant>,
    /// Where incoming messages go (outbound connections read into it too).
    sink: mpsc::Sender<Incoming>,
    me: std::sync::OnceLock<std::sync::Weak<Transports>>,
    /// The UDP sockets (flow, whether IPv4, socket); the first of a family sends to peers we
    /// have no flow with.
    udp_default: Vec<(u64, bool, Udp)>,
    /// The runtime the transports were bound on, where connections of ours are made.
    rt: tokio::runtime::Handle,
    next_flow: AtomicU64,
    bound: Vec<SipListen>,
    /// Inbound connections open: in all, and per source address (IPv6: per /64).
    inbound: AtomicUsize,
    inbound_per_ip: DashMap<IpAddr, usize>,
    per_ip_limit: AtomicUsize,
}

/// What each SIP UDP socket asks the kernel to buffer for it (the kernel caps it at
/// `net.core.rmem_max`). Linux's default, 208 KiB, holds only a hundred-odd datagrams of a
/// call's size once the kernel's own per-packet overhead is counted: a few milliseconds of
/// the SIP core not reading (descheduled on a busy machine) at a few thousand calls a second,
/// and every datagram after that is lost. Each one lost is then sent again by its sender a
/// retransmission interval later, at the cost of a late call and more work for both sides; at
/// 3,500 calls/s on a two-core machine the default buffer dropped 18,000 datagrams in 15 s
/// and failed 0.2 % of the calls (bench/RESULTS.md, nineteenth session).
pub const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Asks for [`UDP_RECEIVE_BUFFER`] on `sock`; says so once, with the way out, when the kernel
/// grants less.
fn widen_receive_buffer(sock: &std::net::UdpSocket, addr: SocketAddr) {
    let sock = socket2::SockRef::from(sock);
    if let Err(e) = sock.set_recv_buffer_size(UDP_RECEIVE_BUFFER) {
        tracing::warn!(%addr, error = %e, "sip: cannot size the UDP receive buffer");
        return;
    }
    // Linux reports twice what it was asked (the other half is its bookkeeping), so a size
    // below the request is certainly capped.
    match sock.recv_buffer_size() {
        Ok(granted) if granted < UDP_RECEIVE_BUFFER => tracing::info!(
            %addr,
            granted,
            wanted = UDP_RECEIVE_BUFFER,
            "sip: the kernel capped the UDP receive buffer; raise net.core.rmem_max to absorb bursts"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(%addr, error = %e, "sip: UDP receive buffer size unknown"),
    }
}

impl Transports {
    /// Binds every listen address. Stream messages go to `sink`; UDP is read by the SIP core
    /// ([`Transports::udp_readers`]).
    pub async fn bind(
        listen: &[SipListen],
        tls: TlsFiles<'_>,
        sink: mpsc::Sender<Incoming>,
        tasks: &mut JoinSet<()>,
    ) -> Result<Arc<Transports>, TransportError> {
        let needs_tls = listen.iter().any(|l| l.transport == Transport::Tls);
        let acceptor = if needs_tls {
            Some(
                super::tls::acceptor(tls.cert, tls.key, tls.data_dir)
                    .map_err(TransportError::Tls)?,
            )
        } else {
            None
        };

        let mut udp = Vec::new();
        let mut streams = Vec::new();
        let mut bound = Vec::new();
        for l in listen {
            let err = |source| TransportError::Bind { listen: *l, source };
            match l.transport {
                Transport::Udp => {
                    let sock = std::net::UdpSocket::bind(l.addr).map_err(err)?;
                    sock.set_nonblocking(true).map_err(err)?;
                    let addr = sock.local_addr().map_err(err)?;
                    widen_receive_buffer(&sock, addr);
                    bound.push(SipListen {
                        transport: l.transport,
                        addr,
                    });
                    udp.push((addr, Arc::new(sock)));
                }
                Transport::Tcp | Transport::Tls => {
                    let listener = TcpListener::bind(l.addr).await.map_err(err)?;
                    let addr = listener.local_addr().map_err(err)?;
                    bound.push(SipListen {
                        transport: l.transport,
                        addr,
                    });
                    streams.push((l.transport, listener));
                }
            }
        }

        // UDP sockets get the first flow ids, before anything can arrive.
        let flows = DashMap::new();
        let mut udp_default = Vec::new();
        for (i, (addr, sock)) in udp.iter().enumerate() {
            let flow = i as u64 + 1;
            flows.insert(flow, (Sender::Udp(sock.clone()), Transport::Udp));
            udp_default.push((flow, addr.is_ipv4(), sock.clone()));
        }
        let this = Arc::new(Transports {
            flows,
            outbound: DashMap::new(),
            tls_targets: DashMap::new(),
            unreachable: DashMap::new(),
            sink: sink.clone(),
            me: std::sync::OnceLock::new(),
            next_flow: AtomicU64::new(udp_default.len() as u64 + 1),
            udp_default,
            bound,
            rt: tokio::runtime::Handle::current(),
            inbound: AtomicUsize::new(0),
            inbound_per_ip: DashMap::new(),
            per_ip_limit: AtomicUsize::new(MAX_STREAMS_PER_IP),
        });
        let _ = this.me.set(Arc::downgrade(&this));
        for (transport, listener) in streams {
            tasks.spawn(accept_loop(
                this.clone(),
                listener,
                transport,
                acceptor.clone(),
                sink.clone(),
            ));
        }
        Ok(this)
    }

    /// Handles on the UDP sockets for the SIP core to read from (each a duplicate of the
    /// socket this side sends from, so replies leave from the address requests came to).
    pub fn udp_readers(&self) -> std::io::Result<Vec<UdpReader>> {
        self.udp_default
            .iter()
            .map(|(flow, _, sock)| {
                Ok(UdpReader {
                    flow: *flow,
                    local: sock.local_addr()?,
                    socket: sock.try_clone()?,
                })
            })
            .collect()
    }

    /// What was bound (port 0 resolved).
    pub fn bound(&self) -> &[SipListen] {
        &self.bound
    }

    /// The first bound address of a transport, for Via and Contact headers.
    pub fn local(&self, transport: Transport) -> Option<SocketAddr> {
        self.bound
            .iter()
            .find(|l| l.transport == transport)
            .map(|l| l.addr)
    }

    /// Whether `flow` (a UDP socket or a stream connection) is still there to send on.
    pub fn is_open(&self, flow: u64) -> bool {
        self.flows.contains_key(&flow)
    }

    /// The UDP socket a datagram to `to` leaves from: its flow's, or a default one of its
    /// address family. `None` for a stream peer, or when no socket can reach `to`.
    pub fn udp_socket(&self, to: &Peer) -> Option<UdpSocketRef> {
        if to.transport != Transport::Udp {
            return None;
        }
        if let Some(flow) = self.flows.get(&to.flow) {
            return match &flow.0 {
                Sender::Udp(sock) => Some(UdpSocketRef(sock.clone())),
                Sender::Stream(_) => None,
            };
        }
        let v4 = to.addr.is_ipv4();
        self.udp_default
            .iter()
            .find(|(_, is_v4, _)| *is_v4 == v4)
            .map(|(_, _, sock)| UdpSocketRef(sock.clone()))
    }

    /// Sends `bytes` to `to`. UDP goes out of the flow's socket (or a default one); a stream
    /// goes through the peer's connection. Returns false when the flow is gone (a closed TCP
    /// connection): the caller treats that as a transport error.
    pub fn send(&self, to: &Peer, bytes: Payload) -> bool {
        if to.transport == Transport::Udp {
            return match self.udp_socket(to) {
                Some(socket) => {
                    socket.send(to.addr, &bytes);
                    true
                }
                None => false,
            };
        }
        // Sent under the map's read guard: the send is non-blocking, and it spares cloning the
        // queue for every message.
        if let Some(flow) = self.flows.get(&to.flow) {
            if let Sender::Stream(tx) = &flow.0 {
                return tx.try_send(bytes).is_ok();
            }
        }
        match to.transport {
            Transport::Tcp | Transport::Tls if to.flow & INBOUND_FLOW != 0 => false,
            _ => self.send_outbound(to.addr, to.transport, bytes),
        }
    }

    /// Allows TLS connections of ours to `addr`, verified against `target` (an ITSP's next hop,
    /// once its name resolved). A later call for the same address replaces the target.
    pub fn expect_tls(&self, addr: SocketAddr, target: TlsTarget) {
        self.tls_targets.insert(addr, target);
    }

    /// Sends over our own TCP or TLS connection to `to`, opening it first when there is none (a
    /// trunk reached over TCP or TLS). What is sent meanwhile waits in the connection's queue; a
    /// connection that cannot be made (or whose certificate does not verify) drops it, and the
    /// transactions time out as for a lost datagram.
    fn send_outbound(&self, to: SocketAddr, transport: Transport, bytes: Payload) -> bool {
        let tls = match transport {
            Transport::Tls => match self.tls_targets.get(&to) {
                Some(t) => Some(t.clone()),
                None => {
                    tracing::warn!(%to, "sip/tls: no name to verify this address against; not connecting");
                    return false;
                }
            },
            _ => None,
        };
        let key = (to, transport);
        if let Some(until) = self.unreachable.get(&key).map(|u| *u) {
            if std::time::Instant::now() < until {
                return false;
            }
            self.unreachable.remove(&key);
        }
        let bytes = match self.outbound.get(&key) {
            Some(tx) => match tx.try_send(bytes) {
                Ok(()) => return true,
                Err(mpsc::error::TrySendError::Full(_)) => return false,
                // Its connection ended: a new one takes its place.
                Err(mpsc::error::TrySendError::Closed(bytes)) => bytes,
            },
            None => bytes,
        };
        self.outbound
            .remove_if(&key, |_, queued| queued.is_closed());
        let Some(this) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return false;
        };
        let (tx, rx) = mpsc::channel::<Payload>(256);
        let _ = tx.try_send(bytes);
        self.outbound.insert(key, tx.clone());
        // Weak: a strong sender here would keep the connection's writer waiting for more.
        let ours = tx.downgrade();
        self.rt.spawn(async move {
            let sink = this.sink.clone();
            let queue = Some((tx, rx));
            let connected =
                tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(to));
            let failed = match connected.await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    let t = this.clone();
                    match tls {
                        None => {
                            run_stream(t, stream, to, transport, sink.clone(), queue).await;
                            false
                        }
                        Some(target) => {
                            let connector = tokio_rustls::TlsConnector::from(target.config);
                            let handshake = connector.connect(target.name, stream);
                            match tokio::time::timeout(CONNECT_TIMEOUT, handshake).await {
                                Ok(Ok(s)) => {
                                    run_stream(t, s, to, transport, sink.clone(), queue).await;
                                    false
                                }
                                // An operator needs to see this one: a wrong CA or name.
                                Ok(Err(e)) => {
                                    tracing::warn!(%to, error = %e, "sip/tls: handshake failed");
                                    true
                                }
                                Err(_) => {
                                    tracing::debug!(%to, "sip/tls: handshake timed out");
                                    true
                                }
                            }
                        }
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!(%to, error = %e, "sip: cannot connect");
                    true
                }
                Err(_) => {
                    tracing::debug!(%to, "sip: connecting timed out");
                    true
                }
            };
            if failed {
                this.unreachable
                    .insert(key, std::time::Instant::now() + UNREACHABLE_FOR);
                let _ = sink.try_send(Incoming::Unreachable { to });
            }
            // Unless a newer connection took the place already.
            this.outbound.remove_if(&key, |_, queued| {
                ours.upgrade().is_some_and(|o| o.same_channel(queued))
            });
        });
        true
    }

    /// The peer behind a flow, with its real transport (TLS and TCP look alike to the
    /// transaction layer, which only knows "reliable"). A flow that is gone still tells TLS
    /// from TCP by its id, so that what was meant for a TLS connection is never sent in clear
    /// over a new TCP one.
    pub fn peer(&self, addr: SocketAddr, flow: u64, reliable: bool) -> Peer {
        let gone = if flow & TLS_FLOW != 0 {
            Transport::Tls
        } else if reliable {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let transport = self.flows.get(&flow).map_or(gone, |f| f.1);
        Peer {
            addr,
            transport,
            flow,
        }
    }

    /// Number of open stream connections, for metrics.
    pub fn streams(&self) -> usize {
        self.flows.len().saturating_sub(self.udp_default.len())
    }

    /// Counts a connection from `ip` in, unless that makes too many; counted out on drop.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Admitted> {
        if self.inbound.fetch_add(1, Ordering::Relaxed) >= MAX_STREAMS {
            self.inbound.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        // One IPv6 host has a /64 to choose addresses from.
        let ip = match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        };
        let mut n = self.inbound_per_ip.entry(ip).or_insert(0);
        if *n >= self.per_ip_limit.load(Ordering::Relaxed) {
            drop(n);
            self.inbound.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        Some(Admitted {
            transports: self.clone(),
            ip,
        })
    }
}

/// The flow id for a connection of `transport` that a peer opened and that is gone, as a
/// binding restored after a restart has: a send to it fails at once (no connection to a phone's
/// port is dialled), and a TLS one is never taken for TCP.
pub fn gone_flow(transport: Transport) -> u64 {
    match transport {
        Transport::Udp => 0,
        Transport::Tcp => INBOUND_FLOW,
        Transport::Tls => INBOUND_FLOW | TLS_FLOW,
    }
}

/// The flow id for requests to a peer we reach over a connection of our own (a trunk): 0 for
/// UDP and TCP, TLS's mark for TLS, so that the transaction layer (which only knows
/// "reliable") never has it sent in clear.
pub fn outbound_flow(transport: Transport) -> u64 {
    match transport {
        Transport::Tls => TLS_FLOW,
        _ => 0,
    }
}

/// One admitted inbound connection, counted until dropped.
struct Admitted {
    transports: Arc<Transports>,
    ip: IpAddr,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let t = &self.transports;
        t.inbound.fetch_sub(1, Ordering::Relaxed);
        t.inbound_per_ip.remove_if_mut(&self.ip, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

/// A UDP socket of the transports, held to send on later ([`Transports::udp_socket`]).
pub struct UdpSocketRef(Udp);

impl UdpSocketRef {
    /// Sends one datagram; a failure is lost like the datagram would be on the path.
    pub fn send(&self, to: SocketAddr, bytes: &[u8]) {
        send_udp(&self.0, to, bytes);
    }

    /// Sends datagrams in order, several per system call ([`super::udp_batch::send`]).
    pub fn send_batch<'a>(&self, datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>) {
        super::udp_batch::send(&self.0, datagrams);
    }

    /// Whether both are the same socket.
    pub fn same(&self, other: &UdpSocketRef) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

fn send_udp(sock: &std::net::UdpSocket, to: SocketAddr, bytes: &[u8]) {
    if let Err(e) = sock.send_to(bytes, to) {
        // A full socket buffer (`WouldBlock`) included: the datagram is lost like any other on
        // a congested path, and the transaction layer's retransmissions cover it. Waiting here
        // would stall every other message the SIP core has to handle.
        tracing::debug!(%to, error = %e, "sip/udp send failed");
    }
}

async fn accept_loop(
    transports: Arc<Transports>,
    listener: TcpListener,
    transport: Transport,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    sink: mpsc::Sender<Incoming>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "sip: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = transports.admit(from.ip()) else {
            tracing::debug!(%from, "sip: too many connections, refused");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let transports = transports.clone();
        let sink = sink.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            match (transport, acceptor) {
                (Transport::Tls, Some(acc)) => {
                    let tls =
                        tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await;
                    match tls {
                        Ok(Ok(s)) => run_stream(transports, s, from, transport, sink, None).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%from, error = %e, "sip/tls handshake failed")
                        }
                        Err(_) => tracing::debug!(%from, "sip/tls handshake timed out"),
                    }
                }
                _ => run_stream(transports, stream, from, transport, sink, None).await,
            }
        });
    }
}

/// The writing queue of a connection (made before an outbound connection exists).
type Queue = (mpsc::Sender<Payload>, mpsc::Receiver<Payload>);

/// Reads and writes one stream connection until either side closes it.
async fn run_stream<S>(
    transports: Arc<Transports>,
    stream: S,
    from: SocketAddr,
    transport: Transport,
    sink: mpsc::Sender<Incoming>,
    queue: Option<Queue>,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut flow = transports.next_flow.fetch_add(1, Ordering::Relaxed);
    if transport == Transport::Tls {
        flow |= TLS_FLOW;
    }
    let outbound = queue.is_some();
    if !outbound {
        flow |= INBOUND_FLOW;
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = queue.unwrap_or_else(|| mpsc::channel::<Payload>(256));
    transports
        .flows
        .insert(flow, (Sender::Stream(tx.clone()), transport));
    let mut writer = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&bytes)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::debug!(%from, "sip: peer takes nothing we write, closing");
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown()).await;
    });

    let peer = Peer {
        addr: from,
        transport,
        flow,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    // A connection a peer opened must bring its first message, and every message once begun
    // must arrive whole, by this time; otherwise only the idle timeout applies.
    let mut deadline = (!outbound).then(|| tokio::time::Instant::now() + STALL_TIMEOUT);
    let mut writer_done = false;
    // Framing looks at the whole buffer; a peer sending a byte at a time would have it do that
    // once per byte. So it runs again only when it can find more: a message's whole length
    // once its header is in (`wait_for`), or a header end among the new bytes (`scanned`: no
    // header end before it).
    let mut wait_for = 0usize;
    let mut scanned: Option<usize> = None;
    // Whether the peer has sent anything framed on this connection.
    let mut heard = false;
    'conn: loop {
        // Frame everything already buffered.
        loop {
            if buf.len() < wait_for {
                break;
            }
            if let Some(from) = scanned.filter(|_| buf.len() < MAX_MESSAGE_SIZE) {
                let new = buf.get(from.saturating_sub(3)..).unwrap_or_default();
                if memchr::memmem::find(new, b"\r\n\r\n").is_none() {
                    scanned = Some(buf.len());
                    break;
                }
            }
            let framed = message::frame(&buf, MAX_MESSAGE_SIZE);
            (wait_for, scanned) = (0, None);
            match framed {
                Frame::Message(len) => {
                    let bytes: Vec<u8> = buf.drain(..len).collect();
                    deadline = None;
                    heard = true;
                    if sink
                        .send(Incoming::Message { bytes, from: peer })
                        .await
                        .is_err()
                    {
                        break 'conn;
                    }
                }
                Frame::KeepAlive(len) => {
                    buf.drain(..len);
                    heard = true;
                    // A double-CRLF ping gets a single-CRLF pong (RFC 5626 §3.5.1).
                    if len >= 4 {
                        let _ = tx.try_send(Payload::from(&b"\r\n"[..]));
                        // It counts as the first message a new connection owes.
                        deadline = None;
                    }
                }
                Frame::Incomplete => {
                    // Skipped until a header end comes only once the start line has been
                    // checked (garbage is refused as soon as it shows); line ends alone are
                    // no header under way.
                    let quiet = buf.iter().all(|&b| b == b'\r' || b == b'\n');
                    if !quiet && message::awaits_header_end(&buf) {
                        scanned = Some(buf.len());
                    }
                    break;
                }
                Frame::Body(total) => {
                    wait_for = total;
                    break;
                }
                Frame::Invalid(err) => {
                    tracing::debug!(%from, error = %err, "sip: unframeable stream input, closing");
                    if let Some(resp) = err.response_bytes() {
                        let _ = tx.try_send(resp.into());
                    }
                    break 'conn;
                }
            }
        }
        // Only line ends buffered (half a keep-alive, or one between messages) is quiet, not
        // a message under way.
        let quiet = buf.iter().all(|&b| b == b'\r' || b == b'\n');
        let now = tokio::time::Instant::now();
        if !quiet && deadline.is_none() {
            deadline = Some(now + STALL_TIMEOUT);
        }
        let until = deadline.unwrap_or(now + IDLE_TIMEOUT);
        let read = tokio::select! {
            r = tokio::time::timeout_at(until, rd.read(&mut chunk)) => r,
            // The writer gave up (the peer took nothing, or the connection broke): nothing we
            // send gets there any more, so the connection is closed, not kept for reading.
            _ = &mut writer => {
                writer_done = true;
                break;
            }
        };
        match read {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => {
                tracing::debug!(%from, stalled = !quiet, "sip: stream timed out, closing");
                break;
            }
        }
    }
    transports.flows.remove(&flow);
    if outbound && !heard {
        // The peer ended a connection of ours without answering anything: as good as one that
        // could not be made. A TLS 1.3 server that refuses our client certificate does exactly
        // this, since it checks the certificate only after our side of the handshake is done;
        // the INVITE sent meanwhile would otherwise wait for the no-answer time.
        transports.unreachable.insert(
            (from, transport),
            std::time::Instant::now() + UNREACHABLE_FOR,
        );
        let _ = sink.try_send(Incoming::Unreachable { to: from });
    }
    if outbound {
        // Later messages for this peer open a new connection instead of queueing here.
        transports
            .outbound
            .remove_if(&(from, transport), |_, queued| queued.same_channel(&tx));
    }
    drop(tx);
    // What was queued goes out if the peer takes it; a peer that does not is not waited for.
    if !writer_done
        && tokio::time::timeout(WRITE_TIMEOUT, &mut writer)
            .await
            .is_err()
    {
        writer.abort();
    }
}

/// For logs.
pub fn describe(addrs: &[SipListen]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transports bound to `listen` (one address), their tasks, and the receiver of what they
    /// read (kept so that the sink stays open).
    async fn bound(listen: &str) -> (Arc<Transports>, JoinSet<()>, mpsc::Receiver<Incoming>) {
        let listen: Vec<SipListen> = vec![listen.parse().expect("listen")];
        let dir = std::env::temp_dir();
        let tls = TlsFiles {
            cert: None,
            key: None,
            data_dir: &dir,
        };
        let (sink, rx) = mpsc::channel(8);
        let mut tasks = JoinSet::new();
        let t = Transports::bind(&listen, tls, sink, &mut tasks)
            .await
            .expect("bind");
        (t, tasks, rx)
    }

    /// The SIP socket gets the receive buffer it asks for, as far as the kernel allows
    /// (`net.core.rmem_max`); with the kernel's default it would hold a tenth of it or less.
    #[tokio::test]
    async fn udp_sockets_get_a_wide_receive_buffer() {
        let (t, _tasks, _rx) = bound("udp:127.0.0.1:0").await;
        let readers = t.udp_readers().expect("readers");
        let granted = socket2::SockRef::from(&readers[0].socket)
            .recv_buffer_size()
            .expect("size");
        let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(UDP_RECEIVE_BUFFER);
        assert!(
            granted >= UDP_RECEIVE_BUFFER.min(cap),
            "receive buffer {granted} B, wanted {UDP_RECEIVE_BUFFER} B (rmem_max {cap} B)"
        );
    }

    #[tokio::test]
    async fn a_gone_tls_flow_is_never_reached_in_clear() {
        let (t, _tasks, _rx) = bound("udp:127.0.0.1:0").await;
        let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        // Flows that closed: a TLS one stays TLS, and nothing is sent to it.
        let gone_tls = t.peer(addr, 7 | TLS_FLOW, true);
        assert_eq!(gone_tls.transport, Transport::Tls);
        assert!(!t.send(&gone_tls, Payload::from(&b"OPTIONS"[..])));
        assert_eq!(t.peer(addr, 7, true).transport, Transport::Tcp);
        assert_eq!(t.peer(addr, 7, false).transport, Transport::Udp);
        // A phone's own TCP connection that closed: nothing reaches it until it connects
        // again, so the send fails at once (a transport error) instead of dialling its port.
        let gone_phone = t.peer(addr, 7 | INBOUND_FLOW, true);
        assert_eq!(gone_phone.transport, Transport::Tcp);
        assert!(!t.send(&gone_phone, Payload::from(&b"OPTIONS"[..])));
        // Bindings restored after a restart: TLS stays TLS, and neither is dialled.
        for transport in [Transport::Tcp, Transport::Tls] {
            let restored = t.peer(addr, gone_flow(transport), true);
            assert_eq!(restored.transport, transport);
            assert!(!t.send(&restored, Payload::from(&b"OPTIONS"[..])));
        }
    }

    /// A connection of ours that the peer closes before sending anything is reported like one
    /// that could not be made; one that brought an answer first is not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_closed_unanswered_is_unreachable() {
        use tokio::io::AsyncWriteExt;
        let (t, _tasks, mut rx) = bound("tcp:127.0.0.1:0").await;
        for answers in [false, true] {
            let peer = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let to = peer.local_addr().expect("addr");
            let accepted = tokio::spawn(async move {
                let (mut s, _) = peer.accept().await.expect("accept");
                let mut b = [0u8; 64];
                let _ = s.read(&mut b).await;
                if answers {
                    let _ = s.write_all(b"\r\n\r\n").await;
                }
            });
            assert!(t.send(&t.peer(to, 0, true), Payload::from(&b"OPTIONS"[..])));
            accepted.await.expect("the peer ran");
            let got = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
            match (answers, got) {
                (false, Ok(Some(Incoming::Unreachable { to: u }))) => assert_eq!(u, to),
                (true, Err(_)) => {}
                (answers, got) => panic!("answers {answers}: {got:?}"),
            }
        }
    }

    /// A message dribbled a few bytes at a time, and one whose body comes after its header, are
    /// each handed on once, whole (framing waits for a header end, then for the length).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn messages_in_pieces_are_framed_whole() {
        use tokio::io::AsyncWriteExt;
        let (t, _tasks, mut rx) = bound("tcp:127.0.0.1:0").await;
        let to = t.local(Transport::Tcp).expect("tcp listener");
        let mut s = tokio::net::TcpStream::connect(to).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let msg = |body: &str| {
            format!(
                "MESSAGE sip:x SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKp\r\n\
                 From: <sip:t@x>;tag=1\r\nTo: <sip:x>\r\nCall-ID: p\r\nCSeq: 1 MESSAGE\r\n\
                 Max-Forwards: 70\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        };
        let first = msg("hello");
        for piece in first.as_bytes().chunks(7) {
            s.write_all(piece).await.expect("write");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let second = msg(&"x".repeat(3000));
        let (head, body) = second.split_at(second.len() - 3000);
        s.write_all(head.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(&body.as_bytes()[..1000]).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.write_all(&body.as_bytes()[1000..]).await.expect("write");
        for want in [first, second] {
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a message in time")
                .expect("a message");
            let Incoming::Message { bytes, .. } = got else {
                panic!("not a message: {got:?}");
            };
            assert_eq!(String::from_utf8_lossy(&bytes), want);
        }
    }

    /// Past the limit of connections from one address, the next is closed at once; once one
    /// closes, another is taken again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_from_one_address_are_limited() {
        let (t, _tasks, _rx) = bound("tcp:127.0.0.1:0").await;
        // A handful stands for MAX_STREAMS_PER_IP: a test process may have few descriptors.
        const LIMIT: usize = 8;
        t.per_ip_limit.store(LIMIT, Ordering::Relaxed);
        let to = t.local(Transport::Tcp).expect("tcp listener");
        let mut open = Vec::new();
        for _ in 0..LIMIT {
            open.push(tokio::net::TcpStream::connect(to).await.expect("connect"));
        }
        // Every one of them counted in before the next test.
        for _ in 0..100 {
            if t.inbound.load(Ordering::Relaxed) == LIMIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(t.inbound.load(Ordering::Relaxed), LIMIT);
        let closed = |mut s: tokio::net::TcpStream| async move {
            let mut b = [0u8; 16];
            matches!(
                tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
                Ok(Ok(0)) | Ok(Err(_))
            )
        };
        let extra = tokio::net::TcpStream::connect(to).await.expect("connect");
        assert!(closed(extra).await, "a connection past the limit was kept");
        drop(open.pop());
        for _ in 0..100 {
            if t.inbound.load(Ordering::Relaxed) < LIMIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let again = tokio::net::TcpStream::connect(to).await.expect("connect");
        let mut b = [0u8; 16];
        let mut again = again;
        assert!(
            tokio::time::timeout(Duration::from_millis(500), again.read(&mut b))
                .await
                .is_err(),
            "a connection within the limit was closed"
        );
    }
}

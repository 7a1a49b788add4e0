//! The SIP endpoint: the driver that runs the sans-IO transaction layer over the transports and
//! routes each new request to the service that owns it (registrar, later the B2BUA).
//!
//! The SIP core runs on a thread of its own (`sip-core`, a single-threaded tokio runtime): it
//! owns the [`TransactionLayer`] and the B2BUA's calls, reads the UDP sockets itself, parses,
//! feeds the layer, carries out its outputs (transmissions, timers) and hands requests on. A
//! datagram is read, parsed, decided and answered on this one thread, with no hand-off between
//! threads; under load each wake-up takes every datagram waiting. Stream connections (TCP, TLS)
//! and everything that waits on the store run on the main runtime and talk to the core through
//! channels. A service answers in place when it can ([`RequestHandler::submit`]) or later by
//! sending [`Command::Respond`]; nothing here waits on a database. It owns no protocol rules of
//! its own beyond the RFC 3261 §8.2 checks a UAS applies before any service sees a request
//! (OPTIONS, unsupported methods).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::Interest;
use tokio::sync::mpsc;

use super::header::HeaderName;
use super::message::{self, Message, Method};
use super::transaction::{self, Output, ServerTxId, TransactionLayer};
use super::transport::{Incoming, Payload, Peer, Transports, UdpReader, UdpSocketRef};
use super::udp_batch::RecvBatch;
use crate::b2bua::service::{Calls, Routed};
use crate::config::Transport;

/// Methods the server accepts; listed in `Allow`.
pub const ALLOW: &str =
    "REGISTER, OPTIONS, INVITE, ACK, CANCEL, BYE, UPDATE, INFO, NOTIFY, REFER, PRACK";

/// What a service hands to the endpoint.
#[derive(Debug)]
pub enum Command {
    /// Send final (or provisional) responses on server transactions: one, or all that one
    /// commit of the registrar's writer releases (one hand-off and at most one wake-up of the
    /// core for the whole batch).
    Respond(Vec<(ServerTxId, Message)>),
}

/// A new request for a service, with what it needs to answer.
#[derive(Debug)]
pub struct Request {
    pub tx: ServerTxId,
    pub msg: Message,
    /// The transport-level source: address, transport and flow (for NAT and connection reuse).
    pub source: Peer,
}

/// A response a service gives at once.
#[derive(Debug)]
pub struct Answer {
    pub tx: ServerTxId,
    pub response: Message,
    /// Send it as a stateless UAS would and forget the transaction (RFC 3261 §8.2.7; see
    /// [`TransactionLayer::respond_statelessly`]): for a challenge to an unauthenticated
    /// non-INVITE request, whose To tag the service derives from the request.
    pub stateless: bool,
}

/// A service that takes requests from the endpoint. `submit` runs on the endpoint's task and
/// must not block: it answers at once when it can (most REGISTERs: the decision is in memory),
/// or takes the request and answers later through [`Command::Respond`] (after a database write
/// or lookup). Answering in place saves two task hand-offs per request.
pub trait RequestHandler: Send + Sync {
    fn submit(&self, req: Request) -> Option<Answer>;

    /// Whether requests from `source` get no answer at all (a banned address): the endpoint
    /// then forgets the transaction instead of keeping it open for an answer that never comes.
    fn refuses(&self, _source: &Peer) -> bool {
        false
    }
}

/// Where the endpoint sends the requests it does not answer itself.
pub struct Services {
    pub register: std::sync::Arc<dyn RequestHandler>,
    /// The B2BUA: INVITEs and everything inside a dialog. It runs on the endpoint's task, next
    /// to the transaction layer; routes it resolves elsewhere come back on the receiver.
    pub calls: (Calls, mpsc::Receiver<Routed>),
    /// The trunks' REGISTER clients (their client transactions run on this task too).
    pub trunks: crate::trunks::service::Registrations,
}

/// The channel services answer on, made before the services (which need its sending end) and
/// the endpoint (which reads it).
pub fn channel() -> (mpsc::Sender<Command>, mpsc::Receiver<Command>) {
    mpsc::channel(COMMAND_QUEUE)
}

/// The running SIP core. Dropping it stops the core (at its next wake-up).
pub struct Running {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    /// Stops the core and waits for its thread to end.
    pub async fn stop(mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Dropping the sender wakes the core, which returns; its thread ends by itself.
        self.stop.take();
    }
}

/// Starts the SIP core on its own thread: it reads the transports' UDP sockets itself, takes
/// stream messages from `incoming` and answers `commands`.
pub fn start(
    transports: Arc<Transports>,
    incoming: mpsc::Receiver<Incoming>,
    commands: mpsc::Receiver<Command>,
    services: Services,
    seed: u64,
) -> std::io::Result<Running> {
    let layer = TransactionLayer::new(transaction::Config {
        tag_seed: seed,
        ..transaction::Config::default()
    });
    let udp = transports.udp_readers()?;
    // Built here, so that a failure stops the start instead of leaving a server without SIP.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("sip-core".into())
        .spawn(move || {
            let core = Core {
                layer,
                transports,
                incoming,
                commands,
                stopped,
            };
            rt.block_on(core.run(udp, services, seed));
        })?;
    Ok(Running {
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// Responses waiting for the endpoint task.
const COMMAND_QUEUE: usize = 8192;
/// Datagrams taken from one socket per wake-up before timers and channels get a turn (read
/// in batches of [`super::udp_batch::BATCH`]).
const UDP_BUDGET: usize = 64;

/// What the core's loop owns.
struct Core {
    layer: TransactionLayer,
    transports: Arc<Transports>,
    incoming: mpsc::Receiver<Incoming>,
    commands: mpsc::Receiver<Command>,
    stopped: tokio::sync::oneshot::Receiver<()>,
}

/// A UDP socket registered with the core's reactor.
struct UdpIn {
    flow: u64,
    socket: tokio::net::UdpSocket,
}

/// Which UDP socket has a datagram waiting (errors count as ready: reading reports them).
fn udp_ready(udp: &[UdpIn]) -> impl std::future::Future<Output = usize> + '_ {
    std::future::poll_fn(move |cx| {
        for (i, u) in udp.iter().enumerate() {
            if u.socket.poll_recv_ready(cx).is_ready() {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    })
}

impl Core {
    async fn run(self, readers: Vec<UdpReader>, services: Services, seed: u64) {
        let Core {
            mut layer,
            transports,
            mut incoming,
            mut commands,
            mut stopped,
        } = self;
        let mut udp = Vec::new();
        for r in readers {
            match tokio::net::UdpSocket::from_std(r.socket) {
                Ok(socket) => udp.push(UdpIn {
                    flow: r.flow,
                    socket,
                }),
                Err(e) => {
                    tracing::error!(local = %r.local, error = %e, "sip: cannot read a UDP socket")
                }
            }
        }
        let mut batch = RecvBatch::new();
        let mut tags = seed;
        let register = services.register;
        let (mut calls, mut routed) = services.calls;
        let mut trunks = services.trunks;
        let mut services = Handlers {
            register: register.as_ref(),
            calls: &mut calls,
            trunks: &mut trunks,
            outbox: Vec::with_capacity(UDP_BUDGET * 2),
        };
        loop {
            let deadline = [
                layer.poll_timeout(),
                services.calls.poll_timeout(),
                services.trunks.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                i = udp_ready(&udp) => {
                    let u = &udp[i];
                    let mut taken = 0;
                    while taken < UDP_BUDGET {
                        let read = u.socket.try_io(Interest::READABLE, || batch.recv(&u.socket));
                        let n = match read {
                            Ok(n) => n,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            // ICMP errors from earlier sends surface here on some systems.
                            Err(e) => {
                                tracing::trace!(error = %e, "sip/udp receive error");
                                taken += 1;
                                continue;
                            }
                        };
                        taken += n;
                        for k in 0..n {
                            let (bytes, from) = batch.get(k);
                            // Keep-alives: plain CRLF (common) needs no answer; a STUN Binding
                            // request (RFC 5626 §4.4.2) gets the address it came from.
                            if bytes.iter().all(|b| *b == b'\r' || *b == b'\n' || *b == 0) {
                                continue;
                            }
                            if super::stun::is_stun(bytes) {
                                if let Some(r) = super::stun::binding_response(bytes, from) {
                                    let _ = u.socket.try_send_to(&r, from);
                                }
                                continue;
                            }
                            let peer = Peer { addr: from, transport: Transport::Udp, flow: u.flow };
                            on_incoming(&mut layer, &transports, bytes, peer);
                            drain(&mut layer, &transports, &mut services, &mut tags);
                        }
                    }
                }
                msg = incoming.recv() => {
                    let Some(msg) = msg else { return };
                    on_stream(&mut layer, &transports, msg);
                    // Drain what is already queued before looking at timers again: cheaper under load.
                    while let Ok(msg) = incoming.try_recv() {
                        on_stream(&mut layer, &transports, msg);
                        drain(&mut layer, &transports, &mut services, &mut tags);
                    }
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    on_command(&mut layer, cmd);
                    while let Ok(cmd) = commands.try_recv() {
                        on_command(&mut layer, cmd);
                        drain(&mut layer, &transports, &mut services, &mut tags);
                    }
                }
                r = routed.recv() => {
                    if let Some(r) = r {
                        services.calls.start(&mut layer, r, Instant::now());
                    }
                }
                _ = sleep => {
                    let now = Instant::now();
                    layer.handle_timeout(now);
                    services.calls.handle_timeout(&mut layer, now);
                    services.trunks.handle_timeout(&mut layer, now);
                }
                _ = &mut stopped => return,
            }
            drain(&mut layer, &transports, &mut services, &mut tags);
            flush(&mut services.outbox);
        }
    }
}

fn on_command(layer: &mut TransactionLayer, cmd: Command) {
    let now = Instant::now();
    match cmd {
        Command::Respond(responses) => {
            for (tx, response) in responses {
                respond(layer, tx, response, now);
            }
        }
    }
}

fn respond(layer: &mut TransactionLayer, tx: ServerTxId, response: Message, now: Instant) {
    if let Err(e) = layer.send_response(tx, response, now) {
        // The transaction ended meanwhile (e.g. Timer H); nothing to answer any more.
        tracing::debug!(error = ?e, "sip: response for a finished transaction dropped");
    }
}

/// What the stream side handed over: a message, or a connection of ours that failed (its
/// transactions end with a transport error, RFC 3261 §17.1.4, instead of waiting for Timer B/F).
fn on_stream(layer: &mut TransactionLayer, transports: &Transports, incoming: Incoming) {
    match incoming {
        Incoming::Message { bytes, from } => on_incoming(layer, transports, &bytes, from),
        Incoming::Unreachable { to } => layer.peer_unreachable(to, Instant::now()),
    }
}

fn on_incoming(layer: &mut TransactionLayer, transports: &Transports, bytes: &[u8], from: Peer) {
    match message::parse(bytes) {
        Ok(parsed) => {
            let from = transaction::Peer {
                addr: from.addr,
                reliable: from.is_reliable(),
                flow: from.flow,
            };
            layer.handle_incoming(parsed, from, Instant::now());
        }
        Err(err) => {
            tracing::debug!(from = %from.addr, error = %err, "sip: malformed message");
            // A request we can still answer gets its 400/505 statelessly; responses and
            // garbage are dropped (never answer a response).
            if let Some(bytes) = err.response_bytes() {
                transports.send(&from, bytes.into());
            }
        }
    }
}

/// The services as the endpoint's task holds them.
struct Handlers<'a> {
    register: &'a dyn RequestHandler,
    calls: &'a mut Calls,
    trunks: &'a mut crate::trunks::service::Registrations,
    /// Datagrams to send once the burst of received ones is handled ([`flush`]).
    outbox: Vec<(UdpSocketRef, SocketAddr, Payload)>,
}

/// Sends the datagrams [`drain`] put aside, in the order they were made. Why they wait: a
/// `sendto` to a peer whose process sleeps wakes it from inside the call (on loopback the
/// whole delivery runs in the sender's thread), and those wake-ups were a quarter of the SIP
/// core's time under call load. Sent back to back after a burst, they wake each peer once.
/// Each run of datagrams for the same socket goes out in batches ([`UdpSocketRef::send_batch`]).
fn flush(outbox: &mut Vec<(UdpSocketRef, SocketAddr, Payload)>) {
    let mut rest = &outbox[..];
    while let Some((socket, _, _)) = rest.first() {
        let run = rest.iter().take_while(|(s, _, _)| s.same(socket)).count();
        socket.send_batch(rest[..run].iter().map(|(_, to, bytes)| (*to, &bytes[..])));
        rest = &rest[run..];
    }
    outbox.clear();
}

/// Carries out everything the layer has to say.
fn drain(
    layer: &mut TransactionLayer,
    transports: &Transports,
    services: &mut Handlers<'_>,
    tags: &mut u64,
) {
    while let Some(out) = layer.poll_output() {
        match out {
            Output::Transmit { to, bytes, tx } => {
                let peer = transports.peer(to.addr, to.flow, to.reliable);
                // Once a socket is found for it, a datagram cannot fail in a way the layer
                // would hear of, so it may wait for the end of the burst.
                if let Some(socket) = transports.udp_socket(&peer) {
                    services.outbox.push((socket, peer.addr, bytes));
                } else if !transports.send(&peer, bytes) {
                    if let Some(tx) = tx {
                        layer.transport_error(tx, Instant::now());
                    }
                }
            }
            Output::Request { tx, msg, from } => {
                let now = Instant::now();
                let source = transports.peer(from.addr, from.flow, from.reliable);
                if let Some(response) = bad_extension(&msg, tags) {
                    // A banned address gets no answer at all, this one included.
                    if services.register.refuses(&source) {
                        layer.discard(tx);
                    } else {
                        let _ = layer.send_response(tx, response, now);
                    }
                    continue;
                }
                let msg = if msg.method() == Some(&Method::Register) {
                    msg
                } else {
                    match services.calls.on_request(layer, tx, msg, source, now) {
                        Some(msg) => msg,
                        None => continue,
                    }
                };
                if let Some(response) = screen(&msg, tags) {
                    let _ = layer.send_response(tx, response, now);
                    continue;
                }
                if services.register.refuses(&source) {
                    layer.discard(tx);
                    continue;
                }
                let req = Request { tx, msg, source };
                if let Some(a) = services.register.submit(req) {
                    if a.stateless {
                        let _ = layer.respond_statelessly(a.tx, a.response, now);
                    } else {
                        let _ = layer.send_response(a.tx, a.response, now);
                    }
                }
            }
            Output::Cancel {
                tx, invite, msg, ..
            } => {
                services
                    .calls
                    .on_cancel(layer, tx, &msg, invite, Instant::now());
            }
            Output::Response { tx, msg } => {
                let now = Instant::now();
                if !services.trunks.on_response(layer, tx, &msg, now) {
                    services.calls.on_response(layer, tx, &msg, now);
                }
            }
            Output::Ack2xx { msg, .. } => {
                services.calls.on_ack(layer, &msg, Instant::now());
            }
            Output::Timeout { tx } | Output::TransportError { tx } => {
                let now = Instant::now();
                let unreachable = matches!(out, Output::TransportError { .. });
                if !services.trunks.on_client_failure(tx, now) {
                    services
                        .calls
                        .on_client_failure(layer, tx, unreachable, now);
                }
            }
            Output::Terminated { tx } => {
                if !services.trunks.on_terminated(tx) {
                    services.calls.on_terminated(tx);
                }
            }
            Output::StrayResponse { .. } => {}
        }
    }
}

/// Answers what no service needs to see: OPTIONS to the server, methods we do not handle.
fn screen(msg: &Message, tags: &mut u64) -> Option<Message> {
    let method = msg.method()?;
    let mut resp = match method {
        Method::Register => return None,
        Method::Options => {
            let mut r = Message::response_to(msg, 200, "OK");
            let _ = r.push_header(HeaderName::Allow, ALLOW);
            let _ = r.push_header(HeaderName::Accept, "application/sdp");
            let _ = r.push_header(HeaderName::Supported, SUPPORTED);
            r
        }
        // Methods we take only inside a call's dialog (so `Allow` lists them): one that reaches
        // here has no To tag, so no dialog to belong to. RFC 3261 §15.1.2 (BYE) and §12.2.2
        // answer that with 481, not 405. A caller that gives up on a call nobody answered may
        // well send such a BYE.
        Method::Bye
        | Method::Update
        | Method::Info
        | Method::Prack
        | Method::Notify
        | Method::Refer => Message::response_to(msg, 481, "Call/Transaction Does Not Exist"),
        Method::Extension(_) => {
            let mut r = Message::response_to(msg, 501, "Not Implemented");
            let _ = r.push_header(HeaderName::Allow, ALLOW);
            r
        }
        _ => {
            let mut r = Message::response_to(msg, 405, "Method Not Allowed");
            let _ = r.push_header(HeaderName::Allow, ALLOW);
            r
        }
    };
    let _ = resp.push_header(HeaderName::Server, SERVER);
    add_to_tag(&mut resp, tags);
    Some(resp)
}

/// The option tags we support (RFC 3261 §19.2): RFC 4028 session timers, RFC 3262 reliable
/// provisionals towards a caller that requires them, and RFC 3891 `Replaces` for a confirmed
/// dialog of an answered call (attended transfer). Not `path`, `outbound` or `gruu`.
const SUPPORTED_TAGS: [&str; 3] = ["timer", "100rel", "replaces"];

/// [`SUPPORTED_TAGS`] as a `Supported` value.
pub const SUPPORTED: &str = "timer, 100rel, replaces";

/// RFC 3261 §8.2.2.3: a request that requires an option tag we do not support gets 420 (Bad
/// Extension) listing those tags in `Unsupported`, before any service sees it. Not for ACK or
/// CANCEL, which cannot be refused. `Proxy-Require` is for proxies; a UAS ignores it.
///
/// §8.2 would have authentication first; answering 420 before a challenge tells an
/// unauthenticated sender nothing about users, and it retries without the extension.
fn bad_extension(msg: &Message, tags: &mut u64) -> Option<Message> {
    if matches!(
        msg.method(),
        Some(Method::Ack) | Some(Method::Cancel) | None
    ) {
        return None;
    }
    let mut unsupported: Option<String> = None;
    for tag in msg.headers(&HeaderName::Require) {
        if tag.is_empty() || SUPPORTED_TAGS.iter().any(|t| tag.eq_ignore_ascii_case(t)) {
            continue;
        }
        let list = unsupported.get_or_insert_with(String::new);
        if !list.is_empty() {
            list.push_str(", ");
        }
        list.push_str(tag);
    }
    let unsupported = unsupported?;
    let mut r = Message::response_to(msg, 420, "Bad Extension");
    // The tags come from the request; one that cannot be written back is left out of the
    // answer, not a reason to give none.
    let _ = r.push_header(HeaderName::Unsupported, &unsupported);
    let _ = r.push_header(HeaderName::Server, SERVER);
    add_to_tag(&mut r, tags);
    Some(r)
}

/// `Server` / `User-Agent` value.
pub const SERVER: &str = concat!("Switchboard/", env!("CARGO_PKG_VERSION"));

/// A final response outside a dialog needs a To tag (RFC 3261 §8.2.6.2) unless it has one.
pub fn add_to_tag(resp: &mut Message, counter: &mut u64) {
    if resp.to().and_then(|t| t.tag()).is_none() {
        *counter = counter.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let _ = resp.set_to_tag(&message::new_tag(*counter));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: &str, extra: &str) -> Message {
        let text = format!(
            "{method} sip:100@pbx.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx\r\n\
             From: <sip:a@pbx.test>;tag=1\r\nTo: <sip:100@pbx.test>\r\nCall-ID: c\r\n\
             CSeq: 1 {method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        message::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn in_dialog_methods_outside_a_dialog_get_481() {
        let mut tags = 0;
        for method in ["BYE", "UPDATE", "INFO", "PRACK", "NOTIFY", "REFER"] {
            let r = screen(&request(method, ""), &mut tags).expect(method);
            assert_eq!(r.status(), Some(481), "{method}");
            assert!(r.to().and_then(|t| t.tag()).is_some(), "{method}");
        }
        // Methods we do not take at all are still 405 (listed in `Allow`) or 501.
        for (method, status) in [("SUBSCRIBE", 405), ("MESSAGE", 405), ("FOO", 501)] {
            let r = screen(&request(method, ""), &mut tags).expect(method);
            assert_eq!(r.status(), Some(status), "{method}");
            assert_eq!(r.header(&HeaderName::Allow), Some(ALLOW), "{method}");
        }
        assert_eq!(
            screen(&request("OPTIONS", ""), &mut tags).and_then(|r| r.status()),
            Some(200)
        );
    }

    #[test]
    fn supported_lists_the_supported_tags() {
        assert_eq!(SUPPORTED, SUPPORTED_TAGS.join(", "));
    }

    #[test]
    fn a_required_extension_we_lack_is_refused_with_420() {
        let mut tags = 0;
        let m = request("INVITE", "Require: 100rel, timer\r\nRequire: path\r\n");
        // (100rel and timer are ours.)
        let r = bad_extension(&m, &mut tags).expect("420");
        assert_eq!(r.status(), Some(420));
        assert_eq!(r.header(&HeaderName::Unsupported), Some("path"));
        assert!(r.to().and_then(|t| t.tag()).is_some());
    }

    #[test]
    fn supported_or_no_requirements_pass_and_ack_cancel_are_never_refused() {
        let mut tags = 0;
        assert!(bad_extension(&request("INVITE", "Require: timer\r\n"), &mut tags).is_none());
        assert!(bad_extension(&request("REGISTER", ""), &mut tags).is_none());
        // Proxy-Require is a proxy's business.
        let m = request("OPTIONS", "Proxy-Require: sec-agree\r\n");
        assert!(bad_extension(&m, &mut tags).is_none());
        for method in ["ACK", "CANCEL"] {
            let m = request(method, "Require: 100rel\r\n");
            assert!(bad_extension(&m, &mut tags).is_none(), "{method}");
        }
    }
}

//! Batched UDP I/O for the SIP core: many datagrams per system call (Linux's `recvmmsg` and
//! `sendmmsg`; the server runs on Linux only, see `media::netfilter`).
//!
//! Why: under call load the SIP core reads several datagrams per wake-up and sends as many
//! after it (bench/RESULTS.md, twentieth session: 8.6 `recvfrom` and 7.0 `sendto` per call).
//! The kernel's work per datagram stays the same; a batch saves each call's own cost: entry and
//! exit, the socket lookup, the security hooks, and the final read that finds nothing left.
//!
//! Why written here: std and tokio offer one datagram per call. `quinn-udp` batches reads, but
//! sends with segmentation offload to one destination at a time (QUIC's case, not ours: a burst
//! goes to many peers), and `nix` would be a dependency for two calls that `libc` already gives.
//!
//! Owns: the batch buffers and the conversion of addresses. Must not touch: what the datagrams
//! mean (the endpoint parses them) or when they are sent (the endpoint's outbox decides).

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Datagrams per system call. About twice the datagrams the SIP core finds waiting per wake-up
/// at 3,000 calls/s; more would only grow the buffers.
pub const BATCH: usize = 16;

/// Room for the largest UDP datagram (a larger one cannot exist, so none is ever truncated).
const SLOT: usize = 65536;

/// Buffers for one batch of received datagrams, reused from one read to the next.
pub struct RecvBatch {
    data: Box<[u8]>,
    lens: [usize; BATCH],
    from: [SocketAddr; BATCH],
}

impl Default for RecvBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        RecvBatch {
            data: vec![0u8; BATCH * SLOT].into_boxed_slice(),
            lens: [0; BATCH],
            from: [SocketAddr::from(([0, 0, 0, 0], 0)); BATCH],
        }
    }

    /// Datagram `i` of the last successful [`RecvBatch::recv`] and where it came from.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddr) {
        let start = i * SLOT;
        (&self.data[start..start + self.lens[i]], self.from[i])
    }

    /// Reads the datagrams waiting on `socket` (a non-blocking socket), at most [`BATCH`]:
    /// how many, or `WouldBlock` when there are none.
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let mut names: [socket2::SockAddrStorage; BATCH] =
            std::array::from_fn(|_| socket2::SockAddrStorage::zeroed());
        // SAFETY: zeroed `iovec` and `mmsghdr` are valid values (C structs of integers and
        // null pointers).
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for (i, ((iov, hdr), name)) in iovs
            .iter_mut()
            .zip(hdrs.iter_mut())
            .zip(names.iter_mut())
            .enumerate()
        {
            iov.iov_base = self.data[i * SLOT..].as_mut_ptr().cast();
            iov.iov_len = SLOT;
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_namelen = name.size_of();
            // (`SockAddrStorage` is a transparent `sockaddr_storage`.)
            hdr.msg_hdr.msg_name = (name as *mut socket2::SockAddrStorage).cast();
        }
        // SAFETY: every header points at its own slot of `self.data` (SLOT bytes each, inside
        // the buffer) and its own `names` entry, all of which outlive the call; the count is
        // the arrays' length.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (hdrs[i].msg_len as usize).min(SLOT);
            let name = std::mem::replace(&mut names[i], socket2::SockAddrStorage::zeroed());
            // SAFETY: the kernel wrote a socket address of `msg_namelen` bytes into `names[i]`.
            let addr = unsafe { socket2::SockAddr::new(name, hdrs[i].msg_hdr.msg_namelen) };
            // A UDP socket's peers are IPv4 or IPv6. Anything else is not for us: it reads as
            // an empty datagram, which the endpoint drops like a keep-alive.
            match addr.as_socket() {
                Some(from) => self.from[i] = from,
                None => self.lens[i] = 0,
            }
        }
        Ok(n)
    }
}

/// Sends `datagrams` on `socket` in order, as many per system call as [`BATCH`] allows. A
/// datagram the kernel refuses (a full socket buffer included) is lost like one on the path,
/// logged, and the rest still go: the transaction layer's retransmissions cover it, and
/// waiting would stall every other message the SIP core has to handle.
pub fn send<'a>(
    socket: &std::net::UdpSocket,
    datagrams: impl IntoIterator<Item = (SocketAddr, &'a [u8])>,
) {
    let mut datagrams = datagrams.into_iter().peekable();
    while datagrams.peek().is_some() {
        let mut chunk: [Option<(socket2::SockAddr, &[u8])>; BATCH] = Default::default();
        for (slot, (to, bytes)) in chunk.iter_mut().zip(&mut datagrams) {
            *slot = Some((socket2::SockAddr::from(to), bytes));
        }
        send_chunk(socket, &chunk);
    }
}

/// One `sendmmsg` (more when one datagram is refused) for up to [`BATCH`] datagrams.
fn send_chunk(socket: &std::net::UdpSocket, chunk: &[Option<(socket2::SockAddr, &[u8])>]) {
    // SAFETY: zeroed `iovec` and `mmsghdr` are valid values.
    let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut count = 0;
    for ((to, bytes), (iov, hdr)) in chunk
        .iter()
        .flatten()
        .zip(iovs.iter_mut().zip(hdrs.iter_mut()))
    {
        iov.iov_base = bytes.as_ptr() as *mut libc::c_void;
        iov.iov_len = bytes.len();
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_name = to.as_ptr() as *mut libc::c_void;
        hdr.msg_hdr.msg_namelen = to.len();
        count += 1;
    }
    let mut next = 0;
    while next < count {
        // SAFETY: headers `next..count` point at the datagrams' bytes and addresses, which the
        // kernel only reads and which outlive the call.
        let sent = unsafe {
            libc::sendmmsg(
                socket.as_raw_fd(),
                hdrs[next..].as_mut_ptr(),
                (count - next) as libc::c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if sent > 0 {
            next += sent as usize;
        } else {
            // The call reports the first datagram's failure; skip it, send the rest.
            let error = io::Error::last_os_error();
            let to = chunk[next].as_ref().and_then(|(to, _)| to.as_socket());
            tracing::debug!(?to, %error, "sip/udp send failed");
            next += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::{Duration, Instant};

    fn bound(addr: &str) -> UdpSocket {
        let s = UdpSocket::bind(addr).expect("bind");
        s.set_nonblocking(true).expect("non-blocking");
        s
    }

    /// Reads until `want` datagrams have come (loopback delivers at once, but not atomically
    /// with the send returning on every kernel), or a second has passed.
    fn read_all(
        batch: &mut RecvBatch,
        sock: &UdpSocket,
        want: usize,
    ) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(1);
        while got.len() < want && Instant::now() < deadline {
            match batch.recv(sock) {
                Ok(n) => got.extend((0..n).map(|i| {
                    let (b, from) = batch.get(i);
                    (b.to_vec(), from)
                })),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    #[test]
    fn a_batch_goes_to_each_destination_in_order_and_comes_back_whole() {
        let sender = bound("127.0.0.1:0");
        let (a, b) = (bound("127.0.0.1:0"), bound("127.0.0.1:0"));
        let (to_a, to_b) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        // More than one system call's worth, to two peers interleaved, sizes from empty to big.
        let payloads: Vec<Vec<u8>> = (0..BATCH + 5)
            .map(|i| vec![i as u8; if i == 3 { 0 } else { i * 997 }])
            .collect();
        let datagrams: Vec<(SocketAddr, &[u8])> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (if i % 2 == 0 { to_a } else { to_b }, p.as_slice()))
            .collect();
        send(&sender, datagrams.iter().copied());

        let mut batch = RecvBatch::new();
        let from = sender.local_addr().unwrap();
        for (sock, parity) in [(&a, 0), (&b, 1)] {
            let want: Vec<&Vec<u8>> = payloads.iter().skip(parity).step_by(2).collect();
            let got = read_all(&mut batch, sock, want.len());
            assert_eq!(got.len(), want.len());
            for ((bytes, src), expected) in got.iter().zip(want) {
                assert_eq!(bytes, expected);
                assert_eq!(*src, from);
            }
        }
        // Nothing more waiting: the caller is told so, not handed an empty batch.
        let e = batch.recv(&a).expect_err("empty socket");
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn one_refused_datagram_does_not_stop_the_rest() {
        let sender = bound("127.0.0.1:0");
        let peer = bound("127.0.0.1:0");
        let to = peer.local_addr().unwrap();
        // An IPv6 destination on an IPv4 socket is refused by the kernel (EAFNOSUPPORT or
        // EINVAL), in the middle of the batch.
        let v6: SocketAddr = "[::1]:5060".parse().unwrap();
        let datagrams: Vec<(SocketAddr, &[u8])> = vec![
            (to, b"one"),
            (v6, b"lost"),
            (to, b"two"),
            (v6, b"lost"),
            (to, b"three"),
        ];
        send(&sender, datagrams.iter().copied());
        let got = read_all(&mut RecvBatch::new(), &peer, 3);
        let texts: Vec<&[u8]> = got.iter().map(|(b, _)| b.as_slice()).collect();
        assert_eq!(texts, [&b"one"[..], b"two", b"three"]);
    }

    #[test]
    fn ipv6_sources_are_reported() {
        let Ok(peer) = UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this machine
        };
        peer.set_nonblocking(true).unwrap();
        let sender = bound("[::1]:0");
        send(&sender, [(peer.local_addr().unwrap(), &b"v6"[..])]);
        let got = read_all(&mut RecvBatch::new(), &peer, 1);
        assert_eq!(got, vec![(b"v6".to_vec(), sender.local_addr().unwrap())]);
    }
}

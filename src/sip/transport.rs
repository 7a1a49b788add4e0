//! SIP transports: the UDP sockets and TCP listeners of `sip.listen`.
//!
//! For now this binds every configured socket (so a misconfigured port fails the start, and
//! phones see the port open) and reads and discards what arrives: the message layer and the
//! registrar are not wired in yet. It owns sockets only; no SIP logic belongs here.

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinSet;

use crate::config::{SipListen, Transport};

/// Sockets bound, with the addresses they really got (port 0 resolves to a free port).
pub struct Bound {
    pub addrs: Vec<SipListen>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {listen}: {source}")]
pub struct BindError {
    listen: SipListen,
    source: std::io::Error,
}

/// Binds every listen address and spawns its reader onto `tasks`.
pub async fn bind(listen: &[SipListen], tasks: &mut JoinSet<()>) -> Result<Bound, BindError> {
    let mut addrs = Vec::new();
    for l in listen {
        let err = |source| BindError { listen: *l, source };
        match l.transport {
            Transport::Udp => {
                let sock = UdpSocket::bind(l.addr).await.map_err(err)?;
                let addr = sock.local_addr().map_err(err)?;
                addrs.push(SipListen {
                    transport: l.transport,
                    addr,
                });
                tasks.spawn(discard_udp(sock));
            }
            // TLS needs the certificate handling of the SIP stack; until then it is a TCP port
            // that accepts and closes, so a configured TLS address is at least bound and checked.
            Transport::Tcp | Transport::Tls => {
                let listener = TcpListener::bind(l.addr).await.map_err(err)?;
                let addr = listener.local_addr().map_err(err)?;
                addrs.push(SipListen {
                    transport: l.transport,
                    addr,
                });
                tasks.spawn(discard_tcp(listener));
            }
        }
    }
    Ok(Bound { addrs })
}

async fn discard_udp(sock: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => tracing::debug!(%from, bytes = n, "sip/udp: not handled yet"),
            Err(e) => tracing::debug!(error = %e, "sip/udp receive error"),
        }
    }
}

async fn discard_tcp(listener: TcpListener) {
    loop {
        let Ok((mut stream, from)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16384];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                tracing::debug!(%from, bytes = n, "sip/tcp: not handled yet");
            }
        });
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

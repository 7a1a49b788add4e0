//! Finding a trunk's servers (RFC 3263 §4.2, as a client that already knows its transport).
//!
//! An IP address is used as it is. A host name with an explicit port is looked up as A/AAAA. A
//! host name without a port is first looked up as SRV records (`_sip._udp.<host>`, or
//! `_sip._tcp.<host>` for a TCP trunk, `_sips._tcp.<host>` for TLS; RFC 2782), whose targets
//! are taken in priority order, and only when there are none as A/AAAA on port 5060 (5061 for
//! TLS). NAPTR is not consulted: the transport
//! is the trunk's configuration, which is what NAPTR would choose.
//!
//! Within one priority, targets are ordered by descending weight rather than by RFC 2782's
//! weighted random draw: a PBX has one trunk to an ITSP and needs a stable next hop more than
//! load spread, and the others are kept as the trunk's known source addresses.
//!
//! Owns the resolver (hickory: the system's `/etc/resolv.conf`, or `[dns] servers`). Must not
//! touch trunk state: it only answers with addresses.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::{ResolveError, TokioResolver};

use crate::config::Transport;

/// How long one resolution (SRV and its targets' addresses) may take.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS lookup timed out")]
    Timeout,
    #[error("no address for {0}")]
    NotFound(String),
    #[error("DNS: {0}")]
    Resolve(#[from] hickory_resolver::ResolveError),
    #[error("no DNS configuration (no [dns] servers and no usable /etc/resolv.conf): {0}")]
    Unconfigured(String),
}

/// The resolver trunks' host names go through.
pub struct Dns {
    /// `None` when the system's configuration could not be read: IP addresses still work,
    /// names fail with [`DnsError::Unconfigured`].
    resolver: Result<TokioResolver, String>,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dns")
    }
}

impl Dns {
    /// Asks `servers` (over UDP, and TCP for answers too long for a datagram), or the system's
    /// name servers when there are none. A system without a usable configuration still starts:
    /// trunks given by IP address need no DNS.
    pub fn new(servers: &[SocketAddr]) -> Dns {
        let provider = TokioConnectionProvider::default();
        let builder = if servers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| e.to_string())
        } else {
            let group: Vec<NameServerConfig> = servers
                .iter()
                .flat_map(|s| {
                    [
                        NameServerConfig::new(*s, Protocol::Udp),
                        NameServerConfig::new(*s, Protocol::Tcp),
                    ]
                })
                .collect();
            Ok(TokioResolver::builder_with_config(
                ResolverConfig::from_parts(None, Vec::new(), group),
                provider,
            )
            .with_options(ResolverOpts::default()))
        };
        if let Err(e) = &builder {
            tracing::warn!(error = %e, "trunks: no DNS configuration; trunks given by name will have no address");
        }
        Dns {
            resolver: builder.map(|b| b.build()),
        }
    }

    /// The addresses to send to for `host` (a name or an IP literal without brackets) and
    /// `port` as configured, best first.
    pub async fn resolve(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Transport,
    ) -> Result<Vec<SocketAddr>, DnsError> {
        if let Ok(ip) = host.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(
                ip,
                port.unwrap_or(transport.default_port()),
            )]);
        }
        tokio::time::timeout(TIMEOUT, self.lookup(host, port, transport))
            .await
            .map_err(|_| DnsError::Timeout)?
    }

    async fn lookup(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Transport,
    ) -> Result<Vec<SocketAddr>, DnsError> {
        // A fully qualified name: no search domains appended to an ITSP's host.
        let fqdn = format!("{}.", host.trim_end_matches('.'));
        if let Some(port) = port {
            return self.addresses(&fqdn, port).await;
        }
        let service = match transport {
            Transport::Udp => format!("_sip._udp.{fqdn}"),
            Transport::Tcp => format!("_sip._tcp.{fqdn}"),
            // RFC 3263 §4.1: SIP over TLS is the `sips` service over TCP.
            Transport::Tls => format!("_sips._tcp.{fqdn}"),
        };
        let records = match self.resolver()?.srv_lookup(service.as_str()).await {
            Ok(found) => {
                let mut records: Vec<(u16, u16, String, u16)> = found
                    .iter()
                    .map(|r| (r.priority(), r.weight(), r.target().to_ascii(), r.port()))
                    .collect();
                records.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                records
            }
            // Only an answer that there are none falls back to A/AAAA: a failing server
            // (SERVFAIL, REFUSED, a timeout) must not send a trunk's calls to another host; the
            // caller keeps the addresses it had.
            Err(e) if is_none_there(&e) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        if records.is_empty() {
            return self.addresses(&fqdn, transport.default_port()).await;
        }
        let mut all = Vec::new();
        for (_, _, target, port) in records {
            // A target of "." says the service is not offered there (RFC 2782).
            if target == "." {
                continue;
            }
            // One target that does not resolve does not sink the others.
            if let Ok(found) = self.addresses(&target, port).await {
                for a in found {
                    if !all.contains(&a) {
                        all.push(a);
                    }
                }
            }
        }
        if all.is_empty() {
            return Err(DnsError::NotFound(service));
        }
        Ok(all)
    }

    fn resolver(&self) -> Result<&TokioResolver, DnsError> {
        self.resolver
            .as_ref()
            .map_err(|e| DnsError::Unconfigured(e.clone()))
    }

    /// A/AAAA of `name`, IPv4 first (our UDP sockets are most often IPv4 only).
    async fn addresses(&self, name: &str, port: u16) -> Result<Vec<SocketAddr>, DnsError> {
        let found = self.resolver()?.lookup_ip(name).await?;
        let mut addrs: Vec<SocketAddr> = found.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        addrs.sort_by_key(|a| a.is_ipv6());
        if addrs.is_empty() {
            return Err(DnsError::NotFound(name.to_owned()));
        }
        Ok(addrs)
    }
}

/// Whether `e` is an answer that the name has no such records (NXDOMAIN, or NOERROR with
/// nothing of that type), as opposed to a server that failed to answer.
fn is_none_there(e: &ResolveError) -> bool {
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            matches!(
                *response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            )
        }
        _ => false,
    }
}

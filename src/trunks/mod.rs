//! SIP trunks: the ITSP accounts outside calls go through and incoming calls come from.
//!
//! Owns what a trunk is at run time ([`Trunk`]: the configuration plus the addresses its host
//! resolved to), how a called number is written for it ([`Trunk::format_number`]), which
//! source addresses count as the trunk ([`Trunks::by_source`]), which DIDs it delivers
//! ([`Trunk::did`]) and the live registration status the API shows. The REGISTER client is a
//! sans-IO state machine in [`registration`]; [`service`] drives it on the SIP endpoint's task.
//!
//! Must not touch: dialplan rules (`routing` decides *that* a call goes to a trunk), call state
//! (`b2bua`), sockets.
//!
//! Host names are resolved by [`dns`]: SRV records when the configuration gives no port, else
//! A/AAAA (RFC 3263). For a TLS trunk, each address found is handed to the transports with the
//! name its certificate must show (the configured host, RFC 5922 §7) and the roots it must
//! chain to: they open no TLS connection to an address without one.

pub mod dns;
pub mod registration;
pub mod service;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::{DidConfig, NumberFormat, TrunkConfig};
use crate::routing::{normalise_e164, strip_separators, to_national, Numbering};
use crate::sip::uri::{Host, Uri};

/// `host[:port]` as a SIP URI's host part would hold it (IPv6 in brackets); the port defaults
/// to 5060. `None` for anything else (a user part, parameters, a scheme).
pub fn parse_host_port(s: &str) -> Option<(Host, u16)> {
    parse_host_and_port(s).map(|(h, p)| (h, p.unwrap_or(5060)))
}

/// As [`parse_host_port`], with the port only when one is written.
fn parse_host_and_port(s: &str) -> Option<(Host, Option<u16>)> {
    let s = s.trim();
    if s.is_empty() || s.contains(['@', ';', '?', '/']) || s.contains("://") {
        return None;
    }
    let uri = Uri::parse(&format!("sip:{s}")).ok()?;
    Some((uri.host()?.clone(), uri.port()))
}

/// Where a DID goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DidTarget {
    /// Ring the current location of the user with this extension.
    User { extension: String },
    /// A fax number.
    Fax,
}

/// One configured trunk at run time.
#[derive(Debug)]
pub struct Trunk {
    pub config: TrunkConfig,
    /// The domain: host part of the registered AOR and of the numbers we call.
    pub domain: String,
    /// Port of `host` as configured (the registrar's port).
    pub domain_port: u16,
    /// Where requests go (`outbound_proxy`, else `host`): name and port, when one is given
    /// (without, a name is looked up as SRV first).
    next_hop: (String, Option<u16>),
    /// What `next_hop` and `host` resolved to, refreshed in the background.
    resolved: RwLock<Resolved>,
    /// A TLS trunk's client configuration (the roots its certificate must chain to).
    tls: Option<Arc<rustls::ClientConfig>>,
}

#[derive(Debug, Default)]
struct Resolved {
    /// Addresses of the next hop, in resolver order; the first is used.
    next_hop: Vec<SocketAddr>,
    /// Every address that counts as this trunk for incoming calls.
    sources: Vec<IpAddr>,
}

impl Trunk {
    fn new(config: TrunkConfig, identity: Option<&crate::sip::tls::Identity>) -> Option<Trunk> {
        let (host, port) = parse_host_and_port(&config.host)?;
        let domain = host.to_string();
        let next_hop = match &config.outbound_proxy {
            Some(p) => parse_host_and_port(p)?,
            None => (host, port),
        };
        let port = port.unwrap_or(config.transport.default_port());
        let tls = match config.transport {
            crate::config::Transport::Tls => {
                let roots = config
                    .tls_ca
                    .clone()
                    .unwrap_or_else(|| crate::sip::tls::SYSTEM_ROOTS.into());
                match crate::sip::tls::connector(&roots, identity) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        // Checked when the configuration was read; the file changed since.
                        tracing::error!(trunk = %config.name, error = %e, "trunk: no TLS roots");
                        None
                    }
                }
            }
            _ => None,
        };
        // Host::to_string gives `[v6]`; the resolver wants it bare.
        let hop_name = match &next_hop.0 {
            Host::V6(a) => a.to_string(),
            other => other.to_string(),
        };
        Some(Trunk {
            domain,
            domain_port: port,
            next_hop: (hop_name, next_hop.1),
            resolved: RwLock::new(Resolved {
                next_hop: Vec::new(),
                sources: config.inbound_addresses.clone(),
            }),
            tls,
            config,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Where requests to this trunk go, when its host has resolved.
    pub fn next_hop(&self) -> Option<SocketAddr> {
        self.resolved
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .next_hop
            .first()
            .copied()
    }

    /// Whether in-dialog requests to this trunk follow the dialog's route set and remote
    /// target (RFC 3261 §12.2.1.1): when there is no outbound proxy, which takes everything.
    /// Over TLS they go through our one connection to the next hop, whose certificate we
    /// checked, never to an address a Contact names.
    pub fn dialog_routed(&self) -> bool {
        self.config.outbound_proxy.is_none()
            && self.config.transport != crate::config::Transport::Tls
    }

    /// The flow requests to this trunk go on (see [`crate::sip::transport::outbound_flow`]).
    pub fn flow(&self) -> u64 {
        crate::sip::transport::outbound_flow(self.config.transport)
    }

    /// The port of `host` written in a URI: none when it is the transport's default.
    pub fn uri_port(&self) -> String {
        if self.domain_port == self.config.transport.default_port() {
            String::new()
        } else {
            format!(":{}", self.domain_port)
        }
    }

    /// Whether an INVITE from `ip` comes from this trunk.
    pub fn is_source(&self, ip: IpAddr) -> bool {
        let r = self.resolved.read().unwrap_or_else(PoisonError::into_inner);
        r.sources.contains(&ip) || r.next_hop.iter().any(|a| a.ip() == ip)
    }

    /// The called number as this ITSP wants it. `number` is what the dialplan produced: E.164
    /// (`+…`) where the plan could make it, else as dialled (short codes), which goes out
    /// unchanged in every format.
    pub fn format_number(&self, number: &str, plan: Option<&Numbering>) -> Option<String> {
        let Some(digits) = number.strip_prefix('+') else {
            return Some(number.to_owned());
        };
        Some(match self.config.number_format {
            NumberFormat::E164 => number.to_owned(),
            NumberFormat::Digits => digits.to_owned(),
            NumberFormat::International => format!("{}{digits}", plan?.international_prefix),
            NumberFormat::National => to_national(number, plan?)?,
        })
    }

    /// The DID a number the trunk delivered is, and where it goes. ITSPs write the number in
    /// any of the usual forms (`+4930…`, `4930…`, `004930…`, `030…`), so each is tried.
    pub fn did(
        &self,
        delivered: &str,
        plan: Option<&Numbering>,
    ) -> Option<(&DidConfig, DidTarget)> {
        let raw = strip_separators(delivered);
        let mut candidates = vec![raw.clone()];
        if raw.bytes().all(|b| b.is_ascii_digit()) {
            candidates.push(format!("+{raw}"));
        }
        if let Some(e) = plan.and_then(|p| normalise_e164(&raw, p)) {
            candidates.push(e);
        }
        let did = self
            .config
            .dids
            .iter()
            .find(|d| candidates.contains(&d.number))?;
        let target = match (&did.extension, did.fax) {
            (Some(e), _) => DidTarget::User {
                extension: e.clone(),
            },
            (None, _) => DidTarget::Fax,
        };
        Some((did, target))
    }

    /// The number to present as caller for a call by the user with `extension`: their DID on
    /// this trunk, else the trunk's `caller_id`, its first DID, or the account name.
    pub fn caller_number(&self, extension: Option<&str>) -> String {
        let own = extension.and_then(|e| {
            self.config
                .dids
                .iter()
                .find(|d| d.extension.as_deref() == Some(e))
        });
        if let Some(d) = own {
            return d.number.clone();
        }
        if let Some(c) = &self.config.caller_id {
            return c.clone();
        }
        if let Some(d) = self.config.dids.first() {
            return d.number.clone();
        }
        self.config.username.clone().unwrap_or_default()
    }

    /// The credentials for digest challenges from this trunk: (username, password).
    pub fn credentials(&self) -> Option<(&str, &str)> {
        let user = self
            .config
            .auth_username
            .as_deref()
            .or(self.config.username.as_deref())?;
        Some((user, self.config.password.as_deref()?))
    }

    /// Tells the transports that the next hop's addresses are this trunk's over TLS: their
    /// certificate must chain to `config`'s roots and name the next hop's host (RFC 5922 §7:
    /// the domain we looked up, not what SRV or a Contact pointed to).
    fn expect_tls(
        &self,
        transports: &crate::sip::transport::Transports,
        config: &Arc<rustls::ClientConfig>,
    ) {
        let Ok(name) = rustls::pki_types::ServerName::try_from(self.next_hop.0.clone()) else {
            tracing::warn!(trunk = self.name(), host = %self.next_hop.0, "trunk: host cannot be checked against a certificate");
            return;
        };
        let hops = self
            .resolved
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .next_hop
            .clone();
        for addr in hops {
            transports.expect_tls(
                addr,
                crate::sip::transport::TlsTarget {
                    name: name.clone(),
                    config: config.clone(),
                },
            );
        }
    }

    /// Looks the host names up again.
    async fn resolve(&self, dns: &dns::Dns) -> Result<(), dns::DnsError> {
        let hop = dns
            .resolve(&self.next_hop.0, self.next_hop.1, self.config.transport)
            .await?;
        // Calls from anywhere else (the registrar's own hosts behind an outbound proxy, say)
        // need `inbound_addresses`: guessing from DNS would trust more than was configured.
        let mut sources = self.config.inbound_addresses.clone();
        sources.extend(hop.iter().map(SocketAddr::ip));
        let mut r = self
            .resolved
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        r.next_hop = hop;
        r.sources = sources;
        Ok(())
    }
}

/// The live state of a trunk's registration, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TrunkStatus {
    pub name: String,
    /// `host` from the configuration.
    pub host: String,
    /// `disabled` (no registration configured), `registering`, `registered` or `failed`.
    pub registration: String,
    /// Unix milliseconds when the registration runs out (registered only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Why the last attempt failed ("401", "timeout", "no address" …).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Where requests to the trunk go now, when resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<String>,
}

/// Every configured trunk, shared by the B2BUA, the registration driver and the API.
#[derive(Debug, Default)]
pub struct Trunks {
    trunks: Vec<Arc<Trunk>>,
    status: RwLock<HashMap<String, TrunkStatus>>,
    /// Told which names TLS trunks' addresses must show ([`Trunks::set_transports`]).
    transports: std::sync::OnceLock<std::sync::Weak<crate::sip::transport::Transports>>,
}

impl Trunks {
    /// The trunks of the configuration (validated there: every host parses). `identity` is what
    /// TLS trunks present when the ITSP asks for a client certificate.
    pub fn new(configs: &[TrunkConfig], identity: Option<&crate::sip::tls::Identity>) -> Trunks {
        let trunks: Vec<Arc<Trunk>> = configs
            .iter()
            .filter_map(|c| Trunk::new(c.clone(), identity).map(Arc::new))
            .collect();
        let status = trunks
            .iter()
            .map(|t| {
                (
                    t.name().to_owned(),
                    TrunkStatus {
                        name: t.name().to_owned(),
                        host: t.config.host.clone(),
                        registration: if t.config.register {
                            "registering".into()
                        } else {
                            "disabled".into()
                        },
                        expires_at: None,
                        last_error: None,
                        next_hop: None,
                    },
                )
            })
            .collect();
        Trunks {
            trunks,
            status: RwLock::new(status),
            transports: std::sync::OnceLock::new(),
        }
    }

    /// Where to tell, as TLS trunks' names resolve, which certificate name each address must
    /// show (set once, at start, before [`Trunks::resolve_all`]).
    pub fn set_transports(&self, transports: &Arc<crate::sip::transport::Transports>) {
        let _ = self.transports.set(Arc::downgrade(transports));
    }

    pub fn is_empty(&self) -> bool {
        self.trunks.is_empty()
    }

    pub fn all(&self) -> &[Arc<Trunk>] {
        &self.trunks
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Trunk>> {
        self.trunks.iter().find(|t| t.name() == name)
    }

    /// A request to `addr` got no answer (a transaction timed out, or could not be sent).
    /// When that is the address a trunk uses and it has others (SRV targets, several A/AAAA
    /// records), the next takes over for later requests and the failed one goes last (RFC 3263
    /// §4.3); the next resolution, within 5 minutes, restores DNS's order.
    pub fn next_hop_failed(&self, addr: SocketAddr) {
        for t in &self.trunks {
            let now = {
                let mut r = t.resolved.write().unwrap_or_else(PoisonError::into_inner);
                if r.next_hop.len() < 2 || r.next_hop.first() != Some(&addr) {
                    continue;
                }
                r.next_hop.rotate_left(1);
                r.next_hop.first().copied()
            };
            tracing::warn!(trunk = t.name(), failed = %addr, next = ?now, "trunk: next hop did not answer; the next address takes over");
            self.update(t.name(), |s| s.next_hop = now.map(|a| a.to_string()));
        }
    }

    /// The trunk an INVITE from `ip` comes from, if any.
    pub fn by_source(&self, ip: IpAddr) -> Option<&Arc<Trunk>> {
        self.trunks.iter().find(|t| t.is_source(ip))
    }

    /// Resolves every trunk's host now (start-up), logging the ones that fail; the returned
    /// future keeps resolving them every `every` (addresses of ITSPs do change) until the
    /// trunks are dropped. The caller runs it on its task set, so shutdown stops it.
    pub async fn resolve_all(
        self: &Arc<Self>,
        dns: dns::Dns,
        every: Duration,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.resolve_once(&dns).await;
        let this = Arc::downgrade(self);
        async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(this) = this.upgrade() else { return };
                this.resolve_once(&dns).await;
            }
        }
    }

    async fn resolve_once(&self, dns: &dns::Dns) {
        let transports = self.transports.get().and_then(std::sync::Weak::upgrade);
        for t in &self.trunks {
            match t.resolve(dns).await {
                Ok(()) => {
                    if let (Some(transports), Some(config)) = (&transports, &t.tls) {
                        t.expect_tls(transports, config);
                    }
                    let hop = t.next_hop();
                    self.update(t.name(), |s| s.next_hop = hop.map(|a| a.to_string()));
                }
                Err(e) => {
                    tracing::warn!(trunk = t.name(), host = %t.next_hop.0, error = %e, "trunk: cannot resolve its host");
                }
            }
        }
    }

    /// The status of every trunk, in configuration order.
    pub fn statuses(&self) -> Vec<TrunkStatus> {
        let s = self.status.read().unwrap_or_else(PoisonError::into_inner);
        self.trunks
            .iter()
            .filter_map(|t| s.get(t.name()).cloned())
            .collect()
    }

    pub(crate) fn update(&self, name: &str, f: impl FnOnce(&mut TrunkStatus)) {
        let mut s = self.status.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(st) = s.get_mut(name) {
            f(st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(format: NumberFormat) -> Trunk {
        let c = crate::config::Config::from_toml(
            r#"
            [[trunks]]
            name = "itsp"
            host = "sip.itsp.test:5070"
            username = "4930555"
            password = "pw"
            dids = [
              { number = "+4930555100", extension = "201" },
              { number = "+4930555199", fax = true },
            ]
            "#,
        )
        .unwrap();
        let mut t = c.trunks[0].clone();
        t.number_format = format;
        Trunk::new(t, None).unwrap()
    }

    fn de() -> Numbering {
        Numbering {
            country_code: "49".into(),
            international_prefix: "00".into(),
            national_prefix: "0".into(),
            area_code: None,
        }
    }

    #[test]
    fn host_port_forms() {
        assert_eq!(
            parse_host_port("sip.example.com"),
            Some((Host::Domain("sip.example.com".into()), 5060))
        );
        assert_eq!(parse_host_port("192.0.2.1:5080").map(|h| h.1), Some(5080));
        assert!(parse_host_port("[2001:db8::1]:5062").is_some());
        for bad in [
            "",
            "user@host",
            "sip:host",
            "host;transport=tcp",
            "host:99999",
        ] {
            assert!(parse_host_port(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn number_formats() {
        let plan = de();
        let cases = [
            (NumberFormat::E164, "+49301234567"),
            (NumberFormat::Digits, "49301234567"),
            (NumberFormat::International, "0049301234567"),
            (NumberFormat::National, "0301234567"),
        ];
        for (format, want) in cases {
            let t = trunk(format);
            assert_eq!(
                t.format_number("+49301234567", Some(&plan)).as_deref(),
                Some(want)
            );
            // Short codes go as they are.
            assert_eq!(t.format_number("112", Some(&plan)).as_deref(), Some("112"));
        }
        let t = trunk(NumberFormat::National);
        assert_eq!(
            t.format_number("+15550109999", Some(&plan)).as_deref(),
            Some("0015550109999")
        );
        // National and international need the numbering plan.
        assert_eq!(t.format_number("+49301234567", None), None);
        assert_eq!(t.domain, "sip.itsp.test");
        assert_eq!(t.domain_port, 5070);
    }

    #[test]
    fn dids_in_every_usual_form() {
        let t = trunk(NumberFormat::E164);
        let plan = de();
        for delivered in [
            "+4930555100",
            "4930555100",
            "004930555100",
            "030555100",
            "030 555-100",
        ] {
            let (d, target) = t.did(delivered, Some(&plan)).expect(delivered);
            assert_eq!(d.number, "+4930555100");
            assert_eq!(
                target,
                DidTarget::User {
                    extension: "201".into()
                }
            );
        }
        assert_eq!(
            t.did("+4930555199", None).map(|d| d.1),
            Some(DidTarget::Fax)
        );
        assert!(t.did("+4930555101", Some(&plan)).is_none());
        assert!(t.did("201", Some(&plan)).is_none());
        assert_eq!(t.caller_number(Some("201")), "+4930555100");
        assert_eq!(t.caller_number(Some("202")), "+4930555100");
        assert_eq!(t.credentials(), Some(("4930555", "pw")));
    }

    #[test]
    fn a_next_hop_that_does_not_answer_gives_way_to_the_next() {
        let trunks = Trunks::new(&[trunk(NumberFormat::E164).config], None);
        let t = trunks.all()[0].clone();
        let (a, b): (SocketAddr, SocketAddr) = (
            "192.0.2.9:5060".parse().unwrap(),
            "192.0.2.10:5070".parse().unwrap(),
        );
        t.resolved.write().unwrap().next_hop = vec![a, b];
        // Another address failing changes nothing.
        trunks.next_hop_failed(b);
        assert_eq!(t.next_hop(), Some(a));
        trunks.next_hop_failed(a);
        assert_eq!(t.next_hop(), Some(b));
        assert_eq!(
            trunks.statuses()[0].next_hop.as_deref(),
            Some("192.0.2.10:5070")
        );
        // Both still count as the trunk.
        assert!(t.is_source(a.ip()) && t.is_source(b.ip()));
        trunks.next_hop_failed(b);
        assert_eq!(t.next_hop(), Some(a));
    }

    #[test]
    fn sources_are_the_configured_and_resolved_addresses() {
        let t = trunk(NumberFormat::E164);
        assert!(!t.is_source("192.0.2.9".parse().unwrap()));
        t.resolved.write().unwrap().next_hop = vec!["192.0.2.9:5070".parse().unwrap()];
        assert!(t.is_source("192.0.2.9".parse().unwrap()));
        assert_eq!(t.next_hop(), Some("192.0.2.9:5070".parse().unwrap()));
    }
}

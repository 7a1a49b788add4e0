//! Switchboard: a self-hosted PBX.
//!
//! This file wires the services together ([`Server::start`]) and has no logic of its own; the
//! module tree is the map described in ARCHITECTURE.md.

pub mod allocator;
pub mod api;
pub mod b2bua;
pub mod config;
pub mod directory;
pub mod idmap;
pub mod media;
pub mod metrics;
pub mod registrar;
pub mod routing;
pub mod sip;
pub mod store;
pub mod trunks;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;

use crate::config::{Config, SipListen};
use crate::directory::Scope;
use crate::store::Store;

/// A running server: the HTTP API and the SIP sockets, on the tokio runtime it was started on.
pub struct Server {
    http_addr: SocketAddr,
    sip_addrs: Vec<SipListen>,
    store: Store,
    initial_admin_token: Option<String>,
    registrar: registrar::service::Handle,
    dialplan: Arc<routing::DialplanFile>,
    tasks: JoinSet<()>,
    record_writer: Option<tokio::task::JoinHandle<()>>,
    relay: media::relay::Relay,
    /// The SIP core's thread.
    sip_core: Option<sip::endpoint::Running>,
}

impl Server {
    /// Opens the store (migrating it), binds every socket and starts serving.
    ///
    /// On a store with no admin token, one is created; [`Server::initial_admin_token`] gives it so
    /// the caller can show it once.
    pub async fn start(config: Config) -> anyhow::Result<Server> {
        // A broken dialplan stops the start, naming the line, before anything is bound.
        let dialplan = Arc::new(config.open_dialplan()?);

        let store = Store::open(&config.database_url)
            .await
            .with_context(|| format!("opening the store at {}", redact(&config.database_url)))?;

        let initial_admin_token = if store.admin_token_count().await? == 0 {
            Some(
                store
                    .create_token(Scope::Admin, None, "initial admin token")
                    .await?,
            )
        } else {
            None
        };

        let mut tasks = JoinSet::new();
        // Short on purpose: a request that waited longer than its sender's retransmission timer
        // is worse than dropped (the retransmission is already on its way); past this, UDP
        // overflows in the kernel and streams push back on their senders.
        let (incoming_tx, incoming_rx) = tokio::sync::mpsc::channel(1024);
        let transports = sip::transport::Transports::bind(
            &config.sip.listen,
            sip::transport::TlsFiles {
                cert: config.sip.tls_cert.as_deref(),
                key: config.sip.tls_key.as_deref(),
                data_dir: &config.data_dir,
            },
            incoming_tx,
            &mut tasks,
        )
        .await?;
        let (commands_tx, commands_rx) = sip::endpoint::channel();
        let registrar =
            registrar::service::start(store.clone(), &config, commands_tx, &mut tasks).await?;
        // Our SIP addresses as peers should see them: a wildcard listener (0.0.0.0) is written
        // into Via and Contact as the address of the interface with the default route.
        let advertised = advertised_sip(&config, transports.bound());
        // What a TLS trunk presents when the ITSP asks for our certificate: the listeners' one
        // (a TLS trunk needs a TLS listener, so the files were read already; this cannot fail
        // where binding did not).
        let identity = config
            .trunks
            .iter()
            .any(|t| t.transport == config::Transport::Tls)
            .then(|| {
                sip::tls::Identity::load(
                    config.sip.tls_cert.as_deref(),
                    config.sip.tls_key.as_deref(),
                    &config.data_dir,
                )
            })
            .transpose()
            .map_err(|e| anyhow::anyhow!("SIP TLS certificate: {e}"))?;
        let trunks = Arc::new(trunks::Trunks::new(&config.trunks, identity.as_ref()));
        trunks.set_transports(&transports);
        if !trunks.is_empty() {
            let dns = trunks::dns::Dns::new(&config.dns.servers);
            tasks.spawn(
                trunks
                    .resolve_all(dns, std::time::Duration::from_secs(300))
                    .await,
            );
        }
        let registrations = trunks::service::Registrations::new(
            trunks.clone(),
            &advertised,
            rand::random(),
            std::time::Instant::now(),
        );
        let relay = start_relay(&config, transports.bound())?;
        let (mut calls, routed) = b2bua::service::Calls::new(
            b2bua::service::CallsConfig {
                realm: config.sip.realm.clone(),
                algorithms: config
                    .sip
                    .digest_algorithms
                    .iter()
                    .filter_map(|a| sip::auth::Algorithm::parse(a))
                    .collect(),
                no_answer: std::time::Duration::from_secs(config.calls.no_answer_secs),
                no_answer_status: config.calls.no_answer_status,
                media_timeout: (config.media.timeout_secs > 0)
                    .then(|| std::time::Duration::from_secs(config.media.timeout_secs)),
                tones: config.media.tones(),
                unreachable_prompt: match &config.media.unreachable_prompt {
                    None => None,
                    Some(path) => Some(
                        media::tone::Prompt::load(path)
                            .context("media.unreachable_prompt: the announcement cannot be used")?,
                    ),
                },
            },
            b2bua::service::Routing {
                store: store.clone(),
                registrar: registrar.clone(),
                dialplan: dialplan.clone(),
                transports: Some(transports.clone()),
                trunks: trunks.clone(),
            },
            &advertised,
            Some(relay.clone()),
            rand::random(),
        );
        let record_writer = calls.take_record_writer();
        let events = calls.events();
        let click_to_call = calls.click_to_call();
        let sip_core = sip::endpoint::start(
            transports.clone(),
            incoming_rx,
            commands_rx,
            sip::endpoint::Services {
                register: Arc::new(registrar.clone()),
                calls: (calls, routed),
                trunks: registrations,
            },
            rand::random(),
        )
        .context("starting the SIP core")?;

        let state = api::AppState {
            store: store.clone(),
            realm: Arc::from(config.sip.realm.as_str()),
            metrics: Arc::new(metrics::Metrics::default()),
            registrar: registrar.clone(),
            dialplan: dialplan.clone(),
            trunks: trunks.clone(),
            events,
            click_to_call,
            relay: Some(relay.clone()),
        };
        let listener = tokio::net::TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("cannot listen for HTTP on {}", config.http.listen))?;
        let http_addr = listener.local_addr()?;
        let app = api::router(state);
        tasks.spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "HTTP server stopped");
            }
        });

        tracing::info!(
            http = %http_addr,
            sip = %sip::transport::describe(transports.bound()),
            database = %redact(&config.database_url),
            "switchboard started"
        );
        Ok(Server {
            http_addr,
            sip_addrs: transports.bound().to_vec(),
            registrar,
            dialplan,
            store,
            initial_admin_token,
            tasks,
            record_writer,
            relay,
            sip_core: Some(sip_core),
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn sip_addrs(&self) -> &[SipListen] {
        &self.sip_addrs
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Live registrations and bans.
    pub fn registrar(&self) -> &registrar::service::Handle {
        &self.registrar
    }

    /// The RTP relay (its counters, for tests and metrics).
    pub fn relay(&self) -> &media::relay::Relay {
        &self.relay
    }

    /// The dialplan: the plan in force, and reloading it (SIGHUP, the admin API).
    pub fn dialplan(&self) -> &routing::DialplanFile {
        &self.dialplan
    }

    /// The admin token created at this start, when the store had none.
    pub fn initial_admin_token(&self) -> Option<&str> {
        self.initial_admin_token.as_deref()
    }

    /// Stops every service and closes the store. Acknowledged writes are already committed, so
    /// nothing is lost by stopping at any moment.
    /// Stops every task, then lets the call-record writer finish what it was given (the calls
    /// ended before the stop are written, not lost), then closes the store.
    pub async fn shutdown(mut self) {
        if let Some(core) = self.sip_core.take() {
            core.stop().await;
        }
        self.tasks.shutdown().await;
        if let Some(w) = self.record_writer.take() {
            if tokio::time::timeout(std::time::Duration::from_secs(10), w)
                .await
                .is_err()
            {
                tracing::error!("call records still unwritten after 10 s; stopping anyway");
            }
        }
        self.store.close().await;
    }
}

/// A database URL without its password, for logs.
/// The RTP relay, advertising `media.address` or, by default, an address phones can reach.
fn start_relay(config: &Config, bound: &[SipListen]) -> anyhow::Result<media::relay::Relay> {
    let m = &config.media;
    let advertise = m
        .address
        .or_else(|| {
            bound
                .iter()
                .map(|l| l.addr.ip())
                .find(|ip| !ip.is_unspecified())
        })
        .or_else(default_route_ip)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let bind = if advertise.is_ipv4() {
        std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    } else {
        std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    };
    tracing::info!(%advertise, ports = %format!("{}-{}", m.rtp_port_min, m.rtp_port_max), "media relay");
    Ok(media::relay::Relay::start(media::relay::RelayConfig {
        bind,
        advertise,
        port_min: m.rtp_port_min,
        port_max: m.rtp_port_max,
        threads: m.threads,
        reuse_after: media::relay::RelayConfig::REUSE_AFTER,
        close_after: media::relay::RelayConfig::CLOSE_AFTER,
        kernel_forwarding: m.kernel_forwarding,
    })?)
}

/// The bound SIP addresses with wildcard IPs replaced by the one peers can reach: the media
/// address when configured, else the interface with the default route.
fn advertised_sip(config: &Config, bound: &[SipListen]) -> Vec<SipListen> {
    let fallback = config
        .media
        .address
        .or_else(default_route_ip)
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    bound
        .iter()
        .map(|l| {
            let mut l = *l;
            if l.addr.ip().is_unspecified() {
                l.addr.set_ip(fallback);
            }
            l
        })
        .collect()
}

/// The local address of the interface that routes to the world (no packet is sent: connecting
/// a UDP socket only picks the route).
fn default_route_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified()).then_some(ip)
}

pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            super::redact("sqlite://./data/x.db"),
            "sqlite://./data/x.db"
        );
    }
}

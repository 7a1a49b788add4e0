//! The driver of trunk registrations: runs each trunk's [`Registration`] on the SIP endpoint's
//! task, sends its REGISTERs on client transactions to the trunk's next hop, and publishes the
//! status for the API ([`super::Trunks::statuses`]).
//!
//! Owns: the map from client transactions to trunks. Must not touch: the REGISTER's content
//! and timing (`registration`), sockets (the endpoint's transports).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::registration::{Account, Registration, Status};
use super::{Trunk, Trunks};
use crate::sip::header::{NameAddr, Transport, Via};
use crate::sip::message::Message;
use crate::sip::transaction::{self, ClientTxId, TransactionLayer, TxId};
use crate::sip::uri::{Host, Uri};

struct Entry {
    trunk: Arc<Trunk>,
    reg: Registration,
    via: Via,
    contact: NameAddr,
}

/// Every trunk that registers. Lives on the endpoint's task.
pub struct Registrations {
    trunks: Arc<Trunks>,
    entries: Vec<Entry>,
    /// Our REGISTERs under way: whose, and where they went.
    inflight: HashMap<ClientTxId, (usize, SocketAddr)>,
}

impl Registrations {
    /// Registrations for the trunks that have `register = true`, sent from our listener of the
    /// trunk's transport in `local` (addresses as the ITSP should see them: never unspecified).
    /// A trunk whose transport we do not listen on does not register.
    pub fn new(
        trunks: Arc<Trunks>,
        local: &[crate::config::SipListen],
        seed: u64,
        now: Instant,
    ) -> Registrations {
        let mut entries = Vec::new();
        let mut random = seed;
        for t in trunks.all() {
            if !t.config.register {
                continue;
            }
            let local = local
                .iter()
                .find(|l| l.transport == t.config.transport)
                .map(|l| l.addr);
            let (Some((user, password)), Some(local)) = (t.credentials(), local) else {
                tracing::warn!(
                    trunk = t.name(),
                    "trunk: cannot register (no credentials or no UDP listener)"
                );
                continue;
            };
            let account_user = t.config.username.as_deref().unwrap_or(user);
            let port = t.uri_port();
            let (Ok(registrar), Ok(aor)) = (
                Uri::parse(&format!("sip:{}{port}", t.domain)),
                Uri::parse(&format!("sip:{account_user}@{}", t.domain)),
            ) else {
                tracing::warn!(trunk = t.name(), "trunk: account does not make a SIP URI");
                continue;
            };
            let param = match t.config.transport {
                crate::config::Transport::Udp => "",
                crate::config::Transport::Tcp => ";transport=tcp",
                crate::config::Transport::Tls => ";transport=tls",
            };
            let Ok(contact) = NameAddr::parse(&format!("<sip:{account_user}@{local}{param}>"))
            else {
                continue;
            };
            let Ok(host) = Host::parse(&local.ip().to_string()) else {
                continue;
            };
            let via = Via::new(
                Transport::parse(t.config.transport.as_str()),
                host,
                Some(local.port()),
                "z9hG4bK",
            );
            let account = Account {
                registrar,
                aor,
                auth_user: user.to_owned(),
                password: password.to_owned(),
                expiry: t.config.register_expiry_secs,
            };
            let seed = crate::b2bua::call::splitmix(&mut random);
            entries.push(Entry {
                trunk: t.clone(),
                reg: Registration::new(account, seed, now),
                via,
                contact,
            });
        }
        Registrations {
            trunks,
            entries,
            inflight: HashMap::new(),
        }
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter_map(|e| e.reg.poll_timeout())
            .min()
    }

    /// Sends the REGISTERs that are due.
    pub fn handle_timeout(&mut self, layer: &mut TransactionLayer, now: Instant) {
        for i in 0..self.entries.len() {
            let e = &mut self.entries[i];
            if !e.reg.poll_timeout().is_some_and(|t| t <= now) {
                continue;
            }
            let Some(to) = e.trunk.next_hop() else {
                e.reg.postpone("no address", now);
                self.publish(i, now);
                continue;
            };
            if let Some(req) = e.reg.poll_register(&e.via, &e.contact, now) {
                self.send(i, req, to, layer, now);
            }
        }
    }

    /// A response on one of our transactions; false when the transaction is not ours.
    pub fn on_response(
        &mut self,
        layer: &mut TransactionLayer,
        tx: ClientTxId,
        msg: &Message,
        now: Instant,
    ) -> bool {
        let Some(&(i, _)) = self.inflight.get(&tx) else {
            return false;
        };
        if msg.status().is_some_and(|s| s < 200) {
            return true;
        }
        self.inflight.remove(&tx);
        let e = &mut self.entries[i];
        let next = e.reg.on_response(msg, &e.via, &e.contact, now);
        if let (Some(req), Some(to)) = (next, e.trunk.next_hop()) {
            self.send(i, req, to, layer, now);
        }
        self.publish(i, now);
        true
    }

    /// One of our transactions timed out or could not be sent; false when not ours.
    pub fn on_client_failure(&mut self, tx: TxId, now: Instant) -> bool {
        let TxId::Client(tx) = tx else {
            return false;
        };
        let Some((i, to)) = self.inflight.remove(&tx) else {
            return false;
        };
        self.trunks.next_hop_failed(to);
        self.entries[i].reg.on_failure("timeout", now);
        self.publish(i, now);
        true
    }

    /// A transaction ended; false when not ours.
    pub fn on_terminated(&mut self, tx: TxId) -> bool {
        match tx {
            TxId::Client(c) => self.inflight.remove(&c).is_some(),
            TxId::Server(_) => false,
        }
    }

    fn send(
        &mut self,
        i: usize,
        req: Message,
        to: SocketAddr,
        layer: &mut TransactionLayer,
        now: Instant,
    ) {
        let peer = transaction::Peer {
            addr: to,
            reliable: self.entries[i].trunk.config.transport != crate::config::Transport::Udp,
            flow: self.entries[i].trunk.flow(),
        };
        match layer.send_request(req, peer, now) {
            Ok(tx) => {
                self.inflight.insert(tx, (i, to));
            }
            Err(err) => {
                tracing::warn!(trunk = self.entries[i].trunk.name(), error = %err, "trunk: REGISTER not sent");
                self.entries[i].reg.on_failure("send", now);
            }
        }
        self.publish(i, now);
    }

    fn publish(&self, i: usize, now: Instant) {
        let e = &self.entries[i];
        let now_ms = crate::store::now_ms();
        let status = e.reg.status().clone();
        self.trunks.update(e.trunk.name(), |s| match status {
            Status::Registering => {
                s.registration = "registering".into();
            }
            Status::Registered { until } => {
                if s.registration != "registered" {
                    tracing::info!(trunk = %s.name, "trunk registered");
                }
                s.registration = "registered".into();
                s.expires_at =
                    Some(now_ms + until.saturating_duration_since(now).as_millis() as i64);
                s.last_error = None;
            }
            Status::Failed { reason, .. } => {
                if s.last_error.as_deref() != Some(reason.as_str()) {
                    tracing::warn!(trunk = %s.name, %reason, "trunk registration failed");
                }
                s.registration = "failed".into();
                s.expires_at = None;
                s.last_error = Some(reason);
            }
        });
    }
}

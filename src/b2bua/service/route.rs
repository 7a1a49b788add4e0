//! Where a call goes: the routing facts (the directory, cached briefly; the registrar's
//! bindings; the dialplan; the trunks) and the decision for a new INVITE — ring a user's
//! location (phones and external numbers), go out through a trunk, answer here (echo), or
//! refuse. Runs off the endpoint's task when the store must be read, on it when the facts are
//! cached.
//!
//! Owns: the directory cache and the decision. Must not touch: transactions, call state.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::call::{BranchCredentials, Target};
use crate::config::Transport;
use crate::registrar;
use crate::routing::{self, CallerClass, DialplanFile};
use crate::sip::header::NameAddr;
use crate::sip::message::Message;
use crate::sip::transport::Peer;
use crate::sip::uri::Uri;
use crate::store::{Page, PhoneCredentials, Store};
use crate::trunks::{DidTarget, Trunk, Trunks};

/// What resolving a route needs; shared with the tasks that do it.
pub(in crate::b2bua) struct Lookup {
    pub(in crate::b2bua) store: Store,
    pub(super) registrar: registrar::service::Handle,
    pub(in crate::b2bua) dialplan: Arc<DialplanFile>,
    pub(super) trunks: Arc<Trunks>,
    pub(in crate::b2bua) realm: String,
    pub(super) cache: DirectoryCache,
}

/// How long routing trusts what it read from the directory. A call needs the caller's user and
/// the callee's user, current location and phones: four database reads that cost more than
/// all of the call's SIP work together, for facts that change rarely. A change made through
/// the API or the CLI reaches new calls within this time.
const DIRECTORY_TTL: Duration = Duration::from_secs(2);

/// What a callee's extension resolves to, as routing needs it.
#[derive(Debug)]
struct Callee {
    user: crate::directory::User,
    location: Option<crate::directory::Location>,
    phones: Vec<crate::directory::Phone>,
}

#[derive(Default)]
pub(super) struct DirectoryCache {
    users: dashmap::DashMap<i64, (Instant, Option<Arc<crate::directory::User>>)>,
    callees: dashmap::DashMap<String, (Instant, Option<Arc<Callee>>)>,
}

impl Lookup {
    pub(in crate::b2bua) async fn user(
        &self,
        id: i64,
    ) -> crate::store::Result<Option<Arc<crate::directory::User>>> {
        let now = Instant::now();
        if let Some(hit) = self.cache.users.get(&id).filter(|e| e.0 > now) {
            return Ok(hit.1.clone());
        }
        let user = self.store.get_user(id).await?.map(Arc::new);
        self.cache
            .users
            .insert(id, (now + DIRECTORY_TTL, user.clone()));
        Ok(user)
    }

    async fn callee(&self, extension: &str) -> crate::store::Result<Option<Arc<Callee>>> {
        let now = Instant::now();
        if let Some(hit) = self.cache.callees.get(extension).filter(|e| e.0 > now) {
            return Ok(hit.1.clone());
        }
        let callee = match self.store.user_by_extension(extension).await? {
            None => None,
            Some(user) => {
                let location = self.store.current_location(user.id).await?;
                let phones = self
                    .store
                    .list_phones(
                        user.id,
                        Page {
                            after: 0,
                            limit: 500,
                        },
                    )
                    .await?
                    .items;
                Some(Arc::new(Callee {
                    user,
                    location,
                    phones,
                }))
            }
        };
        if self.cache.callees.len() > 100_000 {
            self.cache.callees.retain(|_, e| e.0 > now);
            self.cache.users.retain(|_, e| e.0 > now);
        }
        self.cache
            .callees
            .insert(extension.to_owned(), (now + DIRECTORY_TTL, callee.clone()));
        Ok(callee)
    }
}

#[derive(Debug)]
pub(in crate::b2bua) enum Decision {
    Ring {
        caller_id: Box<NameAddr>,
        targets: Vec<(Target, Hop)>,
        parties: Box<Parties>,
    },
    Reject(u16),
    /// The echo test: the PBX answers and sends the caller's audio back.
    Echo {
        parties: Box<Parties>,
    },
}

/// Where a branch's requests go.
#[derive(Debug, Clone)]
pub(in crate::b2bua) struct Hop {
    /// Where the INVITE goes, and in-dialog requests unless `follow_dialog`.
    pub(in crate::b2bua) peer: Peer,
    /// In-dialog requests go where the dialog says (RFC 3261 §12.2.1.1): a trunk reached
    /// without an outbound proxy. A phone is always reached through the flow it registered
    /// from (it may be behind NAT, its Contact a private address).
    pub(in crate::b2bua) follow_dialog: bool,
    /// The branch goes to a trunk (whose next address takes over if this one does not answer).
    pub(in crate::b2bua) trunk: bool,
    /// A phone reached over a stream (TCP, TLS), to find again if its connection breaks.
    pub(in crate::b2bua) stream_phone: Option<StreamPhone>,
}

/// A phone in a call over a stream (TCP, TLS): which of its registrations is the call's, so
/// that a phone whose connection broke and that registered again over a new one can be reached
/// through that (see `service::current_flow`).
#[derive(Debug, Clone)]
pub(in crate::b2bua) struct StreamPhone {
    /// Its SIP username: only its own bindings are looked at.
    pub(in crate::b2bua) username: Arc<str>,
    /// Its `+sip.instance` (RFC 5626), when it gave one: its binding keeps it even when its
    /// Contact changes. Without one the binding is the one with the dialog's Contact.
    pub(in crate::b2bua) instance: Option<Arc<str>>,
    /// The flow that binding had when the call began, when there was one: the binding on
    /// another flow later means the phone registered again over a new connection.
    pub(in crate::b2bua) flow: Option<u64>,
}

/// The transport a binding was registered over, as the SIP stack names it.
pub(super) fn transport_of(t: registrar::Transport) -> Transport {
    match t {
        registrar::Transport::Udp => Transport::Udp,
        registrar::Transport::Tcp => Transport::Tcp,
        registrar::Transport::Tls => Transport::Tls,
    }
}

/// Who is in the call, for its record.
#[derive(Debug, Clone)]
pub(in crate::b2bua) struct Parties {
    pub(in crate::b2bua) dialled: String,
    pub(in crate::b2bua) caller: Party,
    pub(in crate::b2bua) callee: Party,
    /// The trunk the call came in or goes out through.
    pub(in crate::b2bua) trunk: Option<String>,
}

/// One side of a call: a user, or a number outside (through a trunk).
#[derive(Debug, Clone)]
pub(in crate::b2bua) struct Party {
    pub(in crate::b2bua) user_id: Option<i64>,
    /// Shared: every call event and the call record carry them.
    pub(in crate::b2bua) number: Arc<str>,
    pub(in crate::b2bua) name: Arc<str>,
}

/// Who is calling: one of our phones (authenticated) or a trunk (trusted by its address).
#[derive(Debug)]
pub(super) enum Caller {
    /// A phone that authenticated as `username`.
    Phone {
        credentials: PhoneCredentials,
        username: Arc<str>,
    },
    Trunk(Arc<Trunk>),
}

/// Resolves where a call goes: the dialplan (or a trunk's DIDs), then the callee's location,
/// its phones' bindings and its external numbers.
pub(super) async fn resolve(lookup: &Lookup, caller: &Caller, invite: &Message) -> Decision {
    let result = match caller {
        Caller::Phone { credentials, .. } => from_phone(lookup, credentials, invite).await,
        Caller::Trunk(trunk) => from_trunk(lookup, trunk, invite).await,
    };
    match result {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "b2bua: resolving a route failed");
            Decision::Reject(500)
        }
    }
}

/// A call from one of our phones: the dialplan decides.
async fn from_phone(
    lookup: &Lookup,
    phone: &PhoneCredentials,
    invite: &Message,
) -> crate::store::Result<Decision> {
    let Some(dialled) = dialled_number(invite) else {
        return Ok(Decision::Reject(404));
    };
    let Some(user) = lookup.user(phone.user_id).await? else {
        return Ok(Decision::Reject(403));
    };
    from_user(lookup, &user, dialled).await
}

/// Where a redirect by one of `user`'s phones leads (its call forwarding): `number` routed
/// as that user would dial it, so a forward reaches only what its user may call.
pub(super) async fn forwarded(lookup: &Lookup, user: i64, number: String) -> Decision {
    let result = async {
        match lookup.user(user).await? {
            Some(user) => from_user(lookup, &user, number).await,
            None => Ok(Decision::Reject(404)),
        }
    };
    match result.await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %e, "b2bua: resolving a redirect failed");
            Decision::Reject(500)
        }
    }
}

/// Where a call by `user` to `dialled` goes (the dialplan for internal callers).
pub(in crate::b2bua) async fn from_user(
    lookup: &Lookup,
    user: &crate::directory::User,
    dialled: String,
) -> crate::store::Result<Decision> {
    let plan = lookup.dialplan.current();
    let Some(decision) = plan.route(&dialled, CallerClass::Internal) else {
        return Ok(Decision::Reject(404));
    };
    let Some(caller_id) = caller_id(&user.extension, &user.display_name, &lookup.realm) else {
        return Ok(Decision::Reject(403));
    };
    let caller = Party {
        user_id: Some(user.id),
        number: user.extension.as_str().into(),
        name: user.display_name.as_str().into(),
    };
    match decision.target {
        routing::Target::User { extension } => {
            ring_user(lookup, &extension, dialled, caller, caller_id, None).await
        }
        routing::Target::Trunk { trunk, number } => {
            let Some(t) = lookup.trunks.get(&trunk) else {
                tracing::warn!(route = %decision.route, %trunk, "b2bua: route names a trunk that is not configured");
                return Ok(Decision::Reject(503));
            };
            let from = t.caller_number(Some(&user.extension));
            let Some(target) = trunk_target(lookup, t, &number, &from, &user.display_name) else {
                return Ok(Decision::Reject(503));
            };
            Ok(Decision::Ring {
                caller_id: Box::new(caller_id),
                targets: vec![target],
                parties: Box::new(Parties {
                    dialled,
                    caller,
                    callee: Party {
                        user_id: None,
                        number: number.into(),
                        name: "".into(),
                    },
                    trunk: Some(trunk),
                }),
            })
        }
        routing::Target::Reject { status } => Ok(Decision::Reject(status)),
        routing::Target::Echo => Ok(Decision::Echo {
            parties: Box::new(Parties {
                callee: Party {
                    user_id: None,
                    number: dialled.as_str().into(),
                    name: "Echo test".into(),
                },
                dialled,
                caller,
                trunk: None,
            }),
        }),
        other => {
            tracing::info!(route = %decision.route, target = ?other, "b2bua: route target not available yet");
            Ok(Decision::Reject(503))
        }
    }
}

/// A call from a trunk: its DIDs first, then the dialplan's routes for trunk callers (which
/// may only reach users: a trunk call is never sent out again).
async fn from_trunk(
    lookup: &Lookup,
    trunk: &Arc<Trunk>,
    invite: &Message,
) -> crate::store::Result<Decision> {
    let Some(dialled) = dialled_number(invite) else {
        return Ok(Decision::Reject(404));
    };
    let plan = lookup.dialplan.current();
    let extension = match trunk.did(&dialled, plan.numbering()) {
        Some((_, DidTarget::User { extension })) => extension,
        Some((did, DidTarget::Fax)) => {
            tracing::info!(trunk = trunk.name(), did = %did.number, "b2bua: fax DID called; fax reception is not built yet");
            return Ok(Decision::Reject(503));
        }
        None => match plan.route(&dialled, CallerClass::Trunk).map(|d| d.target) {
            Some(routing::Target::User { extension }) => extension,
            Some(routing::Target::Reject { status }) => return Ok(Decision::Reject(status)),
            _ => {
                tracing::info!(trunk = trunk.name(), %dialled, "b2bua: call from a trunk to a number that is not ours");
                return Ok(Decision::Reject(404));
            }
        },
    };
    let from = invite.from();
    let number = from
        .and_then(|f| f.uri.user().map(|u| u.into_owned()))
        .unwrap_or_default();
    let name = from
        .and_then(|f| f.display_name.clone())
        .unwrap_or_default();
    let shown = if number.is_empty() {
        "anonymous"
    } else {
        number.as_str()
    };
    let Some(caller_id) = caller_id(shown, &name, &lookup.realm) else {
        return Ok(Decision::Reject(400));
    };
    let caller = Party {
        user_id: None,
        number: number.into(),
        name: name.into(),
    };
    ring_user(
        lookup,
        &extension,
        dialled,
        caller,
        caller_id,
        Some(trunk.name().to_owned()),
    )
    .await
}

/// Ringing a user: every registered contact of each phone of their current location, and each
/// external number of it through the trunk the dialplan sends it to.
pub(in crate::b2bua) async fn ring_user(
    lookup: &Lookup,
    extension: &str,
    dialled: String,
    caller: Party,
    caller_id: NameAddr,
    trunk: Option<String>,
) -> crate::store::Result<Decision> {
    let Some(callee) = lookup.callee(extension).await? else {
        return Ok(Decision::Reject(404));
    };
    let (user, location) = (&callee.user, &callee.location);
    let mut targets = Vec::new();
    for p in &callee.phones {
        if location.as_ref().is_some_and(|l| !l.phones.contains(&p.id)) {
            continue;
        }
        // A phone of the location that is not registered is simply skipped.
        for b in lookup.registrar.bindings_for(&p.sip_username) {
            let Ok(uri) = Uri::parse(&b.contact) else {
                continue;
            };
            targets.push((
                Target {
                    // The phone's own call forwarding (a 3xx) is followed as its user's.
                    forwarded_as: Some(user.id),
                    ..Target::phone(uri, format!("phone:{}", p.id))
                },
                Hop {
                    peer: {
                        let transport = transport_of(b.source.transport);
                        // Restored after a restart (flow 0): its connection is gone, and
                        // a TLS one must stay TLS.
                        let flow = match b.source.flow {
                            0 => crate::sip::transport::gone_flow(transport),
                            f => f,
                        };
                        Peer {
                            addr: b.source.addr,
                            transport,
                            flow,
                        }
                    },
                    follow_dialog: false,
                    trunk: false,
                    stream_phone: (b.source.transport != registrar::Transport::Udp).then(|| {
                        StreamPhone {
                            username: Arc::from(p.sip_username.as_str()),
                            instance: b.instance.as_deref().map(Arc::from),
                            flow: Some(b.source.flow),
                        }
                    }),
                },
            ));
        }
    }
    if let Some(l) = location {
        let plan = lookup.dialplan.current();
        for number in &l.numbers {
            // The number is dialled as the callee would dial it from their desk.
            match plan.route(number, CallerClass::Internal).map(|d| d.target) {
                Some(routing::Target::Trunk { trunk, number: out }) => {
                    let Some(t) = lookup.trunks.get(&trunk) else {
                        tracing::info!(%trunk, "b2bua: external number skipped: its trunk is not configured");
                        continue;
                    };
                    // The ITSP shows its own account's number (the callee's DID on it) as
                    // caller; the name is the real caller's.
                    let from = t.caller_number(Some(&user.extension));
                    let name = caller_id.display_name.clone().unwrap_or_default();
                    if let Some(target) = trunk_target(lookup, t, &out, &from, &name) {
                        targets.push(target);
                    }
                }
                other => {
                    tracing::debug!(target = ?other, "b2bua: external number of a location does not route to a trunk; skipped");
                }
            }
        }
    }
    Ok(Decision::Ring {
        caller_id: Box::new(caller_id),
        targets,
        parties: Box::new(Parties {
            dialled,
            caller,
            callee: Party {
                user_id: Some(user.id),
                number: user.extension.as_str().into(),
                name: user.display_name.as_str().into(),
            },
            trunk,
        }),
    })
}

/// A branch to `number` (what the dialplan made of it) through `trunk`, presenting
/// `from_number` and `name` as caller. `None` while the trunk's host has no address, or when
/// the number cannot be written the way the trunk wants.
fn trunk_target(
    lookup: &Lookup,
    trunk: &Trunk,
    number: &str,
    from_number: &str,
    name: &str,
) -> Option<(Target, Hop)> {
    let Some(hop) = trunk.next_hop() else {
        tracing::warn!(
            trunk = trunk.name(),
            "b2bua: trunk has no address (DNS); branch skipped"
        );
        return None;
    };
    let plan = lookup.dialplan.current();
    let Some(formatted) = trunk.format_number(number, plan.numbering()) else {
        tracing::warn!(trunk = trunk.name(), %number, "b2bua: number cannot be written in the trunk's format (no [numbering] in the dialplan?)");
        return None;
    };
    let port = trunk.uri_port();
    let uri = Uri::parse(&format!("sip:{formatted}@{}{port}", trunk.domain)).ok()?;
    let Ok(mut from) = NameAddr::parse(&format!("<sip:{from_number}@{}>", trunk.domain)) else {
        tracing::warn!(trunk = trunk.name(), caller = %from_number, "b2bua: no caller number for the trunk (set `caller_id`, a DID or `username`); branch skipped");
        return None;
    };
    if !name.is_empty() {
        from.display_name = Some(name.to_owned());
    }
    let credentials = trunk.credentials().map(|(u, p)| {
        Arc::new(BranchCredentials {
            username: u.to_owned(),
            password: p.to_owned(),
        })
    });
    Some((
        Target {
            uri,
            label: number.to_owned(),
            from: Some(from),
            credentials,
            contact: None,
            offers_100rel: true,
            // An ITSP's redirect is not followed: where it points is the ITSP's choice, on
            // our account.
            forwarded_as: None,
        },
        Hop {
            peer: Peer {
                addr: hop,
                transport: trunk.config.transport,
                flow: trunk.flow(),
            },
            follow_dialog: trunk.dialog_routed(),
            trunk: true,
            stream_phone: None,
        },
    ))
}

/// The number dialled: the Request-URI's.
pub(super) fn dialled_number(invite: &Message) -> Option<String> {
    uri_number(invite.uri()?)
}

/// The number a URI names: a SIP URI's user part or a tel: URI's number (a Request-URI, or a
/// redirect's Contact).
pub(super) fn uri_number(uri: &Uri) -> Option<String> {
    match uri {
        Uri::Sip(s) => s.user().map(|u| u.into_owned()).filter(|u| !u.is_empty()),
        Uri::Tel(t) => Some(t.to_string().trim_start_matches("tel:").to_owned()),
        Uri::Other { .. } => None,
    }
}

pub(in crate::b2bua) fn caller_id(extension: &str, name: &str, realm: &str) -> Option<NameAddr> {
    let mut na = NameAddr::parse(&format!("<sip:{extension}@{realm}>")).ok()?;
    if !name.is_empty() {
        na.display_name = Some(name.to_owned());
    }
    Some(na)
}

//! The registrar's driver: feeds REGISTER requests from the SIP endpoint to the sans-IO
//! [`Registrar`], fetches credentials, persists binding changes before the 200 OK leaves, keeps
//! bindings expiring on time, and applies the brute-force [`Guard`].
//!
//! The decision itself runs on the endpoint's task ([`RequestHandler::submit`]): credentials are
//! preloaded, the binding table is in memory, so a 401, a 423 or a query is answered in place,
//! and only a change goes on, to the writer. A challenge to an unauthenticated REGISTER is
//! answered statelessly ([`Answer::stateless`], RFC 3261 §8.2.7): no transaction is kept for
//! it. A name not in the credentials cache is answered as unknown, exactly as a wrong password
//! (so nothing tells a name that exists), while a bounded background lookup fills the cache for
//! the phone's next try ([`Store::prefetch_phone_credentials`]).
//!
//! Writes are batched: every change that arrives within [`WRITE_LINGER`] of the first goes into
//! one transaction, and the responses for all of them are released after the commit. Under load that turns thousands
//! of REGISTERs per second into a few hundred commits, without ever answering before the binding
//! is durable. Bans are persisted too and re-read every few seconds, so a ban lifted from the CLI
//! (another process) or by another node takes effect here.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::guard::{Ban, Guard, GuardConfig};
use super::{Binding, BindingChange, Registrar, RegistrarConfig, Source, Transport};
use crate::config::{self, Config};
use crate::sip::auth::{Algorithm, DigestServer};
use crate::sip::endpoint::{Answer, Command, Request, RequestHandler};
use crate::sip::header::Credentials;
use crate::sip::message::Message;
use crate::sip::transaction::ServerTxId;
use crate::store::{now_ms, PhoneCredentials, Store};

/// How often expired bindings are swept and bans re-read from the store.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
const BAN_SYNC_EVERY: Duration = Duration::from_secs(5);
/// The most changes one commit carries.
const MAX_BATCH: usize = 2048;
/// How long the writer gathers changes after the first before committing. Each commit costs a
/// WAL sync and a round of hand-offs to the database's thread; without a pause the writer keeps
/// up at 10,000 REGISTERs/s with commits of a handful of rows each (about 1,300 a second). A
/// few milliseconds on the 200 OK turns that into a few hundred commits of dozens of rows.
const WRITE_LINGER: Duration = Duration::from_millis(5);
/// Decisions waiting for a commit. Kept short on purpose: past it the store is not keeping up,
/// and a quick 503 serves phones better than an answer after their timeout.
const WRITE_QUEUE: usize = 8192;

struct Shared {
    registrar: Mutex<Registrar>,
    guard: Mutex<Guard>,
    store: Store,
    /// Where decisions that change bindings go to be committed; `None` for an idle handle.
    writes: Option<mpsc::Sender<Pending>>,
    /// The main runtime: [`RequestHandler::submit`] runs on the SIP core's thread, and what it
    /// starts that waits on the store runs here instead.
    rt: tokio::runtime::Handle,
}

/// A shared view of the registrar for the API: bindings, bans.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

/// A write waiting for the batch writer, with the response it releases.
struct Pending {
    changes: Vec<BindingChange>,
    reply: Option<(ServerTxId, Message)>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the table half-updated in a way that matters
    // more than stopping registrations altogether would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> u64 {
    now_ms().max(0) as u64
}

impl Handle {
    /// Current bindings of a phone (by SIP username), best first.
    pub fn bindings_for(&self, aor: &str) -> Vec<Binding> {
        let now = now();
        lock(&self.shared.registrar)
            .lookup(aor, now)
            .into_iter()
            .cloned()
            .collect()
    }

    /// Number of live bindings.
    pub fn binding_count(&self) -> usize {
        lock(&self.shared.registrar).len()
    }

    /// Whether requests from `ip` are refused (no answer at all), for the B2BUA too.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        lock(&self.shared.guard).is_banned(ip, now())
    }

    /// A wrong password (or unknown user) on a request other than REGISTER (an INVITE): it
    /// counts toward the same ban as a failed registration.
    pub fn auth_failed(&self, ip: IpAddr) {
        record_auth_failure(&self.shared, ip, now());
    }

    /// Bans in force.
    pub fn bans(&self) -> Vec<Ban> {
        lock(&self.shared.guard).bans(now())
    }

    /// Lifts a ban here and in the store; false when there was none.
    pub async fn unban(&self, ip: IpAddr) -> crate::store::Result<bool> {
        let here = lock(&self.shared.guard).unban(ip);
        let stored = self.shared.store.remove_ban(&ip.to_string()).await?;
        Ok(here || stored)
    }
}

/// Builds the registrar from the store and starts its tasks. Requests come in through the
/// returned handle ([`RequestHandler::submit`], called by the endpoint); answers that have to
/// wait for a commit go back on `endpoint`.
pub async fn start(
    store: Store,
    config: &Config,
    endpoint: mpsc::Sender<Command>,
    tasks: &mut JoinSet<()>,
) -> crate::store::Result<Handle> {
    let (writes_tx, writes_rx) = mpsc::channel::<Pending>(WRITE_QUEUE);
    let shared = build(store.clone(), config, Some(writes_tx)).await?;
    let phones = store.preload_credentials().await?;
    tracing::debug!(phones, "credentials cached");
    tasks.spawn(writer(store, writes_rx, endpoint));
    tasks.spawn(sweeper(shared.clone()));
    Ok(Handle { shared })
}

impl Handle {
    /// The registrar's state loaded from the store, with no SIP traffic and no background
    /// tasks: for tools and for API tests that exercise the HTTP side alone.
    pub async fn idle(store: Store, config: &Config) -> crate::store::Result<Handle> {
        Ok(Handle {
            shared: build(store, config, None).await?,
        })
    }
}

async fn build(
    store: Store,
    config: &Config,
    writes: Option<mpsc::Sender<Pending>>,
) -> crate::store::Result<Arc<Shared>> {
    let mut reg_config = RegistrarConfig::new(&config.sip.realm);
    reg_config.min_expires = config.registrar.min_expires;
    reg_config.max_expires = config.registrar.max_expires;
    reg_config.default_expires = config.registrar.default_expires;
    reg_config.nat_max_expires = config.registrar.nat_max_expires;
    // Two thirds of the time a quiet connection is kept: phones re-register before expiry.
    let stream = crate::sip::transport::IDLE_TIMEOUT.as_secs() * 2 / 3;
    reg_config.stream_max_expires = u32::try_from(stream)
        .unwrap_or(u32::MAX)
        .max(reg_config.min_expires);
    // A fresh key per process, on purpose: the nonce-count replay records live in memory, so
    // nonces from before a restart must not verify afterwards (phones get one `stale=true`
    // challenge and retry silently).
    let secret: [u8; 32] = rand::random();
    let algorithms: Vec<Algorithm> = config
        .sip
        .digest_algorithms
        .iter()
        .filter_map(|a| Algorithm::parse(a))
        .collect();
    let digest = DigestServer::new(&secret).with_algorithms(&algorithms);
    let mut registrar = Registrar::new(reg_config, &secret).with_digest(digest);
    let now = now();
    let mut count = 0;
    store
        .load_bindings_paged(now, |page| {
            count += page.len();
            registrar.restore(page.drain(..));
        })
        .await?;
    store.delete_expired_bindings(now).await?;

    let mut guard = Guard::new(guard_config(&config.security));
    guard.restore(stored_bans(&store, now).await?);
    tracing::info!(bindings = count, "registrar ready");
    Ok(Arc::new(Shared {
        registrar: Mutex::new(registrar),
        guard: Mutex::new(guard),
        store,
        writes,
        rt: tokio::runtime::Handle::current(),
    }))
}

fn guard_config(c: &config::SecurityConfig) -> GuardConfig {
    GuardConfig {
        max_failures: c.ban_failures,
        window_ms: c.ban_window_secs.saturating_mul(1000),
        ban_ms: c.ban_secs.saturating_mul(1000),
        ..GuardConfig::default()
    }
}

async fn stored_bans(store: &Store, now: u64) -> crate::store::Result<Vec<Ban>> {
    Ok(store
        .active_bans(now as i64)
        .await?
        .into_iter()
        .filter_map(|b| {
            Some(Ban {
                ip: b.ip.parse().ok()?,
                until_ms: b.until_ms.max(0) as u64,
                failures: u32::try_from(b.failures).unwrap_or(u32::MAX),
            })
        })
        .collect())
}

fn source_of(req: &Request) -> Source {
    Source {
        addr: req.source.addr,
        transport: match req.source.transport {
            config::Transport::Udp => Transport::Udp,
            config::Transport::Tcp => Transport::Tcp,
            config::Transport::Tls => Transport::Tls,
        },
        flow: req.source.flow,
    }
}

impl RequestHandler for Handle {
    fn refuses(&self, source: &crate::sip::transport::Peer) -> bool {
        self.is_banned(source.addr.ip())
    }

    /// Decides a REGISTER on the endpoint's task, from memory: credentials are preloaded, and a
    /// name not in the cache is answered as unknown while it is looked up in the background.
    fn submit(&self, req: Request) -> Option<Answer> {
        let ip = req.source.addr.ip();
        if lock(&self.shared.guard).is_banned(ip, now()) {
            // A banned source gets no answer at all: answering costs us and tells it the ban's
            // length.
            tracing::debug!(%ip, "REGISTER from a banned address dropped");
            return None;
        }
        let authorization = Registrar::digest_credentials(&req.msg);
        let creds = Registrar::username_of(&authorization).and_then(|user| {
            let cached = self.shared.store.cached_phone_credentials(&user);
            if cached.is_none() {
                // Answered now as a wrong password would be; the lookup only fills the cache
                // for the phone's next try (a phone just added by the CLI, say).
                self.shared
                    .store
                    .prefetch_phone_credentials(&user, &self.shared.rt);
            }
            cached
        });
        decide(&self.shared, req, Some(authorization), creds)
    }
}

/// Runs the registrar on one request; returns the response when it can go at once, or hands
/// the changes (with the response) to the writer and returns `None`.
/// `authorization` is the request's parsed credentials when the caller has them (`None`: parse
/// them here).
fn decide(
    shared: &Shared,
    req: Request,
    authorization: Option<Option<Result<Credentials, ()>>>,
    creds: Option<PhoneCredentials>,
) -> Option<Answer> {
    let now = now();
    let source = source_of(&req);
    let authorization = authorization.unwrap_or_else(|| Registrar::digest_credentials(&req.msg));
    // The table stays locked until the changes are queued: changes reach the writer in the
    // order they were made in memory (the sweeper queues its expiries under the same lock), so
    // an expiry can never overtake, and undo in the store, the refresh that came after it.
    let mut registrar = lock(&shared.registrar);
    let outcome =
        registrar.handle_register_with(&req.msg, authorization, source, creds.as_ref(), now);
    if outcome.changes.is_empty() {
        drop(registrar);
        if outcome.auth_failure {
            record_auth_failure(shared, source.addr.ip(), now);
        }
        return Some(Answer {
            tx: req.tx,
            response: outcome.response,
            stateless: outcome.stateless,
        });
    }
    let Some(writes) = &shared.writes else {
        // An idle handle never sees SIP traffic.
        return None;
    };
    let queued = writes.try_send(Pending {
        changes: outcome.changes,
        reply: Some((req.tx, outcome.response)),
    });
    drop(registrar);
    if outcome.auth_failure {
        record_auth_failure(shared, source.addr.ip(), now);
    }
    match queued {
        Ok(()) => None,
        Err(e) => {
            // The store cannot keep up: refuse now (the phone retries) rather than queue
            // without bound and answer after the phone has given up.
            let pending = match e {
                mpsc::error::TrySendError::Full(p) | mpsc::error::TrySendError::Closed(p) => p,
            };
            let (tx, response) = pending.reply?;
            let mut busy = Message::response_to(&response, 503, "Service Unavailable");
            let _ = busy.push_header(crate::sip::header::HeaderName::RetryAfter, "1");
            Some(Answer {
                tx,
                response: busy,
                stateless: false,
            })
        }
    }
}

/// Counts a failed authentication from `ip` toward a ban, and persists a ban it triggers.
fn record_auth_failure(shared: &Shared, ip: IpAddr, now: u64) {
    let ban = lock(&shared.guard).record_failure(ip, now);
    if let Some(ban) = ban {
        tracing::warn!(%ip, failures = ban.failures, until_ms = ban.until_ms,
            "banning a source address after repeated failed authentications");
        let store = shared.store.clone();
        shared.rt.spawn(async move {
            if let Err(e) = store
                .save_ban(
                    &ban.ip.to_string(),
                    ban.until_ms as i64,
                    i64::from(ban.failures),
                )
                .await
            {
                tracing::error!(error = %e, "could not persist a ban");
            }
        });
    }
}

/// Commits waiting changes in batches, then releases their responses.
async fn writer(store: Store, mut rx: mpsc::Receiver<Pending>, endpoint: mpsc::Sender<Command>) {
    let mut batch: Vec<Pending> = Vec::new();
    let mut replies = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        tokio::time::sleep(WRITE_LINGER).await;
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let all: Vec<&BindingChange> = batch.iter().flat_map(|p| p.changes.iter()).collect();
        let all_ok = match store.apply_binding_changes(all).await {
            Ok(()) => true,
            Err(e) => {
                // One bad change (say, a phone deleted between its REGISTER and this commit)
                // must not fail everybody else's: retry each request's changes on their own.
                tracing::warn!(error = %e, requests = batch.len(), "batch failed; retrying one by one");
                false
            }
        };
        for p in batch.drain(..) {
            let durable = all_ok
                || match store.apply_binding_changes(&p.changes).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::error!(error = %e, "persisting a binding change failed");
                        false
                    }
                };
            let Some((tx, mut response)) = p.reply else {
                continue;
            };
            if !durable {
                // Not durable, so not acknowledged: the phone retries.
                response = Message::response_to(&response, 500, "Server Internal Error");
                let _ = response.push_header(crate::sip::header::HeaderName::RetryAfter, "5");
            }
            replies.push((tx, response));
        }
        if !replies.is_empty() {
            let _ = endpoint
                .send(Command::Respond(std::mem::take(&mut replies)))
                .await;
        }
    }
}

/// Expires bindings on time and keeps bans in step with the store.
async fn sweeper(shared: Arc<Shared>) {
    let Some(writes) = shared.writes.clone() else {
        return;
    };
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    let mut since_sync = Duration::ZERO;
    loop {
        tick.tick().await;
        let now = now();
        let overflow = {
            // Queued under the table's lock, like every REGISTER's changes (see `decide`).
            let mut registrar = lock(&shared.registrar);
            let expired = registrar.expire(now);
            if expired.is_empty() {
                None
            } else {
                tracing::debug!(count = expired.len(), "bindings expired");
                match writes.try_send(Pending {
                    changes: expired,
                    reply: None,
                }) {
                    Ok(()) => None,
                    Err(mpsc::error::TrySendError::Full(p)) => Some(p),
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        };
        if let Some(p) = overflow {
            // The queue is full (the store is behind): wait for room. Only then can a refresh
            // queued meanwhile come first.
            let _ = writes.send(p).await;
        }
        lock(&shared.guard).prune(now);
        since_sync += SWEEP_EVERY;
        if since_sync >= BAN_SYNC_EVERY {
            since_sync = Duration::ZERO;
            match stored_bans(&shared.store, now).await {
                // The store is the truth for bans: one lifted elsewhere is lifted here.
                Ok(bans) => lock(&shared.guard).sync(bans, now),
                Err(e) => tracing::warn!(error = %e, "could not re-read bans"),
            }
        }
    }
}

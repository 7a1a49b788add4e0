//! Call events for the API's live stream: `ringing`, `answered`, `ended` for each user of a
//! call, on a broadcast bus with a replay buffer.
//!
//! The B2BUA publishes ([`Events::publish`]); each subscriber ([`Events::subscribe`]) gets
//! what was published after a given event id (from the buffer, which keeps the last
//! [`KEEP`], at most [`KEEP_MAX`] events) and then everything new. Ids rise strictly and start
//! from the wall clock, so an id from before a restart is simply older than every new one (a
//! client resuming across a restart gets what the new process has). When some of what followed
//! the id is no longer kept (too old, beyond the cap, or from before a restart) the replay says
//! so ([`Replay::incomplete`]), rather than leave a gap that looks like nothing happened: the
//! client then re-reads the history.
//!
//! Owns: event ids, the buffer, the channel. Must not touch: call state (the driver decides
//! what happened), HTTP (the API frames the stream).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::broadcast;
use utoipa::ToSchema;

/// How long events stay replayable.
pub const KEEP: Duration = Duration::from_secs(600);
/// At most this many events are kept for replay, whatever their age: a memory bound. At six
/// events a call it is ten minutes of 28 calls a second; beyond that, less than ten minutes.
pub const KEEP_MAX: usize = 100_000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Ringing,
    Answered,
    Ended,
}

/// One event of one user's call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct CallEvent {
    /// Rises strictly; the SSE `id`.
    pub id: u64,
    #[serde(rename = "event")]
    pub kind: EventKind,
    /// The call's id (for a click-to-call, the id `POST /calls` returned).
    #[schema(value_type = String)]
    pub call_id: Arc<str>,
    pub user_id: i64,
    /// `incoming` or `outgoing`, from this user's side.
    #[schema(value_type = String)]
    pub direction: &'static str,
    #[schema(value_type = String)]
    pub other_number: Arc<str>,
    #[schema(value_type = String)]
    pub other_name: Arc<str>,
    /// `ended` only: the outcome as this user's history will show it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub outcome: Option<&'static str>,
    pub click_to_call: bool,
    /// Unix milliseconds.
    pub at: i64,
}

/// The bus. Shared (`Arc`) by the B2BUA and the API.
#[derive(Debug)]
pub struct Events {
    next_id: AtomicU64,
    /// The first id this process gives: anything before it was published before a restart.
    first_id: u64,
    recent: Mutex<Recent>,
    live: broadcast::Sender<Arc<CallEvent>>,
}

/// The replay buffer.
#[derive(Debug, Default)]
struct Recent {
    /// Shared with the live channel: an event is built once, whoever keeps or sends it.
    events: VecDeque<Arc<CallEvent>>,
    /// The newest id dropped from `events` (0 while none was).
    dropped: u64,
}

/// What a subscriber missed: the events after the id it gave, as far as they are kept.
#[derive(Debug, Default)]
pub struct Replay {
    pub events: Vec<Arc<CallEvent>>,
    /// Some events after that id are no longer kept (older than [`KEEP`], beyond [`KEEP_MAX`],
    /// or published before this process started), so `events` may lack some of the
    /// subscriber's.
    pub incomplete: bool,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Events {
        let (live, _) = broadcast::channel(4096);
        let first_id = crate::store::now_ms().max(0) as u64 * 1000;
        Events {
            next_id: AtomicU64::new(first_id),
            first_id,
            recent: Mutex::new(Recent::default()),
            live,
        }
    }

    /// Publishes `event` (its `id` and `at` are set here).
    pub fn publish(&self, mut event: CallEvent) {
        let now = crate::store::now_ms();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        // Ids are taken under the lock so the buffer stays in id order.
        event.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        event.at = now;
        let oldest = now - KEEP.as_millis() as i64;
        while recent
            .events
            .front()
            .is_some_and(|e| e.at < oldest || recent.events.len() >= KEEP_MAX)
        {
            if let Some(e) = recent.events.pop_front() {
                recent.dropped = e.id;
            }
        }
        let event = Arc::new(event);
        recent.events.push_back(event.clone());
        // Nobody listening is fine.
        let _ = self.live.send(event);
    }

    /// The kept events after `after` that `wanted` accepts (none when `None`: a new
    /// subscriber starts from now), and a receiver for the ones still to come (which may
    /// repeat some of the first: skip ids already seen).
    pub fn subscribe(
        &self,
        after: Option<u64>,
        wanted: impl Fn(&CallEvent) -> bool,
    ) -> (Replay, broadcast::Receiver<Arc<CallEvent>>) {
        // Subscribe before reading the buffer: nothing published in between is lost.
        let rx = self.live.subscribe();
        let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let replay = match after {
            None => Replay::default(),
            Some(id) => Replay {
                events: recent
                    .events
                    .iter()
                    .filter(|e| e.id > id && wanted(e))
                    .cloned()
                    .collect(),
                // Ids are consecutive within a process: whatever followed `id` is kept unless
                // it was dropped, or came before this process.
                incomplete: id < self.first_id || id < recent.dropped,
            },
        };
        (replay, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(user: i64, kind: EventKind) -> CallEvent {
        CallEvent {
            id: 0,
            kind,
            call_id: "c1".into(),
            user_id: user,
            direction: "outgoing",
            other_number: "200".into(),
            other_name: "".into(),
            outcome: None,
            click_to_call: false,
            at: 0,
        }
    }

    #[tokio::test]
    async fn replay_after_an_id_then_live() {
        let bus = Events::new();
        bus.publish(ev(1, EventKind::Ringing));
        bus.publish(ev(2, EventKind::Ringing));
        bus.publish(ev(1, EventKind::Answered));
        let (replay, _) = bus.subscribe(Some(0), |e| e.user_id == 1);
        assert!(replay.incomplete, "id 0 is from before this process");
        let all = replay.events;
        assert_eq!(all.len(), 2);
        assert!(all[0].id < all[1].id);
        assert_eq!(all[1].kind, EventKind::Answered);
        let (after, mut rx) = bus.subscribe(Some(all[0].id), |e| e.user_id == 1);
        assert_eq!(after.events.len(), 1);
        assert!(!after.incomplete);
        let (fresh, _) = bus.subscribe(None, |_| true);
        assert!(fresh.events.is_empty(), "a new subscriber starts from now");
        assert!(!fresh.incomplete);
        bus.publish(ev(1, EventKind::Ended));
        let live = rx.recv().await.unwrap();
        assert_eq!(live.kind, EventKind::Ended);
        assert!(live.id > all[1].id);
    }

    #[test]
    fn a_replay_says_when_events_after_the_id_were_dropped() {
        let bus = Events::new();
        for _ in 0..KEEP_MAX + 2 {
            bus.publish(ev(1, EventKind::Ringing));
        }
        let first = bus.first_id;
        // The first two were dropped by the cap: resuming after the first misses the second.
        let (replay, _) = bus.subscribe(Some(first), |_| true);
        assert!(replay.incomplete);
        assert_eq!(replay.events.len(), KEEP_MAX);
        // Resuming after the second (the newest dropped) misses nothing.
        let (replay, _) = bus.subscribe(Some(first + 1), |_| true);
        assert!(!replay.incomplete);
        assert_eq!(replay.events.len(), KEEP_MAX);
        assert_eq!(replay.events[0].id, first + 2);
    }
}

//! Call records: the store's record of a call that ended (who, directions, times, outcome,
//! cause), and the writer task that commits them in batches and never gives a record up while
//! the store is merely unreachable.
//!
//! Owns: the mapping from a finished call to its record, the write path. Must not touch: call
//! state (it reads the summary), history queries (`store::calls`).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::super::call::Outcome;
use super::{Entry, RECORD_BATCH, RECORD_LINGER};
use crate::store::{now_ms, CallDirection, CallOutcome, CallParty, NewCallRecord, Store};

/// The store's record of a call that ended.
pub(super) fn call_record(e: &Entry, s: &super::super::call::Summary) -> NewCallRecord {
    let at = |t: Option<Instant>| {
        t.map(|t| e.started_ms + t.saturating_duration_since(s.started).as_millis() as i64)
    };
    let answered_at = if s.outcome == Outcome::Answered {
        at(s.answered)
    } else {
        None
    };
    let ended_at = at(s.ended).unwrap_or_else(now_ms).max(e.started_ms);
    let p = &e.parties;
    let mut parties = Vec::with_capacity(2);
    if let Some(user_id) = p.caller.user_id {
        parties.push(CallParty {
            user_id,
            direction: CallDirection::Outgoing,
            other_number: p.callee.number.to_string(),
            other_name: p.callee.name.to_string(),
            answered_by: None,
        });
    }
    let incoming = |user_id| CallParty {
        user_id,
        direction: CallDirection::Incoming,
        other_number: p.caller.number.to_string(),
        other_name: p.caller.name.to_string(),
        answered_by: s.answered_by.clone(),
    };
    // A user calling their own extension has one history entry, the outgoing one.
    if let Some(user_id) = p.callee.user_id.filter(|&u| Some(u) != p.caller.user_id) {
        parties.push(incoming(user_id));
    }
    // Users the call was forwarded to (a phone's redirect) see it as incoming too.
    parties.extend(e.forwarded.iter().filter_map(|f| f.user_id).map(incoming));
    NewCallRecord {
        call_ref: e.call.caller_dialog().to_string(),
        started_at: e.started_ms,
        answered_at,
        ended_at,
        outcome: call_outcome(s.outcome),
        hangup_cause: if s.cause.is_empty() {
            "unknown".into()
        } else {
            s.cause.clone()
        },
        caller_number: p.caller.number.to_string(),
        caller_name: p.caller.name.to_string(),
        dialled_number: p.dialled.clone(),
        callee_number: p.callee.number.to_string(),
        callee_name: p.callee.name.to_string(),
        click_to_call: e.c2c.is_some(),
        trunk: p.trunk.clone(),
        parties,
    }
}

/// Writes the records of ended calls, every record waiting in one transaction; when a batch
/// fails, each record is written on its own (with retries) so one bad record costs no others.
pub(super) async fn record_writer(store: Store, mut rx: mpsc::Receiver<NewCallRecord>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while rx.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let full = batch.len() == RECORD_BATCH;
        if let Err(e) = store.insert_calls(&batch).await {
            tracing::warn!(error = %e, records = batch.len(), "call record batch failed; writing one by one");
            for r in batch.drain(..) {
                write_record(store.clone(), r).await;
            }
        }
        batch.clear();
        if !full {
            // Let the next records gather: one write per call meant a wake-up of this task and
            // of the database's thread per call. Nothing waits for a record; this delays
            // writing by at most RECORD_LINGER.
            tokio::time::sleep(RECORD_LINGER).await;
        }
    }
}

/// Writes a call record, retrying while the store is unreachable: a record is acknowledged to
/// nobody, so the only way to lose it is to give up. Writing is idempotent on `call_ref`.
pub(super) async fn write_record(store: Store, record: NewCallRecord) {
    let mut delay = Duration::from_millis(200);
    for attempt in 1..=8 {
        match store.insert_call(&record).await {
            Ok(_) => return,
            Err(crate::store::StoreError::Invalid(e)) => {
                // Our own bug, not the store's: retrying cannot help.
                tracing::error!(error = %e, call = %record.call_ref, "call record refused");
                return;
            }
            Err(_) if attempt == 8 => break,
            Err(e) => {
                tracing::warn!(error = %e, attempt, call = %record.call_ref, "call record not written yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
    tracing::error!(call = %record.call_ref, "call record could not be written; giving up");
}

pub(super) fn call_outcome(o: Outcome) -> CallOutcome {
    match o {
        Outcome::Answered => CallOutcome::Answered,
        Outcome::NoAnswer => CallOutcome::NoAnswer,
        Outcome::Busy => CallOutcome::Busy,
        Outcome::Failed => CallOutcome::Failed,
        Outcome::Cancelled => CallOutcome::Cancelled,
    }
}

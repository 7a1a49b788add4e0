//! Call records and call history on both databases: a few hundred generated calls, every filter
//! and sort checked page by page against a reference computed here, users kept apart, writes
//! idempotent and all-or-nothing, and everything still there after the store is reopened.

mod common;

use std::collections::HashMap;

use common::{Db, TestDb};
use switchboard::directory::NewUser;
use switchboard::store::{
    CallDirection, CallOutcome, CallParty, DirectionFilter, HistoryEntry, HistoryQuery,
    HistorySort, NewCallRecord, OutcomeFilter, PartyOutcome, SortOrder, Store, StoreError,
};

/// A small deterministic generator (64-bit LCG, high bits out).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

async fn add_user(store: &Store, ext: &str, name: &str) -> i64 {
    store
        .create_user(&NewUser {
            extension: ext.into(),
            display_name: name.into(),
            email: format!("u{ext}@example.com"),
            fax_number: None,
            external_numbers: vec![],
        })
        .await
        .unwrap()
        .id
}

/// Few distinct values, so sorts see plenty of ties; names differ in case and include
/// non-ASCII and empty ones, to check the case-folded name order.
const NUMBERS: &[&str] = &["+4930123", "+4989555", "0171999", "110", "555", "+15550100"];
const NAMES: &[&str] = &[
    "alice", "Alice", "BOB", "bob", "Émile", "émile", "", "Zoë", "carol",
];
const OUTCOMES: &[CallOutcome] = &[
    CallOutcome::Answered,
    CallOutcome::Answered,
    CallOutcome::NoAnswer,
    CallOutcome::Busy,
    CallOutcome::Failed,
    CallOutcome::Cancelled,
];

/// Generates `n` call records between `users` (id, extension, name) and the outside world.
fn generate(users: &[(i64, &str, &str)], n: usize, seed: u64) -> Vec<NewCallRecord> {
    let mut rng = Rng(seed);
    let base = 1_700_000_000_000i64;
    (0..n)
        .map(|i| {
            // Coarse start times: many calls share one.
            let started_at = base + rng.below(60) as i64 * 60_000;
            let outcome = *rng.pick(OUTCOMES);
            let answered_at =
                (outcome == CallOutcome::Answered).then(|| started_at + rng.below(4) as i64 * 1000);
            let ended_at = answered_at.unwrap_or(started_at) + rng.below(5) as i64 * 30_000;
            let answered_by = |rng: &mut Rng| {
                answered_at.map(|_| match rng.below(3) {
                    0 => "phone:1".to_string(),
                    1 => "phone:2".to_string(),
                    _ => "+491701234567".to_string(),
                })
            };
            let ext_number = rng.pick(NUMBERS).to_string();
            let ext_name = rng.pick(NAMES).to_string();
            let a = *rng.pick(users);
            let b = *rng.pick(users);
            let click_to_call = rng.below(4) == 0;
            let kind = rng.below(5);
            let (caller, callee, trunk, parties) = match kind {
                // Internal: outgoing for the caller, incoming for the callee (maybe the same user).
                0 | 1 => (
                    (a.1.to_string(), a.2.to_string()),
                    (b.1.to_string(), b.2.to_string()),
                    None,
                    vec![
                        CallParty {
                            user_id: a.0,
                            direction: CallDirection::Outgoing,
                            other_number: b.1.into(),
                            other_name: b.2.into(),
                            answered_by: if click_to_call {
                                answered_by(&mut rng)
                            } else {
                                None
                            },
                        },
                        CallParty {
                            user_id: b.0,
                            direction: CallDirection::Incoming,
                            other_number: a.1.into(),
                            other_name: a.2.into(),
                            answered_by: answered_by(&mut rng),
                        },
                    ],
                ),
                // In from the trunk.
                2 => (
                    (ext_number.clone(), ext_name.clone()),
                    (a.1.to_string(), a.2.to_string()),
                    Some("default".to_string()),
                    vec![CallParty {
                        user_id: a.0,
                        direction: CallDirection::Incoming,
                        other_number: ext_number.clone(),
                        other_name: ext_name.clone(),
                        answered_by: answered_by(&mut rng),
                    }],
                ),
                // Out through the trunk.
                3 => (
                    (a.1.to_string(), a.2.to_string()),
                    (ext_number.clone(), ext_name.clone()),
                    Some("default".to_string()),
                    vec![CallParty {
                        user_id: a.0,
                        direction: CallDirection::Outgoing,
                        other_number: ext_number.clone(),
                        other_name: ext_name.clone(),
                        answered_by: None,
                    }],
                ),
                // To a DID nobody has: a record with no party.
                _ => (
                    (ext_number.clone(), ext_name.clone()),
                    ("999".to_string(), String::new()),
                    Some("default".to_string()),
                    vec![],
                ),
            };
            NewCallRecord {
                call_ref: format!("call-{seed}-{i}"),
                started_at,
                answered_at,
                ended_at,
                outcome,
                hangup_cause: if answered_at.is_some() {
                    "normal clearing".into()
                } else {
                    format!("{outcome:?}")
                },
                caller_number: caller.0,
                caller_name: caller.1,
                dialled_number: callee.0.clone(),
                callee_number: callee.0,
                callee_name: callee.1,
                click_to_call: click_to_call && kind != 2,
                trunk,
                parties,
            }
        })
        .collect()
}

/// What a party's history entry must hold, id aside.
fn expected_entry(call_id: i64, call: &NewCallRecord, p: &CallParty) -> HistoryEntry {
    let outcome = match (call.outcome, p.direction) {
        (CallOutcome::Answered, _) => PartyOutcome::Answered,
        (_, CallDirection::Incoming) => PartyOutcome::Missed,
        (CallOutcome::NoAnswer, _) => PartyOutcome::NoAnswer,
        (CallOutcome::Busy, _) => PartyOutcome::Busy,
        (CallOutcome::Failed, _) => PartyOutcome::Failed,
        (CallOutcome::Cancelled, _) => PartyOutcome::Cancelled,
    };
    HistoryEntry {
        id: 0,
        call_id,
        direction: p.direction,
        other_number: p.other_number.clone(),
        other_name: p.other_name.clone(),
        started_at: call.started_at,
        answered_at: call.answered_at,
        duration_ms: call.answered_at.map_or(0, |a| call.ended_at - a),
        outcome,
        answered_by: p.answered_by.clone(),
        click_to_call: call.click_to_call,
    }
}

fn outcome_text(o: PartyOutcome) -> &'static str {
    match o {
        PartyOutcome::Answered => "answered",
        PartyOutcome::Missed => "missed",
        PartyOutcome::NoAnswer => "no_answer",
        PartyOutcome::Busy => "busy",
        PartyOutcome::Failed => "failed",
        PartyOutcome::Cancelled => "cancelled",
    }
}

/// The reference: the entries a query must return, in order.
fn reference(all: &[HistoryEntry], q: &HistoryQuery) -> Vec<i64> {
    let mut rows: Vec<&HistoryEntry> = all
        .iter()
        .filter(|e| match q.direction {
            DirectionFilter::Incoming => e.direction == CallDirection::Incoming,
            DirectionFilter::Outgoing => e.direction == CallDirection::Outgoing,
            DirectionFilter::All => true,
        })
        .filter(|e| match q.outcome {
            OutcomeFilter::Answered => e.answered_at.is_some(),
            OutcomeFilter::Missed => {
                e.direction == CallDirection::Incoming && e.answered_at.is_none()
            }
            OutcomeFilter::All => true,
        })
        .collect();
    rows.sort_by(|a, b| {
        let key = |e: &HistoryEntry| -> (String, i64) {
            match q.sort {
                HistorySort::Time => (String::new(), 0),
                HistorySort::Number => (e.other_number.clone(), 0),
                HistorySort::Name => (e.other_name.to_lowercase(), 0),
                HistorySort::Duration => (String::new(), e.duration_ms),
                HistorySort::Outcome => (outcome_text(e.outcome).to_string(), 0),
            }
        };
        (key(a), a.started_at, a.id).cmp(&(key(b), b.started_at, b.id))
    });
    if q.order == SortOrder::Desc {
        rows.reverse();
    }
    rows.into_iter().map(|e| e.id).collect()
}

/// Follows cursors to the end; checks page sizes and that only the last page lacks a cursor.
async fn all_pages(store: &Store, user: i64, q: &HistoryQuery) -> Vec<HistoryEntry> {
    let mut q = q.clone();
    let mut out = Vec::new();
    for _ in 0..1000 {
        let page = store.call_history(user, &q).await.unwrap();
        assert!(page.entries.len() <= q.limit as usize);
        out.extend(page.entries.iter().cloned());
        match page.next_cursor {
            Some(c) => {
                assert_eq!(
                    page.entries.len(),
                    q.limit as usize,
                    "a short page with a cursor"
                );
                q.cursor = Some(c);
            }
            None => return out,
        }
    }
    panic!("pagination does not end");
}

const DIRECTIONS: [DirectionFilter; 3] = [
    DirectionFilter::Incoming,
    DirectionFilter::Outgoing,
    DirectionFilter::All,
];
const OUTCOME_FILTERS: [OutcomeFilter; 3] = [
    OutcomeFilter::Answered,
    OutcomeFilter::Missed,
    OutcomeFilter::All,
];
const SORTS: [HistorySort; 5] = [
    HistorySort::Time,
    HistorySort::Number,
    HistorySort::Name,
    HistorySort::Duration,
    HistorySort::Outcome,
];

async fn history_matches_reference(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = tdb.store().await;
    let a = add_user(&store, "100", "Alice Example").await;
    let b = add_user(&store, "101", "bob builder").await;
    let c = add_user(&store, "102", "Émile Zola").await;
    let outsider = add_user(&store, "103", "Nobody").await;
    let users = [
        (a, "100", "Alice Example"),
        (b, "101", "bob builder"),
        (c, "102", "Émile Zola"),
    ];
    let records = generate(&users, 320, 7);

    // Expected entries per user, in insertion order (call id, then party order).
    let mut expected: HashMap<i64, Vec<HistoryEntry>> = HashMap::new();
    for r in &records {
        let id = store.insert_call(r).await.unwrap();
        for p in &r.parties {
            expected
                .entry(p.user_id)
                .or_default()
                .push(expected_entry(id, r, p));
        }
    }
    assert_eq!(store.count_rows("calls").await.unwrap(), 320);

    // Every stored record reads back as written.
    for r in &records {
        let stored = store.call_by_ref(&r.call_ref).await.unwrap().unwrap();
        assert_eq!(&stored.record, r);
    }

    // Each user's full history (one page) holds exactly the expected entries; entry ids are
    // then taken from the store for the ordering checks.
    let mut actual: HashMap<i64, Vec<HistoryEntry>> = HashMap::new();
    for (user, _, _) in users {
        let q = HistoryQuery {
            sort: HistorySort::Time,
            order: SortOrder::Asc,
            limit: 500,
            ..Default::default()
        };
        let page = store.call_history(user, &q).await.unwrap();
        assert!(page.next_cursor.is_none());
        let mut got = page.entries.clone();
        got.sort_by_key(|e| e.id);
        let want = &expected[&user];
        assert!(want.len() > 50, "user {user} has too few entries to page");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!(HistoryEntry { id: 0, ..g.clone() }, *w);
        }
        // Missed means incoming and unanswered, whatever the call's own outcome.
        for e in &got {
            assert_eq!(
                e.outcome == PartyOutcome::Missed,
                e.direction == CallDirection::Incoming && e.answered_at.is_none()
            );
        }
        actual.insert(user, got);
    }

    // Every filter, sort and order, paged 7 at a time, against the reference.
    let mut checked = 0;
    for (user, _, _) in users {
        for direction in DIRECTIONS {
            for outcome in OUTCOME_FILTERS {
                for sort in SORTS {
                    for order in [SortOrder::Asc, SortOrder::Desc] {
                        let q = HistoryQuery {
                            direction,
                            outcome,
                            sort,
                            order,
                            limit: 7,
                            cursor: None,
                        };
                        let got: Vec<i64> = all_pages(&store, user, &q)
                            .await
                            .iter()
                            .map(|e| e.id)
                            .collect();
                        assert_eq!(got, reference(&actual[&user], &q), "user {user}: {q:?}");
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 3 * 3 * 3 * 5 * 2);

    // The default query: newest first, 50 entries.
    let page = store
        .call_history(a, &HistoryQuery::default())
        .await
        .unwrap();
    let want = reference(&actual[&a], &HistoryQuery::default());
    assert_eq!(page.entries.len(), 50);
    assert_eq!(
        page.entries.iter().map(|e| e.id).collect::<Vec<_>>(),
        want[..50]
    );
    assert!(page.next_cursor.is_some());

    // Users are kept apart: one with no calls sees none, nobody reads another's entry.
    let none = store
        .call_history(outsider, &HistoryQuery::default())
        .await
        .unwrap();
    assert!(none.entries.is_empty() && none.next_cursor.is_none());
    for e in actual[&a].iter().take(40) {
        assert_eq!(
            store.call_history_entry(a, e.id).await.unwrap().as_ref(),
            Some(e)
        );
        assert_eq!(store.call_history_entry(b, e.id).await.unwrap(), None);
        assert_eq!(
            store.call_history_entry(outsider, e.id).await.unwrap(),
            None
        );
    }
    assert_eq!(store.call_history_entry(a, 1 << 40).await.unwrap(), None);
    // A cursor taken from one user's history only moves within the other user's own rows.
    let q = HistoryQuery {
        limit: 5,
        ..Default::default()
    };
    let first_a = store.call_history(a, &q).await.unwrap();
    let cross = store
        .call_history(
            b,
            &HistoryQuery {
                cursor: first_a.next_cursor.clone(),
                limit: 500,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(cross.entries.iter().all(|e| actual[&b].contains(e)));

    // Everything is still there after the store is closed and opened again.
    store.close().await;
    drop(store);
    let store = tdb.store().await;
    for (user, _, _) in users {
        let q = HistoryQuery {
            limit: 500,
            sort: HistorySort::Time,
            order: SortOrder::Asc,
            ..Default::default()
        };
        let mut got = store.call_history(user, &q).await.unwrap().entries;
        got.sort_by_key(|e| e.id);
        assert_eq!(got, actual[&user]);
    }
    for r in records.iter().step_by(17) {
        assert_eq!(
            &store
                .call_by_ref(&r.call_ref)
                .await
                .unwrap()
                .unwrap()
                .record,
            r
        );
    }

    // Deleting a user removes that user's history, not the calls nor the others' history.
    store.delete_user(c).await.unwrap();
    assert_eq!(store.count_rows("calls").await.unwrap(), 320);
    let q = HistoryQuery {
        limit: 500,
        ..Default::default()
    };
    assert!(store.call_history(c, &q).await.unwrap().entries.is_empty());
    assert_eq!(
        store.call_history(a, &q).await.unwrap().entries.len(),
        actual[&a].len()
    );
}

fn sample(user: i64, call_ref: &str) -> NewCallRecord {
    NewCallRecord {
        call_ref: call_ref.into(),
        started_at: 1_000,
        answered_at: Some(2_000),
        ended_at: 62_000,
        outcome: CallOutcome::Answered,
        hangup_cause: "normal clearing".into(),
        caller_number: "+4930123".into(),
        caller_name: "Outside".into(),
        dialled_number: "100".into(),
        callee_number: "100".into(),
        callee_name: "Alice".into(),
        click_to_call: false,
        trunk: Some("default".into()),
        parties: vec![CallParty {
            user_id: user,
            direction: CallDirection::Incoming,
            other_number: "+4930123".into(),
            other_name: "Outside".into(),
            answered_by: Some("phone:1".into()),
        }],
    }
}

fn invalid_field(err: StoreError) -> String {
    match err {
        StoreError::Invalid(i) => i.field,
        other => panic!("expected an invalid-input error, got {other:?}"),
    }
}

async fn writes_are_idempotent_and_atomic(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = tdb.store().await;
    let a = add_user(&store, "100", "Alice").await;
    let b = add_user(&store, "101", "Bob").await;

    // Writing the same call again (a retry) returns the first id and writes nothing.
    let rec = sample(a, "ref-1");
    let id = store.insert_call(&rec).await.unwrap();
    assert_eq!(store.insert_call(&rec).await.unwrap(), id);
    let mut changed = rec.clone();
    changed.hangup_cause = "something else".into();
    changed.parties.push(CallParty {
        user_id: b,
        direction: CallDirection::Outgoing,
        other_number: "100".into(),
        other_name: "Alice".into(),
        answered_by: None,
    });
    assert_eq!(store.insert_call(&changed).await.unwrap(), id);
    assert_eq!(store.count_rows("calls").await.unwrap(), 1);
    assert_eq!(store.count_rows("call_parties").await.unwrap(), 1);
    assert_eq!(
        store.call_by_ref("ref-1").await.unwrap().unwrap().record,
        rec
    );

    // Concurrent retries of one new call: one record, one id.
    let rec2 = sample(b, "ref-2");
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            let rec2 = rec2.clone();
            tokio::spawn(async move { store.insert_call(&rec2).await.unwrap() })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    assert!(ids.iter().all(|i| *i == ids[0]));
    assert_eq!(store.count_rows("calls").await.unwrap(), 2);
    assert_eq!(store.count_rows("call_parties").await.unwrap(), 2);

    // A party naming a user that does not exist fails the whole record: no call row, no party.
    let mut ghost = sample(a, "ref-3");
    ghost.parties.push(CallParty {
        user_id: b + 1000,
        direction: CallDirection::Outgoing,
        other_number: "100".into(),
        other_name: String::new(),
        answered_by: None,
    });
    let err = store.insert_call(&ghost).await.unwrap_err();
    assert_eq!(invalid_field(err), "parties[1].user_id");
    assert!(store.call_by_ref("ref-3").await.unwrap().is_none());
    assert_eq!(store.count_rows("calls").await.unwrap(), 2);
    assert_eq!(store.count_rows("call_parties").await.unwrap(), 2);
    // …and the reference is free for the corrected record.
    ghost.parties.pop();
    let id3 = store.insert_call(&ghost).await.unwrap();
    assert_ne!(id3, id);
    assert_eq!(store.count_rows("call_parties").await.unwrap(), 3);
}

async fn bad_input_is_named(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = tdb.store().await;
    let a = add_user(&store, "100", "Alice").await;

    type Spoil = Box<dyn Fn(&mut NewCallRecord)>;
    let cases: Vec<(&str, Spoil)> = vec![
        ("call_ref", Box::new(|r| r.call_ref = " ".into())),
        ("hangup_cause", Box::new(|r| r.hangup_cause.clear())),
        ("caller_number", Box::new(|r| r.caller_number.clear())),
        ("dialled_number", Box::new(|r| r.dialled_number.clear())),
        ("callee_number", Box::new(|r| r.callee_number.clear())),
        ("trunk", Box::new(|r| r.trunk = Some(String::new()))),
        ("ended_at", Box::new(|r| r.ended_at = r.started_at - 1)),
        ("answered_at", Box::new(|r| r.answered_at = None)),
        (
            "answered_at",
            Box::new(|r| r.answered_at = Some(r.ended_at + 1)),
        ),
        ("answered_at", Box::new(|r| r.outcome = CallOutcome::Busy)),
        (
            "parties[0].other_number",
            Box::new(|r| r.parties[0].other_number.clear()),
        ),
        (
            "parties[0].answered_by",
            Box::new(|r| r.parties[0].answered_by = Some(String::new())),
        ),
    ];
    for (field, spoil) in cases {
        let mut rec = sample(a, "bad");
        spoil(&mut rec);
        let err = store.insert_call(&rec).await.unwrap_err();
        assert_eq!(invalid_field(err), field);
    }
    assert_eq!(store.count_rows("calls").await.unwrap(), 0);

    // Enum values from text (the API's query parameters) name their parameter.
    assert_eq!("sideways".parse::<SortOrder>().unwrap_err().field, "order");
    assert_eq!("size".parse::<HistorySort>().unwrap_err().field, "sort");
    assert_eq!(
        "lost".parse::<OutcomeFilter>().unwrap_err().field,
        "outcome"
    );
    assert_eq!(
        "up".parse::<DirectionFilter>().unwrap_err().field,
        "direction"
    );

    for rec in generate(&[(a, "100", "Alice")], 30, 3) {
        store.insert_call(&rec).await.unwrap();
    }
    for limit in [0, 501] {
        let q = HistoryQuery {
            limit,
            ..Default::default()
        };
        let err = store.call_history(a, &q).await.unwrap_err();
        assert_eq!(invalid_field(err), "limit");
    }
    let q = HistoryQuery {
        limit: 500,
        ..Default::default()
    };
    assert!(store.call_history(a, &q).await.is_ok());

    // Bad cursors: not hex, not ours, or from another sort or order.
    let number_page = store
        .call_history(
            a,
            &HistoryQuery {
                sort: HistorySort::Number,
                limit: 2,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let number_cursor = number_page.next_cursor.unwrap();
    for (sort, order, cursor) in [
        (
            HistorySort::Time,
            SortOrder::Desc,
            "not a cursor".to_string(),
        ),
        (HistorySort::Time, SortOrder::Desc, "7b7d".to_string()),
        (HistorySort::Time, SortOrder::Desc, String::new()),
        (HistorySort::Name, SortOrder::Desc, number_cursor.clone()),
        (HistorySort::Number, SortOrder::Asc, number_cursor.clone()),
        (
            HistorySort::Number,
            SortOrder::Desc,
            number_cursor[..number_cursor.len() - 2].to_string(),
        ),
    ] {
        let q = HistoryQuery {
            sort,
            order,
            cursor: Some(cursor),
            ..Default::default()
        };
        let err = store.call_history(a, &q).await.unwrap_err();
        assert_eq!(invalid_field(err), "cursor");
    }
    // The right cursor works.
    let q = HistoryQuery {
        sort: HistorySort::Number,
        cursor: Some(number_cursor),
        ..Default::default()
    };
    assert!(store.call_history(a, &q).await.is_ok());
}

/// The batch write the B2BUA's record writer uses: many records in multi-row statements (chunk
/// sizes 64, 8, 1 all exercised by 150 records), read back exactly; writing the batch again,
/// or part of it, adds nothing; a batch naming a user that does not exist is refused whole.
async fn batch_writes(db: Db) {
    let tdb = TestDb::new(db).await;
    let store = tdb.store().await;
    let a = add_user(&store, "100", "Alice Example").await;
    let b = add_user(&store, "101", "bob builder").await;
    let records = generate(
        &[(a, "100", "Alice Example"), (b, "101", "bob builder")],
        150,
        11,
    );
    store.insert_calls(&records).await.unwrap();
    assert_eq!(store.count_rows("calls").await.unwrap(), 150);
    let parties: usize = records.iter().map(|r| r.parties.len()).sum();
    assert_eq!(
        store.count_rows("call_parties").await.unwrap(),
        parties as i64
    );
    for r in &records {
        let stored = store.call_by_ref(&r.call_ref).await.unwrap().unwrap();
        assert_eq!(&stored.record, r);
    }
    // A retry of the whole batch and of a slice of it, mixed with two new records.
    store.insert_calls(&records).await.unwrap();
    let mut mixed = records[40..50].to_vec();
    let fresh = generate(&[(a, "100", "Alice Example")], 2, 99);
    for (i, mut r) in fresh.into_iter().enumerate() {
        r.call_ref = format!("fresh-{i}");
        mixed.push(r);
    }
    store.insert_calls(&mixed).await.unwrap();
    assert_eq!(store.count_rows("calls").await.unwrap(), 152);
    // A party of a user that is gone: nothing of the batch is written.
    let mut bad = generate(&[(a, "100", "Alice Example")], 3, 5);
    for (i, r) in bad.iter_mut().enumerate() {
        r.call_ref = format!("bad-{i}");
    }
    let with_party = bad
        .iter_mut()
        .rev()
        .find_map(|r| r.parties.first_mut())
        .expect("a generated call with a party");
    with_party.user_id = 999_999;
    assert!(store.insert_calls(&bad).await.is_err());
    assert_eq!(store.count_rows("calls").await.unwrap(), 152);
}

on_both_databases!(
    history_matches_reference,
    writes_are_idempotent_and_atomic,
    bad_input_is_named,
    batch_writes
);

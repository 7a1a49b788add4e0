//! Call records and the per-user call history.
//!
//! A call attempt is written once, when it ends: one `calls` row and one `call_parties` row per
//! user involved, in one transaction, keyed by the `call_ref` the B2BUA gives the call so that a
//! retry after a crash finds the first write instead of making a second record.
//!
//! A party row carries, besides who the other side was for that user, copies of the call's
//! values the history sorts and filters on (start, answer, duration, the outcome as that user
//! sees it, click-to-call), so that the history query reads `call_parties` alone, through one
//! index per sort order.
//!
//! The history is paged by keyset: each sort orders by its key, then the start time, then the
//! party id (all in the same direction), and the cursor is that triple for the last entry of a
//! page, so pages neither skip nor repeat entries when rows share a key, and a page costs the
//! same however deep it is.

use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Result, Store, StoreError, MAX_PAGE};
use crate::directory::Invalid;

/// How a call attempt ended, for the call as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallOutcome {
    Answered,
    NoAnswer,
    Busy,
    Failed,
    Cancelled,
}

impl CallOutcome {
    pub const ALL: [CallOutcome; 5] = [
        CallOutcome::Answered,
        CallOutcome::NoAnswer,
        CallOutcome::Busy,
        CallOutcome::Failed,
        CallOutcome::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Answered => "answered",
            CallOutcome::NoAnswer => "no_answer",
            CallOutcome::Busy => "busy",
            CallOutcome::Failed => "failed",
            CallOutcome::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for CallOutcome {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        CallOutcome::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                Invalid::new(
                    "outcome",
                    "must be answered, no_answer, busy, failed or cancelled",
                )
            })
    }
}

/// Which way a call went, for one user: a call from user A to user B is outgoing for A and
/// incoming for B.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallDirection {
    Incoming,
    Outgoing,
}

impl CallDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            CallDirection::Incoming => "incoming",
            CallDirection::Outgoing => "outgoing",
        }
    }
}

impl std::str::FromStr for CallDirection {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        match s {
            "incoming" => Ok(CallDirection::Incoming),
            "outgoing" => Ok(CallDirection::Outgoing),
            _ => Err(Invalid::new("direction", "must be incoming or outgoing")),
        }
    }
}

/// How a call ended as one user sees it: `Answered`, `Missed` for an incoming call nobody
/// answered, otherwise the call's own outcome (an outgoing call that was busy stays busy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartyOutcome {
    Answered,
    Missed,
    NoAnswer,
    Busy,
    Failed,
    Cancelled,
}

impl PartyOutcome {
    pub const ALL: [PartyOutcome; 6] = [
        PartyOutcome::Answered,
        PartyOutcome::Missed,
        PartyOutcome::NoAnswer,
        PartyOutcome::Busy,
        PartyOutcome::Failed,
        PartyOutcome::Cancelled,
    ];

    /// The outcome a party with `direction` sees of a call that ended with `outcome`.
    pub fn of(outcome: CallOutcome, direction: CallDirection) -> PartyOutcome {
        match (outcome, direction) {
            (CallOutcome::Answered, _) => PartyOutcome::Answered,
            (_, CallDirection::Incoming) => PartyOutcome::Missed,
            (CallOutcome::NoAnswer, _) => PartyOutcome::NoAnswer,
            (CallOutcome::Busy, _) => PartyOutcome::Busy,
            (CallOutcome::Failed, _) => PartyOutcome::Failed,
            (CallOutcome::Cancelled, _) => PartyOutcome::Cancelled,
        }
    }

    /// The stored text, which is also the order of the outcome sort.
    pub fn as_str(self) -> &'static str {
        match self {
            PartyOutcome::Answered => "answered",
            PartyOutcome::Missed => "missed",
            PartyOutcome::NoAnswer => "no_answer",
            PartyOutcome::Busy => "busy",
            PartyOutcome::Failed => "failed",
            PartyOutcome::Cancelled => "cancelled",
        }
    }

    fn parse(s: &str) -> Option<PartyOutcome> {
        PartyOutcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// A finished call attempt, as the B2BUA hands it over. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewCallRecord {
    /// The B2BUA's unique reference for the call; writing the same reference again is a no-op.
    pub call_ref: String,
    pub started_at: i64,
    /// Set exactly when `outcome` is `Answered`.
    pub answered_at: Option<i64>,
    pub ended_at: i64,
    pub outcome: CallOutcome,
    pub hangup_cause: String,
    pub caller_number: String,
    /// May be empty (unknown).
    pub caller_name: String,
    /// What the caller dialled, before routing.
    pub dialled_number: String,
    /// The number called after routing.
    pub callee_number: String,
    /// May be empty (unknown).
    pub callee_name: String,
    pub click_to_call: bool,
    /// The trunk the call came in or went out through, if any.
    pub trunk: Option<String>,
    /// The users involved (none for, say, a trunk call to an unknown DID).
    pub parties: Vec<CallParty>,
}

/// One user's part in a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallParty {
    pub user_id: i64,
    pub direction: CallDirection,
    /// The other side's number as this user sees it (for redial).
    pub other_number: String,
    /// The other side's name as this user sees it; may be empty.
    pub other_name: String,
    /// Which of this user's phones or external numbers answered, e.g. `phone:12` or the number.
    pub answered_by: Option<String>,
}

/// A stored call with its parties, in the order they were given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallRecord {
    pub id: i64,
    pub record: NewCallRecord,
}

fn required(field: String, value: &str) -> Result<(), Invalid> {
    if value.trim().is_empty() {
        return Err(Invalid::new(field, "must not be empty"));
    }
    Ok(())
}

impl NewCallRecord {
    /// Checks what the record must hold; the error names the field at fault.
    pub fn validate(&self) -> Result<(), Invalid> {
        required("call_ref".into(), &self.call_ref)?;
        required("hangup_cause".into(), &self.hangup_cause)?;
        required("caller_number".into(), &self.caller_number)?;
        required("dialled_number".into(), &self.dialled_number)?;
        required("callee_number".into(), &self.callee_number)?;
        if let Some(trunk) = &self.trunk {
            required("trunk".into(), trunk)?;
        }
        if self.started_at < 0 {
            return Err(Invalid::new("started_at", "must not be negative"));
        }
        if self.ended_at < self.started_at {
            return Err(Invalid::new("ended_at", "must not be before started_at"));
        }
        match (self.outcome, self.answered_at) {
            (CallOutcome::Answered, None) => {
                return Err(Invalid::new(
                    "answered_at",
                    "is required when the outcome is answered",
                ))
            }
            (CallOutcome::Answered, Some(at)) if at < self.started_at || at > self.ended_at => {
                return Err(Invalid::new(
                    "answered_at",
                    "must lie between started_at and ended_at",
                ))
            }
            (o, Some(_)) if o != CallOutcome::Answered => {
                return Err(Invalid::new(
                    "answered_at",
                    "must be absent unless the outcome is answered",
                ))
            }
            _ => {}
        }
        for (i, p) in self.parties.iter().enumerate() {
            required(format!("parties[{i}].other_number"), &p.other_number)?;
            if let Some(by) = &p.answered_by {
                required(format!("parties[{i}].answered_by"), by)?;
            }
        }
        Ok(())
    }

    /// Talk time: from answer to end, 0 for a call never answered.
    pub fn duration_ms(&self) -> i64 {
        self.answered_at.map_or(0, |a| self.ended_at - a)
    }
}

/// The history's direction filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectionFilter {
    Incoming,
    Outgoing,
    #[default]
    All,
}

/// The history's outcome filter: `Missed` is an incoming call that was not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeFilter {
    Answered,
    Missed,
    #[default]
    All,
}

/// What the history is sorted by. Every sort breaks ties by start time, then by entry id, in
/// the same order; `Name` compares case-folded names, `Number` and `Outcome` the plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistorySort {
    #[default]
    Time,
    Number,
    Name,
    Duration,
    Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    Asc,
    #[default]
    Desc,
}

impl HistorySort {
    fn tag(self) -> &'static str {
        match self {
            HistorySort::Time => "time",
            HistorySort::Number => "number",
            HistorySort::Name => "name",
            HistorySort::Duration => "duration",
            HistorySort::Outcome => "outcome",
        }
    }

    /// The column sorted on before `started_at, id`, if any.
    fn key_column(self) -> Option<&'static str> {
        match self {
            HistorySort::Time => None,
            HistorySort::Number => Some("other_number"),
            HistorySort::Name => Some("other_name_key"),
            HistorySort::Duration => Some("duration_ms"),
            HistorySort::Outcome => Some("outcome"),
        }
    }
}

macro_rules! parse_enum {
    ($ty:ty, $field:literal, $($text:literal => $value:expr),+ $(,)?) => {
        impl std::str::FromStr for $ty {
            type Err = Invalid;
            fn from_str(s: &str) -> Result<Self, Invalid> {
                match s {
                    $($text => Ok($value),)+
                    _ => Err(Invalid::new(
                        $field,
                        concat!("must be one of:", $(" ", $text),+),
                    )),
                }
            }
        }
    };
}

parse_enum!(DirectionFilter, "direction",
    "incoming" => DirectionFilter::Incoming,
    "outgoing" => DirectionFilter::Outgoing,
    "all" => DirectionFilter::All);
parse_enum!(OutcomeFilter, "outcome",
    "answered" => OutcomeFilter::Answered,
    "missed" => OutcomeFilter::Missed,
    "all" => OutcomeFilter::All);
parse_enum!(HistorySort, "sort",
    "time" => HistorySort::Time,
    "number" => HistorySort::Number,
    "name" => HistorySort::Name,
    "duration" => HistorySort::Duration,
    "outcome" => HistorySort::Outcome);
parse_enum!(SortOrder, "order",
    "asc" => SortOrder::Asc,
    "desc" => SortOrder::Desc);

/// The default history page size.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

/// A request for one page of a user's call history. The default is the newest 50 calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub direction: DirectionFilter,
    pub outcome: OutcomeFilter,
    pub sort: HistorySort,
    pub order: SortOrder,
    /// 1 to 500.
    pub limit: u32,
    /// The previous page's `next_cursor`, for the same sort and order.
    pub cursor: Option<String>,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        HistoryQuery {
            direction: DirectionFilter::All,
            outcome: OutcomeFilter::All,
            sort: HistorySort::Time,
            order: SortOrder::Desc,
            limit: DEFAULT_HISTORY_LIMIT,
            cursor: None,
        }
    }
}

/// One call in a user's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub id: i64,
    pub call_id: i64,
    pub direction: CallDirection,
    pub other_number: String,
    pub other_name: String,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub duration_ms: i64,
    pub outcome: PartyOutcome,
    pub answered_by: Option<String>,
    pub click_to_call: bool,
}

/// One page of history; `next_cursor` is `None` on the last page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub entries: Vec<HistoryEntry>,
    pub next_cursor: Option<String>,
}

/// The key a name sorts by: case-folded here rather than in SQL, so both databases agree.
fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// The value of a sort's leading key, as bound to the query.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyValue {
    Int(i64),
    Text(String),
}

/// Where a page starts: after the entry with this (key, started_at, id).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cursor {
    sort: HistorySort,
    order: SortOrder,
    key: Option<KeyValue>,
    started_at: i64,
    id: i64,
}

fn bad_cursor() -> StoreError {
    Invalid::new("cursor", "is not a cursor from this history query").into()
}

impl Cursor {
    /// JSON of the position, hex-encoded: opaque, URL-safe, and easy to check on the way back.
    fn encode(&self) -> String {
        let key = match &self.key {
            None => serde_json::Value::Null,
            Some(KeyValue::Int(v)) => (*v).into(),
            Some(KeyValue::Text(s)) => s.as_str().into(),
        };
        let order = match self.order {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        };
        let json = serde_json::json!([1, self.sort.tag(), order, key, self.started_at, self.id]);
        json.to_string()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn decode(text: &str, sort: HistorySort, order: SortOrder) -> Result<Cursor> {
        if text.len() % 2 != 0 || text.len() > 8192 {
            return Err(bad_cursor());
        }
        let bytes = (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(bad_cursor)?;
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| bad_cursor())?;
        let parts = value.as_array().ok_or_else(bad_cursor)?;
        let [version, sort_tag, order_tag, key, started_at, id] = parts.as_slice() else {
            return Err(bad_cursor());
        };
        let order_text = match order {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        };
        if version.as_i64() != Some(1)
            || sort_tag.as_str() != Some(sort.tag())
            || order_tag.as_str() != Some(order_text)
        {
            return Err(bad_cursor());
        }
        let key = match sort {
            HistorySort::Time if key.is_null() => None,
            HistorySort::Duration => Some(KeyValue::Int(key.as_i64().ok_or_else(bad_cursor)?)),
            HistorySort::Number | HistorySort::Name | HistorySort::Outcome => Some(KeyValue::Text(
                key.as_str().ok_or_else(bad_cursor)?.to_owned(),
            )),
            HistorySort::Time => return Err(bad_cursor()),
        };
        Ok(Cursor {
            sort,
            order,
            key,
            started_at: started_at.as_i64().ok_or_else(bad_cursor)?,
            id: id.as_i64().ok_or_else(bad_cursor)?,
        })
    }
}

const ENTRY_COLS: &str = "id, call_id, direction, other_number, other_name, other_name_key, \
     started_at, answered_at, duration_ms, outcome, answered_by, click_to_call";

/// Reads a flag: an integer 0/1 on SQLite, a boolean on PostgreSQL.
fn get_flag(row: &AnyRow, column: &str) -> Result<bool> {
    match row.try_get::<i64, _>(column) {
        Ok(v) => Ok(v != 0),
        Err(_) => Ok(row.try_get::<bool, _>(column)?),
    }
}

fn corrupt(column: &str, value: &str) -> StoreError {
    StoreError::Db(sqlx::Error::Decode(
        format!("unexpected {column} {value:?} in a call record").into(),
    ))
}

/// An entry and the name key its cursor needs.
fn entry_from_row(row: &AnyRow) -> Result<(HistoryEntry, String)> {
    let direction: String = row.try_get("direction")?;
    let outcome: String = row.try_get("outcome")?;
    let entry = HistoryEntry {
        id: row.try_get("id")?,
        call_id: row.try_get("call_id")?,
        direction: direction
            .parse()
            .map_err(|_| corrupt("direction", &direction))?,
        other_number: row.try_get("other_number")?,
        other_name: row.try_get("other_name")?,
        started_at: row.try_get("started_at")?,
        answered_at: row.try_get("answered_at")?,
        duration_ms: row.try_get("duration_ms")?,
        outcome: PartyOutcome::parse(&outcome).ok_or_else(|| corrupt("outcome", &outcome))?,
        answered_by: row.try_get("answered_by")?,
        click_to_call: get_flag(row, "click_to_call")?,
    };
    Ok((entry, row.try_get("other_name_key")?))
}

impl Store {
    /// Writes a finished call and its parties in one transaction and returns the call's id.
    ///
    /// Idempotent on `call_ref`: if a call with that reference is already stored, nothing is
    /// written and its id is returned (the first write wins). A party naming a user that does
    /// not exist fails the whole record with an error naming `parties[i].user_id`.
    pub async fn insert_call(&self, call: &NewCallRecord) -> Result<i64> {
        call.validate()?;
        let mut tx = self.begin_write().await?;
        let id = Self::insert_call_in(self.backend, &mut tx, call).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Writes several records in one transaction, all or none (same rules as
    /// [`Store::insert_call`] for each). The B2BUA's record writer uses it: one commit for every
    /// call that ended meanwhile instead of one each.
    pub async fn insert_calls(&self, calls: &[NewCallRecord]) -> Result<()> {
        for c in calls {
            c.validate()?;
        }
        // Multi-row statements: with SQLite every statement is a round trip to the
        // connection's worker thread, and one statement per row made those hand-offs the
        // largest cost of a call record (a quarter of the server's CPU under call load).
        let backend = self.backend;
        let mut tx = self.begin_write().await?;
        let mut rest = calls;
        while !rest.is_empty() {
            let n = super::registrations::chunk_size(rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            let mut q = sqlx::query(bulk_calls_sql(backend, n));
            for c in chunk {
                q = bind_call(q, c);
            }
            // Records written before (a retry) return nothing: their parties are there too.
            let ids: std::collections::HashMap<String, i64> = q
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get::<String, _>(1)?, r.try_get::<i64, _>(0)?)))
                .collect::<std::result::Result<_, sqlx::Error>>()?;
            let parties: Vec<(i64, &NewCallRecord, &CallParty)> = chunk
                .iter()
                .filter_map(|c| ids.get(&c.call_ref).map(|id| (*id, c)))
                .flat_map(|(id, c)| c.parties.iter().map(move |p| (id, c, p)))
                .collect();
            let mut prest = &parties[..];
            while !prest.is_empty() {
                let m = super::registrations::chunk_size(prest.len());
                let (pchunk, ptail) = prest.split_at(m);
                prest = ptail;
                let mut q = sqlx::query(bulk_parties_sql(backend, m));
                for (id, c, p) in pchunk {
                    q = bind_party(q, *id, c, p);
                }
                q.execute(&mut *tx).await.map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                        Invalid::new("parties.user_id", "no such user").into()
                    }
                    _ => StoreError::Db(e),
                })?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_call_in(
        backend: super::Backend,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        call: &NewCallRecord,
    ) -> Result<i64> {
        let row = bind_call(sqlx::query(bulk_calls_sql(backend, 1)), call)
            .fetch_optional(&mut **tx)
            .await?;
        let Some(row) = row else {
            // Already written (a retry): the stored record stands.
            let existing: i64 = sqlx::query_scalar("SELECT id FROM calls WHERE call_ref = $1")
                .bind(&call.call_ref)
                .fetch_one(&mut **tx)
                .await?;
            return Ok(existing);
        };
        let id: i64 = row.try_get(0)?;
        for (i, p) in call.parties.iter().enumerate() {
            bind_party(sqlx::query(bulk_parties_sql(backend, 1)), id, call, p)
                .execute(&mut **tx)
                .await
                .map_err(|e| match &e {
                    sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                        Invalid::new(format!("parties[{i}].user_id"), "no such user").into()
                    }
                    _ => StoreError::Db(e),
                })?;
        }
        Ok(id)
    }

    /// The stored call with this reference, with its parties in the order they were written.
    pub async fn call_by_ref(&self, call_ref: &str) -> Result<Option<CallRecord>> {
        let row = sqlx::query(
            "SELECT id, call_ref, started_at, answered_at, ended_at, outcome, hangup_cause, \
               caller_number, caller_name, dialled_number, callee_number, callee_name, \
               click_to_call, trunk \
             FROM calls WHERE call_ref = $1",
        )
        .bind(call_ref)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get("id")?;
        let outcome: String = row.try_get("outcome")?;
        let parties = sqlx::query(
            "SELECT user_id, direction, other_number, other_name, answered_by \
             FROM call_parties WHERE call_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            let direction: String = r.try_get("direction")?;
            Ok(CallParty {
                user_id: r.try_get("user_id")?,
                direction: direction
                    .parse()
                    .map_err(|_| corrupt("direction", &direction))?,
                other_number: r.try_get("other_number")?,
                other_name: r.try_get("other_name")?,
                answered_by: r.try_get("answered_by")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
        Ok(Some(CallRecord {
            id,
            record: NewCallRecord {
                call_ref: row.try_get("call_ref")?,
                started_at: row.try_get("started_at")?,
                answered_at: row.try_get("answered_at")?,
                ended_at: row.try_get("ended_at")?,
                outcome: outcome.parse().map_err(|_| corrupt("outcome", &outcome))?,
                hangup_cause: row.try_get("hangup_cause")?,
                caller_number: row.try_get("caller_number")?,
                caller_name: row.try_get("caller_name")?,
                dialled_number: row.try_get("dialled_number")?,
                callee_number: row.try_get("callee_number")?,
                callee_name: row.try_get("callee_name")?,
                click_to_call: get_flag(&row, "click_to_call")?,
                trunk: row.try_get("trunk")?,
                parties,
            },
        }))
    }

    /// One page of `user_id`'s call history. Only that user's entries are ever returned.
    pub async fn call_history(&self, user_id: i64, query: &HistoryQuery) -> Result<HistoryPage> {
        if query.limit == 0 || i64::from(query.limit) > MAX_PAGE {
            return Err(Invalid::new("limit", format!("must be between 1 and {MAX_PAGE}")).into());
        }
        let cursor = query
            .cursor
            .as_deref()
            .map(|c| Cursor::decode(c, query.sort, query.order))
            .transpose()?;

        let mut sql = format!("SELECT {ENTRY_COLS} FROM call_parties WHERE user_id = $1");
        let mut n = 1;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        let direction = match query.direction {
            DirectionFilter::Incoming => Some(CallDirection::Incoming),
            DirectionFilter::Outgoing => Some(CallDirection::Outgoing),
            DirectionFilter::All => None,
        };
        if direction.is_some() {
            sql.push_str(&format!(" AND direction = {}", next()));
        }
        let outcome = match query.outcome {
            OutcomeFilter::Answered => Some(PartyOutcome::Answered),
            OutcomeFilter::Missed => Some(PartyOutcome::Missed),
            OutcomeFilter::All => None,
        };
        if outcome.is_some() {
            sql.push_str(&format!(" AND outcome = {}", next()));
        }
        let columns: Vec<&str> = query
            .sort
            .key_column()
            .into_iter()
            .chain(["started_at", "id"])
            .collect();
        let (cmp, dir) = match query.order {
            SortOrder::Asc => (">", "ASC"),
            SortOrder::Desc => ("<", "DESC"),
        };
        if cursor.is_some() {
            let params: Vec<String> = columns.iter().map(|_| next()).collect();
            sql.push_str(&format!(
                " AND ({}) {cmp} ({})",
                columns.join(", "),
                params.join(", ")
            ));
        }
        let order_by: Vec<String> = columns.iter().map(|c| format!("{c} {dir}")).collect();
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {}",
            order_by.join(", "),
            next()
        ));

        let mut q = sqlx::query(&sql).bind(user_id);
        if let Some(d) = direction {
            q = q.bind(d.as_str());
        }
        if let Some(o) = outcome {
            q = q.bind(o.as_str());
        }
        if let Some(c) = &cursor {
            match &c.key {
                Some(KeyValue::Int(v)) => q = q.bind(*v),
                Some(KeyValue::Text(s)) => q = q.bind(s.clone()),
                None => {}
            }
            q = q.bind(c.started_at).bind(c.id);
        }
        let limit = i64::from(query.limit);
        let rows = q.bind(limit + 1).fetch_all(&self.pool).await?;

        let mut entries = Vec::with_capacity(rows.len().min(query.limit as usize));
        let mut last_name_key = String::new();
        for row in rows.iter().take(query.limit as usize) {
            let (entry, name_key) = entry_from_row(row)?;
            entries.push(entry);
            last_name_key = name_key;
        }
        let next_cursor = match entries.last() {
            Some(last) if rows.len() as i64 > limit => {
                let key = match query.sort {
                    HistorySort::Time => None,
                    HistorySort::Number => Some(KeyValue::Text(last.other_number.clone())),
                    HistorySort::Name => Some(KeyValue::Text(last_name_key)),
                    HistorySort::Duration => Some(KeyValue::Int(last.duration_ms)),
                    HistorySort::Outcome => Some(KeyValue::Text(last.outcome.as_str().into())),
                };
                Some(
                    Cursor {
                        sort: query.sort,
                        order: query.order,
                        key,
                        started_at: last.started_at,
                        id: last.id,
                    }
                    .encode(),
                )
            }
            _ => None,
        };
        Ok(HistoryPage {
            entries,
            next_cursor,
        })
    }

    /// One entry of `user_id`'s history (for redial); `None` if absent or another user's.
    pub async fn call_history_entry(
        &self,
        user_id: i64,
        entry_id: i64,
    ) -> Result<Option<HistoryEntry>> {
        let row = sqlx::query(&format!(
            "SELECT {ENTRY_COLS} FROM call_parties WHERE id = $1 AND user_id = $2"
        ))
        .bind(entry_id)
        .bind(user_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref()
            .map(|r| entry_from_row(r).map(|(e, _)| e))
            .transpose()
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A record's 13 values, in the column order of [`bulk_calls_sql`].
fn bind_call<'q>(q: AnyQuery<'q>, c: &'q NewCallRecord) -> AnyQuery<'q> {
    q.bind(&c.call_ref)
        .bind(c.started_at)
        .bind(c.answered_at)
        .bind(c.ended_at)
        .bind(c.outcome.as_str())
        .bind(&c.hangup_cause)
        .bind(&c.caller_number)
        .bind(&c.caller_name)
        .bind(&c.dialled_number)
        .bind(&c.callee_number)
        .bind(&c.callee_name)
        .bind(c.click_to_call)
        .bind(&c.trunk)
}

/// A party's 12 values, in the column order of [`bulk_parties_sql`].
fn bind_party<'q>(
    q: AnyQuery<'q>,
    call_id: i64,
    c: &'q NewCallRecord,
    p: &'q CallParty,
) -> AnyQuery<'q> {
    q.bind(call_id)
        .bind(p.user_id)
        .bind(p.direction.as_str())
        .bind(&p.other_number)
        .bind(&p.other_name)
        .bind(name_key(&p.other_name))
        .bind(&p.answered_by)
        .bind(c.started_at)
        .bind(c.answered_at)
        .bind(c.duration_ms())
        .bind(PartyOutcome::of(c.outcome, p.direction).as_str())
        .bind(c.click_to_call)
}

/// `INSERT INTO calls` for `rows` records, returning (id, call_ref) of those not written before.
fn bulk_calls_sql(backend: super::Backend, rows: usize) -> &'static str {
    static CACHE: std::sync::OnceLock<Vec<(super::Backend, usize, String)>> =
        std::sync::OnceLock::new();
    bulk_sql(&CACHE, backend, rows, 13, |values| {
        format!(
            "INSERT INTO calls (call_ref, started_at, answered_at, ended_at, outcome, \
               hangup_cause, caller_number, caller_name, dialled_number, callee_number, \
               callee_name, click_to_call, trunk) VALUES {values} \
             ON CONFLICT (call_ref) DO NOTHING RETURNING id, call_ref"
        )
    })
}

/// `INSERT INTO call_parties` for `rows` parties.
fn bulk_parties_sql(backend: super::Backend, rows: usize) -> &'static str {
    static CACHE: std::sync::OnceLock<Vec<(super::Backend, usize, String)>> =
        std::sync::OnceLock::new();
    bulk_sql(&CACHE, backend, rows, 12, |values| {
        format!(
            "INSERT INTO call_parties (call_id, user_id, direction, other_number, other_name, \
               other_name_key, answered_by, started_at, answered_at, duration_ms, outcome, \
               click_to_call) VALUES {values}"
        )
    })
}

/// A multi-row statement of `rows` rows of `width` parameters, built once per backend and
/// chunk size (so that sqlx's statement cache sees a handful of texts, not one per batch).
fn bulk_sql(
    cache: &'static std::sync::OnceLock<Vec<(super::Backend, usize, String)>>,
    backend: super::Backend,
    rows: usize,
    width: usize,
    wrap: impl Fn(&str) -> String,
) -> &'static str {
    let all = cache.get_or_init(|| {
        let mut out = Vec::new();
        for b in [super::Backend::Sqlite, super::Backend::Postgres] {
            for n in super::registrations::CHUNK_SIZES {
                let values: Vec<String> = (0..n)
                    .map(|i| {
                        let p: Vec<String> = (1..=width)
                            .map(|k| super::registrations::placeholder(b, i * width + k))
                            .collect();
                        format!("({})", p.join(", "))
                    })
                    .collect();
                out.push((b, n, wrap(&values.join(", "))));
            }
        }
        out
    });
    all.iter()
        .find(|(b, n, _)| *b == backend && *n == rows)
        .map(|(_, _, s)| s.as_str())
        .unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_is_bound_to_its_sort() {
        let c = Cursor {
            sort: HistorySort::Name,
            order: SortOrder::Asc,
            key: Some(KeyValue::Text("o'brien \"x\" | é".into())),
            started_at: 17,
            id: 42,
        };
        let text = c.encode();
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            Cursor::decode(&text, HistorySort::Name, SortOrder::Asc).unwrap(),
            c
        );
        assert!(Cursor::decode(&text, HistorySort::Number, SortOrder::Asc).is_err());
        assert!(Cursor::decode(&text, HistorySort::Name, SortOrder::Desc).is_err());
        for bad in ["", "zz", "abc", "7b7d", "5b315d"] {
            assert!(Cursor::decode(bad, HistorySort::Name, SortOrder::Asc).is_err());
        }
    }

    #[test]
    fn party_outcome_follows_direction() {
        use CallDirection::*;
        assert_eq!(
            PartyOutcome::of(CallOutcome::Answered, Incoming),
            PartyOutcome::Answered
        );
        assert_eq!(
            PartyOutcome::of(CallOutcome::Busy, Incoming),
            PartyOutcome::Missed
        );
        assert_eq!(
            PartyOutcome::of(CallOutcome::Busy, Outgoing),
            PartyOutcome::Busy
        );
        assert_eq!(
            PartyOutcome::of(CallOutcome::Cancelled, Outgoing),
            PartyOutcome::Cancelled
        );
    }

    #[test]
    fn query_enums_parse_with_the_field_named() {
        assert_eq!("missed".parse::<OutcomeFilter>(), Ok(OutcomeFilter::Missed));
        assert_eq!("name".parse::<HistorySort>(), Ok(HistorySort::Name));
        assert_eq!("sideways".parse::<SortOrder>().unwrap_err().field, "order");
        assert_eq!(
            "both".parse::<DirectionFilter>().unwrap_err().field,
            "direction"
        );
        assert_eq!("nope".parse::<CallOutcome>().unwrap_err().field, "outcome");
    }
}

//! Registrar bindings at rest. The registrar keeps the live table in memory; this is the copy
//! that makes a 200 OK to REGISTER a promise: changes are written (in batches, one transaction
//! each) before the responses go out, and the table is reloaded at start.

use std::collections::HashMap;
use std::net::SocketAddr;

use sqlx::Row;

use super::{Backend, Result, Store};
use crate::registrar::{Binding, BindingChange, Source, Transport};

/// Rows per statement. Only these sizes are used, so each statement text is prepared once and
/// then reused from the driver's statement cache: preparing a fresh multi-row statement for
/// every batch cost more than the round trips it saved. 64 rows × 14 parameters stays far below
/// SQLite's limit of 32,766. Powers of two, so that a batch under 64 rows takes as many
/// statements as its size has one bits (50 rows: 32 + 16 + 2) — each statement is a round trip
/// to the database's thread, and with 64/8/1 a 50-row batch took eight.
pub(super) const CHUNK_SIZES: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// Rows per page when loading bindings at start.
const LOAD_PAGE: usize = 1000;

pub(super) fn chunk_size(remaining: usize) -> usize {
    CHUNK_SIZES
        .into_iter()
        .find(|s| *s <= remaining)
        .unwrap_or(1)
}

/// Placeholder `k` (1-based) of a bulk statement. SQLite gets anonymous `?` (numbered in order):
/// for a numbered `$k`, sqlx asks SQLite for each parameter's name, and SQLite finds a name by a
/// linear scan, so a 64-row upsert (896 parameters) cost ~400,000 scan steps per execution — a
/// twentieth of the server's CPU under registration load.
pub(super) fn placeholder(backend: Backend, k: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_string(),
        Backend::Postgres => format!("${k}"),
    }
}

/// The statement texts of one kind, one per chunk size and backend, built once.
type SqlCache = std::sync::OnceLock<Vec<(Backend, usize, String)>>;

fn cached(
    cache: &'static SqlCache,
    backend: Backend,
    rows: usize,
    build: impl Fn(Backend, usize) -> String,
) -> &'static str {
    let all = cache.get_or_init(|| {
        [Backend::Sqlite, Backend::Postgres]
            .into_iter()
            .flat_map(|b| CHUNK_SIZES.into_iter().map(move |n| (b, n)))
            .map(|(b, n)| (b, n, build(b, n)))
            .collect()
    });
    all.iter()
        .find(|(b, n, _)| *b == backend && *n == rows)
        .map(|(_, _, s)| s.as_str())
        .unwrap_or("")
}

/// `INSERT … ON CONFLICT DO UPDATE` for `rows` bindings.
fn upsert_sql(backend: Backend, rows: usize) -> &'static str {
    static CACHE: SqlCache = std::sync::OnceLock::new();
    cached(&CACHE, backend, rows, |backend, n| {
        let mut sql = String::from(
            "INSERT INTO registrations (aor, contact, phone_id, user_id, expires_at, q, \
                       call_id, cseq, source, transport, user_agent, instance, reg_id, updated_at) \
                     VALUES ",
        );
        for i in 0..n {
            if i > 0 {
                sql.push_str(", ");
            }
            let params: Vec<String> = (1..=14).map(|k| placeholder(backend, i * 14 + k)).collect();
            sql.push('(');
            sql.push_str(&params.join(", "));
            sql.push(')');
        }
        // phone_id and user_id are not updated: a row belongs to one phone (deleting the phone
        // deletes its rows), and leaving the indexed column alone spares an index write per
        // refresh.
        sql.push_str(
            " ON CONFLICT (aor, contact) DO UPDATE SET expires_at = excluded.expires_at, \
                       q = excluded.q, call_id = excluded.call_id, cseq = excluded.cseq, \
                       source = excluded.source, transport = excluded.transport, \
                       user_agent = excluded.user_agent, instance = excluded.instance, \
                       reg_id = excluded.reg_id, updated_at = excluded.updated_at",
        );
        sql
    })
}

/// `DELETE` of `rows` (aor, contact) pairs.
fn delete_sql(backend: Backend, rows: usize) -> &'static str {
    static CACHE: SqlCache = std::sync::OnceLock::new();
    cached(&CACHE, backend, rows, |backend, n| {
        let pairs: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "({}, {})",
                    placeholder(backend, 2 * i + 1),
                    placeholder(backend, 2 * i + 2)
                )
            })
            .collect();
        format!(
            "DELETE FROM registrations WHERE (aor, contact) IN ({})",
            pairs.join(", ")
        )
    })
}

fn transport_str(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
    }
}

fn parse_transport(s: &str) -> Transport {
    match s {
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        _ => Transport::Udp,
    }
}

impl Store {
    /// Applies a batch of binding changes in one transaction, as if one by one in order.
    ///
    /// The batch is first reduced to the last change per (aor, contact); then all upserts go
    /// in multi-row statements and all removals in one statement per chunk. One statement per
    /// change cost a round trip to the database driver each, which under load was a sixth of
    /// the server's CPU.
    pub async fn apply_binding_changes<'a>(
        &self,
        changes: impl IntoIterator<Item = &'a BindingChange>,
    ) -> Result<()> {
        let changes = changes.into_iter();
        let mut last: HashMap<(&str, &str), &BindingChange> =
            HashMap::with_capacity(changes.size_hint().0);
        for c in changes {
            let key = match c {
                BindingChange::Upsert(b) => (b.aor.as_str(), b.contact.as_str()),
                BindingChange::Remove { aor, contact } => (aor.as_str(), contact.as_str()),
            };
            last.insert(key, c);
        }
        if last.is_empty() {
            return Ok(());
        }
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        for c in last.into_values() {
            match c {
                BindingChange::Upsert(b) => upserts.push(b),
                BindingChange::Remove { aor, contact } => removals.push((aor, contact)),
            }
        }

        let mut tx = self.begin_write().await?;
        let mut rest = upserts.as_slice();
        while !rest.is_empty() {
            let size = chunk_size(rest.len());
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let mut q = sqlx::query(upsert_sql(self.backend, size));
            for b in chunk {
                q = q
                    .bind(&b.aor)
                    .bind(&b.contact)
                    .bind(b.phone_id)
                    .bind(b.user_id)
                    .bind(b.expires_at_ms as i64)
                    .bind(b.q.map(i64::from))
                    .bind(&b.call_id)
                    .bind(i64::from(b.cseq))
                    .bind(b.source.addr.to_string())
                    .bind(transport_str(b.source.transport))
                    .bind(&b.user_agent)
                    .bind(&b.instance)
                    .bind(b.reg_id.map(i64::from))
                    .bind(b.updated_ms as i64);
            }
            q.execute(&mut *tx).await?;
        }
        let mut rest = removals.as_slice();
        while !rest.is_empty() {
            let size = chunk_size(rest.len());
            let (chunk, tail) = rest.split_at(size);
            rest = tail;
            let mut q = sqlx::query(delete_sql(self.backend, size));
            for (aor, contact) in chunk {
                q = q.bind(aor.as_str()).bind(contact.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Bindings still valid at `now_ms`, to rebuild the registrar at start. Rows whose phone is
    /// gone are removed by the foreign key; rows that no longer parse are skipped and logged.
    ///
    /// Read in pages (keyset order), so a large table is never held twice in memory, as rows
    /// and as bindings, at the moment the server starts.
    pub async fn load_bindings(&self, now_ms: u64) -> Result<Vec<Binding>> {
        let mut out = Vec::new();
        self.load_bindings_paged(now_ms, |page| out.append(page))
            .await?;
        Ok(out)
    }

    /// [`Store::load_bindings`] a page at a time: `each` takes the page's bindings (and may
    /// leave the vector empty), so a caller that files them away as they come never holds the
    /// whole table twice.
    pub async fn load_bindings_paged(
        &self,
        now_ms: u64,
        mut each: impl FnMut(&mut Vec<Binding>),
    ) -> Result<()> {
        let mut page = Vec::with_capacity(LOAD_PAGE);
        let (mut after_aor, mut after_contact) = (String::new(), String::new());
        loop {
            let rows = sqlx::query(
                "SELECT aor, contact, phone_id, user_id, expires_at, q, call_id, cseq, source, \
                   transport, user_agent, instance, reg_id, updated_at \
                 FROM registrations WHERE expires_at > $1 \
                   AND (aor > $2 OR (aor = $2 AND contact > $3)) \
                 ORDER BY aor, contact LIMIT $4",
            )
            .bind(now_ms as i64)
            .bind(&after_aor)
            .bind(&after_contact)
            .bind(LOAD_PAGE as i64)
            .fetch_all(&self.pool)
            .await?;
            let full = rows.len() == LOAD_PAGE;
            if let Some(last) = rows.last() {
                after_aor = last.try_get("aor")?;
                after_contact = last.try_get("contact")?;
            }
            Self::bindings_from_rows(rows, &mut page)?;
            each(&mut page);
            page.clear();
            if !full {
                return Ok(());
            }
        }
    }

    fn bindings_from_rows(rows: Vec<sqlx::any::AnyRow>, out: &mut Vec<Binding>) -> Result<()> {
        for r in rows {
            let source: String = r.try_get("source")?;
            let Ok(addr) = source.parse::<SocketAddr>() else {
                tracing::warn!(%source, "skipping a stored binding with a bad source address");
                continue;
            };
            let transport: String = r.try_get("transport")?;
            let q: Option<i64> = r.try_get("q")?;
            let reg_id: Option<i64> = r.try_get("reg_id")?;
            out.push(Binding {
                aor: r.try_get("aor")?,
                contact: r.try_get("contact")?,
                phone_id: r.try_get("phone_id")?,
                user_id: r.try_get("user_id")?,
                q: q.and_then(|q| u16::try_from(q).ok()),
                expires_at_ms: r.try_get::<i64, _>("expires_at")?.max(0) as u64,
                call_id: r.try_get("call_id")?,
                cseq: u32::try_from(r.try_get::<i64, _>("cseq")?).unwrap_or(0),
                source: Source {
                    addr,
                    transport: parse_transport(&transport),
                    // Connections do not survive a restart; flow 0 names none.
                    flow: 0,
                },
                user_agent: r.try_get("user_agent")?,
                instance: r.try_get("instance")?,
                reg_id: reg_id.and_then(|v| u32::try_from(v).ok()),
                updated_ms: r.try_get::<i64, _>("updated_at")?.max(0) as u64,
            });
        }
        Ok(())
    }

    /// Deletes bindings that expired before `now_ms`.
    pub async fn delete_expired_bindings(&self, now_ms: u64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM registrations WHERE expires_at <= $1")
            .bind(now_ms as i64)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

//! Brute-force bans: source addresses refused for a while after repeated failed
//! authentications. The registrar's guard decides; this persists its decisions so bans survive
//! restarts, show in the API and CLI, and can be lifted from either.

use sqlx::Row;

use super::{now_ms, Result, Store};

/// A ban as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct BanRecord {
    /// The banned source address.
    pub ip: String,
    /// Unix milliseconds when the ban ends.
    pub until_ms: i64,
    /// Failed attempts that led to it.
    pub failures: i64,
    pub created_at: i64,
}

impl Store {
    pub async fn save_ban(&self, ip: &str, until_ms: i64, failures: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO bans (ip, until_ms, failures, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (ip) DO UPDATE SET until_ms = $2, failures = $3",
        )
        .bind(ip)
        .bind(until_ms)
        .bind(failures)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Bans still in force at `now_ms`, oldest first.
    pub async fn active_bans(&self, now_ms: i64) -> Result<Vec<BanRecord>> {
        let rows = sqlx::query(
            "SELECT ip, until_ms, failures, created_at FROM bans WHERE until_ms > $1 \
             ORDER BY created_at, ip",
        )
        .bind(now_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(BanRecord {
                    ip: r.try_get("ip")?,
                    until_ms: r.try_get("until_ms")?,
                    failures: r.try_get("failures")?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Lifts a ban; false when there was none.
    pub async fn remove_ban(&self, ip: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM bans WHERE ip = $1")
            .bind(ip)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Forgets bans that ended before `now_ms`.
    pub async fn prune_bans(&self, now_ms: i64) -> Result<()> {
        sqlx::query("DELETE FROM bans WHERE until_ms <= $1")
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

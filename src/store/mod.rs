//! The store: everything Switchboard must not forget, in PostgreSQL or SQLite through one
//! repository layer.
//!
//! SQL is written once, in the subset both databases share (`$n` placeholders, which sqlx's SQLite
//! driver binds by number; integer ids and millisecond timestamps; `RETURNING`). The connection is
//! sqlx's `Any` driver, so a query has exactly one code path whichever database runs it.
//! Migrations differ per database (identity columns, forward foreign keys) and live in
//! `migrations/postgres/` and `migrations/sqlite/`.
//!
//! This module owns SQL and transactions. It must not validate input beyond what integrity needs
//! (that is [`crate::directory`]) nor know about HTTP.

mod bans;
mod calls;
mod directory;
mod registrations;
mod tokens;

pub use bans::BanRecord;
pub use calls::{
    CallDirection, CallOutcome, CallParty, CallRecord, DirectionFilter, HistoryEntry, HistoryPage,
    HistoryQuery, HistorySort, NewCallRecord, OutcomeFilter, PartyOutcome, SortOrder,
    DEFAULT_HISTORY_LIMIT,
};
pub use directory::PhoneCredentials;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::AnyPool;

use crate::directory::Invalid;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");

/// The largest page a list returns, whatever `limit` asks for.
pub const MAX_PAGE: i64 = 500;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{field} already exists: {reason}")]
    Conflict { field: &'static str, reason: String },
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("cannot create database directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database the store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A page request: items with id greater than `after`, at most `limit` of them.
#[derive(Debug, Clone, Copy)]
pub struct Page {
    pub after: i64,
    pub limit: i64,
}

impl Default for Page {
    fn default() -> Self {
        Page {
            after: 0,
            limit: 50,
        }
    }
}

/// One page of results and the cursor for the next one (`None` on the last page).
#[derive(Debug, Clone)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub next: Option<i64>,
}

/// The handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Phone credentials by SIP username, filled on lookup and dropped on any change to the
    /// phone: the registrar's hot path must not wait on the database for every REGISTER.
    credentials: std::sync::Arc<dashmap::DashMap<String, PhoneCredentials>>,
    /// Names not in the cache that were looked up lately, and how many lookups are under way
    /// (see [`Store::prefetch_phone_credentials`]).
    misses: std::sync::Arc<directory::Misses>,
}

impl Store {
    /// Connects (creating the SQLite file and its directory when needed) and applies migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        Ok(store)
    }

    /// Connects without migrating.
    pub async fn connect(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if crate::config::is_postgres_url(url) {
            Backend::Postgres
        } else {
            Backend::Sqlite
        };
        let url = if backend == Backend::Sqlite {
            prepare_sqlite(url)?
        } else {
            url.to_owned()
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            // SQLite serialises writers anyway; a small pool avoids lock churn.
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            // A SQLite connection is a file handle, not a socket that can die while idle: the
            // ping sqlx sends before lending one out is a pointless round trip to its thread
            // (one per commit of the registrar's writer).
            .test_before_acquire(backend != Backend::Sqlite)
            .acquire_timeout(Duration::from_secs(10))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // A multi-row INSERT in a transaction keeps a statement journal (to undo
                        // just that statement should a row fail). By default it is a temporary
                        // file: its writes were an eighth of the database thread's time under
                        // call load. In memory it is as good (it never outlives the statement).
                        sqlx::Executor::execute(&mut *conn, "PRAGMA temp_store = MEMORY").await?;
                    }
                    Ok(())
                })
            })
            .connect_with(opts)
            .await?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer; it is a property of the file, so once is enough.
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&pool)
                .await?;
        }
        Ok(Store {
            pool,
            backend,
            credentials: Default::default(),
            misses: Default::default(),
        })
    }

    /// Applies pending migrations for this database.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// A transaction that is going to write. On SQLite it takes the write lock at its start
    /// (`BEGIN IMMEDIATE`): a deferred transaction that has read and then writes while another
    /// connection holds the write lock fails at once with `SQLITE_BUSY`, without waiting (the
    /// wait could deadlock). The other connection may be one whose failed transaction is still
    /// being rolled back (sqlx rolls back a dropped transaction lazily), the likeliest cause of
    /// a 500 seen once in the API tests for a PATCH right after a refused one.
    /// `BEGIN IMMEDIATE` waits its turn instead, within the busy timeout
    /// (`tests/store_writes.rs`).
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        })
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Rows in one of the store's tables, for metrics. The table name is ours, never input.
    pub async fn count_rows(&self, table: &'static str) -> Result<i64> {
        Ok(sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.pool)
            .await?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Makes sure a SQLite URL creates its file, and that the file's directory exists.
fn prepare_sqlite(url: &str) -> Result<String> {
    let path_part = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (file, query) = match path_part.split_once('?') {
        Some((f, q)) => (f, Some(q)),
        None => (path_part, None),
    };
    if file != ":memory:" && !file.is_empty() {
        if let Some(dir) = Path::new(file).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                    path: dir.display().to_string(),
                    source,
                })?;
            }
        }
    }
    Ok(match query {
        Some(q) if q.contains("mode=") => url.to_owned(),
        Some(_) => format!("{url}&mode=rwc"),
        None => format!("{url}?mode=rwc"),
    })
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Turns a unique-constraint violation into a [`StoreError::Conflict`] naming the field.
/// Both databases mention the constraint or column in the message; the table maps it back.
fn conflict_or(err: sqlx::Error, table: &[(&str, &'static str)]) -> StoreError {
    if let sqlx::Error::Database(db) = &err {
        if db.is_unique_violation() {
            let text = format!("{} {}", db.message(), db.constraint().unwrap_or(""));
            for (needle, field) in table {
                if text.contains(needle) {
                    return StoreError::Conflict {
                        field,
                        reason: format!("another record already uses this {field}"),
                    };
                }
            }
            return StoreError::Conflict {
                field: "id",
                reason: "duplicate".into(),
            };
        }
    }
    StoreError::Db(err)
}

//! Test support: a fresh, isolated store on SQLite (a temp file) or PostgreSQL (a schema of its
//! own in the `test` database), and helpers to call the HTTP API in-process.
//!
//! PostgreSQL is expected at `SWITCHBOARD_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is unreachable the tests fail: a silent
//! skip would let the PostgreSQL half of the store go untested.
#![allow(dead_code)]

pub mod sipp;

use std::sync::atomic::{AtomicU32, Ordering};

use switchboard::store::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

pub fn postgres_base() -> String {
    std::env::var("SWITCHBOARD_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// An isolated database; dropped with the test.
pub struct TestDb {
    pub url: String,
    schema: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(db: Db) -> TestDb {
        // The server's warnings and errors go to the test's captured output, so that a failure
        // (a 500 from the API, say) comes with the cause the server logged.
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .try_init();
        let dir = tempfile::tempdir().expect("temp dir");
        match db {
            Db::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.path().join("test.db").display()),
                schema: None,
                _dir: dir,
            },
            Db::Postgres => {
                static N: AtomicU32 = AtomicU32::new(0);
                let schema = format!(
                    "sbt_{}_{}_{}_{}",
                    unix_secs(),
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed),
                    rand_suffix()
                );
                let base = postgres_base();
                let admin = Store::connect(&base).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for these tests and is unreachable at {base}: {e}"
                    )
                });
                sweep_stale_schemas(&admin).await;
                sqlx::query(&format!("CREATE SCHEMA {schema}"))
                    .execute(admin.pool())
                    .await
                    .expect("create schema");
                admin.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                    schema: Some(schema),
                    _dir: dir,
                }
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::open(&self.url).await.expect("open store")
    }
}

fn unix_secs() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Drops test schemas more than an hour old, left by runs that were killed.
async fn sweep_stale_schemas(admin: &Store) {
    let names: Vec<String> =
        sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE 'sbt_%'")
            .fetch_all(admin.pool())
            .await
            .unwrap_or_default();
    let cutoff = unix_secs().saturating_sub(3600);
    for name in names {
        let born = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        if born < cutoff {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(admin.pool())
                .await;
        }
    }
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(schema) = self.schema.take() else {
            return;
        };
        // Drop runs outside async context; a short-lived runtime on its own thread cleans up.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let store = Store::connect(&postgres_base()).await.ok()?;
                // Never hang a test run on cleanup: a schema whose drop would wait is left to
                // the sweep of stale schemas in `TestDb::new`.
                let mut tx = store.pool().begin().await.ok()?;
                let _ = sqlx::query("SET LOCAL lock_timeout = '3s'")
                    .execute(&mut *tx)
                    .await;
                let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .execute(&mut *tx)
                    .await;
                let _ = tx.commit().await;
                store.close().await;
                Some(())
            })
        })
        .join();
    }
}

/// Generates one `#[tokio::test]` per database for an `async fn(Db)`.
#[macro_export]
macro_rules! on_both_databases {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::common::Db::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::common::Db::Postgres).await
                }
            }
        )*
    };
}

/// A minimal blocking HTTP/1.1 client for tests that talk to a running server: enough for JSON
/// requests, and no extra dependency. Returns the status and the JSON body (`Null` if none).
pub fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP API");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// A server on the given store, its HTTP API on a free loopback port; `sip` is the `[sip]`
/// section's body (listen addresses and the like) and `extra` any further TOML.
pub async fn start_server(
    db: &TestDb,
    sip: &str,
    extra: &str,
) -> (switchboard::Server, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let toml = format!(
        "data_dir = {:?}\ndatabase_url = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[sip]\n{sip}\n{extra}",
        data.path().display().to_string(),
        db.url
    );
    let config = switchboard::config::Config::from_toml(&toml).expect("test config");
    let server = switchboard::Server::start(config)
        .await
        .expect("server starts");
    (server, data)
}

/// The address a transport of `server` is bound to.
pub fn sip_addr(
    server: &switchboard::Server,
    t: switchboard::config::Transport,
) -> std::net::SocketAddr {
    server
        .sip_addrs()
        .iter()
        .find(|l| l.transport == t)
        .expect("transport bound")
        .addr
}

/// A port free for both TCP and UDP, for a peer a test starts (a SIPp phone's `-p`).
pub fn free_tcp_port() -> u16 {
    peer_ports(1)
}

/// A loopback UDP port free right now (and for TCP too), for a peer a test starts.
pub fn free_udp_port() -> u16 {
    peer_ports(1)
}

/// A port for a baresip phone's `sip_listen`: baresip binds UDP and TCP on it and TLS on the
/// next one, so all of those must be free.
pub fn free_baresip_port() -> u16 {
    peer_ports(2)
}

/// The first of `width` consecutive ports free for both UDP and TCP on loopback, never handed
/// out before in this process.
///
/// They come from just below the kernel's ephemeral range (`ip_local_port_range`, 32768 and
/// up on Linux), above the relay's default RTP range (20000-30000). Every server the tests
/// start listens on port 0, and so takes a port from the ephemeral range: a port found free
/// there could be taken by a test running beside this one before the peer bound it, and
/// SIPp then failed with "Address already in use". Nothing takes ports below that range
/// unless asked for them by number.
fn peer_ports(width: u16) -> u16 {
    const LOW: u16 = 30000;
    static STATE: std::sync::Mutex<(u16, Vec<u16>)> = std::sync::Mutex::new((0, Vec::new()));
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let free = |p: u16| {
        std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
    };
    if high < LOW + 100 {
        // An unusual range: fall back to what the kernel hands out.
        return std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap();
    }
    let span = high - LOW - width;
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    if state.0 == 0 {
        // Each test binary starts elsewhere, away from what the last one may still hold.
        state.0 = (std::process::id() % u32::from(span)) as u16;
    }
    for _ in 0..span {
        let p = LOW + state.0;
        state.0 = (state.0 + width) % span;
        let ports = p..p + width;
        if ports.clone().any(|q| state.1.contains(&q)) || !ports.clone().all(free) {
            continue;
        }
        state.1.extend(ports);
        return p;
    }
    panic!("no free port left in {LOW}..{high}");
}

/// Adds user `ext` with one phone `username`/`password` (realm `test.example`); returns the
/// user id.
pub async fn user_with_phone(
    server: &switchboard::Server,
    ext: &str,
    username: &str,
    password: &str,
) -> i64 {
    add_user_with_phone(server.store(), ext, username, password, "test.example")
        .await
        .0
}

/// Adds user `ext` with one phone `username`/`password` in `realm` straight into `store`;
/// returns the user's and the phone's ids.
pub async fn add_user_with_phone(
    store: &Store,
    ext: &str,
    username: &str,
    password: &str,
    realm: &str,
) -> (i64, i64) {
    let user = store
        .create_user(&switchboard::directory::NewUser {
            extension: ext.into(),
            display_name: format!("User {ext}"),
            email: format!("u{ext}@example.com"),
            fax_number: None,
            external_numbers: vec![],
        })
        .await
        .unwrap();
    let (phone, _) = store
        .create_phone(
            user.id,
            &switchboard::directory::NewPhone {
                sip_username: username.into(),
                name: "Desk".into(),
                password: Some(password.into()),
            },
            realm,
        )
        .await
        .unwrap();
    (user.id, phone.id)
}

/// The one history entry of `user`, waiting a little for the record to be written.
pub async fn only_entry(
    server: &switchboard::Server,
    user: i64,
) -> switchboard::store::HistoryEntry {
    for _ in 0..50 {
        let page = server
            .store()
            .call_history(user, &switchboard::store::HistoryQuery::default())
            .await
            .unwrap();
        if let Some(e) = page.entries.first() {
            assert_eq!(page.entries.len(), 1, "{:?}", page.entries);
            return e.clone();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("no call record for user {user}");
}

/// (source, our port, packets) of every stream in the kernel's set; `None` without the table.
pub fn in_kernel() -> Option<Vec<(String, u16, u64)>> {
    let out = std::process::Command::new("nft")
        .args([
            "-j",
            "list",
            "set",
            "ip",
            switchboard::media::netfilter::TABLE,
            "latched",
        ])
        .output()
        .unwrap();
    if !out.status.success() {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut found = Vec::new();
    for o in doc["nftables"].as_array().unwrap() {
        for e in o["set"]["elem"].as_array().into_iter().flatten() {
            let key = e["elem"]["val"]["concat"].as_array().unwrap();
            found.push((
                format!("{}:{}", key[0].as_str().unwrap(), key[1]),
                key[2].as_u64().unwrap() as u16,
                e["elem"]["counter"]["packets"].as_u64().unwrap(),
            ));
        }
    }
    Some(found)
}

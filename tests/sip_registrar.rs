//! The registrar against a SIP implementation nobody here wrote: SIPp (Debian `sip-tester`)
//! registers, refreshes, unregisters, fails, gets banned, over UDP and TCP, and what it did is
//! checked through the HTTP API and the store.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{free_udp_port, sip_addr, Db, TestDb};
use switchboard::config::Transport;
use switchboard::Server;

fn sipp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp")
}

/// A server on loopback with free ports, on the given store. SIPp 3.6 reads only the first
/// challenge and knows only MD5.
async fn server(db: &TestDb, extra: &str) -> (Server, tempfile::TempDir) {
    common::start_server(
        db,
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\nrealm = \"test.example\"\n\
         digest_algorithms = [\"MD5\", \"SHA-256\"]",
        extra,
    )
    .await
}

async fn phone(server: &Server, ext: &str, username: &str, password: &str) -> i64 {
    common::user_with_phone(server, ext, username, password).await
}

struct SippRun {
    ok: bool,
    messages: String,
    stderr: String,
}

/// Runs one SIPp call of `scenario` against `to`, from a fresh local port.
async fn sipp(
    scenario: &str,
    to: SocketAddr,
    transport: Transport,
    user: &str,
    password: &str,
    expires: u32,
) -> SippRun {
    sipp_from(
        free_udp_port(),
        scenario,
        to,
        transport,
        user,
        password,
        expires,
    )
    .await
}

/// Runs one SIPp call of `scenario` against `to` from local port `port` (the phone's Contact).
async fn sipp_from(
    port: u16,
    scenario: &str,
    to: SocketAddr,
    transport: Transport,
    user: &str,
    password: &str,
    expires: u32,
) -> SippRun {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("messages.log");
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir.path())
        .arg("-sf")
        .arg(sipp_dir().join(scenario))
        .args(["-m", "1", "-i", "127.0.0.1", "-nostdin"])
        .args(["-p", &port.to_string()])
        .args(["-s", user, "-au", user, "-ap", password])
        .args(if scenario.starts_with("register") {
            vec!["-set".to_owned(), "expires".to_owned(), expires.to_string()]
        } else {
            vec![]
        })
        .args(["-timeout", "8s", "-timeout_error", "-recv_timeout", "4s"])
        .arg("-trace_msg")
        .arg("-message_file")
        .arg(&log)
        .arg("-t")
        .arg(if transport == Transport::Tcp {
            "t1"
        } else {
            "u1"
        })
        .arg(to.to_string());
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("sipp is installed (Debian package sip-tester)");
    SippRun {
        ok: out.status.success(),
        messages: std::fs::read_to_string(&log).unwrap_or_default(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The usual phone of these tests registering with the right password.
async fn register_alice(to: SocketAddr, transport: Transport, expires: u32) -> SippRun {
    sipp(
        "register.xml",
        to,
        transport,
        "alice",
        "alice-secret",
        expires,
    )
    .await
}

/// Every SIP message SIPp received, as text, oldest first.
fn all_received(messages: &str) -> Vec<String> {
    messages
        .split("message received")
        .skip(1)
        .map(|block| {
            block
                .lines()
                .skip(1)
                .skip_while(|l| l.trim().is_empty())
                .take_while(|l| !l.starts_with("----"))
                .collect::<Vec<_>>()
                .join("\n")
                .trim()
                .to_owned()
        })
        .collect()
}

/// The last SIP message SIPp received, as text.
fn last_received(messages: &str) -> String {
    all_received(messages).pop().unwrap_or_default()
}

async fn bindings(server: &Server, aor: &str) -> usize {
    let store = server.store();
    let rows: Vec<String> = sqlx::query_scalar("SELECT contact FROM registrations WHERE aor = $1")
        .bind(aor)
        .fetch_all(store.pool())
        .await
        .unwrap();
    rows.len()
}

async fn register_and_unregister(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(&tdb, "").await;
    let uid = phone(&server, "100", "alice", "alice-secret").await;
    let udp = sip_addr(&server, Transport::Udp);

    let port = free_udp_port();
    let run = sipp_from(
        port,
        "register.xml",
        udp,
        Transport::Udp,
        "alice",
        "alice-secret",
        300,
    )
    .await;
    assert!(run.ok, "register failed:\n{}\n{}", run.stderr, run.messages);
    let ok = last_received(&run.messages);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        ok.contains("expires="),
        "200 lists the contact with its expiry: {ok}"
    );
    assert_eq!(bindings(&server, "alice").await, 1);

    // The phone shows as registered, with where it really came from.
    let views = server.registrar().bindings_for("alice");
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].user_id, uid);
    assert_eq!(views[0].source.addr.ip().to_string(), "127.0.0.1");
    assert_eq!(views[0].user_agent.as_deref(), Some("SIPp"));

    // Refresh from the same phone (same Contact): still one binding.
    let run = sipp_from(
        port,
        "register.xml",
        udp,
        Transport::Udp,
        "alice",
        "alice-secret",
        600,
    )
    .await;
    assert!(run.ok, "refresh failed:\n{}", run.messages);
    assert_eq!(bindings(&server, "alice").await, 1);
    let b = server.registrar().bindings_for("alice");
    assert_eq!(b.len(), 1);
    assert!(
        b[0].remaining_secs(switchboard::store::now_ms() as u64) > 300,
        "refresh kept the old expiry"
    );

    // Unregister: Expires 0.
    let run = sipp_from(
        port,
        "register.xml",
        udp,
        Transport::Udp,
        "alice",
        "alice-secret",
        0,
    )
    .await;
    assert!(run.ok, "unregister failed:\n{}", run.messages);
    assert_eq!(bindings(&server, "alice").await, 0);
    assert!(server.registrar().bindings_for("alice").is_empty());
    server.shutdown().await;
}

/// A phone behind NAT (its Contact a private address, not where its REGISTER comes from) asks
/// for an hour over UDP and gets a minute (`registrar.nat_max_expires`): its re-registrations
/// keep the NAT's mapping open, so calls to it keep arriving. Requests to it go to the source.
async fn phone_behind_nat_registers_briefly(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(&tdb, "").await;
    phone(&server, "100", "alice", "alice-secret").await;
    let udp = sip_addr(&server, Transport::Udp);
    let port = free_udp_port();
    let run = sipp_from(
        port,
        "register_behind_nat.xml",
        udp,
        Transport::Udp,
        "alice",
        "alice-secret",
        3600,
    )
    .await;
    assert!(run.ok, "register failed:\n{}\n{}", run.stderr, run.messages);
    let ok = last_received(&run.messages);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(
        ok.contains("10.0.0.99:5062;transport=UDP>;expires=60"),
        "{ok}"
    );
    let b = server.registrar().bindings_for("alice");
    assert_eq!(b.len(), 1);
    assert!(b[0].remaining_secs(switchboard::store::now_ms() as u64) <= 60);
    assert_eq!(b[0].source.addr.port(), port);
    server.shutdown().await;
}

async fn register_over_tcp(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(&tdb, "").await;
    phone(&server, "100", "alice", "alice-secret").await;
    let tcp = sip_addr(&server, Transport::Tcp);
    let run = register_alice(tcp, Transport::Tcp, 300).await;
    assert!(
        run.ok,
        "register over TCP failed:\n{}\n{}",
        run.stderr, run.messages
    );
    let b = server.registrar().bindings_for("alice");
    assert_eq!(b.len(), 1);
    assert_eq!(
        b[0].source.transport,
        switchboard::registrar::Transport::Tcp
    );
    server.shutdown().await;
}

/// The value of `name=` in a header line starting with `header`, quotes removed.
fn param_of(msg: &str, header: &str, name: &str) -> Option<String> {
    let line = msg.lines().find(|l| l.starts_with(header))?;
    let at = line.find(&format!("{name}="))? + name.len() + 1;
    let rest = line[at..].trim_start_matches('"');
    Some(rest.split(['"', ';', ',', ' ']).next()?.to_owned())
}

/// A retransmitted first REGISTER is challenged afresh, as a stateless UAS answers (RFC 3261
/// §8.2.7: the server keeps no transaction for an unauthenticated request): a new nonce, the
/// same To tag. The phone then registers on the second challenge.
async fn retransmitted_first_register_is_challenged_afresh(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(&tdb, "").await;
    phone(&server, "100", "alice", "alice-secret").await;
    let udp = sip_addr(&server, Transport::Udp);
    let run = sipp(
        "register_retransmitted.xml",
        udp,
        Transport::Udp,
        "alice",
        "alice-secret",
        300,
    )
    .await;
    assert!(run.ok, "{}\n{}", run.stderr, run.messages);
    let challenges: Vec<String> = all_received(&run.messages)
        .into_iter()
        .filter(|m| m.starts_with("SIP/2.0 401"))
        .collect();
    assert_eq!(challenges.len(), 2, "{}", run.messages);
    let tag = |m: &str| param_of(m, "To:", "tag");
    let nonce = |m: &str| param_of(m, "WWW-Authenticate:", "nonce");
    assert!(tag(&challenges[0]).is_some(), "{}", challenges[0]);
    assert_eq!(tag(&challenges[0]), tag(&challenges[1]));
    assert!(nonce(&challenges[0]).is_some(), "{}", challenges[0]);
    assert_ne!(
        nonce(&challenges[0]),
        nonce(&challenges[1]),
        "the retransmission got the first 401 again: the challenge was kept as transaction state"
    );
    assert_eq!(bindings(&server, "alice").await, 1);
    server.shutdown().await;
}

/// Masks the values that differ by design between two challenges (tags, nonces, Call-ID, Via
/// branch), leaving everything an attacker could compare.
fn masked(msg: &str) -> String {
    let mut out = Vec::new();
    for line in msg.lines() {
        let mut l = line.to_owned();
        for key in ["tag=", "nonce=\"", "branch=", "rport="] {
            while let Some(i) = l.find(key) {
                let start = i + key.len();
                let end = l[start..]
                    .find(['"', ';', ',', ' '])
                    .map(|e| start + e)
                    .unwrap_or(l.len());
                l.replace_range(i..end, &format!("{}***", key.to_uppercase()));
            }
        }
        // The SIPp side's port differs between runs.
        while let Some(i) = l.find("127.0.0.1:") {
            let start = i + "127.0.0.1:".len();
            let end = l[start..]
                .find(|c: char| !c.is_ascii_digit())
                .map(|e| start + e)
                .unwrap_or(l.len());
            l.replace_range(i..end, "LOCALHOST:PORT");
        }
        if l.to_ascii_lowercase().starts_with("call-id:")
            || l.to_ascii_lowercase().starts_with("from:")
            || l.to_ascii_lowercase().starts_with("to:")
        {
            l = l.split(':').next().unwrap_or("").to_owned();
        }
        out.push(l);
    }
    out.join("\n")
}

async fn wrong_password_and_unknown_user_look_the_same(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(&tdb, "").await;
    phone(&server, "100", "alice", "alice-secret").await;
    let udp = sip_addr(&server, Transport::Udp);

    let wrong = sipp(
        "register_rejected.xml",
        udp,
        Transport::Udp,
        "alice",
        "not-it",
        300,
    )
    .await;
    assert!(
        wrong.ok,
        "wrong password was not refused:\n{}",
        wrong.messages
    );
    let unknown = sipp(
        "register_rejected.xml",
        udp,
        Transport::Udp,
        "mallory",
        "whatever",
        300,
    )
    .await;
    assert!(
        unknown.ok,
        "unknown user was not refused:\n{}",
        unknown.messages
    );
    let a = last_received(&wrong.messages);
    let b = last_received(&unknown.messages);
    assert!(a.starts_with("SIP/2.0 401"), "{a}");
    assert_eq!(masked(&a), masked(&b), "responses differ:\n{a}\n---\n{b}");
    assert_eq!(bindings(&server, "alice").await, 0);
    server.shutdown().await;
}

async fn bindings_expire_on_time(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) =
        server(&tdb, "[registrar]\nmin_expires = 1\ndefault_expires = 60\n").await;
    phone(&server, "100", "alice", "alice-secret").await;
    let udp = sip_addr(&server, Transport::Udp);
    let run = register_alice(udp, Transport::Udp, 2).await;
    assert!(run.ok, "{}", run.messages);
    assert_eq!(server.registrar().bindings_for("alice").len(), 1);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(server.registrar().bindings_for("alice").is_empty());
    assert_eq!(
        bindings(&server, "alice").await,
        0,
        "expired binding left in the store"
    );
    server.shutdown().await;
}

async fn too_short_expiry_gets_423(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(&tdb, "").await;
    phone(&server, "100", "alice", "alice-secret").await;
    let udp = sip_addr(&server, Transport::Udp);
    let run = register_alice(udp, Transport::Udp, 10).await;
    assert!(
        !run.ok,
        "a 10 s registration was accepted with min_expires 60"
    );
    let last = last_received(&run.messages);
    assert!(last.starts_with("SIP/2.0 423"), "{last}");
    assert!(last.contains("Min-Expires: 60"), "{last}");
    server.shutdown().await;
}

async fn brute_force_ends_banned(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(
        &tdb,
        "[security]\nban_failures = 3\nban_window_secs = 60\nban_secs = 600\n",
    )
    .await;
    phone(&server, "100", "alice", "alice-secret").await;
    let udp = sip_addr(&server, Transport::Udp);

    // A good phone's ordinary 401-then-retry never counts.
    for _ in 0..4 {
        let run = register_alice(udp, Transport::Udp, 300).await;
        assert!(run.ok, "{}", run.messages);
    }
    assert!(server.registrar().bans().is_empty());

    for i in 0..3 {
        let run = sipp(
            "register_rejected.xml",
            udp,
            Transport::Udp,
            "alice",
            "guess",
            300,
        )
        .await;
        assert!(
            run.ok,
            "attempt {i} was not answered with 401:\n{}",
            run.messages
        );
    }
    let bans = server.registrar().bans();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].ip.to_string(), "127.0.0.1");

    // The ban is logged in the API for an admin, and not for a user.
    let admin = server
        .store()
        .create_token(switchboard::directory::Scope::Admin, None, "t")
        .await
        .unwrap();
    let http = server.http_addr();
    let (status, list) =
        tokio::task::spawn_blocking(move || common::http(http, "GET", "/api/v1/bans", &admin, ""))
            .await
            .unwrap();
    assert_eq!(status, 200);
    assert_eq!(list[0]["ip"], "127.0.0.1", "{list}");
    assert_eq!(list[0]["failures"], 3, "{list}");
    // Banned: even the right password gets no answer now.
    let run = register_alice(udp, Transport::Udp, 300).await;
    assert!(!run.ok, "a banned address was answered");
    let stored = server
        .store()
        .active_bans(switchboard::store::now_ms())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);

    // Lifting the ban lets the phone in again.
    assert!(server
        .registrar()
        .unban("127.0.0.1".parse().unwrap())
        .await
        .unwrap());
    let run = register_alice(udp, Transport::Udp, 300).await;
    assert!(run.ok, "{}", run.messages);
    server.shutdown().await;
}

async fn bindings_survive_a_restart(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server1, data) = server(&tdb, "").await;
    phone(&server1, "100", "alice", "alice-secret").await;
    let udp = sip_addr(&server1, Transport::Udp);
    let run = register_alice(udp, Transport::Udp, 300).await;
    assert!(run.ok, "{}", run.messages);
    server1.shutdown().await;

    let (server2, _data2) = server(&tdb, "").await;
    let b = server2.registrar().bindings_for("alice");
    assert_eq!(b.len(), 1, "binding lost across a restart");
    assert_eq!(b[0].user_agent.as_deref(), Some("SIPp"));
    drop(data);
    server2.shutdown().await;
}

async fn options_is_answered(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = server(&tdb, "").await;
    let udp = sip_addr(&server, Transport::Udp);
    let run = sipp("options.xml", udp, Transport::Udp, "x", "x", 0).await;
    assert!(run.ok, "{}\n{}", run.stderr, run.messages);
    server.shutdown().await;
}

on_both_databases!(
    register_and_unregister,
    register_over_tcp,
    phone_behind_nat_registers_briefly,
    retransmitted_first_register_is_challenged_afresh,
    wrong_password_and_unknown_user_look_the_same,
    bindings_expire_on_time,
    too_short_expiry_gets_423,
    brute_force_ends_banned,
    bindings_survive_a_restart,
    options_is_answered,
);

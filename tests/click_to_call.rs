//! Click-to-call through the API against SIPp phones (Debian package `sip-tester`): the user's
//! phones ring first ("Call to <target>"), the one that answers is joined to the target once it
//! answers, the other phone gets CANCEL; the API shows the state, the SSE stream shows
//! `ringing`, `answered`, `ended` in that order, and the history has the call. Variants: the
//! user's phone does not answer, the target is busy (the user hears a busy tone, then BYE), the
//! target is a number outside through a SIPp trunk, and the requests the API refuses.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use common::sipp::{must_pass, received, register, spawn_sipp, spawn_sipp_from, SippRun};
use common::{Db, TestDb};
use serde_json::{json, Value};
use switchboard::config::Transport;
use switchboard::directory::Scope;
use switchboard::store::{CallDirection, HistoryQuery, PartyOutcome};
use switchboard::Server;

struct Setup {
    server: Server,
    _data: tempfile::TempDir,
    alice: i64,
    bob: i64,
    token: String,
}

/// Users 100 (phones `alice`, `alice2`) and 200 (phone `bob`); `extra` is more TOML.
async fn setup(db: &TestDb, extra: &str) -> Setup {
    let (server, data) = common::start_server(
        db,
        "listen = [\"udp:127.0.0.1:0\"]\nrealm = \"test.example\"\n\
         digest_algorithms = [\"MD5\", \"SHA-256\"]",
        extra,
    )
    .await;
    let alice = common::user_with_phone(&server, "100", "alice", "alice-secret").await;
    let bob = common::user_with_phone(&server, "200", "bob", "bob-secret").await;
    server
        .store()
        .create_phone(
            alice,
            &switchboard::directory::NewPhone {
                sip_username: "alice2".into(),
                name: "Softphone".into(),
                password: Some("alice2-secret".into()),
            },
            "test.example",
        )
        .await
        .unwrap();
    let token = server
        .store()
        .create_token(Scope::User, Some(alice), "groupware")
        .await
        .unwrap();
    Setup {
        server,
        _data: data,
        alice,
        bob,
        token,
    }
}

impl Setup {
    async fn http(&self, method: &str, path: &str, body: Value) -> (u16, Value) {
        let (addr, token, path, method) = (
            self.server.http_addr(),
            self.token.clone(),
            path.to_owned(),
            method.to_owned(),
        );
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        tokio::task::spawn_blocking(move || common::http(addr, &method, &path, &token, &body))
            .await
            .unwrap()
    }

    /// Phone `user` registers from a fresh port and runs `scenario` there.
    async fn phone(&self, user: &str, scenario: &str) -> tokio::task::JoinHandle<SippRun> {
        let to = common::sip_addr(&self.server, Transport::Udp);
        let port = common::free_udp_port();
        register(&self.server, user, &format!("{user}-secret"), port).await;
        spawn_sipp(scenario, to, port, &[])
    }

    /// Polls the click-to-call until `done` holds (15 s at most).
    async fn wait_state(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let (status, v) = self
                .http("GET", &format!("/api/v1/me/calls/{id}"), Value::Null)
                .await;
            assert_eq!(status, 200, "{v}");
            if done(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "click-to-call stuck at {v}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reads `GET /api/v1/me/events` until an `ended` event (or 30 s); returns (event, data).
fn sse(addr: std::net::SocketAddr, token: String) -> std::thread::JoinHandle<Vec<(String, Value)>> {
    sse_from(addr, "/api/v1/me/events", token, None)
}

/// Reads an event stream at `path` (resuming after `last` when given) until an `ended` event.
fn sse_from(
    addr: std::net::SocketAddr,
    path: &str,
    token: String,
    last: Option<u64>,
) -> std::thread::JoinHandle<Vec<(String, Value)>> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let resume = last.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {token}\r\n\
         Accept: text/event-stream\r\n{resume}\r\n"
    )
    .unwrap();
    std::thread::spawn(move || {
        let mut events = Vec::new();
        let mut kind = String::new();
        for line in BufReader::new(s).lines() {
            let Ok(line) = line else { break };
            if let Some(k) = line.strip_prefix("event: ") {
                kind = k.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d.trim()).unwrap_or(Value::Null);
                let done = kind == "ended";
                events.push((kind.clone(), v));
                if done {
                    break;
                }
            }
        }
        events
    })
}

fn relayed(server: &Server) -> u64 {
    server
        .relay()
        .counters()
        .packets
        .load(std::sync::atomic::Ordering::Relaxed)
}

async fn history(server: &Server, user: i64) -> Vec<switchboard::store::HistoryEntry> {
    for _ in 0..50 {
        let page = server
            .store()
            .call_history(user, &HistoryQuery::default())
            .await
            .unwrap();
        if !page.entries.is_empty() {
            return page.entries;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Vec::new()
}

async fn answered_and_bridged(db: Db) {
    let tdb = TestDb::new(db).await;
    let s = setup(&tdb, "").await;
    // Alice's desk phone talks (RTP from a pcap) once it has answered.
    let desk = s.phone("alice", "call_uas_rtp.xml").await;
    let soft = s.phone("alice2", "call_uas_ringing.xml").await;
    let bob = s.phone("bob", "call_uas.xml").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stream = sse(s.server.http_addr(), s.token.clone());
    let admin = s.server.initial_admin_token().unwrap().to_owned();
    let everyone = sse_from(s.server.http_addr(), "/api/v1/events", admin.clone(), None);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let (status, call) = s
        .http("POST", "/api/v1/me/calls", json!({"to": "200"}))
        .await;
    assert_eq!(status, 202, "{call}");
    assert_eq!(call["state"], "calling_you");
    let id = call["id"].as_str().unwrap().to_owned();
    let connected = s.wait_state(&id, |v| v["state"] == "connected").await;
    assert!(connected["answered_at"].as_i64().is_some(), "{connected}");
    // The bridge carries alice's RTP to bob (50 packets a second).
    let before = relayed(&s.server);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let carried = relayed(&s.server) - before;
    assert!(carried >= 30, "only {carried} packets relayed in a second");
    let (status, _) = s
        .http("DELETE", &format!("/api/v1/me/calls/{id}"), Value::Null)
        .await;
    assert_eq!(status, 204);

    let desk = must_pass("alice's desk phone", desk).await;
    let soft = must_pass("alice's softphone", soft).await;
    let bob = must_pass("bob's phone", bob).await;
    // Alice's phones were told whom they are about to call; the one that lost got CANCEL.
    let invite = received(&desk, "INVITE sip:");
    assert!(
        invite.contains("From: \"Call to 200\" <sip:100@test.example>;tag="),
        "{invite}"
    );
    let cancel = received(&soft, "CANCEL sip:");
    assert!(
        cancel.contains("Reason: SIP;cause=200;text=\"Call completed elsewhere\""),
        "{cancel}"
    );
    // Bob sees alice calling him.
    let invite = received(&bob, "INVITE sip:");
    assert!(
        invite.contains("From: \"User 100\" <sip:100@test.example>;tag="),
        "{invite}"
    );
    // Both were pointed at our relay (one session, two sides).
    assert!(invite.contains("m=audio 2"), "{invite}");
    received(&desk, "BYE sip:");
    received(&bob, "BYE sip:");

    let ended = s.wait_state(&id, |v| v["state"] == "ended").await;
    assert_eq!(ended["outcome"], "answered", "{ended}");

    let events = stream.join().unwrap();
    let mine: Vec<(&str, &Value)> = events
        .iter()
        .filter(|(_, v)| v["call_id"] == id.as_str())
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let kinds: Vec<&str> = mine.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["ringing", "answered", "ended"], "{events:?}");
    for (_, v) in &mine {
        assert_eq!(v["direction"], "outgoing");
        assert_eq!(v["other_number"], "200");
        assert_eq!(v["click_to_call"], true);
        assert_eq!(v["user_id"], s.alice);
    }
    assert_eq!(mine[2].1["outcome"], "answered");
    // Reconnecting after the first event gets the other two again, from the replay buffer.
    let first = mine[0].1["id"].as_u64().unwrap();
    let again = sse_from(
        s.server.http_addr(),
        "/api/v1/me/events",
        s.token.clone(),
        Some(first),
    )
    .join()
    .unwrap();
    let kinds: Vec<&str> = again
        .iter()
        .filter(|(_, v)| v["call_id"] == id.as_str())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(kinds, ["answered", "ended"], "{again:?}");
    // Resuming after an id this server does not keep (one from before a restart, say): a
    // `reset` first, then all it has.
    let stale = sse_from(
        s.server.http_addr(),
        "/api/v1/me/events",
        s.token.clone(),
        Some(1),
    )
    .join()
    .unwrap();
    assert_eq!(
        stale.first().map(|(k, _)| k.as_str()),
        Some("reset"),
        "{stale:?}"
    );
    let kinds: Vec<&str> = stale
        .iter()
        .filter(|(_, v)| v["call_id"] == id.as_str())
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(kinds, ["ringing", "answered", "ended"], "{stale:?}");
    // The admin stream sees every user: alice's outgoing call and bob's incoming one.
    let all = everyone.join().unwrap();
    let seen = |user: i64, kind: &str, dir: &str| {
        all.iter()
            .any(|(k, v)| k == kind && v["user_id"] == user && v["direction"] == dir)
    };
    assert!(seen(s.alice, "ringing", "outgoing"), "{all:?}");
    assert!(seen(s.bob, "ringing", "incoming"), "{all:?}");
    assert!(seen(s.bob, "answered", "incoming"), "{all:?}");
    // A user token cannot follow everyone.
    let (status, _) = s.http("GET", "/api/v1/events", Value::Null).await;
    assert_eq!(status, 403);

    // One history entry each: an outgoing click-to-call for alice, an incoming call for bob.
    let a = history(&s.server, s.alice).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].direction, CallDirection::Outgoing);
    assert_eq!(a[0].other_number, "200");
    assert_eq!(a[0].outcome, PartyOutcome::Answered);
    assert!(a[0].click_to_call);
    let b = history(&s.server, s.bob).await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].direction, CallDirection::Incoming);
    assert_eq!(b[0].other_number, "100");

    // Redial from that entry: the same target, and it can be hung up while it rings.
    let (status, again) = s
        .http("POST", "/api/v1/me/calls", json!({"history_id": a[0].id}))
        .await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["to"], "200");
    let again = again["id"].as_str().unwrap().to_owned();
    let (status, _) = s
        .http("DELETE", &format!("/api/v1/me/calls/{again}"), Value::Null)
        .await;
    assert_eq!(status, 204);
    let v = s.wait_state(&again, |v| v["state"] == "ended").await;
    assert_eq!(v["outcome"], "cancelled", "{v}");
    s.server.shutdown().await;
}

/// Alice's phone rings and nobody answers: the call ends with that reason, the target never
/// rings. And the requests the API refuses.
async fn my_phone_does_not_answer(db: Db) {
    let tdb = TestDb::new(db).await;
    let s = setup(&tdb, "[calls]\nno_answer_secs = 2\n").await;
    // Nothing registered yet: 409.
    let (status, v) = s
        .http("POST", "/api/v1/me/calls", json!({"to": "200"}))
        .await;
    assert_eq!(status, 409, "{v}");
    let desk = s.phone("alice", "call_uas_ringing.xml").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (body, field) in [
        (json!({"to": "abc"}), "to"),
        (json!({"to": "299"}), "to"),
        (json!({"to": "200", "history_id": 1}), "to"),
        (json!({}), "to"),
        (json!({"history_id": 424242}), "history_id"),
    ] {
        let (status, v) = s.http("POST", "/api/v1/me/calls", body.clone()).await;
        assert_eq!(status, 422, "{body}: {v}");
        assert_eq!(v["field"], field, "{body}: {v}");
    }
    let (status, v) = s.http("GET", "/api/v1/me/calls/nope", Value::Null).await;
    assert_eq!(status, 404, "{v}");

    let (status, call) = s
        .http("POST", "/api/v1/me/calls", json!({"to": "200"}))
        .await;
    assert_eq!(status, 202, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    must_pass("alice's phone", desk).await;
    let v = s.wait_state(&id, |v| v["state"] == "ended").await;
    assert_eq!(v["outcome"], "no_answer", "{v}");
    assert_eq!(v["reason"], "your phone did not answer", "{v}");
    let a = history(&s.server, s.alice).await;
    assert_eq!(a.len(), 1);
    assert!(a[0].click_to_call);
    assert_eq!(a[0].outcome, PartyOutcome::NoAnswer);
    assert!(history(&s.server, s.bob).await.is_empty(), "bob never rang");
    s.server.shutdown().await;
}

/// Bob is busy: alice, who answered, hears the busy tone for a few seconds, then our BYE.
async fn target_busy(db: Db) {
    let tdb = TestDb::new(db).await;
    let s = setup(&tdb, "").await;
    let desk = s.phone("alice", "call_uas_rtp.xml").await;
    let bob = s.phone("bob", "call_uas_busy.xml").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call) = s
        .http("POST", "/api/v1/me/calls", json!({"to": "200"}))
        .await;
    assert_eq!(status, 202, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    must_pass("bob's phone", bob).await;
    let busy_at = Instant::now();
    must_pass("alice's phone", desk).await;
    assert!(
        busy_at.elapsed() >= Duration::from_secs(3),
        "the busy tone plays before the BYE ({:?})",
        busy_at.elapsed()
    );
    let v = s.wait_state(&id, |v| v["state"] == "ended").await;
    assert_eq!(v["outcome"], "busy", "{v}");
    assert_eq!(v["reason"], "the target is busy", "{v}");
    let a = history(&s.server, s.alice).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].outcome, PartyOutcome::Busy);
    assert!(a[0].click_to_call);
    s.server.shutdown().await;
}

/// The target is a number outside: it goes out through the trunk (SIPp as the ITSP, which
/// challenges the INVITE and answers).
async fn target_through_a_trunk(db: Db) {
    let tdb = TestDb::new(db).await;
    let port = common::free_udp_port();
    let itsp = spawn_sipp_from(
        "127.0.0.2",
        "trunk_uas.xml",
        None,
        port,
        &[
            "-set",
            "user",
            "acct",
            "-set",
            "pass",
            "acct-secret",
            "-set",
            "num",
            "0301234567",
        ],
    );
    let trunk = format!(
        "[[trunks]]\nname = \"default\"\nhost = \"itsp.test\"\n\
         outbound_proxy = \"127.0.0.2:{port}\"\nusername = \"acct\"\npassword = \"acct-secret\"\n\
         register = false\nnumber_format = \"national\"\n\
         dids = [ {{ number = \"+4930555100\", extension = \"100\" }} ]\n"
    );
    let s = setup(&tdb, &trunk).await;
    let desk = s.phone("alice", "call_uas_rtp.xml").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call) = s
        .http("POST", "/api/v1/me/calls", json!({"to": "030 1234567"}))
        .await;
    assert_eq!(status, 202, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    s.wait_state(&id, |v| v["state"] == "connected").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = s
        .http("DELETE", &format!("/api/v1/me/calls/{id}"), Value::Null)
        .await;
    assert_eq!(status, 204);
    must_pass("alice's phone", desk).await;
    let itsp = must_pass("the ITSP", itsp).await;
    let invite = received(&itsp, "Proxy-Authorization:");
    assert!(
        invite.contains("From: \"User 100\" <sip:+4930555100@itsp.test>;tag="),
        "{invite}"
    );
    let a = history(&s.server, s.alice).await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0].other_number, "+49301234567");
    assert_eq!(a[0].outcome, PartyOutcome::Answered);
    s.server.shutdown().await;
}

/// The user's phone puts the connected call on hold (re-INVITE, a=sendonly): our side of the
/// relay answers with a=recvonly, and the call goes on until it is hung up.
async fn hold_from_the_users_phone(db: Db) {
    let tdb = TestDb::new(db).await;
    let s = setup(&tdb, "").await;
    let desk = s.phone("alice", "call_uas_hold.xml").await;
    let bob = s.phone("bob", "call_uas.xml").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, call) = s
        .http("POST", "/api/v1/me/calls", json!({"to": "200"}))
        .await;
    assert_eq!(status, 202, "{call}");
    let id = call["id"].as_str().unwrap().to_owned();
    s.wait_state(&id, |v| v["state"] == "connected").await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let v = s.wait_state(&id, |_| true).await;
    assert_eq!(v["state"], "connected", "hold does not end the call: {v}");
    let (status, _) = s
        .http("DELETE", &format!("/api/v1/me/calls/{id}"), Value::Null)
        .await;
    assert_eq!(status, 204);
    let desk = must_pass("alice's phone (holding)", desk).await;
    must_pass("bob's phone", bob).await;
    let ok = received(&desk, "a=recvonly");
    assert!(
        ok.contains("SIP/2.0 200 OK") && ok.contains("CSeq: 1 INVITE"),
        "{ok}"
    );
    s.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold() {
    hold_from_the_users_phone(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridged() {
    answered_and_bridged(Db::Sqlite).await;
    answered_and_bridged(Db::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer() {
    my_phone_does_not_answer(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy() {
    target_busy(Db::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_trunk() {
    target_through_a_trunk(Db::Postgres).await;
}

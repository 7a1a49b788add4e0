//! PJSIP (pjsua2, from the PyPI wheel `pjsua2-python`) registers to Switchboard with an RFC 8760
//! SHA-256 digest, over UDP and TCP, against the default configuration (SHA-256 offered first,
//! then MD5). The Authorization header PJSIP sent is read back from its own log, the binding is
//! checked through the API, and the unregister on exit removes it.
//!
//! PJSIP's STUN client (its start-up Binding request and its UDP transport's classic one) gets
//! answers from the SIP UDP port (RFC 5626 keep-alives).
//!
//! PJSIP also plays an ITSP reached over TLS: a call out through a TLS trunk reaches it over a
//! verified connection, and a trunk that does not trust its certificate reaches nothing.
//!
//! `scripts/test.sh` installs the wheel into a virtualenv under `target/pyenv`;
//! `SWITCHBOARD_TEST_PYTHON` names another interpreter that has `pjsua2`.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Db, TestDb};
use switchboard::config::Transport;
use switchboard::directory::Scope;

fn python() -> String {
    std::env::var("SWITCHBOARD_TEST_PYTHON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyenv/bin/python").to_string()
    })
}

async fn pjsip_registers_with_sha256(db: Db, transport: Transport) {
    let tdb = TestDb::new(db).await;
    // No digest_algorithms: the default, which lists SHA-256 first.
    let (server, _data) = common::start_server(
        &tdb,
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\nrealm = \"test.example\"",
        "",
    )
    .await;
    let user_id = common::user_with_phone(&server, "100", "alice", "alice-secret").await;
    let token = server
        .store()
        .create_token(Scope::Admin, None, "t")
        .await
        .unwrap();
    let sip = common::sip_addr(&server, transport);
    let t = transport.as_str();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pjsua/register.py");
    let mut child = Command::new(python())
        .args([script, "alice", "alice-secret", &sip.to_string(), t])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} (scripts/test.sh installs pjsua2-python into target/pyenv): {e}",
                python()
            )
        });
    let stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Read PJSIP's log until the registration settles.
    let (log, outcome) = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut log = Vec::new();
        let mut outcome = None;
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if line.starts_with("REGISTERED") || line.starts_with("FAILED") {
                outcome = Some(line);
                break;
            }
            log.push(line);
        }
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        (log, outcome)
    })
    .await
    .unwrap();
    let log_text = log.join("\n");
    assert_eq!(
        outcome.as_deref(),
        Some("REGISTERED 200"),
        "pjsua did not register; its log:\n{log_text}"
    );

    // What PJSIP answered the challenge with: a SHA-256 digest (RFC 8760), not MD5.
    let authorization: Vec<&String> = log
        .iter()
        .filter(|l| l.starts_with("Authorization:"))
        .collect();
    assert!(
        !authorization.is_empty(),
        "no Authorization header in pjsua's log:\n{log_text}"
    );
    for a in &authorization {
        assert!(a.contains("algorithm=SHA-256"), "{a}");
        assert!(a.contains("qop=auth"), "{a}");
    }
    assert!(
        log.iter()
            .any(|l| l.starts_with("WWW-Authenticate:") && l.contains("algorithm=SHA-256")),
        "{log_text}"
    );

    // The binding, through the API.
    let http = server.http_addr();
    let path = format!("/api/v1/users/{user_id}/phones");
    let (_, v) = tokio::task::spawn_blocking(move || common::http(http, "GET", &path, &token, ""))
        .await
        .unwrap();
    let phone = &v["items"][0];
    assert_eq!(phone["registered"], true, "{phone}");
    let contact = &phone["contacts"][0];
    assert_eq!(contact["transport"], t, "{phone}");
    assert!(
        contact["user_agent"]
            .as_str()
            .unwrap_or("")
            .starts_with("pjsua2/2."),
        "{phone}"
    );
    assert!(contact["expires_in"].as_u64().unwrap_or(0) > 500, "{phone}");

    // Told to stop, it unregisters (another SHA-256 round) and the binding goes.
    stdin.write_all(b"stop\n").unwrap();
    drop(stdin);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "pjsua exited with {status}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !server.registrar().bindings_for("alice").is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(server.registrar().bindings_for("alice").is_empty());
    server.shutdown().await;
}

/// Where the ITSP listens: not 127.0.0.1, where the phones are (an INVITE from the trunk's
/// address is a call from the trunk).
const ITSP_IP: &str = "127.0.0.2";

/// A self-signed certificate for [`ITSP_IP`] (as an IP address name), written as PEM files into
/// `dir`: (certificate, key).
fn self_signed(dir: &std::path::Path, stem: &str) -> (String, String) {
    let pair = rcgen::generate_simple_self_signed(vec![ITSP_IP.to_string()]).unwrap();
    let cert = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, pair.cert.pem()).unwrap();
    std::fs::write(&key, pair.key_pair.serialize_pem()).unwrap();
    (
        cert.to_str().unwrap().to_owned(),
        key.to_str().unwrap().to_owned(),
    )
}

/// pjsua2 as the ITSP on TLS [`ITSP_IP`]:`port`; returns once it listens, with its log so far being read
/// on (everything it printed, when it has exited).
async fn itsp_over_tls(
    port: u16,
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pjsua/itsp_tls.py");
    let mut child = Command::new(python())
        .args([script, ITSP_IP, &port.to_string(), cert, key])
        .args(client_ca)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()));
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let listening = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            let done = line == "LISTENING";
            seen.push(line);
            if done {
                return (true, rx, seen);
            }
        }
        (false, rx, seen)
    })
    .await
    .unwrap();
    assert!(
        listening.0,
        "pjsua did not listen:\n{}",
        listening.2.join("\n")
    );
    (child, listening.1)
}

/// A server (users 100 `alice`) whose trunk `default` goes to [`ITSP_IP`]:`port` over TLS,
/// trusting the roots in `ca`.
async fn server_with_tls_trunk(
    db: &TestDb,
    port: u16,
    ca: &str,
    no_answer_secs: u32,
    identity: Option<(&str, &str)>,
) -> (switchboard::Server, tempfile::TempDir) {
    let identity = identity
        .map(|(cert, key)| format!("\ntls_cert = {cert:?}\ntls_key = {key:?}"))
        .unwrap_or_default();
    let (server, data) = common::start_server(
        db,
        &format!(
            "listen = [\"udp:127.0.0.1:0\", \"tls:127.0.0.1:0\"]\nrealm = \"test.example\"\n\
             digest_algorithms = [\"MD5\"]{identity}"
        ),
        &format!(
            "[calls]\nno_answer_secs = {no_answer_secs}\n[[trunks]]\nname = \"default\"\n\
             host = \"{ITSP_IP}:{port}\"\ntransport = \"tls\"\ntls_ca = {ca:?}\n\
             register = false\nnumber_format = \"national\"\ncaller_id = \"+4930555100\"\n"
        ),
    )
    .await;
    common::user_with_phone(&server, "100", "alice", "alice-secret").await;
    (server, data)
}

/// Alice dials a national number (the default dialplan sends it to trunk `default`).
fn alice_dials_out(
    server: &switchboard::Server,
    scenario: &str,
    args: &[&str],
) -> tokio::task::JoinHandle<common::sipp::SippRun> {
    let mut all = vec!["-s", "0301234567", "-au", "alice", "-ap", "alice-secret"];
    all.extend_from_slice(args);
    common::sipp::spawn_sipp(
        scenario,
        common::sip_addr(server, Transport::Udp),
        common::free_udp_port(),
        &all,
    )
}

/// Waits for the ITSP to exit (stops it first when `stop`) and returns everything it printed.
async fn itsp_log(
    mut child: std::process::Child,
    rx: std::sync::mpsc::Receiver<String>,
    stop: bool,
) -> String {
    tokio::task::spawn_blocking(move || {
        if stop {
            let _ = child.kill();
        }
        let _ = child.wait();
        rx.iter().collect::<Vec<_>>().join("\n")
    })
    .await
    .unwrap()
}

async fn call_out_through_a_tls_trunk(db: Db) {
    let tdb = TestDb::new(db).await;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path(), "itsp");
    let port = common::free_tcp_port();
    let (itsp, log) = itsp_over_tls(port, &cert, &key, None).await;
    let (server, _data) = server_with_tls_trunk(&tdb, port, &cert, 10, None).await;
    let caller = alice_dials_out(&server, "call_uac.xml", &["-d", "300"]);
    common::sipp::must_pass("alice", caller).await;
    let log = itsp_log(itsp, log, false).await;
    assert!(log.contains("ANSWERED") && log.contains("ENDED"), "{log}");
    // PJSIP names the transport each message came over.
    let invite_at = log
        .find("INVITE sip:0301234567@127.0.0.2")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(log.contains("Via: SIP/2.0/TLS "), "{log}");
    assert!(log.contains("BYE sip:"), "{log}");
    let contact = log[invite_at..]
        .lines()
        .find(|l| l.starts_with("Contact:"))
        .unwrap_or_default();
    assert!(contact.contains("transport=tls"), "{contact}");
    assert_eq!(
        common::only_entry(&server, 1).await.outcome,
        switchboard::store::PartyOutcome::Answered
    );
    server.shutdown().await;
}

/// Alice dials out and gets 503 within seconds (the no-answer time is 30 s), and no INVITE
/// reached the ITSP.
async fn refused_at_once(
    server: switchboard::Server,
    itsp: std::process::Child,
    log: std::sync::mpsc::Receiver<String>,
) {
    let scenarios = tempfile::tempdir().unwrap();
    let caller = alice_dials_out(
        &server,
        &common::sipp::rejected_scenario(&scenarios, 503),
        &[],
    );
    let started = Instant::now();
    common::sipp::must_pass("alice, refused", caller).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let log = itsp_log(itsp, log, true).await;
    assert!(!log.contains("INVITE sip:"), "{log}");
    server.shutdown().await;
}

/// The trunk trusts another certificate than the one the ITSP shows: no connection, no call
/// reaches it, and the caller is told at once (503: the failed connection ends the branch's
/// transaction with a transport error, long before the 30 s no-answer time).
async fn a_tls_trunk_with_an_untrusted_certificate_reaches_nothing(db: Db) {
    let tdb = TestDb::new(db).await;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path(), "itsp");
    let (other, _) = self_signed(certs.path(), "other");
    let port = common::free_tcp_port();
    let (itsp, log) = itsp_over_tls(port, &cert, &key, None).await;
    let (server, _data) = server_with_tls_trunk(&tdb, port, &other, 30, None).await;
    refused_at_once(server, itsp, log).await;
}

/// The ITSP requires a client certificate (mutual TLS) that chains to the PBX's: the trunk
/// presents the certificate its TLS listener shows, and the call goes through.
async fn call_out_through_a_mutual_tls_trunk(db: Db) {
    let tdb = TestDb::new(db).await;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path(), "itsp");
    let (pbx_cert, pbx_key) = self_signed(certs.path(), "pbx");
    let port = common::free_tcp_port();
    let (itsp, log) = itsp_over_tls(port, &cert, &key, Some(&pbx_cert)).await;
    let identity = Some((pbx_cert.as_str(), pbx_key.as_str()));
    let (server, _data) = server_with_tls_trunk(&tdb, port, &cert, 10, identity).await;
    let caller = alice_dials_out(&server, "call_uac.xml", &["-d", "300"]);
    common::sipp::must_pass("alice", caller).await;
    let log = itsp_log(itsp, log, false).await;
    assert!(log.contains("ANSWERED") && log.contains("ENDED"), "{log}");
    assert!(log.contains("INVITE sip:0301234567@127.0.0.2"), "{log}");
    server.shutdown().await;
}

/// The ITSP requires a client certificate from another authority than the PBX's: it drops the
/// connection (under TLS 1.3 after our side of the handshake is done), no INVITE reaches it,
/// and the caller gets 503 at once.
async fn a_mutual_tls_trunk_refusing_our_certificate_reaches_nothing(db: Db) {
    let tdb = TestDb::new(db).await;
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(certs.path(), "itsp");
    let (pbx_cert, pbx_key) = self_signed(certs.path(), "pbx");
    let (other, _) = self_signed(certs.path(), "other");
    let port = common::free_tcp_port();
    let (itsp, log) = itsp_over_tls(port, &cert, &key, Some(&other)).await;
    let identity = Some((pbx_cert.as_str(), pbx_key.as_str()));
    let (server, _data) = server_with_tls_trunk(&tdb, port, &cert, 30, identity).await;
    refused_at_once(server, itsp, log).await;
}

/// PJSIP uses our SIP UDP port as its STUN server: both its requests are answered with the
/// address they came from.
async fn stun_on_the_sip_port(db: Db) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = common::start_server(&tdb, "listen = [\"udp:127.0.0.1:0\"]", "").await;
    let sip = common::sip_addr(&server, Transport::Udp).to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/pjsua/stun.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python())
            .args([script, &sip])
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", python()))
    })
    .await
    .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    // RFC 5389 (XOR-MAPPED-ADDRESS), at start.
    assert!(
        log.contains("STUN mapped address found/changed: 127.0.0.1:"),
        "{log}"
    );
    // RFC 3489 (MAPPED-ADDRESS), from the SIP transport's socket.
    assert!(
        log.contains("SIP UDP socket reachable at 127.0.0.1:"),
        "{log}"
    );
    assert!(!log.contains("ESTUN"), "{log}");
    server.shutdown().await;
}

async fn sha256_over_udp(db: Db) {
    pjsip_registers_with_sha256(db, Transport::Udp).await
}

async fn sha256_over_tcp(db: Db) {
    pjsip_registers_with_sha256(db, Transport::Tcp).await
}

on_both_databases!(sha256_over_udp, sha256_over_tcp);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trunk() {
    call_out_through_a_tls_trunk(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trunk_untrusted() {
    a_tls_trunk_with_an_untrusted_certificate_reaches_nothing(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trunk_mutual() {
    call_out_through_a_mutual_tls_trunk(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_trunk_mutual_refused() {
    a_mutual_tls_trunk_refusing_our_certificate_reaches_nothing(Db::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_keepalives() {
    stun_on_the_sip_port(Db::Sqlite).await
}

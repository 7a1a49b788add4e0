//! PJSIP (pjsua2, from the PyPI wheel `pjsua2-python`) registers to Switchboard with an RFC 8760
//! SHA-256 digest, over UDP and TCP, against the default configuration (SHA-256 offered first,
//! then MD5). The Authorization header PJSIP sent is read back from its own log, the binding is
//! checked through the API, and the unregister on exit removes it.
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

async fn sha256_over_udp(db: Db) {
    pjsip_registers_with_sha256(db, Transport::Udp).await
}

async fn sha256_over_tcp(db: Db) {
    pjsip_registers_with_sha256(db, Transport::Tcp).await
}

on_both_databases!(sha256_over_udp, sha256_over_tcp);

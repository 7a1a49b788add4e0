//! baresip (Debian package `baresip`, libre's SIP stack) registers to Switchboard over UDP and TCP,
//! and the binding shows in the HTTP API with its transport, source and user agent; when baresip
//! quits it unregisters and the binding goes.
//!
//! baresip 1.0 (libre 1.0) gives up with "Function not implemented" on any 401 that lists a
//! SHA-256 challenge, even after an MD5 one, so these runs configure `digest_algorithms = ["MD5"]`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Db, TestDb};
use serde_json::Value;
use switchboard::config::Transport;
use switchboard::directory::Scope;

async fn baresip_registers(db: Db, transport: Transport) {
    let tdb = TestDb::new(db).await;
    let (server, _data) = common::start_server(
        &tdb,
        "listen = [\"udp:127.0.0.1:0\", \"tcp:127.0.0.1:0\"]\nrealm = \"test.example\"\n\
         digest_algorithms = [\"MD5\"]",
        "",
    )
    .await;
    let user_id = common::user_with_phone(&server, "100", "alice", "alice-secret").await;
    let store = server.store().clone();
    let token = store.create_token(Scope::Admin, None, "t").await.unwrap();

    let sip = common::sip_addr(&server, transport);
    let t = transport.as_str();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config"),
        format!(
            "module_path /usr/lib/baresip/modules\nsip_listen 127.0.0.1:{}\n\
             module g711.so\nmodule_app account.so\nsip_trans_def {t}\n",
            common::free_baresip_port()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("accounts"),
        format!("<sip:alice@{sip};transport={t}>;auth_pass=alice-secret;regint=600\n"),
    )
    .unwrap();
    let mut child = Command::new("baresip")
        .arg("-f")
        .arg(dir.path())
        .args(["-t", "5"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip is installed (Debian package baresip)");

    // Registered: visible through the API with where it came from.
    let http = server.http_addr();
    let path = format!("/api/v1/users/{}/phones", user_id);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut phone = Value::Null;
    while Instant::now() < deadline {
        let h = http;
        let p = path.clone();
        let tk = token.clone();
        let (_, v) = tokio::task::spawn_blocking(move || common::http(h, "GET", &p, &tk, ""))
            .await
            .unwrap();
        phone = v["items"][0].clone();
        if phone["registered"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        phone["registered"], true,
        "baresip did not register: {phone}"
    );
    let contact = &phone["contacts"][0];
    assert_eq!(contact["transport"], t, "{phone}");
    assert!(
        contact["source"]
            .as_str()
            .unwrap_or("")
            .starts_with("127.0.0.1:"),
        "{phone}"
    );
    assert!(
        contact["user_agent"]
            .as_str()
            .unwrap_or("")
            .contains("baresip"),
        "{phone}"
    );
    assert!(contact["expires_in"].as_u64().unwrap_or(0) > 500, "{phone}");

    // baresip unregisters when it quits.
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !server.registrar().bindings_for("alice").is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.registrar().bindings_for("alice").is_empty());
    server.shutdown().await;
}

async fn over_udp(db: Db) {
    baresip_registers(db, Transport::Udp).await
}

async fn over_tcp(db: Db) {
    baresip_registers(db, Transport::Tcp).await
}

on_both_databases!(over_udp, over_tcp);

//! SIPp (Debian package `sip-tester`) as a test peer: running a scenario from `tests/sipp/`
//! and reading what it saw.

use std::path::PathBuf;
use std::process::Command;

use switchboard::config::Transport;
use switchboard::Server;

pub fn sipp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sipp")
}

pub struct SippRun {
    pub ok: bool,
    pub messages: String,
    pub stderr: String,
}

/// `call_uac_rejected.xml` expecting final status `status` (SIPp takes no variable in a
/// `response` attribute), written to `dir`.
pub fn rejected_scenario(dir: &tempfile::TempDir, status: u16) -> String {
    let text = std::fs::read_to_string(sipp_dir().join("call_uac_rejected.xml")).unwrap();
    let path = dir.path().join(format!("call_uac_{status}.xml"));
    std::fs::write(&path, text.replace("STATUS", &status.to_string())).unwrap();
    path.display().to_string()
}

/// Starts one SIPp call of `scenario` from local UDP port `port` towards `to`.
pub fn spawn_sipp(
    scenario: &str,
    to: std::net::SocketAddr,
    port: u16,
    args: &[&str],
) -> tokio::task::JoinHandle<SippRun> {
    spawn_sipp_from("127.0.0.1", scenario, Some(to), port, args)
}

/// Starts one SIPp call of `scenario` on `ip`:`port`, towards `to` (none for a scenario that
/// only answers).
pub fn spawn_sipp_from(
    ip: &str,
    scenario: &str,
    to: Option<std::net::SocketAddr>,
    port: u16,
    args: &[&str],
) -> tokio::task::JoinHandle<SippRun> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("messages.log");
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir.path())
        .arg("-sf")
        .arg(sipp_dir().join(scenario))
        .args(["-m", "1", "-i", ip, "-nostdin", "-t", "u1"])
        .args(["-p", &port.to_string()])
        .args(["-timeout", "20s", "-timeout_error", "-recv_timeout", "15s"])
        .args(args)
        .arg("-trace_msg")
        .arg("-message_file")
        .arg(&log);
    if let Some(to) = to {
        cmd.arg(to.to_string());
    }
    tokio::task::spawn_blocking(move || {
        let out = cmd
            .output()
            .expect("sipp is installed (Debian package sip-tester)");
        let run = SippRun {
            ok: out.status.success(),
            messages: std::fs::read_to_string(&log).unwrap_or_default(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        drop(dir);
        run
    })
}

pub async fn must_pass(what: &str, h: tokio::task::JoinHandle<SippRun>) -> SippRun {
    let run = h.await.unwrap();
    assert!(
        run.ok,
        "{what} failed: {}\n{}",
        run.stderr,
        tail(&run.messages)
    );
    run
}

/// The port of the first `m=audio` line of a logged message.
pub fn audio_port(msg: &str) -> u16 {
    msg.lines()
        .find_map(|l| l.trim().strip_prefix("m=audio "))
        .and_then(|rest| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no m=audio in {msg}"))
}

pub fn tail(s: &str) -> &str {
    let start = s.len().saturating_sub(4000);
    let start = (start..s.len())
        .find(|i| s.is_char_boundary(*i))
        .unwrap_or(0);
    &s[start..]
}

/// Registers phone `user` from `port` and returns once the binding is in place.
pub async fn register(server: &Server, user: &str, password: &str, port: u16) {
    let to = super::sip_addr(server, Transport::Udp);
    must_pass(
        &format!("registering {user}"),
        spawn_sipp(
            "register.xml",
            to,
            port,
            &[
                "-s", user, "-au", user, "-ap", password, "-set", "expires", "600",
            ],
        ),
    )
    .await;
    assert_eq!(server.registrar().bindings_for(user).len(), 1);
}

/// The first message SIPp received that contains `what` (panics with the whole log if none).
pub fn received<'a>(run: &'a SippRun, what: &str) -> &'a str {
    run.messages
        .split("message received")
        .find(|m| m.contains(what))
        .unwrap_or_else(|| panic!("no message with {what:?} in {}", run.messages))
}

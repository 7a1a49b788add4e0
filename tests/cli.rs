//! The `switchboard` binary as an operator uses it: `check-config`, the directory commands, and
//! `serve` stopped and started again on the same store (SQLite and PostgreSQL), losing nothing.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Db, TestDb};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn switchboard(db_url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("SWITCHBOARD_DATABASE_URL", db_url)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run switchboard")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_prints_the_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchboard.toml");
    std::fs::write(&file, "[sip]\nrealm = \"pbx.example\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", file.to_str().unwrap(), "check-config"])
        .env_clear()
        .env("SWITCHBOARD_HTTP_LISTEN", "127.0.0.1:9999")
        .env(
            "SWITCHBOARD_SIP_LISTEN",
            "udp:0.0.0.0:5060,tcp:0.0.0.0:5060,tls:0.0.0.0:5061",
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let parsed: toml::Value = toml::from_str(&text).expect("check-config prints TOML");
    assert_eq!(parsed["http"]["listen"].as_str(), Some("127.0.0.1:9999"));
    assert_eq!(parsed["sip"]["realm"].as_str(), Some("pbx.example"));
    assert_eq!(
        parsed["sip"]["listen"].as_array().map(|a| a.len()),
        Some(3),
        "{text}"
    );
    assert_eq!(parsed["data_dir"].as_str(), Some("./data"));
}

#[test]
fn bad_config_is_rejected_naming_the_key() {
    let out = Command::new(BIN)
        .args(["check-config"])
        .env_clear()
        .env("SWITCHBOARD_HTTP_LISTEN", "localhost")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("http.listen"), "{err}");
    assert!(err.contains("SWITCHBOARD_HTTP_LISTEN"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[sip]\nlisten = [\"sctp:0.0.0.0:5060\"]\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", file.to_str().unwrap(), "serve"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("sip.listen") && err.contains("sctp"), "{err}");
}

#[test]
fn directory_commands_work_on_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("sb.db").display());

    let out = switchboard(
        &url,
        &[
            "user",
            "add",
            "100",
            "--name",
            "Alice",
            "--email",
            "alice@example.com",
            "--number",
            "mobile=+491701111",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("100\tAlice"));

    // Duplicate extension: a clear error, non-zero exit.
    let out = switchboard(
        &url,
        &[
            "user",
            "add",
            "100",
            "--name",
            "B",
            "--email",
            "b@example.com",
        ],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("extension"), "{}", stderr(&out));

    // A phone with a generated password: printed alone on stdout.
    let out = switchboard(
        &url,
        &["phone", "add", "--user", "100", "--username", "alice-desk"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let password = stdout(&out).trim().to_owned();
    assert!(password.len() >= 16 && !password.contains(char::is_whitespace));

    // Tokens: only the token on stdout, so scripts can capture it.
    let out = switchboard(&url, &["token", "create", "--user", "100"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let user_token = stdout(&out).trim().to_owned();
    assert!(user_token.starts_with("sb_") && !user_token.contains('\n'));
    let out = switchboard(&url, &["token", "create", "--admin"]);
    assert!(stdout(&out).trim().starts_with("sb_"));
    let out = switchboard(&url, &["token", "create", "--user", "999"]);
    assert!(!out.status.success());

    let out = switchboard(&url, &["user", "list"]);
    assert!(stdout(&out).contains("\t100\tAlice\talice@example.com"));

    let out = switchboard(&url, &["user", "remove", "100"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = switchboard(&url, &["user", "list"]);
    assert_eq!(stdout(&out), "");
}

/// A running `switchboard serve`.
struct Served {
    child: Child,
    http: SocketAddr,
    stdout: String,
}

fn serve(db_url: &str, data_dir: &std::path::Path) -> Served {
    serve_with(db_url, data_dir, None)
}

/// `serve` with a config file, on free loopback ports.
fn serve_with(
    db_url: &str,
    data_dir: &std::path::Path,
    config: Option<&std::path::Path>,
) -> Served {
    let mut cmd = Command::new(BIN);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    let mut child = cmd
        .args(["--log-json", "serve"])
        .env_clear()
        .env("SWITCHBOARD_DATA_DIR", data_dir)
        .env("SWITCHBOARD_DATABASE_URL", db_url)
        .env("SWITCHBOARD_HTTP_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_SIP_LISTEN", "udp:127.0.0.1:0,tcp:127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");

    // stdout: the first-start banner, if any; stderr: JSON logs with the bound addresses.
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["fields"]["message"] == "switchboard started" {
                    let _ = tx.send(v["fields"]["http"].as_str().unwrap_or("").to_owned());
                }
            }
        }
    });
    let http: SocketAddr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("server did not start")
        .parse()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let (otx, orx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut s = String::new();
        let mut buf = [0u8; 4096];
        // The banner is printed right after start; collect what comes in the first moment.
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.push_str(&String::from_utf8_lossy(&buf[..n]));
            if s.contains("token create --admin") {
                break;
            }
        }
        let _ = otx.send(s);
    });
    let stdout = orx.recv_timeout(Duration::from_secs(2)).unwrap_or_default();
    Served {
        child,
        http,
        stdout,
    }
}

impl Served {
    /// Stops the server the way an init system does (SIGTERM) and waits for it.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        panic!("server did not stop on SIGTERM within 10 s");
    }
}

use common::http;

fn extract_token(banner: &str) -> Option<String> {
    banner
        .split_whitespace()
        .find(|w| w.starts_with("sb_"))
        .map(str::to_owned)
}

async fn restart_loses_nothing(db: Db) {
    let tdb = TestDb::new(db).await;
    let data = tempfile::tempdir().unwrap();
    let url = match db {
        Db::Sqlite => format!("sqlite://{}", data.path().join("switchboard.db").display()),
        Db::Postgres => tdb.url.clone(),
    };
    let url2 = url.clone();
    let data_dir = data.path().to_owned();
    tokio::task::spawn_blocking(move || {
        let first = serve(&url2, &data_dir);
        let token = extract_token(&first.stdout)
            .unwrap_or_else(|| panic!("no admin token on first start: {:?}", first.stdout));
        assert!(first.stdout.contains("switchboard token create --admin"));

        let (status, user) = http(
            first.http,
            "POST",
            "/api/v1/users",
            &token,
            r#"{"extension":"100","display_name":"Alice","email":"alice@example.com"}"#,
        );
        assert_eq!(status, 201, "{user}");
        let id = user["id"].as_i64().unwrap();
        let (status, _) = http(
            first.http,
            "POST",
            &format!("/api/v1/users/{id}/phones"),
            &token,
            r#"{"sip_username":"alice-desk","name":"Desk"}"#,
        );
        assert_eq!(status, 201);
        let (status, _) = http(first.http, "GET", "/healthz", "", "");
        assert_eq!(status, 200);
        first.stop();

        // Second start: no new token is minted, the old one still works, the data is there.
        let second = serve(&url2, &data_dir);
        assert!(
            extract_token(&second.stdout).is_none(),
            "a second admin token was printed: {}",
            second.stdout
        );
        let (status, user) = http(
            second.http,
            "GET",
            &format!("/api/v1/users/{id}"),
            &token,
            "",
        );
        assert_eq!(status, 200, "{user}");
        assert_eq!(user["extension"], "100");
        let (status, phones) = http(
            second.http,
            "GET",
            &format!("/api/v1/users/{id}/phones"),
            &token,
            "",
        );
        assert_eq!(status, 200);
        assert_eq!(phones["items"][0]["sip_username"], "alice-desk");
        second.stop();
    })
    .await
    .unwrap();

    if db == Db::Sqlite {
        // Zero setup: the database file landed in the data dir.
        assert!(data.path().join("switchboard.db").exists());
    }
}

on_both_databases!(restart_loses_nothing);

#[test]
fn serve_with_no_setup_creates_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh").join("data");
    let mut child = Command::new(BIN)
        .args(["serve"])
        .current_dir(dir.path())
        .env_clear()
        .env("SWITCHBOARD_DATA_DIR", &data)
        .env("SWITCHBOARD_HTTP_LISTEN", "127.0.0.1:0")
        .env("SWITCHBOARD_SIP_LISTEN", "udp:127.0.0.1:0,tcp:127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.contains("admin token"), "{first}");
    assert!(data.join("switchboard.db").exists());
}

const PLAN_A: &str = "[[route]]\nname = \"users\"\nmatch = \"{ext:3}\"\naction = \"user\"\n";
const PLAN_B: &str = "[[route]]\nname = \"echo\"\nmatch = \"*43\"\naction = \"echo\"\n\n\
                      [[route]]\nname = \"users\"\nmatch = \"{ext:3}\"\naction = \"user\"\n";
const PLAN_BROKEN: &str = "[[route]]\nname = \"users\"\nmatch = \"{ext:3}\"\naction = \"user\"\n\n\
                           [[route]]\nname = \"out\"\nmatch = \"0{n}\"\naction = \"trunkk\"\n";

/// Writes `plan` as a dialplan file and a config naming it; returns both paths.
fn dialplan_config(dir: &std::path::Path, plan: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let plan_path = dir.join("plan.toml");
    std::fs::write(&plan_path, plan).unwrap();
    let cfg = dir.join("sb.toml");
    std::fs::write(
        &cfg,
        format!("dialplan = {:?}\n", plan_path.display().to_string()),
    )
    .unwrap();
    (plan_path, cfg)
}

#[test]
fn a_broken_dialplan_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, cfg) = dialplan_config(dir.path(), PLAN_BROKEN);
    for cmd in ["check-config", "serve"] {
        let out = Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), cmd])
            .env_clear()
            .env("SWITCHBOARD_DATA_DIR", dir.path())
            .env("SWITCHBOARD_HTTP_LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_SIP_LISTEN", "udp:127.0.0.1:0")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{cmd} accepted a broken dialplan");
        let err = stderr(&out);
        assert!(
            err.contains("line 9") && err.contains("trunkk"),
            "{cmd}: {err}"
        );
    }
    std::fs::write(&plan, PLAN_A).unwrap();
    let out = Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "check-config"])
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn the_dialplan_reloads_on_sighup_and_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let (plan, cfg) = dialplan_config(dir.path(), PLAN_A);
    let url = format!("sqlite://{}", dir.path().join("sb.db").display());
    let token = stdout(&switchboard(&url, &["token", "create", "--admin"]))
        .trim()
        .to_owned();

    let served = serve_with(&url, dir.path(), Some(&cfg));
    let http_addr = served.http;
    let names = |v: &Value| -> Vec<String> {
        v["routes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["name"].as_str().unwrap_or("").to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let (_, v) = http(http_addr, "GET", "/api/v1/dialplan", &token, "");
    assert_eq!(names(&v), ["users"]);

    // SIGHUP picks up the edited file.
    std::fs::write(&plan, PLAN_B).unwrap();
    let _ = Command::new("kill")
        .args(["-HUP", &served.child.id().to_string()])
        .status();
    let mut got = Vec::new();
    for _ in 0..50 {
        let (_, v) = http(http_addr, "GET", "/api/v1/dialplan", &token, "");
        got = names(&v);
        if got.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(got, ["echo", "users"]);

    // A broken file is refused with its line; the running plan stays.
    std::fs::write(&plan, PLAN_BROKEN).unwrap();
    let (status, problem) = http(http_addr, "POST", "/api/v1/dialplan/reload", &token, "");
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["field"], "line 9", "{problem}");
    let (_, v) = http(http_addr, "GET", "/api/v1/dialplan", &token, "");
    assert_eq!(names(&v), ["echo", "users"]);

    // Fixed again, reloaded through the API.
    std::fs::write(&plan, PLAN_A).unwrap();
    let (status, v) = http(http_addr, "POST", "/api/v1/dialplan/reload", &token, "");
    assert_eq!(status, 200, "{v}");
    assert_eq!(names(&v), ["users"]);
    served.stop();
}

/// With trunks configured, a route naming an unknown one is refused with its line; the trunk's
/// password never appears in `check-config`; a broken trunk table names the trunk.
#[test]
fn trunks_in_check_config() {
    let dir = tempfile::tempdir().unwrap();
    let plan = dir.path().join("plan.toml");
    std::fs::write(
        &plan,
        "[[route]]\nname = \"users\"\nmatch = \"{ext:3}\"\naction = \"user\"\n\n\
         [[route]]\nname = \"out\"\nmatch = \"0{n}\"\naction = \"trunk\"\ntrunk = \"itps\"\n",
    )
    .unwrap();
    let trunk = "[[trunks]]\nname = \"itsp\"\nhost = \"sip.itsp.example\"\n\
                 username = \"4930555\"\npassword = \"hunter2-secret\"\n\
                 dids = [ { number = \"+4930555100\", extension = \"100\" } ]\n";
    let cfg = dir.path().join("sb.toml");
    let write_cfg = |trunk: &str| {
        std::fs::write(
            &cfg,
            format!("dialplan = {:?}\n{trunk}", plan.display().to_string()),
        )
        .unwrap()
    };
    let check = || {
        Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap(), "check-config"])
            .env_clear()
            .output()
            .unwrap()
    };
    write_cfg(trunk);
    let out = check();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("line 10") && err.contains("unknown trunk 'itps'"),
        "{err}"
    );

    std::fs::write(
        &plan,
        "[[route]]\nname = \"out\"\nmatch = \"0{n}\"\naction = \"trunk\"\ntrunk = \"itsp\"\n",
    )
    .unwrap();
    let out = check();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("hunter2"), "{text}");
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    assert_eq!(parsed["trunks"][0]["password"].as_str(), Some("********"));
    assert_eq!(parsed["trunks"][0]["number_format"].as_str(), Some("e164"));
    assert_eq!(parsed["trunks"][0]["register"].as_bool(), Some(true));

    write_cfg(&trunk.replace("+4930555100", "030555100"));
    let out = check();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("trunk 'itsp'") && err.contains("E.164"),
        "{err}"
    );
}

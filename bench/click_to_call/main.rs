//! Click-to-call latency and throughput: the time from `POST /api/v1/me/calls` to the INVITE
//! reaching the user's phone, and whether RATE requests per second are taken without errors.
//! Not a test: bench/RESULTS.md records the figures.
//!
//!   cargo bench --bench click_to_call        # RATE=200 SECS=10
//!
//! The server runs in this process (release build, SQLite in a temp dir, RUST_LOG unset). The
//! user's phone registers with SIPp (Debian package `sip-tester`), then a UDP socket of ours
//! takes over its port: it timestamps each INVITE and answers 486 at once, so leg A ends and
//! nothing piles up. Every request calls a different target extension (200 users), which is
//! how an INVITE is matched to its request (the phone shows "Call to <target>").

use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard::directory::{NewPhone, NewUser, Scope};
use switchboard::sip::message::{self, Message};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Sent = Arc<Mutex<HashMap<String, VecDeque<Instant>>>>;

fn phone(sock: UdpSocket, sent: Sent, latencies: Arc<Mutex<Vec<Duration>>>) {
    let mut buf = vec![0u8; 65536];
    sock.set_read_timeout(Some(Duration::from_millis(200))).ok();
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            if Arc::strong_count(&sent) == 1 {
                return;
            }
            continue;
        };
        let at = Instant::now();
        let Ok(msg) = message::parse(&buf[..n]) else {
            continue;
        };
        if msg.method().map(|m| m.as_str()) != Some("INVITE") {
            continue;
        }
        let target = msg
            .from()
            .and_then(|f| f.display_name.clone())
            .and_then(|d| d.strip_prefix("Call to ").map(str::to_owned));
        if let Some(t) = target {
            if let Some(start) = sent.lock().unwrap().get_mut(&t).and_then(|q| q.pop_front()) {
                latencies.lock().unwrap().push(at - start);
            }
        }
        let mut busy = Message::response_to(&msg, 486, "Busy Here");
        let _ = busy.set_to_tag("benchphone");
        let _ = sock.send_to(&busy.to_bytes(), from);
    }
}

async fn post(addr: SocketAddr, token: &str, to: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!("{{\"to\":\"{to}\"}}");
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let req = format!(
        "POST /api/v1/me/calls HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp).await;
    String::from_utf8_lossy(&resp)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rate = env_or("RATE", 200);
    let secs = env_or("SECS", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(rate, secs));
}

async fn run(rate: u64, secs: u64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "data_dir = {:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[sip]\nlisten = [\"udp:127.0.0.1:0\"]\n\
         realm = \"bench.example\"\ndigest_algorithms = [\"MD5\"]\n[calls]\nno_answer_secs = 10\n",
        dir.path().display().to_string()
    );
    let config = switchboard::config::Config::from_toml(&toml).expect("config");
    let server = switchboard::Server::start(config).await.expect("server");
    let store = server.store().clone();
    let mut user_id = 0;
    for ext in 100..=399 {
        let u = store
            .create_user(&NewUser {
                extension: ext.to_string(),
                display_name: format!("User {ext}"),
                email: format!("u{ext}@example.com"),
                fax_number: None,
                external_numbers: vec![],
            })
            .await
            .expect("user");
        if ext == 100 {
            user_id = u.id;
            store
                .create_phone(
                    u.id,
                    &NewPhone {
                        sip_username: "me".into(),
                        name: "Desk".into(),
                        password: Some("me-secret".into()),
                    },
                    "bench.example",
                )
                .await
                .expect("phone");
        }
    }
    let token = store
        .create_token(Scope::User, Some(user_id), "bench")
        .await
        .expect("token");
    let sip = server
        .sip_addrs()
        .iter()
        .find(|l| l.transport == switchboard::config::Transport::Udp)
        .expect("udp")
        .addr;
    let port = UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/register.xml");
    let ok = Command::new("sipp")
        .current_dir(dir.path())
        .args([
            "-sf",
            scenario,
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-t",
            "u1",
        ])
        .args([
            "-p",
            &port.to_string(),
            "-s",
            "me",
            "-au",
            "me",
            "-ap",
            "me-secret",
        ])
        .args([
            "-set",
            "expires",
            "3600",
            "-timeout",
            "10s",
            "-timeout_error",
        ])
        .arg(sip.to_string())
        .output()
        .expect("sipp is installed (Debian package sip-tester)")
        .status
        .success();
    assert!(ok, "the phone could not register");
    let sock = UdpSocket::bind(("127.0.0.1", port)).expect("the phone's port");
    let sent: Sent = Arc::new(Mutex::new(HashMap::new()));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let listener = {
        let (sent, latencies) = (sent.clone(), latencies.clone());
        std::thread::spawn(move || phone(sock, sent, latencies))
    };

    let http = server.http_addr();
    let total = rate * secs;
    println!("== click-to-call: {rate}/s for {secs} s ({total} requests), server in process");
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let to = format!("{}", 200 + (i % 200));
        let (token, sent) = (token.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            sent.lock()
                .unwrap()
                .entry(to.clone())
                .or_default()
                .push_back(Instant::now());
            post(http, &token, &to).await
        }));
    }
    let placed = start.elapsed();
    let mut statuses: HashMap<u16, u64> = HashMap::new();
    for t in tasks {
        *statuses.entry(t.await.unwrap_or(0)).or_default() += 1;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(sent);
    let _ = listener.join();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let pct = |p: f64| {
        l.get(((l.len().max(1) - 1) as f64 * p) as usize)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    let accepted = statuses.get(&202).copied().unwrap_or(0);
    println!(
        "   placed in {:.1} s; answers: {:?}",
        placed.as_secs_f64(),
        statuses
    );
    println!(
        "   POST -> INVITE at the phone: {} measured, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        l.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "== {accepted}/{total} accepted (202), {} errors; targets: p99 < 5 ms, {rate}/s without errors",
        total - accepted
    );
    server.shutdown().await;
}

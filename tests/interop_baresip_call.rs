//! Two baresip phones (Debian package `baresip`) call each other through Switchboard, and audio
//! really flows both ways through our RTP relay: each phone plays a tone from a WAV file
//! (baresip's `aufile` source: 1000 Hz from the caller, 600 Hz from the callee), baresip's
//! `sndfile` filter records what each one receives, and the test checks the frequency of each
//! recording. Both phones register first; the callee answers automatically. A second run
//! restricts the caller to PCMU and the callee to PCMA, so the audio only gets through if the
//! relay transcodes.
//!
//! A third run hands the call's media to the kernel (`[media] kernel_forwarding`, in a network
//! namespace of the test's own) and checks that the audio went through nftables, not our
//! sockets.
//!
//! baresip 1.0 gives up on SHA-256 challenges (see `interop_baresip.rs`), so the server offers
//! MD5 only here.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Db, TestDb};
use switchboard::config::Transport;
use switchboard::store::{HistoryQuery, PartyOutcome};

const RATE: u32 = 8000;

/// A mono 16-bit WAV of a `freq` Hz sine, `secs` long.
fn write_tone(path: &Path, freq: f64, secs: u32) {
    let n = RATE * secs;
    let mut data = Vec::with_capacity(n as usize * 2);
    for i in 0..n {
        let v = (8000.0
            * (2.0 * std::f64::consts::PI * freq * f64::from(i) / f64::from(RATE)).sin())
            as i16;
        data.extend_from_slice(&v.to_le_bytes());
    }
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&(RATE * 2).to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).unwrap();
}

/// The samples of a mono 16-bit WAV (the `data` chunk found by walking the chunks).
fn read_samples(path: &Path) -> Vec<i16> {
    let b = std::fs::read(path).unwrap();
    let mut at = 12;
    while at + 8 <= b.len() {
        let id = &b[at..at + 4];
        let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
        if id == b"data" {
            let end = (at + 8 + len).min(b.len());
            return b[at + 8..end]
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
        }
        at += 8 + len + (len % 2);
    }
    panic!("no data chunk in {}", path.display());
}

/// Signal power at `freq` (Goertzel).
fn power(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(RATE);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for v in x {
        let s = f64::from(*v) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// The recording of what a phone received (`sndfile` names it `dump-<time>-dec.wav`).
fn received(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with("-dec.wav"))
        })
        .unwrap_or_else(|| panic!("no recording in {}", dir.display()))
}

fn phone_dir(
    user: &str,
    password: &str,
    sip: std::net::SocketAddr,
    tone: f64,
    extra: &str,
) -> tempfile::TempDir {
    phone_dir_at("127.0.0.1", user, password, sip, tone, extra)
}

/// A phone's configuration, the phone listening on `host`.
fn phone_dir_at(
    host: &str,
    user: &str,
    password: &str,
    sip: std::net::SocketAddr,
    tone: f64,
    extra: &str,
) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let tone_path = dir.path().join("tone.wav");
    write_tone(&tone_path, tone, 20);
    let port = common::free_baresip_port();
    std::fs::write(
        dir.path().join("config"),
        format!(
            "module_path /usr/lib/baresip/modules\nsip_listen {host}:{port}\n\
             audio_source aufile,{}\naudio_player aubridge,nowhere\naudio_alert aubridge,nowhere\n\
             module g711.so\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\n\
             module_app account.so\nmodule_app menu.so\nsnd_path {}\n",
            tone_path.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("accounts"),
        format!("<sip:{user}@{sip};transport=udp>;auth_pass={password};regint=600{extra}\n"),
    )
    .unwrap();
    dir
}

/// A network namespace for the phones, joined to ours by a veth pair: the server at
/// [`PhoneNet::SERVER`], the phones at [`PhoneNet::PHONES`], each side's default route through
/// the other. Deleted when dropped.
struct PhoneNet(String);

impl PhoneNet {
    const SERVER: &'static str = "10.99.0.1";
    const PHONES: &'static str = "10.99.0.2";

    /// Called in a network namespace of our own (the veth's near end lands there).
    fn new() -> PhoneNet {
        let name = format!("sbphones{}", std::process::id());
        let net = PhoneNet(name.clone());
        let server = format!("{}/24", Self::SERVER);
        let phones = format!("{}/24", Self::PHONES);
        for cmd in [
            vec!["netns", "add", &name],
            vec!["link", "add", "sb0", "type", "veth", "peer", "name", "sb1"],
            vec!["link", "set", "sb1", "netns", &name],
            vec!["addr", "add", &server, "dev", "sb0"],
            vec!["link", "set", "sb0", "up"],
            vec!["-n", &name, "addr", "add", &phones, "dev", "sb1"],
            vec!["-n", &name, "link", "set", "sb1", "up"],
            vec!["-n", &name, "link", "set", "lo", "up"],
            vec!["-n", &name, "route", "add", "default", "via", Self::SERVER],
        ] {
            let ok = Command::new("ip").args(&cmd).status().unwrap().success();
            assert!(ok, "ip {cmd:?}");
        }
        net
    }

    /// `baresip`, run in the phones' namespace.
    fn baresip(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, "baresip"]);
        c
    }
}

impl Drop for PhoneNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

/// `alice_params` / `bob_params`: extra account parameters (codec restrictions). `net`: the
/// phones in a namespace of their own and the media forwarded by the kernel (the caller has
/// entered a network namespace of its own too).
async fn audio_flows_both_ways(
    db: Db,
    alice_params: &str,
    bob_params: &str,
    net: Option<&PhoneNet>,
) {
    let tdb = TestDb::new(db).await;
    let (host, listen, extra) = match net {
        Some(_) => (
            PhoneNet::PHONES,
            PhoneNet::SERVER,
            "[media]\nkernel_forwarding = true",
        ),
        None => ("127.0.0.1", "127.0.0.1", ""),
    };
    let (server, _data) = common::start_server(
        &tdb,
        &format!(
            "listen = [\"udp:{listen}:0\"]\nrealm = \"test.example\"\ndigest_algorithms = [\"MD5\"]"
        ),
        extra,
    )
    .await;
    let baresip = || net.map_or_else(|| Command::new("baresip"), PhoneNet::baresip);
    let alice = common::user_with_phone(&server, "100", "alice", "alice-secret").await;
    let bob = common::user_with_phone(&server, "200", "bob", "bob-secret").await;
    let sip = common::sip_addr(&server, Transport::Udp);

    let bob_dir = phone_dir_at(
        host,
        "bob",
        "bob-secret",
        sip,
        600.0,
        &format!(";answermode=auto{bob_params}"),
    );
    let mut callee = baresip()
        .arg("-f")
        .arg(bob_dir.path())
        .args(["-t", "15"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip is installed (Debian package baresip)");
    let deadline = Instant::now() + Duration::from_secs(8);
    while server.registrar().bindings_for("bob").is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !server.registrar().bindings_for("bob").is_empty(),
        "bob did not register"
    );

    let alice_dir = phone_dir_at(host, "alice", "alice-secret", sip, 1000.0, alice_params);
    let dial = format!("/dial sip:200@{sip}");
    let mut caller = baresip()
        .arg("-f")
        .arg(alice_dir.path())
        .args(["-t", "6", "-e", &dial])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    if net.is_some() {
        // Mid-call (the caller hangs up after 6 s), both phones' RTP goes through the
        // kernel's table: two streams of more than a second of packets each.
        let deadline = Instant::now() + Duration::from_millis(5500);
        let mut streams = Vec::new();
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            streams = common::in_kernel().expect("the kernel forwarding table");
            if streams.iter().filter(|s| s.2 > 50).count() >= 2 {
                break;
            }
        }
        let busy = streams.iter().filter(|s| s.2 > 50).count();
        assert!(busy >= 2, "streams in the kernel: {streams:?}");
        // And the operator sees them in the metrics.
        let metrics = get_text(server.http_addr(), "/metrics");
        let in_kernel: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("switchboard_media_kernel_streams "))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{metrics}"));
        // Both RTP streams, and the RTCP ones the phones sent so far.
        assert!((2..=4).contains(&in_kernel), "{metrics}");
    }
    let _ = tokio::task::spawn_blocking(move || caller.wait()).await;
    // The caller quit (and hung up); give the callee a moment to see the BYE, then stop it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = callee.kill();
    let _ = tokio::task::spawn_blocking(move || callee.wait()).await;

    // What each phone heard: the other one's tone, through our relay.
    let at_bob = read_samples(&received(bob_dir.path()));
    let at_alice = read_samples(&received(alice_dir.path()));
    for (who, x, want, other) in [
        ("bob", &at_bob, 1000.0, 600.0),
        ("alice", &at_alice, 600.0, 1000.0),
    ] {
        assert!(
            x.len() > RATE as usize,
            "{who} recorded only {} samples",
            x.len()
        );
        let tail = &x[x.len() - RATE as usize..];
        let (p_want, p_other, p_off) = (power(tail, want), power(tail, other), power(tail, 1500.0));
        assert!(
            p_want > 100.0 * p_other && p_want > 100.0 * p_off,
            "{who} heard {want} Hz at {p_want:.3e}, {other} Hz at {p_other:.3e}, 1500 Hz at {p_off:.3e}"
        );
    }

    // And the call is in both histories, answered.
    for user in [alice, bob] {
        let mut entries = Vec::new();
        for _ in 0..30 {
            entries = server
                .store()
                .call_history(user, &HistoryQuery::default())
                .await
                .unwrap()
                .entries;
            if !entries.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(entries.len(), 1, "user {user}: {entries:?}");
        assert_eq!(entries[0].outcome, PartyOutcome::Answered);
    }
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_baresip_phones_hear_each_other() {
    audio_flows_both_ways(Db::Sqlite, "", "", None).await
}

/// The same call with its media forwarded by the kernel (`media::netfilter`), the phones on
/// the other side of a veth link, so their packets are routed as on a real network, through
/// strict reverse-path filtering. The
/// server's namespace is entered before the runtime starts, so every thread of the server is in
/// it.
#[test]
fn two_baresip_phones_hear_each_other_through_the_kernel() {
    switchboard::media::netfilter::enter_private_netns()
        .expect("a network namespace of our own (root, iproute2)");
    // Strict reverse-path filtering, as RHEL-like hosts have it (the veth link gets `default`'s):
    // the forwarded packets must pass it.
    for conf in ["all", "default"] {
        std::fs::write(format!("/proc/sys/net/ipv4/conf/{conf}/rp_filter"), "1").unwrap();
    }
    let net = PhoneNet::new();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(audio_flows_both_ways(Db::Sqlite, "", "", Some(&net)))
}

/// The caller speaks only µ-law and the callee only A-law: the relay converts between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pcmu_and_pcma_phones_hear_each_other() {
    audio_flows_both_ways(
        Db::Postgres,
        ";audio_codecs=PCMU/8000/1",
        ";audio_codecs=PCMA/8000/1",
        None,
    )
    .await
}

/// Starts a baresip phone from `dir` for `secs` seconds, and waits until `user` is registered.
async fn start_phone(
    server: &switchboard::Server,
    dir: &Path,
    user: &str,
    secs: u32,
) -> std::process::Child {
    let child = Command::new("baresip")
        .arg("-f")
        .arg(dir)
        .args(["-t", &secs.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip is installed (Debian package baresip)");
    let deadline = Instant::now() + Duration::from_secs(8);
    while server.registrar().bindings_for(user).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !server.registrar().bindings_for(user).is_empty(),
        "{user} did not register"
    );
    child
}

/// The body of a plain `GET` (no authorization).
fn get_text(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n")
        .map(|x| x.1.to_owned())
        .unwrap_or_default()
}

/// `POST /api/v1/me/calls` for the user of `token`; returns the call's id.
async fn click_to_call(server: &switchboard::Server, token: &str, to: &str) -> String {
    let (addr, token, body) = (
        server.http_addr(),
        token.to_owned(),
        format!("{{\"to\":\"{to}\"}}"),
    );
    let (status, v) = tokio::task::spawn_blocking(move || {
        common::http(addr, "POST", "/api/v1/me/calls", &token, &body)
    })
    .await
    .unwrap();
    assert_eq!(status, 202, "{v}");
    v["id"].as_str().unwrap().to_owned()
}

async fn hang_up(server: &switchboard::Server, token: &str, id: &str) {
    let (addr, token, path) = (
        server.http_addr(),
        token.to_owned(),
        format!("/api/v1/me/calls/{id}"),
    );
    let (status, v) =
        tokio::task::spawn_blocking(move || common::http(addr, "DELETE", &path, &token, ""))
            .await
            .unwrap();
    assert_eq!(status, 204, "{v}");
}

/// A server (MD5 only, for baresip 1.0) with users 100 (phone `alice`) and 200 (phone `bob`,
/// not registered) and a user token for 100, as the groupware holds one; `extra` is more TOML.
async fn click_to_call_server(
    tdb: &TestDb,
    extra: &str,
) -> (switchboard::Server, tempfile::TempDir, i64, String) {
    let (server, data) = common::start_server(
        tdb,
        "listen = [\"udp:127.0.0.1:0\"]\nrealm = \"test.example\"\ndigest_algorithms = [\"MD5\"]",
        extra,
    )
    .await;
    let alice = common::user_with_phone(&server, "100", "alice", "alice-secret").await;
    common::user_with_phone(&server, "200", "bob", "bob-secret").await;
    let token = server
        .store()
        .create_token(
            switchboard::directory::Scope::User,
            Some(alice),
            "groupware",
        )
        .await
        .unwrap();
    (server, data, alice, token)
}

/// Click-to-call with baresip as the user's phone and as the target (both answer by
/// themselves): each recording holds the other phone's tone, so the two legs are joined
/// through the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_call_joins_two_baresip_phones() {
    let tdb = TestDb::new(Db::Sqlite).await;
    let (server, _data, _alice, token) = click_to_call_server(&tdb, "").await;
    let sip = common::sip_addr(&server, Transport::Udp);
    let bob_dir = phone_dir("bob", "bob-secret", sip, 600.0, ";answermode=auto");
    let alice_dir = phone_dir("alice", "alice-secret", sip, 1000.0, ";answermode=auto");
    let mut bob = start_phone(&server, bob_dir.path(), "bob", 20).await;
    let mut me = start_phone(&server, alice_dir.path(), "alice", 20).await;

    let id = click_to_call(&server, &token, "200").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    hang_up(&server, &token, &id).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for p in [&mut bob, &mut me] {
        let _ = p.kill();
        let _ = p.wait();
    }

    let at_bob = read_samples(&received(bob_dir.path()));
    let at_alice = read_samples(&received(alice_dir.path()));
    for (who, x, want, other) in [
        ("bob", &at_bob, 1000.0, 600.0),
        ("alice", &at_alice, 600.0, 1000.0),
    ] {
        assert!(
            x.len() > RATE as usize,
            "{who} recorded {} samples",
            x.len()
        );
        let tail = &x[x.len() - RATE as usize..];
        let (p_want, p_other) = (power(tail, want), power(tail, other));
        assert!(
            p_want > 100.0 * p_other,
            "{who} heard {want} Hz at {p_want:.3e}, {other} Hz at {p_other:.3e}"
        );
    }
    server.shutdown().await;
}

/// While the target rings, the user's phone hears ringback from our media engine: 425 Hz
/// (the European default), on for one second of every five.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_call_plays_ringback_while_the_target_rings() {
    let tdb = TestDb::new(Db::Sqlite).await;
    let (server, _data, _alice, token) = click_to_call_server(&tdb, "").await;
    let sip = common::sip_addr(&server, Transport::Udp);
    // Bob is a SIPp phone that rings 3 s before it answers (and sends no audio).
    let scenarios = tempfile::tempdir().unwrap();
    let slow = scenarios.path().join("call_uas_slow.xml");
    let text = std::fs::read_to_string(common::sipp::sipp_dir().join("call_uas.xml")).unwrap();
    std::fs::write(
        &slow,
        text.replace(
            "<pause milliseconds=\"200\" />",
            "<pause milliseconds=\"3000\" />",
        ),
    )
    .unwrap();
    let bob_port = common::free_udp_port();
    common::sipp::register(&server, "bob", "bob-secret", bob_port).await;
    let bob = common::sipp::spawn_sipp(slow.to_str().unwrap(), sip, bob_port, &[]);
    let alice_dir = phone_dir("alice", "alice-secret", sip, 1000.0, ";answermode=auto");
    let mut me = start_phone(&server, alice_dir.path(), "alice", 20).await;

    let id = click_to_call(&server, &token, "200").await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    hang_up(&server, &token, &id).await;
    common::sipp::must_pass("bob's phone", bob).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = me.kill();
    let _ = me.wait();
    let heard = read_samples(&received(alice_dir.path()));
    assert!(
        heard.len() > RATE as usize,
        "alice recorded {} samples",
        heard.len()
    );
    // The first ringback burst: some 250 ms window of the first 1.5 s is 425 Hz.
    let window = RATE as usize / 4;
    let best = heard[..(RATE as usize * 3 / 2).min(heard.len())]
        .chunks(window)
        .filter(|c| c.len() == window)
        .map(|c| (power(c, 425.0), power(c, 1000.0), power(c, 600.0)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    assert!(
        best.0 > 100.0 * best.1 && best.0 > 100.0 * best.2 && best.0 > 1e9,
        "425 Hz {:.3e}, 1000 Hz {:.3e}, 600 Hz {:.3e}",
        best.0,
        best.1,
        best.2
    );
    server.shutdown().await;
}

/// The echo test (`*43` in the shipped dialplan): the PBX answers and the relay sends the
/// phone's audio straight back, so baresip records its own 1000 Hz tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_test_returns_the_callers_audio() {
    let tdb = TestDb::new(Db::Sqlite).await;
    let (server, _data) = common::start_server(
        &tdb,
        "listen = [\"udp:127.0.0.1:0\"]\nrealm = \"test.example\"\ndigest_algorithms = [\"MD5\"]",
        "",
    )
    .await;
    let alice = common::user_with_phone(&server, "100", "alice", "alice-secret").await;
    let sip = common::sip_addr(&server, Transport::Udp);
    let dir = phone_dir("alice", "alice-secret", sip, 1000.0, "");
    let dial = format!("/dial sip:*43@{sip}");
    let mut phone = Command::new("baresip")
        .arg("-f")
        .arg(dir.path())
        .args(["-t", "5", "-e", &dial])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip is installed (Debian package baresip)");
    let _ = tokio::task::spawn_blocking(move || phone.wait()).await;
    let heard = read_samples(&received(dir.path()));
    assert!(
        heard.len() > RATE as usize,
        "recorded {} samples",
        heard.len()
    );
    let tail = &heard[heard.len() - RATE as usize..];
    let (p_own, p_off) = (power(tail, 1000.0), power(tail, 600.0));
    assert!(
        p_own > 100.0 * p_off && p_own > 1e9,
        "1000 Hz at {p_own:.3e}, 600 Hz at {p_off:.3e}"
    );
    let mut entries = Vec::new();
    for _ in 0..30 {
        entries = server
            .store()
            .call_history(alice, &HistoryQuery::default())
            .await
            .unwrap()
            .entries;
        if !entries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0].other_number, "*43");
    assert_eq!(entries[0].other_name, "Echo test");
    assert_eq!(entries[0].outcome, PartyOutcome::Answered);
    server.shutdown().await;
}

/// A click-to-call whose target cannot be reached plays the configured announcement
/// (`media.unreachable_prompt`: here a 16 kHz stereo WAV of 700 Hz, resampled to the call's
/// 8 kHz G.711) to the user's phone, then hangs up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn click_to_call_announces_an_unreachable_target() {
    let tdb = TestDb::new(Db::Sqlite).await;
    let prompts = tempfile::tempdir().unwrap();
    let prompt = prompts.path().join("unreachable.wav");
    {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 16000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&prompt, spec).unwrap();
        for i in 0..24000 {
            let v = (9000.0 * (2.0 * std::f64::consts::PI * 700.0 * f64::from(i) / 16000.0).sin())
                as i16;
            w.write_sample(v).unwrap();
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
    }
    // Bob exists but no phone of his is registered.
    let extra = format!(
        "[media]\nunreachable_prompt = {:?}\n",
        prompt.display().to_string()
    );
    let (server, _data, _alice, token) = click_to_call_server(&tdb, &extra).await;
    let sip = common::sip_addr(&server, Transport::Udp);
    let dir = phone_dir("alice", "alice-secret", sip, 1000.0, ";answermode=auto");
    let mut me = start_phone(&server, dir.path(), "alice", 20).await;
    click_to_call(&server, &token, "200").await;
    // 1.5 s of announcement, then our BYE.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = me.kill();
    let _ = me.wait();
    let heard = read_samples(&received(dir.path()));
    assert!(
        heard.len() > RATE as usize,
        "recorded {} samples",
        heard.len()
    );
    let window = RATE as usize / 4;
    let best = heard
        .chunks(window)
        .filter(|c| c.len() == window)
        .map(|c| (power(c, 700.0), power(c, 425.0), power(c, 1000.0)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    assert!(
        best.0 > 1e9 && best.0 > 100.0 * best.1 && best.0 > 100.0 * best.2,
        "700 Hz {:.3e}, 425 Hz {:.3e}, 1000 Hz {:.3e}",
        best.0,
        best.1,
        best.2
    );
    server.shutdown().await;
}

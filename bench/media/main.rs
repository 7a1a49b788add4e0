//! Media relay benchmark: N concurrent G.711 calls at 20 ms packetisation, both directions,
//! through `media::relay` in this process. Prints, per N: packets sent and received, loss,
//! the interarrival jitter seen by the receivers (RFC 3550 §6.4.1, in ms), and the relay
//! threads' own CPU time (from /proc, threads named `media-*`) per call as a share of one core.
//!
//!   cargo bench --bench media                      # CALLS="250 500 1000 2000" SECS=10
//!   CALLS="2000 3000" SECS=20 cargo bench --bench media
//!
//! The load generator runs on this machine too (one thread, mio), so on a small machine it
//! competes with the relay for CPU; the jitter figure includes the generator's own scheduling
//! delays and is an upper bound for what the relay adds. Needs 6 file descriptors per call.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use switchboard::media::relay::{Relay, RelayConfig, Side};
use switchboard::media::sdp::Endpoint;

const PTIME: Duration = Duration::from_millis(20);
const PACKET: usize = 12 + 160; // RTP header + 20 ms of G.711

struct Leg {
    socket: UdpSocket,
    /// Where this leg sends: its side of the relay.
    to: SocketAddr,
    seq: u16,
    // Receive statistics for packets arriving at this leg.
    received: u64,
    jitter: f64,
    last_transit: Option<f64>,
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs bench targets too, without
    // it, and must not spend a minute loading the machine.
    if !std::env::args().any(|a| a == "--bench") {
        println!("media benchmark: run it with `cargo bench --bench media`");
        return;
    }
    let calls: Vec<usize> = std::env::var("CALLS")
        .unwrap_or_else(|_| "250 500 1000 2000".into())
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let secs: u64 = std::env::var("SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    println!(
        "media relay: G.711, 20 ms, both directions, {secs} s per step, {} CPUs",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>6} {:>10} {:>10} {:>8} {:>10} {:>12} {:>16}",
        "calls", "sent", "received", "loss%", "jitter_ms", "relay_cpu_s", "core%_per_call"
    );
    for n in calls {
        match run(n, Duration::from_secs(secs)) {
            Ok(()) => {}
            Err(e) => {
                println!("{n:>6} failed: {e}");
                break;
            }
        }
    }
}

fn run(n: usize, duration: Duration) -> io::Result<()> {
    let relay = Relay::start(RelayConfig {
        bind: "127.0.0.1".parse().unwrap(),
        advertise: "127.0.0.1".parse().unwrap(),
        port_min: 20000,
        port_max: 60000,
        threads: 0,
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    let mut poll = Poll::new()?;
    let mut legs: Vec<Leg> = Vec::with_capacity(2 * n);
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let s = relay
            .session()
            .map_err(|e| io::Error::other(e.to_string()))?;
        for side in [Side::Caller, Side::Callee] {
            let mut socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
            let local = socket.local_addr()?;
            s.set_remote(
                side,
                Endpoint {
                    rtp: local,
                    rtcp: SocketAddr::new(local.ip(), local.port() + 1),
                },
            );
            poll.registry()
                .register(&mut socket, Token(legs.len()), Interest::READABLE)?;
            let to = match side {
                Side::Caller => s.caller_facing(),
                Side::Callee => s.callee_facing(),
            };
            legs.push(Leg {
                socket,
                to,
                seq: 0,
                received: 0,
                jitter: 0.0,
                last_transit: None,
            });
        }
        sessions.push(s);
    }
    // Workers of the previous step notice their relay is gone within a second; wait them out so
    // the CPU figure is this step's relay alone.
    std::thread::sleep(Duration::from_millis(1200));

    let cpu0 = relay_cpu()?;
    let start = Instant::now();
    let mut next_tick = start;
    let mut events = Events::with_capacity(4096);
    let mut buf = [0u8; 2048];
    let mut sent = 0u64;
    let mut ssrc_of: HashMap<usize, u32> = HashMap::new();
    while start.elapsed() < duration {
        let now = Instant::now();
        if now >= next_tick {
            let stamp = start.elapsed().as_micros() as u64;
            for (i, leg) in legs.iter_mut().enumerate() {
                let mut pkt = [0u8; PACKET];
                pkt[0] = 0x80; // V=2
                pkt[2..4].copy_from_slice(&leg.seq.to_be_bytes());
                let ssrc = *ssrc_of.entry(i).or_insert(i as u32);
                pkt[8..12].copy_from_slice(&ssrc.to_be_bytes());
                pkt[12..20].copy_from_slice(&stamp.to_be_bytes());
                if leg.socket.send_to(&pkt, leg.to).is_ok() {
                    sent += 1;
                }
                leg.seq = leg.seq.wrapping_add(1);
            }
            next_tick += PTIME;
        }
        let wait = next_tick.saturating_duration_since(Instant::now());
        poll.poll(&mut events, Some(wait))?;
        for ev in events.iter() {
            let Some(leg) = legs.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                match leg.socket.recv_from(&mut buf) {
                    Ok((len, _)) if len >= 20 => {
                        let sent_us = u64::from_be_bytes(buf[12..20].try_into().unwrap_or([0; 8]));
                        let arrival = start.elapsed().as_micros() as f64;
                        let transit = arrival - sent_us as f64;
                        if let Some(last) = leg.last_transit {
                            let d = (transit - last).abs();
                            leg.jitter += (d - leg.jitter) / 16.0;
                        }
                        leg.last_transit = Some(transit);
                        leg.received += 1;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => break,
                }
            }
        }
    }
    let wall = start.elapsed();
    let cpu = relay_cpu()? - cpu0;
    // Packets still in flight at the end are not loss.
    std::thread::sleep(Duration::from_millis(100));
    let received: u64 = legs.iter().map(|l| l.received).sum();
    let jitter_ms = legs.iter().map(|l| l.jitter).sum::<f64>() / legs.len().max(1) as f64 / 1000.0;
    let loss_pct = if sent == 0 {
        0.0
    } else {
        (sent.saturating_sub(received)) as f64 * 100.0 / sent as f64
    };
    let per_call = cpu / wall.as_secs_f64() / n as f64 * 100.0;
    println!(
        "{n:>6} {sent:>10} {received:>10} {loss_pct:>8.3} {jitter_ms:>10.3} {cpu:>12.2} {per_call:>16.4}"
    );
    drop(sessions);
    Ok(())
}

/// CPU seconds of this process's relay threads (`media-*`), from /proc.
fn relay_cpu() -> io::Result<f64> {
    let tck = 100.0; // USER_HZ: 100 on every Linux architecture we run on
    let mut total = 0u64;
    for t in std::fs::read_dir("/proc/self/task")? {
        let dir = t?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("media-") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat"))?;
        let after = stat.rsplit_once(") ").map_or("", |x| x.1);
        let f: Vec<&str> = after.split(' ').collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += ticks(11) + ticks(12);
    }
    Ok(total as f64 / tck)
}

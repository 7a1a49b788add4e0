//! Media relay benchmark: N concurrent G.711 calls at 20 ms packetisation, both directions,
//! through `media::relay` in this process. Prints, per N: packets sent and received, loss,
//! the interarrival jitter seen by the receivers (RFC 3550 §6.4.1, in ms), and the relay
//! threads' own CPU time (from /proc, threads named `media-*`) per call as a share of one core.
//!
//!   cargo bench --bench media                      # CALLS="250 500 1000 2000" SECS=10
//!   CALLS="2000 3000" SECS=20 cargo bench --bench media
//!
//! The load generator runs on this machine too (`GEN_THREADS` threads, default 2, each with its
//! own share of the calls and its own mio poll), so on a small machine it competes with the
//! relay for CPU; the jitter figure includes the generator's own scheduling delays and is an
//! upper bound for what the relay adds. As real phones do, the streams are not in step: each
//! leg sends at its own phase within the 20 ms, and each packet carries the time it was sent.
//! Needs 6 file descriptors per call.
//!
//! `KERNEL=1` turns on kernel forwarding (`media::netfilter`). It runs in a network namespace
//! of its own (as root: `unshare`, loopback up, the two sysctls set there), so nothing of the
//! host's is touched; `NETNS=1` runs the user-space relay in one too, for a like-for-like
//! comparison. `DIRECT=1` sends each leg's packets straight to the other leg, with no relay: the
//! machine's CPU per call then is what the generator and loopback cost by themselves.
//!
//! Besides the relay's CPU (its threads, and the `nft` commands it ran), each line gives the
//! whole machine's busy time per call (from /proc/stat): with kernel forwarding the work moves
//! into the senders' system calls and softirqs, which the relay's own figure does not see, so
//! the machine's figure minus the `DIRECT=1` one is what relaying costs in all.

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
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let (kernel, direct) = (flag("KERNEL"), flag("DIRECT"));
    if kernel || flag("NETNS") {
        if let Err(e) = switchboard::media::netfilter::enter_private_netns() {
            println!("cannot enter a network namespace of our own: {e}");
            return;
        }
    }
    let mode = match (direct, kernel) {
        (true, _) => "no relay (DIRECT=1)",
        (false, true) => "kernel forwarding",
        (false, false) => "user-space relay",
    };
    println!(
        "media relay: G.711, 20 ms, both directions, {secs} s per step, {} CPUs, {mode}",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>6} {:>10} {:>10} {:>8} {:>10} {:>12} {:>16} {:>18}",
        "calls",
        "sent",
        "received",
        "loss%",
        "jitter_ms",
        "relay_cpu_s",
        "core%_per_call",
        "machine%_per_call"
    );
    for n in calls {
        match run(n, Duration::from_secs(secs), kernel, direct) {
            Ok(()) => {}
            Err(e) => {
                println!("{n:>6} failed: {e}");
                break;
            }
        }
    }
}

fn run(n: usize, duration: Duration, kernel: bool, direct: bool) -> io::Result<()> {
    let relay = Relay::start(RelayConfig {
        bind: "127.0.0.1".parse().unwrap(),
        advertise: "127.0.0.1".parse().unwrap(),
        port_min: 20000,
        port_max: 60000,
        threads: 0,
        reuse_after: RelayConfig::REUSE_AFTER,
        close_after: RelayConfig::CLOSE_AFTER,
        kernel_forwarding: kernel,
    })
    .map_err(|e| io::Error::other(e.to_string()))?;
    let mut legs: Vec<Leg> = Vec::with_capacity(2 * n);
    let mut sessions = Vec::with_capacity(n);
    for _ in 0..n {
        let s = relay
            .session()
            .map_err(|e| io::Error::other(e.to_string()))?;
        for side in [Side::Caller, Side::Callee] {
            let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap())?;
            let local = socket.local_addr()?;
            s.set_remote(
                side,
                Endpoint {
                    rtp: local,
                    rtcp: SocketAddr::new(local.ip(), local.port() + 1),
                },
            );
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
    if direct {
        // Each leg sends to its partner instead of to the relay.
        for pair in legs.chunks_mut(2) {
            if let [a, b] = pair {
                (a.to, b.to) = (b.socket.local_addr()?, a.socket.local_addr()?);
            }
        }
    }
    // Workers of the previous step notice their relay is gone within a second; wait them out so
    // the CPU figure is this step's relay alone.
    std::thread::sleep(Duration::from_millis(1200));

    let threads: usize = std::env::var("GEN_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
        .clamp(1, legs.len().max(1));
    let total = legs.len();
    // Leg i sends at i/total of the packet interval: the streams are spread over the 20 ms.
    let mut groups: Vec<Vec<(Duration, Leg)>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, leg) in legs.into_iter().enumerate() {
        let phase = PTIME.mul_f64(i as f64 / total as f64);
        groups[i % threads].push((phase, leg));
    }
    let cpu0 = relay_cpu()?;
    let machine0 = machine_busy()?;
    let start = Instant::now();
    let results: Vec<io::Result<Generated>> = std::thread::scope(|scope| {
        let handles: Vec<_> = groups
            .into_iter()
            .map(|group| scope.spawn(move || generate(group, start, duration)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(io::Error::other("generator panicked")))
            })
            .collect()
    });
    // CPU over the sending window: the generators spend a further 100 ms collecting packets in
    // flight, during which the relay only finishes work already counted as sent.
    let wall = duration;
    let cpu = relay_cpu()? - cpu0;
    let machine = machine_busy()? - machine0;
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut jitter_sum = 0.0;
    for r in results {
        let r = r?;
        sent += r.sent;
        received += r.received;
        jitter_sum += r.jitter_sum;
    }
    let jitter_ms = jitter_sum / total.max(1) as f64 / 1000.0;
    let loss_pct = if sent == 0 {
        0.0
    } else {
        (sent.saturating_sub(received)) as f64 * 100.0 / sent as f64
    };
    let per_call = cpu / wall.as_secs_f64() / n as f64 * 100.0;
    let machine_per_call = machine / wall.as_secs_f64() / n as f64 * 100.0;
    println!(
        "{n:>6} {sent:>10} {received:>10} {loss_pct:>8.3} {jitter_ms:>10.3} {cpu:>12.2} {per_call:>16.4} {machine_per_call:>18.4}"
    );
    drop(sessions);
    Ok(())
}

/// What one generator thread sent and received.
struct Generated {
    sent: u64,
    received: u64,
    /// Sum over its legs of each leg's final jitter estimate (µs).
    jitter_sum: f64,
}

/// Plays both directions of its legs until `duration` has passed since `start`: each leg sends
/// one packet every PTIME at its own phase, stamped with the time it is sent, and every packet
/// arriving at a leg updates that leg's RFC 3550 jitter estimate.
fn generate(
    group: Vec<(Duration, Leg)>,
    start: Instant,
    duration: Duration,
) -> io::Result<Generated> {
    let mut poll = Poll::new()?;
    let mut legs = Vec::with_capacity(group.len());
    // Due times in phase order, so the next leg to send is always at `next`.
    let mut due: Vec<(Instant, usize)> = Vec::with_capacity(group.len());
    for (i, (phase, mut leg)) in group.into_iter().enumerate() {
        poll.registry()
            .register(&mut leg.socket, Token(i), Interest::READABLE)?;
        due.push((start + phase, i));
        legs.push(leg);
    }
    let mut next = 0;
    let mut events = Events::with_capacity(4096);
    let mut buf = [0u8; 2048];
    let mut sent = 0u64;
    while start.elapsed() < duration {
        let now = Instant::now();
        // Everything due by now, in phase order (a late wake-up sends its backlog at once).
        for _ in 0..due.len() {
            let (at, i) = due[next];
            if at > now {
                break;
            }
            if let Some(leg) = legs.get_mut(i) {
                let mut pkt = [0u8; PACKET];
                pkt[0] = 0x80; // V=2
                pkt[2..4].copy_from_slice(&leg.seq.to_be_bytes());
                pkt[8..12].copy_from_slice(&(i as u32).to_be_bytes());
                let stamp = start.elapsed().as_micros() as u64;
                pkt[12..20].copy_from_slice(&stamp.to_be_bytes());
                if leg.socket.send_to(&pkt, leg.to).is_ok() {
                    sent += 1;
                }
                leg.seq = leg.seq.wrapping_add(1);
            }
            due[next].0 = at + PTIME;
            next = (next + 1) % due.len();
        }
        let wait = due.get(next).map_or(PTIME, |(at, _)| {
            at.saturating_duration_since(Instant::now())
        });
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
    // Packets still in flight at the end are not loss: take what arrives in the next 100 ms.
    let drain_until = Instant::now() + Duration::from_millis(100);
    while Instant::now() < drain_until {
        poll.poll(
            &mut events,
            Some(drain_until.saturating_duration_since(Instant::now())),
        )?;
        for ev in events.iter() {
            if let Some(leg) = legs.get_mut(ev.token().0) {
                while let Ok((len, _)) = leg.socket.recv_from(&mut buf) {
                    if len >= 20 {
                        leg.received += 1;
                    }
                }
            }
        }
    }
    Ok(Generated {
        sent,
        received: legs.iter().map(|l| l.received).sum(),
        jitter_sum: legs.iter().map(|l| l.jitter).sum(),
    })
}

/// USER_HZ: 100 on every Linux architecture we run on.
const TCK: f64 = 100.0;

/// CPU seconds of this process's relay threads (`media-*`), and of the child processes it
/// waited for (the `nft` commands of kernel forwarding), from /proc.
fn relay_cpu() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(") ").map_or("", |x| x.1);
    let f: Vec<&str> = after.split(' ').collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // cutime and cstime.
    let mut total = ticks(13) + ticks(14);
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
    Ok(total as f64 / TCK)
}

/// Busy CPU seconds of the whole machine (every state but idle and iowait), from /proc/stat.
fn machine_busy() -> io::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().unwrap_or_default();
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let all: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok(all.saturating_sub(idle) as f64 / TCK)
}

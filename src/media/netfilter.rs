//! Forwarding in the kernel: once a relayed stream needs nothing of us but a new address
//! (both parties latched, nothing transcoded, played or rewritten), nftables rewrites and
//! routes its packets itself, and they no longer reach our sockets.
//!
//! On loopback and on a NIC alike, most of what relaying a packet costs in user space is the
//! two system calls and the socket wake-up around it (see `bench/RESULTS.md`, media relay);
//! what the kernel does instead is a few hash lookups and four field rewrites on the packet
//! it already holds. This is what rtpengine's kernel module is for; nftables does it with no
//! module of ours.
//!
//! One table, `ip switchboard`, owned by this process (deleted and created afresh at start,
//! deleted again when the relay stops). Its prerouting chain runs before connection tracking
//! and matches a packet addressed to this host (not one routed through it) by (source address,
//! source port, our port) against the set `latched`, which holds exactly the streams the relay
//! decided to hand over, each with a counter. A matching packet is taken out of connection
//! tracking and rewritten from three maps keyed by our port: its source port becomes our other
//! side's, its destination the other party. The routing decision that follows sends it on
//! (forwarded, or delivered locally when the party is on this host), and only then, in
//! postrouting or input, does its source address become ours, from a map keyed by the packet
//! as prerouting left it (party, our other port, other party, its port: one stream each).
//! Rewriting the source address before routing would have the host see its own address
//! arriving from outside, which it drops unless told to accept it and to filter reverse paths
//! loosely; after routing, nothing of the host's needs changing but forwarding itself
//! (`net.ipv4.ip_forward=1`, which [`Netfilter::start`] checks).
//!
//! Everything else, strangers and packets from a party that moved included, reaches the
//! relay's sockets as before, which keeps the relay's latching rules the only ones: a party
//! that moves is latched again in user space, and the entry follows.
//! IPv4 only: IPv6 streams stay in user space.
//!
//! The host's own rules still see these packets (a forward chain with a drop policy, as Docker
//! installs, drops them), and the table is this process's alone: one Switchboard per host uses
//! kernel forwarding, and a process killed outright leaves its table until the next start.
//!
//! The table is driven through the `nft` command (one atomic batch per round of changes, read
//! from its standard input), on a thread of its own, so that a relay worker never waits for
//! the kernel: netlink's nf_tables protocol has no well-kept Rust crate, and `nft` is what an
//! operator reads the same table with (`nft list table ip switchboard`). The set's counters
//! are read every [`POLL_EVERY`] and turned into the sessions' activity (media timeouts see
//! forwarded packets) and the relay's packet counters.
//!
//! Owns: the nftables table and the thread that writes it. Must not touch: sockets, latching
//! decisions (the relay makes them and says which streams to hand over).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddrV4;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::relay::{Activity, Counters};

/// The table this process owns.
pub const TABLE: &str = "switchboard";

/// How often the counters of forwarded streams are read.
pub const POLL_EVERY: Duration = Duration::from_secs(5);

/// Streams handed over afresh go in at most one `nft` batch per this long: a batch costs about
/// 2.5 ms of CPU whatever its size, so many calls starting at once share batches instead of
/// each paying for one. Until its batch is applied, a stream is relayed by the workers.
/// Changes to streams already in the kernel do not wait.
const MIN_GAP: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum NetfilterError {
    #[error("needs {0}=1 (sysctl -w {0}=1)")]
    Sysctl(&'static str),
    #[error("cannot run nft: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("nft refused the table: {0}")]
    Nft(String),
}

/// One stream handed to the kernel: what arrives from `from` at our port `port` leaves from
/// `via` towards `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub from: SocketAddrV4,
    pub port: u16,
    pub via: SocketAddrV4,
    pub to: SocketAddrV4,
}

/// A change for one of our ports: hand this stream over, or take it back (`None`).
pub(super) type Change = (u16, Option<(Forward, Arc<Activity>)>);

enum Msg {
    /// The changes a session's new state makes, which go into the same batch.
    Changes(Vec<Change>),
    /// Delete the table and stop; the sender hears when that is done.
    Stop(std_mpsc::Sender<()>),
}

/// Moves the calling thread, and every thread and process it starts from then on, into a
/// network namespace of its own, with loopback up and the sysctls kernel forwarding needs set
/// there: how the tests and `bench/media` run it without touching the host's tables or
/// settings. Needs root (CAP_SYS_ADMIN) and the `ip` command.
pub fn enter_private_netns() -> std::io::Result<()> {
    // SAFETY: unshare takes no pointers; it changes the calling thread's namespaces only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let up = Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status()?;
    if !up.success() {
        return Err(std::io::Error::other("`ip link set lo up` failed"));
    }
    // /proc/sys/net is the opening thread's namespace's.
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")?;
    Ok(())
}

/// Handle to the thread that keeps the table. Cheap to clone; the table is deleted by
/// [`Netfilter::stop`], or when the last handle is gone.
#[derive(Clone)]
pub struct Netfilter {
    changes: std_mpsc::Sender<Msg>,
}

impl Netfilter {
    /// Checks the host, creates the table and starts the thread. `counters` gets the packets
    /// forwarded in the kernel added as they are read.
    pub fn start(counters: Arc<Counters>) -> Result<Netfilter, NetfilterError> {
        let key = "net.ipv4.ip_forward";
        let value = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
        if value.trim() != "1" {
            return Err(NetfilterError::Sysctl(key));
        }
        nft(&format!(
            "add table ip {TABLE}\ndelete table ip {TABLE}\n{}",
            table()
        ))?;
        // Activity is read from the set's counters as JSON: an nft that cannot list them would
        // have every forwarded call look silent.
        let listing = run_nft(&["-j", "list", "set", "ip", TABLE, "latched"], "");
        let json = listing
            .as_deref()
            .map(serde_json::from_slice::<serde_json::Value>);
        if !matches!(json, Ok(Ok(ref v)) if v["nftables"].is_array()) {
            let _ = nft(&format!("delete table ip {TABLE}\n"));
            return Err(NetfilterError::Nft(
                "`nft -j` lists no JSON (nft built without it?)".into(),
            ));
        }
        let (tx, rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("media-netfilter".into())
            .spawn(move || run(rx, counters))?;
        Ok(Netfilter { changes: tx })
    }

    /// Hands each stream arriving at a port to the kernel (`Some`) or takes it back (`None`),
    /// all in one batch: the two directions of a call change together. Takes effect a few
    /// milliseconds later; until then the relay forwards them itself.
    pub(super) fn set(&self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        // Once stopped, the table is gone for good: nothing more to do.
        let _ = self.changes.send(Msg::Changes(changes));
    }

    /// Deletes the table (every stream goes back to our sockets, which are closing anyway) and
    /// stops the thread; waits a little for it, so that a process about to exit leaves nothing
    /// behind.
    pub(super) fn stop(&self) {
        let (done, wait) = std_mpsc::channel();
        if self.changes.send(Msg::Stop(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(2));
        }
    }
}

/// The table: the set of handed-over streams, the four rewrite maps and the rule.
fn table() -> String {
    format!(
        "table ip {TABLE} {{
  set latched {{ type ipv4_addr . inet_service . inet_service; counter; }}
  map src_port {{ type inet_service : inet_service; }}
  map dst_addr {{ type inet_service : ipv4_addr; }}
  map dst_port {{ type inet_service : inet_service; }}
  map src_addr {{ type ipv4_addr . inet_service . ipv4_addr . inet_service : ipv4_addr; }}
  chain prerouting {{
    type filter hook prerouting priority raw; policy accept;
    fib daddr type local ip saddr . udp sport . udp dport @latched notrack udp sport set udp dport map @src_port ip daddr set udp dport map @dst_addr udp dport set udp dport map @dst_port
  }}
  chain postrouting {{
    type filter hook postrouting priority srcnat; policy accept;
    meta l4proto udp ip saddr set ip saddr . udp sport . ip daddr . udp dport map @src_addr
  }}
  chain input {{
    type filter hook input priority 100; policy accept;
    meta l4proto udp ip saddr set ip saddr . udp sport . ip daddr . udp dport map @src_addr
  }}
}}
"
    )
}

/// How long an `nft` command may take before it is killed: one that hangs (a netlink socket
/// that never answers) must not keep every later change, removals included, waiting.
const NFT_TIMEOUT: Duration = Duration::from_secs(2);

/// While the table is not what `installed` says (a batch or a rewrite failed), how often to try
/// writing it again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Bytes of IPv4 and UDP header in each packet the kernel counts; the relay counts payloads.
const HEADERS: u64 = 28;

/// Runs `nft` with `args`, `input` on its standard input; its standard output when it
/// succeeds. Killed after [`NFT_TIMEOUT`].
fn run_nft(args: &[&str], input: &str) -> Result<Vec<u8>, NetfilterError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let input = input.to_owned();
    let (done, result) = std_mpsc::channel();
    // The output is read to its end while the input is written (a listing is larger than a
    // pipe holds); a thread does it so that this one can give up waiting.
    std::thread::Builder::new()
        .name("media-nft".into())
        .spawn(move || {
            if let Some(mut stdin) = stdin {
                let _ = stdin.write_all(input.as_bytes());
            }
            let _ = done.send(child.wait_with_output());
        })?;
    match result.recv_timeout(NFT_TIMEOUT) {
        Ok(Ok(out)) if out.status.success() => Ok(out.stdout),
        Ok(Ok(out)) => Err(NetfilterError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        )),
        Ok(Err(e)) => Err(NetfilterError::Spawn(e)),
        Err(_) => {
            // SAFETY: kill takes no pointers; the child is not reaped until its waiting thread
            // sees it exit, so the pid is still its own.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            Err(NetfilterError::Nft(format!(
                "no answer within {NFT_TIMEOUT:?}; killed"
            )))
        }
    }
}

/// Runs `nft -f -` with `script`.
fn nft(script: &str) -> Result<(), NetfilterError> {
    run_nft(&["-f", "-"], script).map(|_| ())
}

/// A stream in the kernel, with what its counter read last time.
struct Installed {
    forward: Forward,
    activity: Arc<Activity>,
    packets: u64,
    bytes: u64,
}

/// The thread's state: what the table holds (or is to hold, while `broken`).
struct Keeper {
    installed: HashMap<u16, Installed>,
    /// The last write failed: the table is not known to match `installed`.
    broken: bool,
    counters: Arc<Counters>,
}

fn run(changes: std_mpsc::Receiver<Msg>, counters: Arc<Counters>) {
    let mut k = Keeper {
        installed: HashMap::new(),
        broken: false,
        counters,
    };
    let mut next_poll = Instant::now() + POLL_EVERY;
    let mut last_batch: Option<Instant> = None;
    let mut last_rewrite: Option<Instant> = None;
    let mut pending: HashMap<u16, Option<(Forward, Arc<Activity>)>> = HashMap::new();
    let stopped = loop {
        let mut wait = next_poll.saturating_duration_since(Instant::now());
        if k.broken {
            wait = wait.min(RETRY_EVERY);
        }
        if !pending.is_empty() {
            // Held back by MIN_GAP: only until the gap is over.
            let due = last_batch.map_or(Instant::now(), |t| t + MIN_GAP);
            wait = wait.min(due.saturating_duration_since(Instant::now()));
        }
        let first = match changes.recv_timeout(wait) {
            Ok(m) => Some(m),
            Err(std_mpsc::RecvTimeoutError::Timeout) => None,
            Err(std_mpsc::RecvTimeoutError::Disconnected) => break None,
        };
        // Everything queued so far goes into one batch; the last word on a port wins.
        let mut stop = None;
        for m in first.into_iter().chain(changes.try_iter()) {
            match m {
                Msg::Changes(list) => pending.extend(list),
                Msg::Stop(done) => {
                    stop = Some(done);
                    break;
                }
            }
        }
        if stop.is_some() {
            break stop;
        }
        // A change to a stream in the kernel goes at once (a party moved, a prompt starts, the
        // call ended: forwarding on as before would be wrong); streams handed over afresh wait
        // for the gap, and go together.
        let urgent = pending.keys().any(|port| k.installed.contains_key(port));
        let gap_over = last_batch.map_or(true, |t| t.elapsed() >= MIN_GAP);
        if !pending.is_empty() && (urgent || gap_over) && k.apply(std::mem::take(&mut pending)) {
            last_batch = Some(Instant::now());
        }
        if k.broken && last_rewrite.map_or(true, |t| t.elapsed() >= RETRY_EVERY) {
            k.rewrite();
            last_rewrite = Some(Instant::now());
        }
        k.counters.kernel_streams.store(
            if k.broken {
                0
            } else {
                k.installed.len() as u64
            },
            Ordering::Relaxed,
        );
        if Instant::now() >= next_poll {
            if k.broken {
                // Whatever the kernel still forwards cannot be counted: no call is to look
                // silent for it.
                k.touch_all();
            } else if !k.installed.is_empty() {
                k.poll_counters();
            }
            next_poll = Instant::now() + POLL_EVERY;
        }
    };
    if let Err(e) = nft(&format!("delete table ip {TABLE}\n")) {
        tracing::warn!(error = %e, "media: could not delete the kernel forwarding table");
    }
    k.counters.kernel_streams.store(0, Ordering::Relaxed);
    if let Some(done) = stopped {
        let _ = done.send(());
    }
}

impl Keeper {
    /// Writes a round of changes; false when there was nothing to write.
    fn apply(&mut self, pending: HashMap<u16, Option<(Forward, Arc<Activity>)>>) -> bool {
        let batch = Batch::plan(&self.installed, &pending);
        let wrote = !batch.is_empty();
        if wrote && !self.broken {
            if let Err(e) = nft(&batch.script()) {
                tracing::error!(error = %e, "media: kernel forwarding batch refused; rewriting the table");
                self.broken = true;
            }
        }
        batch.commit(&mut self.installed, pending);
        wrote
    }

    /// Writes the whole table afresh from `installed`. When even that fails, deletes the table
    /// (every stream back to the relay's sockets, which relay whatever reaches them) and
    /// stays broken, to try again later.
    fn rewrite(&mut self) {
        let mut script = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n{}", table());
        let all: Vec<Forward> = self.installed.values().map(|i| i.forward).collect();
        if !all.is_empty() {
            elements(&mut script, "add", &all);
        }
        match nft(&script) {
            Ok(()) => {
                for i in self.installed.values_mut() {
                    (i.packets, i.bytes) = (0, 0);
                }
                self.broken = false;
                tracing::info!(
                    streams = all.len(),
                    "media: kernel forwarding table rewritten"
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "media: cannot rewrite the kernel forwarding table; streams stay with the relay");
                let _ = nft(&format!("delete table ip {TABLE}\n"));
            }
        }
    }

    fn touch_all(&self) {
        let now = Instant::now();
        for i in self.installed.values() {
            i.activity.touch(now);
        }
    }

    /// Reads the set's counters: a stream whose counter moved had traffic since the last
    /// reading. When they cannot be read, every stream counts as active: a failed reading must
    /// not hang up calls whose media is flowing (a party that vanished is still caught by the
    /// next reading that works). The table is then written afresh: someone may have deleted
    /// it (`nft flush ruleset` in a firewall's reload), which sends every stream back to the
    /// relay's sockets until it is.
    fn poll_counters(&mut self) {
        let now = Instant::now();
        let read = run_nft(&["-j", "list", "set", "ip", TABLE, "latched"], "")
            .map(|out| read_counters(&out));
        let found = match read {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "media: cannot read the kernel forwarding counters");
                self.touch_all();
                self.broken = true;
                return;
            }
        };
        for (from, port, packets, bytes) in found {
            let Some(i) = self.installed.get_mut(&port) else {
                continue;
            };
            if i.forward.from != from || packets <= i.packets {
                continue;
            }
            i.activity.touch(now);
            let (dp, db) = (packets - i.packets, bytes.saturating_sub(i.bytes));
            self.counters.packets.fetch_add(dp, Ordering::Relaxed);
            self.counters
                .bytes
                .fetch_add(db.saturating_sub(dp * HEADERS), Ordering::Relaxed);
            i.packets = packets;
            i.bytes = bytes;
        }
    }
}

/// The elements to delete and to add for a round of changes.
struct Batch {
    delete: Vec<Forward>,
    add: Vec<Forward>,
}

impl Batch {
    fn plan(
        installed: &HashMap<u16, Installed>,
        pending: &HashMap<u16, Option<(Forward, Arc<Activity>)>>,
    ) -> Batch {
        let mut b = Batch {
            delete: Vec::new(),
            add: Vec::new(),
        };
        for (port, want) in pending {
            let have = installed.get(port).map(|i| i.forward);
            let want = want.as_ref().map(|(f, _)| *f);
            if have == want {
                continue;
            }
            b.delete.extend(have);
            b.add.extend(want);
        }
        b
    }

    fn is_empty(&self) -> bool {
        self.delete.is_empty() && self.add.is_empty()
    }

    /// One transaction: deletions first, so that a port that changes stream is free again.
    fn script(&self) -> String {
        let mut s = String::new();
        for (verb, list) in [("delete", &self.delete), ("add", &self.add)] {
            if list.is_empty() {
                continue;
            }
            elements(&mut s, verb, list);
        }
        s
    }

    fn commit(
        self,
        installed: &mut HashMap<u16, Installed>,
        pending: HashMap<u16, Option<(Forward, Arc<Activity>)>>,
    ) {
        for (port, want) in pending {
            match want {
                Some((forward, activity)) => {
                    // The same stream, perhaps of a new session on the same ports: its element
                    // (and counter) stays, the session's activity is the new one.
                    if let Some(i) = installed.get_mut(&port).filter(|i| i.forward == forward) {
                        i.activity = activity;
                    } else {
                        installed.insert(
                            port,
                            Installed {
                                forward,
                                activity,
                                packets: 0,
                                bytes: 0,
                            },
                        );
                    }
                }
                None => {
                    installed.remove(&port);
                }
            }
        }
    }
}

/// `verb element` commands for the set and the four maps, each with all of `list` (a map's
/// element is deleted by its key alone).
fn elements(s: &mut String, verb: &str, list: &[Forward]) {
    let add = verb == "add";
    let mut each = |set: &str, item: &dyn Fn(&mut String, &Forward)| {
        let _ = write!(s, "{verb} element ip {TABLE} {set} {{ ");
        for f in list {
            item(s, f);
            s.push_str(", ");
        }
        s.push_str("}\n");
    };
    each("latched", &|s, f| {
        let _ = write!(s, "{} . {} . {}", f.from.ip(), f.from.port(), f.port);
    });
    // Keyed by our port: what prerouting rewrites.
    type Value = fn(&Forward) -> String;
    let maps: [(&str, Value); 3] = [
        ("src_port", |f| f.via.port().to_string()),
        ("dst_addr", |f| f.to.ip().to_string()),
        ("dst_port", |f| f.to.port().to_string()),
    ];
    for (map, value) in maps {
        each(map, &|s, f| {
            let _ = write!(s, "{}", f.port);
            if add {
                let _ = write!(s, " : {}", value(f));
            }
        });
    }
    // Keyed by the packet as prerouting left it: the source address, rewritten after routing.
    each("src_addr", &|s, f| {
        let _ = write!(
            s,
            "{} . {} . {} . {}",
            f.from.ip(),
            f.via.port(),
            f.to.ip(),
            f.to.port()
        );
        if add {
            let _ = write!(s, " : {}", f.via.ip());
        }
    });
}

/// (source, our port, packets, bytes) of each element in `nft -j list set` output.
fn read_counters(json: &[u8]) -> Vec<(SocketAddrV4, u16, u64, u64)> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let sets = doc["nftables"].as_array().into_iter().flatten();
    for elem in sets.filter_map(|o| o["set"]["elem"].as_array()).flatten() {
        let e = &elem["elem"];
        let key = e["val"]["concat"].as_array();
        let (Some([addr, sport, port]), Some(packets), Some(bytes)) = (
            key.map(Vec::as_slice),
            e["counter"]["packets"].as_u64(),
            e["counter"]["bytes"].as_u64(),
        ) else {
            continue;
        };
        let (Some(Ok(ip)), Some(sport), Some(port)) = (
            addr.as_str().map(str::parse),
            sport.as_u64().and_then(|p| u16::try_from(p).ok()),
            port.as_u64().and_then(|p| u16::try_from(p).ok()),
        ) else {
            continue;
        };
        found.push((SocketAddrV4::new(ip, sport), port, packets, bytes));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(port: u16, to: u16) -> Forward {
        Forward {
            from: format!("10.1.0.2:{}", 40000 + port % 2).parse().unwrap(),
            port,
            via: format!("10.2.0.1:{}", port + 2).parse().unwrap(),
            to: format!("10.2.0.2:{to}").parse().unwrap(),
        }
    }

    #[test]
    fn a_round_deletes_what_changed_then_adds_it_anew() {
        let activity = Arc::new(Activity::new());
        let mut installed = HashMap::new();
        let mut pending = HashMap::new();
        pending.insert(30000, Some((fwd(30000, 41000), activity.clone())));
        pending.insert(30001, Some((fwd(30001, 41001), activity.clone())));
        let b = Batch::plan(&installed, &pending);
        assert!(b.delete.is_empty());
        assert_eq!(b.add.len(), 2);
        b.commit(&mut installed, pending);
        assert_eq!(installed.len(), 2);

        // The same again is no work; a moved party is a delete and an add; gone is a delete.
        let mut pending = HashMap::new();
        pending.insert(30000, Some((fwd(30000, 41000), activity.clone())));
        pending.insert(30001, Some((fwd(30001, 45001), activity.clone())));
        let b = Batch::plan(&installed, &pending);
        assert_eq!(b.delete, vec![fwd(30001, 41001)]);
        assert_eq!(b.add, vec![fwd(30001, 45001)]);
        let script = b.script();
        let del = script.find("delete element").unwrap();
        let add = script.find("add element").unwrap();
        assert!(del < add, "{script}");
        assert!(
            script.contains("delete element ip switchboard latched { 10.1.0.2 . 40001 . 30001, }")
        );
        assert!(script.contains("delete element ip switchboard dst_port { 30001, }"));
        assert!(script.contains("add element ip switchboard dst_port { 30001 : 45001, }"));
        assert!(script.contains(
            "delete element ip switchboard src_addr { 10.1.0.2 . 30003 . 10.2.0.2 . 41001, }"
        ));
        assert!(script.contains(
            "add element ip switchboard src_addr { 10.1.0.2 . 30003 . 10.2.0.2 . 45001 : 10.2.0.1, }"
        ));
        assert!(script.contains("add element ip switchboard src_port { 30001 : 30003, }"));
        b.commit(&mut installed, pending);

        let mut pending = HashMap::new();
        pending.insert(30000, None);
        pending.insert(30002, None);
        let b = Batch::plan(&installed, &pending);
        assert_eq!(b.delete, vec![fwd(30000, 41000)]);
        assert!(b.add.is_empty());
        b.commit(&mut installed, pending);
        assert_eq!(installed.keys().copied().collect::<Vec<_>>(), vec![30001]);
    }

    #[test]
    fn counters_are_read_from_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
          {"set": {"family": "ip", "name": "latched", "table": "switchboard",
            "type": ["ipv4_addr", "inet_service", "inet_service"], "handle": 6,
            "elem": [{"elem": {"val": {"concat": ["10.1.0.2", 40000, 30000]}, "counter": {"packets": 3, "bytes": 600}}},
                     {"elem": {"val": {"concat": ["10.2.0.2", 41000, 30002]}, "counter": {"packets": 1, "bytes": 200}}},
                     {"elem": {"val": {"concat": ["bogus", 41000, 30004]}, "counter": {"packets": 1, "bytes": 200}}}],
            "stmt": [{"counter": null}]}}]}"#;
        assert_eq!(
            read_counters(json),
            vec![
                ("10.1.0.2:40000".parse().unwrap(), 30000, 3, 600),
                ("10.2.0.2:41000".parse().unwrap(), 30002, 1, 200),
            ]
        );
        assert!(read_counters(b"not json").is_empty());
    }
}

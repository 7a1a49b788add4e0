//! Brute-force guard for authentication, sans-IO.
//!
//! Owns: counting authentication failures per source address in a sliding
//! window, and the list of bans. Does not own: deciding what a failure is
//! (the registrar's `auth_failure`), dropping packets from banned
//! addresses (the transport layer asks [`Guard::is_banned`] before
//! parsing), persisting bans (the driver stores what
//! [`Guard::record_failure`] returns and feeds it back through
//! [`Guard::restore`]), or clocks (time comes in as unix milliseconds).
//!
//! Choices:
//! - A success does not reset the count. Otherwise an attacker holding
//!   one valid account (or sharing a NAT with a working phone) could
//!   interleave successes to guess other accounts' passwords without
//!   limit. The price: a user who mistypes a few times then gets it right
//!   carries those failures until they leave the window.
//! - IPv6 sources are counted and banned per /64: one host normally
//!   controls a whole /64 and could otherwise rotate addresses freely.
//!   IPv4-mapped IPv6 addresses count as the IPv4 address.
//! - A failure from an address already banned is not counted and does not
//!   extend the ban; the transport should not have let it through.
//! - Memory is bounded: at most `max_tracked` addresses with failure
//!   history (oldest tracked first out when full) and at most
//!   `max_tracked` bans (the one ending soonest goes when full). Each
//!   tracked address keeps at most `max_failures` timestamps.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};

/// How long a ban made here outlives its absence from the store's list (see [`Guard::sync`]).
pub const SYNC_GRACE_MS: u64 = 30_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Failures within `window_ms` that trigger a ban (at least 1).
    pub max_failures: u32,
    pub window_ms: u64,
    pub ban_ms: u64,
    /// Bound on addresses with failure history, and on bans.
    pub max_tracked: usize,
}

impl Default for GuardConfig {
    fn default() -> GuardConfig {
        GuardConfig {
            max_failures: 5,
            window_ms: 60_000,
            ban_ms: 600_000,
            max_tracked: 100_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ban {
    /// The banned address; for IPv6 the /64 network address.
    pub ip: IpAddr,
    pub until_ms: u64,
    /// Failures that led to it.
    pub failures: u32,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Failure times inside the window, oldest first, at most
    /// `max_failures` of them.
    times: VecDeque<u64>,
    /// Which incarnation of this address's entry `order` refers to.
    generation: u64,
}

#[derive(Debug, Clone)]
pub struct Guard {
    config: GuardConfig,
    failures: HashMap<IpAddr, Entry>,
    /// Creation order of `failures` entries, for oldest-first eviction.
    /// Entries removed since (banned, pruned) leave stale items here,
    /// recognised by their generation and compacted away.
    order: VecDeque<(IpAddr, u64)>,
    next_generation: u64,
    bans: HashMap<IpAddr, Ban>,
}

/// The key an address is counted and banned under.
pub fn ban_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(net))
        }
        v4 => v4,
    }
}

impl Guard {
    pub fn new(config: GuardConfig) -> Guard {
        Guard {
            config: GuardConfig {
                max_failures: config.max_failures.max(1),
                max_tracked: config.max_tracked.max(1),
                ..config
            },
            failures: HashMap::new(),
            order: VecDeque::new(),
            next_generation: 0,
            bans: HashMap::new(),
        }
    }

    pub fn config(&self) -> &GuardConfig {
        &self.config
    }

    pub fn is_banned(&self, ip: IpAddr, now_ms: u64) -> bool {
        self.bans
            .get(&ban_key(ip))
            .is_some_and(|b| now_ms < b.until_ms)
    }

    /// Counts one authentication failure; `Some` when it triggers a ban,
    /// which the driver should persist.
    pub fn record_failure(&mut self, ip: IpAddr, now_ms: u64) -> Option<Ban> {
        if self.is_banned(ip, now_ms) {
            return None;
        }
        let key = ban_key(ip);
        let window = self.config.window_ms;
        let max = self.config.max_failures as usize;
        if !self.failures.contains_key(&key) {
            self.make_room();
            let generation = self.next_generation;
            self.next_generation = self.next_generation.wrapping_add(1);
            self.failures.insert(
                key,
                Entry {
                    times: VecDeque::new(),
                    generation,
                },
            );
            self.order.push_back((key, generation));
        }
        let entry = self.failures.get_mut(&key)?;
        while entry
            .times
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now_ms)
        {
            entry.times.pop_front();
        }
        entry.times.push_back(now_ms);
        while entry.times.len() > max {
            entry.times.pop_front();
        }
        if entry.times.len() < max {
            return None;
        }
        let failures = u32::try_from(entry.times.len()).unwrap_or(u32::MAX);
        self.failures.remove(&key);
        let ban = Ban {
            ip: key,
            until_ms: now_ms.saturating_add(self.config.ban_ms),
            failures,
        };
        self.insert_ban(ban, now_ms);
        Some(ban)
    }

    /// Evicts the oldest tracked address when at the cap.
    fn make_room(&mut self) {
        if self.order.len() > self.config.max_tracked.saturating_mul(2) {
            self.compact();
        }
        while self.failures.len() >= self.config.max_tracked {
            let Some((ip, generation)) = self.order.pop_front() else {
                // Cannot happen (every entry is in `order`); stay bounded
                // regardless.
                self.failures.clear();
                break;
            };
            if self
                .failures
                .get(&ip)
                .is_some_and(|e| e.generation == generation)
            {
                self.failures.remove(&ip);
            }
        }
    }

    fn compact(&mut self) {
        let failures = &self.failures;
        self.order.retain(|(ip, generation)| {
            failures
                .get(ip)
                .is_some_and(|e| e.generation == *generation)
        });
    }

    fn insert_ban(&mut self, ban: Ban, now_ms: u64) {
        if !self.bans.contains_key(&ban.ip) && self.bans.len() >= self.config.max_tracked {
            self.bans.retain(|_, b| now_ms < b.until_ms);
            if self.bans.len() >= self.config.max_tracked {
                let soonest = self.bans.values().min_by_key(|b| b.until_ms).map(|b| b.ip);
                if let Some(ip) = soonest {
                    self.bans.remove(&ip);
                }
            }
        }
        self.bans.insert(ban.ip, ban);
    }

    /// Lifts a ban (and forgets the address's failures); whether there
    /// was one.
    pub fn unban(&mut self, ip: IpAddr) -> bool {
        let key = ban_key(ip);
        self.failures.remove(&key);
        self.bans.remove(&key).is_some()
    }

    /// Bans in force, soonest ending first.
    pub fn bans(&self, now_ms: u64) -> Vec<Ban> {
        let mut out: Vec<Ban> = self
            .bans
            .values()
            .filter(|b| now_ms < b.until_ms)
            .copied()
            .collect();
        out.sort_by_key(|b| (b.until_ms, b.ip));
        out
    }

    /// Reloads bans from the store at start; addresses are normalised as
    /// [`ban_key`] does. Expired ones go at the next [`Guard::prune`].
    pub fn restore(&mut self, bans: Vec<Ban>) {
        for b in bans {
            let ban = Ban {
                ip: ban_key(b.ip),
                ..b
            };
            // Eviction must not depend on a clock here: treat nothing as
            // expired.
            self.insert_ban(ban, 0);
        }
    }

    /// Makes the bans in force the store's list: a ban lifted elsewhere (the CLI, another
    /// node) is lifted here, and one made elsewhere applies here. Failure counts are kept.
    ///
    /// A ban made here within the last [`SYNC_GRACE_MS`] stays even when the list lacks it:
    /// its write may still be on its way (or have failed, which is only logged), and dropping
    /// it would give the source a fresh start, its failure history gone with the ban.
    pub fn sync(&mut self, stored: Vec<Ban>, now_ms: u64) {
        let keep: std::collections::HashSet<IpAddr> =
            stored.iter().map(|b| ban_key(b.ip)).collect();
        let ban_ms = self.config.ban_ms;
        self.bans.retain(|ip, b| {
            let made_ms = b.until_ms.saturating_sub(ban_ms);
            keep.contains(ip) || now_ms >= b.until_ms || now_ms < made_ms + SYNC_GRACE_MS
        });
        self.restore(stored);
    }

    /// Drops ended bans and failure history that left the window. Run it
    /// on a timer (e.g. every minute).
    pub fn prune(&mut self, now_ms: u64) {
        self.bans.retain(|_, b| now_ms < b.until_ms);
        let window = self.config.window_ms;
        self.failures.retain(|_, e| {
            e.times
                .back()
                .is_some_and(|&t| t.saturating_add(window) > now_ms)
        });
        self.compact();
    }

    /// Addresses with failure history.
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bans_on_the_fifth_failure_within_the_window() {
        let mut g = Guard::new(GuardConfig::default());
        let a = ip("203.0.113.9");
        for i in 0..4 {
            assert_eq!(g.record_failure(a, T0 + i * 1000), None);
            assert!(!g.is_banned(a, T0 + i * 1000));
        }
        let ban = g.record_failure(a, T0 + 10_000).expect("ban");
        assert_eq!(
            ban,
            Ban {
                ip: a,
                until_ms: T0 + 10_000 + 600_000,
                failures: 5
            }
        );
        assert!(g.is_banned(a, T0 + 10_000));
        assert!(g.is_banned(a, T0 + 609_999));
        assert!(!g.is_banned(a, T0 + 610_000));
        assert!(!g.is_banned(ip("203.0.113.10"), T0 + 10_000));
        assert_eq!(g.bans(T0 + 10_000), [ban]);
        assert!(g.bans(T0 + 610_000).is_empty());
        // While banned, more failures neither count nor extend.
        assert_eq!(g.record_failure(a, T0 + 20_000), None);
        assert_eq!(g.bans(T0 + 20_000), [ban]);
        // After the ban the count starts from zero.
        assert_eq!(g.record_failure(a, T0 + 610_000), None);
    }

    #[test]
    fn window_slides() {
        let mut g = Guard::new(GuardConfig::default());
        let a = ip("198.51.100.1");
        for i in 0..4 {
            assert_eq!(g.record_failure(a, T0 + i), None);
        }
        // The first four leave the window 60 s after they happened.
        assert_eq!(g.record_failure(a, T0 + 60_000), None);
        assert_eq!(g.record_failure(a, T0 + 60_001), None);
        assert_eq!(g.record_failure(a, T0 + 60_002), None);
        assert_eq!(g.record_failure(a, T0 + 60_003), None);
        // Now five within 60 s: the ones at +60_000..=+60_003 and this.
        assert!(g.record_failure(a, T0 + 60_004).is_some());
    }

    #[test]
    fn a_fresh_ban_survives_a_sync_that_does_not_list_it_yet() {
        let cfg = GuardConfig {
            max_failures: 1,
            ..GuardConfig::default()
        };
        let mut g = Guard::new(cfg);
        let a = ip("192.0.2.77");
        let ban = g.record_failure(a, T0).expect("ban");
        // The store's list was read before the ban's write landed (or the write failed).
        g.sync(Vec::new(), T0 + 1_000);
        assert!(g.is_banned(a, T0 + 1_000));
        // Listed: stays; lifted elsewhere once the grace is over: lifted here.
        g.sync(vec![ban], T0 + 5_000);
        assert!(g.is_banned(a, T0 + 5_000));
        g.sync(Vec::new(), T0 + SYNC_GRACE_MS + 1);
        assert!(!g.is_banned(a, T0 + SYNC_GRACE_MS + 1));
    }

    #[test]
    fn unban_restore_and_prune() {
        let cfg = GuardConfig {
            max_failures: 2,
            ..GuardConfig::default()
        };
        let mut g = Guard::new(cfg);
        let a = ip("192.0.2.1");
        g.record_failure(a, T0);
        let ban = g.record_failure(a, T0).expect("ban");
        assert!(g.unban(a));
        assert!(!g.unban(a));
        assert!(!g.is_banned(a, T0));

        let mut h = Guard::new(cfg);
        h.restore(vec![
            ban,
            Ban {
                ip: ip("192.0.2.2"),
                until_ms: T0 - 1,
                failures: 9,
            },
        ]);
        assert!(h.is_banned(a, T0));
        assert_eq!(h.bans(T0), [ban]);
        h.record_failure(ip("192.0.2.3"), T0);
        assert_eq!(h.tracked(), 1);
        h.prune(T0 + 59_999);
        assert_eq!(h.tracked(), 1);
        h.prune(T0 + 60_000);
        assert_eq!(h.tracked(), 0);
        h.prune(T0 + 600_000);
        assert!(h.bans(0).is_empty());
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_v4_as_v4() {
        let mut g = Guard::new(GuardConfig {
            max_failures: 3,
            ..GuardConfig::default()
        });
        g.record_failure(ip("2001:db8:1:2::1"), T0);
        g.record_failure(ip("2001:db8:1:2:ffff::2"), T0);
        let ban = g.record_failure(ip("2001:db8:1:2::3"), T0).expect("ban");
        assert_eq!(ban.ip, ip("2001:db8:1:2::"));
        assert!(g.is_banned(ip("2001:db8:1:2:abcd::9"), T0));
        assert!(!g.is_banned(ip("2001:db8:1:3::1"), T0));

        g.record_failure(ip("::ffff:192.0.2.7"), T0);
        g.record_failure(ip("192.0.2.7"), T0);
        assert!(g.record_failure(ip("::ffff:192.0.2.7"), T0).is_some());
        assert!(g.is_banned(ip("192.0.2.7"), T0));
    }

    #[test]
    fn memory_is_bounded_oldest_first() {
        let mut g = Guard::new(GuardConfig {
            max_failures: 2,
            max_tracked: 3,
            ..GuardConfig::default()
        });
        for i in 1..=3u8 {
            g.record_failure(IpAddr::from([10, 0, 0, i]), T0);
        }
        assert_eq!(g.tracked(), 3);
        // A fourth address evicts the oldest (10.0.0.1)...
        g.record_failure(ip("10.0.0.4"), T0);
        assert_eq!(g.tracked(), 3);
        // ...so its next failure starts over, while 10.0.0.3 reaches two.
        assert_eq!(g.record_failure(ip("10.0.0.1"), T0), None);
        assert!(g.record_failure(ip("10.0.0.3"), T0).is_some());
        // Churn through many addresses: still bounded.
        for i in 0..10_000u32 {
            g.record_failure(IpAddr::from((0x0b00_0000u32 + i).to_be_bytes()), T0);
            assert!(g.tracked() <= 3);
            assert!(g.order.len() <= 2 * 3 + 1);
        }
        // Bans are bounded too; the one ending soonest goes first.
        for i in 0..10u64 {
            let a = IpAddr::from([172, 16, 0, i as u8]);
            g.record_failure(a, T0 + i);
            g.record_failure(a, T0 + i);
        }
        assert!(g.bans.len() <= 3);
        assert!(g.is_banned(ip("172.16.0.9"), T0 + 9));
        assert!(!g.is_banned(ip("172.16.0.0"), T0 + 9));
    }

    #[test]
    fn zero_config_values_are_safe() {
        let mut g = Guard::new(GuardConfig {
            max_failures: 0,
            window_ms: 0,
            ban_ms: 0,
            max_tracked: 0,
        });
        // One failure is enough, and a zero-length ban has already ended.
        assert!(g.record_failure(ip("192.0.2.1"), T0).is_some());
        assert!(!g.is_banned(ip("192.0.2.1"), T0));
        let mut g = Guard::new(GuardConfig {
            max_failures: 3,
            ..GuardConfig::default()
        });
        assert!(g.record_failure(ip("192.0.2.1"), u64::MAX).is_none());
        assert!(!g.is_banned(ip("192.0.2.1"), u64::MAX));
    }
}

//! Hash tables keyed by ids this server issues itself: transaction ids, call ids, relay
//! session ids. It owns nothing but the hash function for them.
//!
//! The standard `HashMap` hashes with SipHash, which keeps a table fast when its keys are chosen
//! by somebody hostile (a peer picking Call-IDs or branches to collide). An id we hand out from
//! a counter is not chosen by anybody, so that protection buys nothing for these tables, and
//! SipHash was 4 % of the SIP core's instructions per call (bench/callgrind.sh calls). Keys a
//! peer writes (branches, Call-IDs, tags) stay in ordinary `HashMap`s.
//!
//! Hand-written because it is one multiplication: a crate for it would be larger than the code.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` for keys that are ids we issued (integers or newtypes around one).
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// A new, empty [`IdMap`].
pub fn new<K, V>() -> IdMap<K, V> {
    IdMap::default()
}

/// Fibonacci hashing: multiplying by 2^64/φ spreads consecutive ids over the whole word, so
/// both the bucket index (low bits) and the tag hashbrown takes from the top seven bits differ
/// between neighbours.
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

const PHI: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by integer keys; correct (if slower) for anything else hashed here.
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(PHI);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash(n: u64) -> u64 {
        BuildHasherDefault::<IdHasher>::default().hash_one(n)
    }

    #[test]
    fn consecutive_ids_differ_in_low_and_top_bits() {
        let hashes: Vec<u64> = (1..=4096).map(hash).collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 0xfff).collect();
        let top: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        // 4,096 ids over 4,096 low-bit buckets: a spread hash fills most of them; the identity
        // would fill all, a poor one a handful.
        assert!(low.len() > 2000, "{} distinct low-bit buckets", low.len());
        // Every one of the 128 seven-bit tags is used.
        assert_eq!(top.len(), 128);
    }

    #[test]
    fn a_map_keyed_by_ids_works_as_a_map() {
        let mut m: IdMap<u64, u64> = new();
        for i in 0..10_000 {
            m.insert(i, i * 2);
        }
        assert_eq!(m.len(), 10_000);
        assert!((0..10_000).all(|i| m.get(&i) == Some(&(i * 2))));
        assert_eq!(m.remove(&5), Some(10));
        assert_eq!(m.get(&5), None);
    }
}

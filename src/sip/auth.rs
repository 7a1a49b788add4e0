//! Digest authentication (RFC 3261 §22, RFC 8760): credentials at rest and the hash helpers.
//!
//! Phones' passwords are never stored. We keep HA1 = H(username ":" realm ":" password) for each
//! algorithm we offer (MD5 and SHA-256), which is all a digest server needs and useless for
//! logging in anywhere else with another realm.

use md5::Md5;
use sha2::{Digest, Sha256};

/// Digest algorithms offered in challenges, strongest first (RFC 8760 §2.4 says order matters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Md5,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "SHA-256",
            Algorithm::Md5 => "MD5",
        }
    }

    /// Hex digest of `data` with this algorithm.
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data)),
            Algorithm::Sha256 => hex(&Sha256::digest(data)),
        }
    }
}

/// HA1 for one algorithm.
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(format!("{username}:{realm}:{password}").as_bytes())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_rfc_2617_example() {
        // RFC 2617 §3.5: Mufasa / testrealm@host.com / Circle Of Life.
        assert_eq!(
            ha1(
                Algorithm::Md5,
                "Mufasa",
                "testrealm@host.com",
                "Circle Of Life"
            ),
            "939e7578ed9e3c518a452acee763bce9"
        );
    }

    #[test]
    fn sha256_ha1_matches_rfc_7616_example() {
        // RFC 7616 §3.9.1 uses the same triple with realm http-auth@example.org.
        assert_eq!(
            ha1(
                Algorithm::Sha256,
                "Mufasa",
                "http-auth@example.org",
                "Circle of Life"
            ),
            "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
        );
    }
}

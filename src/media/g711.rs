//! G.711 (ITU-T G.711): µ-law (PCMU, RTP payload type 0) and A-law (PCMA, 8), and the direct
//! conversion between them the relay uses when two phones share no codec. Written here rather
//! than taken from a crate: it is forty lines of arithmetic, and the relay needs only the two
//! 256-entry tables it builds from them.

/// Linear 16-bit sample of a µ-law byte.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// µ-law byte of a linear sample (clipped to the µ-law range).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    let magnitude = s.abs().min(CLIP) + BIAS;
    let exponent = (7 - (magnitude.leading_zeros() as i32 - 17)).clamp(0, 7);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// Linear 16-bit sample of an A-law byte.
pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0F);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// A-law byte of a linear sample.
pub fn linear_to_alaw(sample: i16) -> u8 {
    let s = i32::from(sample);
    let (sign, magnitude) = if s >= 0 { (0x80, s) } else { (0x00, -s - 1) };
    let magnitude = magnitude.min(0x7FFF);
    let code = if magnitude < 256 {
        (magnitude >> 4) as u8
    } else {
        let exponent = (31 - magnitude.leading_zeros() as i32 - 7).clamp(1, 7);
        let mantissa = (magnitude >> (exponent + 3)) & 0x0F;
        ((exponent << 4) | mantissa) as u8
    };
    (sign | code) ^ 0x55
}

/// Byte-for-byte µ-law → A-law.
pub fn ulaw_to_alaw_table() -> &'static [u8; 256] {
    static T: std::sync::OnceLock<[u8; 256]> = std::sync::OnceLock::new();
    T.get_or_init(|| std::array::from_fn(|i| linear_to_alaw(ulaw_to_linear(i as u8))))
}

/// Byte-for-byte A-law → µ-law.
pub fn alaw_to_ulaw_table() -> &'static [u8; 256] {
    static T: std::sync::OnceLock<[u8; 256]> = std::sync::OnceLock::new();
    T.get_or_init(|| std::array::from_fn(|i| linear_to_ulaw(alaw_to_linear(i as u8))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values() {
        // Silence and the extremes of each law (G.711 tables).
        assert_eq!(ulaw_to_linear(0xFF), 0);
        assert_eq!(ulaw_to_linear(0x7F), 0);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(alaw_to_linear(0xD5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xAA), 32256);
        assert_eq!(alaw_to_linear(0x2A), -32256);
        assert_eq!(linear_to_ulaw(0), 0xFF);
        assert_eq!(linear_to_alaw(0), 0xD5);
    }

    #[test]
    fn every_code_survives_a_round_trip() {
        for b in 0..=255u8 {
            let u = ulaw_to_linear(b);
            // 0x7F and 0xFF are both zero in µ-law: either code is right.
            assert_eq!(ulaw_to_linear(linear_to_ulaw(u)), u, "µ-law {b:#04x}");
            let a = alaw_to_linear(b);
            assert_eq!(linear_to_alaw(a), b, "A-law {b:#04x}");
        }
    }

    #[test]
    fn encoding_stays_close_to_the_signal() {
        for s in (-32000i32..32000).step_by(97) {
            let s = s as i16;
            let u = i32::from(ulaw_to_linear(linear_to_ulaw(s)));
            let a = i32::from(alaw_to_linear(linear_to_alaw(s)));
            // Logarithmic quantisation: the error grows with the magnitude, ~3 % at most.
            let bound = (i32::from(s).abs() / 16).max(16);
            assert!((u - i32::from(s)).abs() <= bound, "µ-law {s} -> {u}");
            assert!((a - i32::from(s)).abs() <= bound, "A-law {s} -> {a}");
        }
    }

    #[test]
    fn converting_between_laws_keeps_the_sample() {
        let (u2a, a2u) = (ulaw_to_alaw_table(), alaw_to_ulaw_table());
        for b in 0..=255u8 {
            let via = alaw_to_linear(u2a[b as usize]);
            let orig = ulaw_to_linear(b);
            let bound = (i32::from(orig).abs() / 16).max(16);
            assert!(
                (i32::from(via) - i32::from(orig)).abs() <= bound,
                "{b:#04x}"
            );
            let back = ulaw_to_linear(a2u[u2a[b as usize] as usize]);
            assert!(
                (i32::from(back) - i32::from(orig)).abs() <= 2 * bound,
                "{b:#04x}"
            );
        }
    }
}

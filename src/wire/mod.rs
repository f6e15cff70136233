//! Everything two processes must agree on: GatewayProtocol packets, register JSON lines,
//! PHP-serialized values.

pub mod membership;
pub mod packet;
pub mod php;
pub mod register;

/// Compare secrets in time independent of where they differ (lengths may leak).
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// CRC-32 (IEEE, as PHP's `crc32()`), for the session staleness guard.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32_matches_php() {
        // php -r 'echo crc32("The quick brown fox jumped over the lazy dog.");' => 2191738434
        assert_eq!(super::crc32(b"The quick brown fox jumped over the lazy dog."), 2191738434);
        assert_eq!(super::crc32(b""), 0);
    }

    #[test]
    fn secret_comparison() {
        assert!(super::secret_eq(b"s3cret", b"s3cret"));
        assert!(!super::secret_eq(b"s3cret", b"s3crex"));
        assert!(!super::secret_eq(b"", b"x"));
    }
}

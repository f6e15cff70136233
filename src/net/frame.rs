//! The `frame` client protocol (workerman `Frame`): a u32 big-endian total length (the 4
//! length bytes included) followed by the payload.

/// The announced length is below 4 or above the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadLength(pub u32);

/// Find the first message: `Ok(Some((payload_range_start, consumed)))` where the payload is
/// `buf[4..consumed]`, `Ok(None)` to wait, `Err` for an impossible length.
pub fn input(buf: &[u8], max: usize) -> Result<Option<usize>, BadLength> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if total < 4 || total as usize > max.saturating_add(4) {
        return Err(BadLength(total));
    }
    Ok((buf.len() >= total as usize).then_some(total as usize))
}

/// Append one encoded message.
pub fn encode(out: &mut Vec<u8>, msg: &[u8]) {
    out.reserve(msg.len() + 4);
    out.extend_from_slice(&((msg.len() + 4) as u32).to_be_bytes());
    out.extend_from_slice(msg);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut out = Vec::new();
        encode(&mut out, b"abc");
        encode(&mut out, b"");
        assert_eq!(&out[..7], b"\0\0\0\x07abc");
        assert_eq!(input(&out, 100), Ok(Some(7)));
        assert_eq!(input(&out[7..], 100), Ok(Some(4)));
        assert_eq!(input(&out[..6], 100), Ok(None));
        assert_eq!(input(&out[..3], 100), Ok(None));
    }

    #[test]
    fn refuses_impossible_lengths() {
        assert_eq!(input(&[0, 0, 0, 3], 100), Err(BadLength(3)));
        assert_eq!(input(&[0, 0, 1, 0], 100), Err(BadLength(256)));
    }
}

//! The `text` client protocol (workerman `Text`): one message per line. Decoding strips the
//! trailing `\r`/`\n` bytes, encoding appends `\n`.

/// A line longer than the limit without its newline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TooLong;

/// Find the first message of `buf`: `Ok(Some((message_len, consumed)))`, `Ok(None)` to wait
/// for more bytes, `Err(TooLong)` if no newline appears within `max` bytes.
pub fn input(buf: &[u8], max: usize) -> Result<Option<(usize, usize)>, TooLong> {
    let window = &buf[..buf.len().min(max.saturating_add(1))];
    match window.iter().position(|&b| b == b'\n') {
        Some(pos) => {
            let mut end = pos;
            while end > 0 && (buf[end - 1] == b'\r' || buf[end - 1] == b'\n') {
                end -= 1;
            }
            Ok(Some((end, pos + 1)))
        }
        None if buf.len() > max => Err(TooLong),
        None => Ok(None),
    }
}

/// Append one encoded message.
pub fn encode(out: &mut Vec<u8>, msg: &[u8]) {
    out.reserve(msg.len() + 1);
    out.extend_from_slice(msg);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_strips_crlf() {
        assert_eq!(input(b"hello\r\nrest", 100), Ok(Some((5, 7))));
        assert_eq!(input(b"\n", 100), Ok(Some((0, 1))));
        assert_eq!(input(b"a\r\r\n", 100), Ok(Some((1, 4))));
        assert_eq!(input(b"partial", 100), Ok(None));
    }

    #[test]
    fn refuses_endless_lines() {
        assert_eq!(input(&[b'x'; 11], 10), Err(TooLong));
        assert_eq!(input(&[b'x'; 10], 10), Ok(None));
        let mut ok = vec![b'x'; 10];
        ok.push(b'\n');
        assert_eq!(input(&ok, 10), Ok(Some((10, 11))));
    }

    #[test]
    fn encode_appends_newline() {
        let mut out = Vec::new();
        encode(&mut out, b"hi");
        assert_eq!(out, b"hi\n");
    }
}

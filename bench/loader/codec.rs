//! Wire codecs of the client side: the three client protocols (WebSocket, text, frame), the
//! WebSocket opening handshake, and the benchmark payload that carries a sequence number and a
//! timestamp.

/// Largest message accepted from a server before the connection is called broken.
pub const MAX_MESSAGE: usize = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// RFC 6455 frames after an HTTP/1.1 upgrade; client frames masked.
    Ws,
    /// One message per line, `\n` terminated (a trailing `\r` is dropped on input).
    Text,
    /// A big-endian u32 total length (including its own 4 bytes), then the payload.
    Frame,
}

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

#[derive(Debug, PartialEq, Eq)]
pub struct CodecError(pub String);

/// One unit decoded from the input: where its payload lies in the buffer and how many bytes
/// it used.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// WebSocket opcode; text/frame messages report `OP_TEXT`.
    pub opcode: u8,
    pub fin: bool,
    pub payload: std::ops::Range<usize>,
    pub consumed: usize,
}

impl Proto {
    /// Appends one message to `out`. `mask` is used by WebSocket only (client frames must be
    /// masked); text payloads must not contain `\n`.
    pub fn encode(self, out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
        match self {
            Proto::Ws => encode_ws(out, opcode, payload, mask),
            Proto::Text => {
                out.extend_from_slice(payload);
                out.push(b'\n');
            }
            Proto::Frame => {
                out.extend_from_slice(&((payload.len() + 4) as u32).to_be_bytes());
                out.extend_from_slice(payload);
            }
        }
    }

    /// Decodes one unit from the start of `buf` (unmasking a masked WebSocket frame in place).
    /// `Ok(None)` means more bytes are needed.
    pub fn decode(self, buf: &mut [u8]) -> Result<Option<Decoded>, CodecError> {
        match self {
            Proto::Ws => decode_ws(buf),
            Proto::Text => match buf.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let stop = if end > 0 && buf[end - 1] == b'\r' { end - 1 } else { end };
                    Ok(Some(Decoded { opcode: OP_TEXT, fin: true, payload: 0..stop, consumed: end + 1 }))
                }
                None if buf.len() > MAX_MESSAGE => {
                    Err(CodecError(format!("line longer than {MAX_MESSAGE} bytes")))
                }
                None => Ok(None),
            },
            Proto::Frame => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                if total < 4 {
                    return Err(CodecError(format!("frame length {total} < 4")));
                }
                if total > MAX_MESSAGE {
                    return Err(CodecError(format!("frame length {total} over {MAX_MESSAGE}")));
                }
                if buf.len() < total {
                    return Ok(None);
                }
                Ok(Some(Decoded { opcode: OP_TEXT, fin: true, payload: 4..total, consumed: total }))
            }
        }
    }
}

fn encode_ws(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

fn decode_ws(buf: &mut [u8]) -> Result<Option<Decoded>, CodecError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(CodecError("reserved bits set (no extension was negotiated)".into()));
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    if !matches!(opcode, OP_CONT | OP_TEXT | OP_BINARY | OP_CLOSE | OP_PING | OP_PONG) {
        return Err(CodecError(format!("unknown opcode {opcode:#x}")));
    }
    let masked = b1 & 0x80 != 0;
    let (len, mut head) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        n => (n as u64, 2),
    };
    if opcode >= OP_CLOSE && (!fin || len > 125) {
        return Err(CodecError("fragmented or oversized control frame".into()));
    }
    if len > MAX_MESSAGE as u64 {
        return Err(CodecError(format!("frame of {len} bytes over {MAX_MESSAGE}")));
    }
    let mut mask = None;
    if masked {
        if buf.len() < head + 4 {
            return Ok(None);
        }
        mask = Some([buf[head], buf[head + 1], buf[head + 2], buf[head + 3]]);
        head += 4;
    }
    let end = head + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    if let Some(m) = mask {
        for (i, b) in buf[head..end].iter_mut().enumerate() {
            *b ^= m[i & 3];
        }
    }
    Ok(Some(Decoded { opcode, fin, payload: head..end, consumed: end }))
}

/// The HTTP/1.1 upgrade request of a WebSocket client.
pub fn upgrade_request(host: &str, port: u16, path: &str, key: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .into_bytes()
}

/// Checks the server's answer to [`upgrade_request`]: `Ok(None)` = incomplete, `Ok(Some(n))`
/// = a valid `101` whose head is `n` bytes long (frames may follow), `Err` = refused or wrong.
pub fn check_upgrade_response(buf: &[u8], expected_accept: &str) -> Result<Option<usize>, CodecError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > 8192 {
            return Err(CodecError("response head over 8 KiB".into()));
        }
        return Ok(None);
    };
    let head =
        std::str::from_utf8(&buf[..end]).map_err(|_| CodecError("response head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !version.starts_with("HTTP/1.") || code != "101" {
        return Err(CodecError(format!("status line {status:?}")));
    }
    let (mut upgrade, mut accept) = (false, false);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(CodecError(format!("header line {line:?}")));
        };
        let value = value.trim();
        if name.trim().eq_ignore_ascii_case("upgrade") {
            upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.trim().eq_ignore_ascii_case("sec-websocket-accept") {
            if value != expected_accept {
                return Err(CodecError(format!(
                    "Sec-WebSocket-Accept {value:?}, expected {expected_accept:?}"
                )));
            }
            accept = true;
        }
    }
    if !upgrade || !accept {
        return Err(CodecError("101 without Upgrade: websocket or Sec-WebSocket-Accept".into()));
    }
    Ok(Some(end + 4))
}

/// Benchmark payloads: `#`, sequence number (12 hex digits), `@`, timestamp in µs since the
/// loader started (12 hex digits), then filler `a..z` by position up to the requested size.
/// All printable ASCII, so a valid text message on every protocol.
pub const PAYLOAD_HEAD: usize = 26;

pub fn write_payload(out: &mut Vec<u8>, seq: u64, ts_us: u64, size: usize) {
    use std::io::Write;
    let start = out.len();
    let _ = write!(out, "#{:012x}@{:012x}", seq & 0xFFFF_FFFF_FFFF, ts_us & 0xFFFF_FFFF_FFFF);
    for i in PAYLOAD_HEAD..size.max(PAYLOAD_HEAD) {
        out.push(b'a' + (i % 26) as u8);
    }
    debug_assert_eq!(out.len() - start, size.max(PAYLOAD_HEAD));
}

/// Parses and fully checks a payload made by [`write_payload`]: `(seq, ts_us)`.
pub fn parse_payload(p: &[u8], size: usize) -> Option<(u64, u64)> {
    if p.len() != size.max(PAYLOAD_HEAD) || p[0] != b'#' || p[13] != b'@' {
        return None;
    }
    let seq = parse_hex(&p[1..13])?;
    let ts = parse_hex(&p[14..26])?;
    let filler_ok =
        p[PAYLOAD_HEAD..].iter().enumerate().all(|(i, &b)| b == b'a' + ((i + PAYLOAD_HEAD) % 26) as u8);
    filler_ok.then_some((seq, ts))
}

fn parse_hex(digits: &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | x as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(n as u8),
            n if n <= 65535 => {
                out.push(126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        out
    }

    /// Feeds `wire` one byte more at a time: nothing may decode before the last byte.
    fn decode_in_short_reads(proto: Proto, wire: &[u8]) -> (u8, Vec<u8>) {
        for cut in 0..wire.len() {
            let mut part = wire[..cut].to_vec();
            assert_eq!(proto.decode(&mut part), Ok(None), "decoded early at {cut} bytes");
        }
        let mut all = wire.to_vec();
        all.extend_from_slice(b"next");
        let d = proto.decode(&mut all).unwrap().unwrap();
        assert_eq!(d.consumed, wire.len());
        (d.opcode, all[d.payload].to_vec())
    }

    #[test]
    fn ws_frames_with_short_reads() {
        for len in [0usize, 5, 125, 126, 300, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let (op, got) = decode_in_short_reads(Proto::Ws, &server_frame(OP_BINARY, true, &payload));
            assert_eq!(op, OP_BINARY);
            assert_eq!(got, payload, "len {len}");
        }
    }

    #[test]
    fn ws_client_frames_are_masked_and_round_trip() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in [3usize, 200, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 97) as u8 + 32).collect();
            let mut wire = Vec::new();
            Proto::Ws.encode(&mut wire, OP_TEXT, &payload, mask);
            assert_eq!(wire[0], 0x81);
            assert_ne!(wire[1] & 0x80, 0, "mask bit");
            let head = wire.len() - len;
            assert_eq!(&wire[head - 4..head], &mask);
            assert_ne!(&wire[head..], &payload[..], "payload must be masked on the wire");
            let (op, got) = decode_in_short_reads(Proto::Ws, &wire);
            assert_eq!(op, OP_TEXT);
            assert_eq!(got, payload);
        }
    }

    #[test]
    fn ws_rejects_bad_frames() {
        assert!(Proto::Ws.decode(&mut [0xC1, 0x00]).is_err(), "rsv1 without extension");
        assert!(Proto::Ws.decode(&mut [0x83, 0x00]).is_err(), "opcode 3");
        assert!(Proto::Ws.decode(&mut server_frame(OP_PING, false, b"x")).is_err(), "fragmented ping");
        assert!(Proto::Ws.decode(&mut server_frame(OP_PING, true, &[0; 126])).is_err(), "long ping");
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&(MAX_MESSAGE as u64 + 1).to_be_bytes());
        assert!(Proto::Ws.decode(&mut huge).is_err());
    }

    #[test]
    fn ws_control_and_fragments() {
        let (op, got) = decode_in_short_reads(Proto::Ws, &server_frame(OP_PING, true, b"hb"));
        assert_eq!((op, got.as_slice()), (OP_PING, &b"hb"[..]));
        let mut wire = server_frame(OP_TEXT, false, b"ab");
        let d = Proto::Ws.decode(&mut wire).unwrap().unwrap();
        assert!(!d.fin);
        let mut wire = server_frame(OP_CONT, true, b"cd");
        let d = Proto::Ws.decode(&mut wire).unwrap().unwrap();
        assert!(d.fin && d.opcode == OP_CONT);
    }

    #[test]
    fn text_and_frame_with_short_reads() {
        let (_, got) = decode_in_short_reads(Proto::Text, b"hello world\n");
        assert_eq!(got, b"hello world");
        let (_, got) = decode_in_short_reads(Proto::Text, b"crlf\r\n");
        assert_eq!(got, b"crlf");
        let mut wire = Vec::new();
        Proto::Frame.encode(&mut wire, OP_TEXT, b"payload", [0; 4]);
        assert_eq!(&wire[..4], &[0, 0, 0, 11]);
        let (_, got) = decode_in_short_reads(Proto::Frame, &wire);
        assert_eq!(got, b"payload");
        let (_, got) = decode_in_short_reads(Proto::Frame, &[0, 0, 0, 4]);
        assert!(got.is_empty());
        assert!(Proto::Frame.decode(&mut [0, 0, 0, 3]).is_err());
    }

    #[test]
    fn upgrade_response_checks_accept_key() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let head = format!(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        );
        let mut ok = head.clone().into_bytes();
        ok.extend_from_slice(&[0x81, 0x00]);
        assert_eq!(check_upgrade_response(&ok[..head.len() - 1], &accept), Ok(None));
        assert_eq!(check_upgrade_response(&ok, &accept), Ok(Some(head.len())));
        let wrong = head.replace(&accept, "AAAAAAAAAAAAAAAAAAAAAAAAAAA=");
        assert!(check_upgrade_response(wrong.as_bytes(), &accept).is_err());
        assert!(check_upgrade_response(b"HTTP/1.1 400 Bad Request\r\n\r\n", &accept).is_err());
        let req = String::from_utf8(upgrade_request("127.0.0.1", 80, "/x", key)).unwrap();
        assert!(
            req.starts_with("GET /x HTTP/1.1\r\n") && req.contains(&format!("Sec-WebSocket-Key: {key}\r\n"))
        );
    }

    #[test]
    fn payload_round_trip() {
        for size in [0usize, 26, 32, 100] {
            let mut p = Vec::new();
            write_payload(&mut p, 0xabc, 123_456_789, size);
            assert_eq!(p.len(), size.max(PAYLOAD_HEAD));
            assert!(p.iter().all(|b| b.is_ascii_graphic()));
            assert_eq!(parse_payload(&p, size), Some((0xabc, 123_456_789)));
            let last = p.len() - 1;
            p[last] ^= 1;
            assert_ne!(parse_payload(&p, size), Some((0xabc, 123_456_789)), "a changed byte must be caught");
        }
    }
}

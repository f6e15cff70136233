//! GatewayProtocol: the 28-byte big-endian header + ext_data + body exchanged between gateways
//! and business workers / GatewayClients (GatewayWorker's `Protocols/GatewayProtocol.php`).
//!
//! Layout (all integers big-endian):
//! `pack_len u32 | cmd u8 | local_ip u32 | local_port u16 | client_ip u32 | client_port u16 |
//!  connection_id u32 | flag u8 | gateway_port u16 | ext_len u32 | ext_data | body`
//! where `pack_len` counts the whole packet, header included.

use std::fmt;

/// Size of the fixed header.
pub const HEADER_LEN: usize = 28;

/// Command codes (`docs/protocol.md` §3).
pub mod cmd {
    pub const ON_CONNECT: u8 = 1;
    pub const ON_MESSAGE: u8 = 3;
    pub const ON_CLOSE: u8 = 4;
    pub const SEND_TO_ONE: u8 = 5;
    pub const SEND_TO_ALL: u8 = 6;
    pub const KICK: u8 = 7;
    pub const DESTROY: u8 = 8;
    pub const UPDATE_SESSION: u8 = 9;
    pub const GET_ALL_CLIENT_SESSIONS: u8 = 10;
    pub const IS_ONLINE: u8 = 11;
    pub const BIND_UID: u8 = 12;
    pub const UNBIND_UID: u8 = 13;
    pub const SEND_TO_UID: u8 = 14;
    pub const GET_CLIENT_ID_BY_UID: u8 = 15;
    pub const BATCH_GET_CLIENT_ID_BY_UID: u8 = 16;
    pub const JOIN_GROUP: u8 = 20;
    pub const LEAVE_GROUP: u8 = 21;
    pub const SEND_TO_GROUP: u8 = 22;
    pub const GET_CLIENT_SESSIONS_BY_GROUP: u8 = 23;
    pub const GET_CLIENT_COUNT_BY_GROUP: u8 = 24;
    pub const SELECT: u8 = 25;
    pub const GET_GROUP_ID_LIST: u8 = 26;
    pub const UNGROUP: u8 = 27;
    pub const BATCH_GET_CLIENT_COUNT_BY_GROUP: u8 = 28;
    pub const WORKER_CONNECT: u8 = 200;
    pub const PING: u8 = 201;
    pub const GATEWAY_CLIENT_CONNECT: u8 = 202;
    pub const GET_SESSION_BY_CLIENT_ID: u8 = 203;
    pub const SET_SESSION: u8 = 204;
    pub const ON_WEBSOCKET_CONNECT: u8 = 205;
    /// Ours, never sent by GatewayWorker: a draining business worker asks the gateway to stop
    /// routing new events to it (graceful reload). A PHP gateway logs and ignores it.
    pub const WORKER_DRAIN: u8 = 210;
    /// Ours: a business worker or GatewayClient asks to be told which uids and groups the
    /// gateway holds (`wire::membership`); ext_data is a token echoed in the snapshot. A PHP
    /// gateway logs and ignores it.
    pub const MEMBERSHIP_SUBSCRIBE: u8 = 211;
    /// Ours: gateway to a subscribed link only: a snapshot of its uids and groups, then the
    /// names that appear or disappear (`wire::membership`).
    pub const MEMBERSHIP: u8 = 212;

    /// Commands the gateway answers with `u32_be(len) ‖ payload` (`docs/protocol.md` §4).
    pub fn is_query(c: u8) -> bool {
        matches!(
            c,
            GET_ALL_CLIENT_SESSIONS
                | IS_ONLINE
                | GET_CLIENT_ID_BY_UID
                | BATCH_GET_CLIENT_ID_BY_UID
                | GET_CLIENT_SESSIONS_BY_GROUP
                | GET_CLIENT_COUNT_BY_GROUP
                | SELECT
                | GET_GROUP_ID_LIST
                | BATCH_GET_CLIENT_COUNT_BY_GROUP
                | GET_SESSION_BY_CLIENT_ID
        )
    }
}

/// Flag bits.
pub mod flag {
    /// The body is a scalar sent as raw bytes (else it is PHP-serialized).
    pub const BODY_IS_SCALAR: u8 = 0x01;
    /// Write the body to the client without protocol encoding (`$raw = true`).
    pub const NOT_CALL_ENCODE: u8 = 0x02;
    /// Ours: the websocket message is binary (opcode 0x2), both directions. PHP ignores it.
    pub const BINARY: u8 = 0x04;
}

/// The fixed header fields other than the two lengths.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub cmd: u8,
    pub local_ip: u32,
    pub local_port: u16,
    pub client_ip: u32,
    pub client_port: u16,
    pub connection_id: u32,
    pub flag: u8,
    pub gateway_port: u16,
}

impl Header {
    /// A header carrying only a command, a connection id and flags (what workers and
    /// GatewayClients send: the address fields stay zero).
    pub fn command(cmd: u8, connection_id: u32, flag: u8) -> Header {
        Header { cmd, connection_id, flag, ..Header::default() }
    }
}

/// One decoded packet, borrowing ext_data and body from the read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    pub ext: &'a [u8],
    pub body: &'a [u8],
}

/// Why bytes are not a valid packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// `pack_len` is smaller than the header or bigger than the allowed maximum.
    BadLength { pack_len: u64, max: usize },
    /// `ext_len` points past the end of the packet.
    BadExtLength { ext_len: u32, pack_len: u32 },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadLength { pack_len, max } => {
                write!(f, "packet length {pack_len} outside 28..={max}")
            }
            DecodeError::BadExtLength { ext_len, pack_len } => {
                write!(f, "ext_len {ext_len} does not fit in packet of {pack_len} bytes")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Length of the packet at the start of `buf`: `Ok(None)` until 4 bytes are there,
/// an error when the announced length is below the header size or above `max`.
pub fn peek_len(buf: &[u8], max: usize) -> Result<Option<usize>, DecodeError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let pack_len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if pack_len < HEADER_LEN || pack_len > max {
        return Err(DecodeError::BadLength { pack_len: pack_len as u64, max });
    }
    Ok(Some(pack_len))
}

/// Decode the first packet of `buf`. Returns the packet and its total length, `Ok(None)` if
/// `buf` does not hold a whole packet yet.
pub fn decode(buf: &[u8], max: usize) -> Result<Option<(Packet<'_>, usize)>, DecodeError> {
    let Some(pack_len) = peek_len(buf, max)? else {
        return Ok(None);
    };
    if buf.len() < pack_len || buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let b = &buf[..pack_len];
    let header = Header {
        cmd: b[4],
        local_ip: be32(&b[5..9]),
        local_port: be16(&b[9..11]),
        client_ip: be32(&b[11..15]),
        client_port: be16(&b[15..17]),
        connection_id: be32(&b[17..21]),
        flag: b[21],
        gateway_port: be16(&b[22..24]),
    };
    let ext_len = be32(&b[24..28]);
    if ext_len as usize > pack_len - HEADER_LEN {
        return Err(DecodeError::BadExtLength { ext_len, pack_len: pack_len as u32 });
    }
    let ext_end = HEADER_LEN + ext_len as usize;
    let packet = Packet { header, ext: &b[HEADER_LEN..ext_end], body: &b[ext_end..] };
    Ok(Some((packet, pack_len)))
}

/// Append one packet to `out`. `pack_len` and `ext_len` are computed here.
pub fn encode(out: &mut Vec<u8>, header: &Header, ext: &[u8], body: &[u8]) {
    encode_head(out, header, ext.len(), body.len());
    out.extend_from_slice(ext);
    out.extend_from_slice(body);
}

/// Append the 28-byte header for a packet whose ext_data and body (of the given lengths)
/// the caller appends next, e.g. straight from another buffer without a copy in between.
pub fn encode_head(out: &mut Vec<u8>, h: &Header, ext_len: usize, body_len: usize) {
    let pack_len = (HEADER_LEN + ext_len + body_len) as u32;
    out.reserve(pack_len as usize);
    out.extend_from_slice(&pack_len.to_be_bytes());
    out.push(h.cmd);
    out.extend_from_slice(&h.local_ip.to_be_bytes());
    out.extend_from_slice(&h.local_port.to_be_bytes());
    out.extend_from_slice(&h.client_ip.to_be_bytes());
    out.extend_from_slice(&h.client_port.to_be_bytes());
    out.extend_from_slice(&h.connection_id.to_be_bytes());
    out.push(h.flag);
    out.extend_from_slice(&h.gateway_port.to_be_bytes());
    out.extend_from_slice(&(ext_len as u32).to_be_bytes());
}

/// Append a query reply: `u32_be(len) ‖ payload` (`docs/protocol.md` §4).
pub fn encode_reply(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn decodes_the_observed_on_connect() {
        let b = hex("0000001c017f0000010960");
        assert!(decode(&b, 1 << 20).unwrap().is_none(), "partial packet waits");
        // 00000001c | 01 | 7f000001 0960 | 7f000001 b260 | 00000004 | 01 | 1c69 | 00000000
        let b = hex("0000001c017f00000109607f000001b26000000004011c6900000000");
        let (p, n) = decode(&b, 1 << 20).unwrap().unwrap();
        assert_eq!(n, 28);
        assert_eq!(p.header.cmd, cmd::ON_CONNECT);
        assert_eq!(p.header.local_ip, 0x7f000001);
        assert_eq!(p.header.local_port, 2400);
        assert_eq!(p.header.client_port, 0xb260);
        assert_eq!(p.header.connection_id, 4);
        assert_eq!(p.header.flag, 1);
        assert_eq!(p.header.gateway_port, 7273);
        assert!(p.ext.is_empty() && p.body.is_empty());
        let mut out = Vec::new();
        encode(&mut out, &p.header, p.ext, p.body);
        assert_eq!(out, b);
    }

    #[test]
    fn splits_ext_and_body() {
        let h = Header::command(cmd::SEND_TO_ALL, 0, flag::BODY_IS_SCALAR);
        let mut out = Vec::new();
        encode(&mut out, &h, b"ext", b"body!");
        encode(&mut out, &h, b"", b"x");
        let (p, n) = decode(&out, 1024).unwrap().unwrap();
        assert_eq!((p.ext, p.body, n), (&b"ext"[..], &b"body!"[..], 36));
        let (p, _) = decode(&out[n..], 1024).unwrap().unwrap();
        assert_eq!((p.ext, p.body), (&b""[..], &b"x"[..]));
    }

    #[test]
    fn rejects_bad_lengths() {
        assert_eq!(peek_len(&[0, 0, 0, 27], 100), Err(DecodeError::BadLength { pack_len: 27, max: 100 }));
        assert!(peek_len(&[0, 0, 1, 0], 100).is_err());
        let mut b = Vec::new();
        encode(&mut b, &Header::default(), b"", b"abc");
        b[27] = 9; // ext_len 9 > 3 bytes available
        assert!(matches!(decode(&b, 100), Err(DecodeError::BadExtLength { .. })));
    }
}

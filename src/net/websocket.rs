//! WebSocket server side: the opening handshake (parsed with tungstenite's request parser,
//! answered with the bytes workerman sends), the data GatewayWorker forwards to workers after
//! it (`CMD_ON_WEBSOCKET_CONNECT`), and the encoder for frames we send. Incoming frames are
//! decoded by tungstenite's `WebSocketContext` (see `gateway::client`).

use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::Request;
use tungstenite::protocol::WebSocketConfig;

/// Largest handshake request accepted (headers included).
pub const MAX_REQUEST: usize = 8 * 1024;

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;

/// tungstenite's per-connection configuration for our limits: small read buffer (its
/// default is an eager 128 KiB), message and frame caps at `max_message`.
pub fn config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_CHUNK)
        .write_buffer_size(0)
        .max_write_buffer_size(64 * 1024)
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Bytes tungstenite asks for per read. Its reads are served from the gateway's shared
/// read buffer (a copy, no syscall), and its own buffer starts this small, so an idle
/// connection keeps next to nothing.
const READ_CHUNK: usize = 128;

/// The request line and headers of an accepted handshake, in request order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeRequest {
    pub uri: String,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl HandshakeRequest {
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().rev().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }
}

/// Outcome of looking at the bytes received so far.
#[derive(Debug)]
pub enum Handshake {
    /// The request is not complete yet.
    Partial,
    /// Valid: send `response`, the frames start at `consumed`.
    Accepted { response: Vec<u8>, request: HandshakeRequest, consumed: usize },
    /// Invalid: send `response` and close.
    Rejected { response: &'static [u8], reason: String },
}

const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 68\r\n\r\n<div style=\"text-align:center\"><h1>400 Bad Request</h1><hr>gatewayworker</div>";
const UPGRADE_REQUIRED: &[u8] = b"HTTP/1.1 426 Upgrade Required\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Examine the bytes read so far on a new websocket connection.
pub fn handshake(buf: &[u8]) -> Handshake {
    let reject = |reason: String| Handshake::Rejected { response: BAD_REQUEST, reason };
    let too_big = || reject(format!("handshake request over {MAX_REQUEST} bytes"));
    let (consumed, req) = match Request::try_parse(buf) {
        // Whether a request arrives whole or in pieces, the same limit.
        Ok(Some((consumed, _))) if consumed > MAX_REQUEST => return too_big(),
        Ok(Some(parsed)) => parsed,
        Ok(None) if buf.len() >= MAX_REQUEST => return too_big(),
        Ok(None) => return Handshake::Partial,
        Err(e) => return reject(format!("bad handshake request: {e}")),
    };
    let headers: Vec<(String, Vec<u8>)> =
        req.headers().iter().map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec())).collect();
    let request = HandshakeRequest { uri: req.uri().to_string(), headers };
    match request.header("sec-websocket-version") {
        Some(b"13") => {}
        Some(v) => {
            return Handshake::Rejected {
                response: UPGRADE_REQUIRED,
                reason: format!("unsupported Sec-WebSocket-Version {:?}", String::from_utf8_lossy(v)),
            };
        }
        None => return reject("no Sec-WebSocket-Version header".into()),
    }
    let Some(key) = request.header("sec-websocket-key") else {
        return reject("no Sec-WebSocket-Key header".into());
    };
    let upgrade = request.header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket"));
    if !upgrade {
        return reject("no `Upgrade: websocket` header".into());
    }
    let accept = tungstenite::handshake::derive_accept_key(key);
    let response = format!(
        "HTTP/1.1 101 Switching Protocol\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes();
    Handshake::Accepted { response, request, consumed }
}

/// Append one unmasked server frame (FIN set).
pub fn encode_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    let len = payload.len();
    out.reserve(len + 10);
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= 0xffff {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// Append a close frame with a status code.
pub fn encode_close(out: &mut Vec<u8>, code: u16) {
    encode_frame(out, OP_CLOSE, &code.to_be_bytes());
}

/// What a frame's first byte says, as far as passing frames whole needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    /// Ping, pong or close (opcodes 8 and up).
    pub control: bool,
    /// A continuation frame (opcode 0).
    pub continuation: bool,
}

impl FrameHead {
    /// The head of the frame `frame` starts with (non-empty).
    pub fn of(frame: &[u8]) -> FrameHead {
        let b = frame[0];
        FrameHead { fin: b & 0x80 != 0, control: b & 0x08 != 0, continuation: b & 0x0f == 0 }
    }
}

/// The length of the frame at the start of `data` when `data` holds all of it; when its
/// header says more than `max` payload bytes, the length of the header alone (enough for
/// the decoder to refuse it). `None` while the frame is incomplete.
pub fn frame_len(data: &[u8], max: usize) -> Option<usize> {
    if data.len() < 2 {
        return None;
    }
    let mask = if data[1] & 0x80 != 0 { 4 } else { 0 };
    let (ext, payload) = match data[1] & 0x7f {
        126 => (2, u16::from_be_bytes(data.get(2..4)?.try_into().ok()?) as u64),
        127 => (8, u64::from_be_bytes(data.get(2..10)?.try_into().ok()?)),
        n => (0, n as u64),
    };
    let head = 2 + ext + mask;
    if data.len() < head {
        return None;
    }
    if payload > max as u64 {
        return Some(head);
    }
    let total = head + payload as usize;
    (data.len() >= total).then_some(total)
}

#[cfg(test)]
mod tests;

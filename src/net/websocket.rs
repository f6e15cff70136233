//! WebSocket server side: the opening handshake (parsed with tungstenite's request parser,
//! answered with the bytes workerman sends), the data GatewayWorker forwards to workers after
//! it (`CMD_ON_WEBSOCKET_CONNECT`), and the encoder for frames we send. Incoming frames are
//! decoded by tungstenite's `WebSocketContext` (see `gateway::client`).

use tungstenite::handshake::machine::TryParse;
use tungstenite::handshake::server::Request;
use tungstenite::protocol::WebSocketConfig;

use crate::wire::php::{Array, Key, Value};

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

/// The `['get' => .., 'server' => .., 'cookie' => ..]` array GatewayWorker 4 sends with
/// `CMD_ON_WEBSOCKET_CONNECT` (workerman 5 layout, `docs/protocol.md` §6).
pub fn connect_data(req: &HandshakeRequest, remote_ip: &str, remote_port: u16, server_port: u16) -> Value {
    let (path_query, query) = match req.uri.split_once('?') {
        Some((_, q)) => (req.uri.as_str(), q),
        None => (req.uri.as_str(), ""),
    };
    let mut server = Array::new();
    let s = |v: &[u8]| Value::Str(v.to_vec());
    server.insert(Key::from_text("QUERY_STRING"), s(query.as_bytes()));
    server.insert(Key::from_text("REQUEST_METHOD"), s(b"GET"));
    server.insert(Key::from_text("REQUEST_URI"), s(path_query.as_bytes()));
    server.insert(Key::from_text("SERVER_PROTOCOL"), s(b"HTTP/1.1"));
    server.insert(Key::from_text("SERVER_NAME"), s(req.header("host").unwrap_or(b"")));
    server.insert(Key::from_text("CONTENT_TYPE"), req.header("content-type").map(s).unwrap_or(Value::Null));
    server.insert(Key::from_text("REMOTE_ADDR"), s(remote_ip.as_bytes()));
    server.insert(Key::from_text("REMOTE_PORT"), Value::Int(remote_port as i64));
    server.insert(Key::from_text("SERVER_PORT"), Value::Int(server_port as i64));
    for (name, value) in &req.headers {
        let key: String = name.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }).collect();
        server.insert(Key::from_text(&format!("HTTP_{key}")), s(value));
    }
    let mut data = Array::new();
    data.insert(Key::from_text("get"), Value::Array(parse_str(query.as_bytes())));
    data.insert(Key::from_text("server"), Value::Array(server));
    data.insert(Key::from_text("cookie"), Value::Array(parse_cookie(req.header("cookie").unwrap_or(b""))));
    Value::Array(data)
}

/// PHP `parse_str` for a query string: `a=1&b[]=2&c[k]=3`, `%XX` and `+` decoded.
pub fn parse_str(query: &[u8]) -> Array {
    let mut out = Array::new();
    for pair in query.split(|&b| b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let key = url_decode(k);
        let value = Value::Str(url_decode(v));
        let (base, path) = split_key(&key);
        if base.is_empty() {
            continue;
        }
        insert_path(&mut out, Key::from_bytes(&base), &path, value, 0);
    }
    out
}

/// Split `a[b][]` into `a` and `[Some(b), None]`; `.` and space in the base become `_`.
fn split_key(key: &[u8]) -> (Vec<u8>, Vec<Option<Vec<u8>>>) {
    let open = key.iter().position(|&b| b == b'[');
    let (base, mut rest) = match open {
        Some(i) if key[i..].contains(&b']') => (&key[..i], &key[i..]),
        _ => (key, &b""[..]),
    };
    let base: Vec<u8> =
        base.iter().map(|&b| if b == b'.' || b == b' ' || b == b'[' { b'_' } else { b }).collect();
    let mut path = Vec::new();
    while rest.first() == Some(&b'[') {
        let Some(close) = rest.iter().position(|&b| b == b']') else { break };
        let inner = &rest[1..close];
        path.push(if inner.is_empty() { None } else { Some(inner.to_vec()) });
        rest = &rest[close + 1..];
    }
    (base, path)
}

fn insert_path(arr: &mut Array, key: Key, path: &[Option<Vec<u8>>], value: Value, depth: usize) {
    let Some((first, rest)) = path.split_first().filter(|_| depth < 64) else {
        arr.insert(key, value);
        return;
    };
    if !matches!(arr.get(&key), Some(Value::Array(_))) {
        arr.insert(key.clone(), Value::Array(Array::new()));
    }
    let Some(Value::Array(child)) = arr.get_mut(&key) else { return };
    match first {
        None if rest.is_empty() => child.push(value),
        None => {
            child.push(Value::Array(Array::new()));
            let last = child.keys().last().cloned();
            if let Some(k) = last {
                insert_path(child, k, rest, value, depth + 1);
            }
        }
        Some(k) => insert_path(child, Key::from_bytes(k), rest, value, depth + 1),
    }
}

/// `sid=s1; theme=dark` as workerman 5 parses the Cookie header (values are not decoded).
pub fn parse_cookie(header: &[u8]) -> Array {
    let mut out = Array::new();
    for part in header.split(|&b| b == b';') {
        let part = trim(part);
        if part.is_empty() {
            continue;
        }
        let (k, v) = match part.iter().position(|&b| b == b'=') {
            Some(i) => (trim(&part[..i]), &part[i + 1..]),
            None => (part, &b""[..]),
        };
        if !k.is_empty() {
            out.insert(Key::from_bytes(k), Value::Str(v.to_vec()));
        }
    }
    out
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !c.is_ascii_whitespace()).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !c.is_ascii_whitespace()).map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// PHP `urldecode`: `+` is a space, `%XX` a byte, malformed escapes stay as they are.
pub fn url_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() && hex(s[i + 1]).is_some() && hex(s[i + 2]).is_some() => {
                out.push(hex(s[i + 1]).unwrap_or(0) * 16 + hex(s[i + 2]).unwrap_or(0));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests;

//! The websocket opening handshake (`net::websocket`): the request a gateway reads from a
//! new client, the `CMD_ON_WEBSOCKET_CONNECT` data made of it (`gateway::server_vars`,
//! PHP-serialized for the worker), and the query string, cookie and URL decoders it uses.

use gatewayworker::internals::gateway::server_vars;
use gatewayworker::internals::net::websocket::{self, Handshake, MAX_REQUEST};
use gatewayworker::internals::wire::php::{self, Array, Key, Value};

use super::php_unserialize::{canonical_keys, depth, json, round_trip};

pub fn check(data: &[u8]) {
    handshake(data);
    in_reads(data);
    near_the_limit(data);
    parse_str(data);
    parse_cookie(data);
    url_decode(data);
}

fn handshake(data: &[u8]) {
    match websocket::handshake(data) {
        Handshake::Partial => {
            assert!(data.len() < MAX_REQUEST, "waiting with {} bytes", data.len());
        }
        Handshake::Rejected { response, reason } => {
            assert!(!reason.is_empty());
            let status = &response[..response.len().min(12)];
            assert!(status == b"HTTP/1.1 400" || status == b"HTTP/1.1 426", "{response:?}");
            assert!(response.windows(4).any(|w| w == b"\r\n\r\n"));
        }
        Handshake::Accepted { response, request, consumed } => {
            assert!(consumed > 0 && consumed <= data.len());
            assert!(consumed <= MAX_REQUEST, "accepted a request of {consumed} bytes");
            assert!(data[..consumed].ends_with(b"\n"));
            assert_eq!(request.header("sec-websocket-version"), Some(&b"13"[..]));
            assert!(request.header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case(b"websocket")));
            let key = request.header("sec-websocket-key").expect("accepted without a key");
            let accept = tungstenite::handshake::derive_accept_key(key);
            let want = format!(
                "HTTP/1.1 101 Switching Protocol\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            );
            assert_eq!(response, want.as_bytes());

            // The frames that follow the request do not change it; any shorter prefix waits.
            match websocket::handshake(&data[..consumed]) {
                Handshake::Accepted { request: again, consumed: n, .. } => {
                    assert_eq!((again, n), (request.clone(), consumed));
                }
                other => panic!("the request alone gives {other:?}"),
            }
            let cut = &data[..consumed - 1];
            assert!(matches!(websocket::handshake(cut), Handshake::Partial), "prefix not partial");

            connect_data(&request);
        }
    }
}

/// What `handshake` decides, without the request and response.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Partial,
    Accepted(usize),
    Rejected(&'static [u8]),
}

fn outcome(buf: &[u8]) -> Outcome {
    match websocket::handshake(buf) {
        Handshake::Partial => Outcome::Partial,
        Handshake::Accepted { consumed, .. } => Outcome::Accepted(consumed),
        Handshake::Rejected { response, .. } => Outcome::Rejected(response),
    }
}

/// The gateway calls `handshake` after every read until it is not `Partial`: the decision
/// must not depend on how the request was cut into reads.
fn in_reads(data: &[u8]) {
    let whole = outcome(data);
    for size in [4096, 1000] {
        let mut got = Outcome::Partial;
        let mut end = 0;
        while end < data.len() {
            end = (end + size).min(data.len());
            got = outcome(&data[..end]);
            if got != Outcome::Partial {
                break;
            }
        }
        assert_eq!(got, whole, "reads of {size} bytes decide otherwise than one read");
    }
}

/// The same request grown by a filler header to just under or just over `MAX_REQUEST`.
fn near_the_limit(data: &[u8]) {
    let Some(eol) = data.iter().position(|&b| b == b'\n') else { return };
    const FRAME: usize = "X-Pad: \r\n".len();
    let target = MAX_REQUEST - 16 + data.len() % 32;
    let Some(filler) = target.checked_sub(data.len() + FRAME) else { return };
    let mut padded = data[..=eol].to_vec();
    padded.extend_from_slice(b"X-Pad: ");
    padded.extend(std::iter::repeat_n(b'p', filler));
    padded.extend_from_slice(b"\r\n");
    padded.extend_from_slice(&data[eol + 1..]);
    handshake(&padded);
    in_reads(&padded);
}

/// The data for `CMD_ON_WEBSOCKET_CONNECT` serializes to what the worker unserializes.
fn connect_data(request: &websocket::HandshakeRequest) {
    let data = server_vars::connect_data(request, "203.0.113.9", 40000, 8282);
    let Value::Array(a) = &data else { panic!("connect data is {data:?}") };
    let keys: Vec<Key> = a.keys().cloned().collect();
    assert_eq!(keys, [Key::from("get"), Key::from("server"), Key::from("cookie")]);
    let server = a.get(&Key::from("server")).and_then(Value::as_array).expect("server array");
    let uri = server.get(&Key::from("REQUEST_URI")).and_then(Value::as_bytes);
    assert_eq!(uri, Some(request.uri.as_bytes()));
    let query = server.get(&Key::from("QUERY_STRING")).and_then(Value::as_bytes);
    let want = request.uri.split_once('?').map_or("", |(_, q)| q);
    assert_eq!(query, Some(want.as_bytes()));
    assert!(depth(&data) <= php::MAX_DEPTH);
    canonical_keys(&data);
    round_trip(&data);
    json(&data);
}

fn parse_str(query: &[u8]) {
    let a = server_vars::parse_str(query);
    let v = Value::Array(a);
    assert!(depth(&v) <= php::MAX_DEPTH - 2, "parse_str nests {} deep", depth(&v));
    canonical_keys(&v);
    round_trip(&v);
    let Value::Array(a) = v else { unreachable!() };
    assert!(a.len() <= query.len());
    assert!(a.keys().all(|k| *k != Key::Str(Vec::new())), "empty name");
}

fn parse_cookie(header: &[u8]) {
    let a: Array = server_vars::parse_cookie(header);
    assert!(a.len() <= header.iter().filter(|&&b| b == b';').count() + 1);
    for (k, v) in &a {
        let name = k.to_bytes();
        assert!(!name.is_empty());
        assert!(!name[0].is_ascii_whitespace() && !name[name.len() - 1].is_ascii_whitespace());
        assert!(!name.contains(&b';') && !name.contains(&b'='));
        assert!(matches!(v, Value::Str(s) if !s.contains(&b';')));
    }
    let v = Value::Array(a);
    canonical_keys(&v);
    round_trip(&v);
}

fn url_decode(s: &[u8]) {
    let d = server_vars::url_decode(s);
    assert!(d.len() <= s.len());
    if !s.contains(&b'%') {
        let plus: Vec<u8> = s.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        assert_eq!(d, plus);
    }
    // Every byte escaped (in either case) decodes back.
    let escaped: Vec<u8> = s
        .iter()
        .enumerate()
        .flat_map(|(i, &b)| {
            let hex = if i % 2 == 0 { format!("%{b:02X}") } else { format!("%{b:02x}") };
            hex.into_bytes()
        })
        .collect();
    assert_eq!(server_vars::url_decode(&escaped), s);
}

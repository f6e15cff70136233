//! The PHP superglobals GatewayWorker builds from a websocket handshake and sends to the
//! business worker with `CMD_ON_WEBSOCKET_CONNECT`: `$_GET` (PHP `parse_str`), `$_SERVER`
//! and `$_COOKIE`, byte for byte as workerman 5 fills them.

use crate::net::websocket::HandshakeRequest;
use crate::wire::php::{Array, Key, Value};

/// The `['get' => .., 'server' => .., 'cookie' => ..]` array GatewayWorker 4 sends with
/// `CMD_ON_WEBSOCKET_CONNECT` (workerman 5 layout).
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
mod tests {
    use super::*;
    use crate::net::websocket::{Handshake, handshake};
    use crate::wire::php;

    const SAMPLE: &str = "GET /chat?token=abc&x[]=1&x[]=2&name=J%C3%BCrgen&empty= HTTP/1.1\r\nHost: 127.0.0.1:14272\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: http://example.com\r\nUser-Agent: compat-test/1\r\nCookie: sid=s1; theme=dark; enc=a%20b\r\nX-Custom-Header: v1\r\n\r\n";

    #[test]
    fn connect_data_matches_gatewayworker_bytes() {
        // Body of the captured CMD_ON_WEBSOCKET_CONNECT for this request (client port 46942).
        let expected = r#"a:3:{s:3:"get";a:4:{s:5:"token";s:3:"abc";s:1:"x";a:2:{i:0;s:1:"1";i:1;s:1:"2";}s:4:"name";s:7:"Jürgen";s:5:"empty";s:0:"";}s:6:"server";a:18:{s:12:"QUERY_STRING";s:45:"token=abc&x[]=1&x[]=2&name=J%C3%BCrgen&empty=";s:14:"REQUEST_METHOD";s:3:"GET";s:11:"REQUEST_URI";s:51:"/chat?token=abc&x[]=1&x[]=2&name=J%C3%BCrgen&empty=";s:15:"SERVER_PROTOCOL";s:8:"HTTP/1.1";s:11:"SERVER_NAME";s:15:"127.0.0.1:14272";s:12:"CONTENT_TYPE";N;s:11:"REMOTE_ADDR";s:9:"127.0.0.1";s:11:"REMOTE_PORT";i:46942;s:11:"SERVER_PORT";i:14272;s:9:"HTTP_HOST";s:15:"127.0.0.1:14272";s:12:"HTTP_UPGRADE";s:9:"websocket";s:15:"HTTP_CONNECTION";s:7:"Upgrade";s:22:"HTTP_SEC_WEBSOCKET_KEY";s:24:"dGhlIHNhbXBsZSBub25jZQ==";s:26:"HTTP_SEC_WEBSOCKET_VERSION";s:2:"13";s:11:"HTTP_ORIGIN";s:18:"http://example.com";s:15:"HTTP_USER_AGENT";s:13:"compat-test/1";s:11:"HTTP_COOKIE";s:29:"sid=s1; theme=dark; enc=a%20b";s:20:"HTTP_X_CUSTOM_HEADER";s:2:"v1";}s:6:"cookie";a:3:{s:3:"sid";s:2:"s1";s:5:"theme";s:4:"dark";s:3:"enc";s:5:"a%20b";}}"#;
        let Handshake::Accepted { request, .. } = handshake(SAMPLE.as_bytes()) else { panic!() };
        let data = connect_data(&request, "127.0.0.1", 46942, 14272);
        assert_eq!(String::from_utf8(php::serialize(&data)).unwrap(), expected);
    }

    #[test]
    fn parse_str_follows_php() {
        let a = parse_str(b"a=1&b[]=x&b[]=y&c[k]=v&d+e=%41&f&a.b=2&n[x][]=1");
        let s = String::from_utf8(php::serialize_array(&a)).unwrap();
        assert_eq!(
            s,
            r#"a:7:{s:1:"a";s:1:"1";s:1:"b";a:2:{i:0;s:1:"x";i:1;s:1:"y";}s:1:"c";a:1:{s:1:"k";s:1:"v";}s:3:"d_e";s:1:"A";s:1:"f";s:0:"";s:3:"a_b";s:1:"2";s:1:"n";a:1:{s:1:"x";a:1:{i:0;s:1:"1";}}}"#
        );
        assert_eq!(url_decode(b"%zz%4"), b"%zz%4");
    }
}

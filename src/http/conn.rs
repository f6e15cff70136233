//! One HTTP/1.1 connection: request heads parsed with `httparse` (a small, widely used
//! parser that never allocates, so the limits below stay ours), bodies by `Content-Length`,
//! keep-alive, `Expect: 100-continue`, and the responses written back in order.

use std::time::Instant;

use mio::net::TcpStream;

use crate::reactor::{InBuf, OutBuf, Ready, TimerId};

/// Most headers one request may carry (more is answered 431).
const MAX_HEADERS: usize = 64;

/// Size limits of one request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_header: usize,
    pub max_body: usize,
}

/// A complete request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub authorization: Option<Vec<u8>>,
    pub keep_alive: bool,
    pub body: Vec<u8>,
}

/// What the bytes received so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed; `expect_continue` once a complete head asked for `100 Continue`.
    Partial { expect_continue: bool },
    /// A request and the number of bytes it took.
    Complete(Request, usize),
    /// Answer with this status and close.
    Error(u16, String),
}

/// The header fields the server acts on.
#[derive(Default)]
struct Head {
    content_length: usize,
    keep_alive: Option<bool>,
    expect_continue: bool,
    authorization: Option<Vec<u8>>,
}

/// Parse the first request in `buf`.
pub fn parse(buf: &[u8], limits: &Limits) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > limits.max_header => {
            return Parsed::Error(
                431,
                format!("request head over {} bytes (max_header_size)", limits.max_header),
            );
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial { expect_continue: false },
        Err(httparse::Error::TooManyHeaders) => {
            return Parsed::Error(431, format!("more than {MAX_HEADERS} headers"));
        }
        Err(e) => return Parsed::Error(400, format!("malformed request: {e}")),
    };
    if head_len > limits.max_header {
        return Parsed::Error(
            431,
            format!("request head over {} bytes (max_header_size)", limits.max_header),
        );
    }
    let head = match head_fields(req.headers) {
        Ok(h) => h,
        Err((status, msg)) => return Parsed::Error(status, msg),
    };
    if head.content_length > limits.max_body {
        return Parsed::Error(
            413,
            format!("body of {} bytes is over {} (max_body_size)", head.content_length, limits.max_body),
        );
    }
    let total = head_len + head.content_length;
    if buf.len() < total {
        return Parsed::Partial { expect_continue: head.expect_continue };
    }
    let http11 = req.version == Some(1);
    Parsed::Complete(
        Request {
            method: req.method.unwrap_or("").to_string(),
            path: req.path.unwrap_or("/").split('?').next().unwrap_or("/").to_string(),
            authorization: head.authorization,
            keep_alive: head.keep_alive.unwrap_or(http11),
            body: buf[head_len..total].to_vec(),
        },
        total,
    )
}

fn head_fields(headers: &[httparse::Header<'_>]) -> Result<Head, (u16, String)> {
    let mut h = Head::default();
    let mut length: Option<usize> = None;
    for hd in headers {
        let value = String::from_utf8_lossy(hd.value).trim().to_ascii_lowercase();
        match hd.name.to_ascii_lowercase().as_str() {
            "content-length" => {
                let n = value.parse::<usize>().map_err(|_| (400, format!("bad Content-Length {value:?}")))?;
                if length.is_some_and(|l| l != n) {
                    return Err((400, "conflicting Content-Length headers".into()));
                }
                length = Some(n);
            }
            "transfer-encoding" if value != "identity" => {
                return Err((411, "chunked bodies are not accepted; send Content-Length".into()));
            }
            "connection" if value.contains("close") => h.keep_alive = Some(false),
            "connection" if value.contains("keep-alive") => h.keep_alive = Some(true),
            "expect" if value == "100-continue" => h.expect_continue = true,
            "authorization" => h.authorization = Some(hd.value.to_vec()),
            _ => {}
        }
    }
    h.content_length = length.unwrap_or(0);
    Ok(h)
}

pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A response to write.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    /// Extra header lines, each ending in `\r\n`.
    pub headers: String,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, headers: String::new(), body: body.into() }
    }

    pub fn json(status: u16, body: &serde_json::Value) -> Response {
        Response::new(status, "application/json", body.to_string())
    }

    /// `{"ok":false,"error":{"code":..,"message":..}}`.
    pub fn error(status: u16, code: &str, message: &str) -> Response {
        Response::json(status, &serde_json::json!({"ok": false, "error": {"code": code, "message": message}}))
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push_str(&format!("{name}: {value}\r\n"));
        self
    }

    /// Append the encoded response to `out`.
    pub fn encode(&self, keep_alive: bool, out: &mut Vec<u8>) {
        let head = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: {}\r\n{}\r\n",
            self.status,
            reason(self.status),
            self.content_type,
            self.body.len(),
            if keep_alive { "keep-alive" } else { "close" },
            self.headers
        );
        out.extend_from_slice(head.as_bytes());
        out.extend_from_slice(&self.body);
    }
}

/// The interim answer to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// One accepted connection.
pub struct Conn {
    pub io: TcpStream,
    pub inb: InBuf,
    pub out: OutBuf,
    pub ready: Ready,
    /// Tells this connection from a later one in the same slab slot.
    pub serial: u64,
    /// A request is being answered (waiting for gateway replies); later ones wait.
    pub busy: bool,
    pub continue_sent: bool,
    /// Close once `out` is written.
    pub closing: bool,
    /// When the request being received started (its bytes must all arrive in time).
    pub request_started: Option<Instant>,
    pub timer: Option<TimerId>,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

impl Conn {
    pub fn new(io: TcpStream, serial: u64) -> Conn {
        Conn {
            io,
            inb: InBuf::default(),
            out: OutBuf::default(),
            ready: Ready::EMPTY,
            serial,
            busy: false,
            continue_sent: false,
            closing: false,
            request_started: None,
            timer: None,
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    /// Queue a response; `keep_alive = false` closes the connection after it.
    pub fn respond(&mut self, r: &Response, keep_alive: bool) {
        r.encode(keep_alive, self.out.vec());
        self.busy = false;
        if !keep_alive {
            self.closing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits { max_header: 256, max_body: 16 };

    #[test]
    fn requests_arrive_in_pieces_and_pipeline() {
        let two = b"POST /api/x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nAuthorization: Bearer k\r\n\r\nhelloGET /metrics HTTP/1.0\r\n\r\n";
        for cut in 0..60 {
            assert!(matches!(parse(&two[..cut], &L), Parsed::Partial { .. }), "cut {cut}");
        }
        let Parsed::Complete(r, n) = parse(two, &L) else { panic!() };
        assert_eq!(
            (r.method.as_str(), r.path.as_str(), r.body.as_slice()),
            ("POST", "/api/x", &b"hello"[..])
        );
        assert_eq!(r.authorization.as_deref(), Some(&b"Bearer k"[..]));
        assert!(r.keep_alive);
        let Parsed::Complete(r2, m) = parse(&two[n..], &L) else { panic!() };
        assert_eq!((r2.path.as_str(), r2.keep_alive, n + m), ("/metrics", false, two.len()));
    }

    #[test]
    fn limits_and_bad_heads_are_refused() {
        let big = b"POST / HTTP/1.1\r\nContent-Length: 17\r\n\r\n";
        assert!(matches!(parse(big, &L), Parsed::Error(413, _)));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(300));
        assert!(matches!(parse(long.as_bytes(), &L), Parsed::Error(431, _)));
        assert!(matches!(parse(b"GARBAGE\x01 / HTTP/1.1\r\n\r\n", &L), Parsed::Error(400, _)));
        let chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert!(matches!(parse(chunked, &L), Parsed::Error(411, _)));
        let cl = b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n";
        assert!(matches!(parse(cl, &L), Parsed::Error(400, _)));
        let expect = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
        assert_eq!(parse(expect, &L), Parsed::Partial { expect_continue: true });
        let close = b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
        assert!(matches!(parse(close, &L), Parsed::Complete(Request { keep_alive: false, .. }, _)));
    }

    #[test]
    fn responses_carry_length_and_connection() {
        let mut out = Vec::new();
        Response::error(404, "not_found", "no").with_header("X-A", "b").encode(false, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("Connection: close\r\nX-A: b\r\n\r\n{"));
        let body = text.split("\r\n\r\n").nth(1).unwrap();
        assert!(text.contains(&format!("Content-Length: {}\r\n", body.len())));
    }
}

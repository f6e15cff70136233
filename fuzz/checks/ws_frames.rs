//! Websocket frames from clients, decoded by tungstenite's `WebSocketContext` in the server
//! role with the gateway's configuration (`net::websocket::config`), read as `gateway::client`
//! reads them: from a non-blocking socket that has delivered some of the bytes so far.

use std::io::{self, Read, Write};

use gatewayworker::internals::net::websocket;
use tungstenite::error::{Error as WsError, ProtocolError};
use tungstenite::protocol::{Message, Role, WebSocketContext};

use super::input::{Chunks, Input};

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    /// EOF after the last byte while no frame was being read.
    Eof(String),
    /// The close handshake completed.
    Closed,
    /// tungstenite refused the input; the gateway closes with an error code.
    Failed(String),
}

/// One byte picks the message limit, one how many bytes arrived behind the handshake request
/// (`from_partially_read`), then the read sizes; the rest is the stream.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let max = limit(input.byte());
    let pre = input.byte() as usize;
    let chunks = input.chunks();
    let stream = input.rest();
    let pre = pre.min(stream.len());

    let (messages, end, written) = run(stream, pre, chunks, max);
    let payload: usize = messages.iter().map(|(_, m)| m.len()).sum();
    assert!(payload <= stream.len(), "{payload} bytes of messages out of {}", stream.len());
    // tungstenite answers pings (a pong is smaller than the masked ping) and closes (one
    // close frame, at most 127 bytes): nothing amplifies what the client sent.
    assert!(written <= stream.len() + 127, "wrote {written} bytes for {} read", stream.len());

    // However the bytes were cut into reads, the same messages and the same end.
    let (all_at_once, end_at_once, _) = run(stream, 0, Chunks::whole(), max);
    assert_eq!(messages, all_at_once, "messages depend on how the bytes arrived");
    assert_eq!(end, end_at_once, "the end depends on how the bytes arrived");
}

/// Small limits (to reach them), then the gateway's smallest, a middle one and its default.
fn limit(b: u8) -> usize {
    match b >> 6 {
        0 => (b & 0x3f) as usize * 4,
        1 => 64 + (b & 0x3f) as usize * 256,
        2 => 65_536,
        _ => 10_485_760,
    }
}

/// Read every message as `gateway::client::read_ws` does. Returns the data messages
/// (binary?, payload), how it ended, and how many bytes tungstenite wrote back.
fn run(stream: &[u8], pre: usize, chunks: Chunks, max: usize) -> (Vec<(bool, Vec<u8>)>, End, usize) {
    let cfg = websocket::config(max);
    let mut ctx = WebSocketContext::from_partially_read(stream[..pre].to_vec(), Role::Server, Some(cfg));
    let mut sock =
        Socket { reads: chunks.split(&stream[pre..]).into_iter(), current: &[], eof: false, written: 0 };
    let mut messages = Vec::new();
    // Every step consumes bytes or ends; a generous bound catches a loop that does not.
    for _ in 0..4 * stream.len() + 64 {
        match ctx.read(&mut sock) {
            Ok(Message::Text(t)) => {
                assert!(t.len() <= max, "text message of {} bytes over {max}", t.len());
                messages.push((false, t.as_bytes().to_vec()));
            }
            Ok(Message::Binary(b)) => {
                assert!(b.len() <= max, "binary message of {} bytes over {max}", b.len());
                messages.push((true, b.to_vec()));
            }
            Ok(Message::Ping(p) | Message::Pong(p)) => assert!(p.len() <= 125),
            Ok(Message::Close(_) | Message::Frame(_)) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(sock.current.is_empty(), "WouldBlock with bytes to read");
                if !sock.next_read() {
                    assert!(!sock.eof, "WouldBlock after EOF");
                    sock.eof = true;
                }
            }
            Err(WsError::ConnectionClosed) => return (messages, End::Closed, sock.written),
            Err(WsError::AlreadyClosed) => panic!("read after the end"),
            Err(e @ WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake))
            | Err(e @ WsError::Io(_)) => {
                assert!(sock.eof, "{e} before EOF");
                return (messages, End::Eof(e.to_string()), sock.written);
            }
            Err(e) => return (messages, End::Failed(e.to_string()), sock.written),
        }
    }
    panic!("no end after {} steps", 4 * stream.len() + 64);
}

/// A non-blocking socket: each read delivers at most what the current chunk has left, then
/// `WouldBlock` until the next chunk arrives; EOF after the last. Writes always succeed
/// (the gateway queues them).
struct Socket<'a> {
    reads: std::vec::IntoIter<&'a [u8]>,
    current: &'a [u8],
    eof: bool,
    written: usize,
}

impl Socket<'_> {
    /// The next chunk arrives; false when there is none.
    fn next_read(&mut self) -> bool {
        match self.reads.next() {
            Some(r) => {
                self.current = r;
                true
            }
            None => false,
        }
    }
}

impl Read for Socket<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.current.is_empty() {
            return if self.eof { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = &self.current[n..];
        Ok(n)
    }
}

impl Write for Socket<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

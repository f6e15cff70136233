//! One client connection of a gateway: its stream, its protocol state (text, frame, or
//! websocket handshake then tungstenite's frame decoder), its outgoing bytes and the
//! GatewayWorker per-client state (session, uid, groups, heartbeat counter, route).
//!
//! Everything sent to the client goes through one ordered `OutBuf` that the gateway flushes
//! once per loop turn; tungstenite's own replies (pong, close) are written into the same
//! buffer through `WsStream`, so ordering holds and nothing blocks inside tungstenite.

use std::io::{self, Read, Write};

use tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

use super::handover::record::{ClientState, CodecState};
use super::limits::Flow;
use crate::config::Proto;
use crate::net::conn::Conn;
use crate::net::io::Io;
use crate::net::table::{Owned, conn_field};
use crate::net::websocket::{self, Handshake, HandshakeRequest};
use crate::net::{frame, text};
use crate::reactor::{InBuf, Ready, would_block};

/// Size of the gateway's shared read buffer.
pub const RX_SIZE: usize = 64 * 1024;

/// The gateway's read buffer, shared by all its clients: a client's socket is read into it
/// and its messages are decoded from it; only a partial message left over moves into that
/// client's own buffer. So an idle client holds no read buffer, and nothing is zero-filled
/// or allocated per read.
pub struct Rx {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Default for Rx {
    /// Empty; the memory comes with the first read (so `mem::take` costs nothing).
    fn default() -> Rx {
        Rx { buf: Vec::new(), start: 0, end: 0 }
    }
}

impl Rx {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// One read of `io` into the (empty) buffer.
    fn fill(&mut self, io: &mut Io) -> io::Result<usize> {
        if self.buf.len() < RX_SIZE {
            self.buf = vec![0; RX_SIZE];
        }
        let n = io.read(&mut self.buf)?;
        self.start = 0;
        self.end = n;
        Ok(n)
    }

    pub fn clear(&mut self) {
        self.start = 0;
        self.end = 0;
    }
}

/// Which worker link a client's events go to: inner slab key + that link's serial.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub key: usize,
    pub serial: u64,
}

/// Protocol state.
enum Codec {
    Text,
    Frame,
    /// Websocket before the 101 response: the request bytes so far.
    Handshake(InBuf),
    Ws(Box<WsState>),
}

/// An open websocket: tungstenite's context, fed one whole frame at a time (`WsStream`), so
/// between two reads it holds no received byte: everything not decoded yet is in the
/// connection's input buffer, plus the frames of a fragmented message in `fragments`. That is
/// what lets the connection move to another process (`handover`) with nothing lost.
pub struct WsState {
    ctx: WebSocketContext,
    /// Bytes of the frame being passed to tungstenite not passed yet.
    owed: usize,
    /// The frames received so far of a fragmented message (tungstenite keeps it decoded).
    fragments: Vec<u8>,
}

impl WsState {
    fn new(ws_cfg: &WebSocketConfig) -> WsState {
        WsState { ctx: WebSocketContext::new(Role::Server, Some(*ws_cfg)), owed: 0, fragments: Vec::new() }
    }
}

/// What the next read step produced.
#[derive(Debug)]
pub enum Inbound {
    /// A message; its payload is in the caller's scratch buffer.
    Message { binary: bool },
    /// The websocket handshake completed (the 101 is queued).
    Upgraded(HandshakeRequest),
    /// Nothing more until the next readable edge.
    Idle,
    /// The connection ended or must be failed; `reason` says why (for the log).
    Closed(Closed),
}

/// How a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Peer closed (EOF, reset, websocket close handshake).
    Peer,
    /// Peer sent something invalid (a kind for log throttling, and the reason); the reply
    /// (error page, close frame) is queued.
    Bad(&'static str, String),
    /// Message over the size limit.
    TooBig(String),
}

/// Why a send did not queue anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The send buffer is at its limit.
    BufferFull,
    /// The connection is closing.
    Closing,
}

/// One client: its connection (whose input buffer holds the received bytes of a message
/// not complete yet: empty, unallocated, most of the time), its protocol state and its
/// GatewayWorker state.
pub struct Client {
    pub id: u32,
    pub conn: Conn,
    codec: Codec,
    pub ip: u32,
    pub port: u16,
    /// PHP-serialized session ('' when never set).
    pub session: Vec<u8>,
    pub uid: Option<Box<[u8]>>,
    /// Groups in join order; `None` until the first join (PHP's unset property).
    pub groups: Option<Vec<Box<[u8]>>>,
    pub route: Option<Route>,
    /// Heartbeat counter (`docs/protocol.md` §6): -1 after every message.
    pub ping: i32,
    /// Second (of the gateway's coarse clock) of the last message, for the idle timeout.
    pub last_active: u32,
    /// Rates and pause state (`limits`).
    pub flow: Flow,
    /// A wss client whose TLS session the replaced process keeps and relays: it gets close
    /// 1012 within the upgrade's drain window.
    pub relayed: bool,
}

impl Client {
    pub fn new(id: u32, io: Io, proto: Proto, ip: u32, port: u16, now: u32) -> Client {
        let codec = match proto {
            Proto::Text => Codec::Text,
            Proto::Frame => Codec::Frame,
            Proto::WebSocket => Codec::Handshake(InBuf::default()),
        };
        Client {
            id,
            conn: Conn::new(io),
            codec,
            ip,
            port,
            session: Vec::new(),
            uid: None,
            groups: None,
            route: None,
            ping: -1,
            last_active: now,
            flow: Flow::default(),
            relayed: false,
        }
    }

    pub fn proto(&self) -> Proto {
        match self.codec {
            Codec::Text => Proto::Text,
            Codec::Frame => Proto::Frame,
            Codec::Handshake(_) | Codec::Ws(_) => Proto::WebSocket,
        }
    }

    /// Bytes received and not decoded yet (tungstenite's own buffer is not counted).
    pub fn pending_input(&self) -> usize {
        match &self.codec {
            Codec::Handshake(b) => b.len(),
            _ => self.conn.inbuf.len(),
        }
    }

    /// Sent something not read or not decoded yet.
    pub fn has_unread_input(&self) -> bool {
        self.conn.ready.contains(Ready::READABLE) || self.pending_input() > 0
    }

    /// Keep what is left in the shared read buffer (the read budget ran out mid-buffer):
    /// the buffer must be empty before another client uses it.
    pub fn stash(&mut self, rx: &mut Rx) {
        if !rx.is_empty() {
            self.conn.inbuf.extend(rx.data());
            rx.clear();
        }
    }

    /// Read and decode the next inbound item. `msg` receives a message's payload; `rx` is
    /// the gateway's shared read buffer (call `stash` when done with this client).
    /// `max` is the largest message accepted.
    pub fn next(&mut self, rx: &mut Rx, msg: &mut Vec<u8>, max: usize, ws_cfg: &WebSocketConfig) -> Inbound {
        if self.conn.dead || self.conn.closing {
            return Inbound::Idle;
        }
        loop {
            let proto = match &mut self.codec {
                Codec::Ws(ws) => {
                    let WsState { ctx, owed, fragments } = &mut **ws;
                    let mut stream = WsStream { conn: &mut self.conn, rx, owed, fragments, max };
                    return read_ws(ctx, &mut stream, msg);
                }
                Codec::Handshake(_) => match self.handshake_step(ws_cfg) {
                    Some(item) => return item,
                    None => continue,
                },
                Codec::Text => Proto::Text,
                Codec::Frame => Proto::Frame,
            };
            // Text and frame: decode from the client's partial message, else from the
            // shared buffer; read more only when neither holds a whole message.
            if !self.conn.inbuf.is_empty() {
                match decode(proto, self.conn.inbuf.data(), max) {
                    Decoded::Message { start, end, used } => {
                        msg.clear();
                        msg.extend_from_slice(&self.conn.inbuf.data()[start..end]);
                        self.conn.inbuf.consume(used);
                        return Inbound::Message { binary: false };
                    }
                    Decoded::Bad(why) => return Inbound::Closed(Closed::TooBig(why)),
                    Decoded::Partial => {}
                }
            } else if !rx.is_empty() {
                match decode(proto, rx.data(), max) {
                    Decoded::Message { start, end, used } => {
                        msg.clear();
                        msg.extend_from_slice(&rx.data()[start..end]);
                        rx.consume(used);
                        return Inbound::Message { binary: false };
                    }
                    Decoded::Bad(why) => return Inbound::Closed(Closed::TooBig(why)),
                    Decoded::Partial => self.stash(rx),
                }
            }
            if let Some(item) = self.fill(rx) {
                return item;
            }
            if !self.conn.inbuf.is_empty() {
                self.stash(rx);
            }
        }
    }

    /// One read of the socket into `rx`. `Some` when reading ends this round.
    fn fill(&mut self, rx: &mut Rx) -> Option<Inbound> {
        if !self.conn.ready.contains(Ready::READABLE) {
            return Some(Inbound::Idle);
        }
        let res = rx.fill(&mut self.conn.io);
        self.after_read(res, RX_SIZE)
    }

    /// Account for one read that asked for `asked` bytes. `Some` when reading ends here.
    fn after_read(&mut self, res: io::Result<usize>, asked: usize) -> Option<Inbound> {
        match res {
            Ok(0) => Some(Inbound::Closed(Closed::Peer)),
            Ok(n) => {
                self.conn.count_read(n, asked);
                None
            }
            Err(e) if would_block(&e) => {
                self.conn.ready.remove(Ready::READABLE);
                Some(Inbound::Idle)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => Some(Inbound::Closed(io_closed(e))),
        }
    }

    /// The websocket opening handshake: read the request into its own small buffer, answer
    /// it, switch to the frame decoder. `None` means "go on".
    fn handshake_step(&mut self, ws_cfg: &WebSocketConfig) -> Option<Inbound> {
        let Codec::Handshake(buf) = &mut self.codec else { return None };
        match websocket::handshake(buf.data()) {
            Handshake::Partial => {}
            Handshake::Rejected { response, reason } => {
                self.conn.out.clear();
                self.conn.out.extend(response);
                return Some(Inbound::Closed(Closed::Bad("handshake", reason)));
            }
            Handshake::Accepted { response, request, consumed } => {
                // Frames sent right behind the request wait in the input buffer (empty while
                // the handshake runs: its bytes have their own buffer).
                self.conn.inbuf.extend(&buf.data()[consumed..]);
                // The 101 goes before anything queued while the handshake ran.
                self.conn.out.prepend(&response);
                self.codec = Codec::Ws(Box::new(WsState::new(ws_cfg)));
                // Frames may already be buffered behind the request.
                self.conn.ready.insert(Ready::READABLE);
                return Some(Inbound::Upgraded(request));
            }
        }
        if !self.conn.ready.contains(Ready::READABLE) {
            return Some(Inbound::Idle);
        }
        let res = buf.read_from(&mut self.conn.io, 1024);
        self.after_read(res, 1024)
    }

    /// Queue one message encoded by the client's protocol. `raw` bytes are queued as they
    /// are (already encoded by the sender). `limit` is the send buffer cap.
    pub fn send(&mut self, msg: &[u8], raw: bool, binary: bool, limit: usize) -> Result<(), SendError> {
        if self.conn.closing || self.conn.dead {
            return Err(SendError::Closing);
        }
        if self.conn.out.len() >= limit {
            return Err(SendError::BufferFull);
        }
        let v = self.conn.out.vec();
        if raw {
            v.extend_from_slice(msg);
            return Ok(());
        }
        match self.codec {
            Codec::Text => text::encode(v, msg),
            Codec::Frame => frame::encode(v, msg),
            Codec::Handshake(_) | Codec::Ws(_) => {
                let op = if binary { websocket::OP_BINARY } else { websocket::OP_TEXT };
                websocket::encode_frame(v, op, msg);
            }
        }
        Ok(())
    }

    /// Queue bytes already encoded for this client's protocol (a broadcast encoded once).
    pub fn send_encoded(&mut self, bytes: &[u8], limit: usize) -> Result<(), SendError> {
        self.send(bytes, true, false, limit)
    }

    /// A websocket client closed before its handshake finished gets nothing of what was
    /// queued for after the 101 (workerman drops that buffer on close).
    pub fn drop_early_output(&mut self) {
        if matches!(self.codec, Codec::Handshake(_)) {
            self.conn.out.clear();
        }
    }

    /// A policy violation (over its rate): a websocket client gets close 1008 before the
    /// connection is closed.
    pub fn fail_policy(&mut self) {
        if matches!(self.codec, Codec::Ws(_)) {
            websocket::encode_close(self.conn.out.vec(), 1008);
        }
    }

    /// Start closing: whatever is queued is written, then the connection is closed.
    pub fn close_after_flush(&mut self) {
        self.conn.closing = true;
    }

    /// TLS or websocket handshake still running.
    pub fn handshaking(&self) -> bool {
        matches!(self.codec, Codec::Handshake(_)) || self.conn.io.is_handshaking()
    }

    /// Drop buffers before destruction.
    pub fn release(&mut self) {
        self.conn.out.clear();
    }

    /// Everything this client is, for the process that takes it over (`Client::restore`). A
    /// websocket reply tungstenite still holds (a pong) is queued first. `relayed`: its TLS
    /// session stays here and the plain bytes go through a relay.
    pub fn snapshot(&mut self, relayed: bool) -> ClientState {
        let mut inbuf = Vec::new();
        let codec = match &mut self.codec {
            Codec::Text => CodecState::Text,
            Codec::Frame => CodecState::Frame,
            Codec::Handshake(b) => CodecState::Handshake(b.data().to_vec()),
            Codec::Ws(ws) => {
                debug_assert_eq!(ws.owed, 0, "a frame is passed to tungstenite within one read");
                let mut rx = Rx::default();
                let WsState { ctx, owed, fragments } = &mut **ws;
                let mut stream = WsStream { conn: &mut self.conn, rx: &mut rx, owed, fragments, max: 0 };
                let _ = ctx.flush(&mut stream);
                inbuf.extend_from_slice(&ws.fragments);
                CodecState::Ws
            }
        };
        inbuf.extend_from_slice(self.conn.inbuf.data());
        ClientState {
            id: self.id,
            ip: self.ip,
            port: self.port,
            codec,
            inbuf,
            out: self.conn.out.pending().to_vec(),
            closing: self.conn.closing || self.conn.dead,
            session: self.session.clone(),
            uid: self.uid.as_ref().map(|u| u.to_vec()),
            groups: self.groups.as_ref().map(|g| g.iter().map(|n| n.to_vec()).collect()),
            route: self.route.map(|r| (r.key as u64, r.serial)),
            ping: self.ping,
            msgs_used: self.flow.msgs.used,
            bytes_used: self.flow.bytes.used,
            relayed: relayed || self.relayed,
            bytes_read: self.conn.bytes_read,
            bytes_written: self.conn.bytes_written,
        }
    }

    /// A client handed over by the process this one replaces, on `io` (its own socket, or
    /// the relay of its TLS session). `route` is the state's route with this process's link
    /// key. Its readiness is unknown: it reads and writes at once.
    pub fn restore(
        s: ClientState,
        io: Io,
        route: Option<Route>,
        ws_cfg: &WebSocketConfig,
        now: u32,
    ) -> Client {
        let codec = match s.codec {
            CodecState::Text => Codec::Text,
            CodecState::Frame => Codec::Frame,
            CodecState::Handshake(b) => {
                let mut buf = InBuf::default();
                buf.extend(&b);
                Codec::Handshake(buf)
            }
            CodecState::Ws => Codec::Ws(Box::new(WsState::new(ws_cfg))),
        };
        let mut conn = Conn::new(io);
        conn.inbuf.extend(&s.inbuf);
        conn.out.extend(&s.out);
        conn.closing = s.closing;
        conn.bytes_read = s.bytes_read;
        conn.bytes_written = s.bytes_written;
        conn.ready = Ready::READABLE | Ready::WRITABLE;
        let mut flow = Flow::default();
        flow.msgs.used = s.msgs_used;
        flow.bytes.used = s.bytes_used;
        Client {
            id: s.id,
            conn,
            codec,
            ip: s.ip,
            port: s.port,
            session: s.session,
            uid: s.uid.map(Vec::into_boxed_slice),
            groups: s.groups.map(|g| g.into_iter().map(Vec::into_boxed_slice).collect()),
            route,
            ping: s.ping,
            last_active: now,
            flow,
            relayed: s.relayed,
        }
    }

    /// An open websocket (close frames can be sent).
    pub fn is_open_websocket(&self) -> bool {
        matches!(self.codec, Codec::Ws(_))
    }
}

impl Owned for Client {
    conn_field!();

    /// Messages sent before the websocket handshake wait for the 101; during a TLS handshake
    /// rustls may have records to push even then.
    fn flush(&mut self) -> io::Result<bool> {
        if !matches!(self.codec, Codec::Handshake(_)) || self.conn.closing {
            return self.conn.flush();
        }
        match self.conn.io.flush() {
            Ok(()) => Ok(true),
            Err(e) if would_block(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn wants_flush(&self) -> bool {
        !self.conn.out.is_empty() || self.conn.io.wants_write()
    }
}

/// One step of the open websocket: the next data message, or the end.
fn read_ws(ctx: &mut WebSocketContext, stream: &mut WsStream<'_>, msg: &mut Vec<u8>) -> Inbound {
    loop {
        match ctx.read(stream) {
            Ok(Message::Text(t)) => {
                msg.clear();
                msg.extend_from_slice(t.as_bytes());
                return Inbound::Message { binary: false };
            }
            Ok(Message::Binary(b)) => {
                msg.clear();
                msg.extend_from_slice(&b);
                return Inbound::Message { binary: true };
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_)) => {}
            Err(WsError::Io(e)) if would_block(&e) => {
                stream.conn.ready.remove(Ready::READABLE);
                return Inbound::Idle;
            }
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return Inbound::Closed(Closed::Peer),
            Err(WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake)) => {
                return Inbound::Closed(Closed::Peer);
            }
            Err(WsError::Io(e)) => return Inbound::Closed(io_closed(e)),
            Err(e) => {
                let (code, closed) = match &e {
                    WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
                        (1009, Closed::TooBig(e.to_string()))
                    }
                    WsError::Capacity(_) => (1009, Closed::TooBig(e.to_string())),
                    WsError::Utf8(_) => {
                        (1007, Closed::Bad("utf8", format!("invalid UTF-8 in a text message: {e}")))
                    }
                    _ => (1002, Closed::Bad("protocol", e.to_string())),
                };
                websocket::encode_close(stream.conn.out.vec(), code);
                return Inbound::Closed(closed);
            }
        }
    }
}

/// Where a text or frame message is in a buffer.
enum Decoded {
    Message { start: usize, end: usize, used: usize },
    Partial,
    Bad(String),
}

fn decode(proto: Proto, data: &[u8], max: usize) -> Decoded {
    match proto {
        Proto::Text => match text::input(data, max) {
            Ok(Some((len, used))) => Decoded::Message { start: 0, end: len, used },
            Ok(None) => Decoded::Partial,
            Err(text::TooLong) => Decoded::Bad(format!("text line over {max} bytes")),
        },
        _ => match frame::input(data, max) {
            Ok(Some(total)) => Decoded::Message { start: 4, end: total, used: total },
            Ok(None) => Decoded::Partial,
            Err(frame::BadLength(n)) => Decoded::Bad(format!("frame length {n} outside 4..={}", max + 4)),
        },
    }
}

fn io_closed(e: io::Error) -> Closed {
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
            Closed::Peer
        }
        _ => Closed::Bad("read", format!("read error: {e}")),
    }
}

/// The stream tungstenite sees: reads come from the client's partial bytes, then the
/// shared read buffer, then the socket (into the shared buffer), one whole frame at a time
/// (see `WsState`); writes go to our ordered output buffer (never blocking, never `Ok(0)`),
/// flushed by the gateway at the end of the turn.
struct WsStream<'a> {
    conn: &'a mut Conn,
    rx: &'a mut Rx,
    owed: &'a mut usize,
    fragments: &'a mut Vec<u8>,
    /// Largest frame accepted: a longer one is passed as soon as its header is, so
    /// tungstenite refuses it without its payload being buffered.
    max: usize,
}

impl WsStream<'_> {
    /// Make the bytes not passed yet one slice: the client's own buffer, else the shared one.
    fn merge(&mut self) {
        if !self.conn.inbuf.is_empty() && !self.rx.is_empty() {
            self.conn.inbuf.extend(self.rx.data());
            self.rx.clear();
        }
    }

    /// One read of the socket, behind the bytes not passed yet.
    fn fill(&mut self) -> io::Result<usize> {
        if !self.conn.ready.contains(Ready::READABLE) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = if self.conn.inbuf.is_empty() && self.rx.is_empty() {
            self.rx.fill(&mut self.conn.io)?
        } else {
            if !self.rx.is_empty() {
                self.conn.inbuf.extend(self.rx.data());
                self.rx.clear();
            }
            self.conn.inbuf.read_from(&mut self.conn.io, RX_SIZE)?
        };
        if n > 0 {
            self.conn.count_read(n, RX_SIZE);
        }
        Ok(n)
    }
}

impl Read for WsStream<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while *self.owed == 0 {
            self.merge();
            let data = if self.conn.inbuf.is_empty() { self.rx.data() } else { self.conn.inbuf.data() };
            match websocket::frame_len(data, self.max) {
                Some(n) => {
                    let frame = &data[..n.min(data.len())];
                    let op = websocket::FrameHead::of(frame);
                    track_fragments(self.fragments, op, frame);
                    *self.owed = n;
                }
                None => {
                    if self.fill()? == 0 {
                        return Ok(0);
                    }
                }
            }
        }
        let owed = *self.owed;
        let src = if self.conn.inbuf.is_empty() { self.rx.data() } else { self.conn.inbuf.data() };
        let n = buf.len().min(owed).min(src.len());
        buf[..n].copy_from_slice(&src[..n]);
        if self.conn.inbuf.is_empty() {
            self.rx.consume(n);
        } else {
            self.conn.inbuf.consume(n);
        }
        *self.owed -= n;
        Ok(n)
    }
}

/// Keep the raw frames of a fragmented message until its last frame is passed.
fn track_fragments(fragments: &mut Vec<u8>, head: websocket::FrameHead, frame: &[u8]) {
    match head {
        websocket::FrameHead { control: true, .. } => {}
        websocket::FrameHead { fin: true, .. } => fragments.clear(),
        websocket::FrameHead { fin: false, continuation, .. } => {
            if !continuation {
                fragments.clear();
            }
            fragments.extend_from_slice(frame);
        }
    }
}

impl Write for WsStream<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.conn.out.extend(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;

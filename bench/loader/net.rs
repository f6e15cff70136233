//! Client connections on one edge-triggered mio `Poll`: non-blocking connect (optionally bound
//! to a chosen source address), TLS, the WebSocket upgrade, framing, handshake deadlines, and a
//! timerfd so that send schedules are kept to the microsecond rather than epoll's millisecond.
//!
//! Every socket is registered once for read + write; "can write" is kept as data
//! (`Conn::writable`) and reads always drain to `WouldBlock`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};

use crate::args::Target;
use crate::codec::{self, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Proto};
use crate::sys::TimerFd;

const TIMER: Token = Token(usize::MAX - 1);

/// Why a connection ended or could not be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    Refused,
    Timeout,
    BadHandshake,
    Reset,
    PeerClosed,
    Tls,
    Protocol,
    AddrUnavailable,
    Other,
}

impl Failure {
    const ALL: [Failure; 9] = [
        Failure::Refused,
        Failure::Timeout,
        Failure::BadHandshake,
        Failure::Reset,
        Failure::PeerClosed,
        Failure::Tls,
        Failure::Protocol,
        Failure::AddrUnavailable,
        Failure::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::BadHandshake => "bad_handshake",
            Failure::Reset => "reset",
            Failure::PeerClosed => "peer_closed",
            Failure::Tls => "tls",
            Failure::Protocol => "protocol",
            Failure::AddrUnavailable => "addr_unavailable",
            Failure::Other => "other",
        }
    }

    fn of(e: &io::Error) -> Failure {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Failure::Refused,
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted => {
                Failure::Reset
            }
            io::ErrorKind::AddrNotAvailable => Failure::AddrUnavailable,
            io::ErrorKind::TimedOut => Failure::Timeout,
            _ => Failure::Other,
        }
    }
}

/// Failures counted by kind.
#[derive(Clone, Debug, Default)]
pub struct Failures([u64; 9]);

impl Failures {
    pub fn add(&mut self, f: Failure) {
        self.0[f as usize] += 1;
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    pub fn to_json(&self) -> serde_json::Value {
        let map: serde_json::Map<String, serde_json::Value> =
            Failure::ALL.iter().map(|f| (f.name().to_string(), self.0[*f as usize].into())).collect();
        serde_json::Value::Object(map)
    }
}

/// What happened on the connections during one [`Net::poll_once`].
pub enum Event<'a> {
    /// Connected and, for WebSocket, upgraded: messages can be sent.
    Open {
        key: usize,
        since_connect: Duration,
    },
    Message {
        tag: usize,
        payload: &'a [u8],
    },
    /// The connection is gone (its key may be reused from now on).
    Closed {
        tag: usize,
        why: Failure,
        was_open: bool,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Upgrading,
    Open,
}

struct Conn {
    sock: TcpStream,
    tls: Option<Box<ClientConnection>>,
    phase: Phase,
    tag: usize,
    started: Instant,
    /// Expected `Sec-WebSocket-Accept`.
    accept: String,
    inbuf: Vec<u8>,
    /// Encoded bytes not yet written (plain) or not yet handed to rustls (TLS).
    out: Vec<u8>,
    out_pos: usize,
    writable: bool,
    /// A fragmented message being collected.
    frag: Option<Vec<u8>>,
    close_sent: bool,
}

pub struct Net {
    poll: Poll,
    events: Events,
    conns: Slab<Conn>,
    target: Target,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    sources: Vec<Ipv4Addr>,
    next_source: usize,
    scratch: Vec<u8>,
    rng: u64,
    timer: TimerFd,
    armed: Option<Instant>,
    timeout: Duration,
    /// Connections whose handshake deadline is still running, in connect order.
    pending: VecDeque<(usize, Instant)>,
    /// Connections that failed outside `poll_once` (in `send`), reported at the next one.
    dead: Vec<(usize, Failure)>,
    opcode: u8,
    /// epoll_wait calls so far (the loader's own wake-ups, about).
    pub polls: u64,
    /// Read open connections (false: what the server sends stays unread, `flood`).
    pub read_open: bool,
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Interrupted
}

impl Net {
    pub fn new(
        target: Target,
        tls: Option<Arc<ClientConfig>>,
        sources: Vec<Ipv4Addr>,
        timeout: Duration,
        binary: bool,
    ) -> io::Result<Net> {
        let poll = Poll::new()?;
        let timer = TimerFd::new()?;
        poll.registry().register(&mut SourceFd(&timer.raw()), TIMER, Interest::READABLE)?;
        let tls = match tls {
            Some(config) => {
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|e| io::Error::other(format!("TLS server name {:?}: {e}", target.host)))?;
                Some((config, name))
            }
            None => None,
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let seed = now.as_nanos() as u64 ^ (std::process::id() as u64) << 32 ^ 0x9E37_79B9_7F4A_7C15;
        Ok(Net {
            poll,
            events: Events::with_capacity(1024),
            conns: Slab::new(),
            target,
            tls,
            sources,
            next_source: 0,
            scratch: vec![0; 64 * 1024],
            rng: seed | 1,
            timer,
            armed: None,
            timeout,
            pending: VecDeque::new(),
            dead: Vec::new(),
            opcode: if binary { OP_BINARY } else { OP_TEXT },
            polls: 0,
            read_open: true,
        })
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    fn mask(&mut self) -> [u8; 4] {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng as u32).to_ne_bytes()
    }

    /// Starts a non-blocking connect; `tag` comes back in every event of this connection.
    pub fn connect(&mut self, tag: usize) -> Result<usize, Failure> {
        let sock =
            Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).map_err(|e| Failure::of(&e))?;
        sock.set_nonblocking(true).map_err(|e| Failure::of(&e))?;
        sock.set_cloexec(true).map_err(|e| Failure::of(&e))?;
        if !self.sources.is_empty() {
            let src = self.sources[self.next_source % self.sources.len()];
            self.next_source += 1;
            // Let connect() pick the port per (source, destination) pair, not bind().
            let one: libc::c_int = 1;
            // SAFETY: setsockopt on an open socket with a pointer to a local int.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
            sock.bind(&SocketAddrV4::new(src, 0).into()).map_err(|e| Failure::of(&e))?;
        }
        match sock.connect(&self.target.addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(Failure::of(&e)),
        }
        let mut stream = TcpStream::from_std(sock.into());
        let tls = match &self.tls {
            Some((config, name)) => {
                let mut c = ClientConnection::new(config.clone(), name.clone()).map_err(|_| Failure::Tls)?;
                c.set_buffer_limit(None);
                Some(Box::new(c))
            }
            None => None,
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        self.poll
            .registry()
            .register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| Failure::of(&e))?;
        let started = Instant::now();
        entry.insert(Conn {
            sock: stream,
            tls,
            phase: Phase::Connecting,
            tag,
            started,
            accept: String::new(),
            inbuf: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            writable: false,
            frag: None,
            close_sent: false,
        });
        self.pending.push_back((key, started));
        Ok(key)
    }

    /// Queues one message and writes as much as the socket takes. False if `key` is not open.
    pub fn send(&mut self, key: usize, payload: &[u8]) -> bool {
        let mask = self.mask();
        let (proto, opcode) = (self.target.proto, self.opcode);
        let Some(conn) = self.conns.get_mut(key) else {
            return false;
        };
        if conn.phase != Phase::Open {
            return false;
        }
        proto.encode(&mut conn.out, opcode, payload, mask);
        if let Err(f) = conn.flush() {
            self.dead.push((key, f));
        }
        true
    }

    /// Bytes queued on `key` that its socket has not taken yet; `None` when it is not open.
    pub fn backlog(&self, key: usize) -> Option<usize> {
        let conn = self.conns.get(key).filter(|c| c.phase == Phase::Open)?;
        Some(conn.out.len() - conn.out_pos)
    }

    /// Closes a connection without an event (the caller knows).
    pub fn close(&mut self, key: usize) {
        if self.conns.contains(key) {
            let mut conn = self.conns.remove(key);
            let _ = self.poll.registry().deregister(&mut conn.sock);
        }
    }

    fn fail(&mut self, key: usize, why: Failure, sink: &mut dyn FnMut(Event<'_>)) {
        if !self.conns.contains(key) {
            return;
        }
        let mut conn = self.conns.remove(key);
        let _ = conn.flush();
        let _ = self.poll.registry().deregister(&mut conn.sock);
        sink(Event::Closed { tag: conn.tag, why, was_open: conn.phase == Phase::Open });
    }

    /// Waits for readiness until `deadline` (or up to 1 s without one), handles it, reports
    /// through `sink`. Returns early on a signal.
    pub fn poll_once(
        &mut self,
        deadline: Option<Instant>,
        sink: &mut dyn FnMut(Event<'_>),
    ) -> io::Result<()> {
        for (key, why) in std::mem::take(&mut self.dead) {
            self.fail(key, why, sink);
        }
        let now = Instant::now();
        while let Some(&(key, started)) = self.pending.front() {
            if started + self.timeout > now {
                break;
            }
            self.pending.pop_front();
            if self.conns.get(key).is_some_and(|c| c.started == started && c.phase != Phase::Open) {
                self.fail(key, Failure::Timeout, sink);
            }
        }
        let mut wake = deadline;
        if let Some(&(_, started)) = self.pending.front() {
            let t = started + self.timeout;
            wake = Some(wake.map_or(t, |w| w.min(t)));
        }
        let timeout = match wake {
            None => Duration::from_secs(1),
            Some(w) if w <= now => Duration::ZERO,
            Some(w) => {
                if self.armed != Some(w) {
                    self.timer.arm(w - now)?;
                    self.armed = Some(w);
                }
                // The timerfd wakes us on time; the epoll timeout is only a safety net.
                (w - now + Duration::from_millis(5)).min(Duration::from_secs(1))
            }
        };
        self.polls += 1;
        let mut events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        match self.poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if interrupted(&e) => {}
            Err(e) => {
                self.events = events;
                return Err(e);
            }
        }
        for ev in events.iter() {
            if ev.token() == TIMER {
                self.timer.drain();
                self.armed = None;
                continue;
            }
            let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
            // A short read drains the socket unless the event also announced EOF or an error,
            // which only a further read reports (an edge already consumed would not repeat).
            let short_read_drains = !(ev.is_read_closed() || ev.is_error());
            self.on_ready(
                ev.token().0,
                readable,
                ev.is_writable() || ev.is_write_closed(),
                short_read_drains,
                sink,
            );
        }
        self.events = events;
        Ok(())
    }

    fn on_ready(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        short_read_drains: bool,
        sink: &mut dyn FnMut(Event<'_>),
    ) {
        let mask = self.mask();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if writable {
            conn.writable = true;
        }
        if conn.phase == Phase::Connecting {
            match connect_result(&conn.sock) {
                Ok(false) => return,
                Err(e) => return self.fail(key, Failure::of(&e), sink),
                Ok(true) => {
                    let _ = conn.sock.set_nodelay(true);
                    conn.writable = true;
                    if self.target.proto == Proto::Ws {
                        let ws_key = tungstenite::handshake::client::generate_key();
                        conn.accept = tungstenite::handshake::derive_accept_key(ws_key.as_bytes());
                        let req = codec::upgrade_request(
                            &self.target.host,
                            self.target.port,
                            &self.target.path,
                            &ws_key,
                        );
                        conn.out.extend_from_slice(&req);
                        conn.phase = Phase::Upgrading;
                    } else {
                        conn.phase = Phase::Open;
                        sink(Event::Open { key, since_connect: conn.started.elapsed() });
                    }
                }
            }
        }
        let proto = self.target.proto;
        let mut result = conn.flush();
        if readable && result.is_ok() && (conn.phase != Phase::Open || self.read_open) {
            result = conn
                .read(key, proto, &mut self.scratch, short_read_drains, mask, sink)
                .and_then(|()| conn.flush());
        }
        if let Err(why) = result {
            self.fail(key, why, sink);
        }
    }
}

/// `Ok(true)` connected, `Ok(false)` still connecting, `Err` failed.
fn connect_result(sock: &TcpStream) -> io::Result<bool> {
    match sock.take_error() {
        Ok(Some(e)) | Err(e) => return Err(e),
        Ok(None) => {}
    }
    match sock.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

impl Conn {
    /// Writes queued bytes (through rustls for TLS) until done or `WouldBlock`.
    fn flush(&mut self) -> Result<(), Failure> {
        if self.phase == Phase::Connecting {
            return Ok(());
        }
        if let Some(tls) = &mut self.tls {
            if !self.out.is_empty() {
                tls.writer().write_all(&self.out).map_err(|_| Failure::Tls)?;
                self.out.clear();
            }
            while self.writable && tls.wants_write() {
                match tls.write_tls(&mut self.sock) {
                    Ok(_) => {}
                    Err(e) if would_block(&e) => self.writable = false,
                    Err(e) if interrupted(&e) => {}
                    Err(e) => return Err(Failure::of(&e)),
                }
            }
            return Ok(());
        }
        while self.writable && self.out_pos < self.out.len() {
            match self.sock.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(Failure::Reset),
                Ok(n) => self.out_pos += n,
                Err(e) if would_block(&e) => self.writable = false,
                Err(e) if interrupted(&e) => {}
                Err(e) => return Err(Failure::of(&e)),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads until `WouldBlock` (or a short read that must have emptied the socket), decoding
    /// as it goes.
    fn read(
        &mut self,
        key: usize,
        proto: Proto,
        scratch: &mut [u8],
        short_read_drains: bool,
        mask: [u8; 4],
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), Failure> {
        loop {
            let mut eof = false;
            let mut drained = false;
            let mut got = 0;
            if let Some(tls) = &mut self.tls {
                match tls.read_tls(&mut self.sock) {
                    Ok(0) => eof = true,
                    Ok(_) => {}
                    Err(e) if would_block(&e) => drained = true,
                    Err(e) if interrupted(&e) => continue,
                    Err(e) => return Err(Failure::of(&e)),
                }
                let was_handshaking = tls.is_handshaking();
                tls.process_new_packets().map_err(|_| Failure::Tls)?;
                loop {
                    match tls.reader().read(scratch) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => {
                            self.inbuf.extend_from_slice(&scratch[..n]);
                            got += n;
                        }
                        Err(e) if would_block(&e) => break,
                        Err(_) => {
                            eof = true;
                            break;
                        }
                    }
                }
                if (was_handshaking && !tls.is_handshaking()) || tls.wants_write() {
                    self.flush()?;
                }
            } else {
                match self.sock.read(scratch) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        self.inbuf.extend_from_slice(&scratch[..n]);
                        got = n;
                        drained = short_read_drains && n < scratch.len();
                    }
                    Err(e) if would_block(&e) => drained = true,
                    Err(e) if interrupted(&e) => continue,
                    Err(e) => return Err(Failure::of(&e)),
                }
            }
            if got > 0 {
                self.process(key, proto, mask, sink)?;
            }
            if eof {
                return Err(match self.phase {
                    Phase::Open => Failure::PeerClosed,
                    _ => Failure::Reset,
                });
            }
            if drained {
                return Ok(());
            }
        }
    }

    /// Decodes what `inbuf` holds: the upgrade response, then messages and control frames.
    fn process(
        &mut self,
        key: usize,
        proto: Proto,
        mask: [u8; 4],
        sink: &mut dyn FnMut(Event<'_>),
    ) -> Result<(), Failure> {
        let mut pos = 0;
        let result = loop {
            match self.phase {
                Phase::Connecting => break Ok(()),
                Phase::Upgrading => match codec::check_upgrade_response(&self.inbuf[pos..], &self.accept) {
                    Ok(None) => break Ok(()),
                    Ok(Some(n)) => {
                        pos += n;
                        self.phase = Phase::Open;
                        sink(Event::Open { key, since_connect: self.started.elapsed() });
                    }
                    Err(_) => break Err(Failure::BadHandshake),
                },
                Phase::Open => {
                    let d = match proto.decode(&mut self.inbuf[pos..]) {
                        Ok(Some(d)) => d,
                        Ok(None) => break Ok(()),
                        Err(_) => break Err(Failure::Protocol),
                    };
                    let payload = pos + d.payload.start..pos + d.payload.end;
                    pos += d.consumed;
                    match (d.opcode, &mut self.frag) {
                        (OP_TEXT | OP_BINARY, None) if d.fin => {
                            sink(Event::Message { tag: self.tag, payload: &self.inbuf[payload] })
                        }
                        (OP_TEXT | OP_BINARY, None) => self.frag = Some(self.inbuf[payload].to_vec()),
                        (OP_CONT, Some(frag)) => {
                            frag.extend_from_slice(&self.inbuf[payload]);
                            if d.fin {
                                let whole = self.frag.take().unwrap_or_default();
                                sink(Event::Message { tag: self.tag, payload: &whole });
                            }
                        }
                        (OP_PING, _) => proto.encode(&mut self.out, OP_PONG, &self.inbuf[payload], mask),
                        (OP_PONG, _) => {}
                        (OP_CLOSE, _) => {
                            if !self.close_sent {
                                let code = &self.inbuf[payload.start..payload.end.min(payload.start + 2)];
                                proto.encode(&mut self.out, OP_CLOSE, code, mask);
                                self.close_sent = true;
                            }
                            break Err(Failure::PeerClosed);
                        }
                        _ => break Err(Failure::Protocol),
                    }
                }
            }
        };
        self.inbuf.drain(..pos);
        if self.inbuf.is_empty() && self.inbuf.capacity() > 256 * 1024 {
            self.inbuf = Vec::new();
        }
        result
    }
}

//! How the Gateway API reaches gateways: a `Transport` (inside a business worker: its
//! persistent links for sends; outside: blocking sockets) plus `QueryPool`, the blocking side
//! connections queries use in both cases, as GatewayWorker's `Lib\Gateway` does: send the
//! request to every gateway first, then read each reply (`u32_be len ‖ payload`) within one
//! deadline.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::wire::packet::{self, Header, cmd, flag};
use crate::wire::register::gateway_client_connect_body;

/// Errors of the Gateway API.
#[derive(Debug)]
pub enum ApiError {
    /// A client_id string is not 20 hex characters.
    BadClientId(String),
    /// A uid or group name is empty (GatewayWorker drops such calls).
    EmptyName(&'static str),
    /// No gateway is known (register unreachable or empty cluster).
    NoGateway,
    /// The gateway of a client_id is not connected to this worker.
    GatewayNotConnected(SocketAddrV4),
    /// A call that needs a current client was made outside a client event.
    NoCurrentClient,
    /// Reaching a gateway or register failed.
    Io(SocketAddr, io::Error),
    /// A reply could not be decoded.
    BadReply(SocketAddrV4, String),
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::BadClientId(s) => write!(f, "malformed client_id {s:?} (expected 20 hex characters)"),
            ApiError::EmptyName(what) => write!(f, "empty {what}: ignored as GatewayWorker does"),
            ApiError::NoGateway => write!(f, "no gateway known: is the register reachable?"),
            ApiError::GatewayNotConnected(a) => write!(f, "gateway {a} is not connected"),
            ApiError::NoCurrentClient => {
                write!(f, "no current client: this call only works inside a client event")
            }
            ApiError::Io(a, e) => write!(f, "{a}: {e}"),
            ApiError::BadReply(a, e) => write!(f, "bad reply from gateway {a}: {e}"),
        }
    }
}

impl std::error::Error for ApiError {}

/// What the Gateway API needs from its environment.
pub trait Transport {
    /// Inner addresses of every gateway in the cluster.
    fn gateways(&mut self) -> Result<Vec<SocketAddrV4>, ApiError>;
    /// Deliver a fire-and-forget packet to one gateway.
    fn send(&mut self, gateway: SocketAddrV4, packet: Pkt<'_>) -> Result<(), ApiError>;
    /// Send a query to each gateway and collect the payloads that arrived in time.
    fn query(&mut self, gateways: &[SocketAddrV4], packet: Pkt<'_>) -> Vec<(SocketAddrV4, Vec<u8>)>;
}

/// A packet to encode: header fields, ext_data and body (encoded by the transport straight
/// into its output buffer).
#[derive(Clone, Copy, Debug)]
pub struct Pkt<'a> {
    pub header: Header,
    pub ext: &'a [u8],
    pub body: &'a [u8],
}

impl<'a> Pkt<'a> {
    pub fn new(command: u8, connection_id: u32, flags: u8, ext: &'a [u8], body: &'a [u8]) -> Pkt<'a> {
        Pkt { header: Header::command(command, connection_id, flags), ext, body }
    }

    pub fn encode_into(&self, out: &mut Vec<u8>) {
        packet::encode(out, &self.header, self.ext, self.body);
    }

    pub fn to_vec(self) -> Vec<u8> {
        let mut v = Vec::with_capacity(packet::HEADER_LEN + self.ext.len() + self.body.len());
        self.encode_into(&mut v);
        v
    }
}

/// Which gateways are on this host (reached through their Unix socket).
#[derive(Clone, Debug)]
pub struct LocalGateways {
    pub lan_ip: Ipv4Addr,
    pub run_dir: PathBuf,
}

impl LocalGateways {
    /// The Unix socket of `gw` if it runs on this host and its socket exists.
    pub fn socket(&self, gw: SocketAddrV4) -> Option<PathBuf> {
        if *gw.ip() != self.lan_ip && !gw.ip().is_loopback() {
            return None;
        }
        let p = self.run_dir.join(format!("gateway-{}.sock", gw.port()));
        p.exists().then_some(p)
    }
}

enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Conn {
    fn fd(&self) -> RawFd {
        match self {
            Conn::Tcp(s) => s.as_raw_fd(),
            Conn::Unix(s) => s.as_raw_fd(),
        }
    }

    /// The gateway closed or reset this idle cached connection (it was killed or restarted),
    /// or sent something nobody asked for: a write would go nowhere (the first write after a
    /// close succeeds into the dead socket), so it must not be used. One non-blocking peek.
    fn is_stale(&self) -> bool {
        let mut b = [0u8; 1];
        // SAFETY: `fd` is a connected socket this value owns; `b` is a valid 1-byte buffer.
        let n =
            unsafe { libc::recv(self.fd(), b.as_mut_ptr().cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT) };
        if n >= 0 {
            return true;
        }
        let e = io::Error::last_os_error().kind();
        e != io::ErrorKind::WouldBlock && e != io::ErrorKind::Interrupted
    }

    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }
}

/// Largest reply accepted from a gateway.
pub(crate) const MAX_REPLY: usize = 256 << 20;
/// Connect timeout of a side connection (GatewayWorker `$connectTimeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The `CMD_GATEWAY_CLIENT_CONNECT` packet a gateway expects first on a GatewayClient
/// connection when a secret is set (empty without one).
pub fn auth_packet(secret: &str) -> Vec<u8> {
    let mut v = Vec::new();
    if !secret.is_empty() {
        let body = gateway_client_connect_body(secret);
        let header = Header::command(cmd::GATEWAY_CLIENT_CONNECT, 0, flag::BODY_IS_SCALAR);
        packet::encode(&mut v, &header, b"", &body);
    }
    v
}

/// Cached blocking connections to gateways for queries (and a GatewayClient's sends).
pub struct QueryPool {
    conns: HashMap<SocketAddrV4, Conn>,
    auth: Vec<u8>,
    timeout: Duration,
    local: Option<LocalGateways>,
}

impl QueryPool {
    pub fn new(secret: &str, timeout: Duration, local: Option<LocalGateways>) -> QueryPool {
        QueryPool { conns: HashMap::new(), auth: auth_packet(secret), timeout, local }
    }

    fn connect(&self, gw: SocketAddrV4) -> io::Result<Conn> {
        if let Some(path) = self.local.as_ref().and_then(|l| l.socket(gw))
            && let Ok(s) = UnixStream::connect(path)
        {
            return Ok(Conn::Unix(s));
        }
        let s = TcpStream::connect_timeout(&SocketAddr::V4(gw), CONNECT_TIMEOUT)?;
        let _ = s.set_nodelay(true);
        Ok(Conn::Tcp(s))
    }

    /// Write `packet` (prefixed with the auth packet when a secret is set) to `gw`, opening
    /// the connection if needed, replacing a cached one the gateway has closed, and retrying
    /// once when the write itself fails.
    fn write(&mut self, gw: SocketAddrV4, packet: &[u8]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(self.auth.len() + packet.len());
        buf.extend_from_slice(&self.auth);
        buf.extend_from_slice(packet);
        if self.conns.get(&gw).is_some_and(Conn::is_stale) {
            log::debug!("query connection to {gw} was closed by the gateway; reconnecting");
            self.conns.remove(&gw);
        }
        for attempt in 0..2 {
            if !self.conns.contains_key(&gw) {
                let c = self.connect(gw)?;
                self.conns.insert(gw, c);
            }
            let Some(c) = self.conns.get_mut(&gw) else { continue };
            match c.write_all(&buf) {
                Ok(()) => return Ok(()),
                Err(e) if attempt == 0 => {
                    log::debug!("query connection to {gw} was stale ({e}); reconnecting");
                    self.conns.remove(&gw);
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::ErrorKind::NotConnected.into())
    }

    fn read_reply(&mut self, gw: SocketAddrV4, deadline: Instant) -> io::Result<Vec<u8>> {
        let c = self.conns.get_mut(&gw).ok_or(io::ErrorKind::NotConnected)?;
        let mut head = [0u8; 4];
        read_exact_until(c, &mut head, deadline)?;
        let len = u32::from_be_bytes(head) as usize;
        if len > MAX_REPLY {
            return Err(io::Error::other(format!("reply of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        read_exact_until(c, &mut payload, deadline)?;
        Ok(payload)
    }

    /// Fire-and-forget.
    pub fn send(&mut self, gw: SocketAddrV4, packet: Pkt<'_>) -> Result<(), ApiError> {
        self.write(gw, &packet.to_vec()).map_err(|e| {
            self.conns.remove(&gw);
            ApiError::Io(SocketAddr::V4(gw), e)
        })
    }

    /// Request/reply with every gateway of `gws`; gateways that fail or time out are left
    /// out of the result (and logged), as GatewayWorker does.
    pub fn request(&mut self, gws: &[SocketAddrV4], packet: Pkt<'_>) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let packet = packet.to_vec();
        let mut sent = Vec::with_capacity(gws.len());
        for &gw in gws {
            match self.write(gw, &packet) {
                Ok(()) => sent.push(gw),
                Err(e) => {
                    log::warn!("query to gateway {gw} failed: {e}");
                    self.conns.remove(&gw);
                }
            }
        }
        let deadline = Instant::now() + self.timeout;
        let mut out = Vec::with_capacity(sent.len());
        for gw in sent {
            match self.read_reply(gw, deadline) {
                Ok(p) => out.push((gw, p)),
                Err(e) => {
                    log::warn!("no reply from gateway {gw}: {e}");
                    self.conns.remove(&gw);
                }
            }
        }
        out
    }
}

fn read_exact_until(c: &mut Conn, mut buf: &mut [u8], deadline: Instant) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        c.set_read_timeout(left)?;
        match c.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// The next connection to `l` within 5 s, with the packet it carries.
    fn next_packet(l: &TcpListener) -> Option<(TcpStream, Vec<u8>)> {
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let (mut s, _) = loop {
            match l.accept() {
                Ok(c) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return None,
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; packet::HEADER_LEN];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; len - packet::HEADER_LEN];
        s.read_exact(&mut rest).unwrap();
        Some((s, [&head[..], &rest].concat()))
    }

    #[test]
    fn a_send_after_the_gateway_closed_the_cached_connection_goes_on_a_new_one() {
        let gateway = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(gw) = gateway.local_addr().unwrap() else { unreachable!() };
        let mut pool = QueryPool::new("", Duration::from_secs(1), None);
        let first = Pkt::new(cmd::SEND_TO_ALL, 0, flag::BODY_IS_SCALAR, b"", b"one");
        pool.send(gw, first).unwrap();
        let (conn, got) = next_packet(&gateway).expect("first connection");
        assert_eq!(got, first.to_vec());
        // The gateway dies: its end of the cached connection closes.
        drop(conn);
        let second = Pkt::new(cmd::SEND_TO_ALL, 0, flag::BODY_IS_SCALAR, b"", b"two");
        // Wait until the close has reached the pool's socket (loopback: at once).
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pool.conns[&gw].is_stale() {
            assert!(Instant::now() < deadline, "the close never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        pool.send(gw, second).unwrap();
        let (_conn, got) = next_packet(&gateway).expect("the send opened a new connection");
        assert_eq!(got, second.to_vec());
    }

    #[test]
    fn an_idle_open_connection_is_not_stale() {
        let gateway = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = Conn::Tcp(TcpStream::connect(gateway.local_addr().unwrap()).unwrap());
        let (_peer, _) = gateway.accept().unwrap();
        assert!(!c.is_stale());
    }
}

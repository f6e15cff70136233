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

use super::membership::{Names, Tokens, View};
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
    /// The gateways a send or a query about `names` must reach: every gateway that may hold
    /// a client with one of them (`docs/protocol.md` §7). Without membership notifications:
    /// every gateway.
    fn gateways_for(&mut self, names: Names<'_>) -> Result<Vec<SocketAddrV4>, ApiError> {
        let _ = names;
        self.gateways()
    }
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

    /// Everything the socket holds now, without blocking, appended to `buf`. An error when
    /// the gateway closed or reset the connection.
    fn read_available(&self, buf: &mut Vec<u8>) -> io::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        loop {
            // SAFETY: `fd` is a connected socket this value owns; `chunk` is a valid buffer of
            // that length.
            let n =
                unsafe { libc::recv(self.fd(), chunk.as_mut_ptr().cast(), chunk.len(), libc::MSG_DONTWAIT) };
            match n {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n if n > 0 => buf.extend_from_slice(&chunk[..n as usize]),
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(()),
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(e),
                    }
                }
            }
        }
    }

    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }
}

/// A cached connection to one gateway.
struct Cached {
    sock: Conn,
    /// Bytes received and not used yet: membership notifications, the start of a reply.
    inbuf: Vec<u8>,
    /// What the gateway holds, when the pool subscribes (else it stays off: everything).
    view: View,
}

/// What starts `buf`: a whole membership notification (its length), a part of one (or too
/// few bytes to tell), or something else (a reply). A reply's fifth byte starts a
/// PHP-serialized value, an ASCII letter, so it is never the notification's command byte.
enum Head {
    Notification(usize),
    Partial,
    Other,
}

fn head(buf: &[u8]) -> Head {
    if buf.starts_with(&[0; 4]) {
        // An empty reply (a notification is at least a header long).
        return Head::Other;
    }
    match buf.get(4) {
        None => Head::Partial,
        Some(&cmd::MEMBERSHIP) => match packet::peek_len(buf, MAX_REPLY) {
            Ok(Some(n)) if buf.len() >= n => Head::Notification(n),
            Ok(_) => Head::Partial,
            Err(_) => Head::Other,
        },
        Some(_) => Head::Other,
    }
}

impl Cached {
    /// Apply the whole membership notifications at the start of the input.
    fn apply_notifications(&mut self) {
        while let Head::Notification(n) = head(&self.inbuf) {
            if let Ok(Some((p, _))) = packet::decode(&self.inbuf[..n], MAX_REPLY)
                && let Err(e) = self.view.apply(p.header.connection_id, p.body)
            {
                log::warn!("GatewayClient: {e}; sending to this gateway whatever the names");
            }
            self.inbuf.drain(..n);
        }
    }

    /// Read what arrived while the connection sat in the pool, applying notifications. An
    /// error when the gateway closed it (it was killed or restarted) or sent something nobody
    /// asked for: a write would go nowhere (the first write after a close succeeds into the
    /// dead socket), so it must not be used.
    fn drain(&mut self) -> io::Result<()> {
        self.sock.read_available(&mut self.inbuf)?;
        self.apply_notifications();
        match head(&self.inbuf) {
            _ if self.inbuf.is_empty() => Ok(()),
            Head::Partial if self.view.is_subscribed() => Ok(()),
            _ => Err(io::Error::other("unexpected bytes from the gateway")),
        }
    }

    /// The next reply, once it is whole in the input (notifications before it applied).
    fn take_reply(&mut self) -> io::Result<Option<Vec<u8>>> {
        self.apply_notifications();
        // A reply has at least one byte after its length: fewer than 5 bytes, or the start
        // of a notification, and the reply is still to come.
        if !matches!(head(&self.inbuf), Head::Other) {
            return Ok(None);
        }
        let len = u32::from_be_bytes(self.inbuf[..4].try_into().expect("5 bytes or more")) as usize;
        if len > MAX_REPLY {
            return Err(io::Error::other(format!("reply of {len} bytes")));
        }
        if self.inbuf.len() < 4 + len {
            return Ok(None);
        }
        let payload = self.inbuf[4..4 + len].to_vec();
        self.inbuf.drain(..4 + len);
        Ok(Some(payload))
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

/// Cached blocking connections to gateways for queries (and a GatewayClient's sends). A
/// pool that subscribes (a GatewayClient's) asks each gateway for its membership
/// notifications on the connection, and keeps each gateway's view.
pub struct QueryPool {
    conns: HashMap<SocketAddrV4, Cached>,
    auth: Vec<u8>,
    timeout: Duration,
    local: Option<LocalGateways>,
    subscribe: bool,
    tokens: Tokens,
}

impl QueryPool {
    pub fn new(secret: &str, timeout: Duration, local: Option<LocalGateways>) -> QueryPool {
        QueryPool {
            conns: HashMap::new(),
            auth: auth_packet(secret),
            timeout,
            local,
            subscribe: false,
            tokens: Tokens::default(),
        }
    }

    /// Subscribe to membership notifications on every connection (`docs/protocol.md` §7).
    pub fn subscribing(mut self) -> QueryPool {
        self.subscribe = true;
        self
    }

    fn connect(&self, gw: SocketAddrV4) -> io::Result<Cached> {
        let sock = match self.local.as_ref().and_then(|l| l.socket(gw)).map(UnixStream::connect) {
            Some(Ok(s)) => Conn::Unix(s),
            _ => {
                let s = TcpStream::connect_timeout(&SocketAddr::V4(gw), CONNECT_TIMEOUT)?;
                let _ = s.set_nodelay(true);
                Conn::Tcp(s)
            }
        };
        Ok(Cached { sock, inbuf: Vec::new(), view: View::default() })
    }

    /// Apply the notifications every cached connection received; drop the connections the
    /// gateways closed.
    pub fn drain_all(&mut self) {
        self.conns.retain(|gw, c| match c.drain() {
            Ok(()) => true,
            Err(e) => {
                log::debug!("connection to gateway {gw} dropped: {e}");
                false
            }
        });
    }

    /// Whether gateway `gw` may hold a client with one of `names` (yes when no connection
    /// to it is cached or its snapshot has not arrived).
    pub fn may_hold(&self, gw: SocketAddrV4, names: Names<'_>) -> bool {
        self.conns.get(&gw).is_none_or(|c| c.view.may_hold(names))
    }

    /// Write `bytes`, the encoding of `p` (prefixed with the auth packet when a secret is
    /// set, and with a subscribe when one is due) to `gw`, opening the connection if needed,
    /// replacing a cached one the gateway has closed, and retrying once when the write
    /// itself fails.
    fn write(&mut self, gw: SocketAddrV4, p: Pkt<'_>, bytes: &[u8]) -> io::Result<()> {
        if let Some(Err(e)) = self.conns.get_mut(&gw).map(Cached::drain) {
            log::debug!("query connection to {gw} was closed by the gateway ({e}); reconnecting");
            self.conns.remove(&gw);
        }
        for attempt in 0..2 {
            if !self.conns.contains_key(&gw) {
                let c = self.connect(gw)?;
                self.conns.insert(gw, c);
            }
            let Some(c) = self.conns.get_mut(&gw) else { continue };
            let mut buf = Vec::with_capacity(self.auth.len() + 64 + bytes.len());
            buf.extend_from_slice(&self.auth);
            if self.subscribe && c.view.wants_subscribe() {
                let token = self.tokens.next();
                c.view.subscribe(token);
                Pkt::new(cmd::MEMBERSHIP_SUBSCRIBE, 0, flag::BODY_IS_SCALAR, &token.to_be_bytes(), b"")
                    .encode_into(&mut buf);
            }
            buf.extend_from_slice(bytes);
            match c.sock.write_all(&buf) {
                Ok(()) => {
                    c.view.sending(p.header.cmd, p.ext);
                    return Ok(());
                }
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
        loop {
            if let Some(reply) = c.take_reply()? {
                return Ok(reply);
            }
            read_until(c, deadline)?;
        }
    }

    /// Fire-and-forget.
    pub fn send(&mut self, gw: SocketAddrV4, packet: Pkt<'_>) -> Result<(), ApiError> {
        self.write(gw, packet, &packet.to_vec()).map_err(|e| {
            self.conns.remove(&gw);
            ApiError::Io(SocketAddr::V4(gw), e)
        })
    }

    /// Request/reply with every gateway of `gws`; gateways that fail or time out are left
    /// out of the result (and logged), as GatewayWorker does.
    pub fn request(&mut self, gws: &[SocketAddrV4], packet: Pkt<'_>) -> Vec<(SocketAddrV4, Vec<u8>)> {
        let bytes = packet.to_vec();
        let mut sent = Vec::with_capacity(gws.len());
        for &gw in gws {
            match self.write(gw, packet, &bytes) {
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

/// One read into `c`'s input, waiting at most until `deadline`.
fn read_until(c: &mut Cached, deadline: Instant) -> io::Result<()> {
    let mut chunk = [0u8; 16 << 10];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        c.sock.set_read_timeout(left)?;
        match c.sock.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                c.inbuf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(io::ErrorKind::TimedOut.into()),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;
    use crate::api::membership::Names;

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
        while pool.conns.get_mut(&gw).unwrap().drain().is_ok() {
            assert!(Instant::now() < deadline, "the close never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        pool.send(gw, second).unwrap();
        let (_conn, got) = next_packet(&gateway).expect("the send opened a new connection");
        assert_eq!(got, second.to_vec());
    }

    /// The next packet on `s`: (cmd, ext).
    fn read_packet(s: &mut TcpStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; packet::HEADER_LEN];
        s.read_exact(&mut head).unwrap();
        let len = u32::from_be_bytes(head[..4].try_into().unwrap()) as usize;
        let mut rest = vec![0u8; len - packet::HEADER_LEN];
        s.read_exact(&mut rest).unwrap();
        let bytes = [&head[..], &rest].concat();
        let (p, _) = packet::decode(&bytes, usize::MAX).unwrap().unwrap();
        (p.header.cmd, p.ext.to_vec())
    }

    /// A `MEMBERSHIP` packet.
    fn note(count: u32, ops: &[crate::wire::membership::Op<'_>]) -> Vec<u8> {
        let mut body = Vec::new();
        ops.iter().for_each(|op| op.encode(&mut body));
        Pkt::new(cmd::MEMBERSHIP, count, flag::BODY_IS_SCALAR, b"", &body).to_vec()
    }

    #[test]
    fn a_subscribing_pool_applies_notifications_ahead_of_replies_and_when_drained() {
        use crate::wire::membership::{Kind, Op};
        let gateway = TcpListener::bind("127.0.0.1:0").unwrap();
        let SocketAddr::V4(gw) = gateway.local_addr().unwrap() else { unreachable!() };
        let mut pool = QueryPool::new("", Duration::from_secs(5), None).subscribing();
        let (g1, g2, g3) = (Names::Groups(&["g1"]), Names::Groups(&["g2"]), Names::Groups(&["g3"]));
        assert!(pool.may_hold(gw, g3), "no connection: anything");
        pool.send(gw, Pkt::new(cmd::JOIN_GROUP, 5, flag::BODY_IS_SCALAR, b"g1", b"")).unwrap();
        let (mut conn, _) = gateway.accept().unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (first, token) = read_packet(&mut conn);
        assert_eq!(first, cmd::MEMBERSHIP_SUBSCRIBE, "the subscribe goes first");
        assert_eq!(read_packet(&mut conn).0, cmd::JOIN_GROUP);
        assert!(pool.may_hold(gw, g3), "no snapshot yet: anything");
        // The gateway answers the query after the snapshot (taken before the join ran) and
        // the join's effect.
        let answer = std::thread::spawn(move || {
            assert_eq!(read_packet(&mut conn).0, cmd::IS_ONLINE);
            let mut bytes = note(0, &[Op::Snapshot(&token), Op::Held(Kind::Group, b"g2"), Op::End]);
            bytes.extend(note(1, &[Op::Held(Kind::Group, b"g1")]));
            packet::encode_reply(&mut bytes, b"i:1;");
            conn.write_all(&bytes).unwrap();
            conn
        });
        let reply = pool.request(&[gw], Pkt::new(cmd::IS_ONLINE, 5, flag::BODY_IS_SCALAR, b"", b""));
        let mut conn = answer.join().unwrap();
        assert_eq!(reply, [(gw, b"i:1;".to_vec())]);
        assert!(pool.may_hold(gw, g1) && pool.may_hold(gw, g2) && !pool.may_hold(gw, g3));
        // A change while the connection sits in the pool: seen by the next drain.
        conn.write_all(&note(1, &[Op::Gone(Kind::Group, b"g1")])).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.may_hold(gw, g1) {
            assert!(Instant::now() < deadline, "the notification never arrived");
            std::thread::yield_now();
            pool.drain_all();
        }
        assert!(pool.may_hold(gw, g2));
        // The gateway closes it: dropped, and the gateway may hold anything again.
        drop(conn);
        while pool.conns.contains_key(&gw) {
            assert!(Instant::now() < deadline, "the close never arrived");
            std::thread::yield_now();
            pool.drain_all();
        }
        assert!(pool.may_hold(gw, g3));
    }

    #[test]
    fn an_idle_open_connection_is_not_stale() {
        let gateway = TcpListener::bind("127.0.0.1:0").unwrap();
        let sock = Conn::Tcp(TcpStream::connect(gateway.local_addr().unwrap()).unwrap());
        let (_peer, _) = gateway.accept().unwrap();
        let mut c = Cached { sock, inbuf: Vec::new(), view: View::default() };
        assert!(c.drain().is_ok());
    }
}

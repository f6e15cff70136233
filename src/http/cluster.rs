//! The HTTP process as a GatewayClient, non-blocking: a link to a register (tried in order,
//! redialled after a loss) that keeps the gateway list current, and one link per gateway
//! (its Unix socket when on this host, else its inner TCP port) carrying the API's packets.
//! A gateway answers queries in order, so each link keeps a FIFO of who waits for which reply.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::net::{SocketAddr, SocketAddrV4};

use mio::net::{TcpStream, UnixStream};
use mio::{Registry, Token};
use slab::Slab;

use crate::api::transport::{LocalGateways, MAX_REPLY, auth_packet};
use crate::net::io::Io;
use crate::reactor::{InBuf, OutBuf, Ready, interrupted, would_block};
use crate::stats::conns::ConnInfo;
use crate::wire::register::{parse_broadcast, worker_connect};

/// Token of the register link.
pub const REGISTER: Token = Token(1 << 40);
/// Gateway link `k` has token `LINKS + k`.
pub const LINKS: usize = (1 << 40) + 1;

/// Who waits: a job (key and serial) for a query's reply, or for a packet it sent to be
/// written (`send`: the packet's index among the job's sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub job: usize,
    pub serial: u64,
    pub send: Option<usize>,
}

/// A reply (or the loss of one) for a waiter.
#[derive(Debug)]
pub struct Reply {
    pub waiter: Waiter,
    pub gateway: SocketAddrV4,
    /// The reply to a query (empty for a written packet); `None`: the link failed first.
    pub payload: Option<Vec<u8>>,
}

struct Link {
    addr: SocketAddrV4,
    io: Io,
    out: OutBuf,
    inb: InBuf,
    ready: Ready,
    /// A TCP connect in progress: nothing is written before it completes.
    connecting: bool,
    waiters: VecDeque<Waiter>,
    /// Packets whose writer waits for them to be written: (end offset in `queued`, who).
    acks: VecDeque<(u64, Waiter)>,
    /// Bytes ever queued on this link.
    queued: u64,
    bytes_read: u64,
    bytes_written: u64,
}

struct RegisterLink {
    io: TcpStream,
    out: OutBuf,
    inb: InBuf,
    connecting: bool,
}

/// Register and gateway links of the HTTP process.
pub struct Cluster {
    registers: Vec<SocketAddrV4>,
    next_register: usize,
    secret: String,
    auth: Vec<u8>,
    local: LocalGateways,
    register: Option<RegisterLink>,
    /// The gateway list of the last broadcast (`None` before the first one).
    pub gateways: Option<Vec<SocketAddrV4>>,
    /// The gateway list changed since the server last looked.
    pub changed: bool,
    links: Slab<Link>,
    by_addr: HashMap<SocketAddrV4, usize>,
}

impl Cluster {
    pub fn new(registers: Vec<SocketAddrV4>, secret: &str, local: LocalGateways) -> Cluster {
        Cluster {
            registers,
            next_register: 0,
            secret: secret.to_string(),
            auth: auth_packet(secret),
            local,
            register: None,
            gateways: None,
            changed: false,
            links: Slab::new(),
            by_addr: HashMap::new(),
        }
    }

    /// Number of open links (register and gateways).
    pub fn connections(&self) -> usize {
        self.links.len() + usize::from(self.register.is_some())
    }

    pub fn has_register(&self) -> bool {
        self.register.is_some()
    }

    /// The links, for the `connections` command.
    pub fn conn_infos(&self) -> Vec<ConnInfo> {
        let mut out: Vec<ConnInfo> = self
            .links
            .iter()
            .map(|(k, l)| {
                let (local, remote) = crate::net::io::addrs(&l.io);
                ConnInfo {
                    id: (LINKS + k) as u64,
                    protocol: "GatewayProtocol",
                    transport: if matches!(l.io, Io::Unix(_)) { "unix" } else { "tcp" },
                    recv_q: l.inb.len(),
                    send_q: l.out.len(),
                    bytes_read: l.bytes_read,
                    bytes_written: l.bytes_written,
                    state: if l.connecting { "CONNECTING" } else { "ESTABLISHED" },
                    local,
                    remote,
                }
            })
            .collect();
        if let Some(r) = &self.register {
            let addr = |a: io::Result<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
            out.push(ConnInfo {
                id: REGISTER.0 as u64,
                protocol: "Text",
                transport: "tcp",
                recv_q: r.inb.len(),
                send_q: r.out.len(),
                state: if r.connecting { "CONNECTING" } else { "ESTABLISHED" },
                local: addr(r.io.local_addr()),
                remote: addr(r.io.peer_addr()),
                ..ConnInfo::default()
            });
        }
        out
    }

    /// Dial the next register (no-op when one is linked).
    pub fn connect_register(&mut self, reg: &Registry) {
        if self.register.is_some() || self.registers.is_empty() {
            return;
        }
        let addr = self.registers[self.next_register % self.registers.len()];
        self.next_register += 1;
        let dialled = TcpStream::connect(SocketAddr::V4(addr)).and_then(|mut io| {
            reg.register(&mut io, REGISTER, mio::Interest::READABLE | mio::Interest::WRITABLE)?;
            Ok(io)
        });
        match dialled {
            Ok(io) => {
                crate::net::inner_link_options(&io);
                let mut out = OutBuf::default();
                out.extend(&worker_connect(&self.secret));
                self.register = Some(RegisterLink { io, out, inb: InBuf::default(), connecting: true });
            }
            Err(e) => log::warn!("http: cannot reach register {addr}: {e}"),
        }
    }

    /// Keep-alive line to the register.
    pub fn ping_register(&mut self) {
        if let Some(r) = self.register.as_mut() {
            r.out.extend(crate::wire::register::PING);
        }
    }

    /// Register link readiness. Returns false when the link is gone (redial later).
    pub fn on_register_ready(&mut self, reg: &Registry, ready: Ready) -> bool {
        let Some(r) = self.register.as_mut() else { return false };
        if r.connecting && ready.contains(Ready::WRITABLE) {
            r.connecting = false;
        }
        let ok = register_io(r, ready);
        let mut lists = Vec::new();
        while let Some(pos) = r.inb.data().iter().position(|&b| b == b'\n') {
            let line = r.inb.data()[..pos].to_vec();
            r.inb.consume(pos + 1);
            lists.extend(parse_broadcast(line.trim_ascii_end()));
        }
        for list in lists {
            let addrs: Vec<SocketAddrV4> = list.iter().filter_map(|a| a.parse().ok()).collect();
            if self.gateways.as_ref() != Some(&addrs) {
                log::info!("http: gateways {addrs:?}");
                self.gateways = Some(addrs);
                self.changed = true;
            }
        }
        if !ok {
            if let Some(mut r) = self.register.take() {
                let _ = reg.deregister(&mut r.io);
            }
            log::warn!("http: register link lost; redialling");
        }
        ok
    }

    /// Queue `packet` for `gw` (opening the link if needed). `waiter` expects the reply of a
    /// query, or (with `send` set) to hear when the packet is written.
    pub fn send(
        &mut self,
        reg: &Registry,
        gw: SocketAddrV4,
        packet: &[u8],
        waiter: Option<Waiter>,
    ) -> io::Result<()> {
        let key = match self.by_addr.get(&gw) {
            Some(&k) => k,
            None => self.open(reg, gw)?,
        };
        let link = &mut self.links[key];
        link.out.extend(packet);
        link.queued += packet.len() as u64;
        match waiter {
            Some(w) if w.send.is_some() => link.acks.push_back((link.queued, w)),
            Some(w) => link.waiters.push_back(w),
            None => {}
        }
        Ok(())
    }

    fn open(&mut self, reg: &Registry, gw: SocketAddrV4) -> io::Result<usize> {
        let unix = self.local.socket(gw).and_then(|p| UnixStream::connect(p).ok());
        let (io, connecting) = match unix {
            Some(s) => (Io::Unix(s), false),
            None => {
                let s = TcpStream::connect(SocketAddr::V4(gw))?;
                crate::net::inner_link_options(&s);
                (Io::Tcp(s), true)
            }
        };
        let entry = self.links.vacant_entry();
        let key = entry.key();
        let mut link = Link {
            addr: gw,
            io,
            out: OutBuf::default(),
            inb: InBuf::default(),
            ready: Ready::EMPTY,
            connecting,
            waiters: VecDeque::new(),
            acks: VecDeque::new(),
            queued: self.auth.len() as u64,
            bytes_read: 0,
            bytes_written: 0,
        };
        link.io.register(reg, Token(LINKS + key))?;
        link.out.extend(&self.auth);
        entry.insert(link);
        self.by_addr.insert(gw, key);
        Ok(key)
    }

    /// Gateway link readiness: replies go to `replies`.
    pub fn on_link_ready(&mut self, reg: &Registry, token: Token, ready: Ready, replies: &mut Vec<Reply>) {
        let key = token.0 - LINKS;
        let Some(link) = self.links.get_mut(key) else { return };
        link.ready.insert(ready);
        if link.connecting && ready.contains(Ready::WRITABLE) {
            if let Io::Tcp(s) = &link.io
                && (s.take_error().ok().flatten().is_some() || s.peer_addr().is_err())
            {
                return self.fail(reg, key, replies, "connect failed");
            }
            link.connecting = false;
        }
        if ready.contains(Ready::READABLE) && !read_replies(link, replies) {
            self.fail(reg, key, replies, "closed");
        }
    }

    /// Write what every link has queued (end of turn).
    pub fn flush(&mut self, reg: &Registry, replies: &mut Vec<Reply>) {
        let mut failed = Vec::new();
        for (key, link) in self.links.iter_mut() {
            if link.connecting || link.out.is_empty() {
                continue;
            }
            let before = link.out.len();
            match link.out.write_to(&mut link.io) {
                Ok(()) => {}
                Err(e) if would_block(&e) => link.ready.remove(Ready::WRITABLE),
                Err(_) => failed.push(key),
            }
            link.bytes_written += (before - link.out.len()) as u64;
            while link.acks.front().is_some_and(|(end, _)| *end <= link.bytes_written) {
                if let Some((_, waiter)) = link.acks.pop_front() {
                    replies.push(Reply { waiter, gateway: link.addr, payload: Some(Vec::new()) });
                }
            }
        }
        for key in failed {
            self.fail(reg, key, replies, "write failed");
        }
        if let Some(r) = self.register.as_mut().filter(|r| !r.connecting && !r.out.is_empty()) {
            let _ = r.out.write_to(&mut r.io);
        }
    }

    /// Close link `key`; everyone waiting on it loses that gateway's reply.
    fn fail(&mut self, reg: &Registry, key: usize, replies: &mut Vec<Reply>, why: &str) {
        let mut link = self.links.remove(key);
        self.by_addr.remove(&link.addr);
        link.io.deregister(reg);
        if !link.waiters.is_empty() {
            log::warn!("http: link to gateway {} {why}; {} replies lost", link.addr, link.waiters.len());
        }
        let acks = link.acks.drain(..).map(|(_, w)| w);
        for waiter in link.waiters.drain(..).chain(acks) {
            replies.push(Reply { waiter, gateway: link.addr, payload: None });
        }
    }
}

/// Read and write the register link; false when it is closed or failed.
fn register_io(r: &mut RegisterLink, ready: Ready) -> bool {
    if !r.connecting && !r.out.is_empty() {
        match r.out.write_to(&mut r.io) {
            Ok(()) => {}
            Err(e) if would_block(&e) => {}
            Err(_) => return false,
        }
    }
    if !ready.contains(Ready::READABLE) {
        return true;
    }
    read_all(&mut r.io, &mut r.inb, 1 << 20) && r.inb.len() <= 1 << 20
}

/// Read until `WouldBlock` or more than `cap` bytes are buffered; false at EOF or on an error.
pub(super) fn read_all<R: Read>(io: &mut R, inb: &mut InBuf, cap: usize) -> bool {
    while inb.len() <= cap {
        match inb.read_from(io, 64 * 1024) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if would_block(&e) => return true,
            Err(e) if interrupted(&e) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Read, then decode the replies; false when the link must close.
fn read_replies(link: &mut Link, replies: &mut Vec<Reply>) -> bool {
    let before = link.inb.len();
    let open = read_all(&mut link.io, &mut link.inb, MAX_REPLY);
    link.bytes_read += (link.inb.len() - before) as u64;
    decode_replies(&mut link.inb, &mut link.waiters, link.addr, replies) && open
}

/// Decode `u32_be len ‖ payload` replies, each for the oldest waiter; false on a reply
/// nobody waits for or one over `MAX_REPLY`.
fn decode_replies(
    inb: &mut InBuf,
    waiters: &mut VecDeque<Waiter>,
    gateway: SocketAddrV4,
    replies: &mut Vec<Reply>,
) -> bool {
    loop {
        let data = inb.data();
        if data.len() < 4 {
            return true;
        }
        let len = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        if len > MAX_REPLY {
            return false;
        }
        if data.len() < 4 + len {
            return true;
        }
        let payload = data[4..4 + len].to_vec();
        inb.consume(4 + len);
        match waiters.pop_front() {
            Some(waiter) => replies.push(Reply { waiter, gateway, payload: Some(payload) }),
            None => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::buffer::tests::Trickle;

    #[test]
    fn replies_trickle_in_and_go_to_waiters_in_order() {
        let mut data = Vec::new();
        for p in [&b"i:1;"[..], b"a:0:{}", b""] {
            data.extend_from_slice(&(p.len() as u32).to_be_bytes());
            data.extend_from_slice(p);
        }
        let gw: SocketAddrV4 = "127.0.0.1:2300".parse().unwrap();
        let mut src = Trickle { data, pos: 0, chunk: 3 };
        let mut inb = InBuf::default();
        let w = |job: usize| Waiter { job, serial: job as u64 * 10, send: None };
        let mut waiters: VecDeque<Waiter> = [w(1), w(2), w(3)].into_iter().collect();
        let mut replies = Vec::new();
        // One chunk per turn: a WouldBlock after every 3 bytes.
        while src.pos < src.data.len() {
            let _ = inb.read_from(&mut src, 3);
            assert!(decode_replies(&mut inb, &mut waiters, gw, &mut replies));
        }
        let got: Vec<(Waiter, Vec<u8>)> =
            replies.into_iter().map(|r| (r.waiter, r.payload.unwrap())).collect();
        assert_eq!(got, vec![(w(1), b"i:1;".to_vec()), (w(2), b"a:0:{}".to_vec()), (w(3), Vec::new())]);
        assert!(inb.is_empty() && waiters.is_empty());
        // A reply nobody asked for, or an absurd length, closes the link.
        inb.extend(&[0, 0, 0, 1, b'x']);
        assert!(!decode_replies(&mut inb, &mut waiters, gw, &mut Vec::new()));
        let mut inb = InBuf::default();
        inb.extend(&u32::MAX.to_be_bytes());
        assert!(!decode_replies(&mut inb, &mut [w(9)].into_iter().collect(), gw, &mut Vec::new()));
    }
}

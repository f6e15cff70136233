//! A gateway process: holds client connections (websocket, wss, text, frame), forwards every
//! client event to one business worker (sticky, least connections) and executes the
//! commands and queries workers and GatewayClients send on its inner port / Unix socket.
//! It runs no business code (GATEWAYWORKER.md §1.3).

mod client;
mod clients;
mod commands;
mod index;
mod inner;
mod queries;
mod router;

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Token};
use slab::Slab;
use tungstenite::protocol::WebSocketConfig;

use crate::cli::logger::{OncePerPeer, Throttle};
use crate::config::{Config, GatewayConf, GatewayLimits, Proto, SendFullPolicy};
use crate::net::io::Io;
use crate::net::tls::TlsIo;
use crate::net::websocket;
use crate::reactor::{Ctx, Reactor, Ready, Service, would_block};
use crate::stats::conns::{self, ConnInfo};
use crate::stats::{Slot, State, Stats};
use crate::wire::link::{Link, Target};
use crate::wire::packet::{self, Header, cmd, flag};
use crate::wire::{php, register as lines};

use client::{Client, Closed, Inbound};
use clients::Clients;
use index::Index;
use inner::Inner;
use router::Router;

const PUBLIC: Token = Token(0);
const INNER_TCP: Token = Token(1);
const INNER_UNIX: Token = Token(2);
const REGISTER_BASE: usize = 16;
const INNER_BASE: usize = 1 << 20;
const CLIENT_BASE: usize = 1 << 32;

/// Messages read from one client per readiness before others get their turn.
const READ_BUDGET: usize = 64;
/// Bytes buffered from one inner link before its packets are executed.
const INNER_READ_CAP: usize = 4 << 20;
/// Hostile-input log lines: at most one per kind and period.
const LOG_PERIOD: Duration = Duration::from_secs(10);
/// Register keep-alive period (GatewayWorker: 25 s, only off loopback).
const KEEPALIVE: Duration = Duration::from_secs(25);

/// Timers of a gateway.
pub enum Timer {
    /// Once a second: statistics, handshake and idle timeouts.
    Tick,
    Heartbeat,
    RegisterRetry(usize),
    KeepAlive,
    ResumeAccept,
}

/// Stop request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    No,
    /// Stop accepting, exit when the last client is gone.
    Graceful,
    Now,
}

/// This process's place in the cluster.
pub struct Identity {
    pub name: String,
    pub proto: Proto,
    pub lan_ip: u32,
    pub lan_port: u16,
    pub public_port: u16,
}

/// The listeners a gateway process inherits from the master.
pub struct Listeners {
    pub public: TcpListener,
    pub inner_tcp: TcpListener,
    pub inner_unix: UnixListener,
}

pub struct Gateway {
    me: Identity,
    limits: GatewayLimits,
    ping_interval: Duration,
    ping_limit: u32,
    ping_data: Vec<u8>,
    secret: String,
    started: Instant,
    /// Whole seconds since start (coarse clock for timeouts).
    clock: u32,
    listeners: Listeners,
    /// The public listener has connections we did not accept yet.
    accept_ready: bool,
    /// At `max_connections`: resume below 90 %.
    accept_paused: bool,
    /// accept() failed (EMFILE...): wait for the retry timer.
    accept_backoff: bool,
    tls: Option<Arc<rustls::ServerConfig>>,
    ws_cfg: WebSocketConfig,
    clients: Clients,
    inners: Slab<Inner>,
    inner_serial: u64,
    router: Router,
    uids: Index,
    groups: Index,
    registers: Vec<Link>,
    register_lines: Vec<u8>,
    /// Events encoded while no business worker was linked.
    parked: Vec<u8>,
    scratch: Vec<u8>,
    /// Read buffer shared by all clients.
    rx: client::Rx,
    encoded: Vec<u8>,
    dirty_clients: Vec<usize>,
    dirty_inners: Vec<usize>,
    dead_clients: Vec<usize>,
    dead_inners: Vec<usize>,
    /// Clients whose read budget ran out this turn.
    again: Vec<usize>,
    /// (deadline second, connection id) of clients still in a handshake.
    handshakes: VecDeque<(u32, u32)>,
    stats: Stats,
    stop: Stop,
    last_no_worker_log: Option<Instant>,
    run_dir: std::path::PathBuf,
    /// One log line per kind of hostile event and period.
    log_gate: Throttle,
    /// Peers already logged for a refused secret key.
    refused: OncePerPeer,
}

/// Entry point of a gateway process.
pub fn run(cfg: &Config, group: usize, id: u16, listeners: Listeners, stats: Stats) -> io::Result<()> {
    let g = &cfg.gateways[group];
    let tls = match &g.tls {
        Some(files) => {
            Some(crate::net::tls::server_config(&files.cert, &files.key).map_err(io::Error::other)?)
        }
        None => None,
    };
    let mut reactor = Reactor::new()?;
    reactor.watch_signals(&crate::master::CHILD_SIGNALS)?;
    let mut gw = Gateway::new(cfg, g, id, listeners, tls, stats);
    {
        let mut cx = reactor.ctx();
        gw.start(&mut cx)?;
    }
    info!(
        "gateway {}[{id}] serving {}://{} inner {}:{}",
        gw.me.name,
        g.proto.scheme(gw.tls.is_some()),
        g.listen,
        Ipv4Addr::from(gw.me.lan_ip),
        gw.me.lan_port
    );
    reactor.run(&mut gw)
}

impl Gateway {
    fn new(
        cfg: &Config,
        g: &GatewayConf,
        id: u16,
        listeners: Listeners,
        tls: Option<Arc<rustls::ServerConfig>>,
        stats: Stats,
    ) -> Gateway {
        let lan_port = g.start_port + id;
        let address = format!("{}:{lan_port}", cfg.lan_ip);
        let registers = cfg
            .register_address
            .iter()
            .enumerate()
            .map(|(i, a)| Link::new(Target::Tcp(SocketAddr::V4(*a)), Token(REGISTER_BASE + i)))
            .collect();
        Gateway {
            me: Identity {
                name: g.name.clone(),
                proto: g.proto,
                lan_ip: u32::from(cfg.lan_ip),
                lan_port,
                public_port: g.listen.port(),
            },
            limits: g.limits.clone(),
            ping_interval: g.ping_interval,
            ping_limit: g.ping_not_response_limit,
            ping_data: g.ping_data.clone(),
            secret: cfg.secret_key.clone(),
            started: Instant::now(),
            clock: 0,
            listeners,
            accept_ready: true,
            accept_paused: false,
            accept_backoff: false,
            tls,
            ws_cfg: websocket::config(g.limits.max_package_size),
            clients: Clients::with_capacity(g.limits.max_connections),
            inners: Slab::new(),
            inner_serial: 0,
            router: Router::default(),
            uids: Index::default(),
            groups: Index::default(),
            registers,
            register_lines: lines::gateway_connect(&address, &cfg.secret_key),
            parked: Vec::new(),
            scratch: Vec::new(),
            rx: client::Rx::default(),
            encoded: Vec::new(),
            dirty_clients: Vec::new(),
            dirty_inners: Vec::new(),
            dead_clients: Vec::new(),
            dead_inners: Vec::new(),
            again: Vec::new(),
            handshakes: VecDeque::new(),
            stats,
            stop: Stop::No,
            last_no_worker_log: None,
            run_dir: cfg.run_dir.clone(),
            log_gate: Throttle::new(LOG_PERIOD),
            refused: OncePerPeer::new(),
        }
    }

    fn start(&mut self, cx: &mut Ctx<'_, Timer>) -> io::Result<()> {
        cx.registry.register(&mut self.listeners.public, PUBLIC, Interest::READABLE)?;
        cx.registry.register(&mut self.listeners.inner_tcp, INNER_TCP, Interest::READABLE)?;
        cx.registry.register(&mut self.listeners.inner_unix, INNER_UNIX, Interest::READABLE)?;
        for i in 0..self.registers.len() {
            self.dial_register(cx, i);
        }
        cx.after(Duration::from_secs(1), Timer::Tick);
        if let Some(period) = self.heartbeat_period() {
            cx.after(period, Timer::Heartbeat);
        }
        if self.me.lan_ip != u32::from(Ipv4Addr::LOCALHOST) {
            cx.after(KEEPALIVE, Timer::KeepAlive);
        }
        self.stats.slot().set_state(State::Ready);
        Ok(())
    }

    // ----- registers -------------------------------------------------------------------

    fn dial_register(&mut self, cx: &mut Ctx<'_, Timer>, i: usize) {
        let link = &mut self.registers[i];
        link.out.clear();
        link.out.extend(&self.register_lines);
        if let Err(e) = link.dial(cx.registry) {
            warn!("gateway: cannot reach register {}: {e}; retrying in 1 s", link.target);
            link.close(cx.registry);
            cx.after(Duration::from_secs(1), Timer::RegisterRetry(i));
        }
    }

    fn on_register_ready(&mut self, cx: &mut Ctx<'_, Timer>, i: usize, ready: Ready) {
        let link = &mut self.registers[i];
        let res = link.on_ready(ready).and_then(|_| {
            // The register never writes to gateways; read only to notice a close.
            match link.read(64 * 1024)? {
                crate::wire::link::ReadEnd::Eof => Err(io::ErrorKind::UnexpectedEof.into()),
                _ => {
                    let n = link.inbuf.len();
                    link.inbuf.consume(n);
                    link.flush()
                }
            }
        });
        if let Err(e) = res {
            warn!("gateway: register link {} closed ({e}); reconnecting in 1 s", link.target);
            link.close(cx.registry);
            cx.after(Duration::from_secs(1), Timer::RegisterRetry(i));
        }
    }

    // ----- accepting ---------------------------------------------------------------------

    fn accept_clients(&mut self, cx: &mut Ctx<'_, Timer>) {
        while self.accept_ready && !self.accept_backoff && self.stop == Stop::No {
            if self.clients.len() >= self.limits.max_connections {
                if !self.accept_paused {
                    warn!(
                        "gateway: {} connections reached (gateway.limits.max_connections), pausing accept",
                        self.clients.len()
                    );
                    Slot::bump(&self.stats.slot().limit_conn);
                }
                self.accept_paused = true;
                return;
            }
            match self.listeners.public.accept() {
                Ok((stream, peer)) => self.add_client(cx, stream, peer),
                Err(e) if would_block(&e) => self.accept_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE/ENFILE/ENOMEM: the connection stays queued. Retry a little later
                    // instead of spinning on a listener that stays readable.
                    if let Some(more) = self.log_gate.check("accept") {
                        warn!("gateway: accept failed: {e}; accepting again in 100 ms{more}");
                    }
                    Slot::bump(&self.stats.slot().limit_conn);
                    self.accept_backoff = true;
                    cx.after(Duration::from_millis(100), Timer::ResumeAccept);
                    return;
                }
            }
        }
    }

    fn add_client(&mut self, cx: &mut Ctx<'_, Timer>, stream: mio::net::TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let io = match &self.tls {
            Some(cfg) => match TlsIo::new(stream, cfg) {
                Ok(t) => Io::Tls(Box::new(t)),
                Err(e) => {
                    warn!("gateway: TLS session for {peer} failed: {e}");
                    return;
                }
            },
            None => Io::Tcp(stream),
        };
        let (ip, port) = match peer {
            SocketAddr::V4(a) => (u32::from(*a.ip()), a.port()),
            SocketAddr::V6(a) => (a.ip().to_ipv4_mapped().map_or(0, u32::from), a.port()),
        };
        let id = self.clients.alloc_id();
        let key = self.clients.vacant_key();
        let mut c = Client::new(id, io, self.me.proto, ip, port, self.clock);
        if let Err(e) = c.io.register(cx.registry, Token(CLIENT_BASE + key)) {
            warn!("gateway: cannot watch client {peer}: {e}");
            return;
        }
        let handshaking = c.handshaking();
        self.clients.insert(c);
        if handshaking {
            let secs = self.limits.handshake_timeout.as_secs_f64().ceil() as u32;
            self.handshakes.push_back((self.clock + secs.max(1), id));
        }
        self.forward(key, cmd::ON_CONNECT, flag::BODY_IS_SCALAR, &[]);
    }

    fn accept_inner(&mut self, cx: &mut Ctx<'_, Timer>, unix: bool) {
        loop {
            let res = if unix {
                self.listeners.inner_unix.accept().map(|(s, _)| (Io::Unix(s), "unix".to_string()))
            } else {
                self.listeners.inner_tcp.accept().map(|(s, a)| {
                    let _ = s.set_nodelay(true);
                    (Io::Tcp(s), a.to_string())
                })
            };
            match res {
                Ok((io, peer)) => {
                    self.inner_serial += 1;
                    let key = self.inners.vacant_key();
                    let mut inner = Inner::new(io, self.inner_serial, peer, self.secret.is_empty());
                    if inner.io.register(cx.registry, Token(INNER_BASE + key)).is_ok() {
                        self.inners.insert(inner);
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("gateway: inner accept failed: {e}");
                    return;
                }
            }
        }
    }

    // ----- client input ---------------------------------------------------------------

    /// Read up to the budget from client `key`, forwarding each message.
    fn read_client(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut rx = std::mem::take(&mut self.rx);
        self.read_client_with(key, &mut rx, &mut scratch);
        // The shared read buffer must be empty before the next client uses it.
        match self.clients.by_key_mut(key) {
            Some(c) => c.stash(&mut rx),
            None => rx.clear(),
        }
        self.rx = rx;
        self.scratch = scratch;
    }

    fn read_client_with(&mut self, key: usize, rx: &mut client::Rx, scratch: &mut Vec<u8>) {
        for _ in 0..READ_BUDGET {
            let Some(c) = self.clients.by_key_mut(key) else { return };
            match c.next(rx, scratch, self.limits.max_package_size, &self.ws_cfg) {
                Inbound::Message { binary } => {
                    c.ping = -1;
                    c.last_active = self.clock;
                    let slot = self.stats.slot();
                    Slot::bump(&slot.total_request);
                    let f = flag::BODY_IS_SCALAR | if binary { flag::BINARY } else { 0 };
                    self.forward(key, cmd::ON_MESSAGE, f, scratch);
                }
                Inbound::Upgraded(req) => {
                    let ip = Ipv4Addr::from(c.ip).to_string();
                    let data = websocket::connect_data(&req, &ip, c.port, self.me.public_port);
                    let body = php::serialize(&data);
                    self.mark_dirty(key);
                    self.forward(key, cmd::ON_WEBSOCKET_CONNECT, 0, &body);
                }
                Inbound::Idle => return,
                Inbound::Closed(why) => {
                    self.log_closed(key, &why);
                    self.close_client(key);
                    return;
                }
            }
        }
        // Budget used up: keep going next turn without waiting for an edge.
        self.again.push(key);
    }

    fn log_closed(&mut self, key: usize, why: &Closed) {
        let Some(c) = self.clients.by_key(key) else { return };
        let slot = self.stats.slot();
        match why {
            Closed::Peer => {}
            Closed::Bad(kind, reason) => {
                Slot::bump(&slot.bad_input);
                if let Some(more) = self.log_gate.check(kind) {
                    warn!(
                        "gateway: client {} ({}:{}) closed: {reason}{more}",
                        c.id,
                        Ipv4Addr::from(c.ip),
                        c.port
                    );
                }
            }
            Closed::TooBig(reason) => {
                Slot::bump(&slot.limit_size);
                if let Some(more) = self.log_gate.check("client_too_big") {
                    warn!(
                        "gateway: client {} ({}:{}) closed: {reason} (gateway.limits.max_package_size){more}",
                        c.id,
                        Ipv4Addr::from(c.ip),
                        c.port
                    );
                }
            }
        }
    }

    /// Close after writing what is queued (close frame, error page, KICK message).
    fn close_client(&mut self, key: usize) {
        if let Some(c) = self.clients.by_key_mut(key) {
            c.close_after_flush();
            self.mark_dirty(key);
        }
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.clients.by_key_mut(key)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty_clients.push(key);
        }
    }

    fn mark_dead(&mut self, key: usize) {
        if let Some(c) = self.clients.by_key_mut(key)
            && !c.dead
        {
            c.dead = true;
            self.dead_clients.push(key);
        }
    }

    // ----- forwarding to workers ---------------------------------------------------------

    /// Send one client event to the client's business worker (GatewayWorker's
    /// `sendToWorker`): header with the client's address, ext = session.
    fn forward(&mut self, key: usize, command: u8, flags: u8, body: &[u8]) {
        let Some(c) = self.clients.by_key_mut(key) else { return };
        let header = Header {
            cmd: command,
            local_ip: self.me.lan_ip,
            local_port: self.me.lan_port,
            client_ip: c.ip,
            client_port: c.port,
            connection_id: c.id,
            flag: flags,
            gateway_port: self.me.public_port,
        };
        let route = self.router.route(c.route);
        c.route = route;
        match route {
            Some(r) => {
                let Some(inner) = self.inners.get_mut(r.key) else { return };
                if inner.out.len() >= self.limits.send_to_worker_buffer_size {
                    Slot::bump(&self.stats.slot().send_fail);
                    if let Some(more) = self.log_gate.check("worker_buffer") {
                        warn!(
                            "gateway: SendBufferToWorker fail. The send buffer to worker {} is full (gateway.limits.send_to_worker_buffer_size); event dropped{more}",
                            inner.peer
                        );
                    }
                    return;
                }
                packet::encode(inner.out.vec(), &header, &c.session, body);
                if !inner.dirty {
                    inner.dirty = true;
                    self.dirty_inners.push(r.key);
                }
            }
            None => self.park(key, &header, body),
        }
    }

    /// No business worker is linked: keep the event until one links (bounded), or
    /// destroy the client as GatewayWorker does when the buffer is full.
    fn park(&mut self, key: usize, header: &Header, body: &[u8]) {
        let Some(c) = self.clients.by_key(key) else { return };
        if self.parked.len() + body.len() + c.session.len() + packet::HEADER_LEN
            > self.limits.send_to_worker_buffer_size
        {
            let now = Instant::now();
            if self.last_no_worker_log.is_none_or(|t| now.duration_since(t) > Duration::from_secs(1)) {
                warn!(
                    "gateway: SendBufferToWorker fail. The connections between Gateway and BusinessWorker are not ready; closing client {}",
                    c.id
                );
                self.last_no_worker_log = Some(now);
            }
            Slot::bump(&self.stats.slot().send_fail);
            if header.cmd != cmd::ON_CLOSE {
                self.mark_dead(key);
            }
            return;
        }
        packet::encode(&mut self.parked, header, &c.session, body);
    }

    /// A worker linked: route every parked event.
    fn replay_parked(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        let mut rest = &parked[..];
        while let Ok(Some((p, n))) = packet::decode(rest, usize::MAX) {
            let route = match self.clients.key_of(p.header.connection_id) {
                Some(k) => {
                    let c = self.clients.by_key_mut(k).map(|c| c.route).unwrap_or(None);
                    let r = self.router.route(c);
                    if let Some(cl) = self.clients.by_key_mut(k) {
                        cl.route = r;
                    }
                    r
                }
                None => self.router.any(),
            };
            if let Some(r) = route
                && let Some(inner) = self.inners.get_mut(r.key)
            {
                inner.out.extend(&rest[..n]);
                if !inner.dirty {
                    inner.dirty = true;
                    self.dirty_inners.push(r.key);
                }
            }
            rest = &rest[n..];
        }
    }

    // ----- inner links ------------------------------------------------------------------

    fn on_inner_ready(&mut self, key: usize, ready: Ready) {
        let Some(inner) = self.inners.get_mut(key) else { return };
        inner.ready.insert(ready);
        if ready.contains(Ready::WRITABLE) && !inner.out.is_empty() && !inner.dirty {
            inner.dirty = true;
            self.dirty_inners.push(key);
        }
        if inner.ready.contains(Ready::READABLE) {
            self.read_inner(key);
        }
    }

    fn read_inner(&mut self, key: usize) {
        loop {
            let Some(inner) = self.inners.get_mut(key) else { return };
            if inner.dead || inner.closing {
                return;
            }
            // Read at least a whole packet, even one bigger than the cap.
            let need = packet::peek_len(inner.inbuf.data(), self.limits.max_package_size)
                .ok()
                .flatten()
                .unwrap_or(0);
            let end = inner.read(INNER_READ_CAP.max(need));
            self.exec_buffered(key);
            match end {
                Ok(inner::ReadEnd::Full) => continue,
                Ok(inner::ReadEnd::Drained) => return,
                Ok(inner::ReadEnd::Eof) | Err(_) => {
                    self.kill_inner(key);
                    return;
                }
            }
        }
    }

    /// Execute every complete packet buffered on inner link `key`.
    fn exec_buffered(&mut self, key: usize) {
        let Some(inner) = self.inners.get_mut(key) else { return };
        let buf = std::mem::take(&mut inner.inbuf);
        let mut used = 0;
        let data = buf.data();
        loop {
            match packet::decode(&data[used..], self.limits.max_package_size) {
                Ok(Some((p, n))) => {
                    used += n;
                    Slot::bump(&self.stats.slot().total_request);
                    self.exec(key, &p);
                    if self.inners.get(key).is_none_or(|i| i.dead || i.closing) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let peer = self.inners.get(key).map(|i| i.peer.clone()).unwrap_or_default();
                    if let Some(more) = self.log_gate.check("inner_bad") {
                        warn!("gateway: bad packet from inner connection {peer}: {e}; closing it{more}");
                    }
                    Slot::bump(&self.stats.slot().bad_input);
                    self.kill_inner(key);
                    return;
                }
            }
        }
        if let Some(inner) = self.inners.get_mut(key) {
            let mut buf = buf;
            buf.consume(used);
            inner.inbuf = buf;
        }
    }

    /// Queue inner link `key` for destruction at the end of the turn.
    fn kill_inner(&mut self, key: usize) {
        if let Some(inner) = self.inners.get_mut(key)
            && !inner.dead
        {
            inner.dead = true;
            self.dead_inners.push(key);
        }
    }

    fn destroy_inner(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        let Some(mut inner) = self.inners.try_remove(key) else { return };
        inner.io.deregister(cx.registry);
        if let inner::Kind::Worker { key: wk, .. } = &inner.kind {
            self.router.remove(key);
            info!("gateway: business worker {wk} disconnected");
        }
    }

    // ----- destroying clients ---------------------------------------------------------------

    fn destroy_client(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        if self.clients.by_key(key).is_none() {
            return;
        }
        self.forward(key, cmd::ON_CLOSE, flag::BODY_IS_SCALAR, &[]);
        let Some(mut c) = self.clients.remove(key) else { return };
        c.io.deregister(cx.registry);
        c.release();
        if let Some(uid) = c.uid.take() {
            self.uids.remove(&uid, c.id);
        }
        for g in c.groups.take().unwrap_or_default() {
            self.groups.remove(&g, c.id);
        }
        if let Some(r) = c.route {
            self.router.unbind(r);
        }
    }

    // ----- end of turn -------------------------------------------------------------------

    fn flush_all(&mut self, cx: &mut Ctx<'_, Timer>) {
        let mut dirty = std::mem::take(&mut self.dirty_clients);
        for key in dirty.drain(..) {
            let Some(c) = self.clients.by_key_mut(key) else { continue };
            c.dirty = false;
            if c.dead {
                continue;
            }
            let before = c.bytes_written;
            let res = c.flush();
            Slot::add(&self.stats.slot().bytes_written, c.bytes_written - before);
            match res {
                Ok(true) if c.closing => {
                    c.io.shutdown_write();
                    self.mark_dead(key);
                }
                Ok(_) => {}
                Err(_) => self.mark_dead(key),
            }
        }
        self.dirty_clients = dirty;

        // Destroying a client queues its CMD_ON_CLOSE: the worker links are flushed after.
        for key in std::mem::take(&mut self.dead_clients) {
            self.destroy_client(cx, key);
        }

        let mut dirty = std::mem::take(&mut self.dirty_inners);
        for key in dirty.drain(..) {
            let Some(inner) = self.inners.get_mut(key) else { continue };
            inner.dirty = false;
            let before = inner.bytes_written;
            let res = inner.flush();
            Slot::add(&self.stats.slot().bytes_written, inner.bytes_written - before);
            match res {
                Ok(true) if inner.closing => self.kill_inner(key),
                Ok(_) => {}
                Err(_) => self.kill_inner(key),
            }
        }
        self.dirty_inners = dirty;

        for key in std::mem::take(&mut self.dead_inners) {
            self.destroy_inner(cx, key);
        }
    }

    /// Count a dropped send; close the client if the policy says so.
    fn send_failed(&mut self, key: usize) {
        Slot::bump(&self.stats.slot().send_fail);
        let id = self.clients.by_key(key).map_or(0, |c| c.id);
        if self.limits.send_full_policy == SendFullPolicy::Close {
            Slot::bump(&self.stats.slot().limit_slow);
            if let Some(more) = self.log_gate.check("slow_client") {
                warn!(
                    "gateway: client {id} does not read its messages (gateway.limits.send_to_client_buffer_size); closing it{more}"
                );
            }
            self.mark_dead(key);
        } else if let Some(more) = self.log_gate.check("send_fail") {
            warn!(
                "gateway: send buffer of client {id} is full (gateway.limits.send_to_client_buffer_size); message dropped, counted in send_fail{more}"
            );
        }
    }

    // ----- timers --------------------------------------------------------------------------

    fn heartbeat_period(&self) -> Option<Duration> {
        if self.ping_interval.is_zero() {
            return None;
        }
        Some(if self.ping_limit > 0 { self.ping_interval / 2 } else { self.ping_interval })
    }

    /// GATEWAYWORKER.md §5.2, one tick.
    fn heartbeat(&mut self) {
        let limit = self.ping_limit as i32;
        let mut expired = Vec::new();
        let mut ping = Vec::new();
        for (key, c) in self.clients.iter_mut() {
            if c.dead {
                continue;
            }
            if limit > 0 && c.ping >= 2 * limit {
                expired.push(key);
                continue;
            }
            c.ping += 1;
            if !self.ping_data.is_empty() && c.ping != 0 && !(limit > 0 && c.ping % 2 == 1) {
                ping.push(key);
            }
        }
        for key in expired {
            if let Some(c) = self.clients.by_key(key)
                && let Some(more) = self.log_gate.check("heartbeat")
            {
                info!(
                    "gateway: client {} sent nothing for too long (ping_not_response_limit), closing{more}",
                    c.id
                );
            }
            self.mark_dead(key);
        }
        let data = std::mem::take(&mut self.ping_data);
        for key in ping {
            if let Some(c) = self.clients.by_key_mut(key)
                && (!c.handshaking() || self.me.proto != Proto::WebSocket)
            {
                let _ = c.send(&data, false, false, self.limits.send_to_client_buffer_size);
                self.mark_dirty(key);
            }
        }
        self.ping_data = data;
    }

    /// Once a second: coarse clock, handshake and idle timeouts, statistics.
    fn tick(&mut self, cx: &mut Ctx<'_, Timer>) {
        self.clock = self.started.elapsed().as_secs() as u32;
        while let Some(&(deadline, id)) = self.handshakes.front() {
            if deadline > self.clock {
                break;
            }
            self.handshakes.pop_front();
            if let Some(key) = self.clients.key_of(id)
                && self.clients.by_key(key).is_some_and(|c| c.handshaking())
            {
                Slot::bump(&self.stats.slot().limit_handshake);
                if let Some(more) = self.log_gate.check("handshake_timeout") {
                    warn!(
                        "gateway: client {id} did not finish its handshake in time (gateway.limits.handshake_timeout), closing{more}"
                    );
                }
                self.mark_dead(key);
            }
        }
        let idle = self.limits.idle_timeout.as_secs() as u32;
        if idle > 0 {
            let clock = self.clock;
            let stale: Vec<usize> = self
                .clients
                .iter()
                // The clock counts whole seconds: more than `idle` ticks of silence.
                .filter(|(_, c)| clock.saturating_sub(c.last_active) > idle)
                .map(|(k, _)| k)
                .collect();
            for key in stale {
                Slot::bump(&self.stats.slot().limit_idle);
                if let Some(more) = self.log_gate.check("idle") {
                    let id = self.clients.by_key(key).map_or(0, |c| c.id);
                    info!(
                        "gateway: client {id} idle for {idle} s (gateway.limits.idle_timeout), closing{more}"
                    );
                }
                self.mark_dead(key);
            }
        }
        let slot = self.stats.slot();
        slot.tick();
        let registers = self.registers.iter().filter(|l| l.is_connected()).count();
        Slot::set(&slot.connections, (self.clients.len() + self.inners.len() + registers) as u64);
        Slot::set(&slot.timers, cx.timers.len() as u64 + 1);
        cx.after(Duration::from_secs(1), Timer::Tick);
    }

    fn keepalive(&mut self, cx: &mut Ctx<'_, Timer>) {
        for link in &mut self.registers {
            let loopback =
                matches!(&link.target, Target::Tcp(a) if a.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST));
            if link.is_connected() && !loopback {
                link.out.extend(lines::PING);
                let _ = link.flush();
            }
        }
        let ping = {
            let mut v = Vec::new();
            packet::encode(&mut v, &Header::command(cmd::PING, 0, flag::BODY_IS_SCALAR), b"", b"");
            v
        };
        let workers: Vec<usize> = self.inners.iter().filter(|(_, i)| i.is_worker()).map(|(k, _)| k).collect();
        for key in workers {
            if let Some(inner) = self.inners.get_mut(key) {
                inner.out.extend(&ping);
                if !inner.dirty {
                    inner.dirty = true;
                    self.dirty_inners.push(key);
                }
            }
        }
        cx.after(KEEPALIVE, Timer::KeepAlive);
    }

    /// One line per connection, for the `connections` command.
    fn connections(&self) -> Vec<ConnInfo> {
        let mut out = Vec::new();
        let tls = self.tls.is_some();
        for (_, c) in self.clients.iter() {
            let (local, remote) = conns::addrs(&c.io);
            out.push(ConnInfo {
                id: c.id as u64,
                protocol: c.proto().scheme(tls),
                transport: if tls { "ssl" } else { "tcp" },
                recv_q: c.pending_input(),
                send_q: c.queued(),
                bytes_read: c.bytes_read,
                bytes_written: c.bytes_written,
                state: if c.closing || c.dead {
                    "CLOSING"
                } else if c.handshaking() {
                    "CONNECTING"
                } else {
                    "ESTABLISHED"
                },
                local,
                remote,
            });
        }
        for (_, i) in self.inners.iter() {
            let (local, remote) = conns::addrs(&i.io);
            out.push(ConnInfo {
                id: i.serial,
                protocol: "GatewayProtocol",
                transport: if matches!(i.io, Io::Unix(_)) { "unix" } else { "tcp" },
                recv_q: i.inbuf.len(),
                send_q: i.out.len(),
                bytes_read: i.bytes_read,
                bytes_written: i.bytes_written,
                state: if i.closing || i.dead { "CLOSING" } else { "ESTABLISHED" },
                local,
                remote,
            });
        }
        out.extend(self.registers.iter().map(|l| l.conn_info(0)));
        out
    }

    fn begin_stop(&mut self, cx: &mut Ctx<'_, Timer>, graceful: bool) {
        let _ = cx.registry.deregister(&mut self.listeners.public);
        self.stats.slot().set_state(State::Draining);
        if graceful {
            self.stop = Stop::Graceful;
            info!("gateway {}: graceful stop, waiting for {} clients", self.me.name, self.clients.len());
        } else {
            // Last pass: execute what workers already wrote to us (their final replies may
            // not have raised an edge yet) and hand it to the clients before exiting.
            let keys: Vec<usize> = self.inners.iter().map(|(k, _)| k).collect();
            for key in keys {
                if let Some(inner) = self.inners.get_mut(key) {
                    inner.ready.insert(Ready::READABLE);
                }
                self.read_inner(key);
            }
            self.stop = Stop::Now;
        }
    }
}

impl Service for Gateway {
    type Timer = Timer;

    fn on_ready(&mut self, cx: &mut Ctx<'_, Timer>, token: Token, ready: Ready) {
        match token.0 {
            0 => {
                self.accept_ready = true;
                self.accept_clients(cx);
            }
            1 => self.accept_inner(cx, false),
            2 => self.accept_inner(cx, true),
            t if (REGISTER_BASE..INNER_BASE).contains(&t) => {
                if t - REGISTER_BASE < self.registers.len() {
                    self.on_register_ready(cx, t - REGISTER_BASE, ready);
                }
            }
            t if (INNER_BASE..CLIENT_BASE).contains(&t) => self.on_inner_ready(t - INNER_BASE, ready),
            t => {
                let key = t - CLIENT_BASE;
                let Some(c) = self.clients.by_key_mut(key) else { return };
                c.ready.insert(ready);
                if ready.contains(Ready::WRITABLE) && c.wants_flush() {
                    self.mark_dirty(key);
                }
                if self.clients.by_key(key).is_some_and(|c| c.ready.contains(Ready::READABLE)) {
                    self.read_client(key);
                }
                // A TLS handshake step may have queued records to send.
                if self.clients.by_key(key).is_some_and(|c| c.wants_flush()) {
                    self.mark_dirty(key);
                }
            }
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_, Timer>, timer: Timer) {
        match timer {
            Timer::Tick => self.tick(cx),
            Timer::Heartbeat => {
                self.heartbeat();
                if let Some(p) = self.heartbeat_period() {
                    cx.after(p, Timer::Heartbeat);
                }
            }
            Timer::RegisterRetry(i) => self.dial_register(cx, i),
            Timer::KeepAlive => self.keepalive(cx),
            Timer::ResumeAccept => {
                self.accept_backoff = false;
                self.accept_clients(cx);
            }
        }
    }

    fn on_signal(&mut self, cx: &mut Ctx<'_, Timer>, signal: i32) {
        match signal {
            libc::SIGQUIT => self.begin_stop(cx, true),
            libc::SIGUSR1 | libc::SIGUSR2 => crate::cli::logger::reopen(),
            libc::SIGIO => {
                if let Err(e) = conns::dump(&self.run_dir, &self.me.name, &self.connections()) {
                    warn!("gateway: cannot write the connection list: {e}");
                }
            }
            s if crate::master::is_stop_signal(s) => self.begin_stop(cx, false),
            _ => {}
        }
    }

    fn end_of_turn(&mut self, cx: &mut Ctx<'_, Timer>) -> bool {
        for key in std::mem::take(&mut self.again) {
            self.read_client(key);
        }
        // Resume accepting below 90 % of the limit (hysteresis).
        if self.accept_paused && self.clients.len() * 10 < self.limits.max_connections * 9 {
            self.accept_paused = false;
            self.accept_clients(cx);
        }
        self.flush_all(cx);
        let registers = self.registers.iter().filter(|l| l.is_connected()).count();
        Slot::set(
            &self.stats.slot().connections,
            (self.clients.len() + self.inners.len() + registers) as u64,
        );
        !self.again.is_empty()
    }

    fn should_stop(&self) -> bool {
        match self.stop {
            Stop::No => false,
            Stop::Now => true,
            Stop::Graceful => self.clients.is_empty(),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stats.slot().set_state(State::Exited);
    }
}

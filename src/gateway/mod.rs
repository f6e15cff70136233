//! A gateway process: holds client connections (websocket, wss, text, frame), forwards every
//! client event to one business worker (sticky, least connections) and executes the
//! commands and queries workers and GatewayClients send on its inner port / Unix socket.
//! It runs no business code (`docs/architecture.md`).

mod accept;
mod client;
mod clients;
mod commands;
mod flush;
mod index;
mod inner;
mod links;
mod queries;
mod registers;
mod relay;
mod router;
mod timers;

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Token};
use slab::Slab;
use tungstenite::protocol::WebSocketConfig;

use crate::config::{Config, GatewayConf, GatewayLimits, Proto};
use crate::logging::{OncePerPeer, Throttle};
use crate::net::io::Io;
use crate::net::websocket;
use crate::reactor::{Ctx, Reactor, Ready, Service};
use crate::stats::conns::{self, ConnInfo};
use crate::stats::{Slot, State, Stats};
use crate::wire::link::{Link, Target};
use crate::wire::register as lines;

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
    reactor.watch_signals(&crate::reactor::signals::CHILD_SIGNALS)?;
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

    /// One line per connection, for the `connections` command.
    fn connections(&self) -> Vec<ConnInfo> {
        let mut out = Vec::new();
        let tls = self.tls.is_some();
        for (_, c) in self.clients.iter() {
            let (local, remote) = crate::net::io::addrs(&c.io);
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
            let (local, remote) = crate::net::io::addrs(&i.io);
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
            libc::SIGUSR1 | libc::SIGUSR2 => crate::logging::reopen(),
            libc::SIGIO => {
                if let Err(e) = conns::dump(&self.run_dir, &self.me.name, &self.connections()) {
                    warn!("gateway: cannot write the connection list: {e}");
                }
            }
            s if crate::reactor::signals::is_stop_signal(s) => self.begin_stop(cx, false),
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

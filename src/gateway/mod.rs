//! A gateway process: holds client connections (websocket, wss, text, frame), forwards every
//! client event to one business worker (sticky, least connections) and executes the
//! commands and queries workers and GatewayClients send on its inner port / Unix socket.
//! It runs no business code (`docs/architecture.md`).
//!
//! The state is in parts, each a type with its own methods: `Clients` (the client table:
//! connections, protocol state, session, uid, groups, route and counters of each client, by
//! slab key and by connection id), `Links` (inner connections and the events parked until a
//! worker links), `Router`, `Directory` (uid and group indices), `RegisterLinks`. `Gateway`
//! holds them and dispatches events: readiness by token range, timers, signals, and the
//! end-of-turn flush. Its behaviour is spread by concern: `accept`, `relay` (client input to
//! workers), `pause` (backpressure from worker links and per-client rates, whose state is in
//! `limits`), `links` and `commands` (worker packets), `timers`, `flush`.

mod accept;
mod client;
mod clients;
mod commands;
mod directory;
mod flush;
mod handover;
mod index;
mod inner;
mod limits;
mod links;
mod membership;
mod pause;
mod queries;
mod relay;
mod router;
pub mod server_vars;
mod timers;

#[cfg(test)]
pub(crate) mod tests;

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::net::{TcpListener, UnixListener};
use mio::{Interest, Token};
use tungstenite::protocol::WebSocketConfig;

use crate::config::{Config, GatewayConf, GatewayLimits, Proto};
use crate::discovery::RegisterLinks;
use crate::logging::{OncePerPeer, Throttle};
use crate::net::websocket;
use crate::reactor::{Ctx, Reactor, Ready, Service};
use crate::stats::conns::{self, ConnInfo};
use crate::stats::{Slot, State, Stats};
use crate::wire::register as lines;

use clients::Clients;
use directory::Directory;
use inner::Links;
use router::Router;

const PUBLIC: Token = Token(0);
const INNER_TCP: Token = Token(1);
const INNER_UNIX: Token = Token(2);
/// Register link `i` has token `REGISTER_BASE + i`.
const REGISTER_BASE: usize = 16;
/// Inner link `k` has token `INNER_BASE + k`.
const INNER_BASE: usize = 1 << 20;
/// Client `k` has token `CLIENT_BASE + k`.
const CLIENT_BASE: usize = 1 << 32;
/// After a handover, the relays of TLS sessions (`handover::Relays`).
const RELAY_BASE: usize = 1 << 40;

/// Messages read from one client per readiness before others get their turn.
const READ_BUDGET: usize = 64;
/// Bytes of messages read from one client per readiness before others get their turn.
const READ_BYTES_BUDGET: usize = 256 * 1024;
/// How often the buckets of throttled clients are checked.
const REFILL_PERIOD: Duration = Duration::from_millis(10);
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
    /// Resume the throttled clients whose buckets refilled.
    Refill,
    /// After a handover: close the next relayed wss clients with 1012.
    UpgradeDrain,
}

/// Stop request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    No,
    /// Stop accepting, exit when the last client is gone.
    Graceful,
    Now,
    /// Everything was handed over: exit when the last relayed TLS session closed, or at
    /// this deadline.
    Relaying(Instant),
}

/// This process's place in the cluster.
pub struct Identity {
    pub name: String,
    pub proto: Proto,
    /// The advertised address (`advertise_ip`): client_ids and the register carry it.
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

/// What the configuration fixes for the life of the process.
struct Settings {
    limits: GatewayLimits,
    /// Water marks of the worker links.
    marks: limits::Marks,
    ping_interval: Duration,
    ping_limit: u32,
    ping_data: Vec<u8>,
    secret: String,
    ws_cfg: WebSocketConfig,
    run_dir: PathBuf,
    upgrade_drain: Duration,
}

/// The listeners and the state of accepting clients.
struct Acceptor {
    listeners: Listeners,
    tls: Option<Arc<rustls::ServerConfig>>,
    /// The public listener has connections we did not accept yet.
    ready: bool,
    /// At `max_connections`: resume below 90 %.
    paused: bool,
    /// accept() failed (EMFILE...): wait for the retry timer.
    backoff: bool,
}

/// Buffers reused by every event, so nothing is allocated per message.
#[derive(Default)]
struct Bufs {
    /// Read buffer shared by all clients.
    rx: client::Rx,
    /// The message being forwarded.
    msg: Vec<u8>,
    /// A broadcast encoded once for this gateway's protocol.
    encoded: Vec<u8>,
}

/// Log throttles.
struct Logs {
    /// One log line per kind of hostile event and period.
    gate: Throttle,
    /// Peers already logged for a refused secret key.
    refused: OncePerPeer,
    last_no_worker: Option<Instant>,
}

/// A gateway process: its parts and the event dispatch.
pub struct Gateway {
    me: Identity,
    settings: Settings,
    accept: Acceptor,
    clients: Clients,
    links: Links,
    router: Router,
    /// uid and group memberships.
    index: Directory,
    registers: RegisterLinks,
    bufs: Bufs,
    logs: Logs,
    started: Instant,
    /// Whole seconds since start (coarse clock for timeouts).
    clock: u32,
    stats: Stats,
    stop: Stop,
    /// TLS sessions relayed after a handover (old process).
    relays: handover::Relays,
    /// When the relayed wss clients get 1012 (new process).
    drain: handover::DrainPlan,
}

/// Entry point of a gateway process.
pub fn run(
    cfg: &Config,
    group: usize,
    id: u16,
    listeners: Listeners,
    stats: Stats,
    handover: Option<&std::path::Path>,
) -> io::Result<()> {
    let g = &cfg.gateways[group];
    let tls = match &g.tls {
        Some(files) => {
            Some(crate::net::tls::server_config(&files.cert, &files.key).map_err(io::Error::other)?)
        }
        None => None,
    };
    let mut reactor = Reactor::new()?;
    reactor.watch_signals(&crate::reactor::signals::CHILD_SIGNALS)?;
    // Replacing a running gateway (`upgrade`): take its connections before serving.
    let received = match handover {
        Some(path) => match handover::receive(path, &stats) {
            Ok(got) => Some(got),
            Err(e) => {
                log::error!("gateway {}[{id}]: handover failed: {e}; the running gateway goes on", g.name);
                std::process::exit(e.exit_status());
            }
        },
        None => None,
    };
    let mut gw = Gateway::new(cfg, g, id, listeners, tls, stats);
    {
        let mut cx = reactor.ctx();
        if let Some(got) = received {
            let (clients, links) = (got.clients.len(), got.links.len());
            gw.restore(&mut cx, got)?;
            info!("gateway {}[{id}]: took over {clients} clients and {links} inner links", g.name);
        }
        gw.start(&mut cx)?;
    }
    info!(
        "gateway {}[{id}] serving {}://{} inner {}:{}",
        gw.me.name,
        g.proto.scheme(gw.accept.tls.is_some()),
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
        let address = format!("{}:{lan_port}", cfg.advertise_ip);
        Gateway {
            me: Identity {
                name: g.name.clone(),
                proto: g.proto,
                lan_ip: u32::from(cfg.advertise_ip),
                lan_port,
                public_port: g.listen.port(),
            },
            settings: Settings {
                limits: g.limits.clone(),
                marks: limits::Marks::new(
                    g.limits.flow.worker_high_water,
                    g.limits.send_to_worker_buffer_size,
                ),
                ping_interval: g.ping_interval,
                ping_limit: g.ping_not_response_limit,
                ping_data: g.ping_data.clone(),
                secret: cfg.secret_key.clone(),
                ws_cfg: websocket::config(g.limits.max_package_size),
                run_dir: cfg.run_dir.clone(),
                upgrade_drain: cfg.upgrade_drain,
            },
            accept: Acceptor { listeners, tls, ready: true, paused: false, backoff: false },
            clients: Clients::new(CLIENT_BASE, g.limits.max_connections),
            links: Links::new(INNER_BASE),
            router: Router::default(),
            index: Directory::default(),
            registers: RegisterLinks::new(
                &cfg.register_address,
                REGISTER_BASE,
                lines::gateway_connect(&address, &cfg.secret_key),
                "gateway",
            ),
            bufs: Bufs::default(),
            logs: Logs { gate: Throttle::new(LOG_PERIOD), refused: OncePerPeer::new(), last_no_worker: None },
            started: Instant::now(),
            clock: 0,
            stats,
            stop: Stop::No,
            relays: handover::Relays::new(RELAY_BASE),
            drain: handover::DrainPlan::default(),
        }
    }

    fn start(&mut self, cx: &mut Ctx<'_, Timer>) -> io::Result<()> {
        let l = &mut self.accept.listeners;
        cx.registry.register(&mut l.public, PUBLIC, Interest::READABLE)?;
        cx.registry.register(&mut l.inner_tcp, INNER_TCP, Interest::READABLE)?;
        cx.registry.register(&mut l.inner_unix, INNER_UNIX, Interest::READABLE)?;
        self.registers.dial_all(cx, Timer::RegisterRetry);
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
        let tls = self.accept.tls.is_some();
        let client = |c: &client::Client| {
            let mut info = c.conn.info(c.id as u64, c.proto().scheme(tls));
            info.recv_q = c.pending_input();
            if c.handshaking() && info.state != "CLOSING" {
                info.state = "CONNECTING";
            }
            info
        };
        let mut out: Vec<ConnInfo> = self.clients.iter().map(|(_, c)| client(c)).collect();
        out.extend(self.links.conn_infos());
        out.extend(self.registers.conn_infos(0));
        out
    }

    fn begin_stop(&mut self, cx: &mut Ctx<'_, Timer>, graceful: bool) {
        let _ = cx.registry.deregister(&mut self.accept.listeners.public);
        self.relays.close_all(cx.registry);
        self.stats.slot().set_state(State::Draining);
        if graceful {
            self.stop = Stop::Graceful;
            info!("gateway {}: graceful stop, waiting for {} clients", self.me.name, self.clients.len());
        } else {
            // Last pass: execute what workers already wrote to us (their final replies may
            // not have raised an edge yet) and hand it to the clients before exiting.
            for key in self.links.table.keys() {
                if let Some(inner) = self.links.get_mut(key) {
                    inner.conn.ready.insert(Ready::READABLE);
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
        match token {
            PUBLIC => {
                self.accept.ready = true;
                self.accept_clients(cx);
            }
            INNER_TCP => self.accept_inner(cx, false),
            INNER_UNIX => self.accept_inner(cx, true),
            Token(t) if t >= RELAY_BASE => self.relays.on_ready(cx.registry, t, ready),
            Token(t) if t >= CLIENT_BASE => self.on_client_ready(t - CLIENT_BASE, ready),
            Token(t) if t >= INNER_BASE => self.on_inner_ready(t - INNER_BASE, ready),
            Token(t) if t >= REGISTER_BASE => {
                // Registers never write to gateways: reading only notices a close.
                self.registers.on_ready(cx, t - REGISTER_BASE, ready, Timer::RegisterRetry);
            }
            Token(_) => {}
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
            Timer::RegisterRetry(i) => self.registers.dial(cx, i, Timer::RegisterRetry),
            Timer::KeepAlive => self.keepalive(cx),
            Timer::ResumeAccept => {
                self.accept.backoff = false;
                self.accept_clients(cx);
            }
            Timer::Refill => self.refill(),
            Timer::UpgradeDrain => self.upgrade_drain(cx),
        }
    }

    fn on_signal(&mut self, cx: &mut Ctx<'_, Timer>, signal: i32) {
        match signal {
            libc::SIGQUIT => self.begin_stop(cx, true),
            libc::SIGUSR1 => crate::logging::reopen(),
            libc::SIGUSR2 => self.on_upgrade_signal(cx),
            libc::SIGIO => {
                if let Err(e) = conns::dump(&self.settings.run_dir, &self.me.name, &self.connections()) {
                    warn!("gateway: cannot write the connection list: {e}");
                }
            }
            s if crate::reactor::signals::is_stop_signal(s) => self.begin_stop(cx, false),
            _ => {}
        }
    }

    fn end_of_turn(&mut self, cx: &mut Ctx<'_, Timer>) -> bool {
        for key in std::mem::take(&mut self.clients.again) {
            self.read_client(key);
        }
        // Resume accepting below 90 % of the limit (hysteresis).
        if self.accept.paused && self.clients.len() * 10 < self.settings.limits.max_connections * 9 {
            self.accept.paused = false;
            self.accept_clients(cx);
        }
        self.flush_all(cx);
        self.count_connections();
        if !self.clients.throttled.is_empty() && !self.clients.refill_armed {
            self.clients.refill_armed = true;
            cx.after(REFILL_PERIOD, Timer::Refill);
        }
        !self.clients.again.is_empty()
    }

    fn should_stop(&self) -> bool {
        match self.stop {
            Stop::No => false,
            Stop::Now => true,
            Stop::Graceful => self.clients.is_empty(),
            Stop::Relaying(deadline) => self.relays.is_empty() || Instant::now() >= deadline,
        }
    }
}

impl Gateway {
    /// The `connections` statistic: clients, inner links and connected register links.
    fn count_connections(&self) {
        let relayed = self.relays.len();
        let n = self.clients.len() + self.links.len() + self.registers.connected() + relayed;
        Slot::set(&self.stats.slot().connections, n as u64);
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stats.slot().set_state(State::Exited);
    }
}

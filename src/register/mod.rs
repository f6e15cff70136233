//! The register: the cluster's address book. Gateways announce their inner address, business
//! workers (and GatewayClients) receive the list and every change of it. It never carries
//! client traffic (`docs/protocol.md` §1).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Interest, Token};

use crate::config::Config;
use crate::logging::{OncePerPeer, Throttle};
use crate::net::conn::{Conn, ReadEnd};
use crate::net::io::Io;
use crate::net::table::{Owned, Table, conn_field};
use crate::reactor::{Ctx, Reactor, Ready, Service, TimerId, would_block};
use crate::stats::conns::ConnInfo;
use crate::stats::{Slot, State, Stats};
use crate::wire::register::{self as lines, Request};

const LISTENER: Token = Token(0);
/// Connection `k` has token `CONN_BASE + k`.
const CONN_BASE: usize = 1;
/// A line longer than this is not a register request.
const MAX_LINE: usize = 64 * 1024;

/// Timers of the register.
pub enum Timer {
    /// A connection that has not identified itself in time.
    Auth {
        key: usize,
        serial: u64,
    },
    Tick,
}

/// What a connection turned out to be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Unknown,
    Gateway(String),
    Worker,
}

/// A connection from a gateway, a worker or a GatewayClient.
struct Peer {
    conn: Conn,
    peer: SocketAddr,
    serial: u64,
    kind: Kind,
    auth_timer: Option<TimerId>,
}

impl Owned for Peer {
    conn_field!();
}

/// The register service.
pub struct Register {
    listener: TcpListener,
    conns: Table<Peer>,
    /// Gateways in registration order: (connection serial, address).
    gateways: Vec<(u64, String)>,
    secret: String,
    auth_timeout: Duration,
    next_serial: u64,
    stats: Stats,
    stop: bool,
    run_dir: std::path::PathBuf,
    log_gate: Throttle,
    refused: OncePerPeer,
}

/// Entry point of the register process.
pub fn run(cfg: &Config, listener: TcpListener, stats: Stats) -> io::Result<()> {
    let mut reactor = Reactor::new()?;
    reactor.watch_signals(&crate::reactor::signals::CHILD_SIGNALS)?;
    let mut reg = Register::new(cfg, listener, stats);
    {
        let mut cx = reactor.ctx();
        cx.registry.register(&mut reg.listener, LISTENER, Interest::READABLE)?;
        cx.after(Duration::from_secs(1), Timer::Tick);
    }
    reg.stats.slot().set_state(State::Ready);
    info!("register listening on {}", reg.listener.local_addr()?);
    reactor.run(&mut reg)
}

impl Register {
    pub fn new(cfg: &Config, listener: TcpListener, stats: Stats) -> Register {
        let auth_timeout = cfg.register.as_ref().map_or(Duration::from_secs(10), |r| r.auth_timeout);
        Register {
            listener,
            conns: Table::new(CONN_BASE, 0),
            gateways: Vec::new(),
            secret: cfg.secret_key.clone(),
            auth_timeout,
            next_serial: 0,
            stats,
            stop: false,
            run_dir: cfg.run_dir.clone(),
            log_gate: Throttle::new(Duration::from_secs(10)),
            refused: OncePerPeer::new(),
        }
    }

    fn accept(&mut self, cx: &mut Ctx<'_, Timer>) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    crate::net::inner_link_options(&stream);
                    let key = self.conns.vacant_key();
                    let serial = self.next_serial + 1;
                    let conn = Conn::new(Io::Tcp(stream));
                    let p = Peer { conn, peer, serial, kind: Kind::Unknown, auth_timer: None };
                    if let Err(e) = self.conns.insert(cx.registry, p) {
                        warn!("register: cannot watch connection from {peer}: {e}");
                        continue;
                    }
                    self.next_serial = serial;
                    let timer = cx.after(self.auth_timeout, Timer::Auth { key, serial });
                    if let Some(p) = self.conns.get_mut(key) {
                        p.auth_timer = Some(timer);
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: the listener stays readable; retry on the next tick.
                    warn!("register: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Read and handle every complete line of connection `key`.
    fn on_readable(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        loop {
            let Some(p) = self.conns.get_mut(key) else { return };
            let before = p.conn.bytes_read;
            let end = p.conn.read(MAX_LINE + 1);
            Slot::add(&self.stats.slot().bytes_read, p.conn.bytes_read - before);
            while let Some(line) = self.next_line(key) {
                self.handle_line(cx, key, &line);
            }
            let Some(p) = self.conns.get_mut(key) else { return };
            if p.conn.inbuf.len() > MAX_LINE {
                if let Some(more) = self.log_gate.check("long_line") {
                    warn!("register: line over {MAX_LINE} bytes from {}, closing{more}", p.peer);
                }
                Slot::bump(&self.stats.slot().bad_input);
                return self.close(cx, key);
            }
            match end {
                Ok(ReadEnd::Full) => {}
                Ok(ReadEnd::Drained) => return,
                Ok(ReadEnd::Eof) | Err(_) => return self.close(cx, key),
            }
        }
    }

    fn next_line(&mut self, key: usize) -> Option<Vec<u8>> {
        let c = &mut self.conns.get_mut(key)?.conn;
        if c.closing {
            return None;
        }
        let data = c.inbuf.data();
        let pos = data.iter().position(|&b| b == b'\n')?;
        let mut end = pos;
        while end > 0 && data[end - 1] == b'\r' {
            end -= 1;
        }
        let line = data[..end].to_vec();
        c.inbuf.consume(pos + 1);
        Slot::bump(&self.stats.slot().total_request);
        Some(line)
    }

    fn handle_line(&mut self, cx: &mut Ctx<'_, Timer>, key: usize, line: &[u8]) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if let Some(t) = c.auth_timer.take() {
            cx.timers.cancel(t);
        }
        let peer = c.peer;
        match lines::parse_request(line) {
            Err(bad) => {
                if let Some(more) = self.log_gate.check("bad_line") {
                    warn!("register: {} from {peer}, closing{more}", bad.0);
                }
                Slot::bump(&self.stats.slot().bad_input);
                c.conn.out.extend(bad.0.as_bytes());
                c.conn.out.extend(b"\n");
                c.conn.closing = true;
                self.conns.mark_dirty(key);
            }
            Ok(Request::GatewayConnect { address, secret }) => {
                let Some(address) = address else {
                    warn!("register: gateway_connect without address from {peer}, closing");
                    self.close(cx, key);
                    return;
                };
                if !Self::secret_ok(&self.secret, &self.stats, &mut self.refused, &secret, peer) {
                    self.close(cx, key);
                    return;
                }
                c.kind = Kind::Gateway(address.clone());
                let serial = c.serial;
                self.gateways.retain(|(s, _)| *s != serial);
                self.gateways.push((serial, address.clone()));
                info!("register: gateway {address} joined");
                self.broadcast();
            }
            Ok(Request::WorkerConnect { secret }) => {
                if !Self::secret_ok(&self.secret, &self.stats, &mut self.refused, &secret, peer) {
                    self.close(cx, key);
                    return;
                }
                let list = lines::broadcast_addresses(&self.addresses());
                if let Some(c) = self.conns.get_mut(key) {
                    c.kind = Kind::Worker;
                    c.conn.out.extend(&list);
                    self.conns.mark_dirty(key);
                }
            }
            Ok(Request::Ping) => {}
            Ok(Request::Unknown(event)) => {
                if let Some(more) = self.log_gate.check("unknown_event") {
                    warn!("register: unknown event {event:?} from {peer}, closing{more}");
                }
                Slot::bump(&self.stats.slot().bad_input);
                self.close(cx, key);
            }
        }
    }

    fn secret_ok(
        secret: &str,
        stats: &Stats,
        refused: &mut OncePerPeer,
        given: &str,
        peer: SocketAddr,
    ) -> bool {
        if crate::wire::secret_eq(given.as_bytes(), secret.as_bytes()) {
            return true;
        }
        if refused.first("secret", &peer.to_string()) {
            warn!("register: secret key does not match for {peer}, closing (logged once per peer)");
        }
        Slot::bump(&stats.slot().bad_input);
        false
    }

    /// Gateway addresses, de-duplicated, in registration order.
    fn addresses(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::with_capacity(self.gateways.len());
        for (_, a) in &self.gateways {
            if !out.contains(a) {
                out.push(a.clone());
            }
        }
        out
    }

    /// Send the address list to every worker.
    fn broadcast(&mut self) {
        let line = lines::broadcast_addresses(&self.addresses());
        let mut workers = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            if c.kind == Kind::Worker && !c.conn.closing {
                c.conn.out.extend(&line);
                workers.push(key);
            }
        }
        for key in workers {
            self.conns.mark_dirty(key);
        }
    }

    fn close(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        let Some(mut c) = self.conns.remove(cx.registry, key) else { return };
        if let Some(t) = c.auth_timer.take() {
            cx.timers.cancel(t);
        }
        if let Kind::Gateway(addr) = &c.kind {
            self.gateways.retain(|(s, _)| *s != c.serial);
            info!("register: gateway {addr} left");
            self.broadcast();
        }
    }

    /// End of turn: one write per dirty connection, then the closed ones go.
    fn flush(&mut self, cx: &mut Ctx<'_, Timer>) {
        let written = self.conns.flush_dirty();
        Slot::add(&self.stats.slot().bytes_written, written);
        for key in self.conns.take_dead() {
            self.close(cx, key);
        }
    }
}

impl Service for Register {
    type Timer = Timer;

    fn on_ready(&mut self, cx: &mut Ctx<'_, Timer>, token: Token, ready: Ready) {
        if token == LISTENER {
            self.accept(cx);
            return;
        }
        let Some(key) = self.conns.key_of(token) else { return };
        if self.conns.on_ready(key, ready).is_some() && ready.contains(Ready::READABLE) {
            self.on_readable(cx, key);
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_, Timer>, timer: Timer) {
        match timer {
            Timer::Auth { key, serial } => {
                if let Some(c) = self.conns.get_mut(key).filter(|c| c.serial == serial) {
                    c.auth_timer = None;
                    if let Some(more) = self.log_gate.check("auth_timeout") {
                        warn!("register: auth timeout for {}, closing{more}", c.peer);
                    }
                    self.close(cx, key);
                }
            }
            Timer::Tick => {
                let slot = self.stats.slot();
                slot.tick();
                Slot::set(&slot.connections, self.conns.len() as u64);
                Slot::set(&slot.timers, cx.timers.len() as u64 + 1);
                cx.after(Duration::from_secs(1), Timer::Tick);
            }
        }
    }

    fn on_signal(&mut self, _cx: &mut Ctx<'_, Timer>, signal: i32) {
        match signal {
            libc::SIGUSR1 | libc::SIGUSR2 => crate::logging::reopen(),
            libc::SIGIO => {
                let list: Vec<ConnInfo> =
                    self.conns.iter().map(|(k, p)| p.conn.info((CONN_BASE + k) as u64, "Text")).collect();
                if let Err(e) = crate::stats::conns::dump(&self.run_dir, "Register", &list) {
                    warn!("register: cannot write the connection list: {e}");
                }
            }
            s if crate::reactor::signals::is_stop_signal(s) => self.stop = true,
            _ => {}
        }
    }

    fn end_of_turn(&mut self, cx: &mut Ctx<'_, Timer>) -> bool {
        self.flush(cx);
        Slot::set(&self.stats.slot().connections, self.conns.len() as u64);
        false
    }

    fn should_stop(&self) -> bool {
        self.stop
    }
}

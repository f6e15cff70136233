//! A business worker process: asks the registers for the gateways, keeps one link to every
//! gateway (Unix socket when the gateway is on this host, TCP otherwise; a link that breaks is
//! redialled at once, then 1 s after each failure), and runs the application's `Events` for
//! every client event. On a graceful stop (reload) it drains: asks each gateway to stop routing
//! to it, handles every event already sent to it, flushes and exits.

mod fair;
mod links;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::Token;

use crate::api::ClientId;
use crate::api::context::{Context, Current, TimerRequest, WorkerInfo, WorkerTransport};
use crate::api::transport::{LocalGateways, Pkt, QueryPool};
use crate::api::{Events, Value};
use crate::config::Config;
use crate::discovery::RegisterLinks;
use crate::reactor::{Ctx, Reactor, Ready, Service, TimerId};
use crate::stats::{Slot, State, Stats};
use crate::wire::packet::{self, Packet, cmd, flag};
use crate::wire::{crc32, php, register as lines};

use links::GatewayLinks;

const REGISTER_BASE: usize = 16;
const LINK_BASE: usize = 1 << 20;
/// Bytes read from one gateway link per loop turn before the other links get theirs.
const LINK_TURN_BYTES: usize = 256 << 10;
const KEEPALIVE: Duration = Duration::from_secs(25);
/// A gateway whose link failed is dialled again after this long.
const REDIAL_AFTER: Duration = Duration::from_secs(1);
/// Largest packet accepted from a gateway.
const MAX_PACKET: usize = 64 << 20;

/// Timers of a business worker.
pub enum Timer {
    Tick,
    RegisterRetry(usize),
    GatewayRetry(SocketAddrV4),
    KeepAlive,
    User { id: u64, repeat: Option<Duration> },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    No,
    /// Since this instant, waiting for every gateway to acknowledge the drain.
    Draining(Instant),
    Now,
}

/// The gateways the registers announced.
#[derive(Default)]
struct Known {
    gateways: Vec<SocketAddrV4>,
    /// The registers answered at least once.
    answered: bool,
    /// Gateways waiting for their redial timer.
    retrying: HashSet<SocketAddrV4>,
    /// When each gateway was last redialled at once after its link broke.
    redialled: HashMap<SocketAddrV4, Instant>,
}

/// Timers the application asked for: requested during a callback, armed after it.
#[derive(Default)]
struct UserTimers {
    requests: Vec<TimerRequest>,
    next_id: u64,
    armed: HashMap<u64, TimerId>,
}

impl UserTimers {
    fn arm(&mut self, cx: &mut Ctx<'_, Timer>) {
        for req in std::mem::take(&mut self.requests) {
            match req {
                TimerRequest::Add { id, after, repeat } => {
                    let t = cx.after(after, Timer::User { id, repeat: repeat.then_some(after) });
                    self.armed.insert(id, t);
                }
                TimerRequest::Del { id } => {
                    if let Some(t) = self.armed.remove(&id) {
                        cx.timers.cancel(t);
                    }
                }
            }
        }
    }

    /// Timer `id` fired: arm it again when it repeats.
    fn fired(&mut self, cx: &mut Ctx<'_, Timer>, id: u64, repeat: Option<Duration>) {
        self.armed.remove(&id);
        if let Some(every) = repeat {
            let t = cx.after(every, Timer::User { id, repeat });
            self.armed.insert(id, t);
        }
    }
}

/// A business worker process: its links, the application and its timers.
pub struct Worker {
    name: String,
    id: u16,
    app: Box<dyn Events>,
    registers: RegisterLinks,
    known: Known,
    links: GatewayLinks,
    pool: QueryPool,
    /// crc32 of the last session this worker wrote, per client (GatewayWorker's staleness guard).
    versions: HashMap<ClientId, u32>,
    timers: UserTimers,
    stats: Stats,
    stop: Stop,
    stopped_app: bool,
    run_dir: std::path::PathBuf,
    /// Links to read again next turn, links held by a full queue.
    turns: fair::Turns,
}

/// Entry point of a business worker process.
pub fn run(cfg: &Config, id: u16, generation: u64, app: Box<dyn Events>, stats: Stats) -> io::Result<()> {
    let mut reactor = Reactor::new()?;
    reactor.watch_signals(&crate::reactor::signals::CHILD_SIGNALS)?;
    let mut worker = Worker::new(cfg, id, generation, app, stats)?;
    {
        let mut cx = reactor.ctx();
        worker.registers.dial_all(&mut cx, Timer::RegisterRetry);
        cx.after(Duration::from_secs(1), Timer::Tick);
        if cfg.register_address.iter().any(|a| !a.ip().is_loopback()) {
            cx.after(KEEPALIVE, Timer::KeepAlive);
        }
        worker.with_context(&mut cx, None, |app, ctx| app.on_worker_start(ctx));
    }
    info!("business worker {}[{id}] started", worker.name);
    reactor.run(&mut worker)
}

impl Worker {
    fn new(cfg: &Config, id: u16, generation: u64, app: Box<dyn Events>, stats: Stats) -> io::Result<Worker> {
        let w = cfg.worker.as_ref().ok_or_else(|| io::Error::other("no [worker] section"))?;
        let local = LocalGateways { lan_ip: cfg.advertise_ip, run_dir: cfg.run_dir.clone() };
        // GatewayWorker's key is `name:id`; a reload replacement runs next to the worker it
        // replaces, so it gets a key of its own (a gateway evicts the older of two equal keys).
        let worker_key = if generation == 0 {
            format!("{}:{id}", w.name)
        } else {
            format!("{}:{id}-r{generation}", w.name)
        };
        let connect_body = lines::worker_connect_body(&worker_key, &cfg.secret_key);
        Ok(Worker {
            name: w.name.clone(),
            id,
            app,
            registers: RegisterLinks::new(
                &cfg.register_address,
                REGISTER_BASE,
                lines::worker_connect(&cfg.secret_key),
                "business worker",
            ),
            known: Known::default(),
            links: GatewayLinks::new(local.clone(), connect_body, LINK_BASE),
            pool: QueryPool::new(&cfg.secret_key, w.query_timeout, Some(local)),
            versions: HashMap::new(),
            timers: UserTimers::default(),
            stats,
            stop: Stop::No,
            stopped_app: false,
            run_dir: cfg.run_dir.clone(),
            turns: fair::Turns {
                again: Vec::new(),
                held: Vec::new(),
                limit: w.send_to_gateway_buffer_size,
                share: LINK_TURN_BYTES,
            },
        })
    }

    /// Run `f` with a `Context` (current client `current`), then save a changed session
    /// and arm the timers it asked for. A panic in application code is logged and the
    /// worker goes on with the next event.
    fn with_context(
        &mut self,
        cx: &mut Ctx<'_, Timer>,
        current: Option<Current>,
        f: impl FnOnce(&mut dyn Events, &mut Context<'_>),
    ) -> Option<Current> {
        let info = WorkerInfo {
            name: &self.name,
            id: self.id,
            timers: &mut self.timers.requests,
            next_timer: &mut self.timers.next_id,
        };
        let transport = WorkerTransport { links: &mut self.links, pool: &mut self.pool };
        let mut ctx = Context::new(transport, current, info);
        let app = &mut self.app;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(app.as_mut(), &mut ctx))) {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            error!("business worker: application code panicked: {what}");
            Slot::bump(&self.stats.slot().bad_input);
        }
        let current = ctx.into_current();
        self.timers.arm(cx);
        current
    }

    // ----- registers ---------------------------------------------------------------------

    fn dial_register(&mut self, cx: &mut Ctx<'_, Timer>, i: usize) {
        if self.stop == Stop::No {
            self.registers.dial(cx, i, Timer::RegisterRetry);
        }
    }

    fn on_register_ready(&mut self, cx: &mut Ctx<'_, Timer>, i: usize, ready: Ready) {
        for line in self.registers.on_ready(cx, i, ready, Timer::RegisterRetry) {
            if let Some(list) = lines::parse_broadcast(&line) {
                self.on_addresses(cx, list);
            }
        }
    }

    /// The register sent the gateway list: dial every gateway we are not linked to.
    fn on_addresses(&mut self, cx: &mut Ctx<'_, Timer>, list: Vec<String>) {
        self.known.gateways = list.iter().filter_map(|a| a.parse().ok()).collect();
        self.known.answered = true;
        if self.stop != Stop::No {
            return;
        }
        for gw in self.known.gateways.clone() {
            if !self.links.has(gw) && !self.known.retrying.contains(&gw) {
                self.dial_gateway(cx, gw);
            }
        }
        self.update_state();
    }

    fn dial_gateway(&mut self, cx: &mut Ctx<'_, Timer>, gw: SocketAddrV4) {
        if let Err(e) = self.links.dial(cx.registry, gw) {
            warn!("business worker: cannot link to gateway {gw}: {e}; retrying in 1 s");
            self.known.retrying.insert(gw);
            cx.after(REDIAL_AFTER, Timer::GatewayRetry(gw));
        }
    }

    /// Ready = linked to every gateway the registers know.
    fn update_state(&self) {
        if self.stop != Stop::No {
            return;
        }
        let known = &self.known.gateways;
        let all =
            self.known.answered && !known.is_empty() && known.iter().all(|g| self.links.is_connected(*g));
        self.stats.slot().set_state(if all { State::Ready } else { State::Starting });
    }

    // ----- gateway links -------------------------------------------------------------------

    fn on_link_ready(&mut self, cx: &mut Ctx<'_, Timer>, key: usize, ready: Ready) {
        match self.links.on_ready(key, ready) {
            Ok(true) => {
                if let Some(gw) = self.links.addr(key) {
                    info!("business worker: linked to gateway {gw} ({})", self.links.target(key));
                }
                self.update_state();
            }
            Ok(false) => {}
            Err(e) => {
                self.link_lost(cx, key, &e.to_string());
                return;
            }
        }
        self.read_link(cx, key);
    }

    /// A link broke or its connect failed. A link that was up is redialled at once (a
    /// gateway killed and restarted by its master is listening again at once: the master holds
    /// its sockets), so that this worker's sends to the gateway's clients, once they are back,
    /// are not lost for a second; at most once a second per gateway, else after 1 s.
    fn link_lost(&mut self, cx: &mut Ctx<'_, Timer>, key: usize, why: &str) {
        let was_up = self.links.is_up(key);
        let Some(gw) = self.links.remove(cx.registry, key) else { return };
        if self.stop == Stop::No && self.known.gateways.contains(&gw) {
            let now = Instant::now();
            let recent = self.known.redialled.get(&gw).is_some_and(|t| now < *t + REDIAL_AFTER);
            if was_up && !recent {
                warn!("business worker: link to gateway {gw} lost ({why}); redialling");
                self.known.redialled.insert(gw, now);
                self.dial_gateway(cx, gw);
            } else {
                warn!("business worker: link to gateway {gw} lost ({why}); redialling in 1 s");
                self.known.retrying.insert(gw);
                cx.after(REDIAL_AFTER, Timer::GatewayRetry(gw));
            }
        } else {
            info!("business worker: link to gateway {gw} closed ({why})");
        }
        self.update_state();
    }

    /// Dispatch every complete packet buffered on link `key`.
    fn dispatch_buffered(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        let Some(mut buf) = self.links.take_inbuf(key) else { return };
        let mut used = 0;
        loop {
            match packet::decode(&buf.data()[used..], MAX_PACKET) {
                Ok(Some((p, n))) => {
                    used += n;
                    Slot::bump(&self.stats.slot().total_request);
                    self.dispatch(cx, key, &p);
                }
                Ok(None) => break,
                Err(e) => {
                    warn!("business worker: bad packet from gateway: {e}; dropping the link");
                    Slot::bump(&self.stats.slot().bad_input);
                    self.link_lost(cx, key, "bad packet");
                    return;
                }
            }
        }
        buf.consume(used);
        self.links.put_inbuf(key, buf);
    }

    fn dispatch(&mut self, cx: &mut Ctx<'_, Timer>, key: usize, p: &Packet<'_>) {
        match p.header.cmd {
            cmd::ON_CONNECT | cmd::ON_MESSAGE | cmd::ON_CLOSE | cmd::ON_WEBSOCKET_CONNECT => {
                self.client_event(cx, p)
            }
            cmd::WORKER_DRAIN => self.links.set_acked(key),
            cmd::MEMBERSHIP => self.links.on_membership(key, p),
            _ => {}
        }
    }

    /// One client event: session, Context, the application's callback, session save.
    fn client_event(&mut self, cx: &mut Ctx<'_, Timer>, p: &Packet<'_>) {
        let h = p.header;
        let id = ClientId::new(h.local_ip, h.local_port, h.connection_id);
        let remote = SocketAddrV4::new(Ipv4Addr::from(h.client_ip), h.client_port);
        let mut session = p.ext.to_vec();
        if h.cmd != cmd::ON_CLOSE {
            let crc = crc32(p.ext);
            if self.versions.get(&id).is_some_and(|v| *v != crc) {
                // Our own last write may not be in this packet yet: ask the gateway.
                session = self.fetch_session(cx, id).unwrap_or(session);
                self.versions.insert(id, crc);
            }
        }
        let binary = h.flag & flag::BINARY != 0;
        let current = Current::new(id, remote, h.gateway_port, binary, session);
        let body = p.body;
        let after = match h.cmd {
            cmd::ON_CONNECT => self.with_context(cx, Some(current), |app, ctx| app.on_connect(ctx, id)),
            cmd::ON_MESSAGE => self.with_context(cx, Some(current), |app, ctx| app.on_message(ctx, id, body)),
            cmd::ON_WEBSOCKET_CONNECT => {
                let data = if h.flag & flag::BODY_IS_SCALAR == 0 {
                    php::unserialize(body).unwrap_or(Value::Null)
                } else {
                    Value::Str(body.to_vec())
                };
                self.with_context(cx, Some(current), |app, ctx| app.on_websocket_connect(ctx, id, &data))
            }
            _ => {
                let r = self.with_context(cx, Some(current), |app, ctx| app.on_close(ctx, id));
                self.versions.remove(&id);
                return drop(r);
            }
        };
        if let Some(bytes) = after.and_then(|c| c.changed_session()) {
            let pkt = Pkt::new(cmd::SET_SESSION, id.connection_id, flag::BODY_IS_SCALAR, &bytes, b"");
            if self.links.queue_to(id.gateway(), pkt).is_ok() {
                self.versions.insert(id, crc32(&bytes));
            }
        }
    }

    fn fetch_session(&mut self, cx: &mut Ctx<'_, Timer>, id: ClientId) -> Option<Vec<u8>> {
        let mut out = None;
        self.with_context(cx, None, |_, ctx| {
            if let Ok(Some(a)) = ctx.get_session(id) {
                out = Some(if a.is_empty() { Vec::new() } else { php::serialize_array(&a) });
            }
        });
        out
    }

    // ----- stopping -----------------------------------------------------------------------

    fn begin_drain(&mut self, cx: &mut Ctx<'_, Timer>) {
        if self.stop != Stop::No {
            return;
        }
        self.stop = Stop::Draining(Instant::now());
        self.stats.slot().set_state(State::Draining);
        self.registers.close_all(cx.registry);
        let n = self.links.request_drain();
        info!("business worker {}[{}]: draining ({n} gateway links)", self.name, self.id);
    }

    fn finish(&mut self, cx: &mut Ctx<'_, Timer>) {
        if !self.stopped_app {
            self.stopped_app = true;
            self.with_context(cx, None, |app, ctx| app.on_worker_stop(ctx));
        }
        self.links.flush_blocking(Duration::from_secs(2));
        self.stop = Stop::Now;
    }
}

impl Service for Worker {
    type Timer = Timer;

    fn on_ready(&mut self, cx: &mut Ctx<'_, Timer>, token: Token, ready: Ready) {
        match token {
            Token(t) if t >= LINK_BASE => self.on_link_ready(cx, t - LINK_BASE, ready),
            // An index past the last register is ignored there.
            Token(t) if t >= REGISTER_BASE => self.on_register_ready(cx, t - REGISTER_BASE, ready),
            Token(_) => {}
        }
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_, Timer>, timer: Timer) {
        match timer {
            Timer::Tick => {
                let slot = self.stats.slot();
                slot.tick();
                Slot::set(&slot.connections, (self.links.connected() + self.registers.connected()) as u64);
                Slot::set(&slot.timers, cx.timers.len() as u64 + 1);
                cx.after(Duration::from_secs(1), Timer::Tick);
            }
            Timer::RegisterRetry(i) => self.dial_register(cx, i),
            Timer::GatewayRetry(gw) => {
                self.known.retrying.remove(&gw);
                if self.stop == Stop::No && self.known.gateways.contains(&gw) && !self.links.has(gw) {
                    self.dial_gateway(cx, gw);
                }
            }
            Timer::KeepAlive => {
                self.registers.keepalive();
                cx.after(KEEPALIVE, Timer::KeepAlive);
            }
            Timer::User { id, repeat } => {
                self.timers.fired(cx, id, repeat);
                self.with_context(cx, None, |app, ctx| app.on_timer(ctx, id));
            }
        }
    }

    fn on_signal(&mut self, cx: &mut Ctx<'_, Timer>, signal: i32) {
        if signal == libc::SIGQUIT || signal == libc::SIGUSR1 || signal == libc::SIGUSR2 {
            self.begin_drain(cx);
        } else if signal == libc::SIGIO {
            let mut list = self.links.conn_infos();
            list.extend(self.registers.conn_infos(1000));
            if let Err(e) = crate::stats::conns::dump(&self.run_dir, &self.name, &list) {
                warn!("business worker: cannot write the connection list: {e}");
            }
        } else if crate::reactor::signals::is_stop_signal(signal) {
            self.finish(cx);
        }
    }

    fn end_of_turn(&mut self, cx: &mut Ctx<'_, Timer>) -> bool {
        self.read_again(cx);
        for key in self.links.flush_dirty() {
            self.link_lost(cx, key, "write failed");
        }
        self.release_held();
        Slot::set(
            &self.stats.slot().connections,
            (self.links.connected() + self.registers.connected()) as u64,
        );
        if let Stop::Draining(since) = self.stop
            && self.links.all_acked()
        {
            let took = since.elapsed();
            info!("business worker {}[{}]: drained in {took:?}", self.name, self.id);
            self.finish(cx);
        }
        !self.turns.again.is_empty()
    }

    fn should_stop(&self) -> bool {
        self.stop == Stop::Now
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stats.slot().set_state(State::Exited);
    }
}

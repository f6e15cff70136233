//! The HTTP process (`[http]`): a process of its own, spawned and respawned by the master like
//! the register, on its own mio reactor. It serves the server API (`POST /api/<call>`, see
//! `api`), `GET /metrics`, `/healthz`, `/readyz` and the dashboard. API calls and the client
//! counts of `/metrics` wait for gateway replies without blocking the loop, each within
//! `query_timeout`.

pub mod api;
pub mod cluster;
pub mod conn;
pub mod dashboard;
pub mod metrics;
pub mod probes;
pub mod routes;

use std::io;
use std::net::SocketAddrV4;
use std::time::Duration;

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Interest, Token};
use slab::Slab;

use crate::api::transport::LocalGateways;
use crate::config::{Config, HttpConf};
use crate::reactor::{Ctx, Reactor, Ready, Service, TimerId, interrupted, would_block};
use crate::stats::conns::ConnInfo;
use crate::stats::{Shm, Slot, State, Stats, table, unix_millis};
use api::{Call, CallError, Replies, Step};
use cluster::{Cluster, Reply, Waiter};
use conn::{Conn, Limits, Parsed, Response};
use routes::Route;

const LISTENER: Token = Token(0);
const REGISTER_PING: Duration = Duration::from_secs(25);
const REDIAL: Duration = Duration::from_secs(1);

pub enum Timer {
    Tick,
    Conn(usize, u64),
    Job(usize, u64),
    Redial,
    Ping,
}

/// What a waiting request is doing.
enum Work {
    Api(Call),
    /// `/metrics`: the client count of each local gateway.
    Metrics(Vec<(SocketAddrV4, String, u16)>),
}

/// A request waiting for gateway replies.
struct Job {
    conn: usize,
    conn_serial: u64,
    serial: u64,
    keep_alive: bool,
    work: Work,
    answers: Vec<Replies>,
    /// Gateways that still owe a reply to the current query.
    owed: Vec<SocketAddrV4>,
    got: Replies,
    /// Waiting for the first gateway list.
    parked: bool,
    /// Per packet sent: was it written (`None` until every one is known).
    written: Option<Vec<bool>>,
    /// The packets sent, as known so far, and how many are still unknown.
    writes: Vec<bool>,
    unwritten: usize,
    timer: Option<TimerId>,
}

pub struct Server {
    listener: TcpListener,
    conf: HttpConf,
    cfg: Config,
    conns: Slab<Conn>,
    jobs: Slab<Job>,
    cluster: Cluster,
    stats: Stats,
    shm: Option<Shm>,
    history: dashboard::History,
    serial: u64,
    replies: Vec<Reply>,
    stop: bool,
}

/// Entry point of the HTTP process.
pub fn run(cfg: &Config, listener: TcpListener, stats: Stats) -> io::Result<()> {
    let conf = cfg.http.clone().ok_or_else(|| io::Error::other("no [http] section"))?;
    let mut reactor = Reactor::new()?;
    reactor.watch_signals(&crate::reactor::signals::CHILD_SIGNALS)?;
    let local = LocalGateways { lan_ip: cfg.advertise_ip, run_dir: cfg.run_dir.clone() };
    let mut s = Server {
        listener,
        conf,
        cfg: cfg.clone(),
        conns: Slab::new(),
        jobs: Slab::new(),
        cluster: Cluster::new(cfg.register_address.clone(), &cfg.secret_key, local),
        stats,
        shm: Shm::open(&cfg.stats_path(), false).ok(),
        history: dashboard::History::default(),
        serial: 0,
        replies: Vec::new(),
        stop: false,
    };
    {
        let mut cx = reactor.ctx();
        cx.registry.register(&mut s.listener, LISTENER, Interest::READABLE)?;
        s.cluster.connect_register(cx.registry);
        cx.after(Duration::from_secs(1), Timer::Tick);
        cx.after(REGISTER_PING, Timer::Ping);
    }
    s.stats.slot().set_state(State::Ready);
    info!("http listening on {}", s.listener.local_addr()?);
    reactor.run(&mut s)
}

impl Server {
    fn limits(&self) -> Limits {
        Limits { max_header: self.conf.max_header_size, max_body: self.conf.max_body_size }
    }

    /// Accept while below `max_connections`; at the limit the rest wait in the backlog until
    /// a connection closes (counted once per listener wake-up at the limit).
    fn accept(&mut self, cx: &mut Ctx<'_, Timer>) {
        if self.conns.len() >= self.conf.max_connections {
            Slot::bump(&self.stats.slot().limit_conn);
            return;
        }
        while self.conns.len() < self.conf.max_connections {
            match self.listener.accept() {
                Ok((mut io, _)) => {
                    // Responses are small and each waits on a request: no Nagle delay.
                    let _ = io.set_nodelay(true);
                    let key = self.conns.vacant_key();
                    if cx
                        .registry
                        .register(&mut io, Token(key + 1), Interest::READABLE | Interest::WRITABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.serial += 1;
                    self.conns.insert(Conn::new(io, self.serial));
                    // A new connection must send its first request within the header timeout.
                    self.conns[key].request_started = Some(cx.now);
                    self.arm(cx, key);
                }
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => {}
                Err(e) => {
                    warn!("http: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Arm the connection's timer for its current deadline (request or idle).
    fn arm(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        let c = &mut self.conns[key];
        if let Some(t) = c.timer.take() {
            cx.timers.cancel(t);
        }
        let after =
            if c.request_started.is_some() { self.conf.header_timeout } else { self.conf.idle_timeout };
        if !after.is_zero() {
            c.timer = Some(cx.after(after, Timer::Conn(key, c.serial)));
        }
    }

    fn on_conn_timer(&mut self, key: usize, serial: u64) {
        let Some(c) = self.conns.get_mut(key).filter(|c| c.serial == serial) else { return };
        c.timer = None;
        if c.busy {
            return;
        }
        let slot = self.stats.slot();
        if c.request_started.is_some() && !c.inb.is_empty() {
            Slot::bump(&slot.limit_handshake);
            let r =
                Response::error(408, "request_timeout", "the request did not arrive within header_timeout");
            c.respond(&r, false);
        } else {
            Slot::bump(&slot.limit_idle);
            c.closing = true;
            c.out.clear();
        }
    }

    fn on_conn_ready(&mut self, cx: &mut Ctx<'_, Timer>, key: usize, ready: Ready) {
        let Some(c) = self.conns.get_mut(key) else { return };
        c.ready.insert(ready);
        if !ready.contains(Ready::READABLE) {
            return;
        }
        self.read_and_process(cx, key);
    }

    /// Read what `key` sent (up to one largest request at a time) and handle it; reads again
    /// while it stopped at that cap and handling made room.
    fn read_and_process(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        let cap = self.conf.max_header_size + self.conf.max_body_size;
        loop {
            let Some(c) = self.conns.get_mut(key) else { return };
            let before = c.inb.len();
            let open = cluster::read_all(&mut c.io, &mut c.inb, cap);
            let n = (c.inb.len() - before) as u64;
            c.bytes_read += n;
            Slot::add(&self.stats.slot().bytes_read, n);
            let capped = open && c.inb.len() > cap;
            self.process(cx, key);
            let c = &mut self.conns[key];
            if !open {
                // The peer is gone or done sending: answer what it sent, then close.
                c.closing = true;
            }
            if !capped || c.busy || c.closing {
                return;
            }
        }
    }

    /// Handle every complete request received on `key`, in order, while none is waiting.
    fn process(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        let limits = self.limits();
        loop {
            let c = &mut self.conns[key];
            if c.busy || c.closing || c.inb.is_empty() {
                return;
            }
            match conn::parse(c.inb.data(), &limits) {
                Parsed::Partial { expect_continue } => {
                    if expect_continue && !c.continue_sent {
                        c.out.extend(conn::CONTINUE);
                        c.continue_sent = true;
                    }
                    if c.request_started.is_none() {
                        c.request_started = Some(cx.now);
                        self.arm(cx, key);
                    }
                    return;
                }
                Parsed::Error(status, msg) => {
                    let slot = self.stats.slot();
                    Slot::bump(if matches!(status, 413 | 431) { &slot.limit_size } else { &slot.bad_input });
                    let code = match status {
                        413 => "body_too_large",
                        431 => "head_too_large",
                        411 => "length_required",
                        _ => "bad_request",
                    };
                    c.respond(&Response::error(status, code, &msg), false);
                    return;
                }
                Parsed::Complete(req, n) => {
                    c.inb.consume(n);
                    c.continue_sent = false;
                    c.request_started = None;
                    Slot::bump(&self.stats.slot().total_request);
                    self.handle(cx, key, req);
                }
            }
        }
    }

    fn handle(&mut self, cx: &mut Ctx<'_, Timer>, key: usize, req: conn::Request) {
        let keep_alive = req.keep_alive;
        let res = match routes::route(&req.method, &req.path) {
            Err(r) => Some(r),
            Ok(Route::Api(name)) => self.api(cx, key, &req, &name),
            Ok(Route::Metrics) => self.start_metrics(cx, key, keep_alive),
            Ok(Route::Healthz) => Some(self.probe(probes::health)),
            Ok(Route::Readyz) => Some(self.probe(probes::ready)),
            Ok(Route::Dashboard) => Some(Response::new(200, "text/html; charset=utf-8", dashboard::PAGE)),
            Ok(Route::DashboardJson) => Some(match self.snapshot() {
                Some(s) => Response::new(200, "application/json", self.history.json(&s)),
                None => Response::error(503, "no_statistics", "the statistics file cannot be read"),
            }),
        };
        // `None`: a job, answered (maybe already) by `finish`.
        if let Some(r) = res {
            if r.status >= 400 && r.status < 500 {
                Slot::bump(&self.stats.slot().bad_input);
            }
            self.conns[key].respond(&r, keep_alive);
            self.arm(cx, key);
        }
    }

    fn snapshot(&mut self) -> Option<table::Snapshot> {
        if self.shm.is_none() {
            self.shm = Shm::open(&self.cfg.stats_path(), false).ok();
        }
        // The master is our parent. (The header's pid is written before a daemon detaches,
        // so it names the process that exited after the fork.)
        // SAFETY: getppid has no preconditions.
        let master = unsafe { libc::getppid() } as u32;
        self.shm.as_ref().map(table::snapshot).map(|s| table::Snapshot { master_pid: master, ..s })
    }

    fn probe(&mut self, f: fn(&Config, &table::Snapshot) -> Result<String, String>) -> Response {
        let verdict = match self.snapshot() {
            Some(s) => f(&self.cfg, &s),
            None => Err("the statistics file cannot be read".into()),
        };
        match verdict {
            Ok(text) => Response::new(200, "text/plain; charset=utf-8", text + "\n"),
            Err(why) => Response::new(503, "text/plain; charset=utf-8", why + "\n"),
        }
    }

    /// `POST /api/<name>`: refused at once, or a job waiting for gateways (`None`).
    fn api(
        &mut self,
        cx: &mut Ctx<'_, Timer>,
        key: usize,
        req: &conn::Request,
        name: &str,
    ) -> Option<Response> {
        if !routes::authorized(&self.conf.api_key, req.authorization.as_deref()) {
            let r = Response::error(
                401,
                "unauthorized",
                "missing or wrong `Authorization: Bearer <GW_HTTP_API_KEY>`",
            );
            return Some(r.with_header("WWW-Authenticate", "Bearer"));
        }
        match Call::parse(name, &req.body) {
            Ok(call) => self.start_job(cx, key, req.keep_alive, Work::Api(call)),
            Err(e) => Some(error_response(&e)),
        }
    }

    fn start_metrics(&mut self, cx: &mut Ctx<'_, Timer>, key: usize, keep_alive: bool) -> Option<Response> {
        let gws = metrics::local_gateways(&self.cfg);
        self.start_job(cx, key, keep_alive, Work::Metrics(gws))
    }

    fn start_job(
        &mut self,
        cx: &mut Ctx<'_, Timer>,
        key: usize,
        keep_alive: bool,
        work: Work,
    ) -> Option<Response> {
        self.serial += 1;
        let job = Job {
            conn: key,
            conn_serial: self.conns[key].serial,
            serial: self.serial,
            keep_alive,
            work,
            answers: Vec::new(),
            owed: Vec::new(),
            got: Vec::new(),
            parked: false,
            written: None,
            writes: Vec::new(),
            unwritten: 0,
            timer: None,
        };
        let id = self.jobs.insert(job);
        // Later requests on this connection wait for this one's answer.
        self.conns[key].busy = true;
        let t = cx.after(self.conf.query_timeout, Timer::Job(id, self.serial));
        self.jobs[id].timer = Some(t);
        self.advance(cx, id);
        None
    }

    /// Run job `id` as far as it goes without waiting.
    fn advance(&mut self, cx: &mut Ctx<'_, Timer>, id: usize) {
        loop {
            let job = &mut self.jobs[id];
            job.parked = false;
            let step = match &job.work {
                Work::Api(call) => {
                    api::step(call, self.cluster.gateways.as_deref(), &job.answers, job.written.as_deref())
                }
                Work::Metrics(gws) if job.answers.is_empty() => metrics::client_count_query(gws),
                Work::Metrics(_) => Step::Done { result: Ok(serde_json::Value::Null), sends: Vec::new() },
            };
            let waiting = match step {
                Step::NeedGateways => {
                    job.parked = true;
                    return;
                }
                Step::Query { gateways, packet } => self.send_query(cx, id, gateways, &packet),
                Step::Done { result, sends } if sends.is_empty() => return self.finish(cx, id, result),
                Step::Done { sends, .. } => self.send_packets(cx, id, sends),
            };
            if waiting {
                return;
            }
        }
    }

    /// Send a query to `gateways` for job `id`; false when none could be asked.
    fn send_query(
        &mut self,
        cx: &mut Ctx<'_, Timer>,
        id: usize,
        gateways: Vec<SocketAddrV4>,
        packet: &[u8],
    ) -> bool {
        let waiter = Waiter { job: id, serial: self.jobs[id].serial, send: None };
        let mut owed = Vec::new();
        for gw in gateways {
            match self.cluster.send(cx.registry, gw, packet, Some(waiter)) {
                Ok(()) => owed.push(gw),
                Err(e) => warn!("http: cannot reach gateway {gw}: {e}"),
            }
        }
        let job = &mut self.jobs[id];
        if owed.is_empty() {
            job.answers.push(Vec::new());
            return false;
        }
        job.owed = owed;
        true
    }

    /// Send the final run's packets; the job goes on once each is written or lost. False when
    /// none could be queued.
    fn send_packets(
        &mut self,
        cx: &mut Ctx<'_, Timer>,
        id: usize,
        sends: Vec<(SocketAddrV4, Vec<u8>)>,
    ) -> bool {
        let serial = self.jobs[id].serial;
        let writes = vec![false; sends.len()];
        let mut unwritten = 0;
        for (i, (gw, packet)) in sends.into_iter().enumerate() {
            let waiter = Waiter { job: id, serial, send: Some(i) };
            match self.cluster.send(cx.registry, gw, &packet, Some(waiter)) {
                Ok(()) => unwritten += 1,
                Err(e) => warn!("http: cannot reach gateway {gw}: {e}"),
            }
        }
        let job = &mut self.jobs[id];
        job.unwritten = unwritten;
        if unwritten == 0 {
            job.written = Some(writes);
            return false;
        }
        job.writes = writes;
        true
    }

    /// Answer job `id` and forget it.
    fn finish(&mut self, cx: &mut Ctx<'_, Timer>, id: usize, result: Result<serde_json::Value, CallError>) {
        let job = self.jobs.remove(id);
        if let Some(t) = job.timer {
            cx.timers.cancel(t);
        }
        let r = match (&job.work, result) {
            (Work::Metrics(gws), _) => self.metrics_response(gws, job.answers.first()),
            (Work::Api(_), Ok(v)) => Response::json(200, &serde_json::json!({"ok": true, "result": v})),
            (Work::Api(_), Err(e)) => {
                if e.status < 500 {
                    Slot::bump(&self.stats.slot().bad_input);
                }
                error_response(&e)
            }
        };
        let Some(c) = self.conns.get_mut(job.conn).filter(|c| c.serial == job.conn_serial) else { return };
        c.respond(&r, job.keep_alive);
        self.arm(cx, job.conn);
        self.read_and_process(cx, job.conn);
    }

    fn metrics_response(
        &mut self,
        gws: &[(SocketAddrV4, String, u16)],
        replies: Option<&Replies>,
    ) -> Response {
        let Some(s) = self.snapshot() else {
            return Response::error(503, "no_statistics", "the statistics file cannot be read");
        };
        let mut clients = Vec::new();
        for (gw, payload) in replies.into_iter().flatten() {
            let n = crate::wire::php::unserialize(payload).ok().and_then(|v| v.as_int());
            if let (Some((_, name, id)), Some(n)) = (gws.iter().find(|g| g.0 == *gw), n) {
                clients.push((name.clone(), *id, n.max(0) as u64));
            }
        }
        Response::new(200, "text/plain; version=0.0.4; charset=utf-8", metrics::render(&s, &clients))
    }

    fn on_reply(&mut self, cx: &mut Ctx<'_, Timer>, r: Reply) {
        let w = r.waiter;
        let Some(job) = self.jobs.get_mut(w.job).filter(|j| j.serial == w.serial) else { return };
        if let Some(i) = w.send {
            if job.unwritten == 0 || job.written.is_some() {
                return;
            }
            job.writes[i] = r.payload.is_some();
            job.unwritten -= 1;
            if job.unwritten == 0 {
                job.written = Some(std::mem::take(&mut job.writes));
                self.advance(cx, w.job);
            }
            return;
        }
        let Some(pos) = job.owed.iter().position(|g| *g == r.gateway) else { return };
        job.owed.swap_remove(pos);
        if let Some(p) = r.payload {
            job.got.push((r.gateway, p));
        }
        if job.owed.is_empty() {
            let got = std::mem::take(&mut job.got);
            job.answers.push(got);
            self.advance(cx, w.job);
        }
    }

    /// The job's deadline: answer with what arrived (gateways that did not answer are left
    /// out, as GatewayClient does), or 503 when no gateway list ever came.
    fn on_job_timer(&mut self, cx: &mut Ctx<'_, Timer>, id: usize, serial: u64) {
        let Some(job) = self.jobs.get_mut(id).filter(|j| j.serial == serial) else { return };
        job.timer = None;
        if job.parked {
            let e = CallError::new(503, "no_gateway", "no register answered with the gateway list in time");
            return self.finish(cx, id, Err(e));
        }
        if job.unwritten > 0 {
            // Packets not written in time count as not sent.
            warn!("http: {} packets not written to gateways within query_timeout", job.unwritten);
            job.unwritten = 0;
            job.written = Some(std::mem::take(&mut job.writes));
            return self.advance(cx, id);
        }
        for gw in &job.owed {
            warn!("http: no reply from gateway {gw} within query_timeout");
        }
        job.owed.clear();
        let got = std::mem::take(&mut job.got);
        job.answers.push(got);
        self.advance(cx, id);
    }

    /// SIGIO: the `connections` command wants our list.
    fn dump_connections(&self) {
        let addr = |a: io::Result<std::net::SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let mut list: Vec<ConnInfo> = self
            .conns
            .iter()
            .map(|(k, c)| ConnInfo {
                id: k as u64 + 1,
                protocol: "Http",
                transport: "tcp",
                recv_q: c.inb.len(),
                send_q: c.out.len(),
                bytes_read: c.bytes_read,
                bytes_written: c.bytes_written,
                state: if c.closing { "CLOSING" } else { "ESTABLISHED" },
                local: addr(c.io.local_addr()),
                remote: addr(c.io.peer_addr()),
            })
            .collect();
        list.extend(self.cluster.conn_infos());
        if let Err(e) = crate::stats::conns::dump(&self.cfg.run_dir, "Http", &list) {
            warn!("http: cannot write the connection list: {e}");
        }
    }

    fn tick(&mut self, cx: &mut Ctx<'_, Timer>) {
        if let Some(s) = self.snapshot() {
            self.history.sample(&s, unix_millis());
        }
        let slot = self.stats.slot();
        slot.tick();
        Slot::set(&slot.connections, (self.conns.len() + self.cluster.connections()) as u64);
        Slot::set(&slot.timers, cx.timers.len() as u64 + 1);
        cx.after(Duration::from_secs(1), Timer::Tick);
    }

    /// Write what connections queued; drop the ones that are done.
    fn flush(&mut self, cx: &mut Ctx<'_, Timer>) {
        let mut gone = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            if !c.out.is_empty() {
                let before = c.out.len();
                match c.out.write_to(&mut c.io) {
                    Ok(()) => {}
                    Err(e) if would_block(&e) => c.ready.remove(Ready::WRITABLE),
                    Err(_) => {
                        c.out.clear();
                        c.closing = true;
                    }
                }
                let n = (before - c.out.len()) as u64;
                c.bytes_written += n;
                Slot::add(&self.stats.slot().bytes_written, n);
            }
            if c.closing && c.out.is_empty() && !c.busy {
                gone.push(key);
            }
        }
        let freed = !gone.is_empty();
        for key in gone {
            let mut c = self.conns.remove(key);
            if let Some(t) = c.timer.take() {
                cx.timers.cancel(t);
            }
            let _ = cx.registry.deregister(&mut c.io);
        }
        if freed && self.conns.len() < self.conf.max_connections {
            self.accept(cx);
        }
    }
}

fn error_response(e: &CallError) -> Response {
    Response::error(e.status, e.code, &e.message)
}

impl Service for Server {
    type Timer = Timer;

    fn on_ready(&mut self, cx: &mut Ctx<'_, Timer>, token: Token, ready: Ready) {
        if token == LISTENER {
            return self.accept(cx);
        }
        if token == cluster::REGISTER {
            if !self.cluster.on_register_ready(cx.registry, ready) {
                cx.after(REDIAL, Timer::Redial);
            }
            return;
        }
        if token.0 >= cluster::LINKS {
            let mut replies = std::mem::take(&mut self.replies);
            self.cluster.on_link_ready(cx.registry, token, ready, &mut replies);
            for r in replies.drain(..) {
                self.on_reply(cx, r);
            }
            self.replies = replies;
            return;
        }
        self.on_conn_ready(cx, token.0 - 1, ready);
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_, Timer>, timer: Timer) {
        match timer {
            Timer::Tick => self.tick(cx),
            Timer::Conn(key, serial) => self.on_conn_timer(key, serial),
            Timer::Job(id, serial) => self.on_job_timer(cx, id, serial),
            Timer::Redial => {
                self.cluster.connect_register(cx.registry);
                if !self.cluster.has_register() {
                    cx.after(REDIAL, Timer::Redial);
                }
            }
            Timer::Ping => {
                self.cluster.ping_register();
                cx.after(REGISTER_PING, Timer::Ping);
            }
        }
    }

    fn on_signal(&mut self, _cx: &mut Ctx<'_, Timer>, signal: i32) {
        match signal {
            libc::SIGUSR1 | libc::SIGUSR2 => crate::logging::reopen(),
            libc::SIGIO => self.dump_connections(),
            s if crate::reactor::signals::is_stop_signal(s) || s == libc::SIGQUIT => self.stop = true,
            _ => {}
        }
    }

    fn end_of_turn(&mut self, cx: &mut Ctx<'_, Timer>) -> bool {
        if std::mem::take(&mut self.cluster.changed) {
            let parked: Vec<usize> = self.jobs.iter().filter(|(_, j)| j.parked).map(|(k, _)| k).collect();
            for id in parked {
                self.advance(cx, id);
            }
        }
        loop {
            let mut replies = std::mem::take(&mut self.replies);
            self.cluster.flush(cx.registry, &mut replies);
            let done = replies.is_empty();
            for r in replies.drain(..) {
                self.on_reply(cx, r);
            }
            self.replies = replies;
            if done {
                break;
            }
        }
        self.flush(cx);
        false
    }

    fn should_stop(&self) -> bool {
        self.stop
    }
}

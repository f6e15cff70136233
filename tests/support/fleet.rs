//! A fleet of accounted clients (websocket, text and frame) against a cluster running the
//! `probe` app, for tests that change the cluster under load (`tests/upgrade.rs`).
//!
//! Client `i` connects to `ports[i % ports.len()]`, binds uid `u<i>`, joins group
//! `g<i % groups>` (and `tens` when `i % 10 == 0`), sets its session, then sends one message
//! every `period`. Message `k` of client `i` is an echo (`E<k>` comes back to it), or every
//! `push_every`-th one a push its business worker makes to a group or to a uid (`P<i>.<k>`
//! reaches every member, or the uid's client). A `GatewayClient` pushes `G<n>` to groups
//! and uids meanwhile. Every client checks its echoes come back in order, once each; at the
//! end every push must have reached each of its recipients exactly once, in the order its
//! source sent them. A client connection the server closes, a reply out of order or
//! unexpected, or a lost or duplicated message is a failure.
//!
//! A few threads drive every client, on non-blocking sockets polled with mio (a thousand
//! clients need no thousand threads).
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gatewayworker::api::GatewayClient;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value as Json, json};
use tungstenite::{Message, WebSocket};

/// A client protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Ws,
    Text,
    Frame,
}

/// What a fleet does.
#[derive(Clone, Debug)]
pub struct Plan {
    pub clients: usize,
    /// (protocol, port) of the gateways, clients spread over them in turn.
    pub ports: Vec<(Proto, u16)>,
    pub groups: usize,
    /// Time between two messages of one client.
    pub period: Duration,
    /// One message in this many is a push (group and uid in turn); 0: echoes only.
    pub push_every: u64,
    /// Client threads.
    pub drivers: usize,
    /// The register a `GatewayClient` asks, and the time between two of its pushes; none:
    /// no `GatewayClient` pushes.
    pub api: Option<(u16, Duration)>,
    /// Echoes one client may have unanswered before it waits.
    pub window: usize,
}

impl Plan {
    pub fn new(clients: usize, ports: Vec<(Proto, u16)>) -> Plan {
        Plan {
            clients,
            ports,
            groups: 25.min(clients.max(1)),
            period: Duration::from_millis(200),
            push_every: 10,
            drivers: 4.min(clients.max(1)),
            api: None,
            window: 64,
        }
    }

    pub fn uid(i: usize) -> String {
        format!("u{i}")
    }

    pub fn group_of(&self, i: usize) -> String {
        format!("g{}", i % self.groups)
    }

    /// The clients a push reaches.
    fn recipients(&self, t: &Target) -> Vec<usize> {
        match t {
            Target::Uid(j) => vec![*j],
            Target::Group(g) => (0..self.clients).filter(|i| i % self.groups == *g).collect(),
        }
    }

    /// Every group a client is in, with its members (what the cluster must report).
    pub fn memberships(&self) -> BTreeMap<String, Vec<usize>> {
        let mut m: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for i in 0..self.clients {
            m.entry(self.group_of(i)).or_default().push(i);
            if i.is_multiple_of(10) {
                m.entry("tens".into()).or_default().push(i);
            }
        }
        m
    }

    /// The session client `i` sets.
    pub fn session(&self, i: usize) -> Json {
        let proto = self.ports[i % self.ports.len()].0;
        json!({"i": i, "name": format!("client-{i}"), "proto": format!("{proto:?}"), "tags": ["a", i % 3]})
    }
}

/// Where a push goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Uid(usize),
    Group(usize),
}

const SETUP: u8 = 0;
const LOAD: u8 = 1;
/// Not sending for a while (`pause`); the clients stay connected and keep reading.
const PAUSE: u8 = 2;
const QUIET: u8 = 3;
const FINAL: u8 = 4;
const STOP: u8 = 5;

/// Counters every thread of a fleet updates.
#[derive(Default)]
struct Shared {
    phase: AtomicU8,
    ready: AtomicUsize,
    finals: AtomicUsize,
    dead: AtomicUsize,
    echo_sent: AtomicU64,
    echo_got: AtomicU64,
    push_expected: AtomicU64,
    push_got: AtomicU64,
    failures: AtomicU64,
    max_rtt_us: AtomicU64,
    /// The phase each client thread last acted on.
    seen: Vec<AtomicU8>,
    /// The client_id each client got at its setup.
    ids: Mutex<Vec<Option<String>>>,
    /// The first failures, for the panic message.
    log: Mutex<Vec<String>>,
    started: Option<Instant>,
}

impl Shared {
    fn fail(&self, what: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap();
        if log.len() < 40 {
            let at = self.started.map_or(0.0, |s| s.elapsed().as_secs_f64());
            log.push(format!("{at:.3}s {what}"));
        }
    }

    fn phase(&self) -> u8 {
        self.phase.load(Ordering::Acquire)
    }
}

/// One client connection, non-blocking.
enum Conn {
    Ws(Box<WebSocket<TcpStream>>),
    Raw { s: TcpStream, rbuf: Vec<u8>, wbuf: Vec<u8>, frame: bool },
}

fn would_block(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted)
}

impl Conn {
    fn connect(proto: Proto, port: u16) -> Result<Conn, String> {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(20))).map_err(|e| e.to_string())?;
        let conn = match proto {
            Proto::Ws => {
                let (ws, _) = tungstenite::client(format!("ws://127.0.0.1:{port}/"), s)
                    .map_err(|e| format!("handshake: {e}"))?;
                ws.get_ref().set_nonblocking(true).map_err(|e| e.to_string())?;
                Conn::Ws(Box::new(ws))
            }
            Proto::Text | Proto::Frame => {
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                Conn::Raw { s, rbuf: Vec::new(), wbuf: Vec::new(), frame: proto == Proto::Frame }
            }
        };
        Ok(conn)
    }

    fn fd(&self) -> i32 {
        match self {
            Conn::Ws(ws) => ws.get_ref().as_raw_fd(),
            Conn::Raw { s, .. } => s.as_raw_fd(),
        }
    }

    /// Queue `msg` and write what the socket takes.
    fn send(&mut self, msg: &str) -> Result<(), String> {
        match self {
            Conn::Ws(ws) => match ws.write(Message::text(msg)) {
                Ok(()) => {}
                Err(tungstenite::Error::Io(e)) if would_block(&e) => {}
                Err(e) => return Err(format!("send: {e}")),
            },
            Conn::Raw { wbuf, frame, .. } => {
                if *frame {
                    wbuf.extend_from_slice(&((msg.len() + 4) as u32).to_be_bytes());
                    wbuf.extend_from_slice(msg.as_bytes());
                } else {
                    wbuf.extend_from_slice(msg.as_bytes());
                    wbuf.push(b'\n');
                }
            }
        }
        self.flush()
    }

    /// Write what is queued, as far as the socket takes it.
    fn flush(&mut self) -> Result<(), String> {
        match self {
            Conn::Ws(ws) => match ws.flush() {
                Ok(()) => Ok(()),
                Err(tungstenite::Error::Io(e)) if would_block(&e) => Ok(()),
                Err(e) => Err(format!("flush: {e}")),
            },
            Conn::Raw { s, wbuf, .. } => {
                while !wbuf.is_empty() {
                    match s.write(wbuf) {
                        Ok(0) => return Err("write: 0 bytes".into()),
                        Ok(n) => drop(wbuf.drain(..n)),
                        Err(e) if would_block(&e) => break,
                        Err(e) => return Err(format!("write: {e}")),
                    }
                }
                Ok(())
            }
        }
    }

    /// Every message that can be read now; an error when the connection is closed.
    fn read(&mut self, out: &mut Vec<String>) -> Result<(), String> {
        match self {
            Conn::Ws(ws) => loop {
                match ws.read() {
                    Ok(Message::Text(t)) => out.push(t.to_string()),
                    Ok(Message::Binary(b)) => out.push(String::from_utf8_lossy(&b).into_owned()),
                    Ok(Message::Close(f)) => return Err(format!("closed by the server: {f:?}")),
                    Ok(_) => {}
                    Err(tungstenite::Error::Io(e)) if would_block(&e) => return Ok(()),
                    Err(e) => return Err(format!("read: {e}")),
                }
            },
            Conn::Raw { s, rbuf, frame, .. } => {
                let mut tmp = [0u8; 65536];
                let closed = loop {
                    match s.read(&mut tmp) {
                        Ok(0) => break Some("closed by the server (EOF)".to_string()),
                        Ok(n) => rbuf.extend_from_slice(&tmp[..n]),
                        Err(e) if would_block(&e) => break None,
                        Err(e) => break Some(format!("read: {e}")),
                    }
                };
                if *frame {
                    while rbuf.len() >= 4 {
                        let len = u32::from_be_bytes([rbuf[0], rbuf[1], rbuf[2], rbuf[3]]) as usize;
                        if len < 4 {
                            return Err(format!("bad frame length {len}"));
                        }
                        if rbuf.len() < len {
                            break;
                        }
                        let f: Vec<u8> = rbuf.drain(..len).collect();
                        out.push(String::from_utf8_lossy(&f[4..]).into_owned());
                    }
                } else {
                    while let Some(n) = rbuf.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = rbuf.drain(..=n).collect();
                        out.push(String::from_utf8_lossy(&line[..n]).into_owned());
                    }
                }
                closed.map_or(Ok(()), Err)
            }
        }
    }
}

/// What one client did and got.
#[derive(Default)]
pub struct Report {
    pub i: usize,
    pub id: Option<String>,
    /// The client_id `whoami` gave at the end.
    pub final_id: Option<String>,
    pub failures: Vec<String>,
    /// Why its connection ended, if it did.
    pub died: Option<String>,
    pub echoes: u64,
    /// Echoes that came before an earlier one, and echoes not expected (a duplicate).
    pub echo_reordered: u64,
    pub echo_unexpected: u64,
    /// Echoes still unanswered at the end.
    pub unanswered: usize,
    pub pushes_sent: Vec<(u64, Target)>,
    /// Pushes received, by source client: their message numbers in arrival order.
    pub got_push: HashMap<usize, Vec<u64>>,
    /// `GatewayClient` pushes received, in arrival order.
    pub got_api: Vec<u64>,
    pub max_rtt: Duration,
}

struct Client {
    r: Report,
    conn: Option<Conn>,
    next_seq: u64,
    next_send: Instant,
    pending: VecDeque<(u64, Instant)>,
    final_sent: bool,
}

impl Client {
    fn fail(&mut self, shared: &Shared, what: String) {
        let what = format!("client {} ({}): {what}", self.r.i, self.r.id.as_deref().unwrap_or("?"));
        shared.fail(what.clone());
        self.r.failures.push(what);
    }

    /// The connection failed: it is gone for the rest of the run.
    fn died(&mut self, shared: &Shared, why: String) {
        if self.conn.take().is_some() {
            shared.dead.fetch_add(1, Ordering::Relaxed);
            self.r.died = Some(why.clone());
            self.fail(shared, why);
        }
    }

    fn send(&mut self, shared: &Shared, msg: &str) {
        if let Some(c) = self.conn.as_mut()
            && let Err(e) = c.send(msg)
        {
            self.died(shared, e);
        }
    }

    fn setup(&mut self, plan: &Plan, shared: &Shared) {
        let i = self.r.i;
        let mut msgs = vec![
            json!({"op": "bind_uid", "uid": Plan::uid(i), "quiet": true}),
            json!({"op": "join_group", "group": plan.group_of(i), "quiet": true}),
        ];
        if i.is_multiple_of(10) {
            msgs.push(json!({"op": "join_group", "group": "tens", "quiet": true}));
        }
        msgs.push(json!({"op": "set_session", "session": plan.session(i), "quiet": true}));
        msgs.push(json!({"op": "whoami", "tag": "setup"}));
        for m in msgs {
            self.send(shared, &m.to_string());
        }
    }

    /// Send the next message of the load.
    fn send_next(&mut self, plan: &Plan, shared: &Shared, now: Instant) {
        let (i, k) = (self.r.i, self.next_seq);
        self.next_seq += 1;
        let every = plan.push_every;
        // Clients take turns: a push from some client every `period / push_every`.
        let turn = k + i as u64;
        let msg = if every > 0 && turn % every == every - 1 {
            let target = if (turn / every).is_multiple_of(2) {
                Target::Group((i + k as usize) % plan.groups)
            } else {
                Target::Uid((i * 7 + k as usize) % plan.clients)
            };
            self.r.pushes_sent.push((k, target));
            let n = plan.recipients(&target).len() as u64;
            shared.push_expected.fetch_add(n, Ordering::Relaxed);
            let body = format!("P{i}.{k}");
            match target {
                Target::Group(g) => {
                    json!({"op": "send_to_group", "groups": [format!("g{g}")], "msg": body, "quiet": true})
                }
                Target::Uid(j) => {
                    json!({"op": "send_to_uid", "uids": [Plan::uid(j)], "msg": body, "quiet": true})
                }
            }
        } else {
            self.pending.push_back((k, now));
            shared.echo_sent.fetch_add(1, Ordering::Relaxed);
            json!({"op": "send_to_current_client", "msg": format!("E{k}"), "quiet": true})
        };
        self.send(shared, &msg.to_string());
    }

    /// Read what arrived and write what waits.
    fn pump(&mut self, shared: &Shared) {
        let Some(conn) = self.conn.as_mut() else { return };
        let mut got = Vec::new();
        let read = conn.read(&mut got);
        for m in got {
            self.take(shared, &m);
        }
        if let Err(e) = read {
            return self.died(shared, e);
        }
        if let Some(c) = self.conn.as_mut()
            && let Err(e) = c.flush()
        {
            self.died(shared, e);
        }
    }

    fn take(&mut self, shared: &Shared, m: &str) {
        if let Some(k) = m.strip_prefix('E') {
            let k: u64 = k.parse().unwrap_or(u64::MAX);
            let Some(pos) = self.pending.iter().position(|(w, _)| *w == k) else {
                self.r.echo_unexpected += 1;
                return self.fail(shared, format!("echo E{k} unexpected (a duplicate?)"));
            };
            if pos > 0 {
                self.r.echo_reordered += 1;
                let first = self.pending[0].0;
                self.fail(shared, format!("echo E{k} came before E{first}: order not kept"));
            }
            let (_, at) = self.pending.remove(pos).unwrap();
            let rtt = at.elapsed();
            self.r.max_rtt = self.r.max_rtt.max(rtt);
            shared.max_rtt_us.fetch_max(rtt.as_micros() as u64, Ordering::Relaxed);
            self.r.echoes += 1;
            shared.echo_got.fetch_add(1, Ordering::Relaxed);
        } else if let Some(rest) = m.strip_prefix('P') {
            let parsed = rest.split_once('.').and_then(|(s, k)| Some((s.parse().ok()?, k.parse().ok()?)));
            match parsed {
                Some((src, k)) => {
                    self.r.got_push.entry(src).or_default().push(k);
                    shared.push_got.fetch_add(1, Ordering::Relaxed);
                }
                None => self.fail(shared, format!("bad push {m:?}")),
            }
        } else if let Some(n) = m.strip_prefix('G') {
            match n.parse() {
                Ok(n) => {
                    self.r.got_api.push(n);
                    shared.push_got.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => self.fail(shared, format!("bad GatewayClient push {m:?}")),
            }
        } else if m.starts_with('{') {
            self.control(shared, m);
        } else {
            self.fail(shared, format!("unexpected message {m:?}"));
        }
    }

    /// A reply to a tagged probe command.
    fn control(&mut self, shared: &Shared, m: &str) {
        let j: Json = serde_json::from_str(m).unwrap_or(Json::Null);
        if let Some(e) = j.get("err") {
            return self.fail(shared, format!("probe error: {e} in {m}"));
        }
        let id = j["ok"].as_str().map(str::to_string);
        match j["tag"].as_str() {
            Some("setup") if self.r.id.is_none() && id.is_some() => {
                shared.ids.lock().unwrap()[self.r.i] = id.clone();
                self.r.id = id;
                shared.ready.fetch_add(1, Ordering::Relaxed);
            }
            Some("final") if self.r.final_id.is_none() && id.is_some() => {
                self.r.final_id = id;
                shared.finals.fetch_add(1, Ordering::Relaxed);
            }
            _ => self.fail(shared, format!("unexpected reply {m}")),
        }
    }
}

/// One client thread: connects its clients, sets them up, then runs the phases.
fn drive(plan: Arc<Plan>, shared: Arc<Shared>, me: usize, mine: Vec<usize>) -> Vec<Report> {
    let mut poll = Poll::new().unwrap();
    let start = Instant::now();
    let mut clients: Vec<Client> = Vec::new();
    for &i in &mine {
        let (proto, port) = plan.ports[i % plan.ports.len()];
        let mut c = Client {
            r: Report { i, ..Report::default() },
            conn: None,
            next_seq: 0,
            next_send: start,
            pending: VecDeque::new(),
            final_sent: false,
        };
        match Conn::connect(proto, port) {
            Ok(conn) => {
                let token = Token(clients.len());
                let mut fd = SourceFd(&conn.fd());
                poll.registry().register(&mut fd, token, Interest::READABLE | Interest::WRITABLE).unwrap();
                c.conn = Some(conn);
            }
            Err(e) => {
                shared.dead.fetch_add(1, Ordering::Relaxed);
                c.r.died = Some(format!("{proto:?} client could not connect: {e}"));
                c.fail(&shared, format!("{proto:?} client could not connect: {e}"));
            }
        }
        c.setup(&plan, &shared);
        clients.push(c);
    }
    let mut events = Events::with_capacity(1024);
    let period = plan.period;
    let mut started_load = false;
    loop {
        let phase = shared.phase();
        shared.seen[me].store(phase, Ordering::Release);
        if phase == STOP {
            break;
        }
        match poll.poll(&mut events, Some(Duration::from_millis(2))) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => panic!("poll: {e}"),
        }
        for ev in events.iter() {
            clients[ev.token().0].pump(&shared);
        }
        let now = Instant::now();
        if phase == LOAD && !started_load {
            // Spread the clients' phases over one period.
            let n = clients.len().max(1) as u32;
            for (t, c) in clients.iter_mut().enumerate() {
                c.next_send = now + period * t as u32 / n;
            }
            started_load = true;
        }
        for c in clients.iter_mut().filter(|c| c.conn.is_some()) {
            match phase {
                LOAD if c.next_send <= now && c.pending.len() < plan.window => {
                    c.send_next(&plan, &shared, now);
                    // Behind schedule (a slow phase): no burst to catch up.
                    c.next_send = (c.next_send + period).max(now - period);
                }
                FINAL if !c.final_sent => {
                    c.final_sent = true;
                    c.send(&shared, &json!({"op": "whoami", "tag": "final"}).to_string());
                }
                _ => {}
            }
        }
    }
    clients
        .into_iter()
        .map(|mut c| {
            c.r.unanswered = c.pending.len();
            c.r
        })
        .collect()
}

/// What the `GatewayClient` pushed.
#[derive(Default)]
struct ApiReport {
    sent: Vec<(u64, Target)>,
    failures: Vec<String>,
}

fn api_pusher(plan: Arc<Plan>, shared: Arc<Shared>, register: u16, every: Duration) -> ApiReport {
    let mut r = ApiReport::default();
    let mut gc = match GatewayClient::new(&[&format!("127.0.0.1:{register}")], "") {
        Ok(gc) => gc,
        Err(e) => {
            r.failures.push(format!("GatewayClient: {e}"));
            return r;
        }
    };
    let mut n = 0u64;
    loop {
        match shared.phase() {
            LOAD => {}
            PAUSE => {
                std::thread::sleep(every); // paused: look again later
                continue;
            }
            _ => break,
        }
        let target = if n.is_multiple_of(2) {
            Target::Group((n as usize / 2) % plan.groups)
        } else {
            Target::Uid((n as usize * 13) % plan.clients)
        };
        shared.push_expected.fetch_add(plan.recipients(&target).len() as u64, Ordering::Relaxed);
        let body = format!("G{n}");
        let sent = match target {
            Target::Group(g) => gc.send_to_group(&[&format!("g{g}")], &body),
            Target::Uid(j) => gc.send_to_uid(&[&Plan::uid(j)], &body),
        };
        r.sent.push((n, target));
        if let Err(e) = sent {
            let what = format!("GatewayClient push G{n} to {target:?}: {e}");
            shared.fail(what.clone());
            r.failures.push(what);
        }
        n += 1;
        std::thread::sleep(every); // the pace of the pushes, not a synchronisation
    }
    r
}

/// A running fleet.
pub struct Fleet {
    pub plan: Arc<Plan>,
    shared: Arc<Shared>,
    drivers: Vec<JoinHandle<Vec<Report>>>,
    api: Option<JoinHandle<ApiReport>>,
}

/// Poll `f` until it returns Some, or panic with `what` after `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Fleet {
    /// Connect and set up every client (uid, groups, session); returns once each has its
    /// client_id. Nothing is sent until `go`.
    pub fn start(plan: Plan) -> Fleet {
        let plan = Arc::new(plan);
        let shared = Arc::new(Shared {
            ids: Mutex::new(vec![None; plan.clients]),
            seen: (0..plan.drivers).map(|_| AtomicU8::new(SETUP)).collect(),
            started: Some(Instant::now()),
            ..Shared::default()
        });
        let drivers = (0..plan.drivers)
            .map(|d| {
                let mine: Vec<usize> = (0..plan.clients).filter(|i| i % plan.drivers == d).collect();
                let (plan, shared) = (Arc::clone(&plan), Arc::clone(&shared));
                std::thread::spawn(move || drive(plan, shared, d, mine))
            })
            .collect();
        let f = Fleet { plan, shared, drivers, api: None };
        wait_until("every client set up", Duration::from_secs(60), || {
            f.check_alive();
            (f.shared.ready.load(Ordering::Relaxed) == f.plan.clients).then_some(())
        });
        f
    }

    /// Panic with the failures so far if a client connection is gone or a thread ended.
    pub fn check_alive(&self) {
        let dead = self.shared.dead.load(Ordering::Relaxed);
        assert!(dead == 0, "{dead} clients lost their connection:\n{}", self.failure_log());
        assert!(!self.drivers.iter().any(|t| t.is_finished()), "a client thread ended early");
    }

    pub fn failure_log(&self) -> String {
        self.shared.log.lock().unwrap().join("\n")
    }

    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// The client_id of each client (from its setup).
    pub fn ids(&self) -> Vec<String> {
        self.shared.ids.lock().unwrap().iter().map(|i| i.clone().unwrap_or_default()).collect()
    }

    /// Start the load (and the `GatewayClient` pushes).
    pub fn go(&mut self) {
        self.shared.phase.store(LOAD, Ordering::Release);
        if let Some((register, every)) = self.plan.api {
            let (plan, shared) = (Arc::clone(&self.plan), Arc::clone(&self.shared));
            self.api = Some(std::thread::spawn(move || api_pusher(plan, shared, register, every)));
        }
    }

    /// Everything sent so far has arrived.
    fn settled(&self) -> bool {
        let s = &self.shared;
        s.echo_got.load(Ordering::Relaxed) >= s.echo_sent.load(Ordering::Relaxed)
            && s.push_got.load(Ordering::Relaxed) >= s.push_expected.load(Ordering::Relaxed)
    }

    /// Stop sending (the `GatewayClient` too) and wait until everything sent has arrived;
    /// the clients stay connected. `resume` goes on.
    pub fn pause(&self) {
        self.shared.phase.store(PAUSE, Ordering::Release);
        wait_until(
            "the client threads paused and everything sent delivered",
            Duration::from_secs(30),
            || {
                self.check_alive();
                let paused = self.shared.seen.iter().all(|p| p.load(Ordering::Acquire) == PAUSE);
                (paused && self.settled()).then_some(())
            },
        );
    }

    pub fn resume(&self) {
        self.shared.phase.store(LOAD, Ordering::Release);
    }

    pub fn echoes(&self) -> u64 {
        self.shared.echo_got.load(Ordering::Relaxed)
    }

    /// Wait until `n` more echoes came back (every client alive).
    pub fn progress(&self, n: u64) {
        let target = self.echoes() + n;
        wait_until(&format!("{n} more echoes"), Duration::from_secs(30), || {
            self.check_alive();
            (self.echoes() >= target).then_some(())
        });
    }

    /// The largest round trip of an echo so far.
    pub fn max_rtt(&self) -> Duration {
        Duration::from_micros(self.shared.max_rtt_us.load(Ordering::Relaxed))
    }

    /// Stop sending, let every reply and push arrive (up to `drain`), ask each client's
    /// client_id once more, and account.
    pub fn finish(mut self, drain: Duration) -> Outcome {
        let shared = Arc::clone(&self.shared);
        let s = &shared;
        s.phase.store(QUIET, Ordering::Release);
        let api = self.api.take().map(|t| t.join().expect("the GatewayClient thread panicked"));
        let api = api.unwrap_or_default();
        let until = Instant::now() + drain;
        while !self.settled() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        s.phase.store(FINAL, Ordering::Release);
        let alive = self.plan.clients - s.dead.load(Ordering::Relaxed);
        let until = Instant::now() + Duration::from_secs(20);
        while s.finals.load(Ordering::Relaxed) < alive && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        s.phase.store(STOP, Ordering::Release);
        let mut reports: Vec<Report> =
            self.drivers.into_iter().flat_map(|t| t.join().expect("a client thread panicked")).collect();
        reports.sort_by_key(|r| r.i);
        Outcome::account(
            &self.plan,
            reports,
            api,
            Duration::from_micros(s.max_rtt_us.load(Ordering::Relaxed)),
        )
    }
}

/// The accounts of a finished fleet.
pub struct Outcome {
    pub echoes: u64,
    pub pushes_sent: u64,
    pub api_pushes_sent: u64,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub closed: u64,
    pub max_rtt: Duration,
    /// Everything that went wrong (the first 40 of each kind).
    pub problems: Vec<String>,
    pub reports: Vec<Report>,
}

/// Compare what `got` holds with `want` (both in arrival / send order): (lost, duplicated,
/// out of order).
fn compare(want: &[u64], got: &[u64]) -> (u64, u64, u64) {
    let mut count: HashMap<u64, i64> = HashMap::new();
    for k in want {
        *count.entry(*k).or_default() += 1;
    }
    for k in got {
        *count.entry(*k).or_default() -= 1;
    }
    let lost = count.values().filter(|v| **v > 0).map(|v| *v as u64).sum();
    let dup = count.values().filter(|v| **v < 0).map(|v| (-*v) as u64).sum();
    let ooo = if lost == 0 && dup == 0 && want != got { 1 } else { 0 };
    (lost, dup, ooo)
}

impl Outcome {
    fn account(plan: &Plan, reports: Vec<Report>, api: ApiReport, max_rtt: Duration) -> Outcome {
        let mut o = Outcome {
            echoes: 0,
            pushes_sent: 0,
            api_pushes_sent: api.sent.len() as u64,
            deliveries: 0,
            lost: 0,
            duplicated: 0,
            out_of_order: 0,
            closed: 0,
            max_rtt,
            problems: api.failures.clone(),
            reports: Vec::new(),
        };
        // What each recipient must have got, by source (usize::MAX: the GatewayClient).
        let mut want: HashMap<(usize, usize), Vec<u64>> = HashMap::new();
        for r in &reports {
            for (k, t) in &r.pushes_sent {
                for j in plan.recipients(t) {
                    want.entry((j, r.i)).or_default().push(*k);
                }
            }
            o.pushes_sent += r.pushes_sent.len() as u64;
        }
        for (n, t) in &api.sent {
            for j in plan.recipients(t) {
                want.entry((j, usize::MAX)).or_default().push(*n);
            }
        }
        let note = |o: &mut Outcome, what: String| {
            if o.problems.len() < 200 {
                o.problems.push(what);
            }
        };
        for r in &reports {
            o.echoes += r.echoes;
            o.out_of_order += r.echo_reordered;
            o.duplicated += r.echo_unexpected;
            if r.died.is_some() {
                o.closed += 1;
            }
            for f in &r.failures {
                note(&mut o, f.clone());
            }
            if r.unanswered > 0 {
                o.lost += r.unanswered as u64;
                note(&mut o, format!("client {}: {} echoes never answered", r.i, r.unanswered));
            }
            if r.final_id != r.id {
                note(
                    &mut o,
                    format!("client {}: client_id {:?} at the start, {:?} at the end", r.i, r.id, r.final_id),
                );
            }
            let mut sources: Vec<usize> = r.got_push.keys().copied().collect();
            sources.push(usize::MAX);
            sources.extend(want.keys().filter(|(j, _)| *j == r.i).map(|(_, s)| *s));
            sources.sort_unstable();
            sources.dedup();
            for src in sources {
                let got: &[u64] = match src {
                    usize::MAX => &r.got_api,
                    s => r.got_push.get(&s).map_or(&[], Vec::as_slice),
                };
                let w = want.get(&(r.i, src)).map(Vec::as_slice).unwrap_or(&[]);
                o.deliveries += got.len() as u64;
                let (lost, dup, ooo) = compare(w, got);
                o.lost += lost;
                o.duplicated += dup;
                o.out_of_order += ooo;
                if lost + dup + ooo > 0 {
                    let from = if src == usize::MAX {
                        "the GatewayClient".to_string()
                    } else {
                        format!("client {src}")
                    };
                    note(
                        &mut o,
                        format!(
                            "client {} from {from}: {lost} lost, {dup} duplicated, order kept: {}",
                            r.i,
                            ooo == 0
                        ),
                    );
                }
            }
        }
        o.reports = reports;
        o
    }

    /// One line of figures.
    pub fn summary(&self) -> String {
        format!(
            "{} echoes, {} pushes by workers + {} by the GatewayClient = {} deliveries; lost {}, duplicated {}, out of order {}, closed {}; max echo round trip {:?}",
            self.echoes,
            self.pushes_sent,
            self.api_pushes_sent,
            self.deliveries,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.closed,
            self.max_rtt
        )
    }

    /// Nothing lost, duplicated, reordered or closed; every client kept its client_id.
    pub fn assert_clean(&self, what: &str) {
        assert!(
            self.problems.is_empty(),
            "{what}: {}\n{} problems:\n{}",
            self.summary(),
            self.problems.len(),
            self.problems.join("\n")
        );
        assert!(self.echoes > 0 && self.deliveries > 0, "{what}: no load ran: {}", self.summary());
    }
}

//! What every mode shares: the context, opening many connections with a bound on handshakes
//! in flight, the measured window (loader and server CPU), progress lines, the JSON header.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::args::Options;
use crate::hist::Histogram;
use crate::net::{Event, Failures, Net};
use crate::sys::{self, Clock, TreeCpu, TreeCpuResult};

pub struct Ctx {
    pub o: Options,
    pub net: Net,
    pub clock: Clock,
    pub stop: Arc<AtomicBool>,
    pub started: Instant,
}

impl Ctx {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Progress lines are for runs longer than a few seconds.
    pub fn ticker(&self, planned: f64) -> Ticker {
        Ticker {
            next: Instant::now() + Duration::from_secs(1),
            on: !self.o.quiet && planned > 3.0,
            started: Instant::now(),
        }
    }
}

/// Once-a-second progress lines on stderr.
pub struct Ticker {
    next: Instant,
    on: bool,
    started: Instant,
}

impl Ticker {
    /// The next time `due` wants to be asked.
    pub fn deadline(&self) -> Instant {
        self.next
    }

    /// True (and prints `line()`) once a second.
    pub fn due(&mut self, now: Instant, line: impl FnOnce() -> String) -> bool {
        if now < self.next {
            return false;
        }
        self.next += Duration::from_secs(1);
        if self.next < now {
            self.next = now + Duration::from_secs(1);
        }
        if self.on {
            eprintln!("[{:5.1}s] {}", self.started.elapsed().as_secs_f64(), line());
        }
        true
    }
}

/// The result of opening many connections.
pub struct Opened {
    /// By tag: the key of the open connection, `None` for a failed or lost one.
    pub keys: Vec<Option<usize>>,
    pub open: usize,
    pub failures: Failures,
    /// Connect call to handshake done, µs.
    pub handshake: Histogram,
    /// First connect call to the last handshake done (or failure).
    pub elapsed: Duration,
    /// Connections that opened and then closed before all were up.
    pub lost: u64,
}

/// Opens `count` connections with at most `--inflight` handshakes at a time; with
/// `close_after`, each is closed as soon as its handshake is done (storm).
pub fn open_all(ctx: &mut Ctx, count: usize, close_after: bool, what: &str) -> Opened {
    let started = Instant::now();
    let mut ticker = ctx.ticker(ctx.o.timeout.max(4.0));
    let mut r = Opened {
        keys: vec![None; count],
        open: 0,
        failures: Failures::default(),
        handshake: Histogram::new(),
        elapsed: Duration::ZERO,
        lost: 0,
    };
    let (mut next, mut inflight) = (0usize, 0usize);
    let mut to_close = Vec::new();
    let mut last_done = started;
    loop {
        while next < count && inflight < ctx.o.inflight && !ctx.stopped() {
            match ctx.net.connect(next) {
                Ok(key) => {
                    r.keys[next] = Some(key);
                    inflight += 1;
                }
                Err(f) => r.failures.add(f),
            }
            next += 1;
        }
        if (next == count || ctx.stopped()) && inflight == 0 {
            break;
        }
        let now = Instant::now();
        ticker.due(now, || {
            format!("{what}: {} open, {inflight} in flight, {} failed of {count}", r.open, r.failures.total())
        });
        let res = ctx.net.poll_once(Some(ticker.deadline()), &mut |ev| match ev {
            Event::Open { key, since_connect } => {
                inflight -= 1;
                r.open += 1;
                r.handshake.record(since_connect.as_micros() as u64);
                last_done = Instant::now();
                if close_after {
                    to_close.push(key);
                }
            }
            Event::Closed { tag, why, was_open } => {
                r.keys[tag] = None;
                if was_open {
                    r.lost += 1;
                } else {
                    inflight -= 1;
                    r.failures.add(why);
                    last_done = Instant::now();
                }
            }
            Event::Message { .. } => {}
        });
        if let Err(e) = res {
            eprintln!("gw-bench: poll: {e}");
            break;
        }
        for key in to_close.drain(..) {
            ctx.net.close(key);
        }
    }
    r.elapsed = last_done - started;
    r
}

/// The server side of a measurement: the process trees of `--server-pid`.
pub struct ServerWatch {
    roots: Vec<u32>,
    known: Vec<u32>,
}

impl ServerWatch {
    pub fn new(roots: &[u32]) -> ServerWatch {
        ServerWatch { roots: roots.to_vec(), known: TreeCpu::tree(roots) }
    }

    pub fn active(&self) -> bool {
        !self.roots.is_empty()
    }

    /// Re-reads the tree (children forked since), outside any measured window.
    pub fn refresh(&mut self) {
        self.known = TreeCpu::tree(&self.roots);
    }

    pub fn rss_kib(&self) -> u64 {
        sys::tree_rss_kib(&self.roots)
    }
}

/// CPU of the loader and of the server over the measured window.
pub struct Window {
    start: Instant,
    loader_cpu_us: u64,
    server: Option<TreeCpu>,
}

pub struct WindowResult {
    pub wall: Duration,
    pub loader_cpu_pct: f64,
    pub server: Option<TreeCpuResult>,
}

impl Window {
    pub fn begin(watch: &ServerWatch) -> Window {
        Window {
            start: Instant::now(),
            loader_cpu_us: sys::self_cpu_us(),
            server: watch.active().then(|| TreeCpu::start(&watch.roots, &watch.known)),
        }
    }

    pub fn end(self, watch: &ServerWatch) -> WindowResult {
        let server = self.server.as_ref().map(|t| t.finish(&watch.known));
        let wall = self.start.elapsed();
        let loader = sys::self_cpu_us().saturating_sub(self.loader_cpu_us);
        WindowResult { wall, loader_cpu_pct: pct(loader, wall), server }
    }
}

pub fn pct(cpu_us: u64, wall: Duration) -> f64 {
    round1(cpu_us as f64 / wall.as_micros().max(1) as f64 * 100.0)
}

pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

pub fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The figures of the server side of a window, `per` = what the CPU time is divided by.
pub fn server_json(out: &mut Map<String, Value>, w: &WindowResult, roots: &[u32], per_name: &str, per: u64) {
    match w.server {
        Some(cpu) => {
            out.insert("server_pids".into(), json!(roots));
            out.insert("server_procs".into(), json!(cpu.procs));
            out.insert("server_cpu_us".into(), json!(cpu.cpu_us));
            out.insert("server_cpu_exact".into(), json!(cpu.exact));
            out.insert("server_cpu_us_ticks".into(), json!(cpu.ticks_us));
            out.insert("server_cpu_pct".into(), json!(pct(cpu.cpu_us, w.wall)));
            out.insert(
                per_name.into(),
                json!(if per == 0 { 0.0 } else { round3(cpu.cpu_us as f64 / per as f64) }),
            );
        }
        None => {
            out.insert(per_name.into(), Value::Null);
        }
    }
    out.insert("loader_cpu_pct".into(), json!(w.loader_cpu_pct));
    out.insert("loader_saturated".into(), json!(w.loader_cpu_pct > 90.0));
    out.insert("window_s".into(), json!(round3(w.wall.as_secs_f64())));
}

/// Mode, parameters and labels: the first fields of every JSON line.
pub fn header(o: &Options) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("mode".into(), json!(o.mode.name()));
    m.insert("label".into(), json!(o.label));
    m.insert("rep".into(), json!(o.rep));
    m.insert("url".into(), json!(o.target.url));
    m.insert(
        "params".into(),
        json!({
            "conns": o.conns,
            "rate": o.rate,
            "closed": o.closed,
            "size": o.size,
            "binary": o.binary,
            "duration_s": o.duration,
            "warmup_s": o.warmup,
            "drain_s": o.drain,
            "inflight": o.inflight,
            "timeout_s": o.timeout,
            "hold_s": o.hold,
            "tick_us": o.tick_us,
            "close_after": o.close_after,
            "sources": o.sources.len(),
        }),
    );
    m
}

/// The open-loop schedule: send `k` of the run is due at `t0 + k / rate`, rounded up to the
/// next multiple of `tick` after `t0` (all sends of one tick leave together).
#[derive(Clone, Copy)]
pub struct Schedule {
    t0: Instant,
    interval_ns: f64,
    tick_ns: u64,
}

impl Schedule {
    pub fn new(t0: Instant, rate: f64, tick_us: u64) -> Schedule {
        Schedule { t0, interval_ns: 1e9 / rate, tick_ns: tick_us * 1000 }
    }

    pub fn at(&self, k: u64) -> Instant {
        let ns = (k as f64 * self.interval_ns) as u64;
        let ns = if self.tick_ns > 1 { ns.div_ceil(self.tick_ns) * self.tick_ns } else { ns };
        self.t0 + Duration::from_nanos(ns)
    }
}

/// Most sends done in one loop turn when the loader is behind, so replies are still read.
pub const MAX_SENDS_PER_TURN: usize = 512;

//! The master process: binds every listening socket once and keeps it for its whole life,
//! creates the statistics region, fork+execs the register, the gateways and the business
//! workers, re-spawns a child that dies (same slot, same listeners, with backoff), reloads
//! business workers new-before-old, upgrades every process (itself first, by re-executing in
//! place), and stops everything. It never touches client traffic.

pub mod child;
mod reload;
mod spawn;
mod state;
mod upgrade;

pub use state::{ENV as STATE_ENV, MasterState};
pub use upgrade::check_new_binary;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::Token;
use slab::Slab;

use child::{ChildContract, ChildRole};

use crate::config::{Config, ConfigError, MachineType};
use crate::net::listener::{bind_tcp, bind_unix};
use crate::reactor::signals::{is_stop_signal, send as signal};
use crate::reactor::{Ctx, Reactor, Ready, Service};
use crate::stats::{Operation, Role, Shm, Slot, State};

use spawn::describe;

/// Signals the master handles.
const MASTER_SIGNALS: [i32; 7] =
    [libc::SIGCHLD, libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

/// A stop goes in this order, each stage once the one before has exited, so no process sees
/// a peer close on it and logs it: business workers and the HTTP process, gateways, the
/// register.
const STOP_ORDER: [fn(&Kind) -> bool; 3] = [
    |k| matches!(k, Kind::Worker { .. } | Kind::Http),
    |k| matches!(k, Kind::Gateway { .. }),
    |k| matches!(k, Kind::Register),
];

/// The master's own row in the statistics region; children's rows follow.
const MASTER_SLOT: usize = 0;

/// A child that did not live this long before dying counts as a failed start.
const MIN_LIFETIME: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What a child process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Register,
    Gateway {
        group: usize,
        id: u16,
        fds: usize,
    },
    Worker {
        id: u16,
    },
    /// The HTTP API / metrics / dashboard listener (`[http]`).
    Http,
}

/// One child slot of the process table.
pub struct Proc {
    pub kind: Kind,
    pub slot: usize,
    pub pid: Option<u32>,
    pub started: Instant,
    /// Consecutive deaths shortly after start (drives the respawn backoff).
    pub quick_deaths: u32,
    /// Being replaced or stopped on purpose: not re-spawned when it exits.
    pub retiring: bool,
    /// Reload generation, part of a worker's key at the gateways.
    pub generation: u64,
    /// A retiring process still alive then is killed (an old gateway relaying wss clients
    /// after an upgrade, an old register).
    pub deadline: Option<Instant>,
}

/// A process-table entry's names: statistics role, command line role, name, listen address.
struct Names {
    role: Role,
    child: ChildRole,
    name: String,
    listen: String,
}

/// Listening sockets owned by the master.
struct Listeners {
    register: Option<OwnedFd>,
    /// One public listener per gateway group.
    public: Vec<OwnedFd>,
    /// Per gateway process: (inner TCP, inner Unix socket, its path).
    inner: Vec<(OwnedFd, OwnedFd, PathBuf)>,
    http: Option<OwnedFd>,
}

/// Master timers.
pub enum Timer {
    Tick,
    Respawn(usize),
    Kill,
    ReloadCheck,
    UpgradeCheck,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Running,
    /// Graceful stop, first step: business workers drain.
    StoppingWorkers,
    /// Stopping the processes of `STOP_ORDER[stage]`.
    Stopping(usize),
    Done,
}

pub struct Master {
    cfg: Config,
    conf: PathBuf,
    exe: PathBuf,
    listeners: Listeners,
    procs: Slab<Proc>,
    shm: Shm,
    free_slots: Vec<usize>,
    phase: Phase,
    reload: reload::Reload,
    generation: u64,
    /// The log file children write to (daemon mode); `None`: they log to the terminal.
    child_log: Option<PathBuf>,
    kill_at: Option<Instant>,
    /// This binary's version label, shown by `status`.
    version: &'static str,
    upgrade: upgrade::Upgrade,
}

/// What to do about a failed bind.
fn bind_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::AddrInUse => "stop what uses the port or choose another",
        io::ErrorKind::AddrNotAvailable => "use an address of this machine, or 0.0.0.0",
        io::ErrorKind::PermissionDenied => "ports below 1024 need root; choose a higher port",
        _ => "check the address",
    }
}

/// Why the master cannot start.
#[derive(Debug)]
pub enum StartError {
    /// A listener, the run directory or the TLS files: names the key to fix.
    Config(ConfigError),
    /// A run file cannot be created: (what, the error).
    Io(String, io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => e.fmt(f),
            StartError::Io(what, e) => write!(f, "cannot create {what}: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A config error about `key` of `cfg`'s file.
fn key_error(cfg: &Config, key: String, problem: String, fix: String) -> StartError {
    StartError::Config(ConfigError { file: cfg.file.clone(), key, problem, fix })
}

/// Bind `addr` for config key `key`.
fn bind_key(
    cfg: &Config,
    key: String,
    addr: SocketAddr,
    what: &str,
    fix: &str,
) -> Result<OwnedFd, StartError> {
    bind_tcp(addr).map_err(|e| {
        key_error(cfg, key, format!("cannot listen on {what}{addr}: {e}"), format!("{}{fix}", bind_hint(&e)))
    })
}

/// Bind every listener of `cfg`; errors name the config key to fix.
fn bind_all(cfg: &Config) -> Result<Listeners, StartError> {
    let mut l = Listeners { register: None, public: Vec::new(), inner: Vec::new(), http: None };
    if let Some(h) = &cfg.http {
        l.http = Some(bind_key(cfg, "http.listen".into(), h.listen, "", "")?);
    }
    if cfg.machine_type == MachineType::Worker {
        return Ok(l);
    }
    if let Some(r) = &cfg.register {
        l.register = Some(bind_key(cfg, "register.listen".into(), r.listen, "", "")?);
    }
    std::fs::create_dir_all(&cfg.run_dir).map_err(|e| {
        key_error(
            cfg,
            "run_dir".into(),
            format!("cannot create {}: {e}", cfg.run_dir.display()),
            String::new(),
        )
    })?;
    for (gi, g) in cfg.gateways.iter().enumerate() {
        if let Some(t) = &g.tls {
            // Fail at start, in the terminal, rather than in every gateway child.
            crate::net::tls::server_config(&t.cert, &t.key).map_err(|e| {
                let fix = "set [tls] cert and key to readable PEM files, or stage_mode = \"dev\"";
                key_error(cfg, "tls".into(), e.to_string(), fix.into())
            })?;
        }
        l.public.push(bind_key(cfg, format!("gateway[{gi}].listen"), g.listen, "", "")?);
        for id in 0..g.count {
            let port = g.start_port + id;
            let addr = SocketAddr::new(std::net::IpAddr::V4(cfg.lan_ip), port);
            let key = format!("gateway[{gi}].start_port");
            let tcp = bind_key(cfg, key, addr, "inner port ", "; inner ports listen on lan_ip")?;
            let path = cfg.inner_socket_path(port);
            let unix = bind_unix(&path).map_err(|e| {
                let problem = format!("cannot create socket {}: {e}", path.display());
                key_error(cfg, "run_dir".into(), problem, String::new())
            })?;
            l.inner.push((tcp, unix, path));
        }
    }
    Ok(l)
}

/// The processes this machine runs, and how many of them are business workers.
fn process_kinds(cfg: &Config) -> (Vec<Kind>, u16) {
    let mut procs = Vec::new();
    if cfg.machine_type != MachineType::Worker {
        procs.push(Kind::Register);
        let mut fds = 0;
        for (gi, g) in cfg.gateways.iter().enumerate() {
            for id in 0..g.count {
                procs.push(Kind::Gateway { group: gi, id, fds });
                fds += 1;
            }
        }
    }
    let workers =
        if cfg.machine_type == MachineType::Master { 0 } else { cfg.worker.as_ref().map_or(0, |w| w.count) };
    for id in 0..workers {
        procs.push(Kind::Worker { id });
    }
    if cfg.http.is_some() {
        procs.push(Kind::Http);
    }
    (procs, workers)
}

impl Master {
    /// Bind, create the statistics region, build the process table. Nothing is spawned yet.
    /// `version` is the label `status` shows.
    pub fn new(
        cfg: Config,
        conf: PathBuf,
        exe: PathBuf,
        daemon: bool,
        version: &'static str,
    ) -> Result<Master, StartError> {
        let listeners = bind_all(&cfg)?;
        std::fs::create_dir_all(&cfg.run_dir)
            .map_err(|e| StartError::Io(format!("run_dir {}", cfg.run_dir.display()), e))?;
        let (procs, workers) = process_kinds(&cfg);
        // Slot 0: master; one per process; spares for reload replacements, and for upgrade
        // replacements while old gateways linger (relaying wss clients), over two upgrades.
        let upgrade_spares = 2 + 2 * cfg.gateway_processes();
        let slots = 1 + procs.len() + workers as usize + 1 + upgrade_spares;
        let shm = Shm::create(&cfg.stats_path(), slots)
            .map_err(|e| StartError::Io(format!("statistics file {}", cfg.stats_path().display()), e))?;
        let h = shm.header();
        h.daemon.store(daemon as u32, std::sync::atomic::Ordering::Relaxed);
        h.empty_secret_exposed
            .store(cfg.exposed_without_secret() as u32, std::sync::atomic::Ordering::Relaxed);
        if let Some(s) = shm.slot(MASTER_SLOT) {
            s.claim(Role::Master, 0, "master", "none");
            s.set_state(State::Ready);
        }
        let mut table = Slab::new();
        for (i, kind) in procs.into_iter().enumerate() {
            table.insert(Proc {
                kind,
                slot: i + 1,
                pid: None,
                started: Instant::now(),
                quick_deaths: 0,
                retiring: false,
                generation: 0,
                deadline: None,
            });
        }
        let procs = table;
        let free_slots = (procs.len() + 1..slots).rev().collect();
        let child_log = daemon.then(|| cfg.log_file.clone());
        Ok(Master {
            cfg,
            conf,
            exe,
            listeners,
            procs,
            shm,
            free_slots,
            phase: Phase::Running,
            reload: reload::Reload::default(),
            generation: 0,
            child_log,
            kill_at: None,
            version,
            upgrade: upgrade::Upgrade::default(),
        })
    }

    /// The process table's lines for the start banner: (name, listen, count).
    pub fn banner(&self) -> Vec<(String, String, usize)> {
        let mut rows = Vec::new();
        if let Some(r) = self.cfg.register.as_ref().filter(|_| self.cfg.machine_type != MachineType::Worker) {
            rows.push(("Register".to_string(), format!("text://{}", r.listen), 1));
        }
        if self.cfg.machine_type != MachineType::Worker {
            for g in &self.cfg.gateways {
                rows.push((
                    g.name.clone(),
                    format!("{}://{}", g.proto.scheme(g.tls.is_some()), g.listen),
                    g.count as usize,
                ));
            }
        }
        if let Some(w) = self.cfg.worker.as_ref().filter(|_| self.cfg.machine_type != MachineType::Master) {
            rows.push((w.name.clone(), "none".to_string(), w.count as usize));
        }
        if let Some(h) = &self.cfg.http {
            rows.push(("Http".to_string(), format!("http://{}", h.listen), 1));
        }
        rows
    }

    /// Run until everything stopped.
    pub fn run(self) -> io::Result<()> {
        self.serve(false)
    }

    /// Run a master that re-executed itself (`upgrade`): its children run, the upgrade goes
    /// on.
    pub fn run_resumed(self) -> io::Result<()> {
        self.serve(true)
    }

    fn serve(mut self, resumed: bool) -> io::Result<()> {
        // Written here, not when the region is made: `start -d` forks the daemon away in
        // between, and the region must name the master that runs, not the one that exited.
        let pid = std::process::id();
        let h = self.shm.header();
        h.master_pid.store(pid, std::sync::atomic::Ordering::Relaxed);
        h.set_label(self.version);
        if let Some(s) = self.shm.slot(MASTER_SLOT) {
            s.pid.store(pid, std::sync::atomic::Ordering::Relaxed);
        }
        self.cfg.warnings.iter().for_each(|w| warn!("{}", w.text));
        let mut reactor = Reactor::new()?;
        reactor.watch_signals(&MASTER_SIGNALS)?;
        // The old master blocked its signals across the `execve`; they are handled now.
        upgrade::unblock_signals();
        {
            let mut cx = reactor.ctx();
            if resumed {
                self.resume_children(&mut cx);
            } else {
                let keys: Vec<usize> = self.procs.iter().map(|(k, _)| k).collect();
                for i in keys {
                    self.start_proc(&mut cx, i);
                }
            }
            cx.after(Duration::from_secs(1), Timer::Tick);
        }
        reactor.run(&mut self)?;
        self.cleanup();
        Ok(())
    }

    /// How process-table entry `kind` is named in the statistics, on its command line and in
    /// the log.
    fn names(&self, kind: Kind) -> Names {
        match kind {
            Kind::Register => Names {
                role: Role::Register,
                child: ChildRole::Register,
                name: "Register".into(),
                listen: self
                    .cfg
                    .register
                    .as_ref()
                    .map(|r| format!("text://{}", r.listen))
                    .unwrap_or_default(),
            },
            Kind::Gateway { group, .. } => {
                let g = &self.cfg.gateways[group];
                Names {
                    role: Role::Gateway,
                    child: ChildRole::Gateway,
                    name: g.name.clone(),
                    listen: format!("{}://{}", g.proto.scheme(g.tls.is_some()), g.listen),
                }
            }
            Kind::Worker { .. } => Names {
                role: Role::Worker,
                child: ChildRole::Worker,
                name: self.cfg.worker.as_ref().map(|w| w.name.clone()).unwrap_or_default(),
                listen: "none".into(),
            },
            Kind::Http => Names {
                role: Role::Http,
                child: ChildRole::Http,
                name: "Http".into(),
                listen: self.cfg.http.as_ref().map(|h| format!("http://{}", h.listen)).unwrap_or_default(),
            },
        }
    }

    /// Spawn the child of process-table entry `i`. On failure the entry waits for a retry.
    fn start_proc(&mut self, cx: &mut Ctx<'_, Timer>, i: usize) -> bool {
        match self.spawn_proc(i) {
            Ok(pid) => {
                let p = &mut self.procs[i];
                p.pid = Some(pid);
                p.started = Instant::now();
                true
            }
            Err(e) => {
                let name = self.names(self.procs[i].kind).name;
                error!("cannot start {name} from {}: {e}", self.exe.display());
                self.schedule_respawn(cx, i);
                false
            }
        }
    }

    fn spawn_proc(&self, i: usize) -> io::Result<u32> {
        self.spawn_proc_with(i, None)
    }

    /// Spawn the child of entry `i`; `handover`: a gateway replacing a running one receives
    /// its connections on that socket.
    fn spawn_proc_with(&self, i: usize, handover: Option<PathBuf>) -> io::Result<u32> {
        let p = &self.procs[i];
        let names = self.names(p.kind);
        let (group, id) = match p.kind {
            Kind::Register | Kind::Http => (0, 0),
            Kind::Gateway { group, id, .. } => (group, id),
            Kind::Worker { id } => (0, id),
        };
        let fds: Vec<(String, RawFd)> = match p.kind {
            Kind::Register => {
                self.listeners.register.iter().map(|f| ("register".into(), f.as_raw_fd())).collect()
            }
            Kind::Gateway { group, fds, .. } => {
                let (tcp, unix, _) = &self.listeners.inner[fds];
                vec![
                    ("public".into(), self.listeners.public[group].as_raw_fd()),
                    ("inner_tcp".into(), tcp.as_raw_fd()),
                    ("inner_unix".into(), unix.as_raw_fd()),
                ]
            }
            Kind::Worker { .. } => Vec::new(),
            Kind::Http => self.listeners.http.iter().map(|f| ("http".to_string(), f.as_raw_fd())).collect(),
        };
        if let Some(slot) = self.shm.slot(p.slot) {
            slot.claim(names.role, id as u32, &names.name, &names.listen);
        }
        let contract = ChildContract {
            role: names.child,
            conf: self.conf.clone(),
            group,
            id,
            fds,
            slot: p.slot,
            generation: p.generation,
            log_file: self.child_log.clone(),
            handover,
        };
        spawn::spawn(&self.exe, &contract)
    }

    fn schedule_respawn(&mut self, cx: &mut Ctx<'_, Timer>, i: usize) {
        let name = self.names(self.procs[i].kind).name;
        let p = &mut self.procs[i];
        p.quick_deaths += 1;
        let delay = Duration::from_millis(500 * (1u64 << p.quick_deaths.min(6))).min(MAX_BACKOFF);
        warn!("{name} fails at start ({} times in a row); next attempt in {delay:?}", p.quick_deaths);
        cx.after(delay, Timer::Respawn(i));
    }

    /// A child exited: record it, then re-spawn it unless it was retired or we stop.
    fn on_exit(&mut self, cx: &mut Ctx<'_, Timer>, pid: u32, status: i32) {
        let Some(i) = self.procs.iter().find(|(_, p)| p.pid == Some(pid)).map(|(k, _)| k) else { return };
        if self.reload_probation_failed(cx, i, status) || self.upgrade_probation_failed(cx, i, status) {
            return;
        }
        let held = self.upgrade_holds(i);
        let name = self.names(self.procs[i].kind).name;
        let p = &mut self.procs[i];
        p.pid = None;
        // Did it get as far as serving? A child that fails before that is a failed start.
        let mut was_serving = false;
        if let Some(slot) = self.shm.slot(p.slot) {
            was_serving = matches!(slot.state(), Some(State::Ready | State::Draining));
            Slot::bump(&slot.exit_count);
            Slot::set(&slot.last_exit_status, status as u64);
            slot.set_state(State::Exited);
        }
        if p.retiring || self.phase != Phase::Running {
            info!("{name}[{pid}] exited ({})", describe(status));
            self.after_retired_exit(cx, i);
            return;
        }
        if held {
            // Handing over: whether it comes back depends on how the handover ends.
            info!("{name}[{pid}] exited during its handover ({})", describe(status));
            return;
        }
        warn!("worker[{name}:{pid}] exit with status {status} ({}); restarting it", describe(status));
        if !was_serving && p.started.elapsed() < MIN_LIFETIME {
            self.schedule_respawn(cx, i);
        } else {
            p.quick_deaths = 0;
            self.start_proc(cx, i);
        }
    }

    /// Kill retiring processes past their deadline.
    fn kill_lingering(&mut self) {
        let now = Instant::now();
        let late: Vec<usize> = self
            .procs
            .iter()
            .filter(|(_, p)| p.retiring && p.pid.is_some() && p.deadline.is_some_and(|d| now >= d))
            .map(|(k, _)| k)
            .collect();
        for i in late {
            let name = self.names(self.procs[i].kind).name;
            let p = &mut self.procs[i];
            if let Some(pid) = p.pid {
                warn!("{name}[{pid}] was replaced and did not exit in time; killing it");
                signal(pid, libc::SIGKILL);
            }
            p.deadline = Some(now + Duration::from_secs(2));
        }
    }

    fn live_pids(&self, filter: impl Fn(&Kind) -> bool) -> Vec<u32> {
        self.procs.iter().filter(|(_, p)| filter(&p.kind)).filter_map(|(_, p)| p.pid).collect()
    }

    /// Begin stopping. Graceful: business workers drain first, then the rest stop.
    fn stop(&mut self, cx: &mut Ctx<'_, Timer>, graceful: bool) {
        if matches!(self.phase, Phase::Stopping(_) | Phase::Done) {
            return;
        }
        self.reload.abort();
        self.upgrade_abort();
        self.shm.header().set_operation(Operation::Idle);
        if graceful && self.phase == Phase::Running {
            info!("graceful stop: business workers drain first");
            self.phase = Phase::StoppingWorkers;
            for pid in self.live_pids(|k| matches!(k, Kind::Worker { .. })) {
                signal(pid, libc::SIGQUIT);
            }
            self.kill_at = Some(Instant::now() + self.cfg.stop_timeout.max(Duration::from_secs(5)));
            cx.after(Duration::from_millis(50), Timer::Kill);
            self.maybe_done(cx);
            return;
        }
        info!("stopping");
        self.kill_at = Some(Instant::now() + self.cfg.stop_timeout);
        cx.after(Duration::from_millis(50), Timer::Kill);
        self.stop_stage(cx, 0);
    }

    /// SIGTERM to the processes of stop stage `stage`; the next stage starts when they exited.
    fn stop_stage(&mut self, cx: &mut Ctx<'_, Timer>, stage: usize) {
        self.phase = Phase::Stopping(stage);
        for pid in self.live_pids(STOP_ORDER[stage]) {
            signal(pid, libc::SIGTERM);
        }
        self.maybe_done(cx);
    }

    fn maybe_done(&mut self, cx: &mut Ctx<'_, Timer>) {
        match self.phase {
            Phase::StoppingWorkers if self.live_pids(|k| matches!(k, Kind::Worker { .. })).is_empty() => {
                self.phase = Phase::Running;
                self.stop(cx, false);
            }
            Phase::Stopping(stage) if self.live_pids(STOP_ORDER[stage]).is_empty() => {
                if stage + 1 < STOP_ORDER.len() {
                    self.stop_stage(cx, stage + 1);
                } else if self.procs.iter().all(|(_, p)| p.pid.is_none()) {
                    self.phase = Phase::Done;
                }
            }
            _ => {}
        }
    }

    /// Remove what the run left behind (sockets, statistics).
    fn cleanup(&mut self) {
        for (_, _, path) in &self.listeners.inner {
            let _ = std::fs::remove_file(path);
        }
        for g in &self.cfg.gateways {
            for id in 0..g.count {
                let _ = std::fs::remove_file(self.cfg.handover_socket_path(g.start_port + id));
            }
        }
        let _ = std::fs::remove_file(self.cfg.stats_path());
        info!("stopped");
    }
}

impl Service for Master {
    type Timer = Timer;

    fn on_ready(&mut self, _cx: &mut Ctx<'_, Timer>, _token: Token, _ready: Ready) {}

    fn on_timer(&mut self, cx: &mut Ctx<'_, Timer>, timer: Timer) {
        match timer {
            Timer::Tick => {
                if let Some(s) = self.shm.slot(MASTER_SLOT) {
                    s.tick();
                    Slot::set(&s.timers, cx.timers.len() as u64 + 1);
                }
                self.kill_lingering();
                cx.after(Duration::from_secs(1), Timer::Tick);
            }
            Timer::Respawn(i) => {
                if self.phase == Phase::Running
                    && self.procs.get(i).is_some_and(|p| p.pid.is_none() && !p.retiring)
                {
                    self.start_proc(cx, i);
                }
            }
            Timer::Kill => {
                if self.phase == Phase::Done {
                    return;
                }
                if self.kill_at.is_some_and(|t| Instant::now() >= t) {
                    let targets: Vec<u32> = if self.phase == Phase::StoppingWorkers {
                        self.live_pids(|k| matches!(k, Kind::Worker { .. }))
                    } else {
                        self.live_pids(|_| true)
                    };
                    for pid in targets {
                        warn!("process {pid} did not stop in time; killing it");
                        signal(pid, libc::SIGKILL);
                    }
                    self.kill_at = Some(Instant::now() + Duration::from_secs(2));
                }
                cx.after(Duration::from_millis(50), Timer::Kill);
            }
            Timer::ReloadCheck => self.reload_check(cx),
            Timer::UpgradeCheck => self.upgrade_poll(cx),
        }
    }

    fn on_signal(&mut self, cx: &mut Ctx<'_, Timer>, signal: i32) {
        match signal {
            libc::SIGCHLD => {
                for exit in spawn::reap() {
                    self.on_exit(cx, exit.pid, exit.status);
                }
                self.maybe_done(cx);
            }
            libc::SIGQUIT => self.stop(cx, true),
            libc::SIGUSR1 => self.begin_reload(cx),
            libc::SIGUSR2 => self.begin_upgrade(),
            s if is_stop_signal(s) => self.stop(cx, false),
            _ => {}
        }
    }

    fn end_of_turn(&mut self, _cx: &mut Ctx<'_, Timer>) -> bool {
        false
    }

    fn should_stop(&self) -> bool {
        self.phase == Phase::Done
    }
}

/// Absolute form of `p` (relative to the working directory).
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

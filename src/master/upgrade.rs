//! Upgrade (`docs/upgrade.md`): every process of the machine is replaced by the binary on
//! disk while clients stay connected.
//!
//! 1. The master checks the new binary (`upgrade-check`, run from it, reads the
//!    configuration and this master's state) and re-executes itself in place: same pid, same
//!    children, same listening sockets, same statistics region and pid file. Its state
//!    (`state.rs`) goes through the environment of the `execve`.
//! 2. The register: a new one starts on the same listener, the old one stops once it is ready.
//! 3. The gateways, one at a time, by handover: the new gateway binds its handover socket
//!    (its slot says `receiving`), the old one gets SIGUSR2 and hands its connections over,
//!    the new one says `ready`; the old one lingers while it relays wss clients.
//! 4. The business workers, as `reload` does.
//! 5. The HTTP process, like the register.
//!
//! A failure stops the upgrade where it is: what was replaced stays replaced, what was not
//! keeps running the old binary; the reason goes into the statistics header for the CLI.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use log::{error, info};
use slab::Slab;

use super::reload::check_executable;
use super::spawn::{self, describe};
use super::state::{self, Continue, Inner, Listener, MasterState, ProcState};
use super::{Kind, Listeners, MASTER_SIGNALS, Master, Phase, Proc, Timer};
use crate::config::{Config, MachineType};
use crate::reactor::Ctx;
use crate::reactor::signals::send as signal;
use crate::stats::{Operation, Shm, State};

/// How long a new gateway may take to be ready to receive the handover, and the handover
/// to complete (`docs/upgrade.md`).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `upgrade-check` may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// A retiring gateway relays its wss clients for `upgrade_drain`; this long after that it is
/// killed.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// A replaced register or HTTP process is killed this long after `stop_timeout`.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Exit status of a new gateway that cannot read the handover format of the running one
/// (EX_DATAERR).
pub const EXIT_HANDOVER_FORMAT: i32 = 65;
/// Exit status of a new gateway whose handover failed otherwise (EX_TEMPFAIL).
pub const EXIT_HANDOVER_FAILED: i32 = 75;

/// The first word `upgrade-check` prints on success, then the binary's version label.
pub const CHECK_OK: &str = "gatewayworker";

/// The part of the upgrade under way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Register,
    Gateways,
    Workers,
    Http,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    /// A new register or HTTP process starts on the same listener; the old one stops once
    /// the new one is ready.
    Replace { old: usize, new: usize, since: Instant },
    /// A new gateway starts and binds its handover socket.
    Receiving { old: usize, new: usize, since: Instant, path: PathBuf },
    /// The old gateway was asked to hand over.
    Handover { old: usize, new: usize, since: Instant, path: PathBuf },
    /// Business workers, by the reload machinery.
    Workers,
}

/// The upgrade in progress, in the master that re-executed itself.
#[derive(Default)]
pub struct Upgrade {
    part: Option<Part>,
    step: Option<Step>,
    /// Gateway entries still to replace.
    gateways: VecDeque<usize>,
    /// The version label of the master before the upgrade.
    from: String,
}

impl Upgrade {
    pub fn active(&self) -> bool {
        self.part.is_some()
    }

    /// The reload machinery works for the upgrade now.
    pub fn replacing_workers(&self) -> bool {
        self.step == Some(Step::Workers)
    }
}

/// Why an upgrade cannot start now, if it cannot.
fn refusal(running: bool, reloading: bool, upgrading: bool) -> Option<&'static str> {
    if !running {
        Some("upgrade refused: the master is stopping")
    } else if upgrading {
        Some("upgrade refused: an upgrade is in progress")
    } else if reloading {
        Some("upgrade refused: a reload is in progress")
    } else {
        None
    }
}

/// Why a new gateway that exited before it was ready failed, from its wait status.
fn gateway_exit_reason(status: i32) -> String {
    match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
        (true, EXIT_HANDOVER_FORMAT) => format!(
            "the new binary cannot read the handover format of the running gateway (exit status {EXIT_HANDOVER_FORMAT})"
        ),
        (true, EXIT_HANDOVER_FAILED) => format!("the handover failed (exit status {EXIT_HANDOVER_FAILED})"),
        _ => format!("the new gateway exited before it was ready ({})", describe(status)),
    }
}

/// Set or clear FD_CLOEXEC on `fd`.
fn set_cloexec(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on an fd number has no memory effects.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on { flags | libc::FD_CLOEXEC } else { flags & !libc::FD_CLOEXEC };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The master's signals as a set.
fn master_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in MASTER_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Unblock the master's signals (blocked by the old master across its `execve`, so none
/// found the new one without its handlers).
pub fn unblock_signals() {
    let set = master_sigset();
    // SAFETY: the master is single-threaded; the set is initialised.
    unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
}

/// The master's signals blocked while it checks the new binary and re-executes itself: one
/// that arrives meanwhile stays pending in the kernel and reaches the new master (a handler
/// of the old one would take it and the exec would lose it). Dropping it restores the mask.
struct Blocked(libc::sigset_t);

impl Blocked {
    fn new() -> Blocked {
        let set = master_sigset();
        // SAFETY: a zeroed sigset_t is a valid out-parameter.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: the master is single-threaded; both sets are valid.
        unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) };
        Blocked(old)
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: restoring the mask saved by `new`.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::other("a NUL byte in an argument"))
}

/// Re-execute `exe` as the master with `state`, keeping `fds` open (the caller blocked the
/// master's signals). Returns only when the `execve` failed, with the fds as they were.
fn exec_master(exe: &Path, conf: &Path, state: &str, fds: &[(String, RawFd)]) -> io::Error {
    let build = || -> io::Result<(CString, Vec<CString>, Vec<CString>)> {
        let prog = cstring(exe.as_os_str().as_bytes())?;
        let argv = vec![
            prog.clone(),
            cstring(b"master-resume")?,
            cstring(b"--conf")?,
            cstring(conf.as_os_str().as_bytes())?,
        ];
        let mut envp = Vec::new();
        for (k, v) in std::env::vars_os().filter(|(k, _)| k != state::ENV) {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstring(&kv)?);
        }
        envp.push(cstring(format!("{}={state}", state::ENV).as_bytes())?);
        Ok((prog, argv, envp))
    };
    let (prog, argv, envp) = match build() {
        Ok(v) => v,
        Err(e) => return e,
    };
    let restore = |upto: usize| {
        for (_, fd) in &fds[..upto] {
            let _ = set_cloexec(*fd, true);
        }
    };
    for (n, (name, fd)) in fds.iter().enumerate() {
        if let Err(e) = set_cloexec(*fd, false) {
            restore(n);
            return io::Error::other(format!("cannot keep listener {name} (fd {fd}) open: {e}"));
        }
    }
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: single-threaded; the arrays are NUL-terminated and outlive the call; on
    // success execve does not return.
    unsafe { libc::execve(prog.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    let e = io::Error::last_os_error();
    restore(fds.len());
    e
}

/// Run `<exe> upgrade-check --conf <conf>` with `state`; the new binary's version label, or
/// why it refuses.
fn run_check(exe: &Path, conf: &Path, state: &str) -> Result<String, String> {
    let until = Instant::now() + CHECK_TIMEOUT;
    let mut child = loop {
        let spawned = Command::new(exe)
            .arg("upgrade-check")
            .arg("--conf")
            .arg(conf)
            .env(state::ENV, state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match spawned {
            Ok(child) => break child,
            // Just written: whoever wrote it may still hold it open for a moment.
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("cannot start it: {e}")),
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() >= until => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {CHECK_TIMEOUT:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(format!("cannot wait for it: {e}")),
        }
    };
    let read = |p: Option<&mut dyn Read>| {
        let mut s = String::new();
        if let Some(p) = p {
            let _ = p.read_to_string(&mut s);
        }
        s.trim().to_string()
    };
    let out = read(child.stdout.as_mut().map(|p| p as &mut dyn Read));
    let err = read(child.stderr.as_mut().map(|p| p as &mut dyn Read));
    if !status.success() {
        let msg = if err.is_empty() { out } else { err };
        let msg = if msg.is_empty() { "no message".to_string() } else { msg };
        return Err(format!("{msg} ({})", describe(status.into_raw())));
    }
    match out.strip_prefix(CHECK_OK).and_then(|v| v.strip_prefix(' ')) {
        Some(label) if !label.is_empty() && !label.contains('\n') => Ok(label.to_string()),
        _ => Err(format!(
            "it does not answer as a gatewayworker binary that knows `upgrade` (it printed {out:?})"
        )),
    }
}

/// `upgrade-check`, in the new binary: can it take over from the master whose state is
/// `state_text`, with the configuration `cfg`? `app_known` says whether the binary has the
/// configured application. Returns its answer line, or why not.
pub fn check_new_binary(
    cfg: &Config,
    state_text: Option<&str>,
    app_known: impl Fn(&str) -> bool,
    version: &str,
) -> Result<String, String> {
    let text = state_text.ok_or_else(|| format!("no master state given ({} is not set)", state::ENV))?;
    let s = MasterState::decode(text).map_err(|e| e.to_string())?;
    s.check_against(cfg)?;
    if let Some(w) = cfg.worker.as_ref().filter(|_| cfg.machine_type != MachineType::Master)
        && !app_known(&w.app)
    {
        return Err(format!("this binary has no application {:?} (worker.app)", w.app));
    }
    let layout = Shm::layout(&s.stats).map_err(|e| format!("statistics file {}: {e}", s.stats.display()))?;
    if layout != crate::stats::VERSION {
        return Err(format!(
            "the statistics layout changed (running: {layout}, this binary: {}); use restart",
            crate::stats::VERSION
        ));
    }
    Ok(format!("{CHECK_OK} {version}"))
}

/// An fd that is open in this process.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: fcntl on an fd number has no memory effects.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

impl Master {
    /// What goes through the `execve`.
    fn state(&self) -> MasterState {
        let addr = state::addresses(&self.cfg);
        let l = &self.listeners;
        let listener = |fd: &OwnedFd, addr: &Option<String>| Listener {
            fd: fd.as_raw_fd(),
            addr: addr.clone().unwrap_or_default(),
        };
        let now = Instant::now();
        let ms = |d: Duration| d.as_millis() as u64;
        MasterState {
            next: Continue::Register,
            from: self.version.to_string(),
            conf: self.conf.clone(),
            exe: self.exe.clone(),
            stats: self.cfg.stats_path(),
            pid_file: self.cfg.pid_file.clone(),
            daemon: self.shm.header().daemon.load(std::sync::atomic::Ordering::Relaxed) != 0,
            child_log: self.child_log.clone(),
            generation: self.generation,
            register: l.register.as_ref().map(|fd| listener(fd, &addr.register)),
            public: l
                .public
                .iter()
                .enumerate()
                .map(|(i, fd)| listener(fd, &addr.public.get(i).cloned()))
                .collect(),
            inner: l
                .inner
                .iter()
                .enumerate()
                .map(|(i, (tcp, unix, path))| Inner {
                    tcp: tcp.as_raw_fd(),
                    unix: unix.as_raw_fd(),
                    addr: addr.inner.get(i).cloned().unwrap_or_default(),
                    path: path.clone(),
                })
                .collect(),
            http: l.http.as_ref().map(|fd| listener(fd, &addr.http)),
            free_slots: self.free_slots.clone(),
            procs: self
                .procs
                .iter()
                .map(|(_, p)| ProcState {
                    kind: p.kind,
                    slot: p.slot,
                    pid: p.pid,
                    generation: p.generation,
                    age_ms: ms(p.started.elapsed()),
                    quick_deaths: p.quick_deaths,
                    retiring: p.retiring,
                    deadline_ms: p.deadline.map(|d| ms(d.saturating_duration_since(now))),
                })
                .collect(),
        }
    }

    /// The master a re-executed binary rebuilds from the old one's state: the same
    /// listeners, statistics region and process table. `version` is this binary's label.
    pub fn resume(cfg: Config, s: MasterState, version: &'static str) -> Result<Master, String> {
        s.check_against(&cfg)?;
        for (name, fd) in s.fds() {
            if !is_open(fd) {
                return Err(format!("listener {name} (fd {fd}) did not survive the exec"));
            }
            let _ = set_cloexec(fd, true);
        }
        let shm = Shm::open(&s.stats, true)
            .map_err(|e| format!("cannot open the statistics file {}: {e}", s.stats.display()))?;
        let count = shm.slot_count();
        let slots = s.procs.iter().map(|p| p.slot).chain(s.free_slots.iter().copied());
        if let Some(bad) = slots.into_iter().find(|&x| x >= count) {
            return Err(format!("slot {bad} is past the statistics region's {count} slots"));
        }
        // SAFETY: the old master passed these fds through the exec for this process to own;
        // each is open (checked above) and listed once.
        let own = |fd: RawFd| unsafe { OwnedFd::from_raw_fd(fd) };
        let listeners = Listeners {
            register: s.register.as_ref().map(|l| own(l.fd)),
            public: s.public.iter().map(|l| own(l.fd)).collect(),
            inner: s.inner.iter().map(|i| (own(i.tcp), own(i.unix), i.path.clone())).collect(),
            http: s.http.as_ref().map(|l| own(l.fd)),
        };
        let now = Instant::now();
        let mut procs = Slab::new();
        for p in &s.procs {
            procs.insert(Proc {
                kind: p.kind,
                slot: p.slot,
                pid: p.pid,
                started: now.checked_sub(Duration::from_millis(p.age_ms)).unwrap_or(now),
                quick_deaths: p.quick_deaths,
                retiring: p.retiring,
                generation: p.generation,
                deadline: p.deadline_ms.map(|d| now + Duration::from_millis(d)),
            });
        }
        let Continue::Register = s.next;
        Ok(Master {
            cfg,
            conf: s.conf,
            exe: s.exe,
            listeners,
            procs,
            shm,
            free_slots: s.free_slots,
            phase: Phase::Running,
            reload: Default::default(),
            generation: s.generation,
            child_log: s.child_log,
            kill_at: None,
            version,
            upgrade: Upgrade { from: s.from, ..Default::default() },
        })
    }

    /// Record the end of an upgrade in the statistics header (for the CLI) and the log.
    fn upgrade_outcome(&mut self, failed: bool, message: String) {
        if failed {
            error!("{message}");
        } else {
            info!("{message}");
        }
        let h = self.shm.header();
        h.set_operation(Operation::Idle);
        h.finish_upgrade(failed, &message);
    }

    /// SIGUSR2: check the new binary, then re-execute it in place.
    pub(super) fn begin_upgrade(&mut self) {
        let running = self.phase == Phase::Running;
        if let Some(why) = refusal(running, self.reload.active(), self.upgrade.active()) {
            return self.upgrade_outcome(true, why.to_string());
        }
        let exe = self.exe.display().to_string();
        if let Err(e) = check_executable(&self.exe) {
            return self.upgrade_outcome(true, format!("upgrade refused: cannot run {exe}: {e}"));
        }
        self.shm.header().set_operation(Operation::Upgrade);
        let blocked = Blocked::new();
        let state = self.state();
        let text = state.encode();
        let label = match run_check(&self.exe, &self.conf, &text) {
            Ok(label) => label,
            Err(e) => {
                drop(blocked);
                return self.upgrade_outcome(true, format!("upgrade refused: {exe} upgrade-check: {e}"));
            }
        };
        info!("upgrade: {exe} (version {label}) passed its check; the master re-executes itself");
        let e = exec_master(&self.exe, &self.conf, &text, &state.fds());
        drop(blocked);
        self.upgrade_outcome(true, format!("upgrade failed: cannot re-execute the master from {exe}: {e}"));
    }

    /// The master re-executed itself: take its children back, then go on with the upgrade.
    pub(super) fn resume_children(&mut self, cx: &mut Ctx<'_, Timer>) {
        info!(
            "master re-executed from {} (version {} -> {})",
            self.exe.display(),
            self.upgrade.from,
            self.version
        );
        // Children that exited while the master re-executed.
        for exit in spawn::reap() {
            self.on_exit(cx, exit.pid, exit.status);
        }
        let idle: Vec<usize> = self.procs.iter().filter(|(_, p)| p.pid.is_none()).map(|(k, _)| k).collect();
        for i in idle {
            if self.procs[i].retiring {
                self.drop_proc(i);
            } else {
                // Its respawn timer did not survive the exec.
                cx.after(Duration::from_millis(500), Timer::Respawn(i));
            }
        }
        self.upgrade_part(cx, Part::Register);
    }

    /// The one live, non-retiring entry of `kind`.
    fn live_one(&self, kind: Kind) -> Option<usize> {
        self.procs.iter().find(|(_, p)| p.kind == kind && p.pid.is_some() && !p.retiring).map(|(k, _)| k)
    }

    fn upgrade_part(&mut self, cx: &mut Ctx<'_, Timer>, part: Part) {
        self.upgrade.part = Some(part);
        self.upgrade.step = None;
        match part {
            Part::Register | Part::Http => {
                let kind = if part == Part::Register { Kind::Register } else { Kind::Http };
                match self.live_one(kind) {
                    Some(old) => self.replace_start(cx, old),
                    None if part == Part::Register => self.upgrade_part(cx, Part::Gateways),
                    None => self.upgrade_done(),
                }
            }
            Part::Gateways => {
                self.upgrade.gateways = self
                    .procs
                    .iter()
                    .filter(|(_, p)| matches!(p.kind, Kind::Gateway { .. }) && p.pid.is_some() && !p.retiring)
                    .map(|(k, _)| k)
                    .collect();
                self.next_gateway(cx);
            }
            Part::Workers => {
                self.upgrade.step = Some(Step::Workers);
                info!("upgrade: replacing the business workers");
                self.replace_workers(cx);
            }
        }
    }

    /// The business workers' part ended.
    pub(super) fn upgrade_workers_finished(&mut self, cx: &mut Ctx<'_, Timer>, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => self.upgrade_part(cx, Part::Http),
            Err(why) => self.upgrade_failed(cx, format!("business workers: {why}")),
        }
    }

    /// A new entry like `old`, in a free slot, started; its key.
    fn spawn_replacement(&mut self, old: usize, handover: Option<PathBuf>) -> Result<usize, String> {
        let p = &self.procs[old];
        let (kind, generation) = (p.kind, p.generation);
        let slot = self.free_slots.pop().ok_or_else(|| {
            "no free statistics slot (old gateways still relaying wss clients hold theirs; retry after upgrade_drain)"
                .to_string()
        })?;
        let new = self.procs.insert(Proc {
            kind,
            slot,
            pid: None,
            started: Instant::now(),
            quick_deaths: 0,
            retiring: false,
            generation,
            deadline: None,
        });
        match self.spawn_proc_with(new, handover) {
            Ok(pid) => {
                self.procs[new].pid = Some(pid);
                Ok(new)
            }
            Err(e) => {
                self.drop_proc(new);
                Err(format!("cannot start it from {}: {e}", self.exe.display()))
            }
        }
    }

    /// How entry `i` is named in upgrade messages.
    fn describe_proc(&self, i: usize) -> String {
        let Some(p) = self.procs.get(i) else { return "a process".into() };
        match p.kind {
            Kind::Gateway { group, id, .. } => {
                let g = &self.cfg.gateways[group];
                format!("gateway {}[{id}] (inner port {})", g.name, g.start_port + id)
            }
            Kind::Register => "the register".into(),
            Kind::Http => "the HTTP process".into(),
            Kind::Worker { id } => format!("business worker {id}"),
        }
    }

    /// Start the replacement of the register or the HTTP process.
    fn replace_start(&mut self, cx: &mut Ctx<'_, Timer>, old: usize) {
        let what = self.describe_proc(old);
        match self.spawn_replacement(old, None) {
            Ok(new) => {
                info!("upgrade: {what}: the new one started");
                self.upgrade.step = Some(Step::Replace { old, new, since: Instant::now() });
                cx.after(POLL, Timer::UpgradeCheck);
            }
            Err(e) => self.upgrade_failed(cx, format!("{what}: {e}")),
        }
    }

    fn next_gateway(&mut self, cx: &mut Ctx<'_, Timer>) {
        let Some(old) = self.upgrade.gateways.pop_front() else {
            return self.upgrade_part(cx, Part::Workers);
        };
        let Some(Kind::Gateway { group, id, .. }) =
            self.procs.get(old).filter(|p| p.pid.is_some() && !p.retiring).map(|p| p.kind)
        else {
            return self.next_gateway(cx);
        };
        let what = self.describe_proc(old);
        let path = self.cfg.handover_socket_path(self.cfg.gateways[group].start_port + id);
        match std::fs::remove_file(&path) {
            Ok(()) => info!("upgrade: removed a stale handover socket {}", path.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let why = format!("{what}: cannot remove the stale handover socket {}: {e}", path.display());
                return self.upgrade_failed(cx, why);
            }
        }
        match self.spawn_replacement(old, Some(path.clone())) {
            Ok(new) => {
                info!("upgrade: {what}: the new gateway started; waiting for it to receive the handover");
                self.upgrade.step = Some(Step::Receiving { old, new, since: Instant::now(), path });
                cx.after(POLL, Timer::UpgradeCheck);
            }
            Err(e) => self.upgrade_failed(cx, format!("{what}: {e}")),
        }
    }

    /// Poll the current step.
    pub(super) fn upgrade_poll(&mut self, cx: &mut Ctx<'_, Timer>) {
        let Some(step) = self.upgrade.step.clone() else { return };
        let state_of =
            |m: &Master, i: usize| m.procs.get(i).and_then(|p| m.shm.slot(p.slot)).and_then(|s| s.state());
        match step {
            Step::Replace { old, new, since } => {
                let what = self.describe_proc(old);
                if state_of(self, new) == Some(State::Ready) {
                    let deadline = Instant::now() + self.cfg.stop_timeout + STOP_GRACE;
                    self.retire(old, Some(libc::SIGTERM), deadline);
                    info!("upgrade: {what} replaced");
                    let next =
                        if self.upgrade.part == Some(Part::Register) { Part::Gateways } else { Part::Http };
                    if next == Part::Http {
                        return self.upgrade_done();
                    }
                    return self.upgrade_part(cx, next);
                }
                let timeout = self.cfg.reload_timeout;
                if since.elapsed() >= timeout {
                    return self
                        .upgrade_failed(cx, format!("{what}: the new one is not ready after {timeout:?}"));
                }
            }
            Step::Receiving { old, new, since, path } => {
                let what = self.describe_proc(old);
                match state_of(self, new) {
                    Some(State::Receiving) => {
                        let Some(pid) = self.procs.get(old).and_then(|p| p.pid) else {
                            let why = format!("{what}: the old gateway exited before the handover");
                            return self.upgrade_failed(cx, why);
                        };
                        info!(
                            "upgrade: {what}: the new gateway is receiving; the old one [{pid}] hands over"
                        );
                        signal(pid, libc::SIGUSR2);
                        self.upgrade.step = Some(Step::Handover { old, new, since: Instant::now(), path });
                    }
                    Some(State::Ready | State::Draining) => {
                        let why = format!(
                            "{what}: the new gateway started serving without waiting for the handover (GW_HANDOVER is not supported by the new binary)"
                        );
                        return self.upgrade_failed(cx, why);
                    }
                    _ if since.elapsed() >= HANDOVER_TIMEOUT => {
                        let why = format!(
                            "{what}: the new gateway was not ready to receive the handover within {HANDOVER_TIMEOUT:?}"
                        );
                        return self.upgrade_failed(cx, why);
                    }
                    _ => {}
                }
            }
            Step::Handover { old, new, since, path } => {
                let what = self.describe_proc(old);
                if state_of(self, new) == Some(State::Ready) {
                    let _ = std::fs::remove_file(&path);
                    let deadline = Instant::now() + self.cfg.upgrade_drain + DRAIN_GRACE;
                    self.retire(old, None, deadline);
                    info!("upgrade: {what} handed over");
                    return self.next_gateway(cx);
                }
                if since.elapsed() >= HANDOVER_TIMEOUT {
                    let why = format!("{what}: the handover did not complete within {HANDOVER_TIMEOUT:?}");
                    return self.upgrade_failed(cx, why);
                }
            }
            Step::Workers => return,
        }
        cx.after(POLL, Timer::UpgradeCheck);
    }

    /// Entry `i` was replaced: it is not re-spawned, `sig` asks it to stop, it is killed if
    /// still alive at `deadline`. Dropped at once when it already exited.
    fn retire(&mut self, i: usize, sig: Option<i32>, deadline: Instant) {
        let Some(p) = self.procs.get_mut(i) else { return };
        let Some(pid) = p.pid else {
            self.drop_proc(i);
            return;
        };
        p.retiring = true;
        p.deadline = Some(deadline);
        if let Some(sig) = sig {
            signal(pid, sig);
        }
    }

    /// True when entry `i` is the old gateway of the handover under way (its exit does not
    /// re-spawn it before the handover ends).
    pub(super) fn upgrade_holds(&self, i: usize) -> bool {
        matches!(&self.upgrade.step, Some(Step::Handover { old, .. }) if *old == i)
    }

    /// A replacement exited before it was ready: the upgrade fails, the old process keeps
    /// running. Returns true when `i` was that replacement.
    pub(super) fn upgrade_probation_failed(
        &mut self,
        cx: &mut Ctx<'_, Timer>,
        i: usize,
        status: i32,
    ) -> bool {
        let (old, new) = match &self.upgrade.step {
            Some(
                Step::Replace { old, new, .. }
                | Step::Receiving { old, new, .. }
                | Step::Handover { old, new, .. },
            ) => (*old, *new),
            _ => return false,
        };
        if new != i {
            return false;
        }
        let what = self.describe_proc(old);
        let reason = match self.procs[i].kind {
            Kind::Gateway { .. } => gateway_exit_reason(status),
            _ => format!("the new one exited before it was ready ({})", describe(status)),
        };
        if let Some(slot) = self.shm.slot(self.procs[i].slot) {
            crate::stats::Slot::bump(&slot.exit_count);
            crate::stats::Slot::set(&slot.last_exit_status, status as u64);
            slot.set_state(State::Exited);
        }
        self.drop_proc(i);
        self.upgrade_failed(cx, format!("{what}: {reason}"));
        true
    }

    /// Stop the upgrade where it is: the replacement under way is killed, the process it
    /// was to replace keeps running (re-spawned if it exited during its handover).
    fn upgrade_failed(&mut self, cx: &mut Ctx<'_, Timer>, why: String) {
        let step = self.upgrade.step.take();
        self.upgrade.part = None;
        self.upgrade.gateways.clear();
        if let Some(
            Step::Replace { old, new, .. }
            | Step::Receiving { old, new, .. }
            | Step::Handover { old, new, .. },
        ) = &step
        {
            if let Some(p) = self.procs.get_mut(*new) {
                match p.pid {
                    Some(pid) => {
                        p.retiring = true;
                        signal(pid, libc::SIGKILL);
                    }
                    None => self.drop_proc(*new),
                }
            }
            if self.procs.get(*old).is_some_and(|p| p.pid.is_none() && !p.retiring) {
                self.start_proc(cx, *old);
            }
        }
        if let Some(Step::Receiving { path, .. } | Step::Handover { path, .. }) = &step {
            let _ = std::fs::remove_file(path);
        }
        self.upgrade_outcome(
            true,
            format!(
                "upgrade failed: {why}; the master runs version {}, what was not replaced keeps its binary",
                self.version
            ),
        );
    }

    fn upgrade_done(&mut self) {
        let from = std::mem::take(&mut self.upgrade.from);
        self.upgrade = Upgrade::default();
        self.upgrade_outcome(false, format!("upgrade done: version {from} -> {}", self.version));
    }

    /// A stop aborts the upgrade; every child stops as usual.
    pub(super) fn upgrade_abort(&mut self) {
        if !self.upgrade.active() {
            return;
        }
        if let Some(Step::Receiving { path, .. } | Step::Handover { path, .. }) = &self.upgrade.step {
            let _ = std::fs::remove_file(path);
        }
        self.upgrade = Upgrade::default();
        self.upgrade_outcome(true, "upgrade aborted: the master is stopping".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upgrade_waits_for_the_master_to_be_idle() {
        assert_eq!(refusal(true, false, false), None);
        assert_eq!(refusal(true, true, false), Some("upgrade refused: a reload is in progress"));
        assert_eq!(refusal(true, false, true), Some("upgrade refused: an upgrade is in progress"));
        assert_eq!(refusal(true, true, true), Some("upgrade refused: an upgrade is in progress"));
        assert_eq!(refusal(false, false, false), Some("upgrade refused: the master is stopping"));
    }

    fn exited(code: i32) -> i32 {
        code << 8
    }

    #[test]
    fn a_new_gateway_exit_status_says_why_the_handover_failed() {
        assert!(gateway_exit_reason(exited(65)).contains("cannot read the handover format"));
        assert!(gateway_exit_reason(exited(75)).contains("the handover failed (exit status 75)"));
        assert!(gateway_exit_reason(exited(1)).contains("exited before it was ready (exit status 1)"));
        assert!(gateway_exit_reason(libc::SIGKILL).contains("killed by signal 9"));
    }

    #[test]
    fn cloexec_is_set_and_cleared() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = f.as_raw_fd();
        // SAFETY: fcntl on our own fd.
        let flags = || unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC;
        assert_ne!(flags(), 0, "std opens close-on-exec");
        set_cloexec(fd, false).unwrap();
        assert_eq!(flags(), 0);
        set_cloexec(fd, true).unwrap();
        assert_ne!(flags(), 0);
        assert!(is_open(fd));
        drop(f);
        assert!(!is_open(fd));
        assert!(set_cloexec(fd, true).is_err());
    }

    /// An exec that cannot happen returns its error and leaves the fds close-on-exec.
    #[test]
    fn a_failed_exec_changes_nothing() {
        let f = std::fs::File::open("/dev/null").unwrap();
        let fd = f.as_raw_fd();
        let e = exec_master(
            Path::new("/nonexistent/gatewayworker"),
            Path::new("c.toml"),
            "format 1",
            &[("test".into(), fd)],
        );
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
        // SAFETY: fcntl on our own fd.
        assert_ne!(unsafe { libc::fcntl(fd, libc::F_GETFD) } & libc::FD_CLOEXEC, 0);
        let e = exec_master(Path::new("/bin/true"), Path::new("c\0.toml"), "", &[]);
        assert!(e.to_string().contains("NUL"), "{e}");
    }

    #[test]
    fn the_check_of_a_binary_that_is_not_ours_refuses() {
        // `true` exits 0 and says nothing: not a gatewayworker binary.
        let e = run_check(Path::new("/bin/true"), Path::new("c.toml"), "").unwrap_err();
        assert!(e.contains("does not answer as a gatewayworker binary"), "{e}");
        let e = run_check(Path::new("/bin/false"), Path::new("c.toml"), "").unwrap_err();
        assert!(e.contains("exit status 1"), "{e}");
        let e = run_check(Path::new("/nonexistent/gw"), Path::new("c.toml"), "").unwrap_err();
        assert!(e.starts_with("cannot start it"), "{e}");
    }
}

//! Reload: business workers only, one at a time, new before old. For each worker: spawn its
//! replacement from the binary on disk, wait until it is linked to every gateway (its slot
//! says Ready), then ask the old one to drain (SIGQUIT) and wait for it to exit. A
//! replacement that cannot start or dies before it is ready aborts the reload and the old
//! workers keep running.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::{Kind, Master, Phase, Proc, Timer, spawn};
use crate::reactor::Ctx;
use crate::reactor::signals::send as signal;
use crate::stats::State;

const CHECK: Duration = Duration::from_millis(20);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// The replacement is linking to the gateways.
    Ready,
    /// The old worker is draining.
    OldExit,
}

#[derive(Clone, Copy, Debug)]
struct Step {
    old: usize,
    new: usize,
    since: Instant,
    wait: Wait,
}

#[derive(Default)]
pub struct Reload {
    queue: VecDeque<usize>,
    step: Option<Step>,
}

impl Reload {
    pub fn active(&self) -> bool {
        self.step.is_some()
    }

    pub fn abort(&mut self) {
        self.queue.clear();
        self.step = None;
    }
}

impl Master {
    /// SIGUSR1.
    pub(super) fn begin_reload(&mut self, cx: &mut Ctx<'_, Timer>) {
        if self.phase != Phase::Running {
            return;
        }
        // Everyone reopens the log file (logrotate); gateways and the register keep running.
        crate::logging::reopen();
        for pid in self.live_pids(|k| !matches!(k, Kind::Worker { .. })) {
            signal(pid, libc::SIGUSR1);
        }
        if self.reload.active() {
            info!("reload already in progress; ignored");
            return;
        }
        if let Err(e) = check_executable(&self.exe) {
            error!("reload: cannot run {}: {e}; keeping the old business workers", self.exe.display());
            return;
        }
        let old: VecDeque<usize> = self
            .procs
            .iter()
            .filter(|(_, p)| matches!(p.kind, Kind::Worker { .. }) && p.pid.is_some() && !p.retiring)
            .map(|(k, _)| k)
            .collect();
        if old.is_empty() {
            // A master machine: done (the `reload` command waits for this count).
            self.shm.header().reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!("reload done: no business worker runs here");
            return;
        }
        self.generation += 1;
        info!("reloading {} business workers", old.len());
        self.reload.queue = old;
        self.reload_next(cx);
    }

    fn reload_next(&mut self, cx: &mut Ctx<'_, Timer>) {
        let Some(old) = self.reload.queue.pop_front() else {
            self.reload.step = None;
            self.shm.header().reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            info!("reload done");
            return;
        };
        let Some(kind) = self.procs.get(old).filter(|p| p.pid.is_some()).map(|p| p.kind) else {
            return self.reload_next(cx);
        };
        let Some(slot) = self.free_slots.pop() else {
            error!("reload: no free statistics slot; reload aborted");
            self.reload.abort();
            return;
        };
        let new = self.procs.insert(Proc {
            kind,
            slot,
            pid: None,
            started: Instant::now(),
            quick_deaths: 0,
            retiring: false,
            generation: self.generation,
        });
        match self.spawn_proc(new) {
            Ok(pid) => {
                self.procs[new].pid = Some(pid);
                self.reload.step = Some(Step { old, new, since: Instant::now(), wait: Wait::Ready });
                cx.after(CHECK, Timer::ReloadCheck);
            }
            Err(e) => {
                error!(
                    "reload: cannot start the new business worker from {}: {e}; keeping the old ones",
                    self.exe.display()
                );
                self.drop_proc(new);
                self.reload.abort();
            }
        }
    }

    /// Poll the current step.
    pub(super) fn reload_check(&mut self, cx: &mut Ctx<'_, Timer>) {
        let Some(step) = self.reload.step else { return };
        let timeout = self.cfg.reload_timeout;
        match step.wait {
            Wait::Ready => {
                let ready = self
                    .procs
                    .get(step.new)
                    .and_then(|p| self.shm.slot(p.slot))
                    .is_some_and(|s| s.state() == Some(State::Ready));
                let late = step.since.elapsed() >= timeout;
                if ready || late {
                    if late && !ready {
                        warn!(
                            "reload: the new business worker is not linked to every gateway after {timeout:?}; replacing the old one anyway"
                        );
                    }
                    if let Some(p) = self.procs.get_mut(step.old) {
                        p.retiring = true;
                        if let Some(pid) = p.pid {
                            signal(pid, libc::SIGQUIT);
                        }
                    }
                    self.reload.step = Some(Step { wait: Wait::OldExit, since: Instant::now(), ..step });
                }
            }
            Wait::OldExit => {
                if step.since.elapsed() >= timeout
                    && let Some(pid) = self.procs.get(step.old).and_then(|p| p.pid)
                {
                    warn!(
                        "reload: old business worker {pid} did not finish draining in {timeout:?}; killing it"
                    );
                    signal(pid, libc::SIGKILL);
                }
            }
        }
        if self.reload.step.is_some() {
            cx.after(CHECK, Timer::ReloadCheck);
        }
    }

    /// A retired child exited (reload replacement done, or stop).
    pub(super) fn after_retired_exit(&mut self, cx: &mut Ctx<'_, Timer>, i: usize) {
        if self.phase != Phase::Running {
            return;
        }
        if self.procs.get(i).is_some_and(|p| p.retiring) {
            self.drop_proc(i);
        }
        if self.reload.step.is_some_and(|s| s.old == i) {
            self.reload_next(cx);
        }
    }

    /// A replacement died before it was ready: abort, keep the old workers. Returns true
    /// when `i` was that replacement.
    pub(super) fn reload_probation_failed(&mut self, i: usize, status: i32) -> bool {
        let Some(step) = self.reload.step else { return false };
        if step.new != i || step.wait != Wait::Ready {
            return false;
        }
        error!(
            "reload: the new business worker died before it was ready ({}); reload aborted, the old workers keep running",
            spawn::describe(status)
        );
        self.drop_proc(i);
        self.reload.abort();
        true
    }

    fn drop_proc(&mut self, i: usize) {
        if let Some(p) = self.procs.try_remove(i) {
            self.free_slots.push(p.slot);
        }
    }
}

fn check_executable(path: &std::path::Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(std::io::Error::other("not an executable file"));
    }
    Ok(())
}

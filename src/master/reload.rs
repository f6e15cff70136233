//! Reload: business workers only, one at a time, new before old. For each worker: spawn its
//! replacement from the binary on disk, wait until it is linked to every gateway (its slot
//! says Ready), then ask the old one to drain (SIGQUIT) and wait for it to exit. A
//! replacement that cannot start or dies before it is ready aborts the reload and the old
//! workers keep running. `upgrade` replaces the business workers by the same steps.

use std::collections::VecDeque;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use log::{error, info, warn};

use super::{Kind, Master, Phase, Proc, Timer, spawn};
use crate::reactor::Ctx;
use crate::reactor::signals::send as signal;
use crate::stats::{Operation, State};

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
        if self.upgrade.active() {
            warn!("reload refused: an upgrade is in progress (it replaces the business workers too)");
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
        self.shm.header().set_operation(Operation::Reload);
        self.replace_workers(cx);
    }

    /// Replace every business worker, one at a time, new before old; `reload_finished`
    /// reports the end.
    pub(super) fn replace_workers(&mut self, cx: &mut Ctx<'_, Timer>) {
        let old: VecDeque<usize> = self
            .procs
            .iter()
            .filter(|(_, p)| matches!(p.kind, Kind::Worker { .. }) && p.pid.is_some() && !p.retiring)
            .map(|(k, _)| k)
            .collect();
        if old.is_empty() {
            // A master machine: done at once.
            return self.reload_finished(cx, Ok("no business worker runs here"));
        }
        self.generation += 1;
        info!("reloading {} business workers", old.len());
        self.reload.queue = old;
        self.reload_next(cx);
    }

    fn reload_next(&mut self, cx: &mut Ctx<'_, Timer>) {
        let Some(old) = self.reload.queue.pop_front() else {
            return self.reload_finished(cx, Ok(""));
        };
        let Some(kind) = self.procs.get(old).filter(|p| p.pid.is_some()).map(|p| p.kind) else {
            return self.reload_next(cx);
        };
        let Some(slot) = self.free_slots.pop() else {
            return self.reload_finished(cx, Err("no free statistics slot".into()));
        };
        let new = self.procs.insert(Proc {
            kind,
            slot,
            pid: None,
            started: Instant::now(),
            quick_deaths: 0,
            retiring: false,
            generation: self.generation,
            deadline: None,
        });
        match self.spawn_proc(new) {
            Ok(pid) => {
                self.procs[new].pid = Some(pid);
                self.reload.step = Some(Step { old, new, since: Instant::now(), wait: Wait::Ready });
                cx.after(CHECK, Timer::ReloadCheck);
            }
            Err(e) => {
                self.drop_proc(new);
                let why = format!("cannot start the new business worker from {}: {e}", self.exe.display());
                self.reload_finished(cx, Err(why));
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
    pub(super) fn reload_probation_failed(&mut self, cx: &mut Ctx<'_, Timer>, i: usize, status: i32) -> bool {
        let Some(step) = self.reload.step else { return false };
        if step.new != i || step.wait != Wait::Ready {
            return false;
        }
        self.drop_proc(i);
        let why = format!("the new business worker died before it was ready ({})", spawn::describe(status));
        self.reload_finished(cx, Err(why));
        true
    }

    /// The replacement of the business workers ended: `Ok(note)` every one was replaced,
    /// `Err(why)` it stopped there and the old ones keep running. For a reload, the count the
    /// `reload` command waits for; within an upgrade, its next step.
    fn reload_finished(&mut self, cx: &mut Ctx<'_, Timer>, outcome: Result<&str, String>) {
        self.reload.abort();
        if self.upgrade.replacing_workers() {
            return self.upgrade_workers_finished(cx, outcome.map(|_| ()));
        }
        self.shm.header().set_operation(Operation::Idle);
        match outcome {
            Ok(note) => {
                // Counted before the log line, which the tests wait for.
                self.shm.header().reloads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if note.is_empty() {
                    info!("reload done");
                } else {
                    info!("reload done: {note}");
                }
            }
            Err(why) => error!("reload: {why}; reload aborted, the old business workers keep running"),
        }
    }

    pub(super) fn drop_proc(&mut self, i: usize) {
        if let Some(p) = self.procs.try_remove(i) {
            self.free_slots.push(p.slot);
        }
    }
}

pub(super) fn check_executable(path: &std::path::Path) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(std::io::Error::other("not an executable file"));
    }
    Ok(())
}

//! Spawning a child: fork + exec of the binary on disk, keeping exactly the listening fds it
//! needs (their numbers announced in `GW_FDS`), its statistics slot in `GW_SLOT`, and a
//! parent-death signal so no child outlives a killed master.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use crate::net::listener::{FDS_ENV, fds_env, keep_on_exec};

/// Everything needed to start one child.
pub struct SpawnSpec<'a> {
    pub exe: &'a Path,
    pub conf: &'a Path,
    /// `register`, `gateway` or `worker`.
    pub role: &'a str,
    pub group: usize,
    pub id: u16,
    pub slot: usize,
    pub fds: Vec<(&'static str, RawFd)>,
    /// Extra environment (log file in daemon mode).
    pub env: Vec<(String, String)>,
}

/// Start the child; returns its pid. Fails if the binary cannot be executed.
pub fn spawn(spec: &SpawnSpec<'_>) -> io::Result<u32> {
    let mut cmd = Command::new(spec.exe);
    cmd.arg("child")
        .arg(spec.role)
        .arg("--conf")
        .arg(spec.conf)
        .arg("--group")
        .arg(spec.group.to_string())
        .arg("--id")
        .arg(spec.id.to_string())
        .env(FDS_ENV, fds_env(&spec.fds))
        .env("GW_SLOT", spec.slot.to_string());
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let keep: Vec<RawFd> = spec.fds.iter().map(|(_, fd)| *fd).collect();
    // SAFETY: getpid has no preconditions.
    let master = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe functions (fcntl, prctl, getppid, _exit).
    unsafe {
        cmd.pre_exec(move || {
            for fd in &keep {
                keep_on_exec(*fd)?;
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != master {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    Ok(child.id())
}

/// One reaped child.
pub struct Exit {
    pub pid: u32,
    /// Raw wait status (as workerman prints it).
    pub status: i32,
}

/// Collect every child that exited (non-blocking).
pub fn reap() -> Vec<Exit> {
    let mut out = Vec::new();
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return out;
        }
        out.push(Exit { pid: pid as u32, status });
    }
}

/// Human form of a wait status: `exit 250` or `signal 9`.
pub fn describe(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("exit status {}", libc::WEXITSTATUS(status))
    }
}

//! Spawning a child: fork + exec of the binary on disk, keeping exactly the listening fds it
//! needs (named in its contract, `child.rs`), and a parent-death signal so no child outlives
//! a killed master.

use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::child::ChildContract;
use crate::net::listener::keep_on_exec;

/// Exit status of a forked child whose master died before it could exec.
const ORPHANED: i32 = 1;

/// Start the child `exe` with `contract`; returns its pid. Fails if the binary cannot be
/// executed.
pub fn spawn(exe: &Path, contract: &ChildContract) -> io::Result<u32> {
    let mut cmd = Command::new(exe);
    contract.write(&mut cmd);
    let keep: Vec<RawFd> = contract.fds.iter().map(|(_, fd)| *fd).collect();
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
                libc::_exit(ORPHANED);
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

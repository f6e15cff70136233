//! Daemon mode: fork, `setsid`, stdio to the configured stdout file. The parent waits on a
//! pipe until the daemon says it started (or why not), so `start -d` reports the truth.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Which side of the fork we are on.
pub enum Side {
    /// The command process: the daemon's report.
    Parent(Result<(), String>),
    /// The daemon: report through this once started.
    Daemon(Reporter),
}

/// The daemon's end of the start-up pipe.
pub struct Reporter {
    pipe: std::fs::File,
}

impl Reporter {
    pub fn ok(mut self) {
        let _ = self.pipe.write_all(b"ok");
    }

    pub fn fail(mut self, why: &str) {
        let _ = self.pipe.write_all(format!("err:{why}").as_bytes());
    }
}

/// Detach from the terminal. Must be called while the process has a single thread.
pub fn detach(stdout_file: &Path) -> io::Result<Side> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the fds were just created and are owned here.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: single-threaded at this point (checked by the caller's contract).
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(rd);
            // SAFETY: setsid in the child detaches it from the terminal's session.
            unsafe { libc::setsid() };
            redirect_stdio(stdout_file)?;
            Ok(Side::Daemon(Reporter { pipe: std::fs::File::from(wr) }))
        }
        _ => {
            drop(wr);
            let mut msg = String::new();
            let _ = std::fs::File::from(rd).read_to_string(&mut msg);
            Ok(Side::Parent(match msg.as_str() {
                "ok" => Ok(()),
                m if m.starts_with("err:") => Err(m[4..].to_string()),
                _ => Err("the daemon exited during start-up; see the log".into()),
            }))
        }
    }
}

fn redirect_stdio(stdout_file: &Path) -> io::Result<()> {
    let null = OpenOptions::new().read(true).open("/dev/null")?;
    let out = OpenOptions::new().create(true).append(true).open(stdout_file)?;
    // SAFETY: dup2 onto the standard descriptors.
    unsafe {
        libc::dup2(null.as_raw_fd(), 0);
        libc::dup2(out.as_raw_fd(), 1);
        libc::dup2(out.as_raw_fd(), 2);
    }
    Ok(())
}

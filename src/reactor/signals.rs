//! Signals delivered into the reactor: each handler only sets a flag and writes a byte to a
//! self-pipe (signal-hook), the loop reads the pipe and reports which signals arrived. Also
//! the signal set every child process watches and what those signals mean (workerman's table).

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mio::net::UnixStream;

/// Signals every child process (register, gateway, business worker) handles.
pub const CHILD_SIGNALS: [i32; 7] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2, libc::SIGIO];

/// SIGINT, SIGTERM, SIGHUP: stop now (workerman's table). SIGQUIT is the graceful stop,
/// SIGUSR1/SIGUSR2 reload (reopen the log file), SIGIO asks for the connection list.
pub fn is_stop_signal(sig: i32) -> bool {
    matches!(sig, libc::SIGINT | libc::SIGTERM | libc::SIGHUP)
}

/// Send `sig` to `pid`, ignoring a process that is already gone.
pub fn send(pid: u32, sig: i32) {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid as i32, sig) };
}

/// The self-pipe and one flag per watched signal.
pub struct SignalPipe {
    rx: UnixStream,
    flags: Vec<(i32, Arc<AtomicBool>)>,
}

impl SignalPipe {
    /// Install handlers for `signals`. The returned pipe must be registered for READABLE.
    pub fn install(signals: &[i32]) -> io::Result<SignalPipe> {
        let (rx, tx) = UnixStream::pair()?;
        let mut flags = Vec::with_capacity(signals.len());
        for &sig in signals {
            let flag = Arc::new(AtomicBool::new(false));
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
            let tx = std::os::unix::net::UnixStream::from(tx_clone(&tx)?);
            signal_hook::low_level::pipe::register(sig, tx)?;
            flags.push((sig, flag));
        }
        Ok(SignalPipe { rx, flags })
    }

    pub fn source(&mut self) -> &mut UnixStream {
        &mut self.rx
    }

    /// Drain the pipe and append every signal whose flag was set since the last call.
    pub fn take(&mut self, out: &mut Vec<i32>) {
        let mut sink = [0u8; 64];
        while matches!(self.rx.read(&mut sink), Ok(n) if n > 0) {}
        for (sig, flag) in &self.flags {
            if flag.swap(false, Ordering::SeqCst) {
                out.push(*sig);
            }
        }
    }
}

fn tx_clone(tx: &UnixStream) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsFd, BorrowedFd};
    let fd: BorrowedFd<'_> = tx.as_fd();
    fd.try_clone_to_owned()
}

//! Listening sockets: bound once by the master (socket2), handed to children by fd number
//! (named in the child contract, `master/child.rs`), adopted by the child as mio listeners.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use socket2::{Domain, Socket, Type};

/// Accept backlog (the kernel caps it at `net.core.somaxconn`).
pub const BACKLOG: i32 = 4096;

/// Bind a TCP listener (SO_REUSEADDR, non-blocking, close-on-exec).
pub fn bind_tcp(addr: SocketAddr) -> io::Result<OwnedFd> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(false)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    sock.set_nonblocking(true)?;
    Ok(OwnedFd::from(sock))
}

/// Bind a Unix stream listener at `path`, replacing a stale socket file.
pub fn bind_unix(path: &Path) -> io::Result<OwnedFd> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)?;
        }
    }
    let l = std::os::unix::net::UnixListener::bind(path)?;
    l.set_nonblocking(true)?;
    Ok(OwnedFd::from(l))
}

/// Clear FD_CLOEXEC so the fd survives `exec` (called in the child between fork and exec).
pub fn keep_on_exec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd number has no memory effects.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The fds a child inherited, by name.
#[derive(Debug, Default)]
pub struct Inherited {
    fds: Vec<(String, RawFd)>,
}

impl Inherited {
    /// Adopt the fds the master passed (by name) and mark them close-on-exec again so they
    /// do not leak further.
    pub fn adopt(fds: Vec<(String, RawFd)>) -> Inherited {
        for (_, fd) in &fds {
            // SAFETY: as in keep_on_exec.
            unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        Inherited { fds }
    }

    /// Take the fd called `name`.
    pub fn take(&mut self, name: &str) -> Option<OwnedFd> {
        let i = self.fds.iter().position(|(n, _)| n == name)?;
        let (_, fd) = self.fds.remove(i);
        // SAFETY: the master passed this fd to us for our exclusive use; taken once.
        Some(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    pub fn take_tcp(&mut self, name: &str) -> io::Result<mio::net::TcpListener> {
        let fd = self.take(name).ok_or_else(|| missing(name))?;
        let std = std::net::TcpListener::from(fd);
        std.set_nonblocking(true)?;
        Ok(mio::net::TcpListener::from_std(std))
    }

    pub fn take_unix(&mut self, name: &str) -> io::Result<mio::net::UnixListener> {
        let fd = self.take(name).ok_or_else(|| missing(name))?;
        let std = std::os::unix::net::UnixListener::from(fd);
        std.set_nonblocking(true)?;
        Ok(mio::net::UnixListener::from_std(std))
    }
}

fn missing(name: &str) -> io::Error {
    io::Error::other(format!("listener {name:?} was not passed by the master"))
}

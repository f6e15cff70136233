//! `Io`: the byte stream under every protocol codec, plain TCP, Unix socket or TLS. Only this
//! type knows about TLS. `write` never returns `Ok(0)` for a non-empty buffer.

use std::io::{self, Read, Write};
use std::net::Shutdown;

use mio::event::Source;
use mio::net::{TcpStream, UnixStream};
use mio::{Interest, Registry, Token};

use super::tls::TlsIo;

/// A connected, non-blocking stream.
pub enum Io {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsIo>),
}

impl Io {
    /// Register for both directions (edge-triggered). A Unix stream registered through
    /// `Conn::register` drops WRITABLE after its first complete flush and takes it again only
    /// while its output blocks.
    pub fn register(&mut self, reg: &Registry, token: Token) -> io::Result<()> {
        reg.register(self.source(), token, Interest::READABLE | Interest::WRITABLE)
    }

    /// The Unix stream's descriptor (`None` for TCP and TLS).
    pub fn unix_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match self {
            Io::Unix(s) => Some(s.as_raw_fd()),
            _ => None,
        }
    }

    pub fn deregister(&mut self, reg: &Registry) {
        let _ = reg.deregister(self.source());
    }

    fn source(&mut self) -> &mut dyn Source {
        match self {
            Io::Tcp(s) => s,
            Io::Unix(s) => s,
            Io::Tls(t) => t.tcp_mut(),
        }
    }

    /// Half-close our side after the last bytes (TLS sends close_notify first).
    pub fn shutdown_write(&mut self) {
        let _ = match self {
            Io::Tcp(s) => s.shutdown(Shutdown::Write),
            Io::Unix(s) => s.shutdown(Shutdown::Write),
            Io::Tls(t) => t.shutdown(),
        };
    }

    /// A plain socket: a read that returns less than asked means the kernel queue is empty,
    /// so the next read would only say `WouldBlock` (a syscall saved per readiness; new
    /// data raises a new edge). Not true of TLS, where one record may hold less than a read.
    pub fn short_read_drains(&self) -> bool {
        !matches!(self, Io::Tls(_))
    }

    /// True while a TLS handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        matches!(self, Io::Tls(t) if t.is_handshaking())
    }

    /// Bytes the TLS layer still has to write (flush must be called again on WRITABLE).
    pub fn wants_write(&self) -> bool {
        matches!(self, Io::Tls(t) if t.wants_write())
    }
}

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.read(buf),
            Io::Unix(s) => s.read(buf),
            Io::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write(buf),
            Io::Unix(s) => s.write(buf),
            Io::Tls(t) => t.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Io::Tcp(s) => s.write_vectored(bufs),
            Io::Unix(s) => s.write_vectored(bufs),
            Io::Tls(t) => t.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Io::Tcp(_) | Io::Unix(_) => Ok(()),
            Io::Tls(t) => t.flush(),
        }
    }
}

/// Local and remote address of a stream, as text.
pub fn addrs(io: &Io) -> (String, String) {
    let unix = |a: io::Result<std::os::unix::net::SocketAddr>| -> String {
        a.ok().and_then(|a| a.as_pathname().map(|p| p.display().to_string())).unwrap_or_else(|| "unix".into())
    };
    match io {
        Io::Tcp(s) => (
            s.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
        ),
        Io::Unix(s) => (unix(s.local_addr()), unix(s.peer_addr())),
        Io::Tls(t) => {
            let s = t.tcp();
            (
                s.local_addr().map(|a| a.to_string()).unwrap_or_default(),
                s.peer_addr().map(|a| a.to_string()).unwrap_or_default(),
            )
        }
    }
}

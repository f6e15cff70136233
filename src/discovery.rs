//! The links a gateway or a business worker keeps to the registers: dialled with its
//! announcement line queued, redialled 1 s after a failure or a close, pinged when the
//! register is not on loopback (as GatewayWorker does).

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::Duration;

use log::warn;
use mio::{Registry, Token};

use crate::net::conn::ReadEnd;
use crate::net::link::{Link, Target};
use crate::reactor::{Ctx, Ready};
use crate::stats::conns::ConnInfo;
use crate::wire::register as lines;

/// Longest line a register sends (an address list); longer input closes the link.
const MAX_LINE: usize = 1 << 20;
/// Wait before dialling a register again.
const RETRY: Duration = Duration::from_secs(1);

/// One link per configured register.
pub struct RegisterLinks {
    links: Vec<Link>,
    hello: Vec<u8>,
    /// Who we are, for log lines.
    role: &'static str,
}

impl RegisterLinks {
    /// Links to `registers` (not dialled yet); link `i` has token `base + i`. `hello` is
    /// written first on every connect.
    pub fn new(registers: &[SocketAddrV4], base: usize, hello: Vec<u8>, role: &'static str) -> RegisterLinks {
        let link = |(i, a): (usize, &SocketAddrV4)| {
            Link::new(Target::Tcp(SocketAddr::V4(*a)), Token(base + i), "Text")
        };
        RegisterLinks { links: registers.iter().enumerate().map(link).collect(), hello, role }
    }

    /// Dial every link (see `dial`).
    pub fn dial_all<T>(&mut self, cx: &mut Ctx<'_, T>, retry: fn(usize) -> T) {
        for i in 0..self.links.len() {
            self.dial(cx, i, retry);
        }
    }

    /// Dial link `i`; when that fails, close it and arm `retry(i)`.
    pub fn dial<T>(&mut self, cx: &mut Ctx<'_, T>, i: usize, retry: fn(usize) -> T) {
        let Some(link) = self.links.get_mut(i) else { return };
        if let Err(e) = link.dial(cx.registry, &self.hello) {
            warn!("{}: cannot reach register {}: {e}; retrying in 1 s", self.role, link.target);
            link.close(cx.registry);
            cx.after(RETRY, retry(i));
        }
    }

    /// Readiness on link `i`: finish the connect, read, write what is queued. Returns the
    /// complete lines received; a closed or failed link is closed and `retry(i)` armed.
    pub fn on_ready<T>(
        &mut self,
        cx: &mut Ctx<'_, T>,
        i: usize,
        ready: Ready,
        retry: fn(usize) -> T,
    ) -> Vec<Vec<u8>> {
        let Some(link) = self.links.get_mut(i) else { return Vec::new() };
        let mut got = Vec::new();
        let res = link.on_ready(ready).and_then(|_| {
            let end = link.read(MAX_LINE)?;
            if let Some(c) = link.connected_mut() {
                got = take_lines(&mut c.inbuf);
                if c.inbuf.len() >= MAX_LINE {
                    return Err(io::Error::other(format!("a line over {MAX_LINE} bytes")));
                }
            }
            link.flush()?;
            match end {
                ReadEnd::Eof => Err(io::Error::other("closed by the register")),
                _ => Ok(()),
            }
        });
        if let Err(e) = res {
            warn!("{}: register link {} lost ({e}); reconnecting in 1 s", self.role, link.target);
            link.close(cx.registry);
            cx.after(RETRY, retry(i));
        }
        got
    }

    /// Ping every connected register that is not on loopback.
    pub fn keepalive(&mut self) {
        for link in &mut self.links {
            if !matches!(&link.target, Target::Tcp(a) if a.ip().is_loopback()) {
                let _ = link.send(lines::PING);
            }
        }
    }

    /// Close every link for good (a draining worker).
    pub fn close_all(&mut self, reg: &Registry) {
        for link in &mut self.links {
            link.close(reg);
        }
    }

    pub fn connected(&self) -> usize {
        self.links.iter().filter(|l| l.is_connected()).count()
    }

    /// Lines for the `connections` command, ids from `first_id`.
    pub fn conn_infos(&self, first_id: u64) -> impl Iterator<Item = ConnInfo> + '_ {
        self.links.iter().zip(first_id..).map(|(l, id)| l.conn_info(id))
    }
}

/// Complete lines (without `\r\n`) taken from the front of `inbuf`.
fn take_lines(inbuf: &mut crate::reactor::InBuf) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(pos) = inbuf.data().iter().position(|&b| b == b'\n') {
        out.push(inbuf.data()[..pos].trim_ascii_end().to_vec());
        inbuf.consume(pos + 1);
    }
    out
}

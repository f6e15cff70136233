//! After a handover, the old gateway keeps the TLS sessions of its wss clients (rustls state
//! cannot move to another process) and relays their plain bytes to the new gateway through a
//! socket pair, whose other end the new gateway holds as that client's connection. The new
//! gateway closes those clients with 1012 over the upgrade's drain window; a relay ends when
//! either side has closed and everything received from the other side is written.

use std::io;

use mio::{Registry, Token};
use slab::Slab;

use crate::net::conn::{Conn, ReadEnd};
use crate::net::io::Io;
use crate::reactor::Ready;

/// Bytes read from one side per pass.
const CAP: usize = 256 * 1024;
/// Reading one side pauses while this much waits to be written to the other.
const HIGH: usize = 1 << 20;

/// One client's TLS session and its plain end.
struct Relay {
    tls: Conn,
    plain: Conn,
    /// The client closed (or failed): what it sent goes on, then the plain end closes.
    tls_done: bool,
    /// The new gateway closed it: what it wrote goes out, then the TLS session closes.
    plain_done: bool,
}

/// The relays of a process that handed its clients over.
pub struct Relays {
    table: Slab<Relay>,
    /// Relay `k` has tokens `base + 2k` (TLS side) and `base + 2k + 1` (plain side).
    base: usize,
}

impl Relays {
    pub fn new(base: usize) -> Relays {
        Relays { table: Slab::new(), base }
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Relay the TLS session `tls` to `plain`, and start at once (bytes may be buffered
    /// in rustls already).
    pub fn add(&mut self, reg: &Registry, tls: Io, plain: Io) -> io::Result<()> {
        let entry = self.table.vacant_entry();
        let k = entry.key();
        let mut r =
            Relay { tls: Conn::new(tls), plain: Conn::new(plain), tls_done: false, plain_done: false };
        r.tls.register(reg, Token(self.base + 2 * k))?;
        if let Err(e) = r.plain.register(reg, Token(self.base + 2 * k + 1)) {
            r.tls.io.deregister(reg);
            return Err(e);
        }
        r.tls.ready = Ready::READABLE | Ready::WRITABLE;
        r.plain.ready = Ready::READABLE | Ready::WRITABLE;
        entry.insert(r);
        self.pump(reg, k);
        Ok(())
    }

    /// Readiness of token `t` (at or above `base`).
    pub fn on_ready(&mut self, reg: &Registry, t: usize, ready: Ready) {
        let k = (t - self.base) / 2;
        let Some(r) = self.table.get_mut(k) else { return };
        let side = if (t - self.base).is_multiple_of(2) { &mut r.tls } else { &mut r.plain };
        side.ready.insert(ready);
        self.pump(reg, k);
    }

    /// Move what can move; remove the relay when it is over.
    fn pump(&mut self, reg: &Registry, k: usize) {
        let Some(r) = self.table.get_mut(k) else { return };
        if !r.tls_done && r.plain.out.len() < HIGH {
            r.tls_done = !matches!(r.tls.read(CAP), Ok(ReadEnd::Drained | ReadEnd::Full));
            move_all(&mut r.tls, &mut r.plain);
        }
        if !r.plain_done && r.tls.out.len() < HIGH {
            r.plain_done = !matches!(r.plain.read(CAP), Ok(ReadEnd::Drained | ReadEnd::Full));
            move_all(&mut r.plain, &mut r.tls);
        }
        let plain_ok = r.plain.flush().is_ok();
        let tls_ok = r.tls.flush().is_ok();
        let tls_written = r.tls.out.is_empty() && !r.tls.io.wants_write();
        let over =
            !plain_ok || !tls_ok || (r.tls_done && r.plain.out.is_empty()) || (r.plain_done && tls_written);
        if over {
            let mut r = self.table.remove(k);
            // close_notify to the client, then both ends close.
            r.tls.io.shutdown_write();
            let _ = r.tls.flush();
            r.tls.io.deregister(reg);
            r.plain.io.deregister(reg);
        } else if r.tls.ready.contains(Ready::READABLE) && r.plain.out.len() < HIGH && !r.tls_done {
            // Read budget used up with more to read: go on (no new edge will come).
            self.pump(reg, k);
        }
    }

    /// Close every relay now (the process must exit).
    pub fn close_all(&mut self, reg: &Registry) {
        for mut r in self.table.drain() {
            r.tls.io.shutdown_write();
            r.tls.io.deregister(reg);
            r.plain.io.deregister(reg);
        }
    }
}

/// Everything received on `from` goes to `to`'s output.
fn move_all(from: &mut Conn, to: &mut Conn) {
    if !from.inbuf.is_empty() {
        to.out.extend(from.inbuf.data());
        let n = from.inbuf.len();
        from.inbuf.consume(n);
    }
}

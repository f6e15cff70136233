//! After a handover, the old gateway keeps the TLS sessions of its wss clients (rustls state
//! cannot move to another process) and relays their plain bytes to the new gateway through a
//! socket pair, whose other end the new gateway holds as that client's connection. The new
//! gateway closes those clients with 1012 over the upgrade's drain window; a relay ends when
//! either side has closed and everything received from the other side is written.

use std::io;
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use slab::Slab;

use crate::net::conn::{Conn, ReadEnd};
use crate::net::io::Io;
use crate::reactor::Ready;

/// Bytes read from one side per pass.
const CAP: usize = 256 * 1024;
/// Reading one side pauses while this much waits to be written to the other.
const HIGH: usize = 1 << 20;

/// After the relay closed the TLS session, how long it still reads what the client sends
/// (its close frame) before closing the socket; closing with unread bytes would reset the
/// connection under the client's feet.
const LINGER: Duration = Duration::from_secs(2);

/// One client's TLS session and its plain end.
struct Relay {
    tls: Conn,
    plain: Conn,
    /// The client closed (or failed): the plain end closes once what it sent is passed on.
    tls_done: bool,
    /// The new gateway closed its end: what it wrote goes out, then the TLS session closes.
    plain_done: bool,
    /// Writing to the plain end failed (the new gateway closed it): what the client sends is
    /// dropped, and what the new gateway wrote before closing is still read and passed on.
    plain_broken: bool,
    /// The TLS session is closed on our side since then; the client's last bytes are read
    /// and dropped until it closes too.
    lingering: Option<Instant>,
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
        let mut r = Relay {
            tls: Conn::new(tls),
            plain: Conn::new(plain),
            tls_done: false,
            plain_done: false,
            plain_broken: false,
            lingering: None,
        };
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

    /// Move what can move; close and remove the relay when it is over.
    fn pump(&mut self, reg: &Registry, k: usize) {
        let Some(r) = self.table.get_mut(k) else { return };
        if r.lingering.is_some() {
            let end = r.tls.read(CAP);
            let n = r.tls.inbuf.len();
            r.tls.inbuf.consume(n);
            let _ = r.tls.flush();
            match end {
                Ok(ReadEnd::Full) => self.pump(reg, k),
                Ok(ReadEnd::Drained) => {}
                _ => self.remove(reg, k),
            }
            return;
        }
        if !r.tls_done && (r.plain_broken || r.plain.out.len() < HIGH) {
            r.tls_done = !matches!(r.tls.read(CAP), Ok(ReadEnd::Drained | ReadEnd::Full));
            if r.plain_broken {
                let n = r.tls.inbuf.len();
                r.tls.inbuf.consume(n);
            } else {
                move_all(&mut r.tls, &mut r.plain);
            }
        }
        if !r.plain_done && r.tls.out.len() < HIGH {
            r.plain_done = !matches!(r.plain.read(CAP), Ok(ReadEnd::Drained | ReadEnd::Full));
            move_all(&mut r.plain, &mut r.tls);
        }
        if !r.plain_broken && r.plain.flush().is_err() {
            r.plain_broken = true;
            r.plain.out.clear();
        }
        let tls_failed = r.tls.flush().is_err();
        let tls_written = r.tls.out.is_empty() && !r.tls.io.wants_write();
        if tls_failed || (r.tls_done && (r.plain.out.is_empty() || r.plain_broken)) {
            // The client is gone: both ends close (the new gateway sees its client leave).
            self.remove(reg, k);
        } else if r.plain_done && tls_written {
            // Everything the new gateway wrote (its close frame last) is out: close_notify,
            // then wait for the client's side.
            r.tls.io.shutdown_write();
            let _ = r.tls.flush();
            r.plain.io.deregister(reg);
            r.lingering = Some(Instant::now());
            self.pump(reg, k);
        } else if r.tls.ready.contains(Ready::READABLE) && r.plain.out.len() < HIGH && !r.tls_done {
            // Read budget used up with more to read: go on (no new edge will come).
            self.pump(reg, k);
        }
    }

    fn remove(&mut self, reg: &Registry, k: usize) {
        if let Some(mut r) = self.table.try_remove(k) {
            if r.lingering.is_none() {
                r.tls.io.shutdown_write();
                let _ = r.tls.flush();
                r.plain.io.deregister(reg);
            }
            r.tls.io.deregister(reg);
        }
    }

    /// Close the relays that lingered long enough (called once a second).
    pub fn expire(&mut self, reg: &Registry, now: Instant) {
        let old: Vec<usize> = self
            .table
            .iter()
            .filter(|(_, r)| r.lingering.is_some_and(|t| now.duration_since(t) >= LINGER))
            .map(|(k, _)| k)
            .collect();
        for k in old {
            self.remove(reg, k);
        }
    }

    /// Close every relay now (the process must exit).
    pub fn close_all(&mut self, reg: &Registry) {
        for k in self.table.iter().map(|(k, _)| k).collect::<Vec<_>>() {
            self.remove(reg, k);
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

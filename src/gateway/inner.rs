//! Inner connections of a gateway: accepted on its inner TCP port or Unix socket, used by
//! business workers (persistent links) and GatewayClients (commands and queries).

use std::io;

use crate::net::io::Io;
use crate::reactor::{InBuf, OutBuf, Ready, would_block};

/// Bytes asked for per read.
const CHUNK: usize = 64 * 1024;

/// What the peer said it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Nothing identified yet (authorized already when no secret key is set).
    Unknown,
    /// A business worker (`CMD_WORKER_CONNECT`), keyed `ip:name:id` as GatewayWorker does.
    Worker { key: String, draining: bool },
    /// A GatewayClient (`CMD_GATEWAY_CLIENT_CONNECT`) or any authorized caller.
    Client,
}

pub struct Inner {
    pub io: Io,
    /// Unique per gateway process; part of a client's route.
    pub serial: u64,
    pub peer: String,
    pub kind: Kind,
    pub authorized: bool,
    pub ready: Ready,
    pub inbuf: InBuf,
    pub out: OutBuf,
    pub closing: bool,
    pub dead: bool,
    pub dirty: bool,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// How a read pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadEnd {
    Drained,
    /// Stopped at the buffer cap; READABLE stays set.
    Full,
    Eof,
}

impl Inner {
    pub fn new(io: Io, serial: u64, peer: String, authorized: bool) -> Inner {
        Inner {
            io,
            serial,
            peer,
            kind: Kind::Unknown,
            authorized,
            ready: Ready::EMPTY,
            inbuf: InBuf::default(),
            out: OutBuf::default(),
            closing: false,
            dead: false,
            dirty: false,
            bytes_read: 0,
            bytes_written: 0,
        }
    }

    pub fn is_worker(&self) -> bool {
        matches!(self.kind, Kind::Worker { .. })
    }

    /// Read until `WouldBlock`/EOF or until `cap` bytes are buffered.
    pub fn read(&mut self, cap: usize) -> io::Result<ReadEnd> {
        while self.ready.contains(Ready::READABLE) {
            if self.inbuf.len() >= cap {
                return Ok(ReadEnd::Full);
            }
            match self.inbuf.read_from(&mut self.io, CHUNK) {
                Ok(0) => return Ok(ReadEnd::Eof),
                Ok(n) => {
                    self.bytes_read += n as u64;
                    if n < CHUNK && self.io.short_read_drains() {
                        self.ready.remove(Ready::READABLE);
                    }
                }
                Err(e) if would_block(&e) => self.ready.remove(Ready::READABLE),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ReadEnd::Drained)
    }

    /// Write queued bytes: `Ok(true)` all written, `Ok(false)` blocked.
    pub fn flush(&mut self) -> io::Result<bool> {
        let before = self.out.len();
        let res = self.out.write_to(&mut self.io);
        self.bytes_written += (before - self.out.len()) as u64;
        match res {
            Ok(()) => Ok(true),
            Err(e) if would_block(&e) => {
                self.ready.remove(Ready::WRITABLE);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

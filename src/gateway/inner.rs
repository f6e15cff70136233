//! Inner connections of a gateway: accepted on its inner TCP port or Unix socket, used by
//! business workers (persistent links) and GatewayClients (commands and queries). `Links`
//! owns them, with the events waiting for the first worker.

use std::io;

use mio::Registry;

use super::handover::record::LinkState;
use super::limits::LinkFlow;
use crate::net::conn::Conn;
use crate::net::io::Io;
use crate::net::table::{Owned, Table, conn_field};
use crate::reactor::OutBuf;
use crate::stats::conns::ConnInfo;
use crate::wire::packet;

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

/// One inner connection.
pub struct Inner {
    pub conn: Conn,
    /// Unique per gateway process; part of a client's route.
    pub serial: u64,
    pub peer: String,
    pub kind: Kind,
    pub authorized: bool,
    /// Congestion state when it is a worker link.
    pub flow: LinkFlow,
    /// Worker links: where the first whole packet not yet written starts, counted in bytes
    /// written (`conn.bytes_written` = everything before it was written); `None` when lost
    /// track. What follows it can move to a newer link of the same worker.
    whole_from: Option<u64>,
    /// Subscribed to membership notifications (`wire::membership`): the number of
    /// `BIND_UID` and `JOIN_GROUP` commands executed from this link since it subscribed.
    pub membership: Option<u32>,
}

impl Owned for Inner {
    conn_field!();

    fn flush(&mut self) -> io::Result<bool> {
        let res = self.conn.flush();
        self.track_whole();
        res
    }

    /// Replies already queued for a link that is being closed are still sent.
    fn flush_when_dead(&self) -> bool {
        true
    }
}

impl Inner {
    pub fn is_worker(&self) -> bool {
        matches!(self.kind, Kind::Worker { .. })
    }

    /// Usable for commands: not closing, not queued for removal.
    pub fn is_open(&self) -> bool {
        !self.conn.dead && !self.conn.closing
    }

    /// After a write: move `whole_from` past the packets written (GatewayProtocol packets
    /// announce their length; only worker links carry nothing else). Walks only what this
    /// write took, and only when it left bytes queued.
    fn track_whole(&mut self) {
        let written = self.conn.bytes_written;
        if self.conn.out.is_empty() {
            self.whole_from = Some(written);
        } else if let Some(from) = self.whole_from.filter(|f| *f < written && self.is_worker()) {
            self.whole_from = self.first_whole_after(from, (written - from) as usize);
        }
    }

    /// The start of the first packet that begins at or after the `back` bytes written since
    /// the packet boundary `from`; `None` when those bytes are not held or do not parse.
    fn first_whole_after(&self, from: u64, back: usize) -> Option<u64> {
        let bytes = self.conn.out.with_written(back)?;
        let mut at = 0;
        while at < back {
            at += packet::peek_len(&bytes[at..], usize::MAX).ok().flatten()?;
        }
        Some(from + at as u64)
    }
}

/// The inner connections, and the events encoded while no business worker was linked.
pub struct Links {
    pub table: Table<Inner>,
    /// Serial of the last accepted link.
    serial: u64,
    /// Client events waiting for the first worker (bounded by the worker send buffer size).
    pub parked: Vec<u8>,
    /// Links that became congested: checked after each flush.
    pub congested: Vec<usize>,
}

impl Links {
    /// Key `k` is poll token `base + k`.
    pub fn new(base: usize) -> Links {
        Links { table: Table::new(base, 0), serial: 0, parked: Vec::new(), congested: Vec::new() }
    }

    /// Keep an accepted connection; returns its key.
    pub fn insert(&mut self, reg: &Registry, io: Io, peer: String, authorized: bool) -> io::Result<usize> {
        self.serial += 1;
        let inner = Inner {
            conn: Conn::new(io),
            serial: self.serial,
            peer,
            kind: Kind::Unknown,
            authorized,
            flow: LinkFlow::default(),
            whole_from: Some(0),
            membership: None,
        };
        self.table.insert(reg, inner)
    }

    /// Keep a link handed over by the process this one replaces (its serial too: clients'
    /// routes name it); returns its key.
    pub fn restore(&mut self, reg: &Registry, s: LinkState, io: Io) -> io::Result<usize> {
        self.serial = self.serial.max(s.serial);
        let mut conn = Conn::new(io);
        conn.inbuf.extend(&s.inbuf);
        conn.out.extend(&s.out);
        conn.closing = s.closing;
        conn.bytes_read = s.bytes_read;
        conn.bytes_written = s.bytes_written;
        conn.ready = crate::reactor::Ready::READABLE | crate::reactor::Ready::WRITABLE;
        let inner = Inner {
            conn,
            serial: s.serial,
            peer: s.peer,
            kind: s.kind,
            authorized: s.authorized,
            flow: LinkFlow::default(),
            whole_from: s.whole_from,
            membership: s.membership,
        };
        let key = self.table.insert(reg, inner)?;
        self.table.mark_dirty(key);
        Ok(key)
    }

    /// Link `key`'s state for the process that takes it over.
    pub fn snapshot(&self, key: usize) -> Option<LinkState> {
        let i = self.table.get(key)?;
        Some(LinkState {
            key: key as u64,
            serial: i.serial,
            peer: i.peer.clone(),
            kind: i.kind.clone(),
            authorized: i.authorized,
            unix: matches!(i.conn.io, Io::Unix(_)),
            inbuf: i.conn.inbuf.data().to_vec(),
            out: i.conn.out.pending().to_vec(),
            closing: i.conn.closing || i.conn.dead,
            bytes_read: i.conn.bytes_read,
            bytes_written: i.conn.bytes_written,
            whole_from: i.whole_from,
            membership: i.membership,
        })
    }

    pub fn get(&self, key: usize) -> Option<&Inner> {
        self.table.get(key)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut Inner> {
        self.table.get_mut(key)
    }

    /// The output buffer of link `key`, queued for the end-of-turn flush.
    pub fn out(&mut self, key: usize) -> Option<&mut OutBuf> {
        self.table.dirty_mut(key).map(|i| &mut i.conn.out)
    }

    /// The whole packets queued on link `key` and not written yet, taken out (what the link
    /// had started to write is dropped with it).
    pub fn take_whole_queued(&mut self, key: usize) -> Vec<u8> {
        let Some(i) = self.table.get_mut(key) else { return Vec::new() };
        match i.whole_from.and_then(|f| f.checked_sub(i.conn.bytes_written)) {
            Some(skip) => i.conn.out.take_after(skip as usize),
            None => Vec::new(),
        }
    }

    /// Queue link `key` for removal at the end of the turn.
    pub fn kill(&mut self, key: usize) {
        self.table.mark_dead(key);
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Keys of the links that are business workers.
    pub fn workers(&self) -> Vec<usize> {
        self.table.iter().filter(|(_, i)| i.is_worker()).map(|(k, _)| k).collect()
    }

    /// Other worker links registered under `worker_key`.
    pub fn others_with_key(&self, except: usize, worker_key: &str) -> Vec<usize> {
        let same = |i: &Inner| matches!(&i.kind, Kind::Worker { key, .. } if key == worker_key);
        self.table.iter().filter(|(k, i)| *k != except && same(i)).map(|(k, _)| k).collect()
    }

    /// Lines for the `connections` command.
    pub fn conn_infos(&self) -> impl Iterator<Item = ConnInfo> + '_ {
        self.table.iter().map(|(_, i)| i.conn.info(i.serial, "GatewayProtocol"))
    }
}

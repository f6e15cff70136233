//! Inner connections of a gateway: accepted on its inner TCP port or Unix socket, used by
//! business workers (persistent links) and GatewayClients (commands and queries). `Links`
//! owns them, with the events waiting for the first worker.

use std::io;

use mio::Registry;

use super::limits::LinkFlow;
use crate::net::conn::Conn;
use crate::net::io::Io;
use crate::net::table::{Owned, Table, conn_field};
use crate::reactor::OutBuf;
use crate::stats::conns::ConnInfo;

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
}

impl Owned for Inner {
    conn_field!();
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
        };
        self.table.insert(reg, inner)
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

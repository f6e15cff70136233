//! The client table: the clients' connections (slab, tokens, dirty and dead lists) plus a
//! map from GatewayWorker connection id to slab key, the handshake deadlines and the clients
//! whose read budget ran out. A connection id is checked against the slot it names (the slot
//! stores its id), so a stale id never reaches a newer client that reused the slot.

use std::collections::VecDeque;
use std::io;
use std::ops::{Deref, DerefMut};

use mio::Registry;

use super::client::Client;
use super::index::IdMap;
use crate::net::table::Table;

pub struct Clients {
    /// The connections by slab key (`Clients` derefs to it).
    table: Table<Client>,
    ids: IdMap<usize>,
    last_id: u32,
    /// (deadline second, connection id) of clients still in a handshake.
    pub handshakes: VecDeque<(u32, u32)>,
    /// Clients whose read budget ran out this turn, or that resume reading.
    pub again: Vec<usize>,
    /// Connection ids of the clients paused for their rate.
    pub throttled: Vec<u32>,
    /// The refill timer is armed.
    pub refill_armed: bool,
}

impl Clients {
    /// A table for up to `expected` clients, key `k` at poll token `base + k`. The memory is
    /// reserved, not touched: pages become resident as clients arrive, and growth never
    /// doubles the table.
    pub fn new(base: usize, expected: usize) -> Clients {
        let n = expected.min(1 << 20);
        Clients {
            table: Table::new(base, n),
            ids: IdMap::with_capacity_and_hasher(n, Default::default()),
            last_id: 0,
            handshakes: VecDeque::new(),
            again: Vec::new(),
            throttled: Vec::new(),
            refill_armed: false,
        }
    }

    /// Next connection id: counter + 1, skipping 0 and ids in use (GatewayWorker's
    /// `generateConnectionId`), so ids are unique for a long time.
    pub fn alloc_id(&mut self) -> u32 {
        loop {
            self.last_id = self.last_id.wrapping_add(1);
            if self.last_id != 0 && !self.ids.contains_key(&self.last_id) {
                return self.last_id;
            }
        }
    }

    /// The last connection id handed out (a handover carries it on).
    pub fn last_id(&self) -> u32 {
        self.last_id
    }

    pub fn set_last_id(&mut self, id: u32) {
        self.last_id = id;
    }

    /// Register the client's socket and keep it; returns its key.
    pub fn insert(&mut self, reg: &Registry, c: Client) -> io::Result<usize> {
        let id = c.id;
        let key = self.table.insert(reg, c)?;
        self.ids.insert(id, key);
        Ok(key)
    }

    /// Deregister and forget client `key`.
    pub fn remove(&mut self, reg: &Registry, key: usize) -> Option<Client> {
        let c = self.table.remove(reg, key)?;
        self.ids.remove(&c.id);
        Some(c)
    }

    /// Slab key of connection `id`.
    pub fn key_of(&self, id: u32) -> Option<usize> {
        let key = *self.ids.get(&id)?;
        (self.table.get(key)?.id == id).then_some(key)
    }

    /// Client with connection id `id`.
    pub fn by_id(&self, id: u32) -> Option<&Client> {
        self.key_of(id).and_then(|k| self.table.get(k))
    }

    pub fn by_id_mut(&mut self, id: u32) -> Option<&mut Client> {
        let k = self.key_of(id)?;
        self.table.get_mut(k)
    }

    /// Connection ids in ascending order (PHP iterates clients in accept order).
    pub fn ids_sorted(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.ids.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

impl Deref for Clients {
    type Target = Table<Client>;

    fn deref(&self) -> &Table<Client> {
        &self.table
    }
}

impl DerefMut for Clients {
    fn deref_mut(&mut self) -> &mut Table<Client> {
        &mut self.table
    }
}

//! The client table: a slab of clients plus a map from GatewayWorker connection id to slab
//! key. A connection id is checked against the slot it names (the slot stores its id), so a
//! stale id never reaches a newer client that reused the slot.

use slab::Slab;

use super::client::Client;
use super::index::IdMap;

pub struct Clients {
    slab: Slab<Client>,
    ids: IdMap<usize>,
    last_id: u32,
}

impl Clients {
    /// A table for up to `expected` clients. The memory is reserved, not touched: pages
    /// become resident as clients arrive, and growth never doubles the table.
    pub fn with_capacity(expected: usize) -> Clients {
        let n = expected.min(1 << 20);
        Clients {
            slab: Slab::with_capacity(n),
            ids: IdMap::with_capacity_and_hasher(n, Default::default()),
            last_id: 0,
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

    /// Slab key the next `insert` will use.
    pub fn vacant_key(&self) -> usize {
        self.slab.vacant_key()
    }

    pub fn insert(&mut self, c: Client) -> usize {
        let id = c.id;
        let key = self.slab.insert(c);
        self.ids.insert(id, key);
        key
    }

    pub fn remove(&mut self, key: usize) -> Option<Client> {
        let c = self.slab.try_remove(key)?;
        self.ids.remove(&c.id);
        Some(c)
    }

    /// Slab key of connection `id`.
    pub fn key_of(&self, id: u32) -> Option<usize> {
        let key = *self.ids.get(&id)?;
        (self.slab.get(key)?.id == id).then_some(key)
    }

    pub fn get(&self, id: u32) -> Option<&Client> {
        self.key_of(id).and_then(|k| self.slab.get(k))
    }

    pub fn get_mut(&mut self, id: u32) -> Option<&mut Client> {
        let k = self.key_of(id)?;
        self.slab.get_mut(k)
    }

    pub fn by_key(&self, key: usize) -> Option<&Client> {
        self.slab.get(key)
    }

    pub fn by_key_mut(&mut self, key: usize) -> Option<&mut Client> {
        self.slab.get_mut(key)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &Client)> {
        self.slab.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut Client)> {
        self.slab.iter_mut()
    }

    /// Connection ids in ascending order (PHP iterates clients in accept order).
    pub fn ids_sorted(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.ids.keys().copied().collect();
        v.sort_unstable();
        v
    }
}

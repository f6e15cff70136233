//! The gateway's uid and group indices: name -> member connection ids. Listing order follows
//! GatewayWorker (PHP arrays keep insertion order): groups by creation, members by joining.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hasher for connection ids (our own counters, not attacker-chosen): one multiply.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by connection id.
pub type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// Members of one group or uid, remembering join order.
#[derive(Debug, Default)]
pub struct Members {
    /// Creation order of this entry among its siblings.
    pub seq: u64,
    joined: IdMap<u64>,
}

impl Members {
    pub fn len(&self) -> usize {
        self.joined.len()
    }

    /// Member ids in any order (for sending).
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.joined.keys().copied()
    }

    /// Member ids in join order (for query replies).
    pub fn ordered(&self) -> Vec<u32> {
        let mut v: Vec<(u64, u32)> = self.joined.iter().map(|(&id, &s)| (s, id)).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, id)| id).collect()
    }
}

/// name -> members (used for both groups and uids).
#[derive(Debug, Default)]
pub struct Index {
    map: HashMap<Box<[u8]>, Members>,
    seq: u64,
}

impl Index {
    /// Add `id` to `name`: the number of members after, `None` if it was already there (so
    /// `Some(1)`: the name appeared).
    pub fn add(&mut self, name: &[u8], id: u32) -> Option<usize> {
        self.seq += 1;
        let seq = self.seq;
        let m = self.map.entry(name.into()).or_insert_with(|| Members { seq, joined: IdMap::default() });
        if m.joined.contains_key(&id) {
            return None;
        }
        m.joined.insert(id, seq);
        Some(m.joined.len())
    }

    /// Remove `id` from `name`, dropping `name` when it becomes empty: the number of members
    /// left, `None` if it was not there (so `Some(0)`: the name disappeared).
    pub fn remove(&mut self, name: &[u8], id: u32) -> Option<usize> {
        let m = self.map.get_mut(name)?;
        m.joined.remove(&id)?;
        let left = m.joined.len();
        if left == 0 {
            self.map.remove(name);
        }
        Some(left)
    }

    /// Drop `name` entirely, returning its members.
    pub fn take(&mut self, name: &[u8]) -> Option<Members> {
        self.map.remove(name)
    }

    pub fn get(&self, name: &[u8]) -> Option<&Members> {
        self.map.get(name)
    }

    /// Names in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.map.keys().map(|k| &k[..])
    }

    /// Names in creation order.
    pub fn names(&self) -> Vec<&[u8]> {
        let mut v: Vec<(u64, &[u8])> = self.map.iter().map(|(k, m)| (m.seq, &k[..])).collect();
        v.sort_unstable();
        v.into_iter().map(|(_, k)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_php_order_and_drops_empty_entries() {
        let mut g = Index::default();
        assert_eq!(g.add(b"g1", 2), Some(1));
        assert_eq!(g.add(b"42", 1), Some(1));
        assert_eq!(g.add(b"g1", 1), Some(2));
        assert_eq!(g.add(b"g1", 1), None);
        assert_eq!(g.names(), vec![&b"g1"[..], &b"42"[..]]);
        assert_eq!(g.get(b"g1").unwrap().ordered(), vec![2, 1]);
        assert_eq!(g.remove(b"42", 1), Some(0));
        assert_eq!(g.remove(b"42", 1), None);
        assert!(g.get(b"42").is_none());
        assert_eq!(g.names().len(), 1);
        let m = g.take(b"g1").unwrap();
        assert_eq!(m.len(), 2);
        assert!(g.names().is_empty());
    }
}

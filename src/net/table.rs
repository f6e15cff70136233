//! `Table`: the connections of one kind in a process, in a slab whose keys map to poll tokens
//! from a base, with the lists a loop turn needs: connections with bytes to write (flushed
//! once at the end of the turn) and connections to remove (reaped after the flush).

use std::io;

use mio::{Registry, Token};
use slab::Slab;

use super::conn::Conn;
use crate::reactor::Ready;

/// A type built over one `Conn`.
pub trait Owned {
    fn conn(&self) -> &Conn;
    fn conn_mut(&mut self) -> &mut Conn;

    /// Write what is queued (see `Conn::flush`); a type may hold bytes back.
    fn flush(&mut self) -> io::Result<bool> {
        self.conn_mut().flush()
    }

    /// True when flushing would do something.
    fn wants_flush(&self) -> bool {
        !self.conn().out.is_empty()
    }

    /// Bytes queued before the connection was marked dead still go out in that turn's flush
    /// (by default a dead connection is not written to).
    fn flush_when_dead(&self) -> bool {
        false
    }
}

/// The two accessors of `Owned` for a type whose connection is its field `conn`; write it
/// inside the `impl Owned` block.
macro_rules! conn_field {
    () => {
        fn conn(&self) -> &$crate::net::conn::Conn {
            &self.conn
        }

        fn conn_mut(&mut self) -> &mut $crate::net::conn::Conn {
            &mut self.conn
        }
    };
}
pub(crate) use conn_field;

impl Owned for Conn {
    fn conn(&self) -> &Conn {
        self
    }
    fn conn_mut(&mut self) -> &mut Conn {
        self
    }
}

/// Connections of one kind.
pub struct Table<T> {
    slab: Slab<T>,
    base: usize,
    dirty: Vec<usize>,
    dead: Vec<usize>,
}

impl<T: Owned> Table<T> {
    /// An empty table whose key `k` is poll token `base + k`; `expected` slots are reserved
    /// (not touched: pages become resident as connections arrive).
    pub fn new(base: usize, expected: usize) -> Table<T> {
        Table { slab: Slab::with_capacity(expected), base, dirty: Vec::new(), dead: Vec::new() }
    }

    /// The key of `token`, when it is in this table's range (at or above its base).
    pub fn key_of(&self, token: Token) -> Option<usize> {
        token.0.checked_sub(self.base)
    }

    /// Key the next `insert` will use.
    pub fn vacant_key(&self) -> usize {
        self.slab.vacant_key()
    }

    /// Register the connection's socket under its token and keep it.
    pub fn insert(&mut self, reg: &Registry, mut item: T) -> io::Result<usize> {
        let key = self.slab.vacant_key();
        item.conn_mut().register(reg, Token(self.base + key))?;
        Ok(self.slab.insert(item))
    }

    /// Deregister and forget connection `key`.
    pub fn remove(&mut self, reg: &Registry, key: usize) -> Option<T> {
        let mut item = self.slab.try_remove(key)?;
        item.conn_mut().io.deregister(reg);
        Some(item)
    }

    pub fn get(&self, key: usize) -> Option<&T> {
        self.slab.get(key)
    }

    pub fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        self.slab.get_mut(key)
    }

    pub fn len(&self) -> usize {
        self.slab.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    pub fn keys(&self) -> Vec<usize> {
        self.slab.iter().map(|(k, _)| k).collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = (usize, &T)> {
        self.slab.iter()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (usize, &mut T)> {
        self.slab.iter_mut()
    }

    /// Fold readiness into connection `key`; a writable edge with bytes waiting makes it
    /// dirty. Returns the connection.
    pub fn on_ready(&mut self, key: usize, ready: Ready) -> Option<&mut T> {
        let item = self.slab.get_mut(key)?;
        item.conn_mut().ready.insert(ready);
        if ready.contains(Ready::WRITABLE) && item.wants_flush() {
            push_once(&mut self.dirty, key, &mut item.conn_mut().dirty);
        }
        Some(item)
    }

    /// Connection `key`, queued for the end-of-turn flush: the caller is about to queue bytes
    /// (one lookup on the send path).
    pub fn dirty_mut(&mut self, key: usize) -> Option<&mut T> {
        let item = self.slab.get_mut(key)?;
        push_once(&mut self.dirty, key, &mut item.conn_mut().dirty);
        Some(item)
    }

    /// Run `send` on connection `key`; when it succeeds (it queued bytes) the connection is
    /// queued for the end-of-turn flush. One lookup on the send path.
    pub fn send_with<E>(
        &mut self,
        key: usize,
        send: impl FnOnce(&mut T) -> Result<(), E>,
    ) -> Option<Result<(), E>> {
        let item = self.slab.get_mut(key)?;
        let res = send(item);
        if res.is_ok() {
            push_once(&mut self.dirty, key, &mut item.conn_mut().dirty);
        }
        Some(res)
    }

    /// Queue connection `key` for the end-of-turn flush.
    pub fn mark_dirty(&mut self, key: usize) {
        if let Some(item) = self.slab.get_mut(key) {
            push_once(&mut self.dirty, key, &mut item.conn_mut().dirty);
        }
    }

    /// Queue connection `key` for removal at the end of the turn.
    pub fn mark_dead(&mut self, key: usize) {
        if let Some(item) = self.slab.get_mut(key) {
            push_once(&mut self.dead, key, &mut item.conn_mut().dead);
        }
    }

    /// One write per dirty connection. A closing connection whose bytes are all out is
    /// half-closed and marked dead, so is a broken one. Returns the bytes written.
    pub fn flush_dirty(&mut self) -> u64 {
        let mut written = 0;
        let mut dirty = std::mem::take(&mut self.dirty);
        for key in dirty.drain(..) {
            let Some(item) = self.slab.get_mut(key) else { continue };
            item.conn_mut().dirty = false;
            if item.conn().dead && !item.flush_when_dead() {
                continue;
            }
            let before = item.conn().bytes_written;
            let res = item.flush();
            let c = item.conn_mut();
            written += c.bytes_written - before;
            match res {
                Ok(true) if c.closing => {
                    c.io.shutdown_write();
                    push_once(&mut self.dead, key, &mut c.dead);
                }
                Ok(_) => {}
                Err(_) => push_once(&mut self.dead, key, &mut c.dead),
            }
        }
        self.dirty = dirty;
        written
    }

    /// Keys marked dead since the last call, in marking order (the caller removes them).
    pub fn take_dead(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.dead)
    }

    /// True when no connection waits for a flush or for removal.
    #[cfg(test)]
    pub fn settled(&self) -> bool {
        self.dirty.is_empty() && self.dead.is_empty()
    }
}

/// Push `key` to `list` unless `flag` says it is there already.
fn push_once(list: &mut Vec<usize>, key: usize, flag: &mut bool) {
    if !*flag {
        *flag = true;
        list.push(key);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::net::io::Io;

    #[test]
    fn dirty_and_dead_lists_hold_each_key_once() {
        let poll = mio::Poll::new().unwrap();
        let mut t: Table<Conn> = Table::new(100, 4);
        let (a, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let key = t.insert(poll.registry(), Conn::new(Io::Unix(mio::net::UnixStream::from_std(a)))).unwrap();
        assert_eq!(t.key_of(Token(100 + key)), Some(key));
        assert_eq!(t.key_of(Token(99)), None);
        let c = t.on_ready(key, Ready::READABLE | Ready::WRITABLE).unwrap();
        c.out.extend(b"bye");
        c.closing = true;
        t.mark_dirty(key);
        t.mark_dirty(key);
        assert!(!t.settled());
        assert_eq!(t.flush_dirty(), 3);
        assert_eq!(t.flush_dirty(), 0, "flushed once");
        t.mark_dead(key);
        assert_eq!(t.take_dead(), vec![key], "closing + written = dead, once");
        assert!(t.settled());
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"bye", "half-closed after the last byte");
        assert!(t.remove(poll.registry(), key).is_some());
        assert!(t.is_empty());
    }
}

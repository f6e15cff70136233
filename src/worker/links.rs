//! A business worker's links to gateways, keyed by gateway inner address. Each link starts
//! with `CMD_WORKER_CONNECT` queued before the connect (so it is the first packet on the
//! wire, as GatewayWorker does); sends are queued and written once per loop turn.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::{Registry, Token};
use slab::Slab;

use crate::api::context::Links;
use crate::api::transport::{ApiError, LocalGateways, Pkt};
use crate::reactor::{InBuf, Ready};
use crate::wire::link::{Link, ReadEnd, Target};
use crate::wire::packet::{cmd, flag};

struct GwLink {
    addr: SocketAddrV4,
    link: Link,
    drain_requested: bool,
    acked: bool,
    dirty: bool,
}

pub struct GatewayLinks {
    slab: Slab<GwLink>,
    by_addr: HashMap<SocketAddrV4, usize>,
    local: LocalGateways,
    connect_body: Vec<u8>,
    base: usize,
    dirty: Vec<usize>,
    broken: Vec<usize>,
}

impl GatewayLinks {
    pub fn new(local: LocalGateways, connect_body: Vec<u8>, base: usize) -> GatewayLinks {
        GatewayLinks {
            slab: Slab::new(),
            by_addr: HashMap::new(),
            local,
            connect_body,
            base,
            dirty: Vec::new(),
            broken: Vec::new(),
        }
    }

    pub fn has(&self, gw: SocketAddrV4) -> bool {
        self.by_addr.contains_key(&gw)
    }

    pub fn is_connected(&self, gw: SocketAddrV4) -> bool {
        self.by_addr.get(&gw).and_then(|k| self.slab.get(*k)).is_some_and(|l| l.link.is_connected())
    }

    pub fn connected(&self) -> usize {
        self.slab.iter().filter(|(_, l)| l.link.is_connected()).count()
    }

    pub fn addr(&self, key: usize) -> Option<SocketAddrV4> {
        self.slab.get(key).map(|l| l.addr)
    }

    pub fn target(&self, key: usize) -> String {
        self.slab.get(key).map(|l| l.link.target.to_string()).unwrap_or_default()
    }

    /// Start linking to `gw`: Unix socket when it is on this host, TCP otherwise.
    pub fn dial(&mut self, reg: &Registry, gw: SocketAddrV4) -> io::Result<()> {
        let target = match self.local.socket(gw) {
            Some(path) => Target::Unix(path),
            None => Target::Tcp(SocketAddr::V4(gw)),
        };
        let entry = self.slab.vacant_entry();
        let mut link = Link::new(target, Token(self.base + entry.key()));
        link.protocol = "GatewayProtocol";
        Pkt::new(cmd::WORKER_CONNECT, 0, flag::BODY_IS_SCALAR, b"", &self.connect_body)
            .encode_into(link.out.vec());
        link.dial(reg)?;
        let key = entry.key();
        entry.insert(GwLink { addr: gw, link, drain_requested: false, acked: false, dirty: false });
        self.by_addr.insert(gw, key);
        Ok(())
    }

    /// Fold in readiness; `Ok(true)` when the link just became connected.
    pub fn on_ready(&mut self, key: usize, ready: Ready) -> io::Result<bool> {
        let Some(l) = self.slab.get_mut(key) else { return Ok(false) };
        let became = l.link.on_ready(ready)?;
        if (became || ready.contains(Ready::WRITABLE)) && !l.link.out.is_empty() {
            l.link.flush()?;
        }
        Ok(became)
    }

    pub fn read(&mut self, key: usize, cap: usize) -> io::Result<ReadEnd> {
        match self.slab.get_mut(key) {
            Some(l) => l.link.read(cap),
            None => Ok(ReadEnd::Drained),
        }
    }

    /// Length of the packet at the head of link `key`'s input, when known (0 otherwise).
    pub fn pending_packet(&self, key: usize) -> usize {
        self.slab
            .get(key)
            .and_then(|l| {
                crate::wire::packet::peek_len(l.link.inbuf.data(), super::MAX_PACKET).ok().flatten()
            })
            .unwrap_or(0)
    }

    pub fn take_inbuf(&mut self, key: usize) -> Option<InBuf> {
        self.slab.get_mut(key).map(|l| std::mem::take(&mut l.link.inbuf))
    }

    pub fn put_inbuf(&mut self, key: usize, buf: InBuf) {
        if let Some(l) = self.slab.get_mut(key) {
            l.link.inbuf = buf;
        }
    }

    /// Forget link `key`; returns its gateway.
    pub fn remove(&mut self, reg: &Registry, key: usize) -> Option<SocketAddrV4> {
        let mut l = self.slab.try_remove(key)?;
        l.link.close(reg);
        self.by_addr.remove(&l.addr);
        Some(l.addr)
    }

    pub fn set_acked(&mut self, key: usize) {
        if let Some(l) = self.slab.get_mut(key) {
            l.acked = true;
        }
    }

    /// Ask every gateway to stop routing to us; returns how many were asked.
    pub fn request_drain(&mut self) -> usize {
        let mut n = 0;
        for (key, l) in self.slab.iter_mut() {
            l.drain_requested = true;
            if l.link.is_connected() {
                Pkt::new(cmd::WORKER_DRAIN, 0, flag::BODY_IS_SCALAR, b"", b"").encode_into(l.link.out.vec());
                if !l.dirty {
                    l.dirty = true;
                    self.dirty.push(key);
                }
                n += 1;
            } else {
                l.acked = true;
            }
        }
        n
    }

    /// Every link acknowledged the drain (a closed link counts as done).
    pub fn all_acked(&self) -> bool {
        self.slab.iter().all(|(_, l)| l.acked || !l.drain_requested)
    }

    /// Queue a packet for gateway `gw`.
    pub fn queue_to(&mut self, gw: SocketAddrV4, p: Pkt<'_>) -> Result<(), ApiError> {
        let key = *self.by_addr.get(&gw).ok_or(ApiError::GatewayNotConnected(gw))?;
        let l = self.slab.get_mut(key).ok_or(ApiError::GatewayNotConnected(gw))?;
        if !l.link.is_connected() {
            return Err(ApiError::GatewayNotConnected(gw));
        }
        p.encode_into(l.link.out.vec());
        if !l.dirty {
            l.dirty = true;
            self.dirty.push(key);
        }
        Ok(())
    }

    /// Write every link that has something queued (once per loop turn).
    pub fn flush_dirty(&mut self) -> Result<(), String> {
        let mut err = Ok(());
        for key in std::mem::take(&mut self.dirty) {
            let Some(l) = self.slab.get_mut(key) else { continue };
            l.dirty = false;
            if let Err(e) = l.link.flush() {
                err = Err(format!("writing to gateway {} failed: {e}", l.addr));
                self.broken.push(key);
            }
        }
        err
    }

    pub fn take_broken(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.broken)
    }

    /// Before exit: keep writing until every queue is empty or `limit` passes.
    pub fn flush_blocking(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let mut pending = false;
            for (_, l) in self.slab.iter_mut() {
                if l.link.is_connected() && l.link.flush().is_ok() && !l.link.out.is_empty() {
                    pending = true;
                }
            }
            if !pending || Instant::now() >= until {
                return;
            }
            // The sockets are non-blocking; wait a little for the peers to read.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl GatewayLinks {
    /// Lines for the `connections` command.
    pub fn conn_infos(&self) -> Vec<crate::stats::conns::ConnInfo> {
        self.slab.iter().map(|(k, l)| l.link.conn_info(k as u64 + 1)).collect()
    }
}

impl Links for GatewayLinks {
    fn addresses(&self) -> Vec<SocketAddrV4> {
        self.slab.iter().filter(|(_, l)| l.link.is_connected()).map(|(_, l)| l.addr).collect()
    }

    fn queue(&mut self, gw: SocketAddrV4, p: Pkt<'_>) -> Result<(), ApiError> {
        self.queue_to(gw, p)
    }

    fn flush_now(&mut self, gws: &[SocketAddrV4]) {
        for gw in gws {
            if let Some(l) = self.by_addr.get(gw).and_then(|k| self.slab.get_mut(*k)) {
                let _ = l.link.flush();
            }
        }
    }
}

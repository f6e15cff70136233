//! A business worker's links to gateways, keyed by gateway inner address. Each link starts
//! with `CMD_WORKER_CONNECT` queued before the connect (so it is the first packet on the
//! wire, as GatewayWorker does), then our `MEMBERSHIP_SUBSCRIBE`; sends are queued and
//! written once per loop turn. Each link keeps the view of its gateway's uids and groups
//! the notifications build (`api::membership`), which sends to uids and groups consult.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use mio::Registry;

use crate::api::context::Links;
use crate::api::membership::{Names, Tokens, View};
use crate::api::transport::{ApiError, LocalGateways, Pkt};
use crate::net::conn::{Conn, ReadEnd};
use crate::net::link::{self, Target};
use crate::net::table::{Owned, Table, conn_field};
use crate::reactor::{InBuf, Ready};
use crate::stats::conns::ConnInfo;
use crate::wire::packet::{Packet, cmd, flag};

/// One link to a gateway.
struct GwLink {
    addr: SocketAddrV4,
    target: Target,
    conn: Conn,
    /// The connect finished; until then bytes wait in `conn.out`.
    connected: bool,
    drain_requested: bool,
    acked: bool,
    /// The gateway's uids and groups.
    view: View,
}

impl GwLink {
    /// Queue a `MEMBERSHIP_SUBSCRIBE` with a new token.
    fn subscribe(&mut self, tokens: &mut Tokens) {
        let token = tokens.next();
        self.view.subscribe(token);
        Pkt::new(cmd::MEMBERSHIP_SUBSCRIBE, 0, flag::BODY_IS_SCALAR, &token.to_be_bytes(), b"")
            .encode_into(self.conn.out.vec());
    }
}

impl Owned for GwLink {
    conn_field!();
    fn wants_flush(&self) -> bool {
        self.connected && !self.conn.out.is_empty()
    }
}

/// The links, a map from gateway address to link, and how to reach a gateway on this host.
pub struct GatewayLinks {
    table: Table<GwLink>,
    by_addr: HashMap<SocketAddrV4, usize>,
    local: LocalGateways,
    connect_body: Vec<u8>,
    tokens: Tokens,
}

impl GatewayLinks {
    pub fn new(local: LocalGateways, connect_body: Vec<u8>, base: usize) -> GatewayLinks {
        GatewayLinks {
            table: Table::new(base, 0),
            by_addr: HashMap::new(),
            local,
            connect_body,
            tokens: Tokens::default(),
        }
    }

    fn by_addr_mut(&mut self, gw: SocketAddrV4) -> Option<&mut GwLink> {
        self.table.get_mut(*self.by_addr.get(&gw)?)
    }

    pub fn has(&self, gw: SocketAddrV4) -> bool {
        self.by_addr.contains_key(&gw)
    }

    pub fn is_connected(&self, gw: SocketAddrV4) -> bool {
        self.by_addr.get(&gw).and_then(|k| self.table.get(*k)).is_some_and(|l| l.connected)
    }

    #[cfg(test)]
    pub fn key_of(&self, gw: SocketAddrV4) -> Option<usize> {
        self.by_addr.get(&gw).copied()
    }

    /// Link `key`'s connect had finished.
    pub fn is_up(&self, key: usize) -> bool {
        self.table.get(key).is_some_and(|l| l.connected)
    }

    pub fn connected(&self) -> usize {
        self.table.iter().filter(|(_, l)| l.connected).count()
    }

    pub fn addr(&self, key: usize) -> Option<SocketAddrV4> {
        self.table.get(key).map(|l| l.addr)
    }

    pub fn target(&self, key: usize) -> String {
        self.table.get(key).map(|l| l.target.to_string()).unwrap_or_default()
    }

    /// Start linking to `gw`: Unix socket when it is on this host, TCP otherwise. Returns
    /// the link's key.
    pub fn dial(&mut self, reg: &Registry, gw: SocketAddrV4) -> io::Result<usize> {
        let target = match self.local.socket(gw) {
            Some(path) => Target::Unix(path),
            None => Target::Tcp(SocketAddr::V4(gw)),
        };
        let mut conn = Conn::new(link::connect(&target)?);
        Pkt::new(cmd::WORKER_CONNECT, 0, flag::BODY_IS_SCALAR, b"", &self.connect_body)
            .encode_into(conn.out.vec());
        let mut l = GwLink {
            addr: gw,
            target,
            conn,
            connected: false,
            drain_requested: false,
            acked: false,
            view: View::default(),
        };
        l.subscribe(&mut self.tokens);
        let key = self.table.insert(reg, l)?;
        self.by_addr.insert(gw, key);
        Ok(key)
    }

    /// Fold in readiness; `Ok(true)` when the link just became connected.
    pub fn on_ready(&mut self, key: usize, ready: Ready) -> io::Result<bool> {
        let Some(l) = self.table.on_ready(key, ready) else { return Ok(false) };
        if l.connected || !link::connect_done(&mut l.conn.io)? {
            return Ok(false);
        }
        l.connected = true;
        // What was queued before the connect (CMD_WORKER_CONNECT) goes at the end of the turn.
        self.table.mark_dirty(key);
        Ok(true)
    }

    pub fn read(&mut self, key: usize, cap: usize) -> io::Result<ReadEnd> {
        match self.table.get_mut(key) {
            Some(l) if l.connected => l.conn.read(cap),
            _ => Ok(ReadEnd::Drained),
        }
    }

    /// Bytes queued for link `key`'s gateway and not written yet; `None` when it is gone.
    pub fn queued(&self, key: usize) -> Option<usize> {
        self.table.get(key).map(|l| l.conn.out.len())
    }

    /// Length of the packet at the head of link `key`'s input, when known (0 otherwise).
    pub fn pending_packet(&self, key: usize) -> usize {
        self.table
            .get(key)
            .and_then(|l| {
                crate::wire::packet::peek_len(l.conn.inbuf.data(), super::MAX_PACKET).ok().flatten()
            })
            .unwrap_or(0)
    }

    pub fn take_inbuf(&mut self, key: usize) -> Option<InBuf> {
        self.table.get_mut(key).map(|l| std::mem::take(&mut l.conn.inbuf))
    }

    pub fn put_inbuf(&mut self, key: usize, buf: InBuf) {
        if let Some(l) = self.table.get_mut(key) {
            l.conn.inbuf = buf;
        }
    }

    /// Forget link `key`; returns its gateway.
    pub fn remove(&mut self, reg: &Registry, key: usize) -> Option<SocketAddrV4> {
        let l = self.table.remove(reg, key)?;
        self.by_addr.remove(&l.addr);
        Some(l.addr)
    }

    /// A `MEMBERSHIP` packet arrived on link `key`: update its view; subscribe again when
    /// the gateway ended the subscription.
    pub fn on_membership(&mut self, key: usize, p: &Packet<'_>) {
        let Some(l) = self.table.get_mut(key) else { return };
        if let Err(e) = l.view.apply(p.header.connection_id, p.body) {
            log::warn!("business worker: gateway {}: {e}; sending to it whatever the names", l.addr);
        }
        if l.view.wants_subscribe() && l.connected {
            l.subscribe(&mut self.tokens);
            self.table.mark_dirty(key);
        }
    }

    pub fn set_acked(&mut self, key: usize) {
        if let Some(l) = self.table.get_mut(key) {
            l.acked = true;
        }
    }

    /// Ask every gateway to stop routing to us; returns how many were asked.
    pub fn request_drain(&mut self) -> usize {
        let mut asked = Vec::new();
        for (key, l) in self.table.iter_mut() {
            l.drain_requested = true;
            if l.connected {
                Pkt::new(cmd::WORKER_DRAIN, 0, flag::BODY_IS_SCALAR, b"", b"").encode_into(l.conn.out.vec());
                asked.push(key);
            } else {
                l.acked = true;
            }
        }
        for &key in &asked {
            self.table.mark_dirty(key);
        }
        asked.len()
    }

    /// Every link acknowledged the drain (a closed link counts as done).
    pub fn all_acked(&self) -> bool {
        self.table.iter().all(|(_, l)| l.acked || !l.drain_requested)
    }

    /// Queue a packet for gateway `gw`.
    pub fn queue_to(&mut self, gw: SocketAddrV4, p: Pkt<'_>) -> Result<(), ApiError> {
        let key = *self.by_addr.get(&gw).ok_or(ApiError::GatewayNotConnected(gw))?;
        match self.table.get(key) {
            Some(l) if l.connected => {}
            _ => return Err(ApiError::GatewayNotConnected(gw)),
        }
        if let Some(l) = self.table.dirty_mut(key) {
            p.encode_into(l.conn.out.vec());
            // A bind or a join: the gateway holds the name from now on, as far as this
            // worker's next sends are concerned (they follow on this link).
            l.view.sending(p.header.cmd, p.ext);
            if l.view.wants_subscribe() {
                l.subscribe(&mut self.tokens);
            }
        }
        Ok(())
    }

    /// Write every link that has something queued (once per loop turn); returns the links
    /// that broke.
    pub fn flush_dirty(&mut self) -> Vec<usize> {
        self.table.flush_dirty();
        self.table.take_dead()
    }

    /// Before exit: keep writing until every queue is empty or `limit` passes.
    pub fn flush_blocking(&mut self, limit: Duration) {
        let until = Instant::now() + limit;
        loop {
            let mut pending = false;
            for (_, l) in self.table.iter_mut() {
                if l.connected && l.conn.flush().is_ok() && !l.conn.out.is_empty() {
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

    /// Lines for the `connections` command.
    pub fn conn_infos(&self) -> Vec<ConnInfo> {
        let info = |k: usize, l: &GwLink| {
            let mut i = l.conn.info(k as u64 + 1, "GatewayProtocol");
            if !l.connected {
                i.state = "CONNECTING";
            }
            i
        };
        self.table.iter().map(|(k, l)| info(k, l)).collect()
    }
}

impl Links for GatewayLinks {
    fn addresses(&self) -> Vec<SocketAddrV4> {
        self.table.iter().filter(|(_, l)| l.connected).map(|(_, l)| l.addr).collect()
    }

    fn holders(&self, names: Names<'_>) -> Vec<SocketAddrV4> {
        let may = |l: &GwLink| l.connected && l.view.may_hold(names);
        self.table.iter().filter(|(_, l)| may(l)).map(|(_, l)| l.addr).collect()
    }

    fn queue(&mut self, gw: SocketAddrV4, p: Pkt<'_>) -> Result<(), ApiError> {
        self.queue_to(gw, p)
    }

    fn flush_now(&mut self, gws: &[SocketAddrV4]) {
        for gw in gws {
            if let Some(l) = self.by_addr_mut(*gw).filter(|l| l.connected && !l.conn.out.is_empty()) {
                let _ = l.conn.flush();
            }
        }
    }
}

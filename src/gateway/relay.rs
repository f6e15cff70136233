//! Client input: reading and decoding, forwarding events to business workers (parked while
//! none is linked), closing and destroying clients.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use log::warn;

use super::client::{self, Closed, Inbound};
use super::{Gateway, READ_BUDGET, Timer};
use crate::net::websocket;
use crate::reactor::Ctx;
use crate::stats::Slot;
use crate::wire::packet::{self, Header, cmd, flag};
use crate::wire::php;

impl Gateway {
    /// Read up to the budget from client `key`, forwarding each message.
    pub(super) fn read_client(&mut self, key: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut rx = std::mem::take(&mut self.rx);
        self.read_client_with(key, &mut rx, &mut scratch);
        // The shared read buffer must be empty before the next client uses it.
        match self.clients.by_key_mut(key) {
            Some(c) => c.stash(&mut rx),
            None => rx.clear(),
        }
        self.rx = rx;
        self.scratch = scratch;
    }

    pub(super) fn read_client_with(&mut self, key: usize, rx: &mut client::Rx, scratch: &mut Vec<u8>) {
        for _ in 0..READ_BUDGET {
            let Some(c) = self.clients.by_key_mut(key) else { return };
            match c.next(rx, scratch, self.limits.max_package_size, &self.ws_cfg) {
                Inbound::Message { binary } => {
                    c.ping = -1;
                    c.last_active = self.clock;
                    let slot = self.stats.slot();
                    Slot::bump(&slot.total_request);
                    let f = flag::BODY_IS_SCALAR | if binary { flag::BINARY } else { 0 };
                    self.forward(key, cmd::ON_MESSAGE, f, scratch);
                }
                Inbound::Upgraded(req) => {
                    let ip = Ipv4Addr::from(c.ip).to_string();
                    let data = websocket::connect_data(&req, &ip, c.port, self.me.public_port);
                    let body = php::serialize(&data);
                    self.mark_dirty(key);
                    self.forward(key, cmd::ON_WEBSOCKET_CONNECT, 0, &body);
                }
                Inbound::Idle => return,
                Inbound::Closed(why) => {
                    self.log_closed(key, &why);
                    self.close_client(key);
                    return;
                }
            }
        }
        // Budget used up: keep going next turn without waiting for an edge.
        self.again.push(key);
    }

    pub(super) fn log_closed(&mut self, key: usize, why: &Closed) {
        let Some(c) = self.clients.by_key(key) else { return };
        let slot = self.stats.slot();
        match why {
            Closed::Peer => {}
            Closed::Bad(kind, reason) => {
                Slot::bump(&slot.bad_input);
                if let Some(more) = self.log_gate.check(kind) {
                    warn!(
                        "gateway: client {} ({}:{}) closed: {reason}{more}",
                        c.id,
                        Ipv4Addr::from(c.ip),
                        c.port
                    );
                }
            }
            Closed::TooBig(reason) => {
                Slot::bump(&slot.limit_size);
                if let Some(more) = self.log_gate.check("client_too_big") {
                    warn!(
                        "gateway: client {} ({}:{}) closed: {reason} (gateway.limits.max_package_size){more}",
                        c.id,
                        Ipv4Addr::from(c.ip),
                        c.port
                    );
                }
            }
        }
    }

    /// Close after writing what is queued (close frame, error page, KICK message).
    pub(super) fn close_client(&mut self, key: usize) {
        if let Some(c) = self.clients.by_key_mut(key) {
            c.close_after_flush();
            self.mark_dirty(key);
        }
    }

    pub(super) fn mark_dirty(&mut self, key: usize) {
        if let Some(c) = self.clients.by_key_mut(key)
            && !c.dirty
        {
            c.dirty = true;
            self.dirty_clients.push(key);
        }
    }

    pub(super) fn mark_dead(&mut self, key: usize) {
        if let Some(c) = self.clients.by_key_mut(key)
            && !c.dead
        {
            c.dead = true;
            self.dead_clients.push(key);
        }
    }

    // ----- forwarding to workers ---------------------------------------------------------

    /// Send one client event to the client's business worker (GatewayWorker's
    /// `sendToWorker`): header with the client's address, ext = session.
    pub(super) fn forward(&mut self, key: usize, command: u8, flags: u8, body: &[u8]) {
        let Some(c) = self.clients.by_key_mut(key) else { return };
        let header = Header {
            cmd: command,
            local_ip: self.me.lan_ip,
            local_port: self.me.lan_port,
            client_ip: c.ip,
            client_port: c.port,
            connection_id: c.id,
            flag: flags,
            gateway_port: self.me.public_port,
        };
        let route = self.router.route(c.route);
        c.route = route;
        match route {
            Some(r) => {
                let Some(inner) = self.inners.get_mut(r.key) else { return };
                if inner.out.len() >= self.limits.send_to_worker_buffer_size {
                    Slot::bump(&self.stats.slot().send_fail);
                    if let Some(more) = self.log_gate.check("worker_buffer") {
                        warn!(
                            "gateway: SendBufferToWorker fail. The send buffer to worker {} is full (gateway.limits.send_to_worker_buffer_size); event dropped{more}",
                            inner.peer
                        );
                    }
                    return;
                }
                packet::encode(inner.out.vec(), &header, &c.session, body);
                if !inner.dirty {
                    inner.dirty = true;
                    self.dirty_inners.push(r.key);
                }
            }
            None => self.park(key, &header, body),
        }
    }

    /// No business worker is linked: keep the event until one links (bounded), or
    /// destroy the client as GatewayWorker does when the buffer is full.
    pub(super) fn park(&mut self, key: usize, header: &Header, body: &[u8]) {
        let Some(c) = self.clients.by_key(key) else { return };
        if self.parked.len() + body.len() + c.session.len() + packet::HEADER_LEN
            > self.limits.send_to_worker_buffer_size
        {
            let now = Instant::now();
            if self.last_no_worker_log.is_none_or(|t| now.duration_since(t) > Duration::from_secs(1)) {
                warn!(
                    "gateway: SendBufferToWorker fail. The connections between Gateway and BusinessWorker are not ready; closing client {}",
                    c.id
                );
                self.last_no_worker_log = Some(now);
            }
            Slot::bump(&self.stats.slot().send_fail);
            if header.cmd != cmd::ON_CLOSE {
                self.mark_dead(key);
            }
            return;
        }
        packet::encode(&mut self.parked, header, &c.session, body);
    }

    /// A worker linked: route every parked event.
    pub(super) fn replay_parked(&mut self) {
        let parked = std::mem::take(&mut self.parked);
        let mut rest = &parked[..];
        while let Ok(Some((p, n))) = packet::decode(rest, usize::MAX) {
            let route = match self.clients.key_of(p.header.connection_id) {
                Some(k) => {
                    let c = self.clients.by_key_mut(k).map(|c| c.route).unwrap_or(None);
                    let r = self.router.route(c);
                    if let Some(cl) = self.clients.by_key_mut(k) {
                        cl.route = r;
                    }
                    r
                }
                None => self.router.any(),
            };
            if let Some(r) = route
                && let Some(inner) = self.inners.get_mut(r.key)
            {
                inner.out.extend(&rest[..n]);
                if !inner.dirty {
                    inner.dirty = true;
                    self.dirty_inners.push(r.key);
                }
            }
            rest = &rest[n..];
        }
    }

    pub(super) fn destroy_client(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        if self.clients.by_key(key).is_none() {
            return;
        }
        self.forward(key, cmd::ON_CLOSE, flag::BODY_IS_SCALAR, &[]);
        let Some(mut c) = self.clients.remove(key) else { return };
        c.io.deregister(cx.registry);
        c.release();
        if let Some(uid) = c.uid.take() {
            self.uids.remove(&uid, c.id);
        }
        for g in c.groups.take().unwrap_or_default() {
            self.groups.remove(&g, c.id);
        }
        if let Some(r) = c.route {
            self.router.unbind(r);
        }
    }
}

//! Client input: reading and decoding, forwarding events to business workers (parked while
//! none is linked), closing and destroying clients.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use log::warn;

use super::client::{self, Client, Closed, Inbound};
use super::inner::Links;
use super::limits::{Flow, LINK, Marks};
use super::{Gateway, Identity, Logs, READ_BUDGET, READ_BYTES_BUDGET, Timer, server_vars};
use crate::net::table::Owned;
use crate::reactor::{Ctx, Ready};
use crate::stats::{Slot, Stats};
use crate::wire::packet::{self, Header, cmd, flag};
use crate::wire::php;

impl Gateway {
    /// Readiness of client `key`: read what arrived, and flush what a TLS step queued.
    pub(super) fn on_client_ready(&mut self, key: usize, ready: Ready) {
        let Some(c) = self.clients.on_ready(key, ready) else { return };
        if c.conn.ready.contains(Ready::READABLE) {
            self.read_client(key);
        }
        // A TLS handshake step may have queued records to send.
        if self.clients.get(key).is_some_and(|c| c.wants_flush()) {
            self.clients.mark_dirty(key);
        }
    }

    /// Read up to the budget from client `key`, forwarding each message.
    pub(super) fn read_client(&mut self, key: usize) {
        let mut bufs = std::mem::take(&mut self.bufs);
        self.read_client_with(key, &mut bufs.rx, &mut bufs.msg);
        // The shared read buffer must be empty before the next client uses it.
        match self.clients.get_mut(key) {
            Some(c) => c.stash(&mut bufs.rx),
            None => bufs.rx.clear(),
        }
        self.bufs = bufs;
    }

    /// Read from client `key` until its fair share of this turn is used (`READ_BUDGET`
    /// messages, `READ_BYTES_BUDGET` bytes) or it is paused (`pause`).
    fn read_client_with(&mut self, key: usize, rx: &mut client::Rx, msg: &mut Vec<u8>) {
        let max = self.settings.limits.max_package_size;
        let mut bytes = 0;
        for _ in 0..READ_BUDGET {
            if bytes >= READ_BYTES_BUDGET {
                break;
            }
            if self.held(key) {
                return;
            }
            let Some(c) = self.clients.get_mut(key) else { return };
            match c.next(rx, msg, max, &self.settings.ws_cfg) {
                Inbound::Message { binary } => {
                    c.ping = -1;
                    c.last_active = self.clock;
                    Slot::bump(&self.stats.slot().total_request);
                    let f = flag::BODY_IS_SCALAR | if binary { flag::BINARY } else { 0 };
                    self.forward(key, cmd::ON_MESSAGE, f, msg);
                    bytes += msg.len();
                    if self.over_rate(key, msg.len()) {
                        return;
                    }
                }
                Inbound::Upgraded(req) => {
                    let ip = Ipv4Addr::from(c.ip).to_string();
                    let data = server_vars::connect_data(&req, &ip, c.port, self.me.public_port);
                    let body = php::serialize(&data);
                    self.clients.mark_dirty(key);
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
        self.clients.again.push(key);
    }

    fn log_closed(&mut self, key: usize, why: &Closed) {
        let Some(c) = self.clients.get(key) else { return };
        let slot = self.stats.slot();
        let (kind, reason, key_hint) = match why {
            Closed::Peer => return,
            Closed::Bad(kind, reason) => {
                Slot::bump(&slot.bad_input);
                (*kind, reason, "")
            }
            Closed::TooBig(reason) => {
                Slot::bump(&slot.limit_size);
                ("client_too_big", reason, " (gateway.limits.max_package_size)")
            }
        };
        if let Some(more) = self.logs.gate.check(kind) {
            let addr = Ipv4Addr::from(c.ip);
            warn!("gateway: client {} ({addr}:{}) closed: {reason}{key_hint}{more}", c.id, c.port);
        }
    }

    /// Close after writing what is queued (close frame, error page, KICK message).
    pub(super) fn close_client(&mut self, key: usize) {
        if let Some(c) = self.clients.dirty_mut(key) {
            c.close_after_flush();
        }
    }

    /// Send one client event to the client's business worker (GatewayWorker's
    /// `sendToWorker`): header with the client's address, ext = session.
    pub(super) fn forward(&mut self, key: usize, command: u8, flags: u8, body: &[u8]) {
        let Some(c) = self.clients.get_mut(key) else { return };
        let limit = self.settings.limits.send_to_worker_buffer_size;
        let header = self.me.header(c, command, flags);
        c.route = self.router.route(c.route);
        let kept = match c.route {
            Some(r) => {
                let event = (&header, &c.session[..], body);
                queue_event(&mut self.links, r.key, event, &mut c.flow, self.settings.marks);
                true
            }
            None => park(&mut self.links, c, &header, body, limit, &self.stats, &mut self.logs),
        };
        if !kept && command != cmd::ON_CLOSE {
            self.clients.mark_dead(key);
        }
    }

    /// A worker linked: route every parked event.
    pub(super) fn replay_parked(&mut self) {
        let parked = std::mem::take(&mut self.links.parked);
        let mut rest = &parked[..];
        while let Ok(Some((p, n))) = packet::decode(rest, usize::MAX) {
            let route = match self.clients.by_id_mut(p.header.connection_id) {
                Some(c) => {
                    c.route = self.router.route(c.route);
                    c.route
                }
                None => self.router.any(),
            };
            if let Some(out) = route.and_then(|r| self.links.out(r.key)) {
                out.extend(&rest[..n]);
            }
            rest = &rest[n..];
        }
    }

    /// A worker link is gone: its waiting clients read again (their next event picks
    /// another worker).
    pub(super) fn release_waiting(&mut self, waiting: &[u32]) {
        self.resume_all(waiting, LINK);
    }

    pub(super) fn destroy_client(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        self.forward(key, cmd::ON_CLOSE, flag::BODY_IS_SCALAR, &[]);
        let Some(mut c) = self.clients.remove(cx.registry, key) else { return };
        c.release();
        self.index.forget(&mut c);
        self.publish_membership();
        if let Some(r) = c.route {
            self.router.unbind(r);
        }
    }
}

impl Identity {
    /// The header of an event of client `c`.
    fn header(&self, c: &Client, command: u8, flags: u8) -> Header {
        Header {
            cmd: command,
            local_ip: self.lan_ip,
            local_port: self.lan_port,
            client_ip: c.ip,
            client_port: c.port,
            connection_id: c.id,
            flag: flags,
            gateway_port: self.public_port,
        }
    }
}

/// Queue an event of the client whose flow state is `flow` on worker link `key`. Nothing is
/// dropped (GatewayWorker drops an event when the link's buffer is full, whoever sent it):
/// the link's water marks hold the clients that fill it before they are read again
/// (`Gateway::held`), so the buffer stays within `send_to_worker_buffer_size` plus one
/// message, plus the connect and close events that read nothing.
fn queue_event(links: &mut Links, key: usize, event: (&Header, &[u8], &[u8]), flow: &mut Flow, marks: Marks) {
    let (header, session, body) = event;
    let Some(inner) = links.table.dirty_mut(key) else { return };
    let before = inner.conn.out.len();
    packet::encode(inner.conn.out.vec(), header, session, body);
    let len = inner.conn.out.len();
    if inner.flow.queued(flow, len - before, len, marks) {
        links.congested.push(key);
    }
}

/// No business worker is linked: keep the event until one links (bounded). False when the
/// buffer is full: GatewayWorker then destroys the client.
fn park(
    links: &mut Links,
    c: &Client,
    header: &Header,
    body: &[u8],
    limit: usize,
    stats: &Stats,
    logs: &mut Logs,
) -> bool {
    if links.parked.len() + body.len() + c.session.len() + packet::HEADER_LEN > limit {
        let now = Instant::now();
        if logs.last_no_worker.is_none_or(|t| now.duration_since(t) > Duration::from_secs(1)) {
            warn!(
                "gateway: SendBufferToWorker fail. The connections between Gateway and BusinessWorker are not ready; closing client {}",
                c.id
            );
            logs.last_no_worker = Some(now);
        }
        Slot::bump(&stats.slot().send_fail);
        return false;
    }
    packet::encode(&mut links.parked, header, &c.session, body);
    true
}

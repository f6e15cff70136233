//! Pausing and resuming client input: a worker link above its high-water mark holds the
//! clients that filled it, a client over its rate is held (or closed) until its buckets
//! refill. A paused client keeps its readiness as data and is resumed from a list (the link's
//! waiting clients after a flush, the throttled clients on the refill timer) through
//! `Clients::again`, without waiting for a new epoll edge. Nothing is dropped.

use std::net::Ipv4Addr;

use log::warn;

use super::Gateway;
use super::limits::{LINK, RATE};
use crate::config::RatePolicy;
use crate::net::table::Owned;
use crate::stats::Slot;

impl Gateway {
    /// Milliseconds of the gateway's clock (for the rate buckets).
    pub(super) fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Before reading a message from client `key`: true when it must not be read now (it is
    /// paused, or its worker link is congested and it queued its share: then it is paused).
    pub(super) fn held(&mut self, key: usize) -> bool {
        let Some(c) = self.clients.get_mut(key) else { return true };
        if c.flow.paused != 0 {
            return true;
        }
        let Some(r) = c.route else { return false };
        let Some(inner) = self.links.get_mut(r.key).filter(|i| i.serial == r.serial) else { return false };
        let marks = self.settings.marks;
        if !inner.flow.must_wait(&c.flow, inner.conn.out.len(), marks) {
            return false;
        }
        // What this turn queued may not have met the socket yet: write it now (in order), and
        // wait only if the socket does not take it. A write error is found again at the end of
        // the turn, which removes the link.
        let before = inner.conn.bytes_written;
        let _ = inner.flush();
        Slot::add(&self.stats.slot().bytes_written, inner.conn.bytes_written - before);
        if !inner.flow.must_wait(&c.flow, inner.conn.out.len(), marks) {
            return false;
        }
        c.flow.paused |= LINK;
        if inner.flow.hold(c.id) {
            self.links.congested.push(r.key);
        }
        Slot::bump(&self.stats.slot().limit_backpressure);
        if let Some(more) = self.logs.gate.check("backpressure") {
            let peer = self.links.get(r.key).map(|i| i.peer.clone()).unwrap_or_default();
            let (id, addr, port) = (c.id, Ipv4Addr::from(c.ip), c.port);
            warn!(
                "gateway: client {id} ({addr}:{port}) paused: the link to worker {peer} is above its high-water mark (gateway.limits.worker_high_water){more}"
            );
        }
        true
    }

    /// After forwarding a message of `len` bytes from client `key`: charge its rates; true
    /// when it went over (then it is paused or, by `rate_policy`, closed).
    pub(super) fn over_rate(&mut self, key: usize, len: usize) -> bool {
        let now = self.now_ms();
        let flow = &self.settings.limits.flow;
        let Some(c) = self.clients.get_mut(key) else { return true };
        if !c.flow.charge(flow, len, now) {
            return false;
        }
        Slot::bump(&self.stats.slot().limit_rate);
        let close = flow.rate_policy == RatePolicy::Close;
        let (id, addr, port) = (c.id, Ipv4Addr::from(c.ip), c.port);
        if close {
            c.fail_policy();
            self.close_client(key);
        } else {
            c.flow.paused |= RATE;
            self.clients.throttled.push(id);
        }
        if let Some(more) = self.logs.gate.check("rate") {
            let what = if close { "closing it" } else { "paused until its bucket refills" };
            warn!(
                "gateway: client {id} ({addr}:{port}) is over its rate (gateway.limits.max_messages_per_second, max_bytes_per_second); {what}{more}"
            );
        }
        true
    }

    /// Refill timer: resume the throttled clients whose buckets refilled.
    pub(super) fn refill(&mut self) {
        self.clients.refill_armed = false;
        let now = self.now_ms();
        let mut throttled = std::mem::take(&mut self.clients.throttled);
        throttled.retain(|&id| {
            let Some(key) = self.clients.key_of(id) else { return false };
            let Some(c) = self.clients.get_mut(key) else { return false };
            if !c.flow.refilled(&self.settings.limits.flow, now) {
                return true;
            }
            if c.flow.resume(RATE) {
                self.clients.again.push(key);
            }
            false
        });
        self.clients.throttled = throttled;
    }

    /// After the worker links were flushed: resume the clients waiting for a link that
    /// drained below its low-water mark.
    pub(super) fn resume_drained(&mut self) {
        let marks = self.settings.marks;
        let mut congested = std::mem::take(&mut self.links.congested);
        congested.retain(|&key| {
            let Some(inner) = self.links.get_mut(key) else { return false };
            match inner.flow.drained(inner.conn.out.len(), marks) {
                Some(waiting) => {
                    self.resume_all(&waiting, LINK);
                    false
                }
                None => true,
            }
        });
        self.links.congested = congested;
    }

    /// Clear pause reason `why` of the clients `ids`; those left with no reason read again.
    pub(super) fn resume_all(&mut self, ids: &[u32], why: u8) {
        for &id in ids {
            if let Some(key) = self.clients.key_of(id)
                && let Some(c) = self.clients.get_mut(key)
                && c.flow.resume(why)
            {
                self.clients.again.push(key);
            }
        }
    }
}

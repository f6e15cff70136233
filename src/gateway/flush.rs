//! End of a loop turn: one write per dirty connection, then the dead are removed.

use log::warn;

use super::{Gateway, Timer};
use crate::config::SendFullPolicy;
use crate::reactor::Ctx;
use crate::stats::Slot;

impl Gateway {
    pub(super) fn flush_all(&mut self, cx: &mut Ctx<'_, Timer>) {
        let mut dirty = std::mem::take(&mut self.dirty_clients);
        for key in dirty.drain(..) {
            let Some(c) = self.clients.by_key_mut(key) else { continue };
            c.dirty = false;
            if c.dead {
                continue;
            }
            let before = c.bytes_written;
            let res = c.flush();
            Slot::add(&self.stats.slot().bytes_written, c.bytes_written - before);
            match res {
                Ok(true) if c.closing => {
                    c.io.shutdown_write();
                    self.mark_dead(key);
                }
                Ok(_) => {}
                Err(_) => self.mark_dead(key),
            }
        }
        self.dirty_clients = dirty;

        // Destroying a client queues its CMD_ON_CLOSE: the worker links are flushed after.
        for key in std::mem::take(&mut self.dead_clients) {
            self.destroy_client(cx, key);
        }

        let mut dirty = std::mem::take(&mut self.dirty_inners);
        for key in dirty.drain(..) {
            let Some(inner) = self.inners.get_mut(key) else { continue };
            inner.dirty = false;
            let before = inner.bytes_written;
            let res = inner.flush();
            Slot::add(&self.stats.slot().bytes_written, inner.bytes_written - before);
            match res {
                Ok(true) if inner.closing => self.kill_inner(key),
                Ok(_) => {}
                Err(_) => self.kill_inner(key),
            }
        }
        self.dirty_inners = dirty;

        for key in std::mem::take(&mut self.dead_inners) {
            self.destroy_inner(cx, key);
        }
    }

    /// Count a dropped send; close the client if the policy says so.
    pub(super) fn send_failed(&mut self, key: usize) {
        Slot::bump(&self.stats.slot().send_fail);
        let id = self.clients.by_key(key).map_or(0, |c| c.id);
        if self.limits.send_full_policy == SendFullPolicy::Close {
            Slot::bump(&self.stats.slot().limit_slow);
            if let Some(more) = self.log_gate.check("slow_client") {
                warn!(
                    "gateway: client {id} does not read its messages (gateway.limits.send_to_client_buffer_size); closing it{more}"
                );
            }
            self.mark_dead(key);
        } else if let Some(more) = self.log_gate.check("send_fail") {
            warn!(
                "gateway: send buffer of client {id} is full (gateway.limits.send_to_client_buffer_size); message dropped, counted in send_fail{more}"
            );
        }
    }
}

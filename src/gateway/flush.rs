//! End of a loop turn: one write per dirty connection, then the dead are removed.

use log::warn;

use super::{Gateway, Timer};
use crate::config::SendFullPolicy;
use crate::reactor::Ctx;
use crate::stats::Slot;

impl Gateway {
    pub(super) fn flush_all(&mut self, cx: &mut Ctx<'_, Timer>) {
        let written = self.clients.flush_dirty();
        Slot::add(&self.stats.slot().bytes_written, written);
        // Destroying a client queues its CMD_ON_CLOSE: the worker links are flushed after.
        for key in self.clients.take_dead() {
            self.destroy_client(cx, key);
        }
        let written = self.links.table.flush_dirty();
        Slot::add(&self.stats.slot().bytes_written, written);
        self.resume_drained();
        for key in self.links.table.take_dead() {
            self.destroy_inner(cx, key);
        }
    }

    /// Count a dropped send; close the client if the policy says so.
    pub(super) fn send_failed(&mut self, key: usize) {
        Slot::bump(&self.stats.slot().send_fail);
        let id = self.clients.get(key).map_or(0, |c| c.id);
        if self.settings.limits.send_full_policy == SendFullPolicy::Close {
            Slot::bump(&self.stats.slot().limit_slow);
            if let Some(more) = self.logs.gate.check("slow_client") {
                warn!(
                    "gateway: client {id} does not read its messages (gateway.limits.send_to_client_buffer_size); closing it{more}"
                );
            }
            self.clients.mark_dead(key);
        } else if let Some(more) = self.logs.gate.check("send_fail") {
            warn!(
                "gateway: send buffer of client {id} is full (gateway.limits.send_to_client_buffer_size); message dropped, counted in send_fail{more}"
            );
        }
    }
}

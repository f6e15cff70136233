//! Membership notifications (ours, `docs/protocol.md` §7): a business worker or GatewayClient
//! that subscribed on its inner link gets a snapshot of the uids and groups this gateway
//! holds, then every name that appears or disappears, queued on its link at the moment the
//! change is made, so ahead of every event that follows the change. With each packet goes
//! the number of `BIND_UID` and `JOIN_GROUP` commands executed from that link since it
//! subscribed: the subscriber's own binds and joins not counted yet are still on their way.

use log::warn;

use super::Gateway;
use crate::stats::Slot;
use crate::wire::membership::{MAX_TOKEN, Op, SNAPSHOT_CHUNK};
use crate::wire::packet::{self, Header, cmd, flag};

impl Gateway {
    /// `MEMBERSHIP_SUBSCRIBE` from link `from`: (re)start its subscription with a snapshot
    /// that echoes `token`.
    pub(super) fn subscribe(&mut self, from: usize, token: &[u8]) {
        let token = &token[..token.len().min(MAX_TOKEN)];
        let parts = self.index.snapshot(token, SNAPSHOT_CHUNK);
        let Some(inner) = self.links.table.dirty_mut(from).filter(|i| i.is_open()) else { return };
        inner.membership = Some(0);
        for ops in parts {
            encode(inner.conn.out.vec(), 0, &ops);
        }
    }

    /// A `BIND_UID` or `JOIN_GROUP` from link `from` is about to run: count it.
    pub(super) fn count_membership_command(&mut self, from: usize) {
        if let Some(n) = self.links.get_mut(from).and_then(|i| i.membership.as_mut()) {
            *n = n.wrapping_add(1);
        }
    }

    /// Queue the changes written down since the last call on every subscribed link. A link
    /// with more than `send_to_worker_buffer_size` bytes queued gets the reset op instead and
    /// is subscribed no more: its peer then counts on nothing from this gateway.
    pub(super) fn publish_membership(&mut self) {
        if self.index.changes.is_empty() {
            return;
        }
        let limit = self.settings.limits.send_to_worker_buffer_size;
        let changes = std::mem::take(&mut self.index.changes);
        let mut queued = Vec::new();
        let mut reset = Vec::new();
        for (key, inner) in self.links.table.iter_mut() {
            let Some(count) = inner.membership.filter(|_| inner.is_open()) else { continue };
            if inner.conn.out.len() > limit {
                let mut op = Vec::new();
                Op::Reset.encode(&mut op);
                encode(inner.conn.out.vec(), count, &op);
                inner.membership = None;
                reset.push(inner.peer.clone());
            } else {
                encode(inner.conn.out.vec(), count, &changes);
            }
            queued.push(key);
        }
        for key in queued {
            self.links.table.mark_dirty(key);
        }
        for peer in reset {
            Slot::bump(&self.stats.slot().send_fail);
            if let Some(more) = self.logs.gate.check("membership_reset") {
                warn!(
                    "gateway: inner link {peer} does not read its membership notifications (over gateway.limits.send_to_worker_buffer_size queued); it is told to send to this gateway whatever the names{more}"
                );
            }
        }
        self.index.changes = changes;
        self.index.changes.clear();
    }
}

/// Append one `MEMBERSHIP` packet carrying `ops`, with the link's command count.
fn encode(out: &mut Vec<u8>, count: u32, ops: &[u8]) {
    let header = Header::command(cmd::MEMBERSHIP, count, flag::BODY_IS_SCALAR);
    packet::encode(out, &header, b"", ops);
}

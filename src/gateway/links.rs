//! Inner links from business workers and GatewayClients: reading and executing their packets.

use log::{info, warn};

use super::inner;
use super::{Gateway, INNER_READ_CAP, Timer};
use crate::reactor::{Ctx, Ready};
use crate::stats::Slot;
use crate::wire::packet;

impl Gateway {
    pub(super) fn on_inner_ready(&mut self, key: usize, ready: Ready) {
        let Some(inner) = self.inners.get_mut(key) else { return };
        inner.ready.insert(ready);
        if ready.contains(Ready::WRITABLE) && !inner.out.is_empty() && !inner.dirty {
            inner.dirty = true;
            self.dirty_inners.push(key);
        }
        if inner.ready.contains(Ready::READABLE) {
            self.read_inner(key);
        }
    }

    pub(super) fn read_inner(&mut self, key: usize) {
        loop {
            let Some(inner) = self.inners.get_mut(key) else { return };
            if inner.dead || inner.closing {
                return;
            }
            // Read at least a whole packet, even one bigger than the cap.
            let need = packet::peek_len(inner.inbuf.data(), self.limits.max_package_size)
                .ok()
                .flatten()
                .unwrap_or(0);
            let end = inner.read(INNER_READ_CAP.max(need));
            self.exec_buffered(key);
            match end {
                Ok(inner::ReadEnd::Full) => continue,
                Ok(inner::ReadEnd::Drained) => return,
                Ok(inner::ReadEnd::Eof) | Err(_) => {
                    self.kill_inner(key);
                    return;
                }
            }
        }
    }

    /// Execute every complete packet buffered on inner link `key`.
    pub(super) fn exec_buffered(&mut self, key: usize) {
        let Some(inner) = self.inners.get_mut(key) else { return };
        let buf = std::mem::take(&mut inner.inbuf);
        let mut used = 0;
        let data = buf.data();
        loop {
            match packet::decode(&data[used..], self.limits.max_package_size) {
                Ok(Some((p, n))) => {
                    used += n;
                    Slot::bump(&self.stats.slot().total_request);
                    self.exec(key, &p);
                    if self.inners.get(key).is_none_or(|i| i.dead || i.closing) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let peer = self.inners.get(key).map(|i| i.peer.clone()).unwrap_or_default();
                    if let Some(more) = self.log_gate.check("inner_bad") {
                        warn!("gateway: bad packet from inner connection {peer}: {e}; closing it{more}");
                    }
                    Slot::bump(&self.stats.slot().bad_input);
                    self.kill_inner(key);
                    return;
                }
            }
        }
        if let Some(inner) = self.inners.get_mut(key) {
            let mut buf = buf;
            buf.consume(used);
            inner.inbuf = buf;
        }
    }

    /// Queue inner link `key` for destruction at the end of the turn.
    pub(super) fn kill_inner(&mut self, key: usize) {
        if let Some(inner) = self.inners.get_mut(key)
            && !inner.dead
        {
            inner.dead = true;
            self.dead_inners.push(key);
        }
    }

    pub(super) fn destroy_inner(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        let Some(mut inner) = self.inners.try_remove(key) else { return };
        inner.io.deregister(cx.registry);
        if let inner::Kind::Worker { key: wk, .. } = &inner.kind {
            self.router.remove(key);
            info!("gateway: business worker {wk} disconnected");
        }
    }
}

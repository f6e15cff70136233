//! Inner links from business workers and GatewayClients: reading and executing their packets.

use log::{info, warn};

use super::inner::Kind;
use super::{Gateway, INNER_READ_CAP, Timer};
use crate::net::conn::ReadEnd;
use crate::reactor::{Ctx, Ready};
use crate::stats::Slot;
use crate::wire::packet;

impl Gateway {
    pub(super) fn on_inner_ready(&mut self, key: usize, ready: Ready) {
        let Some(inner) = self.links.table.on_ready(key, ready) else { return };
        if inner.conn.ready.contains(Ready::READABLE) {
            self.read_inner(key);
        }
    }

    pub(super) fn read_inner(&mut self, key: usize) {
        loop {
            let Some(inner) = self.links.get_mut(key).filter(|i| i.is_open()) else { return };
            // Read at least a whole packet, even one bigger than the cap.
            let max = self.settings.limits.max_package_size;
            let need = packet::peek_len(inner.conn.inbuf.data(), max).ok().flatten().unwrap_or(0);
            let end = inner.conn.read(INNER_READ_CAP.max(need));
            self.exec_buffered(key);
            match end {
                Ok(ReadEnd::Full) => continue,
                Ok(ReadEnd::Drained) => return,
                Ok(ReadEnd::Eof) | Err(_) => return self.links.kill(key),
            }
        }
    }

    /// Execute every complete packet buffered on inner link `key`.
    pub(super) fn exec_buffered(&mut self, key: usize) {
        let Some(inner) = self.links.get_mut(key) else { return };
        let mut buf = std::mem::take(&mut inner.conn.inbuf);
        let mut used = 0;
        let data = buf.data();
        loop {
            match packet::decode(&data[used..], self.settings.limits.max_package_size) {
                Ok(Some((p, n))) => {
                    used += n;
                    Slot::bump(&self.stats.slot().total_request);
                    self.exec(key, &p);
                    if !self.links.get(key).is_some_and(|i| i.is_open()) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let peer = self.links.get(key).map(|i| i.peer.clone()).unwrap_or_default();
                    if let Some(more) = self.logs.gate.check("inner_bad") {
                        warn!("gateway: bad packet from inner connection {peer}: {e}; closing it{more}");
                    }
                    Slot::bump(&self.stats.slot().bad_input);
                    self.links.kill(key);
                    return;
                }
            }
        }
        if let Some(inner) = self.links.get_mut(key) {
            buf.consume(used);
            inner.conn.inbuf = buf;
        }
    }

    pub(super) fn destroy_inner(&mut self, cx: &mut Ctx<'_, Timer>, key: usize) {
        let Some(inner) = self.links.table.remove(cx.registry, key) else { return };
        self.release_waiting(&inner.flow.waiting);
        if let Kind::Worker { key: wk, .. } = &inner.kind {
            self.router.remove(key);
            info!("gateway: business worker {wk} disconnected");
        }
    }
}

//! Fair reading of gateway links: each link gets a bounded read per loop turn (a busy
//! gateway does not starve the others' clients), and a link whose queue of replies has
//! reached `send_to_gateway_buffer_size` is not read until that queue drains below a quarter
//! of it (the gateway then pushes back on its own clients), instead of growing without bound.

use super::Worker;
use crate::net::conn::ReadEnd;
use crate::reactor::Ctx;

/// The links waiting for their next turn.
#[derive(Debug)]
pub struct Turns {
    /// Links with input left after their share of this turn.
    pub again: Vec<usize>,
    /// Links not read while their queue of replies is full.
    pub held: Vec<usize>,
    /// `send_to_gateway_buffer_size`.
    pub limit: usize,
    /// Bytes read from one link per turn (`LINK_TURN_BYTES`).
    pub share: usize,
}

impl Worker {
    /// Read link `key` for one turn and dispatch what arrived.
    pub(super) fn read_link(&mut self, cx: &mut Ctx<'_, super::Timer>, key: usize) {
        match self.links.queued(key) {
            None => return,
            Some(n) if n >= self.turns.limit => {
                if !self.turns.held.contains(&key) {
                    self.turns.held.push(key);
                }
                return;
            }
            Some(_) => {}
        }
        // Read at least a whole packet, even one bigger than the share.
        let cap = self.turns.share.max(self.links.pending_packet(key));
        let end = self.links.read(key, cap);
        self.dispatch_buffered(cx, key);
        match end {
            Ok(ReadEnd::Full) => self.turns.again.push(key),
            Ok(ReadEnd::Drained) => {}
            Ok(ReadEnd::Eof) => self.link_lost(cx, key, "closed by the gateway"),
            Err(e) => self.link_lost(cx, key, &e.to_string()),
        }
    }

    /// Start of the end of a turn: the links with input left get their next share.
    pub(super) fn read_again(&mut self, cx: &mut Ctx<'_, super::Timer>) {
        for key in std::mem::take(&mut self.turns.again) {
            self.read_link(cx, key);
        }
    }

    /// After the flush: held links whose queue drained below a quarter of the limit are read
    /// again next turn (their input waited with its readiness kept).
    pub(super) fn release_held(&mut self) {
        let low = self.turns.limit / 4;
        let links = &self.links;
        let again = &mut self.turns.again;
        self.turns.held.retain(|&key| match links.queued(key) {
            Some(n) if n > low => true,
            Some(_) => {
                again.push(key);
                false
            }
            None => false,
        });
    }
}

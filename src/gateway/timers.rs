//! Timers: the once-a-second tick (statistics, handshake and idle timeouts), heartbeat and
//! register keep-alive.

use std::time::Duration;

use log::{info, warn};

use super::{Gateway, KEEPALIVE, Timer};
use crate::config::Proto;
use crate::reactor::Ctx;
use crate::stats::Slot;
use crate::wire::packet::{self, Header, cmd, flag};

impl Gateway {
    pub(super) fn heartbeat_period(&self) -> Option<Duration> {
        if self.settings.ping_interval.is_zero() {
            return None;
        }
        Some(if self.settings.ping_limit > 0 {
            self.settings.ping_interval / 2
        } else {
            self.settings.ping_interval
        })
    }

    /// The heartbeat of `docs/protocol.md` §6, one tick.
    pub(super) fn heartbeat(&mut self) {
        let limit = self.settings.ping_limit as i32;
        let mut expired = Vec::new();
        let mut ping = Vec::new();
        for (key, c) in self.clients.iter_mut() {
            if c.conn.dead {
                continue;
            }
            // Held by flow control with input waiting unread: it is sending, not silent.
            if c.flow.paused != 0 && c.has_unread_input() {
                c.ping = 0;
                continue;
            }
            if limit > 0 && c.ping >= 2 * limit {
                expired.push(key);
                continue;
            }
            c.ping += 1;
            if !self.settings.ping_data.is_empty() && c.ping != 0 && !(limit > 0 && c.ping % 2 == 1) {
                ping.push(key);
            }
        }
        for key in expired {
            if let Some(c) = self.clients.get(key)
                && let Some(more) = self.logs.gate.check("heartbeat")
            {
                info!(
                    "gateway: client {} sent nothing for too long (ping_not_response_limit), closing{more}",
                    c.id
                );
            }
            self.clients.mark_dead(key);
        }
        let data = std::mem::take(&mut self.settings.ping_data);
        let limit = self.settings.limits.send_to_client_buffer_size;
        let ws = self.me.proto == Proto::WebSocket;
        for key in ping {
            if let Some(c) = self.clients.dirty_mut(key)
                && (!ws || !c.handshaking())
            {
                let _ = c.send(&data, false, false, limit);
            }
        }
        self.settings.ping_data = data;
    }

    /// Once a second: coarse clock, handshake and idle timeouts, statistics.
    pub(super) fn tick(&mut self, cx: &mut Ctx<'_, Timer>) {
        self.clock = self.started.elapsed().as_secs() as u32;
        self.relays.expire(cx.registry, cx.now);
        while let Some(&(deadline, id)) = self.clients.handshakes.front() {
            if deadline > self.clock {
                break;
            }
            self.clients.handshakes.pop_front();
            if let Some(key) = self.clients.key_of(id)
                && self.clients.get(key).is_some_and(|c| c.handshaking())
            {
                Slot::bump(&self.stats.slot().limit_handshake);
                if let Some(more) = self.logs.gate.check("handshake_timeout") {
                    warn!(
                        "gateway: client {id} did not finish its handshake in time (gateway.limits.handshake_timeout), closing{more}"
                    );
                }
                self.clients.mark_dead(key);
            }
        }
        let idle = self.settings.limits.idle_timeout.as_secs() as u32;
        if idle > 0 {
            let clock = self.clock;
            let stale: Vec<usize> = self
                .clients
                .iter()
                // The clock counts whole seconds: more than `idle` ticks of silence.
                .filter(|(_, c)| clock.saturating_sub(c.last_active) > idle)
                .map(|(k, _)| k)
                .collect();
            for key in stale {
                Slot::bump(&self.stats.slot().limit_idle);
                if let Some(more) = self.logs.gate.check("idle") {
                    let id = self.clients.get(key).map_or(0, |c| c.id);
                    info!(
                        "gateway: client {id} idle for {idle} s (gateway.limits.idle_timeout), closing{more}"
                    );
                }
                self.clients.mark_dead(key);
            }
        }
        let slot = self.stats.slot();
        slot.tick();
        self.count_connections();
        Slot::set(&slot.timers, cx.timers.len() as u64 + 1);
        cx.after(Duration::from_secs(1), Timer::Tick);
    }

    pub(super) fn keepalive(&mut self, cx: &mut Ctx<'_, Timer>) {
        self.registers.keepalive();
        let ping = Header::command(cmd::PING, 0, flag::BODY_IS_SCALAR);
        for key in self.links.workers() {
            if let Some(out) = self.links.out(key) {
                packet::encode(out.vec(), &ping, b"", b"");
            }
        }
        cx.after(KEEPALIVE, Timer::KeepAlive);
    }
}

//! Timers: the once-a-second tick (statistics, handshake and idle timeouts), heartbeat and
//! register keep-alive.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use log::{info, warn};

use super::{Gateway, KEEPALIVE, Timer};
use crate::config::Proto;
use crate::reactor::Ctx;
use crate::stats::Slot;
use crate::wire::link::Target;
use crate::wire::packet::{self, Header, cmd, flag};
use crate::wire::register as lines;

impl Gateway {
    pub(super) fn heartbeat_period(&self) -> Option<Duration> {
        if self.ping_interval.is_zero() {
            return None;
        }
        Some(if self.ping_limit > 0 { self.ping_interval / 2 } else { self.ping_interval })
    }

    /// The heartbeat of `docs/protocol.md` §6, one tick.
    pub(super) fn heartbeat(&mut self) {
        let limit = self.ping_limit as i32;
        let mut expired = Vec::new();
        let mut ping = Vec::new();
        for (key, c) in self.clients.iter_mut() {
            if c.dead {
                continue;
            }
            if limit > 0 && c.ping >= 2 * limit {
                expired.push(key);
                continue;
            }
            c.ping += 1;
            if !self.ping_data.is_empty() && c.ping != 0 && !(limit > 0 && c.ping % 2 == 1) {
                ping.push(key);
            }
        }
        for key in expired {
            if let Some(c) = self.clients.by_key(key)
                && let Some(more) = self.log_gate.check("heartbeat")
            {
                info!(
                    "gateway: client {} sent nothing for too long (ping_not_response_limit), closing{more}",
                    c.id
                );
            }
            self.mark_dead(key);
        }
        let data = std::mem::take(&mut self.ping_data);
        for key in ping {
            if let Some(c) = self.clients.by_key_mut(key)
                && (!c.handshaking() || self.me.proto != Proto::WebSocket)
            {
                let _ = c.send(&data, false, false, self.limits.send_to_client_buffer_size);
                self.mark_dirty(key);
            }
        }
        self.ping_data = data;
    }

    /// Once a second: coarse clock, handshake and idle timeouts, statistics.
    pub(super) fn tick(&mut self, cx: &mut Ctx<'_, Timer>) {
        self.clock = self.started.elapsed().as_secs() as u32;
        while let Some(&(deadline, id)) = self.handshakes.front() {
            if deadline > self.clock {
                break;
            }
            self.handshakes.pop_front();
            if let Some(key) = self.clients.key_of(id)
                && self.clients.by_key(key).is_some_and(|c| c.handshaking())
            {
                Slot::bump(&self.stats.slot().limit_handshake);
                if let Some(more) = self.log_gate.check("handshake_timeout") {
                    warn!(
                        "gateway: client {id} did not finish its handshake in time (gateway.limits.handshake_timeout), closing{more}"
                    );
                }
                self.mark_dead(key);
            }
        }
        let idle = self.limits.idle_timeout.as_secs() as u32;
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
                if let Some(more) = self.log_gate.check("idle") {
                    let id = self.clients.by_key(key).map_or(0, |c| c.id);
                    info!(
                        "gateway: client {id} idle for {idle} s (gateway.limits.idle_timeout), closing{more}"
                    );
                }
                self.mark_dead(key);
            }
        }
        let slot = self.stats.slot();
        slot.tick();
        let registers = self.registers.iter().filter(|l| l.is_connected()).count();
        Slot::set(&slot.connections, (self.clients.len() + self.inners.len() + registers) as u64);
        Slot::set(&slot.timers, cx.timers.len() as u64 + 1);
        cx.after(Duration::from_secs(1), Timer::Tick);
    }

    pub(super) fn keepalive(&mut self, cx: &mut Ctx<'_, Timer>) {
        for link in &mut self.registers {
            let loopback =
                matches!(&link.target, Target::Tcp(a) if a.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST));
            if link.is_connected() && !loopback {
                link.out.extend(lines::PING);
                let _ = link.flush();
            }
        }
        let ping = {
            let mut v = Vec::new();
            packet::encode(&mut v, &Header::command(cmd::PING, 0, flag::BODY_IS_SCALAR), b"", b"");
            v
        };
        let workers: Vec<usize> = self.inners.iter().filter(|(_, i)| i.is_worker()).map(|(k, _)| k).collect();
        for key in workers {
            if let Some(inner) = self.inners.get_mut(key) {
                inner.out.extend(&ping);
                if !inner.dirty {
                    inner.dirty = true;
                    self.dirty_inners.push(key);
                }
            }
        }
        cx.after(KEEPALIVE, Timer::KeepAlive);
    }
}

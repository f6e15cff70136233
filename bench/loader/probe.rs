//! `probe`: is the target up? One connection, one message, its echo within `--timeout`
//! (with `--no-echo`, the handshake alone). Used by the scripts instead of sleeping.

use std::time::{Duration, Instant};

use crate::codec::{parse_payload, write_payload};
use crate::net::Event;
use crate::run::Ctx;

/// Ok when the target answered; Err says what went wrong.
pub fn run(ctx: &mut Ctx) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs_f64(ctx.o.timeout);
    let key = ctx.net.connect(0).map_err(|f| format!("connect: {}", f.name()))?;
    let (mut open, mut echoed, mut failed) = (false, false, None);
    let mut sent = false;
    let mut payload = Vec::new();
    while Instant::now() < deadline && !ctx.stopped() {
        if open && !sent {
            if ctx.o.no_echo {
                return Ok(());
            }
            write_payload(&mut payload, 0, ctx.clock.us(Instant::now()), ctx.o.size);
            if !ctx.net.send(key, &payload) {
                return Err("send failed".into());
            }
            sent = true;
        }
        let size = ctx.o.size;
        ctx.net
            .poll_once(Some(deadline), &mut |ev| match ev {
                Event::Open { .. } => open = true,
                Event::Message { payload, .. } => {
                    echoed |= parse_payload(payload, size).is_some_and(|(seq, _)| seq == 0)
                }
                Event::Closed { why, .. } => failed = Some(why),
            })
            .map_err(|e| format!("poll: {e}"))?;
        if echoed {
            return Ok(());
        }
        if let Some(why) = failed {
            return Err(format!("connection failed: {}", why.name()));
        }
    }
    Err(if open { "no echo before the deadline".into() } else { "no handshake before the deadline".into() })
}

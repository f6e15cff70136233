//! `flood`: `--conns` connections sending `--size`-byte messages as fast as their sockets
//! take them for `--duration` seconds and never reading what comes back: a hostile client.
//! A connection is only written to while its previous batch is out, so a server that pushes
//! back (stops reading it) leaves the loader waiting for writability, not spinning.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::net::Event;
use crate::run::{self, Ctx, ServerWatch, Window, open_all};

/// Messages queued on one connection before checking whether the socket took them.
const BATCH: usize = 64;

pub fn run(ctx: &mut Ctx) -> Result<Value, String> {
    let o = ctx.o.clone();
    ctx.net.read_open = false;
    let opened = open_all(ctx, o.conns, false, "connecting");
    if opened.open == 0 {
        return Err(format!("no connection could be opened: {}", opened.failures.to_json()));
    }
    let watch = ServerWatch::new(&o.server_pids);
    let window = Window::begin(&watch);
    let keys: Vec<usize> = opened.keys.iter().flatten().copied().collect();
    let payload = vec![b'f'; o.size];
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(o.duration);
    let (mut sent, mut closed) = (0u64, 0u64);
    let mut ticker = ctx.ticker(o.duration);
    while Instant::now() < end && !ctx.stopped() {
        let mut all_blocked = true;
        for &key in &keys {
            sent += fill(ctx, key, &payload);
            all_blocked &= ctx.net.backlog(key) != Some(0);
        }
        let now = Instant::now();
        ticker.due(now, || format!("{sent} messages sent, {closed} connections closed by the server"));
        let until = if all_blocked { ticker.deadline().min(end) } else { now };
        ctx.net
            .poll_once(Some(until), &mut |ev| {
                if let Event::Closed { .. } = ev {
                    closed += 1;
                }
            })
            .map_err(|e| format!("poll: {e}"))?;
    }
    let w = window.end(&watch);
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let mut out = run::header(&o);
    out.insert("opened".into(), json!(opened.open));
    out.insert("failures".into(), json!(opened.failures.total()));
    out.insert("sent".into(), json!(sent));
    out.insert("sent_per_s".into(), json!(run::round1(sent as f64 / secs)));
    out.insert("closed_by_server".into(), json!(closed + opened.lost));
    run::server_json(&mut out, &w, &o.server_pids, "server_cpu_us_per_msg", sent);
    out.insert("loader_polls".into(), json!(ctx.net.polls));
    out.insert("elapsed_s".into(), json!(run::round3(ctx.started.elapsed().as_secs_f64())));
    Ok(Value::Object(out))
}

/// Queue up to `BATCH` messages on `key` while its socket keeps taking them; the count sent.
fn fill(ctx: &mut Ctx, key: usize, payload: &[u8]) -> u64 {
    let mut n = 0;
    while n < BATCH as u64 && ctx.net.backlog(key) == Some(0) && ctx.net.send(key, payload) {
        n += 1;
    }
    n
}

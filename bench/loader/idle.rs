//! `idle`: open `--conns` connections, say so (stderr, `--ready-file`), hold them for
//! `--hold` seconds or until SIGINT, and report how many were lost. With `--server-pid`, the
//! server's RSS and the kernel's slab are read before and after, per connection. Messages
//! the server sends meanwhile (heartbeat pings) are counted, not answered; websocket ping
//! frames are answered with a pong by the connection itself.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::net::Event;
use crate::run::{self, Ctx, ServerWatch, open_all};
use crate::sys;

pub fn run(ctx: &mut Ctx) -> Result<Value, String> {
    let o = ctx.o.clone();
    let watch = ServerWatch::new(&o.server_pids);
    let rss_before = watch.active().then(|| watch.rss_kib());
    let slab_before = sys::kernel_slab_kib();
    let opened = open_all(ctx, o.conns, false, "opening");
    let up = opened.elapsed;
    if !o.quiet {
        eprintln!(
            "gw-bench: {} of {} connections up in {:.2} s ({} failed)",
            opened.open,
            o.conns,
            up.as_secs_f64(),
            opened.failures.total()
        );
    }
    // Let the server finish its side of the last handshakes before reading memory.
    let settle = Instant::now() + Duration::from_millis(300);
    let mut closed_while_held = 0u64;
    // Messages the server sent while the connections were held (a heartbeat's pings).
    let mut received = 0u64;
    let mut poll = |ctx: &mut Ctx, until: Instant| -> Result<(), String> {
        while Instant::now() < until && !ctx.stopped() {
            ctx.net
                .poll_once(Some(until), &mut |ev| match ev {
                    Event::Closed { .. } => closed_while_held += 1,
                    Event::Message { .. } => received += 1,
                    Event::Open { .. } => {}
                })
                .map_err(|e| format!("poll: {e}"))?;
        }
        Ok(())
    };
    poll(ctx, settle)?;
    let rss_after = watch.active().then(|| watch.rss_kib());
    let slab_after = sys::kernel_slab_kib();
    if let Some(path) = &o.ready_file {
        std::fs::write(path, format!("{}\n", opened.open))
            .map_err(|e| format!("--ready-file {path}: {e}"))?;
    }
    let held_from = Instant::now();
    let hold_until = if o.hold > 0.0 {
        held_from + Duration::from_secs_f64(o.hold)
    } else {
        held_from + Duration::from_secs(365 * 86400)
    };
    let mut ticker = ctx.ticker(if o.hold > 0.0 { o.hold } else { 1e9 });
    while Instant::now() < hold_until && !ctx.stopped() {
        let open = ctx.net.len();
        ticker.due(Instant::now(), || format!("holding {open} connections"));
        let until = ticker.deadline().min(hold_until);
        poll(ctx, until)?;
    }
    let n = opened.open.max(1) as f64;
    let mut out = run::header(&o);
    out.insert("opened".into(), json!(opened.open));
    out.insert("failures".into(), json!(opened.failures.total()));
    out.insert("failure_detail".into(), opened.failures.to_json());
    out.insert("up_s".into(), json!(run::round3(up.as_secs_f64())));
    out.insert("held_s".into(), json!(run::round3(held_from.elapsed().as_secs_f64())));
    out.insert("closed_while_held".into(), json!(closed_while_held + opened.lost));
    out.insert("still_open".into(), json!(ctx.net.len()));
    out.insert("messages_received".into(), json!(received));
    out.insert("kernel_slab_kib_before".into(), json!(slab_before));
    out.insert("kernel_slab_kib_after".into(), json!(slab_after));
    out.insert(
        "kernel_slab_bytes_per_conn_both_ends".into(),
        json!(run::round1((slab_after as f64 - slab_before as f64) * 1024.0 / n)),
    );
    if let (Some(before), Some(after)) = (rss_before, rss_after) {
        out.insert("server_pids".into(), json!(o.server_pids));
        out.insert("server_rss_kib_before".into(), json!(before));
        out.insert("server_rss_kib_after".into(), json!(after));
        out.insert(
            "server_bytes_per_conn".into(),
            json!(run::round1((after as f64 - before as f64) * 1024.0 / n)),
        );
    }
    out.insert("loader_rss_kib".into(), json!(sys::tree_rss_kib(&[std::process::id()])));
    out.insert("elapsed_s".into(), json!(run::round3(ctx.started.elapsed().as_secs_f64())));
    Ok(Value::Object(out))
}

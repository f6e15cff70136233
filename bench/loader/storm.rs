//! `storm`: `--conns` connects in total with at most `--inflight` handshakes in flight; the
//! accept rate, handshake latency and failures. Connections stay open until the end unless
//! `--close-after`.

use serde_json::{Value, json};

use crate::run::{self, Ctx, ServerWatch, Window, open_all};

pub fn run(ctx: &mut Ctx) -> Result<Value, String> {
    let o = ctx.o.clone();
    let watch = ServerWatch::new(&o.server_pids);
    let window = Window::begin(&watch);
    let opened = open_all(ctx, o.conns, o.close_after, "storm");
    let w = window.end(&watch);
    let secs = opened.elapsed.as_secs_f64().max(1e-9);
    let mut out = run::header(&o);
    out.insert("connects".into(), json!(o.conns));
    out.insert("accepted".into(), json!(opened.open));
    out.insert("accepts_per_s".into(), json!(run::round1(opened.open as f64 / secs)));
    out.insert("storm_s".into(), json!(run::round3(secs)));
    out.insert("handshake_us".into(), opened.handshake.to_json());
    out.insert("failures".into(), json!(opened.failures.total()));
    out.insert("failure_detail".into(), opened.failures.to_json());
    out.insert("closed_after_open".into(), json!(opened.lost));
    run::server_json(&mut out, &w, &o.server_pids, "server_cpu_us_per_accept", opened.open as u64);
    out.insert("loader_polls".into(), json!(ctx.net.polls));
    out.insert("interrupted".into(), json!(ctx.stopped()));
    out.insert("elapsed_s".into(), json!(run::round3(ctx.started.elapsed().as_secs_f64())));
    Ok(Value::Object(out))
}

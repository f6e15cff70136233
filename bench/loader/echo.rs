//! `echo`: N connections, each sending on a fixed schedule (open loop) or one message in
//! flight (closed loop); every reply is matched to its message by sequence number.
//!
//! Open loop: the k-th send of the whole run is due at `t0 + k / (rate * N)` (rounded up to
//! the `--tick-us` grid) and goes to connection `k mod N`, so each connection sends at `rate`
//! with evenly spread phases. The payload carries the *scheduled* time, so a late send
//! (loader behind, socket full) shows up as latency instead of being hidden (coordinated
//! omission).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::codec::{parse_payload, write_payload};
use crate::hist::Histogram;
use crate::net::{Event, Net};
use crate::run::{self, Ctx, ServerWatch, Window, WindowResult, open_all};

#[derive(Clone, Copy, Default)]
struct Peer {
    key: Option<usize>,
    /// Messages sent; the next one carries this sequence number.
    sent: u64,
    /// The sequence number the next reply should carry.
    next: u64,
}

impl Peer {
    /// Send the next message, stamped `ts_us`; false when the connection is gone or its
    /// send failed.
    fn send(&mut self, net: &mut Net, payload: &mut Vec<u8>, ts_us: u64, size: usize) -> bool {
        let Some(key) = self.key else { return false };
        payload.clear();
        write_payload(payload, self.sent, ts_us, size);
        if !net.send(key, payload) {
            return false;
        }
        self.sent += 1;
        true
    }
}

#[derive(Default)]
struct Errors {
    bad_payload: u64,
    duplicate: u64,
    out_of_order: u64,
    unexpected: u64,
    closed: u64,
    lost_on_close: u64,
    send_failed: u64,
}

pub fn run(ctx: &mut Ctx) -> Result<Value, String> {
    let o = ctx.o.clone();
    let mut watch = ServerWatch::new(&o.server_pids);
    let opened = open_all(ctx, o.conns, false, "connecting");
    if opened.open == 0 {
        return Err(format!("no connection could be opened: {}", opened.failures.to_json()));
    }
    watch.refresh();
    let mut peers: Vec<Peer> = opened.keys.iter().map(|k| Peer { key: *k, ..Peer::default() }).collect();
    let senders: Vec<usize> = (0..peers.len()).filter(|&t| peers[t].key.is_some()).collect();
    let n = senders.len();
    let total_rate = o.rate * n as f64;
    let t0 = Instant::now() + Duration::from_millis(20);
    let schedule = run::Schedule::new(t0, total_rate, o.tick_us);
    let sched = |k: u64| schedule.at(k);
    let win_start = t0 + Duration::from_secs_f64(o.warmup);
    let win_end = win_start + Duration::from_secs_f64(o.duration);
    let (win_start_us, win_end_us) = (ctx.clock.us(win_start), ctx.clock.us(win_end));

    let mut k: u64 = 0;
    let mut window: Option<Window> = None;
    let mut result: Option<WindowResult> = None;
    let mut drain_until: Option<Instant> = None;
    let (mut sent, mut received, mut win_sent, mut win_received) = (0u64, 0u64, 0u64, 0u64);
    let mut err = Errors::default();
    let mut lat = Histogram::new();
    let mut lag = Histogram::new();
    let mut second = Histogram::new();
    let (mut second_sent, mut second_recv) = (0u64, 0u64);
    let mut payload = Vec::with_capacity(o.size);
    // Closed loop: connections whose reply came back and that may send again.
    let mut ready: Vec<usize> = if o.closed { senders.clone() } else { Vec::new() };
    let mut ticker = ctx.ticker(o.warmup + o.duration);

    loop {
        let now = Instant::now();
        if window.is_none() && result.is_none() && now >= win_start {
            window = Some(Window::begin(&watch));
        }
        if result.is_none() && now >= win_end {
            if let Some(w) = window.take() {
                result = Some(w.end(&watch));
            }
            drain_until = Some(now + Duration::from_secs_f64(o.drain));
        }
        if ctx.stopped() && result.is_none() {
            result = window.take().map(|w| w.end(&watch));
            drain_until = Some(now);
        }
        let sending = result.is_none() && now >= t0;
        if sending && !o.closed {
            let mut budget = run::MAX_SENDS_PER_TURN;
            while sched(k) <= now && sched(k) < win_end && budget > 0 {
                budget -= 1;
                let at = sched(k);
                let tag = senders[(k % n as u64) as usize];
                let p = &mut peers[tag];
                k += 1;
                if !p.send(&mut ctx.net, &mut payload, ctx.clock.us(at), o.size) {
                    err.send_failed += 1;
                    continue;
                }
                sent += 1;
                second_sent += 1;
                if at >= win_start {
                    win_sent += 1;
                    lag.record((now - at).as_micros() as u64);
                }
            }
        } else if sending {
            let ts = ctx.clock.us(now);
            for tag in ready.drain(..) {
                let p = &mut peers[tag];
                // A connection closed meanwhile was counted when it closed.
                if p.key.is_none() {
                    continue;
                }
                if !p.send(&mut ctx.net, &mut payload, ts, o.size) {
                    err.send_failed += 1;
                    continue;
                }
                sent += 1;
                second_sent += 1;
                if now >= win_start {
                    win_sent += 1;
                }
            }
        }
        let outstanding = sent - received - err.lost_on_close;
        if let Some(until) = drain_until
            && (outstanding == 0 || now >= until)
        {
            break;
        }
        if ticker.due(now, || {
            format!(
                "sent {second_sent}/s, replies {second_recv}/s, p50 {} µs, p99 {} µs, outstanding {outstanding}, errors {}",
                second.percentile(50.0),
                second.percentile(99.0),
                err.bad_payload + err.duplicate + err.out_of_order + err.unexpected + err.closed
            )
        }) {
            second.clear();
            second_sent = 0;
            second_recv = 0;
        }

        let mut deadline = ticker.deadline();
        if let Some(until) = drain_until {
            deadline = deadline.min(until);
        } else {
            deadline = deadline.min(win_end);
            if window.is_none() {
                deadline = deadline.min(win_start);
            }
            if now < t0 {
                deadline = deadline.min(t0);
            }
            if !o.closed && sched(k) < win_end {
                deadline = deadline.min(sched(k));
            }
        }
        let clock = ctx.clock;
        let size = o.size;
        let closed_loop = o.closed;
        let res = ctx.net.poll_once(Some(deadline), &mut |ev| match ev {
            Event::Message { tag, payload } => {
                let now_us = clock.us(Instant::now());
                let Some((seq, ts)) = parse_payload(payload, size) else {
                    err.bad_payload += 1;
                    return;
                };
                let p = &mut peers[tag];
                if seq < p.next {
                    err.duplicate += 1;
                    return;
                }
                if seq >= p.sent {
                    err.unexpected += 1;
                    return;
                }
                if seq > p.next {
                    // The ones skipped are lost; they stay unanswered and count against the ratio.
                    err.out_of_order += 1;
                }
                p.next = seq + 1;
                received += 1;
                second_recv += 1;
                let rtt = now_us.saturating_sub(ts);
                second.record(rtt);
                if ts >= win_start_us && ts < win_end_us {
                    lat.record(rtt);
                    win_received += 1;
                }
                if closed_loop {
                    ready.push(tag);
                }
            }
            Event::Closed { tag, .. } => {
                let p = &mut peers[tag];
                err.closed += 1;
                err.lost_on_close += p.sent - p.next;
                p.key = None;
            }
            Event::Open { .. } => {}
        });
        if let Err(e) = res {
            return Err(format!("poll: {e}"));
        }
    }

    let w = result.unwrap_or_else(|| Window::begin(&watch).end(&watch));
    let errors =
        err.bad_payload + err.duplicate + err.out_of_order + err.unexpected + err.closed + err.send_failed;
    let mut out = run::header(&o);
    out.insert("connected".into(), json!(opened.open));
    out.insert("connect_failures".into(), json!(opened.failures.total()));
    out.insert("connect_failure_detail".into(), opened.failures.to_json());
    out.insert("offered_per_s".into(), if o.closed { Value::Null } else { json!(run::round1(total_rate)) });
    out.insert("sent".into(), json!(sent));
    out.insert("received".into(), json!(received));
    out.insert("delivered_ratio".into(), json!(if sent == 0 { 0.0 } else { received as f64 / sent as f64 }));
    out.insert("errors".into(), json!(errors));
    out.insert(
        "error_detail".into(),
        json!({
            "bad_payload": err.bad_payload,
            "duplicate": err.duplicate,
            "out_of_order": err.out_of_order,
            "unexpected": err.unexpected,
            "closed": err.closed,
            "lost_on_close": err.lost_on_close,
            "send_failed": err.send_failed,
        }),
    );
    out.insert("window_sent".into(), json!(win_sent));
    out.insert("window_received".into(), json!(win_received));
    out.insert("msgs_per_s".into(), json!(run::round1(win_received as f64 / w.wall.as_secs_f64().max(1e-9))));
    out.insert("lat_us".into(), lat.to_json());
    out.insert("send_lag_us".into(), if o.closed { Value::Null } else { lag.to_json() });
    run::server_json(&mut out, &w, &o.server_pids, "server_cpu_us_per_msg", win_sent);
    out.insert("loader_polls".into(), json!(ctx.net.polls));
    out.insert("interrupted".into(), json!(ctx.stopped()));
    out.insert("elapsed_s".into(), json!(run::round3(ctx.started.elapsed().as_secs_f64())));
    Ok(Value::Object(out))
}

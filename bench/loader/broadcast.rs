//! `broadcast`: N receivers and one publisher. The publisher sends `--rate` messages per
//! second in total on a fixed schedule; the server is expected to deliver each to every
//! receiver. Latency is measured from the scheduled publish time; what the publisher itself
//! receives back (a server whose broadcast includes the sender) is counted apart.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::codec::{parse_payload, write_payload};
use crate::hist::Histogram;
use crate::net::Event;
use crate::run::{self, Ctx, ServerWatch, Window, WindowResult, open_all};

pub fn run(ctx: &mut Ctx) -> Result<Value, String> {
    let o = ctx.o.clone();
    let mut watch = ServerWatch::new(&o.server_pids);
    // Tags 0..conns are receivers, tag `conns` is the publisher.
    let publisher_tag = o.conns;
    let opened = open_all(ctx, o.conns + 1, false, "connecting");
    let Some(publisher) = opened.keys[publisher_tag] else {
        return Err(format!("the publisher could not connect: {}", opened.failures.to_json()));
    };
    watch.refresh();
    // By receiver tag: the next sequence number expected, or None when not connected.
    let mut next: Vec<Option<u64>> = opened.keys[..o.conns].iter().map(|k| k.map(|_| 0)).collect();
    let receivers = next.iter().filter(|n| n.is_some()).count() as u64;
    if receivers == 0 {
        return Err("no receiver could connect".into());
    }
    let t0 = Instant::now() + Duration::from_millis(50);
    let schedule = run::Schedule::new(t0, o.rate, o.tick_us);
    let sched = |k: u64| schedule.at(k);
    let win_start = t0 + Duration::from_secs_f64(o.warmup);
    let win_end = win_start + Duration::from_secs_f64(o.duration);
    let (win_start_us, win_end_us) = (ctx.clock.us(win_start), ctx.clock.us(win_end));

    let mut published: u64 = 0;
    let mut win_published: u64 = 0;
    let mut window: Option<Window> = None;
    let mut result: Option<WindowResult> = None;
    let mut drain_until: Option<Instant> = None;
    let (mut deliveries, mut win_deliveries, mut publisher_received) = (0u64, 0u64, 0u64);
    let (mut bad_payload, mut duplicate, mut out_of_order, mut unexpected, mut closed, mut publisher_closed) =
        (0u64, 0u64, 0u64, 0u64, 0u64, false);
    // Deliveries that a receiver closed before getting: they count against the ratio.
    let mut lost_on_close = 0u64;
    let mut lat = Histogram::new();
    let mut lag = Histogram::new();
    let mut second = Histogram::new();
    let mut second_deliveries = 0u64;
    let mut payload = Vec::with_capacity(o.size);
    let mut ticker = ctx.ticker(o.warmup + o.duration);

    loop {
        let now = Instant::now();
        if window.is_none() && result.is_none() && now >= win_start {
            window = Some(Window::begin(&watch));
        }
        if result.is_none() && (now >= win_end || ctx.stopped() || publisher_closed) {
            result = Some(window.take().unwrap_or_else(|| Window::begin(&watch)).end(&watch));
            drain_until = Some(if ctx.stopped() { now } else { now + Duration::from_secs_f64(o.drain) });
        }
        if result.is_none() {
            let mut budget = run::MAX_SENDS_PER_TURN;
            while sched(published) <= now && sched(published) < win_end && budget > 0 {
                budget -= 1;
                let at = sched(published);
                payload.clear();
                write_payload(&mut payload, published, ctx.clock.us(at), o.size);
                if !ctx.net.send(publisher, &payload) {
                    publisher_closed = true;
                    break;
                }
                published += 1;
                if at >= win_start {
                    win_published += 1;
                    lag.record((now - at).as_micros() as u64);
                }
            }
        }
        let live = next.iter().filter(|n| n.is_some()).count() as u64;
        let expected = published * receivers;
        if let Some(until) = drain_until
            && (deliveries + lost_on_close >= expected || now >= until)
        {
            break;
        }
        if ticker.due(now, || {
            format!(
                "published {published}, deliveries {second_deliveries}/s, p50 {} µs, p99 {} µs, receivers {live}",
                second.percentile(50.0),
                second.percentile(99.0)
            )
        }) {
            second.clear();
            second_deliveries = 0;
        }
        let mut deadline = ticker.deadline();
        match drain_until {
            Some(until) => deadline = deadline.min(until),
            None => {
                deadline = deadline.min(win_end);
                if window.is_none() {
                    deadline = deadline.min(win_start);
                }
                if sched(published) < win_end {
                    deadline = deadline.min(sched(published));
                }
            }
        }
        let clock = ctx.clock;
        let size = o.size;
        let res = ctx.net.poll_once(Some(deadline), &mut |ev| match ev {
            Event::Message { tag, payload } => {
                if tag == publisher_tag {
                    publisher_received += 1;
                    return;
                }
                let now_us = clock.us(Instant::now());
                let Some((seq, ts)) = parse_payload(payload, size) else {
                    bad_payload += 1;
                    return;
                };
                let Some(expect) = next[tag].as_mut() else {
                    return;
                };
                if seq < *expect {
                    duplicate += 1;
                    return;
                }
                if seq >= published {
                    unexpected += 1;
                    return;
                }
                if seq > *expect {
                    out_of_order += 1;
                }
                *expect = seq + 1;
                deliveries += 1;
                second_deliveries += 1;
                let l = now_us.saturating_sub(ts);
                second.record(l);
                if ts >= win_start_us && ts < win_end_us {
                    lat.record(l);
                    win_deliveries += 1;
                }
            }
            Event::Closed { tag, .. } => {
                closed += 1;
                if tag == publisher_tag {
                    publisher_closed = true;
                } else if let Some(expect) = next[tag].take() {
                    lost_on_close += published - expect;
                }
            }
            Event::Open { .. } => {}
        });
        if let Err(e) = res {
            return Err(format!("poll: {e}"));
        }
    }

    let w = result.unwrap_or_else(|| Window::begin(&watch).end(&watch));
    let expected = published * receivers;
    let errors = bad_payload + duplicate + out_of_order + unexpected + closed;
    let mut out = run::header(&o);
    out.insert("receivers".into(), json!(receivers));
    out.insert("connect_failures".into(), json!(opened.failures.total()));
    out.insert("connect_failure_detail".into(), opened.failures.to_json());
    out.insert("published".into(), json!(published));
    out.insert("deliveries".into(), json!(deliveries));
    out.insert("expected_deliveries".into(), json!(expected));
    out.insert(
        "delivered_ratio".into(),
        json!(if expected == 0 { 0.0 } else { deliveries as f64 / expected as f64 }),
    );
    out.insert("publisher_received".into(), json!(publisher_received));
    out.insert("errors".into(), json!(errors));
    out.insert(
        "error_detail".into(),
        json!({
            "bad_payload": bad_payload,
            "duplicate": duplicate,
            "out_of_order": out_of_order,
            "unexpected": unexpected,
            "closed": closed,
            "lost_on_close": lost_on_close,
        }),
    );
    out.insert("window_published".into(), json!(win_published));
    out.insert("window_deliveries".into(), json!(win_deliveries));
    out.insert(
        "deliveries_per_s".into(),
        json!(run::round1(win_deliveries as f64 / w.wall.as_secs_f64().max(1e-9))),
    );
    out.insert("lat_us".into(), lat.to_json());
    out.insert("send_lag_us".into(), lag.to_json());
    run::server_json(&mut out, &w, &o.server_pids, "server_cpu_us_per_delivery", win_published * receivers);
    out.insert("loader_polls".into(), json!(ctx.net.polls));
    out.insert("interrupted".into(), json!(ctx.stopped()));
    out.insert("elapsed_s".into(), json!(run::round3(ctx.started.elapsed().as_secs_f64())));
    Ok(Value::Object(out))
}

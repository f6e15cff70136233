//! W13 instrument: `send_to_uid` in a cluster of several gateway processes, each send for one
//! uid whose only client sits on one gateway. The `--clients` websocket clients (spread over
//! the gateways by the kernel) each bind their own uid through the `probe` application; then
//! sends go at a fixed `--rate`, round robin over the uids, either through the business worker
//! (`--via worker`: one more websocket client sends `probe` requests, each a `send_to_uid`) or
//! through a `GatewayClient` (`--via client`). Over the measured window it reads the packets the
//! gateways received (`total_request` of `status --json`) and the CPU time of the server's
//! processes, and prints one JSON line: packets and CPU per send, deliveries.
//!
//! `cargo run --release --example fanout-push -- --bin target/release/gatewayworker
//!  --conf w13.toml --ws 127.0.0.1:7272 --register 127.0.0.1:1236 --via worker`

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatewayworker::api::GatewayClient;
use serde_json::{Value as Json, json};
use tungstenite::{Message, WebSocket};

struct Opts {
    via: String,
    label: String,
    rep: u32,
    bin: String,
    conf: String,
    ws: String,
    register: String,
    clients: usize,
    rate: f64,
    warmup: f64,
    duration: f64,
}

fn opts() -> Opts {
    let mut o = Opts {
        via: "worker".into(),
        label: "ours".into(),
        rep: 1,
        bin: "target/release/gatewayworker".into(),
        conf: String::new(),
        ws: "127.0.0.1:7272".into(),
        register: "127.0.0.1:1236".into(),
        clients: 64,
        rate: 1000.0,
        warmup: 1.0,
        duration: 6.0,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--via" => o.via = v,
            "--label" => o.label = v,
            "--rep" => o.rep = v.parse().expect("--rep N"),
            "--bin" => o.bin = v,
            "--conf" => o.conf = v,
            "--ws" => o.ws = v,
            "--register" => o.register = v,
            "--clients" => o.clients = v.parse().expect("--clients N"),
            "--rate" => o.rate = v.parse().expect("--rate SENDS_PER_S"),
            "--warmup" => o.warmup = v.parse().expect("--warmup SECONDS"),
            "--duration" => o.duration = v.parse().expect("--duration SECONDS"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

fn ws_connect(addr: &str) -> WebSocket<TcpStream> {
    let s = TcpStream::connect(addr).expect("websocket connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/"), s).expect("websocket handshake");
    ws
}

/// Send a probe request and wait for its reply.
fn call(ws: &mut WebSocket<TcpStream>, mut req: Json) -> Json {
    req["tag"] = json!("setup");
    ws.send(Message::text(req.to_string())).expect("probe request");
    loop {
        if let Message::Text(t) = ws.read().expect("probe reply") {
            let j: Json = serde_json::from_str(&t).unwrap_or(Json::Null);
            if j["tag"] == "setup" {
                assert!(j.get("err").is_none(), "probe: {j}");
                return j["ok"].clone();
            }
        }
    }
}

/// A client bound to uid `u<i>`, then a thread counting the pushes it gets until `stop`.
fn receiver(o: &Opts, i: usize, got: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let mut ws = ws_connect(&o.ws);
    call(&mut ws, json!({"op": "bind_uid", "uid": format!("u{i}")}));
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match ws.read() {
                Ok(Message::Text(t)) if t.starts_with("p:") => {
                    got.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => panic!("receiver: {e}"),
            }
        }
    })
}

/// `status --json` of the running cluster: the master's pid, and (role, pid, total_request)
/// per process.
fn status(o: &Opts) -> (u32, Vec<(String, u32, u64)>) {
    let out = Command::new(&o.bin)
        .args(["status", "--json", "--conf", &o.conf])
        .env("GW_ENV_FILE", "none")
        .output()
        .expect("status --json");
    let j: Json = serde_json::from_slice(&out.stdout).expect("status JSON");
    let rows = j["processes"]
        .as_array()
        .expect("processes")
        .iter()
        .filter(|p| p["state"] != "exited" && p["role"] != "master")
        .map(|p| {
            let role = p["role"].as_str().unwrap_or("").to_string();
            (role, p["pid"].as_u64().unwrap_or(0) as u32, p["total_request"].as_u64().unwrap_or(0))
        })
        .collect();
    (j["master_pid"].as_u64().unwrap_or(0) as u32, rows)
}

/// CPU time of process `pid` (all its threads), in µs, from the scheduler's exact runtime.
fn cpu_us(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum::<u64>()
        / 1000
}

/// Per role: processes, packets received (sum of `total_request`) and CPU µs.
fn sample(o: &Opts) -> HashMap<String, (u64, u64, u64)> {
    let mut m: HashMap<String, (u64, u64, u64)> = HashMap::new();
    let (master, rows) = status(o);
    for (role, pid, requests) in rows {
        let e = m.entry(role).or_default();
        e.0 += 1;
        e.1 += requests;
        e.2 += cpu_us(pid);
    }
    m.insert("master".into(), (1, 0, cpu_us(master)));
    m
}

/// Something that sends one `send_to_uid`.
enum Pusher {
    Worker(WebSocket<TcpStream>),
    Client(GatewayClient),
}

impl Pusher {
    fn push(&mut self, uid: &str, msg: &str) {
        match self {
            Pusher::Worker(ws) => {
                let req = json!({"op": "send_to_uid", "uids": [uid], "msg": msg, "quiet": true});
                ws.send(Message::text(req.to_string())).expect("push request");
            }
            Pusher::Client(gc) => gc.send_to_uid(&[uid], msg).expect("send_to_uid"),
        }
    }
}

/// Push at the rate for `secs` from sequence number `first`; returns the next number.
fn push_for(p: &mut Pusher, o: &Opts, first: u64, secs: f64) -> u64 {
    let start = Instant::now();
    let n = (o.rate * secs) as u64;
    for i in 0..n {
        let due = start + Duration::from_secs_f64(i as f64 / o.rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let seq = first + i;
        p.push(&format!("u{}", seq as usize % o.clients), &format!("p:{seq}"));
    }
    first + n
}

fn main() {
    let o = opts();
    let got = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let receivers: Vec<_> = (0..o.clients).map(|i| receiver(&o, i, got.clone(), stop.clone())).collect();
    let mut pusher = match o.via.as_str() {
        "worker" => Pusher::Worker(ws_connect(&o.ws)),
        "client" => Pusher::Client(GatewayClient::new(&[&o.register], "").expect("GatewayClient")),
        other => panic!("--via worker|client, not {other}"),
    };
    let next = push_for(&mut pusher, &o, 0, o.warmup);
    let (before, t0) = (sample(&o), Instant::now());
    let end = push_for(&mut pusher, &o, next, o.duration);
    let (after, secs) = (sample(&o), t0.elapsed().as_secs_f64());
    let until = Instant::now() + Duration::from_secs(10);
    while got.load(Ordering::Relaxed) < end && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for r in receivers {
        r.join().unwrap();
    }
    let sends = end - next;
    let d = |role: &str| {
        let (a, b) =
            (after.get(role).copied().unwrap_or_default(), before.get(role).copied().unwrap_or_default());
        (a.1.saturating_sub(b.1), a.2.saturating_sub(b.2))
    };
    let (gw_packets, gw_cpu) = d("gateway");
    let (wk_packets, wk_cpu) = d("worker");
    let other_cpu = d("register").1 + d("master").1;
    let per = |x: u64| x as f64 / sends.max(1) as f64;
    let gateways = after.get("gateway").map_or(0, |g| g.0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "{}",
        json!({
            "workload": "w13-fanout", "label": o.label, "rep": o.rep, "via": o.via, "gateways": gateways,
            "clients": o.clients, "rate": o.rate, "window_s": secs, "sends": sends,
            "gateway_packets_per_send": per(gw_packets), "worker_packets_per_send": per(wk_packets),
            "server_cpu_us_per_send": per(gw_cpu + wk_cpu + other_cpu),
            "gateway_cpu_us_per_send": per(gw_cpu), "worker_cpu_us_per_send": per(wk_cpu),
            "server_cpu_pct": (gw_cpu + wk_cpu + other_cpu) as f64 / 1e4 / secs,
            "delivered": got.load(Ordering::Relaxed), "expected": end,
            "delivered_ratio": got.load(Ordering::Relaxed) as f64 / end.max(1) as f64,
            "loadavg": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        })
    );
}

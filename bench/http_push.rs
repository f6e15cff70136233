//! W12 instrument: pushes to every client of a running cluster through the HTTP server API
//! (`POST /api/send_to_all` on kept-alive connections) or through the blocking
//! `GatewayClient`, for a fixed time, with `--clients` websocket receivers counting what
//! arrives. Prints one JSON line: requests per second and deliveries per second.
//!
//! `cargo run --release --example http-push -- --via api|client --http 127.0.0.1:7280
//!  --register 127.0.0.1:1236 --ws 127.0.0.1:7272 --clients 100 --pushers 4 --duration 5`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatewayworker::api::GatewayClient;

struct Opts {
    via: String,
    http: String,
    key: String,
    register: String,
    secret: String,
    ws: String,
    clients: usize,
    pushers: usize,
    duration: f64,
    size: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        via: "api".into(),
        http: "127.0.0.1:7280".into(),
        key: std::env::var("GW_HTTP_API_KEY").unwrap_or_default(),
        register: "127.0.0.1:1236".into(),
        secret: std::env::var("GW_SECRET_KEY").unwrap_or_default(),
        ws: "127.0.0.1:7272".into(),
        clients: 100,
        pushers: 4,
        duration: 5.0,
        size: 32,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--via" => o.via = v,
            "--http" => o.http = v,
            "--register" => o.register = v,
            "--ws" => o.ws = v,
            "--clients" => o.clients = v.parse().expect("--clients N"),
            "--pushers" => o.pushers = v.parse().expect("--pushers N"),
            "--duration" => o.duration = v.parse().expect("--duration SECONDS"),
            "--size" => o.size = v.parse().expect("--size BYTES"),
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// A receiver thread: counts the messages it gets until `stop`.
fn receiver(addr: &str, count: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let s = TcpStream::connect(addr).expect("websocket connect");
    // The handshake may wait behind many others: a generous timeout for it, a short one after
    // (so the thread sees `stop`).
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{addr}/"), s).expect("websocket handshake");
    ws.get_ref().set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match ws.read() {
                Ok(m) if m.is_text() || m.is_binary() => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("receiver: {e}"),
            }
        }
    })
}

/// One `send_to_all` over HTTP on a kept-alive connection; waits for the answer.
fn api_push(s: &mut TcpStream, key: &str, body: &str, buf: &mut Vec<u8>) {
    let req = format!(
        "POST /api/send_to_all HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("http write");
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).expect("http read");
        assert!(n > 0, "http connection closed");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "API answered {head}");
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}

/// A pusher thread: pushes until `stop`, counting requests.
fn pusher(o: &Opts, requests: Arc<AtomicU64>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let msg = "x".repeat(o.size);
    let (via, http, key, register, secret) =
        (o.via.clone(), o.http.clone(), o.key.clone(), o.register.clone(), o.secret.clone());
    std::thread::spawn(move || {
        if via == "client" {
            let mut c = GatewayClient::new(&[&register], &secret).expect("GatewayClient");
            while !stop.load(Ordering::Relaxed) {
                c.send_to_all(&msg).expect("send_to_all");
                requests.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let mut s = TcpStream::connect(&http).expect("http connect");
        s.set_nodelay(true).unwrap();
        let body = serde_json::json!({ "message": msg }).to_string();
        let mut buf = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            api_push(&mut s, &key, &body, &mut buf);
            requests.fetch_add(1, Ordering::Relaxed);
        }
    })
}

fn main() {
    let o = opts();
    let (delivered, requests) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (stop_rx, stop_tx) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let receivers: Vec<_> =
        (0..o.clients).map(|_| receiver(&o.ws, delivered.clone(), stop_rx.clone())).collect();
    let pushers: Vec<_> = (0..o.pushers).map(|_| pusher(&o, requests.clone(), stop_tx.clone())).collect();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(o.duration));
    stop_tx.store(true, Ordering::Relaxed);
    for p in pushers {
        p.join().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let sent = requests.load(Ordering::Relaxed);
    // Let the last pushes arrive (each push goes to every receiver).
    let want = sent * o.clients as u64;
    let until = Instant::now() + Duration::from_secs(10);
    while delivered.load(Ordering::Relaxed) < want && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_rx.store(true, Ordering::Relaxed);
    for r in receivers {
        r.join().unwrap();
    }
    let got = delivered.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "workload": "w12-http-push", "via": o.via, "clients": o.clients, "pushers": o.pushers,
            "size": o.size, "seconds": secs, "requests": sent, "requests_per_s": sent as f64 / secs,
            "deliveries": got, "deliveries_per_s": got as f64 / secs, "delivered_ratio": got as f64 / want.max(1) as f64,
        })
    );
}

//! Heartbeat, a killed business worker, and bad input of every kind: each gets a logged,
//! clear error and nothing else breaks.

mod cluster;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cluster::{Cluster, Gw, Spec, Text, Ws, wait_for};
use gatewayworker::internals::wire::packet::{self, Header, cmd, flag};
use serde_json::json;

#[test]
fn heartbeat_closes_a_silent_client_within_the_window() {
    // ping_interval 1 s, limit 1: closed between 1.5 s and 2 s of silence (plus a tick).
    let gw = Gw::new("text", 1).with("ping_interval = 1\nping_not_response_limit = 1\nping_data = \"ping\"");
    let c = Cluster::start(Spec::new("echo", 1, vec![gw]));
    let port = c.spec.gateways[0].port;
    let mut talker = Text::connect(port);
    let mut silent = Text::connect(port);
    let t0 = Instant::now();
    // The silent client: record what it gets and when the server closes it.
    let watcher = std::thread::spawn(move || {
        let mut got = Vec::new();
        let _ = silent.r.read_to_end(&mut got);
        (t0.elapsed(), got)
    });
    // The talker keeps talking every 300 ms; it must survive the silent one's expiry.
    let mut talker_ok = 0;
    while t0.elapsed() < Duration::from_millis(3500) {
        talker.send("alive");
        assert_eq!(talker.recv(), "alive", "a client that talks is not pinged nor closed");
        talker_ok += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(talker_ok >= 8);
    let (closed_after, got) = watcher.join().unwrap();
    assert_eq!(String::from_utf8_lossy(&got), "ping\n", "one ping, then closed");
    // Documented window: silent for limit*interval + interval/2 ..= (limit+1)*interval,
    // counted from the gateway's tick phase (+- one tick).
    assert!(
        closed_after >= Duration::from_millis(1000) && closed_after <= Duration::from_millis(2600),
        "closed after {closed_after:?}"
    );
    c.wait_log("sent nothing for too long");
    c.stop();
}

#[test]
fn killed_business_worker_is_restarted_and_clients_stay() {
    let c = Cluster::start(Spec::new("probe", 2, vec![Gw::new("websocket", 1)]));
    let mut clients: Vec<Ws> = (0..6).map(|_| c.ws(0)).collect();
    let before: Vec<u64> =
        clients.iter_mut().map(|w| w.ok(json!({"op": "worker"}))["pid"].as_u64().unwrap()).collect();
    let victim = before[0] as u32;
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    wait_for("a new worker", || {
        let pids = c.pids("worker");
        (pids.len() == 2 && !pids.contains(&victim)).then_some(())
    });
    let mut c = c;
    c.wait_ready();
    // Every client is still connected and served, including those of the killed worker.
    for (i, ws) in clients.iter_mut().enumerate() {
        let pid = ws.ok(json!({"op": "worker"}))["pid"].as_u64().unwrap();
        assert_ne!(pid as u32, victim, "client {i} routed to a dead worker");
    }
    c.wait_log("exit with status");
    c.stop();
}

#[test]
fn oversize_messages_close_only_the_sender() {
    let gw = Gw::new("websocket", 1).with("[gateway.limits]\nmax_package_size = 4096");
    let t = Gw::new("text", 1).with("[gateway.limits]\nmax_package_size = 100");
    let c = Cluster::start(Spec::new("echo", 1, vec![gw, t]));
    let mut good = c.ws(0);
    let mut bad = c.ws(0);
    bad.send(&"x".repeat(5000));
    bad.expect_closed();
    let mut line = Text::connect(c.spec.gateways[1].port);
    line.w.write_all(&[b'y'; 500]).unwrap();
    line.expect_eof();
    good.send("still here");
    assert_eq!(good.recv_text(), "still here");
    c.wait_log("max_package_size");
    c.stop();
}

#[test]
fn garbage_on_inner_port_and_register_port() {
    let c = Cluster::start(Spec::new("echo", 1, vec![Gw::new("websocket", 1)]));
    let mut good = c.ws(0);
    // A packet length of 2 GiB on the inner port.
    let mut inner = TcpStream::connect(("127.0.0.1", c.spec.gateways[0].start_port)).unwrap();
    inner.write_all(b"\x7f\xff\xff\xffGARBAGE GARBAGE GARBAGE GARBAGE").unwrap();
    assert_eof(&mut inner);
    // Not JSON on the register port: an error line, then closed.
    let mut reg = TcpStream::connect(("127.0.0.1", c.register_port)).unwrap();
    reg.write_all(b"\x00\x01 hello register\n").unwrap();
    let mut got = Vec::new();
    reg.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    let _ = reg.read_to_end(&mut got);
    assert!(String::from_utf8_lossy(&got).starts_with("Bad request for Register service"), "{got:?}");
    good.send("fine");
    assert_eq!(good.recv_text(), "fine");
    c.wait_log("bad packet from inner connection");
    c.wait_log("Bad request for Register service");
    c.stop();
}

#[test]
fn wrong_secret_key_is_refused_everywhere() {
    let mut spec = Spec::new("probe", 1, vec![Gw::new("websocket", 1)]);
    spec.secret = "s3cret".into();
    let c = Cluster::start(spec);
    let mut good = c.ws(0);
    let id = good.id();
    // A business worker with the wrong key.
    let mut w = TcpStream::connect(("127.0.0.1", c.spec.gateways[0].start_port)).unwrap();
    let mut p = Vec::new();
    let body = br#"{"worker_key":"Intruder:0","secret_key":"nope"}"#;
    packet::encode(&mut p, &Header::command(cmd::WORKER_CONNECT, 0, flag::BODY_IS_SCALAR), b"", body);
    w.write_all(&p).unwrap();
    assert_eof(&mut w);
    // A query without authorization.
    let mut q = TcpStream::connect(("127.0.0.1", c.spec.gateways[0].start_port)).unwrap();
    let mut p = Vec::new();
    packet::encode(
        &mut p,
        &Header::command(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, flag::BODY_IS_SCALAR),
        b"",
        b"",
    );
    q.write_all(&p).unwrap();
    assert_eof(&mut q);
    // The register with the wrong key.
    let mut r = TcpStream::connect(("127.0.0.1", c.register_port)).unwrap();
    r.write_all(b"{\"event\":\"worker_connect\",\"secret_key\":\"nope\"}\n").unwrap();
    assert_eof(&mut r);
    // A GatewayClient with the wrong key gets an error, with the right key it works.
    let reg = format!("127.0.0.1:{}", c.register_port);
    let mut bad = gatewayworker::api::GatewayClient::new(&[&reg], "nope").unwrap();
    assert!(bad.get_all_client_count().is_err());
    let mut ok = gatewayworker::api::GatewayClient::new(&[&reg], "s3cret").unwrap();
    assert_eq!(ok.get_all_client_count().unwrap(), 1);
    ok.send_to_client(id.as_str(), "via GatewayClient").unwrap();
    assert_eq!(good.recv_where(|t| t == "via GatewayClient"), "via GatewayClient");
    c.wait_log("worker secret key does not match");
    c.wait_log("Unauthorized request");
    c.wait_log("register: secret key does not match");
    c.stop();
}

#[test]
fn bytes_before_the_handshake_are_refused() {
    let c = Cluster::start(Spec::new("echo", 1, vec![Gw::new("websocket", 1)]));
    let mut good = c.ws(0);
    // A websocket frame instead of an HTTP request.
    let mut s = TcpStream::connect(("127.0.0.1", c.spec.gateways[0].port)).unwrap();
    s.write_all(&[0x81, 0x85, 1, 2, 3, 4, 105, 103, 111, 104, 110]).unwrap();
    s.write_all(b"\r\n\r\n").unwrap();
    let mut got = Vec::new();
    s.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    let _ = s.read_to_end(&mut got);
    assert!(got.starts_with(b"HTTP/1.1 400 Bad Request"), "{:?}", String::from_utf8_lossy(&got));
    // A request followed at once by a frame is fine (the frame is kept).
    let mut s = TcpStream::connect(("127.0.0.1", c.spec.gateways[0].port)).unwrap();
    let mut req = b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".to_vec();
    req.extend_from_slice(&[0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
    s.write_all(&req).unwrap();
    s.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.ends_with(b"\x81\x02hi") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    good.send("ok");
    assert_eq!(good.recv_text(), "ok");
    c.wait_log("bad handshake request");
    c.stop();
}

#[test]
fn panicking_application_code_does_not_take_the_worker_down() {
    let c = Cluster::start(Spec::new("probe", 1, vec![Gw::new("websocket", 1)]));
    let mut ws = c.ws(0);
    let pid = ws.ok(json!({"op": "worker"}))["pid"].clone();
    ws.send(&json!({"op": "panic"}).to_string());
    assert_eq!(ws.ok(json!({"op": "worker"}))["pid"], pid, "same worker, still serving");
    c.wait_log("application code panicked");
    c.stop();
}

fn assert_eof(s: &mut TcpStream) {
    s.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => assert!(buf.is_empty(), "expected no reply, got {buf:?}"),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
}

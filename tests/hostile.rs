//! Hostile clients and stray processes against a gateway, while well-behaved clients keep
//! exchanging messages: they must get every message, and each case is logged, without
//! flooding the log, and counted in `status`.

mod cluster;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster::{Cluster, Gw, Spec, Ws, wait_for};
use serde_json::{Value as Json, json};

const HANDSHAKE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// A raw websocket connection past its handshake.
fn raw_ws(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    s.write_all(HANDSHAKE.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// A masked client frame.
fn frame(op: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![0x80 | op];
    let mask = [1u8, 2, 3, 4];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n < 65536 => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Read until EOF; returns the bytes.
fn until_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

fn gateway_row(c: &Cluster) -> Json {
    let out = c.run_cli(&["status", "--json"]);
    let st: Json = serde_json::from_slice(&out.stdout).unwrap();
    st["processes"].as_array().unwrap().iter().find(|p| p["role"] == "gateway").unwrap().clone()
}

/// The gateway's counters straight from the shared memory (cheap enough to poll).
fn gateway_stats(c: &Cluster) -> gatewayworker::internals::stats::table::Row {
    c.snapshot().unwrap().rows.into_iter().find(|r| r.role.name() == "gateway").unwrap()
}

/// Read until EOF and return the last 4 bytes (a close frame, when one was sent).
fn close_frame(s: &mut TcpStream) -> Vec<u8> {
    let got = until_eof(s);
    got[got.len().saturating_sub(4)..].to_vec()
}

/// Good clients: one publishes numbered broadcasts, all three check they get each one, in
/// order, before the next is published. Returns the number of rounds.
fn good_traffic(
    port: u16,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut good: Vec<Ws> = (0..3).map(|_| Ws::connect(port, "/")).collect();
        let filler = "f".repeat(1000);
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let msg = format!("b{i}:{filler}");
            good[0].send(&json!({"op": "send_to_all", "msg": msg, "quiet": true}).to_string());
            for (n, ws) in good.iter_mut().enumerate() {
                let got = ws.recv_text();
                assert_eq!(got, msg, "good client {n} lost or reordered a message at round {i}");
            }
            i += 1;
            rounds.store(i, Ordering::Relaxed);
        }
        i
    })
}

#[test]
fn hostile_clients_do_not_disturb_good_ones() {
    let limits = "[gateway.limits]\nmax_connections = 60\nhandshake_timeout = 1\nmax_package_size = 65536\nsend_to_client_buffer_size = 65536";
    let c = Cluster::start(Spec::new("probe", 1, vec![Gw::new("websocket", 1).with(limits)]));
    let port = c.spec.gateways[0].port;
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicUsize::new(0));
    let good = good_traffic(port, Arc::clone(&stop), Arc::clone(&rounds));
    let progress = |n: usize| {
        let target = rounds.load(Ordering::Relaxed) + n;
        wait_for("good traffic", || (rounds.load(Ordering::Relaxed) >= target).then_some(()));
    };
    progress(20);

    // A client that never reads: its send buffer fills, messages for it are dropped.
    let never_reads = raw_ws(port);
    progress(400);

    // Slowloris: handshakes that never finish, one byte at a time.
    let mut slow: Vec<TcpStream> =
        (0..20).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    for s in &mut slow {
        s.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    }
    let t0 = Instant::now();
    let mut closed = 0;
    while closed < slow.len() {
        assert!(t0.elapsed() < Duration::from_secs(10), "slowloris connections still open");
        closed = 0;
        for s in &mut slow {
            if s.write_all(b"X").is_err() || s.peek(&mut [0u8; 1]).map(|n| n == 0).unwrap_or(true) {
                closed += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    progress(20);

    // Oversize, invalid UTF-8, unmasked: each closed with the right close code.
    let mut big = raw_ws(port);
    big.write_all(&frame(1, &vec![b'x'; 100_000], true)).unwrap();
    assert_eq!(close_frame(&mut big), [0x88, 2, 0x03, 0xf1], "1009 message too big");
    let mut utf8 = raw_ws(port);
    utf8.write_all(&frame(1, &[0xff, 0xfe, 0xfd], true)).unwrap();
    assert_eq!(close_frame(&mut utf8), [0x88, 2, 0x03, 0xef], "1007 invalid payload");
    let mut unmasked = raw_ws(port);
    unmasked.write_all(&frame(1, b"hi", false)).unwrap();
    assert_eq!(close_frame(&mut unmasked), [0x88, 2, 0x03, 0xea], "1002 protocol error");
    progress(20);

    // A flood of connects beyond max_connections: accepting pauses, good clients go on.
    let flood: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    progress(50);
    // The flood sends nothing: the accepted part hits the handshake timeout, the gateway
    // accepts the rest as room frees up, until every flood connection is gone.
    for mut s in flood {
        s.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
        until_eof(&mut s);
    }
    let mut late = Ws::connect(port, "/");
    assert_eq!(late.ok(json!({"op": "get_client_count_by_group", "group": "none"})), 0);

    // Garbage on the inner port and the register port.
    let mut inner = TcpStream::connect(("127.0.0.1", c.spec.gateways[0].start_port)).unwrap();
    inner.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    inner.write_all(&[0xff; 64]).unwrap();
    until_eof(&mut inner);
    let mut reg = TcpStream::connect(("127.0.0.1", c.register_port)).unwrap();
    reg.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    reg.write_all(&[0xfe; 100]).unwrap();
    reg.write_all(b"\n").unwrap();
    until_eof(&mut reg);
    progress(20);

    stop.store(true, Ordering::Relaxed);
    let total = good.join().unwrap();
    assert!(total >= 500);
    drop(never_reads);

    let gw = gateway_row(&c);
    let l = &gw["limits"];
    assert!(gw["send_fail"].as_u64().unwrap() >= 1, "{gw}");
    assert!(l["handshake_timeout"].as_u64().unwrap() >= 20, "{gw}");
    assert!(l["size"].as_u64().unwrap() >= 1, "{gw}");
    assert!(l["bad_input"].as_u64().unwrap() >= 3, "{gw}");
    assert!(l["connections"].as_u64().unwrap() >= 1, "{gw}");
    // Each case is in the log, and hostile input does not flood it.
    let log = c.log();
    for needle in [
        "send buffer of client",
        "did not finish its handshake in time",
        "max_package_size",
        "invalid UTF-8",
        "unmasked frame",
        "gateway.limits.max_connections",
        "bad packet from inner connection",
        "Bad request for Register service",
    ] {
        let n = log.lines().filter(|l| l.contains(needle)).count();
        assert!((1..=4).contains(&n), "{needle:?} logged {n} times:\n{log}");
    }
    c.stop();
}

#[test]
fn slow_reader_is_closed_when_the_policy_says_close() {
    let limits = "[gateway.limits]\nsend_to_client_buffer_size = 65536\nsend_full_policy = \"close\"";
    let c = Cluster::start(Spec::new("probe", 1, vec![Gw::new("websocket", 1).with(limits)]));
    let port = c.spec.gateways[0].port;
    let mut pub_ = c.ws(0);
    let mut slow = raw_ws(port);
    let filler = "x".repeat(4000);
    // Keep broadcasting until the slow reader is closed by the gateway.
    let mut i = 0;
    wait_for("slow reader closed", || {
        for _ in 0..50 {
            pub_.send(&json!({"op": "send_to_all", "msg": filler, "quiet": true}).to_string());
            assert_eq!(pub_.recv_text(), filler);
            i += 1;
        }
        (gateway_stats(&c).limits[4] >= 1).then_some(())
    });
    slow.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    until_eof(&mut slow);
    assert!(i > 10);
    c.wait_log("does not read its messages");
    c.stop();
}

#[test]
fn idle_timeout_closes_silent_clients() {
    let c = Cluster::start(Spec::new(
        "echo",
        1,
        vec![Gw::new("websocket", 1).with("[gateway.limits]\nidle_timeout = 1")],
    ));
    let mut talker = c.ws(0);
    let mut silent = raw_ws(c.spec.gateways[0].port);
    let watcher = std::thread::spawn(move || until_eof(&mut silent));
    // The talker keeps talking while the silent one expires.
    while !watcher.is_finished() {
        talker.send("tick");
        assert_eq!(talker.recv_text(), "tick");
        std::thread::sleep(Duration::from_millis(200));
    }
    talker.send("after");
    assert_eq!(talker.recv_text(), "after");
    assert!(gateway_row(&c)["limits"]["idle_timeout"].as_u64().unwrap() >= 1);
    c.wait_log("gateway.limits.idle_timeout");
    c.stop();
}

#[test]
fn group_count_and_uid_length_limits() {
    let limits = "[gateway.limits]\nmax_groups_per_client = 2\nmax_uid_len = 8";
    let c = Cluster::start(Spec::new("probe", 1, vec![Gw::new("websocket", 1).with(limits)]));
    let mut ws = c.ws(0);
    for g in ["a", "b", "c"] {
        ws.ok(json!({"op": "join_group", "group": g}));
    }
    ws.ok(json!({"op": "bind_uid", "uid": "a-very-long-uid"}));
    assert_eq!(ws.ok(json!({"op": "get_client_count_by_group", "group": "b"})), 1);
    assert_eq!(ws.ok(json!({"op": "get_client_count_by_group", "group": "c"})), 0, "third group refused");
    assert_eq!(ws.ok(json!({"op": "get_all_uid_count"})), 0, "long uid refused");
    ws.ok(json!({"op": "bind_uid", "uid": "short"}));
    assert_eq!(ws.ok(json!({"op": "get_all_uid_count"})), 1);
    assert_eq!(gateway_row(&c)["limits"]["uid_group"], 2);
    c.wait_log("max_groups_per_client");
    c.wait_log("max_uid_len");
    c.stop();
}

#[test]
fn full_worker_link_pauses_the_client_and_loses_nothing() {
    // GatewayWorker drops events once the link's buffer is full; here the gateway stops
    // reading the clients that fill it instead, and TCP pushes back on them.
    let limits = "[gateway.limits]\nsend_to_worker_buffer_size = 4096";
    let c = Cluster::start(Spec::new("echo", 1, vec![Gw::new("websocket", 1).with(limits)]));
    let mut ws = c.ws(0);
    ws.send("before");
    assert_eq!(ws.recv_text(), "before");
    let worker = c.pids("worker")[0];
    unsafe { libc::kill(worker as i32, libc::SIGSTOP) };
    // Enough to fill the socket buffers and then the 4 KiB link buffer.
    let blob = "y".repeat(16_000);
    let mut sent = 0;
    wait_for("client paused by the full worker link", || {
        for _ in 0..8 {
            ws.send(&format!("{sent}:{blob}"));
            sent += 1;
        }
        (gateway_row(&c)["limits"]["backpressure"].as_u64().unwrap() >= 1).then_some(())
    });
    unsafe { libc::kill(worker as i32, libc::SIGCONT) };
    // Every message comes back, in order: nothing was dropped.
    for i in 0..sent {
        let reply = ws.recv_text();
        assert!(reply.starts_with(&format!("{i}:")), "message {i} of {sent}: {:.20}", reply);
    }
    ws.send("after");
    assert_eq!(ws.recv_text(), "after");
    assert!(sent > 1);
    assert_eq!(gateway_stats(&c).send_fail, 0, "nothing dropped");
    c.wait_log("above its high-water mark");
    c.stop();
}

#[test]
fn running_out_of_file_descriptors_does_not_spin() {
    let c = Cluster::start(Spec::new("echo", 1, vec![Gw::new("websocket", 1)]));
    let port = c.spec.gateways[0].port;
    let gw = c.pids("gateway")[0];
    let open = std::fs::read_dir(format!("/proc/{gw}/fd")).unwrap().count();
    let limits = std::fs::read_to_string(format!("/proc/{gw}/limits")).unwrap();
    let nofile: Vec<&str> =
        limits.lines().find(|l| l.starts_with("Max open files")).unwrap().split_whitespace().collect();
    let (soft, hard) = (nofile[3].to_string(), nofile[4].to_string());
    // Room for three more descriptors only (lowering the soft limit needs no privilege).
    let st = std::process::Command::new("prlimit")
        .arg(format!("--pid={gw}"))
        .arg(format!("--nofile={}:{hard}", open + 3))
        .status()
        .unwrap();
    assert!(st.success(), "prlimit");
    let socks: Vec<TcpStream> = (0..10).map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    c.wait_log("accept failed");
    // While descriptors are exhausted the gateway waits instead of spinning on the listener.
    let cpu = |pid: u32| -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = s.rsplit_once(')').unwrap().1.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu(gw);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_millis(1000));
    let ticks = cpu(gw) - before;
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let share = ticks as f64 / hz / t0.elapsed().as_secs_f64();
    assert!(share < 0.3, "gateway used {:.0}% of a core while out of descriptors", share * 100.0);
    // Room again: every queued connection is served.
    drop(socks);
    let st = std::process::Command::new("prlimit")
        .arg(format!("--pid={gw}"))
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .unwrap();
    assert!(st.success());
    let mut ws = c.ws(0);
    ws.send("served");
    assert_eq!(ws.recv_text(), "served");
    c.stop();
}

#[test]
fn connection_limit_pauses_accept_and_resumes_below_ninety_percent() {
    let c = Cluster::start(Spec::new(
        "echo",
        1,
        vec![Gw::new("websocket", 1).with("[gateway.limits]\nmax_connections = 10")],
    ));
    let port = c.spec.gateways[0].port;
    let mut served: Vec<Ws> = (0..10).map(|_| Ws::connect(port, "/")).collect();
    // Five more: the kernel queues them (nothing is refused), the gateway does not accept.
    let mut waiting: Vec<TcpStream> = (0..5)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
            s.write_all(HANDSHAKE.as_bytes()).unwrap();
            s
        })
        .collect();
    c.wait_log("pausing accept");
    for ws in served.iter_mut() {
        ws.send("in");
        assert_eq!(ws.recv_text(), "in");
    }
    // Two leave: 8 < 90 % of 10, accepting resumes and the waiting ones get their 101.
    served.truncate(8);
    for s in waiting.iter_mut().take(2) {
        let mut b = [0u8; 12];
        s.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"HTTP/1.1 101");
    }
    assert!(gateway_row(&c)["limits"]["connections"].as_u64().unwrap() >= 1);
    c.stop();
}

//! Operations as users run them: daemon start, status, connections, stop, restart; reload
//! under load with zero loss; a gateway killed while clients connect; config errors.

mod cluster;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;

use cluster::{Cluster, Gw, Spec, Ws, exited, wait_for};
use serde_json::Value as Json;
use tungstenite::Message;

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn daemon_status_connections_stop_and_restart() {
    let mut spec = Spec::new("echo", 2, vec![Gw::new("websocket", 2)]);
    spec.daemon = true;
    let mut c = Cluster::start(spec);
    let mut clients: Vec<Ws> = (0..5).map(|_| c.ws(0)).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        ws.send(&format!("c{i}"));
        assert_eq!(ws.recv_text(), format!("c{i}"));
    }
    let out = c.run_cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let st: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["daemon"], true);
    let procs = st["processes"].as_array().unwrap();
    let by_role = |r: &str| procs.iter().filter(|p| p["role"] == r).collect::<Vec<_>>();
    // The daemon, not the process that started it and exited.
    let daemon = c.pid_file().unwrap();
    assert_eq!(st["master_pid"], daemon, "{st}");
    assert_eq!(by_role("master")[0]["pid"], daemon, "{st}");
    assert_eq!(by_role("register").len(), 1);
    assert_eq!(by_role("gateway").len(), 2);
    assert_eq!(by_role("worker").len(), 2);
    // Each gateway: its clients + 2 worker links + 1 register link.
    let gw_conns: u64 = by_role("gateway").iter().map(|g| g["connections"].as_u64().unwrap()).sum();
    assert_eq!(gw_conns, 5 + 2 * (2 + 1));
    // Each worker: 2 gateway links + 1 register link; the register: 2 gateways + 2 workers.
    assert!(by_role("worker").iter().all(|w| w["connections"] == 3));
    assert_eq!(by_role("register")[0]["connections"], 4);
    let msgs: u64 = by_role("gateway").iter().map(|g| g["total_request"].as_u64().unwrap()).sum();
    assert!(msgs >= 5, "gateways decoded the 5 client messages and the worker packets");

    // The human table and the connection list.
    let out = c.run_cli(&["status"]);
    let table = text(&out);
    assert!(
        table.contains("GLOBAL STATUS") && table.contains("PROCESS STATUS") && table.contains("Summary"),
        "{table}"
    );
    assert_eq!(table.lines().filter(|l| l.contains("websocket://127.0.0.1")).count(), 2, "{table}");
    assert!(table.contains("mode: daemon"));
    let out = c.run_cli(&["connections"]);
    let conns = text(&out);
    assert!(out.status.success(), "{conns}");
    assert_eq!(conns.lines().filter(|l| l.contains(" websocket ")).count(), 5, "{conns}");
    assert!(conns.lines().filter(|l| l.contains("GatewayProtocol")).count() >= 8, "{conns}");

    // A second start refuses.
    let out = c.run_cli(&["start", "-d"]);
    assert!(!out.status.success() && text(&out).contains("already running"), "{}", text(&out));

    // restart -d: new master, same service.
    let old_master = c.master_pid();
    let pids = c.seen_pids();
    drop(clients);
    let out = c.run_cli(&["restart", "-d"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("stop success"), "{}", text(&out));
    let new_master = c.pid_file().unwrap();
    assert_ne!(new_master, old_master);
    c.adopt_daemon(new_master);
    for pid in &pids {
        assert!(exited(*pid), "old process {pid} left behind by restart");
    }
    c.wait_ready();
    let mut ws = c.ws(0);
    ws.send("after restart");
    assert_eq!(ws.recv_text(), "after restart");

    // stop: nothing left, not even the pid file or a socket.
    let pids = c.seen_pids();
    let out = c.run_cli(&["stop"]);
    assert!(out.status.success() && text(&out).contains("stop success"), "{}", text(&out));
    c.forget_master();
    c.assert_nothing_left(&pids);
    assert!(c.pid_file().is_none());
    let out = c.run_cli(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("not run"));
    let out = c.run_cli(&["stop"]);
    assert!(text(&out).contains("not run"));
    // Clean stops (restart and stop) warn about nothing: the register stops last, so no
    // process sees its register link close.
    let log = c.log();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).collect();
    assert!(warnings.is_empty(), "a clean stop logged:\n{}", warnings.join("\n"));
}

/// Clients sending continuously through the echo app; counts what comes back.
struct Load {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<Result<(usize, usize), String>>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|n| {
                let stop = Arc::clone(&stop);
                let sent = Arc::clone(&sent);
                std::thread::spawn(move || {
                    let mut ws = Ws::connect(port, "/");
                    let mut seq = 0usize;
                    let mut v2 = 0;
                    // Batches of 8 in flight; every reply must come back exactly once.
                    while !stop.load(Ordering::Relaxed) {
                        let batch: HashSet<String> = (0..8).map(|i| format!("{n}:{}", seq + i)).collect();
                        for m in &batch {
                            ws.ws.write(Message::text(m.clone())).map_err(|e| e.to_string())?;
                        }
                        ws.ws.flush().map_err(|e| e.to_string())?;
                        sent.fetch_add(8, Ordering::Relaxed);
                        let mut got = HashSet::new();
                        while got.len() < 8 {
                            let reply = match ws.ws.read().map_err(|e| format!("client {n}: {e}"))? {
                                Message::Text(t) => t.to_string(),
                                Message::Close(_) => return Err(format!("client {n} closed")),
                                _ => continue,
                            };
                            let plain = match reply.strip_prefix("v2:") {
                                Some(p) => {
                                    v2 += 1;
                                    p.to_string()
                                }
                                None => reply,
                            };
                            if !batch.contains(&plain) || !got.insert(plain.clone()) {
                                return Err(format!("client {n}: unexpected or duplicate reply {plain}"));
                            }
                        }
                        seq += 8;
                    }
                    Ok((seq, v2))
                })
            })
            .collect();
        Load { stop, sent, threads }
    }

    /// Wait until at least `n` more messages went out.
    fn progress(&self, n: usize) {
        let target = self.sent.load(Ordering::Relaxed) + n;
        wait_for("load progress", || {
            assert!(!self.threads.iter().any(|t| t.is_finished()), "a load client stopped early");
            (self.sent.load(Ordering::Relaxed) >= target).then_some(())
        });
    }

    /// Stop and return (messages round-tripped, replies from the v2 build).
    fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = (0, 0);
        for t in self.threads {
            let (n, v2) = t.join().unwrap().unwrap_or_else(|e| panic!("load client failed: {e}"));
            total.0 += n;
            total.1 += v2;
        }
        total
    }
}

fn reload_under_load(workers: u16) {
    let c = Cluster::start(Spec::new("echo", workers, vec![Gw::new("websocket", 1)]));
    let before = c.pids("worker");
    let gateways = c.pids("gateway");
    let load = Load::start(c.spec.gateways[0].port, 10);
    load.progress(2000);
    let out = c.run_cli(&["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("reload done"), "{}", text(&out));
    load.progress(2000);
    let (round_trips, _) = load.finish();
    assert!(round_trips >= 4000);
    let after = c.pids("worker");
    assert_eq!(after.len(), workers as usize);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every business worker replaced: {before:?} -> {after:?}"
    );
    assert_eq!(c.pids("gateway"), gateways, "gateways are never restarted by reload");
    c.stop();
}

#[test]
fn reload_with_one_worker_loses_nothing() {
    reload_under_load(1);
}

#[test]
fn reload_with_three_workers_loses_nothing() {
    reload_under_load(3);
}

/// The binary the master was started from is replaced by a build whose echo answers
/// `v2:...`; after `reload` the replies come from the new code, with no loss.
#[test]
fn reload_runs_the_new_binary() {
    let examples = std::path::Path::new(cluster::BIN).parent().unwrap().join("examples");
    let v2 = examples.join("reload_v2");
    if !v2.exists() {
        // `cargo test` builds the examples; a filtered run (`--test operations`) does not.
        // Into the directory of this test's binary: the release one under `--release`.
        let mut build = std::process::Command::new(env!("CARGO"));
        build.args(["build", "--example", "reload_v2"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        let st = build.status().unwrap();
        assert!(st.success(), "cargo build --example reload_v2");
    }
    let dir = std::env::temp_dir().join(format!("gw-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let installed = dir.join("gatewayworker");
    std::fs::copy(cluster::BIN, &installed).unwrap();
    let mut spec = Spec::new("echo", 2, vec![Gw::new("websocket", 1)]);
    spec.bin = installed.clone();
    let c = Cluster::start(spec);
    let mut probe = c.ws(0);
    probe.send("before");
    assert_eq!(probe.recv_text(), "before");
    let load = Load::start(c.spec.gateways[0].port, 4);
    load.progress(1000);
    // Deploy: the new build replaces the file on disk (atomic rename, as cargo/cp -f do).
    let tmp = dir.join("gatewayworker.new");
    std::fs::copy(&v2, &tmp).unwrap();
    std::fs::rename(&tmp, &installed).unwrap();
    let out = c.run_cli(&["reload"]);
    assert!(text(&out).contains("reload done"), "{}", text(&out));
    load.progress(1000);
    let (_, v2_replies) = load.finish();
    assert!(v2_replies > 0, "replies from the new build after reload");
    probe.send("after");
    assert_eq!(
        probe.recv_text(),
        "v2:after",
        "the client connected before the reload is served by the new code"
    );
    c.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reload_that_cannot_start_the_binary_keeps_the_old_workers() {
    let dir = std::env::temp_dir().join(format!("gw-bin-missing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let installed = dir.join("gatewayworker");
    std::fs::copy(cluster::BIN, &installed).unwrap();
    let mut spec = Spec::new("echo", 1, vec![Gw::new("websocket", 1)]);
    spec.bin = installed.clone();
    let c = Cluster::start(spec);
    let before = c.pids("worker");
    let mut ws = c.ws(0);
    // The binary disappears (a failed deploy), then someone reloads.
    let keep = dir.join("kept");
    std::fs::rename(&installed, &keep).unwrap();
    let master = c.master_pid();
    unsafe { libc::kill(master as i32, libc::SIGUSR1) };
    c.wait_log("reload: cannot run");
    assert_eq!(c.pids("worker"), before, "old workers keep running");
    ws.send("still served");
    assert_eq!(ws.recv_text(), "still served");
    // Put it back so the harness can stop the cluster through the CLI path as well.
    std::fs::rename(&keep, &installed).unwrap();
    c.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Outcome counters of the connecting client.
#[derive(Default)]
struct Connects {
    ok: AtomicUsize,
    refused: AtomicUsize,
    /// Connections the killed gateway had accepted: they go down with it.
    lost: AtomicUsize,
}

#[test]
fn killed_gateway_refuses_no_connect() {
    let c = Cluster::start(Spec::new("echo", 1, vec![Gw::new("websocket", 1)]));
    let port = c.spec.gateways[0].port;
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Connects::default());
    // New clients keep connecting (handshake + one echo each) while the gateway dies.
    let connector = {
        let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let s = match std::net::TcpStream::connect(("127.0.0.1", port)) {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("connect {n}: {e}");
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                s.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
                let echo = tungstenite::client(format!("ws://127.0.0.1:{port}/"), s)
                    .map_err(|e| e.to_string())
                    .and_then(|(mut ws, _)| {
                        ws.send(Message::text(format!("n{n}"))).map_err(|e| e.to_string())?;
                        ws.read().map_err(|e| e.to_string())
                    });
                match echo {
                    Ok(Message::Text(t)) if t.as_str() == format!("n{n}") => {
                        stats.ok.fetch_add(1, Ordering::Relaxed)
                    }
                    other => {
                        eprintln!("client {n}: {other:?}");
                        stats.lost.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        })
    };
    let ok = |s: &Connects| s.ok.load(Ordering::Relaxed);
    wait_for("some connects", || (ok(&stats) >= 20).then_some(()));
    let victim = c.pids("gateway")[0];
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let at_kill = ok(&stats);
    wait_for("a new gateway", || c.pids("gateway").iter().any(|p| *p != victim).then_some(()));
    wait_for("connects after the kill", || (ok(&stats) >= at_kill + 50).then_some(()));
    stop.store(true, Ordering::Relaxed);
    connector.join().unwrap();
    assert_eq!(stats.refused.load(Ordering::Relaxed), 0, "no connect is refused");
    // Only a client the killed gateway had already accepted can go down with it.
    assert!(stats.lost.load(Ordering::Relaxed) <= 1, "lost {}", stats.lost.load(Ordering::Relaxed));
    c.wait_log("exit with status");
    c.stop();
}

#[test]
fn config_errors_name_the_key_and_nothing_starts() {
    let dir = std::env::temp_dir().join(format!("gw-conf-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let base = |extra: &str, listen: &str| {
        format!(
            "run_dir = \"{}\"\n{extra}\n[register]\nlisten = \"text://127.0.0.1:{}\"\n[[gateway]]\nlisten = \"{listen}\"\nstart_port = {}\n[worker]\napp = \"echo\"\n",
            dir.join("run").display(),
            cluster::free_port(),
            cluster::free_range(1)
        )
    };
    let ws = format!("websocket://127.0.0.1:{}", cluster::free_port());
    let cases: Vec<(String, &str)> = vec![
        (base("colour = \"blue\"", &ws), "`colour`"),
        (base("lan_ip = \"my-host\"", &ws), "`lan_ip`"),
        (base("machine_type = \"both\"", &ws), "`machine_type`"),
        (base("register_address = \"127.0.0.1\"", &ws), "`register_address`"),
        (base("stop_timeout = \"soon\"", &ws), "`stop_timeout`"),
        (base("stage_mode = \"production\"", &ws), "`gateway[0].tls`"),
        (base("", "http://127.0.0.1:1"), "`gateway[0].listen`"),
        (base("", &format!("websocket://127.0.0.1:{busy_port}")), "`gateway[0].listen`"),
        (base("", &ws).replace("app = \"echo\"", "app = \"nope\""), "`worker.app`"),
        (base("", &ws).replace("start_port", "count = \"two\"\nstart_port"), "`gateway[0].count`"),
        (
            base("[tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"", &ws.replace("websocket", "wss")),
            "`tls`",
        ),
        ("not = [toml".to_string(), "not valid TOML"),
    ];
    for (i, (conf, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, conf).unwrap();
        let out = std::process::Command::new(cluster::BIN)
            .args(["start", "--conf"])
            .arg(&path)
            .current_dir(&dir)
            .env("GW_ENV_FILE", "none")
            .output()
            .unwrap();
        let msg = text(&out);
        assert!(!out.status.success(), "case {i} started: {msg}");
        assert!(msg.contains(key), "case {i}: the error must name {key}: {msg}");
        assert!(msg.contains(&format!("bad{i}.toml")), "case {i}: the error must name the file: {msg}");
        assert!(!dir.join("run/gatewayworker.pid").exists(), "case {i}: nothing starts half-way");
    }
    drop(busy);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn graceful_stop_finishes_in_flight_work() {
    let mut spec = Spec::new("echo", 1, vec![Gw::new("websocket", 1)]);
    spec.daemon = true;
    let mut c = Cluster::start(spec);
    let mut ws = c.ws(0);
    ws.send("warm");
    assert_eq!(ws.recv_text(), "warm");
    // Freeze the worker so events pile up in its link, then ask for a graceful stop.
    let worker = c.pids("worker")[0];
    unsafe { libc::kill(worker as i32, libc::SIGSTOP) };
    let decoded = || {
        c.snapshot()
            .unwrap()
            .rows
            .iter()
            .filter(|r| r.role.name() == "gateway")
            .map(|r| r.total_request)
            .sum::<u64>()
    };
    let before = decoded();
    for i in 0..50 {
        ws.send(&format!("m{i}"));
    }
    // The gateway has them all (and forwarded them to the frozen worker).
    wait_for("gateway decoded the 50 messages", || (decoded() >= before + 50).then_some(()));
    let pids = c.seen_pids();
    let cli = {
        let conf = c.conf.clone();
        let dir = c.dir.clone();
        std::thread::spawn(move || {
            std::process::Command::new(cluster::BIN)
                .args(["stop", "-g", "--conf"])
                .arg(conf)
                .current_dir(dir)
                .env("GW_ENV_FILE", "none")
                .output()
                .unwrap()
        })
    };
    c.wait_log("graceful stop");
    unsafe { libc::kill(worker as i32, libc::SIGCONT) };
    // Every event the worker had received is handled and its reply delivered.
    for i in 0..50 {
        match ws.ws.read() {
            Ok(Message::Text(t)) => assert_eq!(t.as_str(), format!("m{i}")),
            other => panic!("reply {i}: {other:?}; log:\n{}", c.log()),
        }
    }
    ws.expect_closed();
    let out = cli.join().unwrap();
    assert!(text(&out).contains("stop success"), "{}", text(&out));
    c.forget_master();
    c.assert_nothing_left(&pids);
}

#[test]
fn reload_reopens_the_log_file_for_logrotate() {
    let mut spec = Spec::new("echo", 1, vec![Gw::new("websocket", 1)]);
    spec.daemon = true;
    let c = Cluster::start(spec);
    let log = c.dir.join("run/gatewayworker.log");
    let rotated = c.dir.join("run/gatewayworker.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let out = c.run_cli(&["reload"]);
    assert!(text(&out).contains("reload done"), "{}", text(&out));
    // The gateway logs a refused handshake: it must land in the new file.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", c.spec.gateways[0].port)).unwrap();
    std::io::Write::write_all(&mut s, b"POST / HTTP/1.1\r\n\r\n").unwrap();
    wait_for("gateway line in the new log", || {
        let new = std::fs::read_to_string(&log).unwrap_or_default();
        new.lines().any(|l| l.contains("gateway[0]") && l.contains("bad handshake request")).then_some(())
    });
    let new = std::fs::read_to_string(&log).unwrap();
    assert!(new.contains("master pid:") && new.contains("reload done"), "{new}");
    assert!(std::fs::read_to_string(&rotated).unwrap().contains("start: master pid"));
    c.stop();
}

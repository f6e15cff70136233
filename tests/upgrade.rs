//! `upgrade` (docs/upgrade.md): every process of a running cluster replaced by the binary on
//! disk while clients keep talking. Plain websocket, text and frame clients keep their
//! connection, client_id, session, uid and groups and lose no message; wss clients get close
//! 1012 spread over `upgrade_drain` and reconnect; an upgrade that cannot go through (no
//! binary, a binary that does not start, a new gateway that fails the handover, a reload
//! running) leaves the old version serving with nothing lost.
//!
//! The binary the cluster runs is a copy in a directory of the test's own; "a new release"
//! is `examples/reload_v2.rs` (its version label ends in `+v2`) put in its place.

mod cluster;
#[path = "support/fleet.rs"]
mod fleet;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cluster::{BIN, Cluster, Gw, Spec, exited, on_conf, tls};
use fleet::{Fleet, Plan, Proto, wait_until};
use gatewayworker::api::{Array, GatewayClient, Value};
use gatewayworker::app::probe::{from_json, to_json};
use serde_json::Value as Json;
use tungstenite::Message;

/// One test of this file at a time: the 1,000-client test loads both cores of a small
/// machine, and the wss test times the spread of its closes to a tenth of a 3 s window.
static CPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    CPU.lock().unwrap_or_else(|e| e.into_inner())
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A thousand clients need more descriptors than a default soft limit of 1024; the cluster
/// started from here inherits the raised limit.
fn raise_nofile(want: u64) {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut l), 0);
        if l.rlim_cur < want {
            l.rlim_cur = want.min(l.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &l), 0);
        }
    }
    assert!(
        l.rlim_cur >= want,
        "RLIMIT_NOFILE hard limit {} is below the {want} this test needs",
        l.rlim_max
    );
}

/// The v2 build (`examples/reload_v2.rs`), built when a filtered run did not build it.
fn v2_binary() -> PathBuf {
    let v2 = Path::new(BIN).parent().unwrap().join("examples/reload_v2");
    if !v2.exists() {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--example", "reload_v2"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "cargo build --example reload_v2");
    }
    v2
}

/// The installed binary of a test cluster: `<dir>/gatewayworker`, first a copy of this
/// build; a deploy replaces the file (a rename, as `cp -f` and cargo do).
struct Install {
    dir: PathBuf,
    path: PathBuf,
}

impl Install {
    fn new(name: &str) -> Install {
        let dir = std::env::temp_dir().join(format!("gw-upgrade-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gatewayworker");
        std::fs::copy(BIN, &path).unwrap();
        // /proc/PID/exe names the file with links resolved.
        let dir = std::fs::canonicalize(&dir).unwrap();
        let path = dir.join("gatewayworker");
        settle(&path);
        Install { dir, path }
    }

    /// Put a copy of `bin` in place of the installed binary.
    fn replace_with(&self, bin: &Path) {
        let tmp = self.dir.join(".new");
        std::fs::copy(bin, &tmp).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
        settle(&self.path);
    }

    /// Put a shell script in place of the installed binary.
    fn replace_with_script(&self, body: &str) {
        use std::os::unix::fs::PermissionsExt;
        let tmp = self.dir.join(".new");
        std::fs::write(&tmp, body).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
        settle(&self.path);
    }
}

/// Wait until `file`, just written, can be executed. While we wrote it, a process forked by
/// another test's thread may have inherited our descriptor open for writing, and until that
/// child execs, executing the file fails with ETXTBSY; once one exec worked no such
/// descriptor is left (we open the file for writing no more).
fn settle(file: &Path) {
    wait_until(&format!("{} executable", file.display()), Duration::from_secs(10), || {
        let run = Command::new(file).arg("help").stdout(Stdio::null()).stderr(Stdio::null()).status();
        match run {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => None,
            _ => Some(()),
        }
    });
}

impl Drop for Install {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `gatewayworker <args>` of this build (not the installed file, which a test may have
/// removed or broken) on the cluster's conf.
fn cli(c: &Cluster, args: &[&str]) -> Output {
    on_conf(Command::new(BIN), args, &c.conf, &c.dir).output().unwrap()
}

/// (role, pid) of every process `status --json` lists, the master included.
fn procs(c: &Cluster) -> Vec<(String, u32)> {
    let out = cli(c, &["status", "--json"]);
    assert!(out.status.success(), "status --json: {}", text(&out));
    let st: Json = serde_json::from_slice(&out.stdout).unwrap();
    let mut v: Vec<(String, u32)> = st["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["role"].as_str().unwrap().to_string(), p["pid"].as_u64().unwrap() as u32))
        .collect();
    v.sort();
    v
}

fn pids_of(procs: &[(String, u32)], role: &str) -> Vec<u32> {
    procs.iter().filter(|(r, _)| r == role).map(|(_, p)| *p).collect()
}

/// The file a process runs (`... (deleted)` once that file was replaced).
fn exe(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.display().to_string()).unwrap_or_default()
}

/// Wait until the processes are the new generation: as many of each role as `before`, none
/// of the old child pids (the master keeps its pid), every one ready, the old ones exited.
fn wait_replaced(c: &Cluster, before: &[(String, u32)]) -> Vec<(String, u32)> {
    let old: Vec<u32> = before.iter().filter(|(r, _)| r != "master").map(|(_, p)| *p).collect();
    let count = |v: &[(String, u32)], role: &str| pids_of(v, role).len();
    wait_until("the new processes, and the old ones gone", Duration::from_secs(30), || {
        let now = procs(c);
        let same_shape =
            ["master", "register", "gateway", "worker"].iter().all(|r| count(&now, r) == count(before, r));
        let fresh = now.iter().all(|(_, p)| !old.contains(p));
        let ready = c.snapshot()?.rows.iter().all(|r| r.state.name() == "idle");
        (same_shape && fresh && ready && old.iter().all(|p| exited(*p))).then_some(now)
    })
}

/// Every process (the master too, re-executed in place) runs `bin`; the master kept its pid.
fn assert_all_run(procs: &[(String, u32)], bin: &Path, master: u32) {
    assert_eq!(pids_of(procs, "master"), [master], "the master keeps its pid: {procs:?}");
    let want = bin.display().to_string();
    for (role, pid) in procs {
        assert_eq!(exe(*pid), want, "{role} {pid} runs the new binary");
    }
}

/// `status` names the version label of the running master.
fn assert_version(c: &Cluster, label: &str) {
    let out = cli(c, &["status"]);
    let want = format!("{}{label}", env!("CARGO_PKG_VERSION"));
    assert!(text(&out).contains(&want), "status shows version {want}:\n{}", text(&out));
}

/// What a `GatewayClient` sees of the clients: sessions, uids, groups.
#[derive(Debug, PartialEq)]
struct Seen {
    count: usize,
    sessions: BTreeMap<String, Json>,
    uids: BTreeMap<String, Vec<String>>,
    groups: BTreeMap<String, Vec<String>>,
}

fn array_json(a: Array) -> Json {
    to_json(&Value::Array(a))
}

fn seen(register: u16, clients: usize) -> Seen {
    let mut gc = GatewayClient::new(&[&format!("127.0.0.1:{register}")], "").unwrap();
    let sessions = gc
        .get_all_client_sessions()
        .unwrap()
        .into_iter()
        .map(|(id, s)| (id.to_string(), array_json(s)))
        .collect();
    let uids: Vec<String> = (0..clients).map(Plan::uid).collect();
    let refs: Vec<&str> = uids.iter().map(String::as_str).collect();
    let sorted = |v: Vec<gatewayworker::api::ClientId>| {
        let mut v: Vec<String> = v.iter().map(|c| c.to_string()).collect();
        v.sort();
        v
    };
    let uids =
        gc.batch_get_client_id_by_uid(&refs).unwrap().into_iter().map(|(u, ids)| (u, sorted(ids))).collect();
    let groups =
        gc.get_all_group_client_id_list().unwrap().into_iter().map(|(g, ids)| (g, sorted(ids))).collect();
    Seen { count: gc.get_all_client_count().unwrap(), sessions, uids, groups }
}

/// What the cluster must report for the fleet's clients (client_ids from their setup).
fn expected(plan: &Plan, ids: &[String]) -> Seen {
    let sorted = |m: &[usize]| {
        let mut v: Vec<String> = m.iter().map(|i| ids[*i].clone()).collect();
        v.sort();
        v
    };
    Seen {
        count: plan.clients,
        sessions: (0..plan.clients)
            .map(|i| (ids[i].clone(), to_json(&from_json(&plan.session(i)))))
            .collect(),
        uids: (0..plan.clients).map(|i| (Plan::uid(i), vec![ids[i].clone()])).collect(),
        groups: plan.memberships().iter().map(|(g, m)| (g.clone(), sorted(m))).collect(),
    }
}

fn assert_seen(what: &str, got: &Seen, want: &Seen) {
    assert_eq!(got.count, want.count, "{what}: client count");
    assert!(got.sessions == want.sessions, "{what}: sessions differ");
    assert!(got.uids == want.uids, "{what}: uids differ");
    assert!(got.groups == want.groups, "{what}: groups differ: {:?}", got.groups.keys().collect::<Vec<_>>());
}

/// A thousand clients (websocket on a two-process group, text, frame) sending all the time,
/// their workers and a `GatewayClient` pushing to groups and uids, through `upgrade` to the
/// v2 build: nothing closed, lost, duplicated or reordered; the same client_ids, sessions,
/// uids and groups; every process on the new binary, the master with its pid.
#[test]
fn upgrade_under_load_keeps_every_client_and_message() {
    const CLIENTS: usize = 1000;
    let _cpu = one_at_a_time();
    raise_nofile(4 * CLIENTS as u64 + 1024);
    let v2 = v2_binary();
    let inst = Install::new("load");
    let gws = vec![Gw::new("websocket", 2), Gw::new("text", 1), Gw::new("frame", 1)];
    let mut spec = Spec::new("probe", 2, gws);
    spec.bin = inst.path.clone();
    let c = Cluster::start(spec);
    let before = procs(&c);
    let master = c.master_pid();
    let g = &c.spec.gateways;
    let ports = vec![
        (Proto::Ws, g[0].port),
        (Proto::Text, g[1].port),
        (Proto::Ws, g[0].port),
        (Proto::Frame, g[2].port),
    ];
    let mut plan = Plan::new(CLIENTS, ports);
    plan.period = Duration::from_millis(300);
    plan.push_every = 10;
    plan.api = Some((c.register_port, Duration::from_millis(20)));
    let t0 = Instant::now();
    let mut fleet = Fleet::start(plan);
    eprintln!("{CLIENTS} clients set up in {:?}", t0.elapsed());
    let want = expected(&fleet.plan, &fleet.ids());
    assert_seen("before the upgrade", &seen(c.register_port, CLIENTS), &want);
    // Both processes of the websocket group hold clients.
    let per_gateway: Vec<String> = fleet.ids().iter().map(|id| id[..12].to_string()).collect();
    let mut gateways_used = per_gateway.clone();
    gateways_used.sort();
    gateways_used.dedup();
    assert_eq!(gateways_used.len(), 4, "clients on every gateway process: {gateways_used:?}");

    fleet.go();
    fleet.progress(2 * CLIENTS as u64);
    let rtt_before = fleet.max_rtt();
    inst.replace_with(&v2);
    let t1 = Instant::now();
    let out = c.run_cli(&["upgrade"]);
    let took = t1.elapsed();
    assert!(out.status.success(), "upgrade failed ({:?}): {}\nlog:\n{}", out.status, text(&out), c.log());
    fleet.progress(2 * CLIENTS as u64);
    let after = seen(c.register_port, CLIENTS);
    let outcome = fleet.finish(Duration::from_secs(30));
    eprintln!(
        "upgrade took {took:?}: {}\n{}; max round trip before the upgrade {rtt_before:?}",
        text(&out).trim(),
        outcome.summary()
    );
    outcome.assert_clean("upgrade under load");
    assert_seen("after the upgrade", &after, &want);

    let now = wait_replaced(&c, &before);
    assert_all_run(&now, &inst.path, master);
    assert_version(&c, "+v2");
    c.stop();
}

/// The drain of `wss_clients_get_1012_spread_over_the_drain_and_reconnect`, seconds.
const DRAIN: u64 = 3;
const WSS_CLIENTS: usize = 40;

/// One wss client: echoes until the server closes it, then connects again.
struct WssRun {
    /// When the close frame came, and its code.
    closed_at: Instant,
    code: u16,
    /// Echoes answered before the close.
    echoed: usize,
    /// The new connection (it echoed once).
    again: tungstenite::WebSocket<tls::TlsStream>,
}

fn wss_client(port: u16, n: usize, ready: Arc<AtomicUsize>) -> Result<WssRun, String> {
    let mut ws = tls::ws(port);
    ws.get_ref().sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut sent = std::collections::VecDeque::new();
    let mut echoed = 0;
    let mut k = 0;
    let mut next = Instant::now();
    let until = Instant::now() + Duration::from_secs(60);
    let (closed_at, code) = loop {
        if Instant::now() >= until {
            return Err(format!("client {n}: no close frame within 60 s ({echoed} echoes)"));
        }
        if Instant::now() >= next {
            let m = format!("m{n}.{k}");
            k += 1;
            if ws.send(Message::text(m.clone())).is_ok() {
                sent.push_back(m);
            }
            next += Duration::from_millis(100);
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let want = sent.pop_front().unwrap_or_default();
                if t.as_str() != want && t.as_str() != format!("v2:{want}") {
                    return Err(format!("client {n}: got {t:?}, expected {want:?}"));
                }
                echoed += 1;
                if echoed == 1 {
                    ready.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(Message::Close(f)) => break (Instant::now(), f.map_or(0, |f| u16::from(f.code))),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(format!("client {n}: {e} before a close frame ({echoed} echoes)")),
        }
    };
    let mut again = tls::ws(port);
    again.send(Message::text(format!("again {n}"))).map_err(|e| e.to_string())?;
    match again.read().map_err(|e| format!("client {n} after reconnecting: {e}"))? {
        Message::Text(t) if t.as_str().trim_start_matches("v2:") == format!("again {n}") => {}
        other => return Err(format!("client {n} after reconnecting: {other:?}")),
    }
    Ok(WssRun { closed_at, code, echoed, again })
}

/// wss clients cannot be handed over (their TLS session lives in the old process): each gets
/// close 1012 within `upgrade_drain` after the upgrade starts, spread over it (not more than
/// a tenth of them in any tenth of it), and connects again to the new gateway.
#[test]
fn wss_clients_get_1012_spread_over_the_drain_and_reconnect() {
    let _cpu = one_at_a_time();
    let v2 = v2_binary();
    let inst = Install::new("wss");
    let mut spec = Spec::new("echo", 1, vec![Gw::new("wss", 1)]);
    spec.top = format!("upgrade_drain = {DRAIN}\n{}", tls::conf());
    spec.bin = inst.path.clone();
    let c = Cluster::start(spec);
    let before = procs(&c);
    let master = c.master_pid();
    let port = c.spec.gateways[0].port;
    let ready = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..WSS_CLIENTS)
        .map(|n| {
            let ready = Arc::clone(&ready);
            std::thread::spawn(move || wss_client(port, n, ready))
        })
        .collect();
    wait_until("every wss client echoing", Duration::from_secs(30), || {
        (ready.load(Ordering::SeqCst) == WSS_CLIENTS).then_some(())
    });
    inst.replace_with(&v2);
    let t0 = Instant::now();
    let out = c.run_cli(&["upgrade"]);
    assert!(out.status.success(), "upgrade failed ({:?}): {}\nlog:\n{}", out.status, text(&out), c.log());
    let mut runs: Vec<WssRun> = Vec::new();
    let mut errors = Vec::new();
    for t in clients {
        match t.join().expect("a wss client panicked") {
            Ok(r) => runs.push(r),
            Err(e) => errors.push(e),
        }
    }
    assert!(errors.is_empty(), "wss clients:\n{}\nlog:\n{}", errors.join("\n"), c.log());
    let drain = Duration::from_secs(DRAIN);
    let slack = Duration::from_millis(1500);
    let mut at: Vec<Duration> = runs.iter().map(|r| r.closed_at.duration_since(t0)).collect();
    at.sort();
    eprintln!(
        "upgrade: {}; closes from {:?} to {:?} after it started",
        text(&out).trim(),
        at[0],
        at[at.len() - 1]
    );
    for r in &runs {
        assert_eq!(r.code, 1012, "close code (service restart)");
        assert!(r.echoed > 0);
    }
    assert!(*at.last().unwrap() <= drain + slack, "closes after the drain: {at:?}");
    // Spread: any tenth of the drain holds at most a tenth of the clients, plus two: one for
    // a close on the edge of a window, one for a close delivered up to one interval late (the
    // replacement of the business workers starts at the same time, on a small machine) that
    // meets the next; and the closes cover most of the drain (not squeezed into part of it).
    let tenth = drain / 10;
    let most = WSS_CLIENTS.div_ceil(10) + 2;
    let busiest = (0..at.len()).map(|i| at[i..].iter().take_while(|u| **u < at[i] + tenth).count()).max();
    eprintln!("at most {} closes in any {tenth:?}", busiest.unwrap_or(0));
    for (i, t) in at.iter().enumerate() {
        let within = at[i..].iter().take_while(|u| **u < *t + tenth).count();
        assert!(within <= most, "{within} closes within {tenth:?} from {t:?} (at most {most}): {at:?}");
    }
    let span = *at.last().unwrap() - at[0];
    assert!(span >= drain * 8 / 10, "the closes span {span:?} of the {drain:?} drain: {at:?}");
    // The old gateway exits with its last wss client; everything runs v2.
    let now = wait_replaced(&c, &before);
    assert_all_run(&now, &inst.path, master);
    for (n, r) in runs.iter_mut().enumerate() {
        r.again.send(Message::text(format!("after {n}"))).unwrap();
        assert_eq!(
            r.again.read().unwrap(),
            Message::text(format!("v2:after {n}")),
            "client {n} on the new code"
        );
    }
    c.stop();
}

/// A small fleet with a `GatewayClient`, over websocket and text gateways.
fn small_fleet(c: &Cluster, clients: usize) -> Fleet {
    let g = &c.spec.gateways;
    let mut plan =
        Plan::new(clients, vec![(Proto::Ws, g[0].port), (Proto::Text, g[1].port), (Proto::Frame, g[2].port)]);
    plan.groups = 5;
    plan.period = Duration::from_millis(50);
    plan.push_every = 5;
    plan.drivers = 2;
    plan.api = Some((c.register_port, Duration::from_millis(20)));
    let mut f = Fleet::start(plan);
    f.go();
    f.progress(200);
    f
}

fn fault_cluster(inst: &Install) -> Cluster {
    let gws = vec![Gw::new("websocket", 1), Gw::new("text", 1), Gw::new("frame", 1)];
    let mut spec = Spec::new("probe", 2, gws);
    spec.bin = inst.path.clone();
    Cluster::start(spec)
}

/// After a refused or failed upgrade: `procs` are still there (and nothing else of those
/// roles), the clients still echo.
fn assert_still_serving(c: &Cluster, fleet: &Fleet, old: &[(String, u32)], roles: &[&str]) {
    let now = procs(c);
    for role in roles {
        assert_eq!(pids_of(&now, role), pids_of(old, role), "{role} processes untouched: {old:?} -> {now:?}");
    }
    fleet.progress(200);
    fleet.check_alive();
}

/// No binary, a binary that exits at once, an upgrade during a reload: refused, with the
/// reason, and the old processes go on serving every client with nothing lost.
#[test]
fn refused_upgrades_leave_the_old_version_serving() {
    let _cpu = one_at_a_time();
    let inst = Install::new("refused");
    let c = fault_cluster(&inst);
    let fleet = small_fleet(&c, 60);
    let all = ["master", "register", "gateway", "worker"];
    let old = procs(&c);
    let kept = inst.dir.join("kept");

    // (a) The binary is gone (a deploy that failed half-way).
    std::fs::rename(&inst.path, &kept).unwrap();
    let out = cli(&c, &["upgrade"]);
    let msg = text(&out);
    eprintln!("upgrade, no binary: {}", msg.trim());
    assert!(!out.status.success(), "upgrade without a binary succeeded: {msg}");
    assert!(msg.contains(&inst.path.display().to_string()), "the message names the missing binary: {msg}");
    assert_still_serving(&c, &fleet, &old, &all);

    // (b) A binary that exits at start-up.
    inst.replace_with_script("#!/bin/sh\nexit 3\n");
    let out = cli(&c, &["upgrade"]);
    let msg = text(&out);
    eprintln!("upgrade, a binary that exits at once: {}", msg.trim());
    assert!(!out.status.success(), "upgrade to a binary that exits at once succeeded: {msg}");
    assert!(
        msg.contains("upgrade-check") && msg.contains("exit status 3"),
        "the message says the check failed, and how: {msg}"
    );
    assert_still_serving(&c, &fleet, &old, &all);
    std::fs::rename(&kept, &inst.path).unwrap();

    // (e) An upgrade while a reload runs: the reload waits for a business worker held by
    // SIGSTOP to drain. The clients pause meanwhile: a reload moves a client to the new
    // worker while the old one still has its earlier events, so the replies of the two may
    // cross (the order across a reload is not what this test is about).
    fleet.pause();
    let held = pids_of(&old, "worker")[0];
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(held as i32, libc::SIGSTOP) };
    let reload = {
        let (conf, dir) = (c.conf.clone(), c.dir.clone());
        std::thread::spawn(move || on_conf(Command::new(BIN), &["reload"], &conf, &dir).output().unwrap())
    };
    wait_until("the reload's new worker", Duration::from_secs(20), || {
        let s = c.snapshot()?;
        (s.rows.iter().filter(|r| r.role.name() == "worker").count() == 3).then_some(())
    });
    let out = cli(&c, &["upgrade"]);
    let msg = text(&out);
    eprintln!("upgrade, during a reload: {}", msg.trim());
    // SAFETY: as above.
    unsafe { libc::kill(held as i32, libc::SIGCONT) };
    assert!(!out.status.success(), "upgrade during a reload succeeded: {msg}");
    assert!(msg.contains("reload"), "the message says a reload runs: {msg}");
    let out = reload.join().unwrap();
    assert!(text(&out).contains("reload done"), "the reload goes on: {}", text(&out));
    fleet.resume();
    assert_still_serving(&c, &fleet, &old, &["master", "register", "gateway"]);

    let outcome = fleet.finish(Duration::from_secs(20));
    eprintln!("{}", outcome.summary());
    outcome.assert_clean("refused upgrades");
    c.stop();
}

/// A script to put in place of the binary: it runs the v2 build (`real`) with `GW_FAULT` set
/// to `fault` (or unset), as `exec -a "$0"`, so the master re-executed through it still names
/// the script as its binary and passes the variable to the gateways it starts. The script's
/// interpreter is bash under the name `gatewayworker` (a link in `dir`): while bash runs,
/// the master's command line must still look like a gatewayworker master's to the CLI.
fn v2_with_fault(dir: &Path, fault: Option<&str>, real: &Path) -> String {
    let shell = dir.join("sh").join("gatewayworker");
    if !shell.exists() {
        std::fs::create_dir_all(shell.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/bin/bash", &shell).unwrap();
    }
    let env = match fault {
        Some(f) => format!("export GW_FAULT={f}"),
        None => "unset GW_FAULT".to_string(),
    };
    format!("#!{}\n{env}\nexec -a \"$0\" \"{}\" \"$@\"\n", shell.display(), real.display())
}

/// A new gateway that fails the handover (`fault`): the upgrade stops and says which gateway
/// and why (`reason`), the old gateways serve on with nothing lost, and an upgrade without
/// the fault then goes through.
fn handover_fault(name: &str, fault: &str, reason: &[&str]) {
    let _cpu = one_at_a_time();
    let inst = Install::new(name);
    let c = fault_cluster(&inst);
    let fleet = small_fleet(&c, 60);
    let old = procs(&c);
    let master = c.master_pid();
    let real = inst.dir.join("v2-real");
    std::fs::copy(v2_binary(), &real).unwrap();
    inst.replace_with_script(&v2_with_fault(&inst.dir, Some(fault), &real));
    let out = cli(&c, &["upgrade"]);
    let msg = text(&out);
    eprintln!("upgrade, GW_FAULT={fault}: {}", msg.trim());
    assert!(!out.status.success(), "upgrade with GW_FAULT={fault} succeeded: {msg}\nlog:\n{}", c.log());
    let named = c.spec.gateways.iter().any(|g| msg.contains(&format!("inner port {}", g.start_port)));
    assert!(named, "the message names the gateway: {msg}");
    assert!(reason.iter().any(|r| msg.contains(r)), "the message gives the reason ({reason:?}): {msg}");
    // The master was re-executed and the register replaced; gateways and workers untouched.
    assert_still_serving(&c, &fleet, &old, &["master", "gateway", "worker"]);

    inst.replace_with_script(&v2_with_fault(&inst.dir, None, &real));
    let out = cli(&c, &["upgrade"]);
    assert!(out.status.success(), "upgrade without the fault: {}\nlog:\n{}", text(&out), c.log());
    fleet.progress(200);
    let outcome = fleet.finish(Duration::from_secs(20));
    eprintln!("{}", outcome.summary());
    outcome.assert_clean(&format!("GW_FAULT={fault}, then an upgrade without it"));
    let now = wait_replaced(&c, &old);
    assert_all_run(&now, &std::fs::canonicalize(&real).unwrap(), master);
    assert_version(&c, "+v2");
    c.stop();
}

#[test]
fn gateway_dying_in_the_handover_stops_the_upgrade() {
    handover_fault("die", "handover-die", &["exit status 70"]);
}

#[test]
fn gateway_unable_to_read_the_handover_stops_the_upgrade() {
    handover_fault("version", "handover-version", &["handover format", "exit status 65"]);
}

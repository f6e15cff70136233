//! Machines for cluster tests. Each host is a network namespace with its own address on one
//! LAN: a bridge that lives in a namespace of its own (so the firewall of the machine running
//! the tests never sees the traffic). The test process is the client host: its own (root)
//! namespace gets an address on the same bridge, so the test talks to the cluster with
//! ordinary sockets and `GatewayClient`. Namespaces share the filesystem, so every host gets
//! its own directory (conf, run dir, logs).
//!
//! Everything is made by the test (root only) and removed when the `Net` is dropped, also
//! when the test fails; a run that was killed leaves namespaces behind, which the next run
//! removes. Names carry the pid and a sequence number, so concurrent runs never collide.
//!
//! Without root (or without network namespaces) a test prints why it is skipped, straight to
//! the terminal, and returns; with `GW_REQUIRE_NETNS=1` (as CI runs) it fails instead.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use gatewayworker::internals::stats::{Role, Shm, State, table};
use serde_json::{Value as Json, json};
use tungstenite::Message;

use crate::cluster::{BIN, Ws, on_conf, run_log, spawn_master};

/// Prefix of every namespace these tests create: `gwt-<pid>-<seq>-<host>`.
const NS_PREFIX: &str = "gwt-";

static SEQ: AtomicUsize = AtomicUsize::new(0);
/// Subnet choice and creation, one `Net` at a time within this process.
static SUBNETS: Mutex<()> = Mutex::new(());

/// Poll `f` until it returns Some, or fail with `what` after `limit`.
pub fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run a command; its output, or a message naming it with what it printed.
pub fn run(cmd: &mut Command) -> Result<Output, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    run(Command::new("ip").args(args)).map(drop)
}

/// Why these tests cannot run here, if they cannot.
fn unavailable(needs: &[&str]) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (network namespaces, veth pairs and a bridge need root)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("the `ip` command (iproute2) is not installed".into());
    }
    let probe = format!("{NS_PREFIX}{}-probe{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("cannot create a network namespace: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    for tool in needs {
        let found = Path::new(tool).is_absolute() && Path::new(tool).exists()
            || Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("`{tool}` is not installed (see .ci/run)"));
        }
    }
    None
}

/// True when the test must be skipped: it printed why. With `GW_REQUIRE_NETNS=1` it panics
/// instead. `needs`: programs the test needs besides `ip`.
pub fn skipped(test: &str, needs: &[&str]) -> bool {
    let Some(why) = unavailable(needs) else { return false };
    if std::env::var("GW_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test}: GW_REQUIRE_NETNS=1 but this machine cannot run it: {why}");
    }
    // Straight to stderr: the harness captures print!/eprint! of passing tests.
    let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: {why}");
    true
}

/// Pids of the processes in namespace `ns`.
fn ns_pids(ns: &str) -> Vec<i32> {
    let out = Command::new("ip").args(["netns", "pids", ns]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.split_whitespace().filter_map(|p| p.parse().ok()).collect()
}

/// SIGKILL every process of namespace `ns` and wait until they are gone.
fn kill_ns(ns: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let pids = ns_pids(ns);
        if pids.is_empty() || Instant::now() > until {
            return;
        }
        for pid in pids {
            // SAFETY: kill has no memory effects.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn remove_ns(ns: &str) {
    kill_ns(ns);
    let _ = ip(&["netns", "del", ns]);
}

/// Remove the namespaces of test runs that no longer exist.
fn sweep_stale() {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    for name in text.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name.strip_prefix(NS_PREFIX).and_then(|r| r.split('-').next()) else { continue };
        if pid.parse::<u32>().is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
            remove_ns(name);
        }
    }
}

/// The LAN: a bridge, the client host (this process) and the hosts added to it.
pub struct Net {
    /// Namespace names start with this (`gwt-<pid>-<seq>-`).
    prefix: String,
    lan: String,
    root_if: String,
    hosts: Vec<String>,
    /// Third octet of the subnet 10.77.<n>.0/24.
    subnet: u8,
    next: u8,
    pub dir: PathBuf,
    /// The client host's address (the test process).
    pub client_ip: Ipv4Addr,
}

impl Net {
    pub fn new() -> Net {
        sweep_stale();
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let prefix = format!("{NS_PREFIX}{pid}-{seq}-");
        let dir = std::env::temp_dir().join(format!("gw-net-{pid}-{seq}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _one_at_a_time = SUBNETS.lock().unwrap_or_else(|e| e.into_inner());
        let subnet = free_subnet(pid as usize + seq * 7);
        let lan = format!("{prefix}lan");
        let root_if = format!("gw{pid:x}x{seq:x}");
        let net = Net {
            prefix,
            lan: lan.clone(),
            root_if: root_if.clone(),
            hosts: Vec::new(),
            subnet,
            next: 2,
            dir,
            client_ip: Ipv4Addr::new(10, 77, subnet, 1),
        };
        let cidr = format!("{}/24", net.client_ip);
        let steps: &[&[&str]] = &[
            &["netns", "add", &lan],
            &["-n", &lan, "link", "add", "br0", "type", "bridge"],
            &["-n", &lan, "link", "set", "br0", "up"],
            &["link", "add", &root_if, "type", "veth", "peer", "name", "client", "netns", &lan],
            &["-n", &lan, "link", "set", "client", "master", "br0", "up"],
            &["addr", "add", &cidr, "dev", &root_if],
            &["link", "set", &root_if, "up"],
        ];
        for step in steps {
            ip(step).unwrap_or_else(|e| panic!("building the test LAN: {e}"));
        }
        net
    }

    /// Add a host with the next address of the LAN.
    pub fn host(&mut self, name: &str) -> Host {
        let n = self.next;
        self.next += 1;
        let ns = format!("{}{name}", self.prefix);
        let addr = Ipv4Addr::new(10, 77, self.subnet, n);
        let port = format!("port{n}");
        let cidr = format!("{addr}/24");
        ip(&["netns", "add", &ns]).unwrap_or_else(|e| panic!("adding host {name}: {e}"));
        self.hosts.push(ns.clone());
        let steps: &[&[&str]] = &[
            &["-n", &ns, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns", &self.lan],
            &["-n", &self.lan, "link", "set", &port, "master", "br0", "up"],
            &["-n", &ns, "addr", "add", &cidr, "dev", "eth0"],
            &["-n", &ns, "link", "set", "eth0", "up"],
            &["-n", &ns, "link", "set", "lo", "up"],
        ];
        for step in steps {
            ip(step).unwrap_or_else(|e| panic!("adding host {name}: {e}"));
        }
        let dir = self.dir.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Host { name: name.to_string(), ns, ip: addr, dir, lan: self.lan.clone(), port }
    }
}

/// A /24 in 10.77.0.0/16 that no address of this machine is in.
fn free_subnet(seed: usize) -> u8 {
    let out = Command::new("ip").args(["-4", "-o", "addr", "show"]).output().unwrap();
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    (0..250)
        .map(|i| ((seed + i) % 250 + 2) as u8)
        .find(|n| !used.contains(&format!(" 10.77.{n}.")))
        .expect("a free 10.77.x.0/24 subnet")
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().rev() {
            remove_ns(ns);
        }
        let _ = ip(&["link", "del", &self.root_if]);
        remove_ns(&self.lan);
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One host of the LAN.
#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    pub ns: String,
    pub ip: Ipv4Addr,
    /// This host's own files.
    pub dir: PathBuf,
    lan: String,
    /// Its port on the bridge.
    port: String,
}

impl Host {
    /// `program` to be run inside this host.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program);
        c
    }

    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// Pull the host's cable out of the switch: from now on nothing reaches it and nothing
    /// leaves it; its peers get no reset and no FIN, just silence.
    pub fn unplug(&self) {
        ip(&["-n", &self.lan, "link", "set", &self.port, "down"]).unwrap();
    }

    pub fn plug(&self) {
        ip(&["-n", &self.lan, "link", "set", &self.port, "up"]).unwrap();
    }

    /// SIGKILL every process running on this host.
    pub fn kill_all(&self) {
        kill_ns(&self.ns);
    }

    /// Pids of the processes running on this host.
    pub fn pids(&self) -> Vec<i32> {
        ns_pids(&self.ns)
    }
}

/// The configuration of one machine, rendered as a conf file. Inside its namespace every
/// machine uses GatewayWorker's usual ports: register 1236, websocket 7272, inner ports
/// from 2300.
#[derive(Clone, Debug)]
pub struct Conf {
    pub machine_type: &'static str,
    pub lan_ip: Ipv4Addr,
    pub registers: Vec<SocketAddr>,
    /// Runs a register on `lan_ip:1236`.
    pub register: bool,
    /// Gateway processes (websocket on 7272).
    pub gateways: u16,
    pub workers: u16,
    pub app: &'static str,
    pub extra: String,
    /// Processes started by sections in `extra` (more gateway groups), waited for too.
    pub extra_procs: u16,
}

impl Conf {
    pub const REGISTER_PORT: u16 = 1236;
    pub const WS_PORT: u16 = 7272;
    pub const START_PORT: u16 = 2300;
    /// Every machine's `secret_key`: the register and inner ports face the bridge.
    pub const SECRET: &'static str = "netns-test-secret-0123";

    /// Register + `gateways` gateway processes.
    pub fn master(host: &Host, registers: &[SocketAddr], gateways: u16) -> Conf {
        Conf {
            machine_type: "master",
            lan_ip: host.ip,
            registers: registers.to_vec(),
            register: true,
            gateways,
            workers: 0,
            app: "probe",
            extra: String::new(),
            extra_procs: 0,
        }
    }

    /// `workers` business workers running `app`.
    pub fn worker(host: &Host, registers: &[SocketAddr], workers: u16, app: &'static str) -> Conf {
        Conf {
            machine_type: "worker",
            lan_ip: host.ip,
            registers: registers.to_vec(),
            register: false,
            gateways: 0,
            workers,
            app,
            extra: String::new(),
            extra_procs: 0,
        }
    }

    /// Everything on one machine.
    pub fn all(
        host: &Host,
        registers: &[SocketAddr],
        gateways: u16,
        workers: u16,
        app: &'static str,
    ) -> Conf {
        Conf {
            machine_type: "all",
            register: true,
            gateways,
            workers,
            app,
            ..Conf::master(host, registers, 0)
        }
    }

    pub fn render(&self) -> String {
        let regs: Vec<String> = self.registers.iter().map(|r| format!("\"{r}\"")).collect();
        let mut s = format!(
            "machine_type = \"{}\"\nlan_ip = \"{}\"\nregister_address = [{}]\nrun_dir = \"run\"\nsecret_key = \"{}\"\n{}\n",
            self.machine_type,
            self.lan_ip,
            regs.join(", "),
            Self::SECRET,
            self.extra
        );
        if self.register {
            s += &format!("[register]\nlisten = \"text://{}:{}\"\n", self.lan_ip, Self::REGISTER_PORT);
        }
        if self.gateways > 0 {
            s += &format!(
                "[[gateway]]\nname = \"Gateway\"\nlisten = \"websocket://0.0.0.0:{}\"\ncount = {}\nstart_port = {}\n",
                Self::WS_PORT,
                self.gateways,
                Self::START_PORT
            );
        }
        if self.workers > 0 {
            s += &format!("[worker]\nname = \"Worker\"\ncount = {}\napp = \"{}\"\n", self.workers, self.app);
        }
        s
    }
}

/// A gatewayworker installation on a host, its master started in the foreground by the test.
pub struct Machine {
    pub host: Host,
    pub conf: Conf,
    pub dir: PathBuf,
    pub conf_path: PathBuf,
    master: Option<Child>,
}

impl Machine {
    /// Write the conf, start, wait until every process is ready.
    pub fn start(host: &Host, conf: Conf) -> Machine {
        let dir = host.dir.join("gw");
        std::fs::create_dir_all(&dir).unwrap();
        let conf_path = dir.join("gatewayworker.toml");
        std::fs::write(&conf_path, conf.render()).unwrap();
        let mut m = Machine { host: host.clone(), conf, dir, conf_path, master: None };
        m.launch();
        m
    }

    fn launch(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("out.log")).unwrap();
        // `ip netns exec` execs the program: the child is the master itself.
        let child = spawn_master(self.host.command(BIN), &self.conf_path, &self.dir, log);
        self.master = Some(child);
        self.wait_ready();
    }

    /// Start again after `kill`.
    pub fn restart(&mut self) {
        assert!(self.master.is_none(), "{} is running", self.host.name);
        self.launch();
    }

    pub fn snapshot(&self) -> Option<table::Snapshot> {
        Shm::open(&self.dir.join("run/gatewayworker.stats"), false).ok().map(|s| table::snapshot(&s))
    }

    /// Every process of the conf is up and ready (a worker: linked to every gateway the
    /// registers announced).
    pub fn wait_ready(&mut self) {
        let c = &self.conf;
        let want = c.register as usize + c.gateways as usize + c.workers as usize + c.extra_procs as usize;
        let name = self.host.name.clone();
        wait_until(&format!("every process of {name} ready"), Duration::from_secs(30), || {
            if let Some(Ok(Some(st))) = self.master.as_mut().map(|m| m.try_wait()) {
                panic!("master of {name} exited ({st}); log:\n{}", self.log());
            }
            let s = self.snapshot()?;
            let procs: Vec<_> = s.rows.iter().filter(|r| r.role != Role::Master).collect();
            (procs.len() == want && procs.iter().all(|r| r.state == State::Ready)).then_some(())
        });
    }

    /// Pids of the live processes of `role` (`register`, `gateway`, `worker`).
    pub fn pids(&self, role: &str) -> Vec<u32> {
        let s = self.snapshot().unwrap();
        s.rows.iter().filter(|r| r.role.name() == role).map(|r| r.pid).collect()
    }

    /// Rows of the live processes of `role`.
    pub fn rows(&self, role: &str) -> Vec<table::Row> {
        let s = self.snapshot().unwrap();
        s.rows.into_iter().filter(|r| r.role.name() == role).collect()
    }

    /// Run a command of the CLI inside the host.
    pub fn cli(&self, args: &[&str]) -> Output {
        on_conf(self.host.command(BIN), args, &self.conf_path, &self.dir).output().unwrap()
    }

    /// The inner links listed by `connections`: (transport, local, foreign) of each
    /// GatewayProtocol line.
    pub fn inner_links(&self) -> Vec<(String, String, String)> {
        let out = self.cli(&["connections"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .filter(|l| l.contains("GatewayProtocol"))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f[3].to_string(), f[f.len() - 2].to_string(), f[f.len() - 1].to_string())
            })
            .collect()
    }

    pub fn log(&self) -> String {
        run_log(&self.dir)
    }

    /// The machine dies: SIGKILL to the master takes every child with it (they get SIGKILL
    /// when the master dies). Returns once no process of it is left.
    pub fn kill(&mut self) {
        let pids: Vec<u32> =
            self.snapshot().map(|s| s.rows.iter().map(|r| r.pid).collect()).unwrap_or_default();
        if let Some(mut m) = self.master.take() {
            let _ = m.kill();
            let _ = m.wait();
        }
        wait_until(&format!("every process of {} gone", self.host.name), Duration::from_secs(10), || {
            // SAFETY: kill with signal 0 only checks for existence.
            pids.iter().all(|p| unsafe { libc::kill(*p as i32, 0) } != 0).then_some(())
        });
    }

    /// Stop it as an operator would (SIGINT to the master) and wait for the exit.
    pub fn stop(&mut self) {
        let Some(mut m) = self.master.take() else { return };
        // SAFETY: as above.
        unsafe { libc::kill(m.id() as i32, libc::SIGINT) };
        let name = self.host.name.clone();
        wait_until(&format!("master of {name} exits"), Duration::from_secs(15), || m.try_wait().unwrap());
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        if let Some(mut m) = self.master.take() {
            // SAFETY: as above.
            unsafe { libc::kill(m.id() as i32, libc::SIGINT) };
            let until = Instant::now() + Duration::from_secs(8);
            while m.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = m.kill();
            let _ = m.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.host.name, self.log());
        }
    }
}

/// The gateway list a register gives a new worker right now.
pub fn register_list(register: SocketAddr) -> Option<Vec<String>> {
    let mut s = TcpStream::connect_timeout(&register, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    s.write_all(&gatewayworker::internals::wire::register::worker_connect(Conf::SECRET)).ok()?;
    let mut line = Vec::new();
    BufReader::new(s).read_until(b'\n', &mut line).ok()?;
    gatewayworker::internals::wire::register::parse_broadcast(line.trim_ascii_end())
}

/// What one client of a `Pinger` saw.
#[derive(Clone, Debug, Default)]
pub struct PingLog {
    pub sent: u64,
    pub answered: u64,
    /// Requests that never got an answer (resent after `resend`).
    pub lost: u64,
    /// When the last answer came and which business worker (pid) gave it.
    pub last: Option<(Instant, u32)>,
    pub by_worker: HashMap<u32, u64>,
}

/// Probe-app clients asking "which worker are you?" over and over, each with one request in
/// flight, resent when unanswered for `resend`. Any disconnection fails the client.
pub struct Pinger {
    stop: Arc<AtomicBool>,
    logs: Vec<Arc<Mutex<PingLog>>>,
    threads: Vec<JoinHandle<Result<(), String>>>,
}

impl Pinger {
    pub fn start(clients: Vec<Ws>, resend: Duration) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let mut logs = Vec::new();
        let mut threads = Vec::new();
        for (n, ws) in clients.into_iter().enumerate() {
            let log = Arc::new(Mutex::new(PingLog::default()));
            logs.push(Arc::clone(&log));
            let stop = Arc::clone(&stop);
            threads.push(std::thread::spawn(move || ping_loop(n, ws, &stop, &log, resend)));
        }
        Pinger { stop, logs, threads }
    }

    pub fn logs(&self) -> Vec<PingLog> {
        self.logs.iter().map(|l| l.lock().unwrap().clone()).collect()
    }

    fn check_clients(&self) {
        if let Some(i) = self.threads.iter().position(|t| t.is_finished()) {
            panic!("pinging client {i} stopped early (disconnected?)");
        }
    }

    /// Wait until every client got an answer after `since` from a worker `ok` accepts.
    pub fn wait_served(
        &self,
        what: &str,
        since: Instant,
        limit: Duration,
        ok: impl Fn(u32) -> bool,
    ) -> Duration {
        wait_until(what, limit, || {
            self.check_clients();
            self.logs().iter().all(|l| l.last.is_some_and(|(t, pid)| t > since && ok(pid))).then_some(())
        });
        since.elapsed()
    }

    /// Stop; every client must still be connected. Returns what each saw.
    pub fn finish(self) -> Vec<PingLog> {
        self.stop.store(true, Ordering::Relaxed);
        for (i, t) in self.threads.into_iter().enumerate() {
            t.join().unwrap().unwrap_or_else(|e| panic!("pinging client {i}: {e}"));
        }
        self.logs.iter().map(|l| l.lock().unwrap().clone()).collect()
    }
}

fn ping_loop(
    n: usize,
    mut ws: Ws,
    stop: &AtomicBool,
    log: &Mutex<PingLog>,
    resend: Duration,
) -> Result<(), String> {
    ws.ws.get_mut().set_read_timeout(Some(Duration::from_millis(20))).map_err(|e| e.to_string())?;
    let mut tag = 0u64;
    let mut pending = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        tag += 1;
        let req = json!({"op": "worker", "tag": tag}).to_string();
        ws.ws.send(Message::text(req)).map_err(|e| format!("client {n}: send: {e}"))?;
        pending.insert(tag);
        log.lock().unwrap().sent += 1;
        let sent = Instant::now();
        // Wait for this answer (taking late ones on the way), then a short pause (pacing,
        // while still taking whatever arrives).
        let mut answered_at = None;
        while !stop.load(Ordering::Relaxed) {
            if let Some(t) = answered_at
                && Instant::now() >= t + Duration::from_millis(20)
            {
                break;
            }
            if answered_at.is_none() && sent.elapsed() >= resend {
                break;
            }
            match ws.ws.read() {
                Ok(Message::Text(t)) => {
                    let Ok(j) = serde_json::from_str::<Json>(t.as_str()) else { continue };
                    let Some(got) = j.get("tag").and_then(Json::as_u64) else { continue };
                    if !pending.remove(&got) {
                        continue;
                    }
                    let pid = j["ok"]["pid"].as_u64().unwrap_or(0) as u32;
                    let mut l = log.lock().unwrap();
                    l.answered += 1;
                    l.last = Some((Instant::now(), pid));
                    *l.by_worker.entry(pid).or_default() += 1;
                    if got == tag {
                        answered_at = Some(Instant::now());
                    }
                }
                Ok(Message::Close(_)) => return Err(format!("client {n}: closed by the server")),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(format!("client {n}: {e}")),
            }
        }
    }
    // The request in flight when the test stopped is not lost.
    pending.remove(&tag);
    log.lock().unwrap().lost = pending.len() as u64;
    Ok(())
}

/// `ws` asks which business worker serves it: its pid.
pub fn served_by(ws: &mut Ws) -> u32 {
    ws.ok(json!({"op": "worker"}))["pid"].as_u64().unwrap() as u32
}

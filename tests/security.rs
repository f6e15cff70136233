//! Secure by default: the single-machine confs face the network only on their client ports,
//! a register or inner port on a non-loopback address with an empty secret refuses to start
//! (unless `allow_empty_secret = true`, which warns at start and in `status`), and with a
//! secret set a gateway announced by a stranger is refused and no business worker links to it.

mod cluster;

use std::collections::{HashSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use cluster::{
    BIN, Cluster, DEADLINE, Gw, Spec, free_port, free_range, on_conf, run_log, spawn_master, wait_for,
};
use gatewayworker::internals::stats::{Role, Shm, State, table};
use gatewayworker::internals::wire::register::gateway_connect;

/// How long a refused gateway is watched for a business worker linking to it; the positive
/// control shows that a gateway the register accepts is linked well within this time.
const LINK_WINDOW: Duration = Duration::from_secs(3);

/// A master started from a conf file of our own, in a temporary directory.
struct Run {
    dir: PathBuf,
    conf: PathBuf,
    master: Child,
}

impl Run {
    /// Write `conf` into a fresh directory and start the master there in the foreground.
    fn spawn(name: &str, conf: &str) -> Run {
        let dir = std::env::temp_dir().join(format!("gw-security-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let conf_path = dir.join(format!("{name}.toml"));
        std::fs::write(&conf_path, conf).unwrap();
        let log = std::fs::File::create(dir.join("out.log")).unwrap();
        let master = spawn_master(Command::new(BIN), &conf_path, &dir, log);
        Run { dir, conf: conf_path, master }
    }

    fn log(&self) -> String {
        run_log(&self.dir)
    }

    /// The master's exit status, or `None` while it still runs after `limit`.
    fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            let status = self.master.try_wait().unwrap();
            if status.is_some() || Instant::now() >= until {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The exit code of a master that must stop on its own (a refused start).
    fn exit_code(&mut self) -> i32 {
        let status = self.exited_within(DEADLINE);
        status.unwrap_or_else(|| panic!("the master did not exit; log:\n{}", self.log())).code().unwrap_or(-1)
    }

    /// Wait until `procs` processes besides the master report ready (workers: linked).
    fn wait_ready(&mut self, procs: usize) {
        let stats = self.dir.join("run/gatewayworker.stats");
        wait_for("every process ready", || {
            assert!(self.master.try_wait().unwrap().is_none(), "master exited; log:\n{}", self.log());
            let rows = table::snapshot(&Shm::open(&stats, false).ok()?).rows;
            let ready = rows.iter().filter(|r| r.role != Role::Master && r.state == State::Ready).count();
            (ready == procs).then_some(())
        });
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = on_conf(Command::new(BIN), args, &self.conf, &self.dir).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.master.try_wait().unwrap().is_none() {
            unsafe { libc::kill(self.master.id() as i32, libc::SIGINT) };
            if self.exited_within(Duration::from_secs(10)).is_none() {
                let _ = self.master.kill();
                let _ = self.master.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("log ({}):\n{}", self.dir.display(), self.log());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// `pid` and every process below it.
fn process_tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let child: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": the name may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, ppid))
        })
        .collect();
    let mut tree = vec![pid];
    let mut todo = VecDeque::from([pid]);
    while let Some(p) = todo.pop_front() {
        for &(child, _) in parents.iter().filter(|(_, ppid)| *ppid == p) {
            tree.push(child);
            todo.push_back(child);
        }
    }
    tree
}

/// Inodes of the sockets open in any of `pids`.
fn socket_inodes(pids: &[u32]) -> HashSet<u64> {
    let mut out = HashSet::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
                out.insert(inode.parse().unwrap());
            }
        }
    }
    out
}

/// An address of /proc/net/tcp{,6}: 32-bit words in host byte order, then the port.
fn proc_addr(field: &str) -> SocketAddr {
    let (ip, port) = field.split_once(':').unwrap();
    let bytes: Vec<u8> = (0..ip.len() / 8)
        .flat_map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).unwrap().to_ne_bytes())
        .collect();
    let ip = match bytes.len() {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).unwrap())),
        _ => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).unwrap())),
    };
    SocketAddr::new(ip, u16::from_str_radix(port, 16).unwrap())
}

/// Every TCP listening address of the process tree of `pid`.
fn listening(pid: u32) -> Vec<SocketAddr> {
    let inodes = socket_inodes(&process_tree(pid));
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Fields: sl local remote state ... inode (10th); 0A is LISTEN.
            if f.len() > 9 && f[3] == "0A" && inodes.contains(&f[9].parse().unwrap()) {
                out.push(proc_addr(f[1]));
            }
        }
    }
    out
}

/// The shipped conf `name` on free ports: the register on `reg`, clients on `client`, inner
/// ports from `inner`; every address stays as shipped.
fn shipped_on_free_ports(name: &str, reg: u16, client: u16, inner: u16) -> String {
    let text = std::fs::read_to_string(cluster::repo_file(&format!("conf/{name}.toml"))).unwrap();
    let moved = text
        .replace(":1236\"", &format!(":{reg}\""))
        .replace(":7272\"", &format!(":{client}\""))
        .replace("start_port = 2300", &format!("start_port = {inner}"))
        .replace(":7280\"", &format!(":{}\"", free_port()));
    for port in [reg, client, inner] {
        assert!(moved.contains(&port.to_string()), "conf/{name}.toml: port {port} not placed:\n{moved}");
    }
    moved
}

/// Gateway and worker processes a conf starts.
fn counts(conf: &str) -> (usize, usize) {
    let t: toml::Table = conf.parse().unwrap();
    let count = |v: &toml::Value| v.get("count").and_then(toml::Value::as_integer).unwrap_or(1) as usize;
    (t["gateway"].as_array().unwrap().iter().map(count).sum(), count(&t["worker"]))
}

#[test]
fn single_machine_confs_face_the_network_only_on_client_ports() {
    for name in ["dev", "local", "testing"] {
        let (reg, client) = (free_port(), free_port());
        let conf = shipped_on_free_ports(name, reg, client, free_range(4));
        let mut run = Run::spawn(name, &conf);
        let (gateways, workers) = counts(&conf);
        // The [http] listener (on in dev.toml) is one more process and one more (loopback) port.
        let http = usize::from(conf.contains("\n[http]"));
        run.wait_ready(1 + gateways + workers + http);
        let addrs = listening(run.master.id());
        let ports: HashSet<u16> = addrs.iter().map(SocketAddr::port).collect();
        // Register, client port and every inner port seen: the scan sees what it checks.
        assert_eq!(ports.len(), 2 + gateways + http, "conf/{name}.toml: {addrs:?}");
        assert!(ports.contains(&reg) && ports.contains(&client), "conf/{name}.toml: {addrs:?}");
        let exposed: Vec<_> = addrs.iter().filter(|a| !a.ip().to_canonical().is_loopback()).collect();
        assert!(exposed.iter().all(|a| a.port() == client), "conf/{name}.toml exposes {exposed:?}");
        assert!(!run.cli(&["status"]).contains("WARNING"), "conf/{name}.toml: {}", run.cli(&["status"]));
    }
}

/// A one-gateway, one-worker conf with the register on `register_ip` and inner ports on
/// `lan_ip`, no secret, plus `top` lines.
fn conf(register_ip: &str, lan_ip: &str, top: &str) -> String {
    let reg = free_port();
    format!(
        "lan_ip = \"{lan_ip}\"\nadvertise_ip = \"127.0.0.1\"\nregister_address = \"127.0.0.1:{reg}\"\nrun_dir = \"run\"\n{top}\n[register]\nlisten = \"text://{register_ip}:{reg}\"\n[[gateway]]\nlisten = \"websocket://127.0.0.1:{}\"\nstart_port = {}\n[worker]\napp = \"echo\"\n",
        free_port(),
        free_range(1)
    )
}

/// `text` with the HTTP API listening on every address (no key: the test environment has none).
fn open_http(text: String) -> String {
    format!("{text}[http]\nlisten = \"http://0.0.0.0:{}\"\n", free_port())
}

#[test]
fn an_empty_secret_off_loopback_refuses_to_start() {
    let cases = [
        ("register", conf("0.0.0.0", "127.0.0.1", ""), "`register.listen`", "secret_key", "GW_SECRET_KEY"),
        ("inner", conf("127.0.0.1", "0.0.0.0", ""), "`lan_ip`", "secret_key", "GW_SECRET_KEY"),
        (
            "http",
            open_http(conf("127.0.0.1", "127.0.0.1", "")),
            "`http.listen`",
            "GW_HTTP_API_KEY",
            "GW_HTTP_API_KEY",
        ),
    ];
    for (name, text, listen_key, key, env_var) in cases {
        let mut run = Run::spawn(name, &text);
        assert_eq!(run.exit_code(), 78, "{name}: {}", run.log());
        let out = run.log();
        let head = format!("config error in {}: key `{key}`: empty, but", run.conf.display());
        assert!(out.contains(&head), "{name}: {out}");
        assert!(out.contains(listen_key) && out.contains("which is not a loopback address"), "{name}: {out}");
        assert!(out.contains(&format!("fix: set {env_var} in .env")), "{name}: {out}");
        assert!(out.contains("allow_empty_secret = true"), "{name}: {out}");
        // Refused before anything was bound or forked.
        assert!(!run.dir.join("run/gatewayworker.stats").exists(), "{name}: {out}");
    }
}

#[test]
fn allow_empty_secret_starts_and_warns_at_start_and_in_status() {
    let text = open_http(conf("0.0.0.0", "0.0.0.0", "allow_empty_secret = true"));
    let mut run = Run::spawn("allowed", &text);
    run.wait_ready(4);
    let log = run.log();
    assert!(log.contains("`GW_HTTP_API_KEY` is empty and the HTTP API listens on 0.0.0.0:"), "{log}");
    assert!(log.contains("`secret_key` is empty and the register listens on 0.0.0.0:"), "{log}");
    assert!(log.contains("`secret_key` is empty and a gateway inner port listens on 0.0.0.0:"), "{log}");
    let status = run.cli(&["status"]);
    assert!(status.contains(table::EXPOSED_WARNING), "{status}");
    let json: serde_json::Value = serde_json::from_str(run.cli(&["status", "--json"]).trim()).unwrap();
    assert_eq!(json["warnings"][0], table::EXPOSED_WARNING, "{json}");
}

/// Announce `addr` as a gateway to the register at `register` with `secret`.
fn announce(register: u16, addr: SocketAddr, secret: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", register)).unwrap();
    s.write_all(&gateway_connect(&addr.to_string(), secret)).unwrap();
    s
}

/// The register hangs up on `s` without a word.
fn assert_hung_up(s: &mut TcpStream) {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reply = Vec::new();
    if let Err(e) = s.read_to_end(&mut reply) {
        assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}");
    }
    assert!(reply.is_empty(), "the register answered {reply:?}");
}

/// A listener posing as a gateway: did a business worker connect within `window`?
fn linked_within(l: &TcpListener, window: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < window {
        match l.accept() {
            Ok(_) => return Some(start.elapsed()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("accept: {e}"),
        }
    }
    None
}

fn fake_gateway() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

#[test]
fn a_gateway_announced_without_the_secret_gets_no_worker() {
    let mut spec = Spec::new("echo", 2, vec![Gw::new("websocket", 1)]);
    spec.secret = "attack-test-secret-0123".into();
    let c = Cluster::start(spec);
    let (rogue, rogue_addr) = fake_gateway();
    for secret in ["", "guessed-secret"] {
        assert_hung_up(&mut announce(c.register_port, rogue_addr, secret));
    }
    c.wait_log("register: secret key does not match");
    assert_eq!(linked_within(&rogue, LINK_WINDOW), None, "a worker linked to a refused gateway");
    // Positive control: the same announce with the secret is linked within the window, and
    // the real gateway still has every worker.
    let (known, known_addr) = fake_gateway();
    let _held = announce(c.register_port, known_addr, &c.spec.secret);
    let took = linked_within(&known, LINK_WINDOW);
    assert!(took.is_some(), "no worker linked to an accepted gateway within {LINK_WINDOW:?}");
    assert_eq!(linked_within(&rogue, Duration::ZERO), None);
    let mut ws = c.ws(0);
    ws.send("still served");
    assert_eq!(ws.recv_text(), "still served");
    c.stop();
}

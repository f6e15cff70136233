//! Test harness: start the real binary on a temporary run directory with free ports, wait
//! until every process reports ready (through the shared-memory statistics), and talk to it
//! with real clients. Dropping a `Cluster` stops it and checks no process is left behind.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gatewayworker::internals::stats::{Shm, table};
use serde_json::{Value as Json, json};
use tungstenite::{Message, WebSocket};

pub const BIN: &str = env!("CARGO_BIN_EXE_gatewayworker");
/// How long anything may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// `cmd` (the binary, or a wrapper that runs it) set up to act on the conf `conf` from `dir`,
/// with `.env` ignored; `--conf` follows the arguments given here.
pub fn on_conf(mut cmd: Command, args: &[&str], conf: &Path, dir: &Path) -> Command {
    cmd.args(args).arg("--conf").arg(conf).current_dir(dir).env("GW_ENV_FILE", "none");
    cmd
}

/// A foreground master from `cmd` (see `on_conf`), its output into `log`.
pub fn spawn_master(cmd: Command, conf: &Path, dir: &Path, log: std::fs::File) -> Child {
    on_conf(cmd, &["start"], conf, dir)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Foreground output (`out.log`) plus the daemon's log file of a run in `dir`.
pub fn run_log(dir: &Path) -> String {
    let mut s = std::fs::read_to_string(dir.join("out.log")).unwrap_or_default();
    s += &std::fs::read_to_string(dir.join("run/gatewayworker.log")).unwrap_or_default();
    s
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// Next candidate port. Test ports come from below the kernel's ephemeral range (32768 and
/// up), so the source ports of our own outgoing connections never take them; each test
/// process starts at its own offset and hands out every port once.
static NEXT_PORT: AtomicUsize = AtomicUsize::new(0);
const PORT_LO: usize = 20000;
const PORT_HI: usize = 32000;

/// `n` consecutive ports nobody listens on right now.
pub fn free_range(n: u16) -> u16 {
    let _ = NEXT_PORT.compare_exchange(
        0,
        (std::process::id() as usize * 7919) % (PORT_HI - PORT_LO),
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..1000 {
        let off = NEXT_PORT.fetch_add(n as usize, Ordering::SeqCst) % (PORT_HI - PORT_LO - n as usize);
        let base = (PORT_LO + off) as u16;
        let held: Vec<_> = (0..n).filter_map(|i| TcpListener::bind(("127.0.0.1", base + i)).ok()).collect();
        if held.len() == n as usize {
            return base;
        }
    }
    panic!("no free port range of {n}");
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    free_range(1)
}

/// Poll `f` until it returns Some, or fail with `what` after the deadline.
pub fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One gateway group of a test cluster.
#[derive(Clone, Debug)]
pub struct Gw {
    pub proto: &'static str,
    pub count: u16,
    pub port: u16,
    pub start_port: u16,
    pub extra: String,
}

impl Gw {
    pub fn new(proto: &'static str, count: u16) -> Gw {
        Gw { proto, count, port: free_port(), start_port: free_range(count), extra: String::new() }
    }

    pub fn with(mut self, extra: &str) -> Gw {
        self.extra.push_str(extra);
        self.extra.push('\n');
        self
    }
}

/// What to start.
#[derive(Clone, Debug)]
pub struct Spec {
    pub app: &'static str,
    pub workers: u16,
    pub gateways: Vec<Gw>,
    pub secret: String,
    pub top: String,
    pub worker_extra: String,
    /// The binary to run (default: the one cargo built for this test run).
    pub bin: PathBuf,
    /// Start with `start -d` instead of in the foreground.
    pub daemon: bool,
    /// `all` (register, gateways and workers) or `master` (register and gateways only: no
    /// `[worker]` section is written and no worker is waited for).
    pub machine_type: &'static str,
    /// The gateways' `lan_ip` (put into client_ids; the inner ports listen on it).
    pub lan_ip: &'static str,
}

impl Spec {
    pub fn new(app: &'static str, workers: u16, gateways: Vec<Gw>) -> Spec {
        Spec {
            app,
            workers,
            gateways,
            secret: String::new(),
            top: String::new(),
            worker_extra: String::new(),
            bin: PathBuf::from(BIN),
            daemon: false,
            machine_type: "all",
            lan_ip: "127.0.0.1",
        }
    }
}

pub struct Cluster {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub spec: Spec,
    pub register_port: u16,
    master: Option<Master>,
    seen_pids: Vec<u32>,
}

/// The master process: our child (foreground) or a daemon known by its pid file.
pub enum Master {
    Child(Child),
    Daemon(u32),
}

impl Master {
    pub fn pid(&self) -> u32 {
        match self {
            Master::Child(c) => c.id(),
            Master::Daemon(p) => *p,
        }
    }

    /// `Some(success)` once it has exited.
    fn exited(&mut self) -> Option<bool> {
        match self {
            Master::Child(c) => c.try_wait().unwrap().map(|s| s.success()),
            Master::Daemon(p) => exited(*p).then_some(true),
        }
    }
}

impl Cluster {
    pub fn start(spec: Spec) -> Cluster {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("gw-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let register_port = free_port();
        let mut conf = format!(
            "machine_type = \"{}\"\nlan_ip = \"{}\"\nregister_address = \"127.0.0.1:{register_port}\"\nrun_dir = \"{}\"\nsecret_key = \"{}\"\n{}\n[register]\nlisten = \"text://127.0.0.1:{register_port}\"\n",
            spec.machine_type,
            spec.lan_ip,
            dir.join("run").display(),
            spec.secret,
            spec.top
        );
        for (i, g) in spec.gateways.iter().enumerate() {
            conf += &format!(
                "[[gateway]]\nname = \"Gw{i}\"\nlisten = \"{}://127.0.0.1:{}\"\ncount = {}\nstart_port = {}\n{}\n",
                g.proto, g.port, g.count, g.start_port, g.extra
            );
        }
        if spec.machine_type != "master" {
            conf += &format!(
                "[worker]\nname = \"TestWorker\"\ncount = {}\napp = \"{}\"\n{}\n",
                spec.workers, spec.app, spec.worker_extra
            );
        }
        let conf_path = dir.join("test.toml");
        std::fs::write(&conf_path, conf).unwrap();
        let mut c =
            Cluster { dir, conf: conf_path, spec, register_port, master: None, seen_pids: Vec::new() };
        c.launch();
        c
    }

    /// Start the master: in the foreground (as `scripts/start.sh start`) or as a daemon.
    pub fn launch(&mut self) {
        if self.spec.daemon {
            let out = self.run_cli(&["start", "-d"]);
            assert!(
                out.status.success(),
                "start -d failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            self.master = Some(Master::Daemon(self.pid_file().expect("pid file after start -d")));
        } else {
            let log = std::fs::File::create(self.dir.join("out.log")).unwrap();
            let child = spawn_master(Command::new(&self.spec.bin), &self.conf, &self.dir, log);
            self.master = Some(Master::Child(child));
        }
        self.wait_ready();
    }

    /// The pid in the pid file, if there is one.
    pub fn pid_file(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("run/gatewayworker.pid")).ok()?.trim().parse().ok()
    }

    pub fn master_pid(&self) -> u32 {
        self.master.as_ref().map(|m| m.pid()).unwrap_or(0)
    }

    /// The test took over the master (e.g. it ran `stop` itself): forget it.
    pub fn forget_master(&mut self) {
        self.master = None;
    }

    /// The test started a new master itself (e.g. `restart -d`).
    pub fn adopt_daemon(&mut self, pid: u32) {
        self.master = Some(Master::Daemon(pid));
    }

    pub fn stats_path(&self) -> PathBuf {
        self.dir.join("run").join("gatewayworker.stats")
    }

    pub fn snapshot(&self) -> Option<table::Snapshot> {
        Shm::open(&self.stats_path(), false).ok().map(|s| table::snapshot(&s))
    }

    /// Wait until the register, every gateway and every worker is up and each worker is
    /// linked to every gateway (a `master` machine runs no workers).
    pub fn wait_ready(&mut self) {
        let gws: u16 = self.spec.gateways.iter().map(|g| g.count).sum();
        let workers = if self.spec.machine_type == "master" { 0 } else { self.spec.workers as usize };
        let want = 1 + gws as usize + workers;
        let snap = wait_for("all processes ready", || {
            if let Some(Some(ok)) = self.master.as_mut().map(|m| m.exited()) {
                panic!("master exited (success: {ok}); log:\n{}", self.log());
            }
            let s = self.snapshot()?;
            let procs: Vec<_> = s
                .rows
                .iter()
                .filter(|r| {
                    !matches!(
                        r.role,
                        gatewayworker::internals::stats::Role::Master
                            | gatewayworker::internals::stats::Role::Http
                    )
                })
                .collect();
            (procs.len() == want
                && procs.iter().all(|r| r.state == gatewayworker::internals::stats::State::Ready))
            .then_some(s)
        });
        self.remember(&snap);
    }

    fn remember(&mut self, snap: &table::Snapshot) {
        for r in &snap.rows {
            if !self.seen_pids.contains(&r.pid) {
                self.seen_pids.push(r.pid);
            }
        }
    }

    /// Pids of live processes with this role name (`gateway`, `worker`, `register`).
    pub fn pids(&self, role: &str) -> Vec<u32> {
        let s = self.snapshot().unwrap();
        s.rows.iter().filter(|r| r.role.name() == role).map(|r| r.pid).collect()
    }

    /// Every pid seen so far (for "nothing left behind" checks).
    pub fn seen_pids(&mut self) -> Vec<u32> {
        if let Some(s) = self.snapshot() {
            self.remember(&s);
        }
        self.seen_pids.clone()
    }

    /// Foreground output plus the daemon's log file.
    pub fn log(&self) -> String {
        run_log(&self.dir)
    }

    /// Wait until the log contains `needle`.
    pub fn wait_log(&self, needle: &str) {
        wait_for(&format!("log line {needle:?}"), || self.log().contains(needle).then_some(()));
    }

    pub fn run_cli(&self, args: &[&str]) -> std::process::Output {
        on_conf(Command::new(&self.spec.bin), args, &self.conf, &self.dir).output().unwrap()
    }

    pub fn ws(&self, gw: usize) -> Ws {
        Ws::connect(self.spec.gateways[gw].port, "/")
    }

    /// Stop with SIGINT and check that every process we saw is gone and the run files too.
    pub fn stop(mut self) {
        let Some(mut m) = self.master.take() else { return };
        let pids = self.seen_pids();
        unsafe { libc::kill(m.pid() as i32, libc::SIGINT) };
        let ok = wait_for("master exit", || m.exited());
        assert!(ok, "master failed; log:\n{}", self.log());
        self.assert_nothing_left(&pids);
    }

    /// No process of `pids` alive, no pid file, socket or statistics file in the run dir.
    pub fn assert_nothing_left(&self, pids: &[u32]) {
        for pid in pids {
            assert!(exited(*pid), "process {pid} left behind");
        }
        let leftovers: Vec<_> = std::fs::read_dir(self.dir.join("run"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.contains(".log"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(leftovers.is_empty(), "run files left behind: {leftovers:?}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut m) = self.master.take() {
            unsafe { libc::kill(m.pid() as i32, libc::SIGINT) };
            let until = Instant::now() + Duration::from_secs(10);
            while m.exited().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
            if let Master::Child(mut c) = m {
                let _ = c.wait();
            }
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("cluster log ({}):\n{}", self.dir.display(), self.log());
        }
    }
}

/// A blocking websocket client with a receive deadline and a backlog for out-of-order reads.
pub struct Ws {
    pub ws: WebSocket<TcpStream>,
    backlog: VecDeque<Message>,
    tag: u64,
}

impl Ws {
    pub fn connect(port: u16, path: &str) -> Ws {
        Ws::connect_to(SocketAddr::from(([127, 0, 0, 1], port)), path)
    }

    /// A client of the gateway at `addr` (another host).
    pub fn connect_to(addr: SocketAddr, path: &str) -> Ws {
        let stream = TcpStream::connect_timeout(&addr, DEADLINE).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        stream.set_nodelay(true).unwrap();
        let (ws, _) = tungstenite::client(format!("ws://{addr}{path}"), stream).unwrap();
        Ws { ws, backlog: VecDeque::new(), tag: 0 }
    }

    pub fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).unwrap();
    }

    pub fn send_binary(&mut self, b: &[u8]) {
        self.ws.send(Message::binary(b.to_vec())).unwrap();
    }

    /// Next data message (pings are answered by tungstenite and skipped).
    pub fn recv(&mut self) -> Message {
        if let Some(m) = self.backlog.pop_front() {
            return m;
        }
        self.read_data()
    }

    fn read_data(&mut self) -> Message {
        loop {
            match self.ws.read() {
                Ok(m @ (Message::Text(_) | Message::Binary(_) | Message::Close(_))) => return m,
                Ok(_) => {}
                Err(e) => panic!("websocket read failed: {e}"),
            }
        }
    }

    pub fn recv_text(&mut self) -> String {
        match self.recv() {
            Message::Text(t) => t.to_string(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    pub fn recv_json(&mut self) -> Json {
        serde_json::from_str(&self.recv_text()).unwrap()
    }

    /// Wait for a text message satisfying `f`, keeping the others for later `recv`s.
    pub fn recv_where(&mut self, f: impl Fn(&str) -> bool) -> String {
        if let Some(i) = self.backlog.iter().position(|m| matches!(m, Message::Text(t) if f(t)))
            && let Some(Message::Text(t)) = self.backlog.remove(i)
        {
            return t.to_string();
        }
        let mut skipped = Vec::new();
        let found = loop {
            let m = self.read_data();
            match &m {
                Message::Text(t) if f(t) => break t.to_string(),
                _ => skipped.push(m),
            }
        };
        self.backlog.extend(skipped);
        found
    }

    /// Send a probe command and return its reply (`ok` value, or `Err(err text)`).
    pub fn call(&mut self, mut req: Json) -> Result<Json, String> {
        self.tag += 1;
        let tag = self.tag;
        req["tag"] = json!(tag);
        self.send(&req.to_string());
        let reply = self.recv_where(|t| {
            serde_json::from_str::<Json>(t).map(|j| j.get("tag") == Some(&json!(tag))).unwrap_or(false)
        });
        let j: Json = serde_json::from_str(&reply).unwrap();
        match j.get("err") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_string()),
            None => Ok(j["ok"].clone()),
        }
    }

    pub fn ok(&mut self, req: Json) -> Json {
        let op = req["op"].clone();
        self.call(req).unwrap_or_else(|e| panic!("{op}: {e}"))
    }

    pub fn id(&mut self) -> String {
        self.ok(json!({"op": "whoami"})).as_str().unwrap().to_string()
    }

    /// The connection must be closed by the server (close frame or EOF) before the deadline.
    pub fn expect_closed(&mut self) {
        loop {
            match self.ws.read() {
                Ok(Message::Close(_)) => {}
                Ok(_) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return,
                Err(tungstenite::Error::Io(e)) if e.kind() != std::io::ErrorKind::WouldBlock => return,
                Err(tungstenite::Error::Protocol(_)) => return,
                Err(e) => panic!("expected a close, got {e}"),
            }
        }
    }

    /// Nothing arrives within `d` (used only to check the absence of a message after a
    /// later message proved the server processed everything before it).
    pub fn assert_no_backlog(&self) {
        assert!(self.backlog.is_empty(), "unexpected messages: {:?}", self.backlog);
    }
}

/// A line-protocol client.
pub struct Text {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Text {
    pub fn connect(port: u16) -> Text {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        Text { r: BufReader::new(s.try_clone().unwrap()), w: s }
    }

    pub fn send(&mut self, line: &str) {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    pub fn recv(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).unwrap();
        assert!(l.ends_with('\n'), "connection closed before a line: {l:?}");
        l.trim_end_matches('\n').to_string()
    }

    /// EOF from the server.
    pub fn expect_eof(&mut self) {
        let mut buf = Vec::new();
        match self.r.read_to_end(&mut buf) {
            Ok(_) => {}
            Err(e) => assert!(e.kind() == std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
}

/// A `frame` protocol client.
pub struct Frame {
    pub s: TcpStream,
}

impl Frame {
    pub fn connect(port: u16) -> Frame {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        Frame { s }
    }

    pub fn send(&mut self, payload: &[u8]) {
        let mut b = ((payload.len() + 4) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(payload);
        self.s.write_all(&b).unwrap();
    }

    pub fn recv(&mut self) -> Vec<u8> {
        let mut h = [0u8; 4];
        self.s.read_exact(&mut h).unwrap();
        let mut p = vec![0u8; u32::from_be_bytes(h) as usize - 4];
        self.s.read_exact(&mut p).unwrap();
        p
    }
}

/// Read a file relative to the package root.
pub fn repo_file(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// TLS for test clients: accept the test certificate (any certificate, in fact).
pub mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned};

    #[derive(Debug)]
    struct AcceptAny;

    impl ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
        }
    }

    pub type TlsStream = StreamOwned<ClientConnection, std::net::TcpStream>;

    /// A blocking TLS stream to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> TlsStream {
        let cfg = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny))
            .with_no_client_auth();
        let conn = ClientConnection::new(Arc::new(cfg), ServerName::try_from("localhost").unwrap()).unwrap();
        let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(super::DEADLINE)).unwrap();
        tcp.set_nodelay(true).unwrap();
        StreamOwned::new(conn, tcp)
    }

    /// A websocket over TLS.
    pub fn ws(port: u16) -> tungstenite::WebSocket<TlsStream> {
        let (ws, _) = tungstenite::client(format!("wss://localhost:{port}/"), connect(port)).unwrap();
        ws
    }

    /// `[tls]` lines for the test certificate.
    pub fn conf() -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            super::repo_file("tests/fixtures/test-only-cert.pem").display(),
            super::repo_file("tests/fixtures/test-only-key.pem").display()
        )
    }
}

/// `pid` is gone, or a zombie: it exited and waits to be reaped by whoever adopted it (a
/// daemon master's parent is the system's init, which may reap it later).
pub fn exited(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next());
    let gone = unsafe { libc::kill(pid as i32, 0) } != 0;
    gone || state == Some('Z')
}

//! The gateway service in a test thread: its listeners on 127.0.0.1:0 and a temporary Unix
//! socket, its reactor stopped by a flag, a fake business worker speaking GatewayProtocol on
//! the inner port and real client sockets on the public one. No binary is spawned; every
//! wait is a read with a deadline.

mod commands;
mod flow;
mod handover;
mod membership;
mod queries;
mod relay;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Token;
use mio::net::{TcpListener, UnixListener};

use super::{Gateway, Listeners, Timer};
use crate::config::{Config, GatewayConf, GatewayLimits, MachineType, Proto, SendFullPolicy};
use crate::reactor::{Ctx, Reactor, Ready, Service};
use crate::stats::Stats;
use crate::wire::packet::{self, Header, cmd, flag};
use crate::wire::register::worker_connect_body;

/// How long any expected effect may take.
const DEADLINE: Duration = Duration::from_secs(10);
/// Secret key of every test gateway.
const SECRET: &str = "test-secret";

/// The gateway plus a stop flag checked by the reactor, and a flag that stands for the
/// SIGUSR2 of an upgrade (a signal would reach every gateway of the test process).
struct Driven {
    gw: Gateway,
    halt: Arc<AtomicBool>,
    upgrade: Arc<AtomicBool>,
}

impl Service for Driven {
    type Timer = Timer;

    fn on_ready(&mut self, cx: &mut Ctx<'_, Timer>, token: Token, ready: Ready) {
        self.gw.on_ready(cx, token, ready);
    }

    fn on_timer(&mut self, cx: &mut Ctx<'_, Timer>, timer: Timer) {
        self.gw.on_timer(cx, timer);
    }

    fn on_signal(&mut self, cx: &mut Ctx<'_, Timer>, signal: i32) {
        self.gw.on_signal(cx, signal);
    }

    fn end_of_turn(&mut self, cx: &mut Ctx<'_, Timer>) -> bool {
        if self.upgrade.swap(false, Ordering::SeqCst) {
            self.gw.on_upgrade_signal(cx);
        }
        self.gw.end_of_turn(cx)
    }

    fn should_stop(&self) -> bool {
        self.halt.load(Ordering::SeqCst) || self.gw.should_stop()
    }
}

/// A running gateway.
pub struct Gw {
    halt: Arc<AtomicBool>,
    upgrade: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub public: SocketAddr,
    pub inner: SocketAddr,
    dir: PathBuf,
    cfg: Config,
    /// Copies of the listeners, for the process that replaces this one (`upgrade`).
    fds: [OwnedFd; 3],
}

pub(crate) fn config(proto: Proto, dir: &std::path::Path, tweak: impl FnOnce(&mut GatewayLimits)) -> Config {
    let mut limits = GatewayLimits {
        max_package_size: 1 << 20,
        send_to_client_buffer_size: 1 << 20,
        send_to_worker_buffer_size: 1 << 20,
        send_full_policy: SendFullPolicy::Drop,
        max_connections: 1000,
        handshake_timeout: Duration::from_secs(10),
        idle_timeout: Duration::ZERO,
        max_groups_per_client: 8,
        max_uid_len: 64,
        max_session_size: 4096,
        flow: crate::config::FlowLimits::default(),
    };
    tweak(&mut limits);
    let gateway = GatewayConf {
        name: "TestGateway".into(),
        proto,
        listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        count: 1,
        start_port: 0,
        ping_interval: Duration::ZERO,
        ping_not_response_limit: 0,
        ping_data: Vec::new(),
        tls: None,
        limits,
    };
    Config {
        file: dir.join("test.toml"),
        machine_type: MachineType::Master,
        lan_ip: Ipv4Addr::LOCALHOST,
        advertise_ip: Ipv4Addr::LOCALHOST,
        register_address: Vec::new(),
        production: false,
        secret_key: SECRET.into(),
        run_dir: dir.to_path_buf(),
        pid_file: dir.join("pid"),
        log_file: dir.join("log"),
        stdout_file: dir.join("stdout"),
        stop_timeout: Duration::from_secs(2),
        reload_timeout: Duration::from_secs(2),
        upgrade_drain: Duration::from_secs(30),
        register: None,
        gateways: vec![gateway],
        worker: None,
        http: None,
        allow_empty_secret: false,
        warnings: Vec::new(),
    }
}

/// Listeners on 127.0.0.1:0 and a Unix socket in `dir`.
pub(crate) fn listeners(dir: &std::path::Path) -> Listeners {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    Listeners {
        public: TcpListener::bind(any).unwrap(),
        inner_tcp: TcpListener::bind(any).unwrap(),
        inner_unix: UnixListener::bind(dir.join("inner.sock")).unwrap(),
    }
}

impl Gw {
    pub fn start(proto: Proto) -> Gw {
        Gw::with_limits(proto, |_| {})
    }

    /// A gateway whose limits `tweak` changed.
    pub fn with_limits(proto: Proto, tweak: impl FnOnce(&mut GatewayLimits)) -> Gw {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("gw-inproc-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cfg = config(proto, &dir, tweak);
        let listeners = listeners(&dir);
        cfg.gateways[0].listen = listeners.public.local_addr().unwrap();
        Gw::run(cfg, listeners, dir, None)
    }

    /// Run a gateway of `cfg` in a thread; `handover`: first take over from the one that
    /// waits at that path.
    fn run(cfg: Config, listeners: Listeners, dir: PathBuf, handover: Option<PathBuf>) -> Gw {
        let public = listeners.public.local_addr().unwrap();
        let inner = listeners.inner_tcp.local_addr().unwrap();
        let fds = [
            dup(listeners.public.as_raw_fd()),
            dup(listeners.inner_tcp.as_raw_fd()),
            dup(listeners.inner_unix.as_raw_fd()),
        ];
        let (halt, upgrade) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (stop, up) = (halt.clone(), upgrade.clone());
        let thread_cfg = cfg.clone();
        let thread = std::thread::spawn(move || {
            let cfg = thread_cfg;
            let stats = Stats::private().unwrap();
            let got = handover.map(|path| super::handover::receive(&path, &stats).unwrap());
            let mut reactor = Reactor::new().unwrap();
            let mut gw = Gateway::new(&cfg, &cfg.gateways[0], 0, listeners, None, stats);
            if let Some(got) = got {
                gw.restore(&mut reactor.ctx(), got).unwrap();
            }
            gw.start(&mut reactor.ctx()).unwrap();
            reactor.run(&mut Driven { gw, halt: stop, upgrade: up }).unwrap();
        });
        Gw { halt, upgrade, thread: Some(thread), public, inner, dir, cfg, fds }
    }

    /// Replace this gateway by a new one on the same listeners, by a handover (what
    /// `upgrade` does with processes). This one's thread ends once it handed over.
    pub fn upgrade(mut self) -> Gw {
        let path = super::handover::socket_path(&self.dir, 0);
        let std_l = |fd: &OwnedFd| std::net::TcpListener::from(dup(fd.as_raw_fd()));
        let listeners = Listeners {
            public: TcpListener::from_std(std_l(&self.fds[0])),
            inner_tcp: TcpListener::from_std(std_l(&self.fds[1])),
            inner_unix: UnixListener::from_std(std::os::unix::net::UnixListener::from(dup(
                self.fds[2].as_raw_fd()
            ))),
        };
        let dir = std::mem::take(&mut self.dir);
        let new = Gw::run(self.cfg.clone(), listeners, dir, Some(path.clone()));
        let until = Instant::now() + DEADLINE;
        while !path.exists() {
            assert!(Instant::now() < until, "the new gateway does not listen for the handover");
            std::thread::yield_now();
        }
        self.upgrade.store(true, Ordering::SeqCst);
        // The old reactor sees the flag at its next turn (its 1 s tick at the latest) and
        // ends by itself when it handed everything over.
        self.thread.take().unwrap().join().expect("old gateway thread panicked");
        new
    }

    /// A business worker linked and registered (its WORKER_CONNECT executed).
    pub fn worker(&self, name: &str) -> FakeWorker {
        let mut w = self.link_worker(name);
        w.sync();
        w
    }

    /// A business worker that sent its WORKER_CONNECT (not known to be executed yet).
    pub fn link_worker(&self, name: &str) -> FakeWorker {
        let mut w = Peer::connect(self.inner);
        w.scalar(cmd::WORKER_CONNECT, 0, b"", &worker_connect_body(name, SECRET));
        w
    }

    pub fn client(&self) -> Client {
        Peer::connect(self.public)
    }

    /// A GatewayClient link with the right secret.
    pub fn api(&self) -> FakeWorker {
        let mut api = Peer::connect(self.inner);
        api.scalar(
            cmd::GATEWAY_CLIENT_CONNECT,
            0,
            b"",
            &crate::wire::register::gateway_client_connect_body(SECRET),
        );
        api
    }

    /// An inner link that said nothing yet.
    pub fn stranger(&self) -> FakeWorker {
        Peer::connect(self.inner)
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.halt.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // Wake the reactor so it sees the flag now rather than at its next timer.
            let _ = TcpStream::connect(self.public);
            let res = t.join();
            if !std::thread::panicking() {
                res.expect("gateway thread panicked");
            }
        }
        if !self.dir.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn dup(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` is open; the duplicate is owned by the result.
    let d = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    assert!(d >= 0, "dup: {}", io::Error::last_os_error());
    // SAFETY: a fresh descriptor nobody else owns.
    unsafe { OwnedFd::from_raw_fd(d) }
}

/// A packet as the fake worker received it.
#[derive(Debug)]
pub struct Got {
    pub header: Header,
    pub ext: Vec<u8>,
    pub body: Vec<u8>,
}

/// A socket to the gateway and the bytes read from it and not consumed yet.
pub struct Peer {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let s = TcpStream::connect(addr).unwrap();
        s.set_nodelay(true).unwrap();
        Peer { s, buf: Vec::new() }
    }

    /// One read, failing the test at `until`; false on EOF or reset.
    fn fill(&mut self, until: Instant) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "waited {DEADLINE:?}; have {:?}", self.buf);
        self.s.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 65536];
        match self.s.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => true,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => false,
            Err(e) => panic!("read: {e}"),
        }
    }

    /// Read until `done` finds a whole item in the buffer (it returns the bytes it used).
    pub fn until<T>(&mut self, mut done: impl FnMut(&[u8]) -> Option<(T, usize)>) -> T {
        let until = Instant::now() + DEADLINE;
        loop {
            if let Some((item, used)) = done(&self.buf) {
                self.buf.drain(..used);
                return item;
            }
            assert!(self.fill(until), "the gateway closed the connection; have {:?}", self.buf);
        }
    }

    /// The gateway closed the connection; returns the bytes received before the close.
    pub fn until_closed(&mut self) -> Vec<u8> {
        let until = Instant::now() + DEADLINE;
        while self.fill(until) {}
        std::mem::take(&mut self.buf)
    }

    /// Nothing arrived (call after a worker's `sync`: the gateway writes to clients before
    /// it answers the query of that turn, and to a link in order).
    pub fn assert_idle(&mut self) {
        self.s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let res = self.s.read(&mut b);
        self.s.set_nonblocking(false).unwrap();
        assert!(self.buf.is_empty(), "unexpected bytes {:?}", self.buf);
        assert!(matches!(&res, Err(e) if e.kind() == io::ErrorKind::WouldBlock), "unexpected read {res:?}");
    }
}

/// A business worker's (or GatewayClient's) link to the gateway.
pub type FakeWorker = Peer;

impl FakeWorker {
    /// A command for connection `id`.
    pub fn command(&mut self, command: u8, id: u32, flags: u8, ext: &[u8], body: &[u8]) {
        let mut v = Vec::new();
        packet::encode(&mut v, &Header::command(command, id, flags), ext, body);
        self.s.write_all(&v).unwrap();
    }

    /// A command with a scalar body (what the worker API sends for strings).
    pub fn scalar(&mut self, command: u8, id: u32, ext: &[u8], body: &[u8]) {
        self.command(command, id, flag::BODY_IS_SCALAR, ext, body);
    }

    /// Wait until the gateway executed everything sent so far (a query answered in order).
    pub fn sync(&mut self) {
        self.query(cmd::IS_ONLINE, 0, b"");
    }

    /// The next packet from the gateway.
    pub fn next(&mut self) -> Got {
        self.until(|buf| {
            let (p, n) = packet::decode(buf, usize::MAX).unwrap()?;
            Some((Got { header: p.header, ext: p.ext.to_vec(), body: p.body.to_vec() }, n))
        })
    }

    /// The next packet, which must be `command`.
    pub fn expect(&mut self, command: u8) -> Got {
        let got = self.next();
        assert_eq!(got.header.cmd, command, "unexpected packet {got:?}");
        got
    }

    /// Send query `command` and return its serialized reply.
    pub fn query(&mut self, command: u8, id: u32, ext: &[u8]) -> Vec<u8> {
        self.scalar(command, id, ext, b"");
        self.until(|buf| {
            let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
            Some((buf.get(4..4 + len)?.to_vec(), 4 + len))
        })
    }

    /// Query, and check the reply is `expected`.
    pub fn ask(&mut self, command: u8, id: u32, ext: &[u8], expected: impl AsRef<[u8]>) {
        let got = self.query(command, id, ext);
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected.as_ref()),
            "query {command}"
        );
    }
}

/// A client (text, or any protocol read as raw bytes).
pub type Client = Peer;

impl Client {
    pub fn local(&self) -> SocketAddrV4 {
        match self.s.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
        }
    }

    pub fn write(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).unwrap();
    }

    /// Exactly `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        self.until(|buf| (buf.len() >= n).then(|| (buf[..n].to_vec(), n)))
    }

    /// The next text line, without its newline.
    pub fn line(&mut self) -> Vec<u8> {
        self.until(|buf| {
            let pos = buf.iter().position(|&b| b == b'\n')?;
            Some((buf[..pos].to_vec(), pos + 1))
        })
    }
}

/// A gateway of protocol `proto`, one linked worker, and `n` connected clients whose
/// ON_CONNECT reached the worker.
pub struct Setup {
    pub gw: Gw,
    pub w: FakeWorker,
    pub clients: Vec<Client>,
    pub ids: Vec<u32>,
}

pub fn setup(proto: Proto, n: usize) -> Setup {
    let gw = Gw::start(proto);
    let mut w = gw.worker("w:0");
    let (clients, ids) = (0..n).map(|_| connected(&gw, &mut w)).unzip();
    Setup { gw, w, clients, ids }
}

/// A client that connected and whose ON_CONNECT reached `w`: its connection id.
pub fn connected(gw: &Gw, w: &mut FakeWorker) -> (Client, u32) {
    let c = gw.client();
    let got = w.expect(cmd::ON_CONNECT);
    assert_eq!(got.header.client_port, c.local().port());
    (c, got.header.connection_id)
}

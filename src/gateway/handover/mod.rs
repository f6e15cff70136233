//! The gateway handover of `upgrade` (`docs/upgrade.md`): the running gateway passes every
//! connection, the socket itself and all of its state, to the process that replaces it, which
//! goes on with the same connection ids. Inner links (business workers, GatewayClients) move
//! the same way, so their peers see no reconnect. wss clients cannot move their TLS session:
//! the old process keeps it and relays the plain bytes (`relay`), and the new one closes those
//! clients with 1012, spread over `upgrade_drain`.
//!
//! The exchange, old process = O, new process = N, over a Unix stream N listens on:
//! N sends `GWHO <version>\n`; O answers with the records (`record`), each with its socket,
//! or with `GWHO-REFUSED <version>\n` when it writes another version; N answers `ok\n` once it
//! holds them all. Until that `ok` O keeps everything and N touches no socket: a failure on
//! either side leaves O serving with nothing lost.

pub mod record;
mod relay;

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::Interest;

pub use relay::Relays;

use record::{ClientState, Header, LinkState, Record, VERSION};

use super::client::{Client, Route};
use super::{Gateway, INNER_TCP, INNER_UNIX, PUBLIC, Stop, Timer};
use crate::net::fdpass;
use crate::net::io::Io;
use crate::reactor::Ctx;
use crate::stats::{State, Stats};

/// Exit status of a new gateway that cannot read the running one's handover format.
pub const EXIT_FORMAT: i32 = 65;
/// Exit status of a new gateway whose handover failed otherwise.
pub const EXIT_FAILED: i32 = 75;

/// How long each side waits for the other at each step.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new gateway waits for the running one to connect.
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Fault injection for the tests of the failure paths (`GW_FAULT`), read by a new gateway:
/// `handover-die` exits in the middle of receiving, `handover-version` asks for a format
/// version nobody writes.
const FAULT: &str = "GW_FAULT";

/// Where the gateway with inner port `port` receives a handover.
pub fn socket_path(run_dir: &Path, port: u16) -> PathBuf {
    run_dir.join(format!("handover-{port}.sock"))
}

/// Why a handover failed, as the new process sees it.
#[derive(Debug)]
pub enum Failure {
    /// The running gateway writes a format this build cannot read.
    Format(String),
    Other(String),
}

impl Failure {
    pub fn exit_status(&self) -> i32 {
        match self {
            Failure::Format(_) => EXIT_FORMAT,
            Failure::Other(_) => EXIT_FAILED,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Format(s) | Failure::Other(s) => f.write_str(s),
        }
    }
}

fn other(what: &str) -> impl Fn(io::Error) -> Failure + '_ {
    move |e| Failure::Other(format!("{what}: {e}"))
}

/// What a new gateway received: the records, each with its socket.
pub struct Received {
    pub header: Header,
    pub links: Vec<(LinkState, OwnedFd)>,
    pub clients: Vec<(ClientState, OwnedFd)>,
}

/// New process: listen at `path`, say so in the statistics (`receiving`: the master then
/// signals the running gateway), take everything it hands over, confirm.
pub fn receive(path: &Path, stats: &Stats) -> Result<Received, Failure> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(other("cannot listen for the handover"))?;
    let received = receive_on(&listener, stats);
    let _ = std::fs::remove_file(path);
    received
}

fn receive_on(listener: &UnixListener, stats: &Stats) -> Result<Received, Failure> {
    stats.slot().set_state(State::Receiving);
    let sock = accept_within(listener, ACCEPT_TIMEOUT)?;
    sock.set_read_timeout(Some(STEP_TIMEOUT)).map_err(other("handover socket"))?;
    sock.set_write_timeout(Some(STEP_TIMEOUT)).map_err(other("handover socket"))?;
    let fault = std::env::var(FAULT).unwrap_or_default();
    let asked = if fault == "handover-version" { VERSION + 1000 } else { VERSION };
    (&sock).write_all(format!("GWHO {asked}\n").as_bytes()).map_err(other("handover hello"))?;
    let first = fdpass::recv(&sock).map_err(other("handover header"))?;
    let Some((data, _)) = first else {
        return Err(Failure::Other("the running gateway closed the handover".into()));
    };
    if let Some(v) = data.strip_prefix(b"GWHO-REFUSED ") {
        let theirs = String::from_utf8_lossy(v).trim().to_string();
        return Err(Failure::Format(format!(
            "the running gateway writes handover format {theirs}; this binary reads format {asked}"
        )));
    }
    let header = match record::Record::decode(&data) {
        Ok(Record::Header(h)) => h,
        Ok(_) => return Err(Failure::Other("the handover does not start with its header".into())),
        Err(e) => return Err(Failure::Format(e.to_string())),
    };
    let mut got = Received { header, links: Vec::new(), clients: Vec::new() };
    let total = got.header.links as usize + got.header.clients as usize;
    loop {
        if fault == "handover-die" && got.links.len() + got.clients.len() >= total / 2 {
            warn!("gateway: {FAULT}=handover-die: exiting in the middle of the handover");
            // SAFETY: ends the process at once, as a crash would.
            unsafe { libc::_exit(70) };
        }
        let Some((data, mut fds)) = fdpass::recv(&sock).map_err(other("handover record"))? else {
            return Err(Failure::Other("the running gateway closed the handover before its end".into()));
        };
        let rec = Record::decode(&data).map_err(|e| Failure::Format(e.to_string()))?;
        let mut fd =
            || fds.pop().ok_or_else(|| Failure::Other("a handover record came without its socket".into()));
        match rec {
            Record::Link(l) => got.links.push((l, fd()?)),
            Record::Client(c) => got.clients.push((c, fd()?)),
            Record::End => break,
            Record::Header(_) => return Err(Failure::Other("a second handover header".into())),
        }
    }
    if got.links.len() != got.header.links as usize || got.clients.len() != got.header.clients as usize {
        return Err(Failure::Other(format!(
            "the handover announced {} links and {} clients and carried {} and {}",
            got.header.links,
            got.header.clients,
            got.links.len(),
            got.clients.len()
        )));
    }
    (&sock).write_all(b"ok\n").map_err(other("handover confirmation"))?;
    Ok(got)
}

fn accept_within(listener: &UnixListener, timeout: Duration) -> Result<UnixStream, Failure> {
    let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Other(format!(
                "the running gateway did not start the handover within {timeout:?}"
            )));
        }
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n > 0 {
            let (s, _) = listener.accept().map_err(other("handover accept"))?;
            s.set_nonblocking(false).map_err(other("handover socket"))?;
            return Ok(s);
        }
        if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return Err(other("handover poll")(io::Error::last_os_error()));
        }
    }
}

/// One line from the handover socket (a few bytes, read one at a time so nothing after it
/// is consumed).
fn read_line(sock: &UnixStream) -> io::Result<String> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < 64 {
        if (&*sock).read(&mut b)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&line).into_owned());
        }
        line.push(b[0]);
    }
    Err(io::Error::other("line too long"))
}

/// A socket handed over as a relay of a TLS session: our end, kept until the handover is
/// confirmed.
struct Pending {
    key: usize,
    ours: mio::net::UnixStream,
}

impl Gateway {
    /// SIGUSR2: when a new process waits at this gateway's handover socket, hand everything
    /// over to it; otherwise (GatewayWorker's meaning) reopen the log file.
    pub(super) fn on_upgrade_signal(&mut self, cx: &mut Ctx<'_, Timer>) {
        let path = socket_path(&self.settings.run_dir, self.me.lan_port);
        if !path.exists() {
            crate::logging::reopen();
            return;
        }
        if self.stop != Stop::No {
            warn!("gateway: handover asked while stopping; ignored");
            return;
        }
        let (clients, links) = (self.clients.len(), self.links.len());
        match self.hand_over(cx, &path) {
            Ok(relayed) => {
                info!(
                    "gateway {}: handed over {clients} clients and {links} inner links; relaying {relayed} TLS sessions until they close",
                    self.me.name
                );
            }
            Err(e) => {
                warn!("gateway {}: handover failed: {e}; this process goes on serving", self.me.name);
                self.resume_listening(cx);
            }
        }
    }

    fn stop_listening(&mut self, cx: &mut Ctx<'_, Timer>) {
        let l = &mut self.accept.listeners;
        let _ = cx.registry.deregister(&mut l.public);
        let _ = cx.registry.deregister(&mut l.inner_tcp);
        let _ = cx.registry.deregister(&mut l.inner_unix);
    }

    fn resume_listening(&mut self, cx: &mut Ctx<'_, Timer>) {
        let l = &mut self.accept.listeners;
        let _ = cx.registry.register(&mut l.public, PUBLIC, Interest::READABLE);
        let _ = cx.registry.register(&mut l.inner_tcp, INNER_TCP, Interest::READABLE);
        let _ = cx.registry.register(&mut l.inner_unix, INNER_UNIX, Interest::READABLE);
        // Connections may have queued meanwhile; their edge came while deregistered.
        self.accept.ready = true;
        self.accept_clients(cx);
        self.accept_inner(cx, false);
        self.accept_inner(cx, true);
    }

    /// Old process: send every link and client; on confirmation forget them and keep the TLS
    /// sessions as relays. Returns how many are relayed.
    fn hand_over(&mut self, cx: &mut Ctx<'_, Timer>, path: &Path) -> io::Result<usize> {
        let sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(STEP_TIMEOUT))?;
        sock.set_write_timeout(Some(STEP_TIMEOUT))?;
        let hello = read_line(&sock)?;
        let asked = hello.strip_prefix("GWHO ").and_then(|v| v.trim().parse::<u32>().ok());
        if asked != Some(VERSION) {
            let _ = fdpass::send(&sock, format!("GWHO-REFUSED {VERSION}").as_bytes(), &[]);
            return Err(io::Error::other(format!(
                "the new binary reads handover format {}, this one writes {VERSION}",
                asked.map_or_else(|| format!("{hello:?}"), |v| v.to_string())
            )));
        }
        self.stop_listening(cx);
        // Write what can be written and let the closed clients go (their close events are
        // queued on the worker links, which move).
        self.flush_all(cx);
        let header = Header {
            last_id: self.clients.last_id(),
            parked: self.links.parked.clone(),
            links: self.links.len() as u32,
            clients: self.clients.len() as u32,
        };
        fdpass::send(&sock, &Record::Header(header).encode(), &[])?;
        for key in self.links.table.keys() {
            let Some(state) = self.links.snapshot(key) else { continue };
            let fd = link_fd(&self.links.get(key).expect("listed").conn.io);
            fdpass::send(&sock, &Record::Link(state).encode(), &[fd])?;
        }
        let mut pending = Vec::new();
        for key in self.clients.keys() {
            let Some(c) = self.clients.get_mut(key) else { continue };
            let (fd, relay) = match &c.conn.io {
                Io::Tls(_) => {
                    let (ours, theirs) = mio::net::UnixStream::pair()?;
                    let fd = OwnedFd::from(theirs);
                    (Some(fd), Some(ours))
                }
                _ => (None, None),
            };
            let state = c.snapshot(relay.is_some());
            let raw = fd.as_ref().map_or_else(|| client_fd(&c.conn.io), |f| f.as_raw_fd());
            fdpass::send(&sock, &Record::Client(state).encode(), &[raw])?;
            if let Some(ours) = relay {
                pending.push(Pending { key, ours });
            }
        }
        fdpass::send(&sock, &Record::End.encode(), &[])?;
        let answer = read_line(&sock).map_err(|e| io::Error::other(format!("no confirmation: {e}")))?;
        if answer != "ok" {
            return Err(io::Error::other(format!("the new gateway answered {answer:?}")));
        }
        Ok(self.forget_handed_over(cx, pending))
    }

    /// The new process holds everything: drop our copies (deregistered first: the sockets
    /// live on in the other process, and so would their registration in our poll), keep the
    /// TLS sessions as relays, and stay only as long as they do.
    fn forget_handed_over(&mut self, cx: &mut Ctx<'_, Timer>, pending: Vec<Pending>) -> usize {
        for key in self.links.table.keys() {
            self.links.table.remove(cx.registry, key);
        }
        self.links.parked.clear();
        let mut relays =
            pending.into_iter().map(|p| (p.key, p.ours)).collect::<std::collections::HashMap<_, _>>();
        let mut relayed = 0;
        for key in self.clients.keys() {
            let Some(c) = self.clients.remove(cx.registry, key) else { continue };
            if let Some(ours) = relays.remove(&key) {
                match self.relays.add(cx.registry, c.conn.io, Io::Unix(ours)) {
                    Ok(()) => relayed += 1,
                    Err(e) => warn!("gateway: cannot relay the TLS session of client {}: {e}", c.id),
                }
            }
        }
        self.index = Default::default();
        self.router = Default::default();
        self.registers.close_all(cx.registry);
        self.stats.slot().set_state(State::Draining);
        self.stop = Stop::Relaying(Instant::now() + self.settings.upgrade_drain + Duration::from_secs(5));
        relayed
    }

    /// New process: take over what the old one handed over. Called before anything is
    /// accepted; every connection is read and written at once (readiness unknown).
    pub(super) fn restore(&mut self, cx: &mut Ctx<'_, Timer>, got: Received) -> io::Result<()> {
        self.clients.set_last_id(got.header.last_id);
        self.links.parked = got.header.parked;
        let mut keys = std::collections::HashMap::new();
        let mut link_keys = Vec::new();
        for (state, fd) in got.links {
            let (old, serial, kind) = (state.key, state.serial, state.kind.clone());
            let io = if state.unix {
                Io::Unix(mio::net::UnixStream::from_std(UnixStream::from(fd)))
            } else {
                Io::Tcp(mio::net::TcpStream::from_std(std::net::TcpStream::from(fd)))
            };
            let key = self.links.restore(cx.registry, state, io)?;
            if let super::inner::Kind::Worker { draining, .. } = kind {
                let route = Route { key, serial };
                self.router.add(route);
                if draining {
                    self.router.set_draining(key);
                }
            }
            keys.insert(old, (key, serial));
            link_keys.push(key);
        }
        let drain = self.settings.upgrade_drain;
        let mut relayed = Vec::new();
        for (state, fd) in got.clients {
            let route = state.route.and_then(|(old, serial)| {
                keys.get(&old).filter(|(_, s)| *s == serial).map(|&(key, serial)| Route { key, serial })
            });
            let io = if state.relayed {
                Io::Unix(mio::net::UnixStream::from_std(UnixStream::from(fd)))
            } else {
                Io::Tcp(mio::net::TcpStream::from_std(std::net::TcpStream::from(fd)))
            };
            let c = Client::restore(state, io, route, &self.settings.ws_cfg, self.clock);
            let (id, handshaking, is_relayed) = (c.id, c.handshaking(), c.relayed);
            self.index.restore(&c);
            if let Some(r) = route {
                self.router.bind(r);
            }
            let key = self.clients.insert(cx.registry, c)?;
            self.clients.mark_dirty(key);
            self.clients.again.push(key);
            if handshaking {
                let secs = self.settings.limits.handshake_timeout.as_secs_f64().ceil() as u32;
                self.clients.handshakes.push_back((self.clock + secs.max(1), id));
            }
            if is_relayed {
                relayed.push(id);
            }
        }
        for key in link_keys {
            self.read_inner(key);
        }
        if !relayed.is_empty() {
            info!(
                "gateway {}: {} wss clients get close 1012 over the next {drain:?}",
                self.me.name,
                relayed.len()
            );
            self.drain.plan(Instant::now(), drain, relayed);
            if let Some(at) = self.drain.next_due() {
                cx.after(at.saturating_duration_since(Instant::now()), Timer::UpgradeDrain);
            }
        }
        Ok(())
    }

    /// The upgrade drain timer: close the relayed clients whose time came (1012).
    pub(super) fn upgrade_drain(&mut self, cx: &mut Ctx<'_, Timer>) {
        for id in self.drain.due(Instant::now()) {
            let Some(key) = self.clients.key_of(id) else { continue };
            if let Some(c) = self.clients.get_mut(key)
                && c.is_open_websocket()
                && !c.conn.closing
            {
                crate::net::websocket::encode_close(c.conn.out.vec(), 1012);
            }
            self.close_client(key);
        }
        if let Some(at) = self.drain.next_due() {
            cx.after(at.saturating_duration_since(Instant::now()), Timer::UpgradeDrain);
        }
    }
}

fn link_fd(io: &Io) -> RawFd {
    match io {
        Io::Tcp(s) => s.as_raw_fd(),
        Io::Unix(s) => s.as_raw_fd(),
        Io::Tls(t) => t.tcp().as_raw_fd(),
    }
}

fn client_fd(io: &Io) -> RawFd {
    link_fd(io)
}

/// When each relayed client gets its 1012: evenly over the window, in connection id order.
#[derive(Default)]
pub struct DrainPlan {
    /// (when, connection id), earliest last.
    queue: Vec<(Instant, u32)>,
}

impl DrainPlan {
    /// Spread `ids` over `window` from `start`: the i-th of n at (i + 0.5) / n of it.
    pub fn plan(&mut self, start: Instant, window: Duration, mut ids: Vec<u32>) {
        ids.sort_unstable();
        let n = ids.len() as f64;
        self.queue = ids
            .into_iter()
            .enumerate()
            .map(|(i, id)| (start + window.mul_f64((i as f64 + 0.5) / n), id))
            .rev()
            .collect();
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.queue.last().map(|(t, _)| *t)
    }

    /// The ids due at `now`, taken out.
    pub fn due(&mut self, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        while self.queue.last().is_some_and(|(t, _)| *t <= now) {
            out.push(self.queue.pop().expect("checked").1);
        }
        out
    }
}

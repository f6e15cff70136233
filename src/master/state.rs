//! The master's state across its re-execution (`upgrade`, step 1 of `docs/upgrade.md`):
//! what the new master needs to go on with the same children, listening sockets and
//! statistics region. The old master writes it into one environment variable of the
//! `execve`; `upgrade-check`, run from the new binary first, proves that binary reads it and
//! that it fits the configuration; the new master then reads it back.
//!
//! A text format, one record per line, every value escaped so that it holds no space or line
//! break:
//!
//! ```text
//! format 1
//! continue register
//! from 0.1.0
//! conf /srv/gw/conf/master.toml
//! exe /srv/gw/current/gatewayworker
//! stats /srv/gw/run/gatewayworker.stats
//! pid_file /srv/gw/run/gatewayworker.pid
//! daemon 1
//! log /srv/gw/run/gatewayworker.log        (`-`: children log to the terminal)
//! generation 2
//! register 5 0.0.0.0:1236                  (fd, address it was bound for)
//! public 6 0.0.0.0:7272                    (one per gateway group, in order)
//! inner 7 8 127.0.0.1:2300 /srv/gw/run/gateway-2300.sock   (one per gateway process)
//! http 9 127.0.0.1:8080
//! free 12 11 10                            (free statistics slots, next first)
//! proc gateway:0:1:1 3 4242 0 61000 0 0 -  (kind slot pid generation age_ms quick_deaths retiring deadline_ms)
//! ```
//!
//! A missing or malformed value is an error naming the line and the field, never a default.

use std::ffi::OsStr;
use std::fmt;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{Kind, process_kinds};
use crate::config::{Config, MachineType};

/// The environment variable that carries the state through the `execve` (and to
/// `upgrade-check`).
pub const ENV: &str = "GW_MASTER_STATE";

/// Version of this format. A binary reads exactly its own; a change of the format that an
/// older binary would misread takes a new number.
pub const FORMAT: u32 = 1;

/// Where the re-executed master goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Continue {
    /// The upgrade continues with the register (then gateways, workers, the HTTP process).
    Register,
}

impl Continue {
    fn word(self) -> &'static str {
        match self {
            Continue::Register => "register",
        }
    }
}

/// A listening socket: its fd (kept open across the `execve`) and the address it was bound
/// for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub fd: RawFd,
    pub addr: String,
}

/// A gateway process's inner listeners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inner {
    pub tcp: RawFd,
    pub unix: RawFd,
    pub addr: String,
    pub path: PathBuf,
}

/// One entry of the process table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcState {
    pub kind: Kind,
    pub slot: usize,
    pub pid: Option<u32>,
    pub generation: u64,
    /// Milliseconds since it was started.
    pub age_ms: u64,
    pub quick_deaths: u32,
    pub retiring: bool,
    /// Milliseconds until it is killed if still alive (a retiring process that lingers).
    pub deadline_ms: Option<u64>,
}

/// Everything the old master hands to the new one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterState {
    pub next: Continue,
    /// The version label of the master that wrote it.
    pub from: String,
    pub conf: PathBuf,
    pub exe: PathBuf,
    pub stats: PathBuf,
    pub pid_file: PathBuf,
    pub daemon: bool,
    pub child_log: Option<PathBuf>,
    pub generation: u64,
    pub register: Option<Listener>,
    pub public: Vec<Listener>,
    pub inner: Vec<Inner>,
    pub http: Option<Listener>,
    pub free_slots: Vec<usize>,
    pub procs: Vec<ProcState>,
}

/// Why a state cannot be read: the line (1-based; 0: the state as a whole) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateError {
    pub line: usize,
    pub problem: String,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "master state: {}", self.problem)
        } else {
            write!(f, "master state line {}: {}", self.line, self.problem)
        }
    }
}

impl std::error::Error for StateError {}

fn err(line: usize, problem: impl Into<String>) -> StateError {
    StateError { line, problem: problem.into() }
}

/// Escape `b` so it holds no space, line break or `%` (`%XX` for those and any byte that is
/// not plain ASCII).
fn escape(b: &[u8]) -> String {
    let mut o = String::with_capacity(b.len());
    for &c in b {
        if c.is_ascii_alphanumeric() || b"/._-+:@,=~[]".contains(&c) {
            o.push(c as char);
        } else {
            o.push_str(&format!("%{c:02X}"));
        }
    }
    o
}

fn unescape(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut o = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            o.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            o.push(b[i]);
            i += 1;
        }
    }
    Some(o)
}

fn path_text(p: &Path) -> String {
    escape(p.as_os_str().as_bytes())
}

/// `register`, `http`, `worker:<id>`, `gateway:<group>:<id>:<fds>`.
fn kind_text(k: Kind) -> String {
    match k {
        Kind::Register => "register".into(),
        Kind::Http => "http".into(),
        Kind::Worker { id } => format!("worker:{id}"),
        Kind::Gateway { group, id, fds } => format!("gateway:{group}:{id}:{fds}"),
    }
}

fn parse_kind(s: &str) -> Option<Kind> {
    let mut parts = s.split(':');
    let kind = match parts.next()? {
        "register" => Kind::Register,
        "http" => Kind::Http,
        "worker" => Kind::Worker { id: parts.next()?.parse().ok()? },
        "gateway" => Kind::Gateway {
            group: parts.next()?.parse().ok()?,
            id: parts.next()?.parse().ok()?,
            fds: parts.next()?.parse().ok()?,
        },
        _ => return None,
    };
    parts.next().is_none().then_some(kind)
}

fn opt<T: fmt::Display>(v: Option<T>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

impl MasterState {
    /// The text that goes into `ENV`.
    pub fn encode(&self) -> String {
        let mut o = format!("format {FORMAT}\ncontinue {}\n", self.next.word());
        o += &format!("from {}\n", escape(self.from.as_bytes()));
        o += &format!("conf {}\nexe {}\n", path_text(&self.conf), path_text(&self.exe));
        o += &format!("stats {}\npid_file {}\n", path_text(&self.stats), path_text(&self.pid_file));
        o += &format!("daemon {}\n", self.daemon as u8);
        o += &format!("log {}\n", self.child_log.as_deref().map_or("-".into(), path_text));
        o += &format!("generation {}\n", self.generation);
        let listener = |name: &str, l: &Listener| format!("{name} {} {}\n", l.fd, escape(l.addr.as_bytes()));
        if let Some(l) = &self.register {
            o += &listener("register", l);
        }
        for l in &self.public {
            o += &listener("public", l);
        }
        for i in &self.inner {
            o +=
                &format!("inner {} {} {} {}\n", i.tcp, i.unix, escape(i.addr.as_bytes()), path_text(&i.path));
        }
        if let Some(l) = &self.http {
            o += &listener("http", l);
        }
        o += "free";
        for slot in &self.free_slots {
            o += &format!(" {slot}");
        }
        o += "\n";
        for p in &self.procs {
            o += &format!(
                "proc {} {} {} {} {} {} {} {}\n",
                kind_text(p.kind),
                p.slot,
                opt(p.pid),
                p.generation,
                p.age_ms,
                p.quick_deaths,
                p.retiring as u8,
                opt(p.deadline_ms)
            );
        }
        o
    }

    /// Read a state written by `encode` (of this format version).
    pub fn decode(text: &str) -> Result<MasterState, StateError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let (n, first) = lines.next().ok_or_else(|| err(0, "empty"))?;
        match first.strip_prefix("format ") {
            Some(v) => match v.trim().parse::<u32>() {
                Ok(FORMAT) => {}
                Ok(other) => {
                    return Err(err(n, format!("format {other}, this binary reads format {FORMAT}")));
                }
                Err(_) => return Err(err(n, format!("bad format version {v:?}"))),
            },
            None => return Err(err(n, format!("not a master state (it starts with {first:?})"))),
        }
        let mut b = Builder::default();
        for (n, line) in lines {
            if line.is_empty() {
                continue;
            }
            b.line(n, line)?;
        }
        let s = b.finish()?;
        s.validate().map_err(|p| err(0, p))?;
        Ok(s)
    }

    /// Consistency the format alone does not give: slots, pids and listener indexes.
    fn validate(&self) -> Result<(), String> {
        let mut slots = std::collections::HashSet::new();
        let mut pids = std::collections::HashSet::new();
        for p in &self.procs {
            let what = kind_text(p.kind);
            if p.slot == 0 {
                return Err(format!("proc {what}: slot 0 is the master's"));
            }
            if !slots.insert(p.slot) {
                return Err(format!("proc {what}: slot {} used twice", p.slot));
            }
            if let Some(pid) = p.pid
                && !pids.insert(pid)
            {
                return Err(format!("proc {what}: pid {pid} listed twice"));
            }
            match p.kind {
                Kind::Gateway { group, fds, .. } if group >= self.public.len() || fds >= self.inner.len() => {
                    return Err(format!("proc {what}: no such gateway listener"));
                }
                Kind::Register if self.register.is_none() => {
                    return Err(format!("proc {what}: no register listener"));
                }
                Kind::Http if self.http.is_none() => return Err(format!("proc {what}: no http listener")),
                _ => {}
            }
        }
        for s in &self.free_slots {
            if *s == 0 || !slots.insert(*s) {
                return Err(format!("free slot {s} is the master's, in use or listed twice"));
            }
        }
        Ok(())
    }

    /// Every listening fd, named for messages.
    pub fn fds(&self) -> Vec<(String, RawFd)> {
        let mut v = Vec::new();
        if let Some(l) = &self.register {
            v.push(("register".to_string(), l.fd));
        }
        for (i, l) in self.public.iter().enumerate() {
            v.push((format!("public[{i}]"), l.fd));
        }
        for (i, l) in self.inner.iter().enumerate() {
            v.push((format!("inner_tcp[{i}]"), l.tcp));
            v.push((format!("inner_unix[{i}]"), l.unix));
        }
        if let Some(l) = &self.http {
            v.push(("http".to_string(), l.fd));
        }
        v
    }

    /// Does the state fit `cfg` (the configuration as the new binary reads it)? The same
    /// processes, listeners on the same addresses, the same run files. A change there takes
    /// a `restart`.
    pub fn check_against(&self, cfg: &Config) -> Result<(), String> {
        let restart = "; use restart to apply it";
        let want = listeners_of(cfg);
        let mut have = Vec::new();
        if let Some(l) = &self.register {
            have.push(("register.listen".to_string(), l.addr.clone()));
        }
        for (i, l) in self.public.iter().enumerate() {
            have.push((format!("gateway[{i}].listen"), l.addr.clone()));
        }
        for i in &self.inner {
            have.push(("inner port".to_string(), format!("{} {}", i.addr, i.path.display())));
        }
        if let Some(l) = &self.http {
            have.push(("http.listen".to_string(), l.addr.clone()));
        }
        if want != have {
            let differ = want.iter().zip(have.iter()).find(|(w, h)| w != h);
            let detail = match differ {
                Some((w, h)) => format!("{} {} (running: {} {})", w.0, w.1, h.0, h.1),
                None => format!("{} listeners (running: {})", want.len(), have.len()),
            };
            return Err(format!("the configuration's listeners changed: {detail}{restart}"));
        }
        let mut want: Vec<Kind> = process_kinds(cfg).0;
        let mut have: Vec<Kind> = self.procs.iter().filter(|p| !p.retiring).map(|p| p.kind).collect();
        want.sort_by_key(|k| kind_text(*k));
        have.sort_by_key(|k| kind_text(*k));
        if want != have {
            return Err(format!(
                "the configuration's processes changed: {} (running: {}){restart}",
                census(&want),
                census(&have)
            ));
        }
        for (what, path, ours) in
            [("run_dir", &self.stats, cfg.stats_path()), ("pid_file", &self.pid_file, cfg.pid_file.clone())]
        {
            if *path != ours {
                return Err(format!(
                    "{what} changed: {} (running: {}){restart}",
                    ours.display(),
                    path.display()
                ));
            }
        }
        Ok(())
    }
}

/// `1 register, 2 gateways, 4 business workers, 0 http` for messages.
fn census(kinds: &[Kind]) -> String {
    let count = |f: fn(&Kind) -> bool| kinds.iter().filter(|k| f(k)).count();
    format!(
        "{} register, {} gateways, {} business workers, {} http",
        count(|k| matches!(k, Kind::Register)),
        count(|k| matches!(k, Kind::Gateway { .. })),
        count(|k| matches!(k, Kind::Worker { .. })),
        count(|k| matches!(k, Kind::Http)),
    )
}

/// The addresses of the listeners `cfg` asks for (as the master binds them).
#[derive(Default)]
pub struct Addresses {
    pub register: Option<String>,
    pub public: Vec<String>,
    /// Per gateway process, its inner TCP address.
    pub inner: Vec<String>,
    pub http: Option<String>,
}

pub fn addresses(cfg: &Config) -> Addresses {
    let mut a = Addresses::default();
    if cfg.machine_type != MachineType::Worker {
        a.register = cfg.register.as_ref().map(|r| r.listen.to_string());
        for g in &cfg.gateways {
            a.public.push(g.listen.to_string());
            for id in 0..g.count {
                let addr = std::net::SocketAddr::new(std::net::IpAddr::V4(cfg.lan_ip), g.start_port + id);
                a.inner.push(addr.to_string());
            }
        }
    }
    a.http = cfg.http.as_ref().map(|h| h.listen.to_string());
    a
}

/// The listeners `cfg` asks for, as `check_against` compares them: (what, address).
fn listeners_of(cfg: &Config) -> Vec<(String, String)> {
    let a = addresses(cfg);
    let mut v = Vec::new();
    if let Some(r) = a.register {
        v.push(("register.listen".to_string(), r));
    }
    for (i, p) in a.public.into_iter().enumerate() {
        v.push((format!("gateway[{i}].listen"), p));
    }
    let ports = cfg.gateways.iter().flat_map(|g| (0..g.count).map(move |id| g.start_port + id));
    for (addr, port) in a.inner.into_iter().zip(ports) {
        v.push(("inner port".to_string(), format!("{addr} {}", cfg.inner_socket_path(port).display())));
    }
    if let Some(h) = a.http {
        v.push(("http.listen".to_string(), h));
    }
    v
}

/// Collects the records of a state, each key once (lists in order).
#[derive(Default)]
struct Builder {
    next: Option<Continue>,
    from: Option<String>,
    conf: Option<PathBuf>,
    exe: Option<PathBuf>,
    stats: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    daemon: Option<bool>,
    child_log: Option<Option<PathBuf>>,
    generation: Option<u64>,
    register: Option<Listener>,
    public: Vec<Listener>,
    inner: Vec<Inner>,
    http: Option<Listener>,
    free_slots: Option<Vec<usize>>,
    procs: Vec<ProcState>,
}

/// The fields of one line, read in order; each read names what it expected.
struct Fields<'a> {
    n: usize,
    key: &'a str,
    it: std::str::SplitAsciiWhitespace<'a>,
}

impl<'a> Fields<'a> {
    fn next(&mut self, what: &str) -> Result<&'a str, StateError> {
        self.it.next().ok_or_else(|| err(self.n, format!("{}: {what} missing", self.key)))
    }

    fn bad(&self, what: &str, v: &str, want: &str) -> StateError {
        err(self.n, format!("{}: bad {what} {v:?}: expected {want}", self.key))
    }

    fn number<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, StateError> {
        let v = self.next(what)?;
        v.parse().map_err(|_| self.bad(what, v, "a non-negative integer"))
    }

    fn fd(&mut self, what: &str) -> Result<RawFd, StateError> {
        let v = self.next(what)?;
        v.parse().ok().filter(|fd: &RawFd| *fd > 2).ok_or_else(|| self.bad(what, v, "an fd number above 2"))
    }

    fn maybe<T: std::str::FromStr>(&mut self, what: &str) -> Result<Option<T>, StateError> {
        let v = self.next(what)?;
        if v == "-" {
            return Ok(None);
        }
        v.parse().map(Some).map_err(|_| self.bad(what, v, "a non-negative integer or -"))
    }

    fn flag(&mut self, what: &str) -> Result<bool, StateError> {
        match self.next(what)? {
            "0" => Ok(false),
            "1" => Ok(true),
            v => Err(self.bad(what, v, "0 or 1")),
        }
    }

    fn bytes(&mut self, what: &str) -> Result<Vec<u8>, StateError> {
        let v = self.next(what)?;
        unescape(v).ok_or_else(|| self.bad(what, v, "escaped text (%XX)"))
    }

    fn text(&mut self, what: &str) -> Result<String, StateError> {
        let b = self.bytes(what)?;
        String::from_utf8(b).map_err(|_| err(self.n, format!("{}: {what} is not UTF-8", self.key)))
    }

    fn path(&mut self, what: &str) -> Result<PathBuf, StateError> {
        Ok(PathBuf::from(OsStr::from_bytes(&self.bytes(what)?)))
    }

    fn end(mut self) -> Result<(), StateError> {
        match self.it.next() {
            Some(extra) => Err(err(self.n, format!("{}: unexpected {extra:?}", self.key))),
            None => Ok(()),
        }
    }
}

/// Set a key that appears once.
fn once<T>(slot: &mut Option<T>, v: T, n: usize, key: &str) -> Result<(), StateError> {
    if slot.is_some() {
        return Err(err(n, format!("{key} given twice")));
    }
    *slot = Some(v);
    Ok(())
}

impl Builder {
    fn line(&mut self, n: usize, line: &str) -> Result<(), StateError> {
        let mut it = line.split_ascii_whitespace();
        let key = it.next().unwrap_or("");
        let mut f = Fields { n, key, it };
        match key {
            "continue" => {
                let v = f.next("step")?;
                let step = match v {
                    "register" => Continue::Register,
                    _ => return Err(f.bad("step", v, "register")),
                };
                once(&mut self.next, step, n, key)?;
            }
            "from" => once(&mut self.from, f.text("version")?, n, key)?,
            "conf" => once(&mut self.conf, f.path("path")?, n, key)?,
            "exe" => once(&mut self.exe, f.path("path")?, n, key)?,
            "stats" => once(&mut self.stats, f.path("path")?, n, key)?,
            "pid_file" => once(&mut self.pid_file, f.path("path")?, n, key)?,
            "daemon" => once(&mut self.daemon, f.flag("flag")?, n, key)?,
            "log" => {
                let v = if f.it.clone().next() == Some("-") {
                    f.next("path")?;
                    None
                } else {
                    Some(f.path("path")?)
                };
                once(&mut self.child_log, v, n, key)?;
            }
            "generation" => once(&mut self.generation, f.number("generation")?, n, key)?,
            "register" | "public" | "http" => {
                let l = Listener { fd: f.fd("fd")?, addr: f.text("address")? };
                match key {
                    "register" => once(&mut self.register, l, n, key)?,
                    "http" => once(&mut self.http, l, n, key)?,
                    _ => self.public.push(l),
                }
            }
            "inner" => {
                let (tcp, unix) = (f.fd("tcp fd")?, f.fd("unix fd")?);
                let (addr, path) = (f.text("address")?, f.path("path")?);
                self.inner.push(Inner { tcp, unix, addr, path });
            }
            "free" => {
                let mut slots = Vec::new();
                while f.it.clone().next().is_some() {
                    slots.push(f.number("slot")?);
                }
                once(&mut self.free_slots, slots, n, key)?;
            }
            "proc" => {
                let v = f.next("kind")?;
                let kind = parse_kind(v).ok_or_else(|| {
                    f.bad("kind", v, "register, http, worker:<id> or gateway:<group>:<id>:<fds>")
                })?;
                let p = ProcState {
                    kind,
                    slot: f.number("slot")?,
                    pid: f.maybe("pid")?.filter(|p| *p != 0),
                    generation: f.number("generation")?,
                    age_ms: f.number("age")?,
                    quick_deaths: f.number("quick deaths")?,
                    retiring: f.flag("retiring")?,
                    deadline_ms: f.maybe("deadline")?,
                };
                self.procs.push(p);
            }
            "format" => return Err(err(n, "format given twice")),
            other => return Err(err(n, format!("unknown record {other:?}"))),
        }
        f.end()
    }

    fn finish(self) -> Result<MasterState, StateError> {
        let missing = |what: &str| err(0, format!("`{what}` missing"));
        Ok(MasterState {
            next: self.next.ok_or_else(|| missing("continue"))?,
            from: self.from.ok_or_else(|| missing("from"))?,
            conf: self.conf.ok_or_else(|| missing("conf"))?,
            exe: self.exe.ok_or_else(|| missing("exe"))?,
            stats: self.stats.ok_or_else(|| missing("stats"))?,
            pid_file: self.pid_file.ok_or_else(|| missing("pid_file"))?,
            daemon: self.daemon.ok_or_else(|| missing("daemon"))?,
            child_log: self.child_log.ok_or_else(|| missing("log"))?,
            generation: self.generation.ok_or_else(|| missing("generation"))?,
            register: self.register,
            public: self.public,
            inner: self.inner,
            http: self.http,
            free_slots: self.free_slots.ok_or_else(|| missing("free"))?,
            procs: self.procs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> MasterState {
        MasterState {
            next: Continue::Register,
            from: "0.1.0 (build 7)".into(),
            conf: PathBuf::from("/srv/gw app/conf/master.toml"),
            exe: PathBuf::from("/srv/gw/current/gatewayworker"),
            stats: PathBuf::from("/srv/gw/run/gatewayworker.stats"),
            pid_file: PathBuf::from("/srv/gw/run/gatewayworker.pid"),
            daemon: true,
            child_log: Some(PathBuf::from(OsStr::from_bytes(b"/srv/gw/run/100%\nlog\xff"))),
            generation: 2,
            register: Some(Listener { fd: 5, addr: "0.0.0.0:1236".into() }),
            public: vec![Listener { fd: 6, addr: "0.0.0.0:7272".into() }],
            inner: vec![
                Inner { tcp: 7, unix: 8, addr: "127.0.0.1:2300".into(), path: "/r/gateway-2300.sock".into() },
                Inner {
                    tcp: 9,
                    unix: 10,
                    addr: "127.0.0.1:2301".into(),
                    path: "/r/gateway-2301.sock".into(),
                },
            ],
            http: Some(Listener { fd: 11, addr: "[::1]:8080".into() }),
            free_slots: vec![9, 8, 7],
            procs: vec![
                proc(Kind::Register, 1, Some(100)),
                proc(Kind::Gateway { group: 0, id: 0, fds: 0 }, 2, Some(101)),
                ProcState {
                    retiring: true,
                    deadline_ms: Some(39_000),
                    ..proc(Kind::Gateway { group: 0, id: 1, fds: 1 }, 3, Some(102))
                },
                proc(Kind::Gateway { group: 0, id: 1, fds: 1 }, 6, Some(106)),
                ProcState { generation: 2, quick_deaths: 3, ..proc(Kind::Worker { id: 0 }, 4, None) },
                proc(Kind::Http, 5, Some(104)),
            ],
        }
    }

    fn proc(kind: Kind, slot: usize, pid: Option<u32>) -> ProcState {
        ProcState {
            kind,
            slot,
            pid,
            generation: 0,
            age_ms: 1234,
            quick_deaths: 0,
            retiring: false,
            deadline_ms: None,
        }
    }

    #[test]
    fn what_the_old_master_writes_the_new_one_reads_back() {
        let s = sample();
        let text = s.encode();
        assert!(text.lines().all(|l| !l.ends_with(' ')), "{text}");
        assert_eq!(MasterState::decode(&text), Ok(s.clone()));
        // An environment variable holds no NUL; the values hold no line break of their own.
        assert!(!text.contains('\0'));
        assert_eq!(text.lines().filter(|l| l.starts_with("log ")).count(), 1, "{text}");
        let bare = MasterState {
            register: None,
            http: None,
            public: vec![],
            inner: vec![],
            child_log: None,
            free_slots: vec![],
            procs: vec![proc(Kind::Worker { id: 0 }, 1, Some(7))],
            ..s
        };
        assert_eq!(MasterState::decode(&bare.encode()), Ok(bare.clone()));
        assert_eq!(bare.fds(), vec![]);
        assert_eq!(sample().fds().len(), 1 + 1 + 4 + 1);
    }

    /// `sample()` encoded, with line `key ...` replaced by `with` (`None`: removed).
    fn edited(key: &str, with: Option<&str>) -> String {
        let text = sample().encode();
        let mut out = String::new();
        let mut done = false;
        for l in text.lines() {
            if !done && l.split(' ').next() == Some(key) {
                done = true;
                if let Some(w) = with {
                    out += w;
                    out.push('\n');
                }
                continue;
            }
            out += l;
            out.push('\n');
        }
        assert!(done, "no {key} line");
        out
    }

    fn error(text: &str) -> String {
        MasterState::decode(text).unwrap_err().to_string()
    }

    #[test]
    fn a_malformed_state_is_an_error_that_names_what_is_wrong() {
        assert_eq!(error(""), "master state: empty");
        assert!(error("PATH=/bin\n").contains("not a master state"), "{}", error("PATH=/bin"));
        let e = error(&edited("format", Some("format 2")));
        assert_eq!(e, "master state line 1: format 2, this binary reads format 1");
        assert!(error(&edited("format", Some("format two"))).contains("bad format version"));
        let e = error(&edited("conf", None));
        assert_eq!(e, "master state: `conf` missing");
        let e = error(&edited("generation", Some("generation -1")));
        assert!(e.contains("generation: bad generation \"-1\""), "{e}");
        let e = error(&edited("register", Some("register 1 0.0.0.0:1236")));
        assert!(e.contains("register: bad fd \"1\": expected an fd number above 2"), "{e}");
        let e = error(&edited("register", Some("register 5")));
        assert!(e.contains("register: address missing"), "{e}");
        let e = error(&edited("daemon", Some("daemon yes")));
        assert!(e.contains("daemon: bad flag \"yes\": expected 0 or 1"), "{e}");
        let e = error(&edited("proc", Some("proc gatway:0:0:0 2 101 0 1 0 0 -")));
        assert!(e.contains("proc: bad kind \"gatway:0:0:0\""), "{e}");
        let e = error(&edited("proc", Some("proc register 1 x 0 1 0 0 -")));
        assert!(e.contains("proc: bad pid \"x\": expected a non-negative integer or -"), "{e}");
        let e = error(&edited("proc", Some("proc register 1 100 0 1 0 0")));
        assert!(e.contains("proc: deadline missing"), "{e}");
        let e = error(&edited("proc", Some("proc register 1 100 0 1 0 0 - extra")));
        assert!(e.contains("proc: unexpected \"extra\""), "{e}");
        let e = error(&edited("exe", Some("exe /bin/%ZZ")));
        assert!(e.contains("exe: bad path \"/bin/%ZZ\""), "{e}");
        let e = error(&edited("from", Some("from 0.1.0\nfrom 0.2.0")));
        assert!(e.contains("line 4: from given twice"), "{e}");
        let e = error(&edited("free", Some("free 9 8 7\nsurprise 1")));
        assert!(e.contains("unknown record \"surprise\""), "{e}");
        // Consistency.
        let e = error(&edited("proc", Some("proc register 2 100 0 1 0 0 -")));
        assert_eq!(e, "master state: proc gateway:0:0:0: slot 2 used twice");
        let e = error(&edited("proc", Some("proc register 0 100 0 1 0 0 -")));
        assert!(e.contains("slot 0 is the master's"), "{e}");
        let e = error(&edited("proc", Some("proc register 1 101 0 1 0 0 -")));
        assert!(e.contains("pid 101 listed twice"), "{e}");
        let e = error(&edited("proc", Some("proc gateway:1:0:0 1 100 0 1 0 0 -")));
        assert!(e.contains("no such gateway listener"), "{e}");
        let e = error(&edited("free", Some("free 9 8 1")));
        assert!(e.contains("free slot 1"), "{e}");
        let e = error(&edited("register", None));
        assert!(e.contains("proc register: no register listener"), "{e}");
    }

    const CONF: &str = r#"
run_dir = "/srv/gw/run"
[register]
listen = "text://127.0.0.1:1236"
[[gateway]]
listen = "websocket://0.0.0.0:7272"
count = 2
start_port = 2300
[worker]
count = 1
"#;

    fn config(text: &str) -> Config {
        Config::from_text(Path::new("/srv/gw/conf/t.toml"), text).unwrap()
    }

    /// The state a master started from `CONF` writes (one worker, one lingering old
    /// gateway from an earlier upgrade).
    fn running(cfg: &Config) -> MasterState {
        let a = addresses(cfg);
        let inner = |i: usize, port: u16| Inner {
            tcp: 7 + 2 * i as RawFd,
            unix: 8 + 2 * i as RawFd,
            addr: a.inner[i].clone(),
            path: cfg.inner_socket_path(port),
        };
        MasterState {
            stats: cfg.stats_path(),
            pid_file: cfg.pid_file.clone(),
            register: Some(Listener { fd: 5, addr: a.register.clone().unwrap() }),
            public: vec![Listener { fd: 6, addr: a.public[0].clone() }],
            inner: vec![inner(0, 2300), inner(1, 2301)],
            http: None,
            procs: vec![
                proc(Kind::Register, 1, Some(100)),
                proc(Kind::Gateway { group: 0, id: 0, fds: 0 }, 2, Some(101)),
                ProcState { retiring: true, ..proc(Kind::Gateway { group: 0, id: 1, fds: 1 }, 3, Some(102)) },
                proc(Kind::Gateway { group: 0, id: 1, fds: 1 }, 6, Some(106)),
                proc(Kind::Worker { id: 0 }, 4, Some(103)),
            ],
            free_slots: vec![5],
            ..sample()
        }
    }

    #[test]
    fn the_state_fits_the_configuration_it_was_started_with() {
        let cfg = config(CONF);
        let s = running(&cfg);
        assert_eq!(s.check_against(&cfg), Ok(()));
        assert_eq!(MasterState::decode(&s.encode()).unwrap().check_against(&cfg), Ok(()));
    }

    #[test]
    fn a_changed_configuration_takes_a_restart() {
        let s = running(&config(CONF));
        let check = |text: &str| s.check_against(&config(text)).unwrap_err();
        let e = check(&CONF.replace("0.0.0.0:7272", "0.0.0.0:7373"));
        assert!(e.contains("listeners changed: gateway[0].listen 0.0.0.0:7373 (running:"), "{e}");
        assert!(e.ends_with("use restart to apply it"), "{e}");
        let e = check(&CONF.replace("count = 2", "count = 3"));
        assert!(e.contains("listeners changed"), "{e}");
        let e = check(&CONF.replace("[worker]\ncount = 1", "[worker]\ncount = 2"));
        assert!(e.contains("processes changed: 1 register, 2 gateways, 2 business workers, 0 http (running: 1 register, 2 gateways, 1 business workers, 0 http)"), "{e}");
        let e = check(&CONF.replace("/srv/gw/run", "/srv/gw/run2"));
        assert!(e.contains("listeners changed") || e.contains("run_dir changed"), "{e}");
        let e = check(&format!("pid_file = \"/tmp/x.pid\"\n{CONF}"));
        assert!(e.contains("pid_file changed: /tmp/x.pid"), "{e}");
        let e = check(&format!("{CONF}[http]\nlisten = \"http://127.0.0.1:8080\"\n"));
        assert!(e.contains("listeners changed"), "{e}");
    }

    #[test]
    fn escaping_round_trips_every_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let e = escape(&all);
        assert!(!e.contains(' ') && !e.contains('\n'));
        assert_eq!(unescape(&e), Some(all));
        assert_eq!(unescape("%4"), None);
        assert_eq!(unescape("%G0"), None);
    }
}

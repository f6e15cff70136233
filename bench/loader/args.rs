//! The command line: `gw-bench MODE URL [options]`.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

use crate::codec::{PAYLOAD_HEAD, Proto};

pub const USAGE: &str = "\
usage: gw-bench MODE URL [options]
       gw-bench summary FILE.jsonl [--base LABEL] [--fields F1,F2,..]

modes:
  echo       N connections; each sends --rate msgs/s on a fixed schedule (open loop), or one
             message in flight with --closed; every reply is matched to its message
  broadcast  N receivers + 1 publisher sending --rate msgs/s in total; the server must deliver
             each message to every receiver
  storm      --conns connects in total, at most --inflight handshakes at a time
  idle       open and hold --conns connections for --hold seconds (0 = until SIGINT)
  flood      N connections sending --size-byte messages as fast as the sockets take them for
             --duration s, never reading the replies (a hostile client)
  probe      one connection, one message, wait for the echo (--no-echo: handshake only);
             exit status 0 when it worked, 1 otherwise
  summary    medians per label of the JSON lines in FILE and their ratio to --base

URL: ws://HOST:PORT/path  wss://HOST:PORT/path  text://HOST:PORT  frame://HOST:PORT

options:
  --conns N          connections (echo 100, broadcast 1000 receivers, storm 10000, idle 1000)
  --rate R           echo: msgs/s per connection (default 100); broadcast: msgs/s in total (10)
  --closed           echo: closed loop, one message in flight per connection
  --size B           payload bytes, printable ASCII (default 32, at least 26)
  --binary           send binary WebSocket frames instead of text
  --duration S       measured window in seconds (default 6)
  --warmup S         seconds of load before the window (default 1)
  --drain S          seconds to wait for outstanding replies after the window (default 3)
  --tick-us T        open loop: scheduled send times are rounded up to a grid of T µs, so
                     the sends of one tick leave together (default 100; 0 = exact spacing,
                     one wake-up per send)
  --inflight N       connects/handshakes in flight at once (default 256)
  --timeout S        connect + handshake deadline per connection (default 10; probe 2)
  --hold S           idle: seconds to hold the connections (default 0 = until SIGINT)
  --close-after      storm: close each connection once its handshake is done
  --sources LIST     bind outgoing sockets round-robin to these source addresses:
                     127.0.0.1,127.0.0.2 or 127.0.0.1-127.0.0.8
  --insecure         wss: accept any server certificate
  --ca FILE          wss: trust the PEM certificate(s) in FILE
  --server-pid P,..  measure CPU (and RSS) of these processes and all their descendants
                     over the measured window
  --ready-file PATH  idle: create PATH once every connection is up
  --label NAME       copied into the JSON line (e.g. the target's name)
  --rep N            copied into the JSON line (repetition number)
  --json             print exactly one JSON line of results on stdout at the end
  --quiet            no progress lines on stderr
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Broadcast,
    Storm,
    Idle,
    Probe,
    Flood,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Broadcast => "broadcast",
            Mode::Storm => "storm",
            Mode::Idle => "idle",
            Mode::Probe => "probe",
            Mode::Flood => "flood",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Target {
    pub url: String,
    pub proto: Proto,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub mode: Mode,
    pub target: Target,
    pub conns: usize,
    pub rate: f64,
    pub closed: bool,
    pub size: usize,
    pub binary: bool,
    pub duration: f64,
    pub warmup: f64,
    pub drain: f64,
    pub inflight: usize,
    pub timeout: f64,
    pub hold: f64,
    pub tick_us: u64,
    pub close_after: bool,
    pub no_echo: bool,
    pub sources: Vec<Ipv4Addr>,
    pub insecure: bool,
    pub ca: Option<String>,
    pub server_pids: Vec<u32>,
    pub ready_file: Option<String>,
    pub label: Option<String>,
    pub rep: Option<u32>,
    pub json: bool,
    pub quiet: bool,
}

pub fn parse_target(url: &str) -> Result<Target, String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("URL {url:?} has no scheme"))?;
    let (proto, tls) = match scheme {
        "ws" => (Proto::Ws, false),
        "wss" => (Proto::Ws, true),
        "text" => (Proto::Text, false),
        "frame" => (Proto::Frame, false),
        _ => {
            return Err(format!("unsupported scheme {scheme:?}: use ws, wss, text or frame"));
        }
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = hostport.rsplit_once(':').ok_or_else(|| format!("URL {url:?} needs HOST:PORT"))?;
    let port: u16 = port.parse().map_err(|_| format!("bad port in {url:?}"))?;
    let addr = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| format!("{host} has no IPv4 address"))?;
    Ok(Target {
        url: url.to_string(),
        proto,
        tls,
        host: host.to_string(),
        port,
        path: path.to_string(),
        addr,
    })
}

/// `a,b,c` and/or ranges `127.0.0.1-127.0.0.8`.
pub fn parse_sources(list: &str) -> Result<Vec<Ipv4Addr>, String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let ip = |s: &str| s.parse::<Ipv4Addr>().map_err(|_| format!("bad source address {s:?}"));
        match item.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (u32::from(ip(a)?), u32::from(ip(b)?));
                if b < a || b - a > 65_535 {
                    return Err(format!("bad source range {item:?}"));
                }
                out.extend((a..=b).map(Ipv4Addr::from));
            }
            None => out.push(ip(item)?),
        }
    }
    Ok(out)
}

fn number<T: std::str::FromStr>(flag: &str, v: Option<String>) -> Result<T, String> {
    let v = v.ok_or_else(|| format!("{flag} needs a value"))?;
    v.parse().map_err(|_| format!("{flag}: bad value {v:?}"))
}

pub fn parse(args: Vec<String>) -> Result<Options, String> {
    let mut it = args.into_iter();
    let mode = match it.next().as_deref() {
        Some("echo") => Mode::Echo,
        Some("broadcast") => Mode::Broadcast,
        Some("storm") => Mode::Storm,
        Some("idle") => Mode::Idle,
        Some("probe") => Mode::Probe,
        Some("flood") => Mode::Flood,
        Some(m) => return Err(format!("unknown mode {m:?}")),
        None => return Err("missing mode".into()),
    };
    let target = parse_target(&it.next().ok_or("missing URL")?)?;
    let mut o = Options {
        mode,
        target,
        conns: match mode {
            Mode::Echo => 100,
            Mode::Flood => 4,
            Mode::Broadcast | Mode::Idle => 1000,
            Mode::Storm => 10_000,
            Mode::Probe => 1,
        },
        rate: if mode == Mode::Broadcast { 10.0 } else { 100.0 },
        closed: false,
        size: 32,
        binary: false,
        duration: 6.0,
        warmup: 1.0,
        drain: 3.0,
        inflight: 256,
        timeout: if mode == Mode::Probe { 2.0 } else { 10.0 },
        hold: 0.0,
        tick_us: 100,
        close_after: false,
        no_echo: false,
        sources: Vec::new(),
        insecure: false,
        ca: None,
        server_pids: Vec::new(),
        ready_file: None,
        label: None,
        rep: None,
        json: false,
        quiet: false,
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--conns" => o.conns = number(&flag, it.next())?,
            "--rate" => o.rate = number(&flag, it.next())?,
            "--closed" => o.closed = true,
            "--size" => o.size = number(&flag, it.next())?,
            "--binary" => o.binary = true,
            "--duration" => o.duration = number(&flag, it.next())?,
            "--warmup" => o.warmup = number(&flag, it.next())?,
            "--drain" => o.drain = number(&flag, it.next())?,
            "--inflight" => o.inflight = number(&flag, it.next())?,
            "--timeout" => o.timeout = number(&flag, it.next())?,
            "--hold" => o.hold = number(&flag, it.next())?,
            "--tick-us" => o.tick_us = number(&flag, it.next())?,
            "--close-after" => o.close_after = true,
            "--no-echo" => o.no_echo = true,
            "--sources" => o.sources = parse_sources(&it.next().ok_or("--sources needs a value")?)?,
            "--insecure" => o.insecure = true,
            "--ca" => o.ca = Some(it.next().ok_or("--ca needs a file")?),
            "--server-pid" => {
                let v = it.next().ok_or("--server-pid needs a value")?;
                for p in v.split(',').filter(|s| !s.is_empty()) {
                    o.server_pids.push(p.trim().parse().map_err(|_| format!("--server-pid: bad pid {p:?}"))?);
                }
            }
            "--ready-file" => o.ready_file = Some(it.next().ok_or("--ready-file needs a path")?),
            "--label" => o.label = Some(it.next().ok_or("--label needs a value")?),
            "--rep" => o.rep = Some(number(&flag, it.next())?),
            "--json" => o.json = true,
            "--quiet" => o.quiet = true,
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if o.size < PAYLOAD_HEAD {
        return Err(format!("--size must be at least {PAYLOAD_HEAD} (sequence number + timestamp)"));
    }
    if o.conns == 0 || o.inflight == 0 {
        return Err("--conns and --inflight must be at least 1".into());
    }
    if o.rate <= 0.0
        || o.rate.is_nan()
        || o.duration <= 0.0
        || o.duration.is_nan()
        || o.warmup < 0.0
        || o.drain < 0.0
        || o.timeout <= 0.0
        || o.timeout.is_nan()
    {
        return Err("--rate, --duration, --timeout must be > 0; --warmup, --drain >= 0".into());
    }
    if o.binary && o.target.proto != Proto::Ws {
        return Err("--binary only applies to ws:// and wss://".into());
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = parse_target("ws://127.0.0.1:7272/chat").unwrap();
        assert_eq!((t.proto, t.tls, t.port, t.path.as_str()), (Proto::Ws, false, 7272, "/chat"));
        let t = parse_target("wss://localhost:443").unwrap();
        assert_eq!((t.proto, t.tls, t.path.as_str()), (Proto::Ws, true, "/"));
        assert_eq!(parse_target("frame://127.0.0.1:9").unwrap().proto, Proto::Frame);
        assert!(parse_target("http://127.0.0.1:80").is_err());
        assert!(parse_target("ws://127.0.0.1").is_err());
    }

    #[test]
    fn flood_mode_defaults_to_four_connections() {
        let o =
            parse(vec!["flood".into(), "ws://127.0.0.1:9/".into(), "--duration".into(), "2".into()]).unwrap();
        assert_eq!((o.mode, o.conns, o.duration), (Mode::Flood, 4, 2.0));
        assert_eq!(o.mode.name(), "flood");
    }

    #[test]
    fn sources() {
        let s = parse_sources("127.0.0.1-127.0.0.3,127.0.1.1").unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s[2], Ipv4Addr::new(127, 0, 0, 3));
        assert!(parse_sources("127.0.0.5-127.0.0.1").is_err());
    }
}

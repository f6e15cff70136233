//! The process logger: one line per event, `YYYY-mm-dd HH:MM:SS role[id] pid:N LEVEL message`,
//! to the terminal (foreground) or appended to the log file (daemon). The file is reopened on
//! reload so logrotate can move it away.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use log::{Level, LevelFilter, Log, Metadata, Record};

enum Sink {
    Stderr,
    File { path: PathBuf, file: Option<File> },
}

struct Logger {
    tag: String,
    sink: Mutex<Sink>,
}

static LOGGER: OnceLock<Logger> = OnceLock::new();

fn open(path: &PathBuf) -> Option<File> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    OpenOptions::new().create(true).append(true).open(path).ok()
}

/// Install the logger. `tag` names the process (`master`, `gateway[1]`, ...); `file` is the
/// log file, `None` for the terminal. `GW_LOG` (error, warn, info, debug) sets the level.
pub fn init(tag: &str, file: Option<PathBuf>) {
    let sink = match file {
        Some(path) => {
            let file = open(&path);
            Sink::File { path, file }
        }
        None => Sink::Stderr,
    };
    let logger = Logger { tag: tag.to_string(), sink: Mutex::new(sink) };
    if LOGGER.set(logger).is_ok()
        && let Some(l) = LOGGER.get()
    {
        let _ = log::set_logger(l);
    }
    let level = match std::env::var("GW_LOG").as_deref() {
        Ok("error") => LevelFilter::Error,
        Ok("warn") => LevelFilter::Warn,
        Ok("debug") => LevelFilter::Debug,
        Ok("trace") => LevelFilter::Trace,
        _ => LevelFilter::Info,
    };
    log::set_max_level(level);
}

/// Reopen the log file (after logrotate moved it).
pub fn reopen() {
    if let Some(l) = LOGGER.get()
        && let Ok(mut sink) = l.sink.lock()
        && let Sink::File { path, file } = &mut *sink
    {
        *file = open(path);
    }
}

impl Log for Logger {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        };
        let line =
            format!("{} {} pid:{} {level} {}\n", timestamp(), self.tag, std::process::id(), record.args());
        let Ok(mut sink) = self.sink.lock() else { return };
        match &mut *sink {
            Sink::Stderr => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
            Sink::File { file: Some(f), .. } => {
                let _ = f.write_all(line.as_bytes());
            }
            Sink::File { file: None, .. } => {}
        }
    }

    fn flush(&self) {}
}

/// Local time as `YYYY-mm-dd HH:MM:SS`.
pub fn timestamp() -> String {
    format_time(std::time::SystemTime::now())
}

/// Format a time as local `YYYY-mm-dd HH:MM:SS`.
pub fn format_time(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as libc::time_t).unwrap_or(0);
    // SAFETY: localtime_r writes into the tm we own.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// At most one log line per kind of event and period, so hostile input cannot flood the
/// log; the lines held back are counted and reported with the next one.
pub struct Throttle {
    period: std::time::Duration,
    seen: std::collections::HashMap<&'static str, (std::time::Instant, u64)>,
}

impl Throttle {
    pub fn new(period: std::time::Duration) -> Throttle {
        Throttle { period, seen: std::collections::HashMap::new() }
    }

    /// `Some(note)` when a line of kind `key` may be logged now; `note` says how many
    /// were held back since the last one ("" when none).
    pub fn check(&mut self, key: &'static str) -> Option<String> {
        let now = std::time::Instant::now();
        let e = self.seen.entry(key).or_insert((now - self.period - self.period, 0));
        if now.duration_since(e.0) < self.period {
            e.1 += 1;
            return None;
        }
        let held = std::mem::take(&mut e.1);
        e.0 = now;
        Some(if held > 0 {
            format!(" ({held} more like it in the last {:?})", self.period)
        } else {
            String::new()
        })
    }
}

/// Remembers which peers were already logged for a kind of refusal (bounded memory), so a
/// misconfigured peer retrying every second is logged once.
pub struct OncePerPeer {
    seen: std::collections::HashSet<String>,
}

impl OncePerPeer {
    const CAP: usize = 4096;

    pub fn new() -> OncePerPeer {
        OncePerPeer { seen: std::collections::HashSet::new() }
    }

    /// True the first time `peer` (its address without the port) is refused for `why`.
    pub fn first(&mut self, why: &str, peer: &str) -> bool {
        let host = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
        if self.seen.len() >= Self::CAP {
            self.seen.clear();
        }
        self.seen.insert(format!("{why} {host}"))
    }
}

impl Default for OncePerPeer {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_lets_one_line_per_period_through() {
        let mut t = Throttle::new(std::time::Duration::from_secs(3600));
        assert_eq!(t.check("a"), Some(String::new()));
        assert_eq!(t.check("a"), None);
        assert_eq!(t.check("a"), None);
        assert_eq!(t.check("b"), Some(String::new()), "kinds are independent");
        let mut t = Throttle::new(std::time::Duration::ZERO);
        assert!(t.check("a").is_some() && t.check("a").is_some());
    }

    #[test]
    fn once_per_peer_ignores_the_port() {
        let mut o = OncePerPeer::new();
        assert!(o.first("secret", "10.0.0.1:5000"));
        assert!(!o.first("secret", "10.0.0.1:5001"));
        assert!(o.first("secret", "10.0.0.2:5000"));
        assert!(o.first("auth", "10.0.0.1:5000"), "kinds are independent");
    }
}

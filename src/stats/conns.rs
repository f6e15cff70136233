//! `connections`: one line per connection of every process. The command signals each
//! process (SIGIO); each writes its list to `run_dir/connections-<pid>` (temp file + rename)
//! and the command prints them, workerman style, then removes the files.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{Role, Shm, table};
use crate::config::Config;

/// One connection as a process describes it.
#[derive(Clone, Debug, Default)]
pub struct ConnInfo {
    pub id: u64,
    pub protocol: &'static str,
    pub transport: &'static str,
    /// Bytes received and not processed yet / queued and not written yet (user space).
    pub recv_q: usize,
    pub send_q: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub state: &'static str,
    pub local: String,
    pub remote: String,
}

fn file_for(run_dir: &Path, pid: u32) -> PathBuf {
    run_dir.join(format!("connections-{pid}"))
}

fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n}B") } else { format!("{v:.1}{}", UNITS[u]) }
}

fn cut(s: &str, w: usize) -> String {
    if s.chars().count() > w {
        format!("{}..", s.chars().take(w - 2).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Called by a process on SIGIO: write its lines.
pub fn dump(run_dir: &Path, name: &str, conns: &[ConnInfo]) -> io::Result<()> {
    let pid = std::process::id();
    let mut out = String::new();
    for c in conns {
        let v6 = c.remote.starts_with('[');
        let _ = writeln!(
            out,
            "{:<8} {:<15} {:<9} {:<7} {:<15} {:<6} {:<6} {:<12} {:<12} {:<12} {:<13} {:<14} {:<22} {}",
            pid,
            cut(name, 15),
            c.id,
            c.transport,
            cut(c.protocol, 15),
            if v6 { 0 } else { 1 },
            if v6 { 1 } else { 0 },
            size(c.recv_q as u64),
            size(c.send_q as u64),
            size(c.bytes_read),
            size(c.bytes_written),
            c.state,
            c.local,
            c.remote
        );
    }
    let path = file_for(run_dir, pid);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, out)?;
    std::fs::rename(tmp, path)
}

/// The `connections` command: ask every process, wait for their lists (up to 2 s), format.
pub fn collect(cfg: &Config, _master: u32) -> io::Result<String> {
    let shm = Shm::open(&cfg.stats_path(), false)?;
    let snap = table::snapshot(&shm);
    let pids: Vec<u32> = snap.rows.iter().filter(|r| r.role != Role::Master).map(|r| r.pid).collect();
    for &pid in &pids {
        let _ = std::fs::remove_file(file_for(&cfg.run_dir, pid));
        crate::reactor::signals::send(pid, libc::SIGIO);
    }
    let until = Instant::now() + Duration::from_secs(2);
    let mut body = String::new();
    let mut missing = Vec::new();
    for &pid in &pids {
        let path = file_for(&cfg.run_dir, pid);
        while !path.exists() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        match std::fs::read_to_string(&path) {
            Ok(s) => body.push_str(&s),
            Err(_) => missing.push(pid),
        }
        let _ = std::fs::remove_file(&path);
    }
    let line = "-".repeat(69);
    let mut out = format!("{line} GATEWAYWORKER CONNECTION STATUS {line}\n");
    let _ = writeln!(
        out,
        "{:<8} {:<15} {:<9} {:<7} {:<15} {:<6} {:<6} {:<12} {:<12} {:<12} {:<13} {:<14} {:<22} Foreign Address",
        "PID",
        "Worker",
        "CID",
        "Trans",
        "Protocol",
        "ipv4",
        "ipv6",
        "Recv-Q",
        "Send-Q",
        "Bytes-R",
        "Bytes-W",
        "Status",
        "Local Address"
    );
    out.push_str(&body);
    for pid in missing {
        let _ = writeln!(out, "{pid:<8} (no answer: busy)");
    }
    Ok(out)
}

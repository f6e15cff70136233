//! The `status` output: a snapshot of every slot, rendered as workerman's table (global
//! section, per-process lines, summary) or as JSON.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{Operation, Role, Shm, Slot, State, pid_alive, unix_millis};

/// One process as seen by `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub pid: u32,
    pub role: Role,
    pub id: u32,
    pub name: String,
    pub listen: String,
    pub state: State,
    pub memory: u64,
    pub connections: u64,
    pub send_fail: u64,
    pub timers: u64,
    pub total_request: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub limits: [u64; 9],
    /// No heartbeat for 3 s: the process is alive but not turning its loop.
    pub busy: bool,
}

/// Per name: (exit count, last exit status) summed over all slots ever used by it.
pub type Exits = Vec<(String, u64, u64)>;

/// Everything `status` prints.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub master_pid: u32,
    pub started: u64,
    pub daemon: bool,
    pub reloads: u64,
    /// An empty secret is allowed on a non-loopback listener.
    pub empty_secret_exposed: bool,
    pub rows: Vec<Row>,
    pub exits: Exits,
}

/// What the master says about itself: the version it runs, what it is doing, upgrades.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MasterInfo {
    /// The running master's version label.
    pub version: String,
    pub operation: Operation,
    pub upgrades: u64,
    pub upgrades_failed: u64,
    /// Why the last upgrade was refused or failed, or what it did.
    pub last_upgrade: String,
}

/// Read the master's part of the header.
pub fn master_info(shm: &Shm) -> MasterInfo {
    let h = shm.header();
    let (upgrades, upgrades_failed) = h.upgrade_counts();
    MasterInfo {
        version: h.label(),
        operation: h.operation(),
        upgrades,
        upgrades_failed,
        last_upgrade: h.upgrade_message(),
    }
}

/// Read the region. Slots of exited processes, or whose pid is gone, are left out of `rows`
/// (a dead process is never shown as alive).
pub fn snapshot(shm: &Shm) -> Snapshot {
    let h = shm.header();
    let now = unix_millis();
    let mut rows = Vec::new();
    let mut exits: Exits = Vec::new();
    for slot in shm.slots() {
        let role = slot.role();
        if role == Role::Empty {
            continue;
        }
        let name = slot.name();
        count_exits(&mut exits, &name, slot);
        if let Some(r) = live_row(slot, role, name, now) {
            rows.push(r);
        }
    }
    Snapshot {
        master_pid: h.master_pid.load(Ordering::Relaxed),
        started: h.started.load(Ordering::Relaxed),
        daemon: h.daemon.load(Ordering::Relaxed) != 0,
        reloads: h.reloads.load(Ordering::Relaxed),
        empty_secret_exposed: h.empty_secret_exposed.load(Ordering::Relaxed) != 0,
        rows,
        exits,
    }
}

/// Add the exits of `slot` to those of its name.
fn count_exits(exits: &mut Exits, name: &str, slot: &Slot) {
    let ec = Slot::get(&slot.exit_count);
    let last = if ec > 0 { Slot::get(&slot.last_exit_status) } else { 0 };
    match exits.iter_mut().find(|(n, _, _)| n == name) {
        Some(e) => {
            e.1 += ec;
            if ec > 0 {
                e.2 = last;
            }
        }
        None => exits.push((name.to_string(), ec, last)),
    }
}

/// The row of a slot whose process is alive and has not exited.
fn live_row(slot: &Slot, role: Role, name: String, now: u64) -> Option<Row> {
    let pid = slot.pid.load(Ordering::Relaxed);
    let state = match slot.state() {
        Some(State::Exited) | None => return None,
        Some(s) => s,
    };
    if !pid_alive(pid) {
        return None;
    }
    let hb = Slot::get(&slot.heartbeat);
    Some(Row {
        pid,
        role,
        id: slot.id.load(Ordering::Relaxed),
        name,
        listen: slot.listen(),
        state,
        memory: Slot::get(&slot.memory),
        connections: Slot::get(&slot.connections),
        send_fail: Slot::get(&slot.send_fail),
        timers: Slot::get(&slot.timers),
        total_request: Slot::get(&slot.total_request),
        bytes_read: Slot::get(&slot.bytes_read),
        bytes_written: Slot::get(&slot.bytes_written),
        limits: [
            Slot::get(&slot.limit_conn),
            Slot::get(&slot.limit_size),
            Slot::get(&slot.limit_handshake),
            Slot::get(&slot.limit_idle),
            Slot::get(&slot.limit_slow),
            Slot::get(&slot.limit_index),
            Slot::get(&slot.bad_input),
            Slot::get(&slot.limit_rate),
            Slot::get(&slot.limit_backpressure),
        ],
        busy: hb != 0 && now.saturating_sub(hb) > 3000,
    })
}

/// Printed by `status` (table and JSON) while an empty secret is allowed off loopback.
pub const EXPOSED_WARNING: &str = "WARNING: an empty secret is allowed on a non-loopback listener (allow_empty_secret = true): anyone who can reach it is trusted; see the start log and docs/security.md";

/// The warnings of a snapshot, one line each.
pub fn warnings(s: &Snapshot) -> Vec<&'static str> {
    if s.empty_secret_exposed { vec![EXPOSED_WARNING] } else { Vec::new() }
}

fn mem(bytes: u64) -> String {
    format!("{:.2}M", bytes as f64 / (1024.0 * 1024.0))
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "-".into())
}

/// The workerman-style table. `qps` gives requests/s per pid from a second sample.
pub fn render(s: &Snapshot, m: &MasterInfo, conf: &str, qps: &dyn Fn(u32) -> Option<u64>) -> String {
    let mut o = String::new();
    let line = "-".repeat(46);
    render_global(&mut o, s, m, conf, &line);
    render_processes(&mut o, s, qps, &line);
    o
}

/// The GLOBAL STATUS part: version, start time, load, exit counts.
fn render_global(o: &mut String, s: &Snapshot, m: &MasterInfo, conf: &str, line: &str) {
    let _ = writeln!(o, "{line}GLOBAL STATUS{line}");
    let version = if m.version.is_empty() { "-" } else { &m.version };
    let _ = writeln!(o, "gatewayworker version:{version:<10} conf:{conf}");
    let start = std::time::UNIX_EPOCH + std::time::Duration::from_secs(s.started);
    let up = unix_millis() / 1000 - s.started.min(unix_millis() / 1000);
    let _ = writeln!(
        o,
        "start time:{}   run {} days {} hours   load average: {}",
        crate::logging::format_time(start),
        up / 86400,
        (up % 86400) / 3600,
        load_average()
    );
    let names: Vec<&str> = s.exits.iter().map(|(n, _, _)| n.as_str()).collect();
    let _ = writeln!(
        o,
        "{} workers       {} processes       mode: {}       reloads: {}",
        names.len().saturating_sub(1),
        s.rows.iter().filter(|r| r.role != Role::Master).count(),
        if s.daemon { "daemon" } else { "foreground" },
        s.reloads
    );
    if m.upgrades + m.upgrades_failed > 0 || m.operation != Operation::Idle {
        let _ = writeln!(o, "upgrades: {}       failed upgrades: {}", m.upgrades, m.upgrades_failed);
    }
    if m.operation != Operation::Idle {
        let _ = writeln!(o, "in progress: {}", m.operation.name());
    }
    if m.upgrades_failed > 0 || m.upgrades > 0 {
        let _ = writeln!(o, "last upgrade: {}", m.last_upgrade);
    }
    for warning in warnings(s) {
        let _ = writeln!(o, "{warning}");
    }
    let w = names.iter().map(|n| n.len()).max().unwrap_or(4).max(11);
    let _ = writeln!(o, "{:<w$} {:<16} exit_count", "worker_name", "exit_status");
    for (name, count, status) in s.exits.iter().filter(|(n, _, _)| n != "master") {
        let _ = writeln!(o, "{name:<w$} {status:<16} {count}");
    }
}

/// The PROCESS STATUS part: one row per process and the summary.
fn render_processes(o: &mut String, s: &Snapshot, qps: &dyn Fn(u32) -> Option<u64>, line: &str) {
    let _ = writeln!(o, "{line}PROCESS STATUS{line}");
    let lw = s.rows.iter().map(|r| r.listen.len()).max().unwrap_or(9).max(9);
    let nw = s.rows.iter().map(|r| r.name.len()).max().unwrap_or(11).max(11);
    let _ = writeln!(
        o,
        "pid\tmemory  {:<lw$} {:<nw$} connections send_fail timers  total_request qps    status",
        "listening", "worker_name"
    );
    let mut sum = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    for r in s.rows.iter().filter(|r| r.role != Role::Master) {
        let q = qps(r.pid);
        let status = if r.busy { "[busy]".to_string() } else { format!("[{}]", r.state.name()) };
        let _ = writeln!(
            o,
            "{}\t{:<7} {:<lw$} {:<nw$} {:<11} {:<9} {:<7} {:<13} {:<6} {status}",
            r.pid,
            mem(r.memory),
            r.listen,
            r.name,
            r.connections,
            r.send_fail,
            r.timers,
            r.total_request,
            q.map_or("-".into(), |v| v.to_string()),
        );
        sum.0 += r.memory;
        sum.1 += r.connections;
        sum.2 += r.send_fail;
        sum.3 += r.timers;
        sum.4 += r.total_request;
        sum.5 += q.unwrap_or(0);
    }
    let _ = writeln!(o, "{line}PROCESS STATUS{line}");
    let _ = writeln!(
        o,
        "Summary\t{:<7} {:<lw$} {:<nw$} {:<11} {:<9} {:<7} {:<13} {:<6} [Summary]",
        mem(sum.0),
        "-",
        "-",
        sum.1,
        sum.2,
        sum.3,
        sum.4,
        sum.5
    );
}

/// The snapshot as one JSON object (for scripts and tests).
pub fn render_json(s: &Snapshot) -> String {
    json_value(s).to_string()
}

/// `status --json`: the snapshot and what the master says about itself (`version`: the
/// running master's version label).
pub fn render_status_json(s: &Snapshot, m: &MasterInfo) -> String {
    let mut v = json_value(s);
    if let Some(o) = v.as_object_mut() {
        o.insert("version".into(), m.version.clone().into());
        o.insert("operation".into(), m.operation.name().into());
        o.insert("upgrades".into(), m.upgrades.into());
        o.insert("upgrades_failed".into(), m.upgrades_failed.into());
        o.insert("last_upgrade".into(), m.last_upgrade.clone().into());
    }
    v.to_string()
}

fn json_value(s: &Snapshot) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = s
        .rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "pid": r.pid, "role": r.role.name(), "id": r.id, "name": r.name, "listen": r.listen,
                "state": r.state.name(), "memory": r.memory, "connections": r.connections,
                "send_fail": r.send_fail, "timers": r.timers, "total_request": r.total_request,
                "bytes_read": r.bytes_read, "bytes_written": r.bytes_written, "busy": r.busy,
                "limits": {
                    "connections": r.limits[0], "size": r.limits[1], "handshake_timeout": r.limits[2],
                    "idle_timeout": r.limits[3], "slow_client": r.limits[4], "uid_group": r.limits[5],
                    "bad_input": r.limits[6], "throttled": r.limits[7], "backpressure": r.limits[8],
                },
            })
        })
        .collect();
    let exits: Vec<serde_json::Value> = s
        .exits
        .iter()
        .map(|(n, c, st)| serde_json::json!({"name": n, "exit_count": c, "last_exit_status": st}))
        .collect();
    serde_json::json!({
        "master_pid": s.master_pid, "started": s.started, "daemon": s.daemon, "reloads": s.reloads,
        "processes": rows, "exits": exits, "warnings": warnings(s),
    })
}

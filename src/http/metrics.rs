//! `GET /metrics`: the Prometheus text exposition (format 0.0.4) of every process of this
//! machine, read from the shared-memory statistics, plus the client connections of each local
//! gateway (asked from the gateways themselves: the statistics count every socket of a
//! process, links included).

use std::fmt::Write as _;
use std::net::SocketAddrV4;

use super::api::Step;
use crate::api::transport::Pkt;
use crate::config::{Config, MachineType};
use crate::stats::table::{Row, Snapshot};
use crate::stats::unix_millis;
use crate::wire::packet::{cmd, flag};

/// Names of the limit counters, in `Row::limits` order.
pub const LIMITS: [&str; 9] = [
    "connections",
    "size",
    "handshake_timeout",
    "idle_timeout",
    "slow_client",
    "uid_group",
    "bad_input",
    "throttled",
    "backpressure",
];

/// The gateways of this machine: inner address (as announced to the registers), group name,
/// process id.
pub fn local_gateways(cfg: &Config) -> Vec<(SocketAddrV4, String, u16)> {
    if cfg.machine_type == MachineType::Worker {
        return Vec::new();
    }
    let mut out = Vec::new();
    for g in &cfg.gateways {
        for id in 0..g.count {
            out.push((SocketAddrV4::new(cfg.advertise_ip, g.start_port + id), g.name.clone(), id));
        }
    }
    out
}

/// The query `/metrics` sends to the local gateways: their client count
/// (`CMD_GET_CLIENT_COUNT_BY_GROUP` with no group, as `getAllClientIdCount` does).
pub fn client_count_query(gws: &[(SocketAddrV4, String, u16)]) -> Step {
    let p = Pkt::new(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, flag::BODY_IS_SCALAR, b"", b"");
    Step::Query { gateways: gws.iter().map(|g| g.0).collect(), packet: p.to_vec() }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn labels(r: &Row) -> String {
    format!("role=\"{}\",name=\"{}\",id=\"{}\",pid=\"{}\"", r.role.name(), escape(&r.name), r.id, r.pid)
}

/// A family's header; by the Prometheus naming rule a name ending in `_total` is a counter,
/// any other a gauge.
fn family(o: &mut String, name: &str, help: &str) {
    let kind = if name.ends_with("_total") { "counter" } else { "gauge" };
    let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

type Family = (&'static str, &'static str, fn(&Row) -> u64);

/// Families with one sample per process: name, help, value.
const PER_PROCESS: [Family; 10] = [
    (
        "gatewayworker_process_connections",
        "Open sockets of a process: clients, links between processes, register links.",
        |r| r.connections,
    ),
    ("gatewayworker_messages_received_total", "Complete messages and packets decoded by a process.", |r| {
        r.total_request
    }),
    ("gatewayworker_received_bytes_total", "Bytes read from sockets.", |r| r.bytes_read),
    ("gatewayworker_sent_bytes_total", "Bytes written to sockets.", |r| r.bytes_written),
    (
        "gatewayworker_send_failures_total",
        "Messages dropped because a send buffer was full or the peer gone.",
        |r| r.send_fail,
    ),
    ("gatewayworker_timers", "Armed timers of a process.", |r| r.timers),
    (
        "gatewayworker_throttled_total",
        "Clients found over their rate (max_messages_per_second, max_bytes_per_second): paused or closed.",
        |r| r.limits[7],
    ),
    (
        "gatewayworker_backpressure_pauses_total",
        "Clients paused because their worker link was above its high-water mark.",
        |r| r.limits[8],
    ),
    ("gatewayworker_resident_memory_bytes", "Resident memory of a process.", |r| r.memory),
    ("gatewayworker_process_busy", "1 when a process has not turned its event loop for 3 seconds.", |r| {
        u64::from(r.busy)
    }),
];

/// One family with a sample per process.
fn per_process(o: &mut String, s: &Snapshot, name: &str, help: &str, v: fn(&Row) -> u64) {
    family(o, name, help);
    for r in &s.rows {
        let _ = writeln!(o, "{name}{{{}}} {}", labels(r), v(r));
    }
}

/// One family with a sample per process name, from the exit records (name, count, status).
fn per_name(o: &mut String, s: &Snapshot, name: &str, help: &str, v: fn(&(String, u64, u64)) -> u64) {
    family(o, name, help);
    for e in &s.exits {
        let _ = writeln!(o, "{name}{{name=\"{}\"}} {}", escape(&e.0), v(e));
    }
}

/// Render everything. `clients`: (gateway name, id, client connections) of the gateways
/// that answered.
pub fn render(s: &Snapshot, clients: &[(String, u16, u64)]) -> String {
    let mut o = String::new();
    family(&mut o, "gatewayworker_connections", "Client connections held by a gateway process.");
    for (name, id, n) in clients {
        let pid = s.rows.iter().find(|r| r.role.name() == "gateway" && r.name == *name && r.id == *id as u32);
        let pid = pid.map_or(0, |r| r.pid);
        let _ = writeln!(
            o,
            "gatewayworker_connections{{role=\"gateway\",name=\"{}\",id=\"{id}\",pid=\"{pid}\"}} {n}",
            escape(name)
        );
    }
    for (name, help, value) in PER_PROCESS {
        per_process(&mut o, s, name, help, value);
    }
    family(
        &mut o,
        "gatewayworker_limit_hits_total",
        "Limits hit: connections refused or paused, oversize input, timeouts, slow clients, uid/group refusals, bad input.",
    );
    for r in &s.rows {
        for (i, limit) in LIMITS.iter().enumerate() {
            let _ = writeln!(
                o,
                "gatewayworker_limit_hits_total{{{},limit=\"{limit}\"}} {}",
                labels(r),
                r.limits[i]
            );
        }
    }
    family(
        &mut o,
        "gatewayworker_process_state",
        "1 for the life-cycle state a process is in (starting, idle = serving, draining).",
    );
    for r in &s.rows {
        let _ = writeln!(o, "gatewayworker_process_state{{{},state=\"{}\"}} 1", labels(r), r.state.name());
    }
    global(&mut o, s);
    o
}

fn global(o: &mut String, s: &Snapshot) {
    per_name(
        o,
        s,
        "gatewayworker_exits_total",
        "Process exits (crashes, reloads, stops) per process name.",
        |e| e.1,
    );
    per_name(
        o,
        s,
        "gatewayworker_last_exit_status",
        "Raw wait status of the last exit per process name.",
        |e| e.2,
    );
    let uptime = (unix_millis() / 1000).saturating_sub(s.started);
    let scalars = [
        ("gatewayworker_reloads_total", "Completed reloads of the business workers.", s.reloads),
        ("gatewayworker_start_time_seconds", "Unix time the master started.", s.started),
        ("gatewayworker_uptime_seconds", "Seconds since the master started.", uptime),
        (
            "gatewayworker_empty_secret_exposed",
            "1 when a register or inner port listens off loopback with an empty secret (allow_empty_secret).",
            u64::from(s.empty_secret_exposed),
        ),
    ];
    for (name, help, value) in scalars {
        family(o, name, help);
        let _ = writeln!(o, "{name} {value}");
    }
    family(o, "gatewayworker_processes", "Live processes per role.");
    for role in ["master", "register", "gateway", "worker", "http"] {
        let n = s.rows.iter().filter(|r| r.role.name() == role).count();
        let _ = writeln!(o, "gatewayworker_processes{{role=\"{role}\"}} {n}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Role, State};

    #[test]
    fn every_sample_has_its_family_and_labels_are_escaped() {
        let row = Row {
            pid: 42,
            role: Role::Gateway,
            id: 1,
            name: "Gw\"0".into(),
            listen: String::new(),
            state: State::Ready,
            memory: 1,
            connections: 3,
            send_fail: 0,
            timers: 2,
            total_request: 9,
            bytes_read: 5,
            bytes_written: 6,
            limits: [0, 1, 2, 3, 4, 5, 6, 7, 8],
            busy: false,
        };
        let s = Snapshot {
            master_pid: 1,
            started: 0,
            daemon: false,
            reloads: 2,
            rows: vec![row],
            exits: vec![("Gw\"0".into(), 1, 9)],
            empty_secret_exposed: true,
        };
        let text = render(&s, &[("Gw\"0".into(), 1, 7)]);
        assert!(
            text.contains(
                "gatewayworker_connections{role=\"gateway\",name=\"Gw\\\"0\",id=\"1\",pid=\"42\"} 7\n"
            ),
            "{text}"
        );
        assert!(text.contains("gatewayworker_limit_hits_total{role=\"gateway\",name=\"Gw\\\"0\",id=\"1\",pid=\"42\",limit=\"slow_client\"} 4\n"));
        assert!(text.contains("gatewayworker_reloads_total 2\n"));
        assert!(text.contains(
            "gatewayworker_throttled_total{role=\"gateway\",name=\"Gw\\\"0\",id=\"1\",pid=\"42\"} 7\n"
        ));
        assert!(text.contains("limit=\"backpressure\"} 8\n"), "{text}");
        assert!(text.contains("gatewayworker_empty_secret_exposed 1\n"));
        let mut declared = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_string());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(declared.last().is_some_and(|d| d == name), "{name} outside its family");
            }
        }
    }
}

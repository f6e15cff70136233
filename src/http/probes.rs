//! `GET /healthz` (the master and every process it should run are alive and turning their
//! loops) and `GET /readyz` (every gateway listens and a business worker is linked to every
//! gateway), for load balancers and Kubernetes probes. Both read the shared-memory statistics.

use crate::config::{Config, MachineType};
use crate::stats::table::Snapshot;
use crate::stats::{Role, State, pid_alive};

/// How many processes of each role this machine runs.
fn expected(cfg: &Config) -> Vec<(Role, usize)> {
    let mut out = Vec::new();
    if cfg.machine_type != MachineType::Worker {
        out.push((Role::Register, 1));
        out.push((Role::Gateway, cfg.gateway_processes()));
    }
    if cfg.machine_type != MachineType::Master {
        out.push((Role::Worker, cfg.worker.as_ref().map_or(0, |w| w.count as usize)));
    }
    out
}

/// `Ok(summary)` when healthy, else the reason.
pub fn health(cfg: &Config, s: &Snapshot) -> Result<String, String> {
    if !pid_alive(s.master_pid) {
        return Err(format!("master (pid {}) is not running", s.master_pid));
    }
    if let Some(r) = s.rows.iter().find(|r| r.busy) {
        return Err(format!(
            "{} {}[{}] (pid {}) has not turned its loop for 3 s",
            r.role.name(),
            r.name,
            r.id,
            r.pid
        ));
    }
    for (role, want) in expected(cfg) {
        let alive = s.rows.iter().filter(|r| r.role == role && !exited(r.pid)).count();
        if alive < want {
            return Err(format!("{alive} of {want} {} processes alive", role.name()));
        }
    }
    Ok(format!("ok: master pid {} and {} processes alive", s.master_pid, s.rows.len().saturating_sub(1)))
}

/// `Ok(summary)` when ready to take clients, else the reason.
pub fn ready(cfg: &Config, s: &Snapshot) -> Result<String, String> {
    let serving = |role: Role| {
        s.rows.iter().filter(|r| r.role == role && r.state == State::Ready && !exited(r.pid)).count()
    };
    if cfg.machine_type != MachineType::Worker {
        let want = cfg.gateway_processes();
        let listening = serving(Role::Gateway);
        if listening < want {
            return Err(format!("{listening} of {want} gateway processes listening"));
        }
    }
    if cfg.machine_type != MachineType::Master && serving(Role::Worker) == 0 {
        return Err("no business worker is linked to every gateway yet".into());
    }
    health(cfg, s)?;
    Ok("ready: gateways listening, business workers linked".into())
}

/// True for a process that has exited but is not reaped yet (a zombie still answers
/// `kill(pid, 0)`, so the statistics reader counts it alive until the master reaps it).
fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

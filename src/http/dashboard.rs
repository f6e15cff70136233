//! `GET /`: a live dashboard page compiled into the binary (HTML, CSS and JS inline: no
//! external scripts or fonts), fed once a second from `GET /dashboard.json`: the `status`
//! table and, per process, connections and messages per second over the last minutes.

use std::collections::VecDeque;

use serde_json::{Value as Json, json};

use crate::stats::table::{Snapshot, render_json};

/// The page.
pub const PAGE: &str = include_str!("dashboard.html");

/// Samples kept (one a second: five minutes).
const KEEP: usize = 300;

/// One process in one sample.
#[derive(Clone, Debug)]
struct Point {
    pid: u32,
    label: String,
    connections: u64,
    messages: u64,
}

/// The last minutes of samples.
#[derive(Default)]
pub struct History {
    samples: VecDeque<(u64, Vec<Point>)>,
}

impl History {
    /// Record one sample (called once a second).
    pub fn sample(&mut self, s: &Snapshot, unix_ms: u64) {
        let points = s
            .rows
            .iter()
            .filter(|r| r.role.name() != "master")
            .map(|r| Point {
                pid: r.pid,
                label: format!("{} {}[{}]", r.role.name(), r.name, r.id),
                connections: r.connections,
                messages: r.total_request,
            })
            .collect();
        self.samples.push_back((unix_ms, points));
        while self.samples.len() > KEEP {
            self.samples.pop_front();
        }
    }

    /// Per process: label, connections per sample, messages per second per sample (null where
    /// the process did not exist).
    fn series(&self) -> Vec<Json> {
        let mut pids: Vec<(u32, String)> = Vec::new();
        for (_, points) in &self.samples {
            for p in points {
                if !pids.iter().any(|(pid, _)| *pid == p.pid) {
                    pids.push((p.pid, p.label.clone()));
                }
            }
        }
        pids.into_iter()
            .map(|(pid, label)| {
                let find = |i: usize| self.samples[i].1.iter().find(|p| p.pid == pid);
                let conns: Vec<Json> =
                    (0..self.samples.len()).map(|i| json!(find(i).map(|p| p.connections))).collect();
                let rate: Vec<Json> = (0..self.samples.len())
                    .map(|i| {
                        let (now, prev) = (find(i), i.checked_sub(1).and_then(find));
                        let dt = i
                            .checked_sub(1)
                            .map_or(1, |j| self.samples[i].0.saturating_sub(self.samples[j].0))
                            .max(1);
                        match (now, prev) {
                            (Some(a), Some(b)) => {
                                json!(a.messages.saturating_sub(b.messages) as f64 * 1000.0 / dt as f64)
                            }
                            _ => Json::Null,
                        }
                    })
                    .collect();
                json!({"pid": pid, "label": label, "connections": conns, "messages_per_second": rate})
            })
            .collect()
    }

    /// The JSON the page polls: the status snapshot, the sample times and the series.
    pub fn json(&self, s: &Snapshot) -> String {
        let status: Json = serde_json::from_str(&render_json(s)).unwrap_or(Json::Null);
        let times: Vec<u64> = self.samples.iter().map(|(t, _)| *t).collect();
        json!({"status": status, "times": times, "series": self.series()}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::table::Row;
    use crate::stats::{Role, State};

    fn snap(conns: u64, msgs: u64) -> Snapshot {
        let row = Row {
            pid: 7,
            role: Role::Gateway,
            id: 0,
            name: "Gw".into(),
            listen: String::new(),
            state: State::Ready,
            memory: 0,
            connections: conns,
            send_fail: 0,
            timers: 0,
            total_request: msgs,
            bytes_read: 0,
            bytes_written: 0,
            limits: [0; 9],
            busy: false,
        };
        Snapshot {
            master_pid: 1,
            started: 0,
            daemon: false,
            reloads: 0,
            rows: vec![row],
            exits: Vec::new(),
            empty_secret_exposed: false,
        }
    }

    #[test]
    fn series_hold_connections_and_rates() {
        let mut h = History::default();
        h.sample(&snap(1, 10), 1000);
        h.sample(&snap(4, 30), 2000);
        h.sample(&snap(4, 30), 3000);
        let j: Json = serde_json::from_str(&h.json(&snap(4, 30))).unwrap();
        let s = &j["series"][0];
        assert_eq!(s["label"], "gateway Gw[0]");
        assert_eq!(s["connections"], json!([1, 4, 4]));
        assert_eq!(s["messages_per_second"], json!([null, 20.0, 0.0]));
        for i in 0..400 {
            h.sample(&snap(i, i), 4000 + i * 1000);
        }
        assert_eq!(h.samples.len(), KEEP);
    }
}

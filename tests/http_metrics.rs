//! `/metrics`, `/healthz` and `/readyz` against a running cluster: a real Prometheus server
//! (Debian's `prometheus`) scrapes the listener and its query API must see the connected
//! clients; `promtool check metrics` must be clean; `/readyz` follows the business workers.

mod cluster;
mod http_client;

use std::io::Write;
use std::process::{Child, Command, Stdio};

use cluster::{Cluster, Gw, Spec, Ws, free_port, wait_for};
use http_client::{Http, start_with_http, tool, wait_ready_status};
use serde_json::Value as Json;

fn start(workers: u16) -> (Cluster, Http) {
    start_with_http(Spec::new("probe", workers, vec![Gw::new("websocket", 2)]), "", "")
}

/// A Prometheus server of our own, killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    http: Http,
}

impl Prometheus {
    fn start(bin: &std::path::Path, dir: &std::path::Path, target_port: u16) -> Prometheus {
        let conf = dir.join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: gatewayworker\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Prometheus { child, port, http: Http::new(port, "") }
    }

    /// The single value of an instant query, once Prometheus has one.
    fn query(&mut self, q: &str) -> Option<f64> {
        // Not listening yet: no answer.
        std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        let path = format!("/api/v1/query?query={}", q.replace('(', "%28").replace(')', "%29"));
        let j: Json = serde_json::from_slice(&self.http.get(&path).body).ok()?;
        j["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_the_metrics_and_sees_the_clients() {
    let (Some(prometheus), Some(promtool)) =
        (tool("prometheus", "prometheus"), tool("promtool", "prometheus"))
    else {
        return;
    };
    let (c, mut h) = start(1);
    let mut clients: Vec<Ws> = (0..3).map(|_| c.ws(0)).collect();
    for w in clients.iter_mut() {
        w.id();
    }
    let r = h.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("Content-Type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    for name in [
        "gatewayworker_process_connections",
        "gatewayworker_messages_received_total",
        "gatewayworker_limit_hits_total",
        "gatewayworker_throttled_total",
        "gatewayworker_resident_memory_bytes",
        "gatewayworker_uptime_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} missing:\n{text}");
    }
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\n{text}");

    check_grafana_dashboard(&promtool, &text, &c.dir);

    let mut p = Prometheus::start(&prometheus, &c.dir, h.port);
    wait_for("Prometheus to see 3 clients", || {
        (p.query("sum(gatewayworker_connections)") == Some(3.0)).then_some(())
    });
    clients.extend((0..2).map(|_| c.ws(0)));
    wait_for("Prometheus to see 5 clients", || {
        (p.query("sum(gatewayworker_connections)") == Some(5.0)).then_some(())
    });
    let gateways = p.query("count(gatewayworker_connections)");
    assert_eq!(gateways, Some(2.0), "one series per gateway process");
    drop(p);
    c.stop();
}

/// `docs/grafana-dashboard.json`: every query parses (as a recording rule, by promtool) and
/// every metric it names is exported.
fn check_grafana_dashboard(promtool: &std::path::Path, metrics: &str, dir: &std::path::Path) {
    let d: Json = serde_json::from_str(
        &std::fs::read_to_string(cluster::repo_file("docs/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, t) in
        d["panels"].as_array().unwrap().iter().flat_map(|p| p["targets"].as_array().unwrap()).enumerate()
    {
        let expr = t["expr"].as_str().unwrap().replace("$instance", ".*");
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("gatewayworker_"))
        {
            assert!(
                metrics.contains(&format!("# TYPE {name} ")),
                "the dashboard uses {name}, which is not exported"
            );
        }
        rules += &format!("  - record: panel_{i}\n    expr: {}\n", Json::String(expr));
    }
    let file = dir.join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = Command::new(promtool).args(["check", "rules"]).arg(&file).output().unwrap();
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn readyz_is_503_while_no_business_worker_is_linked() {
    let (c, mut h) = start(1);
    assert_eq!(h.get("/healthz").status, 200);
    let r = wait_ready_status(&mut h, 200);
    assert!(r.text().starts_with("ready"), "{}", r.text());
    // Hold the master so the worker is not respawned, and kill the only worker.
    let master = c.master_pid() as i32;
    let worker = c.pids("worker")[0] as i32;
    unsafe { libc::kill(master, libc::SIGSTOP) };
    unsafe { libc::kill(worker, libc::SIGKILL) };
    let r = wait_ready_status(&mut h, 503);
    assert!(r.text().contains("business worker"), "{}", r.text());
    assert_eq!(h.get("/healthz").status, 503, "a process is missing");
    // The master respawns it; once linked to every gateway the machine is ready again.
    unsafe { libc::kill(master, libc::SIGCONT) };
    wait_ready_status(&mut h, 200);
    assert_eq!(h.get("/healthz").status, 200);
    c.stop();
}

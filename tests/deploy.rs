//! Deploying: what `scripts/deploy.sh` relies on, on any machine (reload of a master machine,
//! the active conf link of `scripts/start.sh`, the dry run).

mod cluster;

use std::time::{Duration, Instant};

use cluster::{Cluster, Gw, Spec};

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A deploy reloads every machine; on a master machine (no business workers) there is
/// nothing to replace, so `reload` must report done at once instead of waiting for its
/// timeout and failing.
#[test]
fn reload_on_a_master_machine_is_done_at_once() {
    let mut spec = Spec::new("echo", 0, vec![Gw::new("websocket", 1)]);
    spec.machine_type = "master";
    let c = Cluster::start(spec);
    let started = Instant::now();
    let out = c.run_cli(&["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("reload done"), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(5), "reload took {:?}", started.elapsed());
    c.stop();
}

//! A flood costs the flooder, not its neighbours: four connections of the project's load
//! tool (`gw-bench flood`) send small messages as fast as they can and never read, while 100
//! well-behaved clients (`gw-bench echo`, 100 msg/s each) go through the same two gateways
//! and two business workers of the echo app. The well-behaved clients lose nothing, the
//! flooders are throttled, and the gateways' memory stays bounded.

mod cluster;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cluster::{Cluster, Gw, Spec, wait_for};
use serde_json::Value as Json;

const LOADER: &str = env!("CARGO_BIN_EXE_gw-bench");
/// Resident memory a gateway may reach under the flood (a client's send buffer is 1 MB, a
/// worker link's high-water mark 256 KiB).
const RSS_BOUND: u64 = 96 << 20;

fn loader(args: &[&str]) -> Child {
    Command::new(LOADER)
        .args(args)
        .args(["--json", "--quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The loader's JSON line, once it exited successfully.
fn result(child: Child) -> Json {
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "gw-bench failed: {stderr}\n{stdout}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("gw-bench output {stdout:?}: {e}"))
}

/// (throttled, backpressure) summed over the gateways, and the largest gateway RSS.
fn gateways(c: &Cluster) -> (u64, u64, u64) {
    let snap = c.snapshot().expect("statistics region");
    let rows = snap.rows.iter().filter(|r| r.role.name() == "gateway");
    rows.fold((0, 0, 0), |(t, b, m), r| (t + r.limits[7], b + r.limits[8], m.max(r.memory)))
}

#[test]
fn a_flood_costs_the_flooders_not_their_neighbours() {
    // A rate well above the well-behaved clients' 100 msg/s and low enough that four
    // flooders stay within what a loaded machine running debug builds handles.
    let limits = "[gateway.limits]\nmax_messages_per_second = 1000";
    let c = Cluster::start(Spec::new("echo", 2, vec![Gw::new("websocket", 2).with(limits)]));
    let url = format!("ws://127.0.0.1:{}/", c.spec.gateways[0].port);
    let flood = loader(&["flood", &url, "--conns", "4", "--size", "32", "--duration", "30"]);
    wait_for("the flooders to be throttled", || (gateways(&c).0 > 0).then_some(()));
    let echo = loader(&[
        "echo",
        &url,
        "--conns",
        "100",
        "--rate",
        "100",
        "--size",
        "32",
        "--warmup",
        "0",
        "--duration",
        "10",
        "--drain",
        "10",
    ]);
    let mut echo = Some(echo);
    let mut peak = 0;
    let until = Instant::now() + Duration::from_secs(60);
    let good = loop {
        peak = peak.max(gateways(&c).2);
        if echo.as_mut().unwrap().try_wait().unwrap().is_some() {
            break result(echo.take().unwrap());
        }
        assert!(Instant::now() < until, "gw-bench echo did not finish");
        std::thread::sleep(Duration::from_millis(200));
    };
    let (throttled, backpressure, rss) = gateways(&c);
    peak = peak.max(rss);
    // Stop the flood early (SIGINT): it still reports what it sent.
    unsafe { libc::kill(flood.id() as i32, libc::SIGINT) };

    let flooded = result(flood);
    eprintln!(
        "well-behaved: sent {} received {} p50 {} p99 {} max {} µs; flooders sent {}; throttled {throttled}, backpressure {backpressure}, peak gateway RSS {peak}",
        good["sent"],
        good["received"],
        good["lat_us"]["p50"],
        good["lat_us"]["p99"],
        good["lat_us"]["max"],
        flooded["sent"]
    );
    let sent = good["sent"].as_u64().unwrap();
    assert_eq!(good["connected"], 100, "{good}");
    assert!(sent >= 100 * 100 * 9, "the schedule ran: {good}");
    assert_eq!(good["received"].as_u64().unwrap(), sent, "the well-behaved clients lost messages: {good}");
    assert_eq!(good["errors"], 0, "{good}");
    assert!(throttled > 0, "flooders throttled: {throttled} (backpressure pauses {backpressure})");
    // The same counter as `status --json` shows it.
    let status: Json = serde_json::from_slice(&c.run_cli(&["status", "--json"]).stdout).unwrap();
    let gws = status["processes"].as_array().unwrap().iter().filter(|p| p["role"] == "gateway");
    let shown: u64 = gws.map(|p| p["limits"]["throttled"].as_u64().unwrap()).sum();
    assert!(shown >= throttled, "status --json limits.throttled {shown}");
    assert!(peak > 0 && peak < RSS_BOUND, "gateway RSS {peak} bytes");
    c.stop();
}

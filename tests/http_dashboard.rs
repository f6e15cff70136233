//! The dashboard in headless Chromium (Debian's `chromium`): the rendered table lists every
//! process of the machine and the connections plot moves while clients connect. A screenshot
//! is written to `target/tmp/http-dashboard.png`.

mod cluster;
mod http_client;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use cluster::{Gw, Spec, Ws, wait_for};
use http_client::{start_with_http, tool};
use serde_json::Value as Json;

/// Run headless Chromium on `url` with extra `args`; returns stdout.
fn chromium(bin: &Path, profile: &Path, url: &str, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
            "--virtual-time-budget=3000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "chromium failed: {:?}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Values of attribute `attr` in `dom`, in order.
fn attrs(dom: &str, attr: &str) -> Vec<String> {
    let needle = format!("{attr}=\"");
    dom.match_indices(&needle)
        .map(|(i, _)| dom[i + needle.len()..].split('"').next().unwrap().to_string())
        .collect()
}

/// Sum of the last connection counts the connections plot drew for `pids`.
fn plotted_connections(dom: &str, pids: &[u32]) -> f64 {
    let plot = dom.split("id=\"plot-messages\"").next().unwrap();
    let plot = plot.split("id=\"plot-connections\"").nth(1).expect("connections plot");
    let paths: Vec<&str> = plot.split("<path").skip(1).collect();
    paths
        .iter()
        .filter(|p| {
            attrs(p, "data-pid").first().is_some_and(|pid| pids.iter().any(|g| g.to_string() == *pid))
        })
        .map(|p| attrs(p, "data-last")[0].parse::<f64>().unwrap_or(0.0))
        .sum()
}

#[test]
fn the_dashboard_lists_every_process_and_plots_connections() {
    let Some(bin) = tool("chromium", "chromium") else { return };
    let (c, mut h) = start_with_http(Spec::new("probe", 1, vec![Gw::new("websocket", 2)]), "", "");
    let port = h.port;
    let page = h.get("/").text();
    assert!(
        !page.contains("<script src") && !page.contains("https://") && !page.contains("<link"),
        "external resources"
    );
    let url = format!("http://127.0.0.1:{port}/");
    let profile = c.dir.join("chromium");

    let dom = chromium(&bin, &profile, &url, &["--dump-dom"]);
    let rows: BTreeSet<String> =
        attrs(dom.split("</tbody>").next().unwrap(), "data-pid").into_iter().collect();
    let snap = c.snapshot().unwrap();
    let pids: BTreeSet<String> = snap.rows.iter().map(|r| r.pid.to_string()).collect();
    assert_eq!(rows, pids, "the table lists every process");
    assert!(dom.contains(">http<") && dom.contains(">register<") && dom.contains(">worker<"));
    let gateways = c.pids("gateway");
    let before = plotted_connections(&dom, &gateways);

    let mut clients: Vec<Ws> = (0..6).map(|_| c.ws(0)).collect();
    for w in clients.iter_mut() {
        w.id();
    }
    // Wait until the server-side history (sampled once a second) has the new clients.
    wait_for("the history to show the clients", || {
        let j: Json = h.get("/dashboard.json").json();
        let last: f64 = j["series"]
            .as_array()?
            .iter()
            .filter(|s| gateways.iter().any(|g| s["pid"] == *g))
            .map(|s| s["connections"].as_array().and_then(|a| a.last()?.as_f64()).unwrap_or(0.0))
            .sum();
        (last >= before + 6.0).then_some(())
    });
    let dom = chromium(&bin, &profile, &url, &["--dump-dom"]);
    let after = plotted_connections(&dom, &gateways);
    assert!(after >= before + 6.0, "plot did not move: {before} -> {after}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("http-dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&bin, &profile, &url, &[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot {}", shot.display());
    eprintln!("dashboard screenshot: {}", shot.display());
    c.stop();
}

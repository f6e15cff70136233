//! gw-bench: the load generator of the benchmarks (see `bench/README.md`).
//!
//! One single-threaded process on an edge-triggered mio `Poll`; run several for more load.

/// Command line and target URLs.
mod args;
/// `broadcast` mode: one publisher, N receivers.
mod broadcast;
/// Client-side codecs: WebSocket frames and upgrade, text, frame, benchmark payloads.
mod codec;
/// `echo` mode: open loop on a schedule, or closed loop.
mod echo;
/// `flood`: N connections sending as fast as they can, never reading.
mod flood;
/// The latency histogram.
mod hist;
/// `idle` mode: hold connections.
mod idle;
/// Connections on one `Poll`: connect, TLS, upgrade, read/write, deadlines.
mod net;
/// `probe` mode: is the target answering?
mod probe;
/// What the modes share: opening connections, the measured window, JSON header.
mod run;
/// `storm` mode: a connection storm.
mod storm;
/// `summary`: medians and ratios of repeated runs.
mod summary;
/// fd limit, timerfd, `/proc` readings, clock.
mod sys;
/// rustls client configuration.
mod tls;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use args::Mode;

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("summary") {
        if let Err(e) = summary::run(argv[1..].to_vec()) {
            eprintln!("gw-bench: {e}");
            std::process::exit(2);
        }
        return;
    }
    let o = match args::parse(argv) {
        Ok(o) => o,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("gw-bench: {e}\n");
            }
            eprint!("{}", args::USAGE);
            std::process::exit(2);
        }
    };
    if let Err(e) = sys::raise_fd_limit() {
        eprintln!("gw-bench: cannot raise the fd limit: {e}");
    }
    sys::tighten_timer_slack();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            eprintln!("gw-bench: cannot install a signal handler: {e}");
        }
    }
    let tls = if o.target.tls {
        match tls::client_config(o.insecure, o.ca.as_deref()) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("gw-bench: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let net = match net::Net::new(
        o.target.clone(),
        tls,
        o.sources.clone(),
        Duration::from_secs_f64(o.timeout),
        o.binary,
    ) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("gw-bench: {e}");
            std::process::exit(2);
        }
    };
    let mut ctx = run::Ctx { o, net, clock: sys::Clock::new(), stop, started: Instant::now() };
    let result = match ctx.o.mode {
        Mode::Probe => match probe::run(&mut ctx) {
            Ok(()) => std::process::exit(0),
            Err(e) => {
                if !ctx.o.quiet {
                    eprintln!("gw-bench: probe {}: {e}", ctx.o.target.url);
                }
                std::process::exit(1);
            }
        },
        Mode::Echo => echo::run(&mut ctx),
        Mode::Broadcast => broadcast::run(&mut ctx),
        Mode::Storm => storm::run(&mut ctx),
        Mode::Idle => idle::run(&mut ctx),
        Mode::Flood => flood::run(&mut ctx),
    };
    match result {
        Ok(v) if ctx.o.json => println!("{v}"),
        Ok(v) => println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(e) => {
            eprintln!("gw-bench: {e}");
            std::process::exit(1);
        }
    }
}

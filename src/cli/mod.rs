//! The command line: `start [-d]`, `stop [-g]`, `restart [-d]`, `reload`, `upgrade`,
//! `status [-d]`, `--conf FILE`, `--help`, as workerman users know them, plus the hidden
//! entries the master uses: `child` (to exec its children), `upgrade-check` (run from a new
//! binary before an upgrade) and `master-resume` (the master re-executed by `upgrade`). The
//! CLI finds the master through the pid file.

mod daemon;
mod pidfile;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::api::AppFactory;
use crate::config::{Config, MachineType};
use crate::logging;
use crate::master::child::{ChildContract, ChildRole};
use crate::master::{self, Master, MasterState};
use crate::net::listener::Inherited;
use crate::reactor::signals::send as signal;
use crate::stats::{Operation, Shm, Stats, table};

const USAGE: &str = "Usage: gatewayworker <command> [mode] [--conf FILE]

Commands:
  start [-d]        start (in the foreground; -d: as a daemon)
  stop [-g]         stop (-g: gracefully: workers finish their events first)
  restart [-d]      stop, then start
  reload            business workers restart from the binary on disk; clients stay connected
  upgrade           every process (master, register, gateways, workers) restarts from the
                    binary on disk; clients stay connected (wss clients reconnect)
  status [-d]       live process table (-d: refresh every second; --json: machine readable)
  connections       one line per connection of every process

Options:
  --conf FILE       configuration file (default: $GW_CONF, else conf/active.toml
                    if it exists, else conf/dev.toml)
  -q                no start banner
  -h, --help        this text
";

/// Exit codes of the command line and of child processes (sysexits.h where one fits).
mod exit {
    pub const OK: i32 = 0;
    /// The command failed (details on stderr or in the log).
    pub const FAILURE: i32 = 1;
    /// No master of this configuration runs (workerman's `not run`).
    pub const NOT_RUNNING: i32 = 3;
    /// Bad command line (EX_USAGE).
    pub const USAGE: i32 = 64;
    /// Bad configuration (EX_CONFIG).
    pub const CONFIG: i32 = 78;
}

/// Parsed command line.
#[derive(Debug, Default)]
struct Args {
    command: String,
    daemon: bool,
    graceful: bool,
    json: bool,
    quiet: bool,
    conf: Option<PathBuf>,
    rest: Vec<String>,
}

fn parse(argv: &[String]) -> Result<Args, String> {
    let mut a = Args::default();
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-d" => a.daemon = true,
            "-g" => a.graceful = true,
            "-q" => a.quiet = true,
            "--json" => a.json = true,
            "-h" | "--help" => a.command = "help".into(),
            "--conf" => a.conf = Some(it.next().ok_or("--conf needs a file")?.into()),
            s if s.starts_with("--conf=") => a.conf = Some(s["--conf=".len()..].into()),
            s if a.command.is_empty() && !s.starts_with('-') => a.command = s.to_string(),
            s => a.rest.push(s.to_string()),
        }
    }
    Ok(a)
}

/// Run the command line; returns the process exit code.
pub fn main(apps: AppFactory) -> i32 {
    main_with(env!("CARGO_PKG_VERSION"), apps)
}

/// Run the command line of a build labelled `version` (at most 47 bytes are kept): the
/// running master writes its label into the statistics, `status` shows it, and `upgrade`
/// moves the machine from one build to another.
pub fn main_with(version: &'static str, apps: AppFactory) -> i32 {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().is_some_and(|a| a == "child") {
        return child(&argv[1..], apps);
    }
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n\n{USAGE}");
            return exit::USAGE;
        }
    };
    let conf = master::absolute(&default_conf(args.conf.clone()));
    match args.command.as_str() {
        "start" => start(&conf, &args, apps, version),
        "stop" => stop(&conf, args.graceful),
        "restart" => {
            let code = stop(&conf, args.graceful);
            if code != exit::OK && code != exit::NOT_RUNNING {
                return code;
            }
            start(&conf, &args, apps, version)
        }
        "reload" => reload(&conf),
        "upgrade" => upgrade(&conf),
        "upgrade-check" => upgrade_check(&conf, apps, version),
        "master-resume" => resume(&conf, version),
        "status" => status(&conf, &args),
        "connections" => connections(&conf),
        "help" => {
            print!("{USAGE}");
            exit::OK
        }
        "" => {
            eprint!("{USAGE}");
            exit::USAGE
        }
        other => {
            eprintln!("unknown command {other:?}\n\n{USAGE}");
            exit::USAGE
        }
    }
}

/// The path children and reload replacements are started from: the one this program was
/// started by when it names a file, links unresolved (a deploy switches a `current` link to
/// a new release, and `reload` then runs the new binary), else the running binary's path.
fn program_path() -> std::io::Result<PathBuf> {
    let given = std::env::args_os().next().map(PathBuf::from);
    match given.filter(|p| p.components().count() > 1 && p.is_file()) {
        Some(p) => std::path::absolute(p),
        None => std::env::current_exe(),
    }
}

/// `--conf`, else `$GW_CONF`, else `conf/active.toml` (the link a deploy makes to the
/// machine's conf) when it exists, else `conf/dev.toml`.
fn default_conf(given: Option<PathBuf>) -> PathBuf {
    given.or_else(|| std::env::var_os("GW_CONF").map(PathBuf::from)).unwrap_or_else(|| {
        let active = PathBuf::from("conf/active.toml");
        if active.exists() { active } else { PathBuf::from("conf/dev.toml") }
    })
}

fn load(conf: &Path) -> Result<Config, i32> {
    Config::load(conf).map_err(|e| {
        eprintln!("{e}");
        exit::CONFIG
    })
}

/// The master of this configuration, if it runs.
fn running_master(cfg: &Config) -> Option<u32> {
    pidfile::read(&cfg.pid_file).filter(|&pid| pidfile::is_our_master(pid))
}

/// The conf path relative to the working directory when it is below it.
fn rel(conf: &Path) -> String {
    let rel = std::env::current_dir().ok().and_then(|d| conf.strip_prefix(d).ok().map(Path::to_path_buf));
    rel.as_deref().unwrap_or(conf).display().to_string()
}

/// The config, the title and the pid of the running master; prints `not run` (exit 3)
/// when there is none.
fn running(conf: &Path) -> Result<(Config, String, u32), i32> {
    let cfg = load(conf)?;
    let title = title(conf);
    match running_master(&cfg) {
        Some(pid) => Ok((cfg, title, pid)),
        None => {
            eprintln!("{title} not run");
            Err(exit::NOT_RUNNING)
        }
    }
}

fn title(conf: &Path) -> String {
    format!("gatewayworker[{}]", rel(conf))
}

fn start(conf: &Path, args: &Args, apps: AppFactory, version: &'static str) -> i32 {
    let (cfg, title, m) = match prepare(conf, args, apps, version) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let banner = banner(&title, &cfg, &m, args.daemon, version);
    let setup =
        if args.daemon { daemonize(&cfg, &title, &banner, args) } else { foreground(&cfg, &banner, args) };
    if let Some(code) = setup {
        return code;
    }
    set_process_name("gw-master");
    log::info!("{title} start: master pid {}", std::process::id());
    let code = match m.run() {
        Ok(()) => exit::OK,
        Err(e) => {
            log::error!("master loop failed: {e}");
            exit::FAILURE
        }
    };
    pidfile::remove(&cfg.pid_file);
    log::info!("{title} has been stopped");
    code
}

/// Load the config, refuse a second master or an unknown application, bind: the config, the
/// title and the master ready to run, or the exit code.
fn prepare(
    conf: &Path,
    args: &Args,
    apps: AppFactory,
    version: &'static str,
) -> Result<(Config, String, Master), i32> {
    let cfg = load(conf)?;
    let title = title(conf);
    if let Some(pid) = running_master(&cfg) {
        eprintln!("{title} already running (master pid {pid})");
        return Err(exit::FAILURE);
    }
    if let Some(w) = cfg.worker.as_ref().filter(|_| cfg.machine_type != MachineType::Master)
        && apps(&w.app).is_none()
    {
        eprintln!(
            "config error in {}: key `worker.app`: unknown application {:?} (fix: use one of the bundled apps: chat, echo, broadcast)",
            conf.display(),
            w.app
        );
        return Err(exit::CONFIG);
    }
    let exe = program_path().map_err(|e| {
        eprintln!("cannot find this program's path: {e}");
        exit::FAILURE
    })?;
    let m = Master::new(cfg.clone(), conf.to_path_buf(), exe, args.daemon, version).map_err(|e| {
        eprintln!("{e}");
        exit::FAILURE
    })?;
    Ok((cfg, title, m))
}

/// Become a daemon. `Some(code)`: this process is the command and exits with `code` once the
/// daemon reported; `None`: this process is the daemon and goes on as the master.
fn daemonize(cfg: &Config, title: &str, banner: &str, args: &Args) -> Option<i32> {
    match daemon::detach(&cfg.stdout_file) {
        Ok(daemon::Side::Parent(Ok(()))) => {
            if !args.quiet {
                print!("{banner}");
            }
            Some(exit::OK)
        }
        Ok(daemon::Side::Parent(Err(e))) => {
            eprintln!("{title} start failed: {e}");
            Some(exit::FAILURE)
        }
        Ok(daemon::Side::Daemon(reporter)) => {
            logging::init("master", Some(cfg.log_file.clone()));
            if let Err(e) = pidfile::write(&cfg.pid_file) {
                reporter.fail(&format!("cannot write pid file {}: {e}", cfg.pid_file.display()));
                return Some(exit::FAILURE);
            }
            reporter.ok();
            None
        }
        Err(e) => {
            eprintln!("cannot become a daemon: {e}");
            Some(exit::FAILURE)
        }
    }
}

/// Stay in the foreground: log to the terminal, write the pid file, print the banner.
/// `Some(code)` when that fails.
fn foreground(cfg: &Config, banner: &str, args: &Args) -> Option<i32> {
    logging::init("master", None);
    if let Err(e) = pidfile::write(&cfg.pid_file) {
        eprintln!("cannot write pid file {}: {e}", cfg.pid_file.display());
        return Some(exit::FAILURE);
    }
    if !args.quiet {
        print!("{banner}");
    }
    None
}

fn banner(title: &str, cfg: &Config, m: &Master, daemon: bool, version: &str) -> String {
    let line = "-".repeat(45);
    let mut o = format!("{line} GATEWAYWORKER {line}\n");
    o += &format!(
        "gatewayworker/{}   conf: {}   machine: {:?}   lan_ip: {}\n",
        version,
        cfg.file.display(),
        cfg.machine_type,
        cfg.lan_ip
    );
    o += &format!("{} WORKERS {}\n", "-".repeat(48), "-".repeat(48));
    o += &format!("{:<22}{:<34}{:<12}{}\n", "worker", "listen", "count", "state");
    for (name, listen, count) in m.banner() {
        o += &format!("{name:<22}{listen:<34}{count:<12} [OK]\n");
    }
    o += &format!("{}\n", "-".repeat(105));
    if daemon {
        o += &format!("Input \"scripts/start.sh stop\" to stop. {title} start success.\n");
    } else {
        o += "Press Ctrl+C to stop. Start success.\n";
    }
    o
}

/// Send `sig` to the master and wait for it to disappear.
fn stop(conf: &Path, graceful: bool) -> i32 {
    let (cfg, title, pid) = match running(conf) {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!("{title} is stopping ...");
    signal(pid, if graceful { libc::SIGQUIT } else { libc::SIGINT });
    let limit = if graceful {
        cfg.stop_timeout + cfg.reload_timeout + Duration::from_secs(10)
    } else {
        cfg.stop_timeout + Duration::from_secs(3)
    };
    let until = Instant::now() + limit;
    while pidfile::is_our_master(pid) {
        if Instant::now() >= until {
            eprintln!("{title} stop fail");
            return exit::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{title} stop success");
    exit::OK
}

/// SIGUSR1, then wait for the master to report the reload done or aborted.
fn reload(conf: &Path) -> i32 {
    let (cfg, title, pid) = match running(conf) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let shm = Shm::open(&cfg.stats_path(), false).ok();
    if shm.as_ref().is_some_and(|s| s.header().operation() == Operation::Upgrade) {
        eprintln!("{title} reload refused: an upgrade is in progress (it replaces the business workers too)");
        return exit::FAILURE;
    }
    let before = shm.as_ref().map(|s| table::snapshot(s).reloads);
    signal(pid, libc::SIGUSR1);
    let (Some(shm), Some(before)) = (shm, before) else {
        println!("{title} reload signal sent");
        return exit::OK;
    };
    let workers = cfg.worker.as_ref().map_or(1, |w| w.count as u32);
    let until = Instant::now() + cfg.reload_timeout * 2 * workers.max(1) + Duration::from_secs(5);
    while Instant::now() < until {
        if table::snapshot(&shm).reloads > before {
            println!("{title} reload done");
            return exit::OK;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{title} reload did not complete; see the log ({})", cfg.log_file.display());
    exit::FAILURE
}

/// How long `upgrade` waits for the master: its check, then each replacement with its
/// timeout, and some slack.
fn upgrade_limit(cfg: &Config) -> Duration {
    let workers = cfg.worker.as_ref().map_or(0, |w| w.count as u32);
    let gateways = cfg.gateway_processes() as u32;
    Duration::from_secs(10)
        + cfg.reload_timeout * 2
        + Duration::from_secs(20) * gateways
        + cfg.reload_timeout * 2 * workers
        + Duration::from_secs(10)
}

/// SIGUSR2, then wait for the master to report the upgrade done, refused or failed (the
/// reason it wrote into the statistics header).
fn upgrade(conf: &Path) -> i32 {
    let (cfg, title, pid) = match running(conf) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let shm = match Shm::open(&cfg.stats_path(), false) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot read statistics {}: {e}", cfg.stats_path().display());
            return exit::FAILURE;
        }
    };
    let h = shm.header();
    let (done, failed) = h.upgrade_counts();
    signal(pid, libc::SIGUSR2);
    let until = Instant::now() + upgrade_limit(&cfg);
    while Instant::now() < until {
        let now = h.upgrade_counts();
        if now.1 > failed {
            eprintln!("{title} {}", h.upgrade_message());
            return exit::FAILURE;
        }
        if now.0 > done {
            println!("{title} {}", h.upgrade_message());
            return exit::OK;
        }
        if !pidfile::is_our_master(pid) {
            eprintln!("{title} upgrade: the master exited; see the log ({})", cfg.log_file.display());
            return exit::FAILURE;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("{title} upgrade did not complete; see the log ({})", cfg.log_file.display());
    exit::FAILURE
}

/// `upgrade-check --conf F` (hidden), run by the master from the new binary before it
/// re-executes it: reads the configuration and the master's state (environment), answers
/// `gatewayworker <version>` and exits 0 when this binary can take over, else says why on
/// stderr and exits 1 (78 for a bad configuration).
fn upgrade_check(conf: &Path, apps: AppFactory, version: &str) -> i32 {
    let cfg = match load(conf) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let state = std::env::var(master::STATE_ENV).ok();
    match master::check_new_binary(&cfg, state.as_deref(), |app| apps(app).is_some(), version) {
        Ok(answer) => {
            println!("{answer}");
            exit::OK
        }
        Err(e) => {
            eprintln!("{e}");
            exit::FAILURE
        }
    }
}

/// `master-resume --conf F` (hidden): the master re-executed by `upgrade`, same pid, its
/// state in the environment. It takes its children, listeners and statistics back and
/// goes on with the upgrade.
fn resume(conf: &Path, version: &'static str) -> i32 {
    let text = std::env::var(master::STATE_ENV);
    // SAFETY: the process is single-threaded this early; the children must not inherit
    // the state.
    unsafe { std::env::remove_var(master::STATE_ENV) };
    let state = match text
        .map_err(|e| e.to_string())
        .and_then(|t| MasterState::decode(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("master-resume: {e} (this entry is for the master re-executed by upgrade)");
            return exit::USAGE;
        }
    };
    logging::init("master", state.child_log.clone());
    set_process_name("gw-master");
    let title = title(conf);
    let fail = |why: String| {
        log::error!("{title}: the re-executed master cannot go on: {why}; everything stops");
        if let Ok(shm) = Shm::open(&state.stats, true) {
            shm.header().set_operation(Operation::Idle);
            shm.header()
                .finish_upgrade(true, &format!("upgrade failed: the re-executed master cannot go on: {why}"));
        }
        pidfile::remove(&state.pid_file);
        exit::FAILURE
    };
    let cfg = match Config::load(conf) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    let m = match Master::resume(cfg.clone(), state.clone(), version) {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let code = match m.run_resumed() {
        Ok(()) => exit::OK,
        Err(e) => {
            log::error!("master loop failed: {e}");
            exit::FAILURE
        }
    };
    pidfile::remove(&cfg.pid_file);
    log::info!("{title} has been stopped");
    code
}

fn status(conf: &Path, args: &Args) -> i32 {
    let (cfg, title, _) = match running(conf) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let shm = match Shm::open(&cfg.stats_path(), false) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot read statistics {}: {e}", cfg.stats_path().display());
            return exit::FAILURE;
        }
    };
    if args.json {
        println!("{}", table::render_status_json(&table::snapshot(&shm), &table::master_info(&shm)));
        return exit::OK;
    }
    loop {
        let first = table::snapshot(&shm);
        std::thread::sleep(Duration::from_secs(1));
        let second = table::snapshot(&shm);
        let qps = |pid: u32| {
            let a = first.rows.iter().find(|r| r.pid == pid)?;
            let b = second.rows.iter().find(|r| r.pid == pid)?;
            Some(b.total_request.saturating_sub(a.total_request))
        };
        let out = table::render(&second, &table::master_info(&shm), &rel(conf), &qps);
        if args.daemon {
            print!("\x1b[H\x1b[2J\x1b(B\x1b[m{out}\nPress Ctrl+C to quit.\n");
        } else {
            print!("{title} status\n{out}");
            return exit::OK;
        }
        if running_master(&cfg).is_none() {
            return exit::OK;
        }
    }
}

fn connections(conf: &Path) -> i32 {
    let (cfg, title, pid) = match running(conf) {
        Ok(r) => r,
        Err(code) => return code,
    };
    match crate::stats::conns::collect(&cfg, pid) {
        Ok(text) => {
            print!("{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("{title} connections: {e}");
            exit::FAILURE
        }
    }
}

/// `child <role> --conf F --group G --id N`: a process spawned by the master, which parses
/// its contract once; a bad one is reported and the child exits.
fn child(argv: &[String], apps: AppFactory) -> i32 {
    let contract = match ChildContract::from_process(argv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::USAGE;
        }
    };
    let cfg = match Config::load(&contract.conf) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return exit::CONFIG;
        }
    };
    let tag = contract.tag();
    logging::init(&tag, contract.log_file.clone());
    set_process_name(&format!("gw-{tag}"));
    match run_child(&cfg, contract, apps) {
        Ok(()) => exit::OK,
        Err(e) => {
            log::error!("{tag} failed: {e}");
            exit::FAILURE
        }
    }
}

fn run_child(cfg: &Config, c: ChildContract, apps: AppFactory) -> std::io::Result<()> {
    let stats = Stats::attach(&cfg.stats_path(), c.slot)?;
    let mut inherited = Inherited::adopt(c.fds);
    match c.role {
        ChildRole::Register => crate::register::run(cfg, inherited.take_tcp("register")?, stats),
        ChildRole::Gateway => {
            if c.group >= cfg.gateways.len() {
                return Err(std::io::Error::other(format!("no gateway group {}", c.group)));
            }
            let listeners = crate::gateway::Listeners {
                public: inherited.take_tcp("public")?,
                inner_tcp: inherited.take_tcp("inner_tcp")?,
                inner_unix: inherited.take_unix("inner_unix")?,
            };
            crate::gateway::run(cfg, c.group, c.id, listeners, stats, c.handover.as_deref())
        }
        ChildRole::Worker => {
            let name = cfg.worker.as_ref().map(|w| w.app.clone()).unwrap_or_default();
            let app =
                apps(&name).ok_or_else(|| std::io::Error::other(format!("unknown application {name:?}")))?;
            crate::worker::run(cfg, c.id, c.generation, app, stats)
        }
        ChildRole::Http => crate::http::run(cfg, inherited.take_tcp("http")?, stats),
    }
}

/// Name shown by `ps`/`top` (15 bytes at most).
fn set_process_name(name: &str) {
    let mut buf = [0u8; 16];
    for (d, s) in buf.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    // SAFETY: PR_SET_NAME reads a NUL-terminated buffer of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, buf.as_ptr()) };
}

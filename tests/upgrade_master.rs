//! The master's side of `upgrade` with the real binary: it re-executes itself in place (same
//! pid, the new file, the new version label in `status`), replaces the register, and refuses
//! with a reason, touching nothing, when the new binary is missing or fails its check or a
//! reload runs; a reload during an upgrade is refused.

mod cluster;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use cluster::{Cluster, Gw, Spec, exited, wait_for};
use gatewayworker::internals::stats::{Operation, Shm};
use serde_json::Value as Json;

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The `reload_v2` example (echo answers `v2:...`, version label `<version>+v2`). `cargo
/// test` builds the examples, a filtered run does not: then it is built here.
fn v2_binary() -> PathBuf {
    let v2 = Path::new(cluster::BIN).parent().unwrap().join("examples").join("reload_v2");
    if !v2.exists() {
        let mut build = std::process::Command::new(env!("CARGO"));
        build.args(["build", "--quiet", "--example", "reload_v2"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        assert!(build.status().unwrap().success(), "cargo build --example reload_v2");
    }
    v2
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A directory with a copy of the binary the cluster runs, so a test can replace it.
struct Install {
    dir: PathBuf,
    bin: PathBuf,
}

impl Install {
    fn new() -> Install {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("gw-upgrade-bin-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("gatewayworker");
        std::fs::copy(cluster::BIN, &bin).unwrap();
        settle(&bin);
        Install { dir, bin }
    }

    /// Deploy `file` over the installed binary (atomic rename, as a deploy does).
    fn deploy(&self, file: &Path) {
        let tmp = self.dir.join("gatewayworker.new");
        std::fs::copy(file, &tmp).unwrap();
        std::fs::rename(&tmp, &self.bin).unwrap();
        settle(&self.bin);
    }
}

/// Wait until `bin`, just written, can be executed. Another test thread that forked while it
/// was open for writing holds it until that child execs (ETXTBSY meanwhile); once one exec
/// succeeds nobody holds it any more.
fn settle(bin: &Path) {
    let until = std::time::Instant::now() + cluster::DEADLINE;
    loop {
        let probe = std::process::Command::new(bin)
            .arg("--help")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        match probe {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => return,
        }
    }
}

impl Drop for Install {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The CLI `bin` on the cluster's conf. A file just copied may be busy for a moment: a
/// test thread that forked while it was open for writing holds it until that child execs.
fn cli(c: &Cluster, bin: &Path, args: &[&str]) -> std::process::Output {
    let until = std::time::Instant::now() + cluster::DEADLINE;
    loop {
        let cmd = std::process::Command::new(bin);
        match cluster::on_conf(cmd, args, &c.conf, &c.dir).output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && std::time::Instant::now() < until => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r.unwrap(),
        }
    }
}

/// `status --json`, by the CLI of this build (the installed file may be broken on purpose).
fn status(c: &Cluster) -> Json {
    let out = cli(c, Path::new(cluster::BIN), &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn pids_of(st: &Json, role: &str) -> Vec<u64> {
    let procs = st["processes"].as_array().unwrap();
    procs.iter().filter(|p| p["role"] == role).map(|p| p["pid"].as_u64().unwrap()).collect()
}

fn exe_of(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// The inode of the file `pid` runs (the path moves with renames).
fn exe_inode(pid: u32) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/exe")).unwrap().ino()
}

/// Spin on the statistics header until the master says it runs `op` (a window of a few
/// milliseconds).
fn wait_for_operation(c: &Cluster, op: Operation) {
    let shm = Shm::open(&c.stats_path(), false).unwrap();
    let until = std::time::Instant::now() + cluster::DEADLINE;
    while shm.header().operation() != op {
        assert!(std::time::Instant::now() < until, "the master never reported {op:?}");
        std::hint::spin_loop();
    }
}

#[test]
fn upgrade_re_executes_the_daemon_in_place_and_replaces_the_register() {
    let install = Install::new();
    let mut spec = Spec::new("echo", 1, vec![Gw::new("websocket", 1)]);
    spec.bin = install.bin.clone();
    spec.daemon = true;
    let c = Cluster::start(spec);
    let master = c.master_pid();
    let before = status(&c);
    assert_eq!(before["version"], env!("CARGO_PKG_VERSION"), "{before}");
    assert_eq!(before["upgrades"], 0);
    let register = pids_of(&before, "register");
    let mut ws = c.ws(0);
    ws.send("before");
    assert_eq!(ws.recv_text(), "before");

    install.deploy(&v2_binary());
    let out = cli(&c, &install.bin, &["upgrade"]);
    let v2 = concat!(env!("CARGO_PKG_VERSION"), "+v2");
    assert!(out.status.success(), "{}\nlog:\n{}", text(&out), c.log());
    assert!(text(&out).contains("upgrade done"), "{}", text(&out));
    assert!(text(&out).contains(v2), "{}", text(&out));

    // Same pid, same pid file, the new file; status goes on from the same region.
    assert_eq!(c.pid_file(), Some(master));
    assert_eq!(exe_of(master), install.bin, "the master runs the deployed file");
    let after = status(&c);
    assert_eq!(after["master_pid"], master, "{after}");
    assert_eq!(after["started"], before["started"], "the statistics region is the same");
    assert_eq!(after["version"], v2, "{after}");
    assert_eq!(after["daemon"], true);
    assert_eq!((after["upgrades"].as_u64(), after["upgrades_failed"].as_u64()), (Some(1), Some(0)));
    assert_eq!(after["operation"], "idle");
    let new_register = pids_of(&after, "register");
    assert_eq!(new_register.len(), 1, "{after}");
    assert_ne!(new_register, register, "the register was replaced");
    assert!(exited(register[0] as u32), "the old register stopped");
    assert_eq!(exe_of(new_register[0] as u32), install.bin);
    // The client connected before the upgrade is served by the new code.
    ws.send("after");
    assert_eq!(ws.recv_text(), "v2:after");
    let log = c.log();
    assert!(log.contains("master re-executed from"), "{log}");
    assert!(log.contains("upgrade done"), "{log}");

    // The re-executed daemon is still the master the CLI knows: a second start refuses,
    // stop stops it.
    let out = cli(&c, &install.bin, &["start", "-d"]);
    assert!(!out.status.success() && text(&out).contains("already running"), "{}", text(&out));
    c.stop();
}

#[test]
fn a_refused_upgrade_touches_nothing() {
    let install = Install::new();
    let mut spec = Spec::new("echo", 1, vec![Gw::new("websocket", 1)]);
    spec.bin = install.bin.clone();
    let c = Cluster::start(spec);
    let master = c.master_pid();
    let image = exe_inode(master);
    let before = status(&c);
    let pids = |st: &Json| ["register", "gateway", "worker"].map(|r| pids_of(st, r));
    let refused = |what: &str, expect: &str| {
        // The CLI of the build: the installed file is what goes wrong here.
        let out = cli(&c, Path::new(cluster::BIN), &["upgrade"]);
        assert_eq!(out.status.code(), Some(1), "{what}: {}", text(&out));
        assert!(text(&out).contains(expect), "{what}: {}", text(&out));
        let now = status(&c);
        assert_eq!(pids(&now), pids(&before), "{what}: no process replaced");
        assert_eq!(now["last_upgrade"].as_str().unwrap_or(""), text(&out).split_once("] ").unwrap().1.trim());
        assert_eq!(exe_inode(master), image, "{what}: the master did not re-execute");
    };

    // The binary is gone (a failed deploy).
    let kept = install.dir.join("kept");
    std::fs::rename(&install.bin, &kept).unwrap();
    refused("missing binary", "upgrade refused: cannot run");
    // Not executable.
    std::fs::copy(&kept, &install.bin).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&install.bin, std::fs::Permissions::from_mode(0o644)).unwrap();
    refused("not executable", "not an executable file");
    // A binary whose check fails.
    let script = install.dir.join("broken.sh");
    std::fs::write(&script, "#!/bin/sh\necho \"cannot read the master state\" >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    install.deploy(&script);
    std::fs::set_permissions(&install.bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    refused("failing check", "upgrade-check: cannot read the master state (exit status 3)");
    // Something that is not a gatewayworker binary at all.
    install.deploy(Path::new("/bin/true"));
    refused("foreign binary", "does not answer as a gatewayworker binary");
    install.deploy(&kept);

    // During a reload (the new business worker is linking to the gateway).
    let failed = status(&c)["upgrades_failed"].as_u64().unwrap();
    unsafe { libc::kill(master as i32, libc::SIGUSR1) };
    wait_for_operation(&c, Operation::Reload);
    unsafe { libc::kill(master as i32, libc::SIGUSR2) };
    let st = wait_for("the refusal", || {
        let st = status(&c);
        (st["upgrades_failed"].as_u64() == Some(failed + 1)).then_some(st)
    });
    assert_eq!(st["last_upgrade"], "upgrade refused: a reload is in progress", "{st}");
    assert_eq!(st["upgrades"], 0);
    c.wait_log("reload done");
    assert_eq!(exe_inode(master), image);

    let mut ws = c.ws(0);
    ws.send("still served");
    assert_eq!(ws.recv_text(), "still served");
    c.stop();
}

#[test]
fn a_reload_during_an_upgrade_is_refused() {
    let install = Install::new();
    let mut spec = Spec::new("echo", 1, vec![Gw::new("websocket", 1)]);
    spec.bin = install.bin.clone();
    let c = Cluster::start(spec);
    let master = c.master_pid();
    // The reload arrives while the master checks the new binary, re-executes itself or
    // replaces its children: refused, by the old master's blocked signals reaching the new one
    // or by the new one.
    unsafe { libc::kill(master as i32, libc::SIGUSR2) };
    wait_for_operation(&c, Operation::Upgrade);
    unsafe { libc::kill(master as i32, libc::SIGUSR1) };
    c.wait_log("reload refused: an upgrade is in progress");
    let st = wait_for("the upgrade", || {
        let st = status(&c);
        (st["upgrades"].as_u64() == Some(1)).then_some(st)
    });
    assert_eq!(st["master_pid"], master);
    assert_eq!(st["reloads"], 0, "{st}");
    assert!(c.log().contains("master re-executed from"));
    c.stop();
}

//! The Ansible deploy (`scripts/deploy.sh`, `deploy/`) against real hosts (network
//! namespaces, see `tests/netns/mod.rs`): a master machine and two worker machines, each
//! running its own sshd on its own address with keys the test generates. `ansible-playbook`
//! runs here, on the deploying machine, and reaches the hosts over ssh.
//!
//! The hosts have no Rust toolchain and no git: each sshd runs in a mount namespace of its
//! own where `cargo`, `rustc` and `git` are /dev/null, so any attempt to run them on a host
//! fails the deploy. The hosts share this machine's file system, each with its own
//! installation directory.
//!
//! A first deploy starts the cluster; a second deploy ships a build whose echo answers
//! `v2:...` (`examples/reload_v2.rs`) and, the binary being another one, upgrades: every
//! process of every host runs it (each master keeps its pid), clients connected before stay
//! connected and a steady load loses nothing, each host's `.env` keeps its own keys. A deploy
//! whose conf is bad on the master machine stops there with the worker machines untouched; a
//! rollback serves the previous release again (upgrading back); a release with the running
//! binary (only conf/ or web/ changed) is reloaded.

mod cluster;
mod netns;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cluster::{BIN, Ws};
use gatewayworker::internals::stats::{Role, Shm, State, table};
use netns::{Conf, Host, Net, wait_until};

const TEST: &str = "ansible_deploy_ships_builds_upgrades_stops_at_a_failing_host_and_rolls_back";
/// A host's own `.env` before the first deploy: the deploy writes its keys and keeps these.
const OWN_ENV: &str = "GW_SECRET_KEY=deploy-test-secret\n# this host's own settings\nMY_OWN_KEY=kept\n";
/// What a release directory holds.
const RELEASE: [&str; 3] = ["conf", "gatewayworker", "web"];

fn out_text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Run `cmd`, panic with its output if it fails.
fn run(cmd: &mut Command) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}\n{}", o.status, out_text(&o));
}

/// The project root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where a program is installed here, if it is.
fn which(program: &str) -> Option<PathBuf> {
    let o = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().ok()?;
    let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    (o.status.success() && p.is_absolute()).then_some(p)
}

/// The v2 build: the echo app answers `v2:<message>`. Built once, on this machine.
fn v2_binary() -> PathBuf {
    let v2 = Path::new(BIN).parent().unwrap().join("examples/reload_v2");
    if !v2.exists() {
        // A filtered `cargo test --test cluster_deploy` does not build the examples.
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "--example", "reload_v2"]);
        if !cfg!(debug_assertions) {
            build.arg("--release");
        }
        run(&mut build);
    }
    v2
}

/// The artifact shipped for `bin`: a copy without debug information when `strip` is
/// installed (a release build carries none; the test builds are debug builds, six times
/// larger), else `bin` itself.
fn artifact(bin: &Path, dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let stripped = Command::new("strip").arg("-o").arg(&out).arg(bin).status();
    if stripped.is_ok_and(|s| s.success()) { out } else { bin.to_path_buf() }
}

/// A host's sshd, in a mount namespace of its own where the Rust toolchain and git are
/// /dev/null (so nothing the deploy runs there can use them).
struct Sshd(Child);

impl Sshd {
    fn start(h: &Host, ssh_dir: &Path, hidden: &[PathBuf]) -> Sshd {
        let conf = h.dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "ListenAddress {ip}:22\nHostKey {keys}/host_key\nAuthorizedKeysFile {keys}/client_key.pub\n\
                 PidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\n",
                ip = h.ip,
                keys = ssh_dir.display(),
                dir = h.dir.display(),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(h.dir.join("sshd.log")).unwrap();
        let child = h
            .command("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("c=$1; shift; for p; do mount --bind /dev/null \"$p\" || exit 1; done; exec /usr/sbin/sshd -D -e -f \"$c\"")
            .arg("sh")
            .arg(&conf)
            .args(hidden)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr = h.addr(22);
        wait_until(&format!("sshd of {} listening", h.name), Duration::from_secs(10), || {
            TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        });
        Sshd(child)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The deploying machine: the inventory, the conf files shipped, ansible's own files.
struct Deployer {
    dir: PathBuf,
    inventory: PathBuf,
    conf_dir: PathBuf,
    key: PathBuf,
}

impl Deployer {
    fn new(dir: &Path, key: &Path, hosts: &[(&Host, &Conf, &Path)]) -> Deployer {
        let conf_dir = dir.join("conf");
        std::fs::create_dir_all(&conf_dir).unwrap();
        let mut groups = [String::new(), String::new()];
        for (h, conf, gw_root) in hosts {
            std::fs::write(conf_dir.join(format!("test-{}.toml", h.name)), conf.render()).unwrap();
            let group = &mut groups[(conf.machine_type != "master") as usize];
            *group += &format!(
                "    {name}:\n      ansible_host: \"{ip}\"\n      lan_ip: \"{ip}\"\n      \
                 gw_conf: test-{name}.toml\n      gw_root: \"{root}\"\n",
                name = h.name,
                ip = h.ip,
                root = gw_root.display()
            );
        }
        let inventory = dir.join("inventory.yml");
        std::fs::write(
            &inventory,
            format!(
                "all:\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: \"{key}\"\n    \
                 ansible_ssh_common_args: \"-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
                 -o LogLevel=ERROR -o ConnectTimeout=10\"\n    ansible_python_interpreter: /usr/bin/python3\n    \
                 gw_secret_key: deploy-test-secret\n    gw_use_systemd: false\n    gw_keep_releases: 3\n    \
                 gw_conf_dir: \"{conf}\"\n    gw_build_dir: \"{build}\"\n\
                 masters:\n  hosts:\n{masters}workers:\n  hosts:\n{workers}",
                key = key.display(),
                conf = conf_dir.display(),
                build = dir.join("build").display(),
                masters = groups[0],
                workers = groups[1],
            ),
        )
        .unwrap();
        Deployer { dir: dir.to_path_buf(), inventory, conf_dir, key: key.to_path_buf() }
    }

    /// `scripts/deploy.sh [rollback] -i inventory extra...`: success, output, time taken.
    fn run(&self, rollback: bool, extra: &[String], log: &str) -> (bool, String, Duration) {
        let started = Instant::now();
        let log = self.dir.join(log);
        let out = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(root().join("scripts/deploy.sh"));
        if rollback {
            cmd.arg("rollback");
        }
        let status = cmd
            .arg("-i")
            .arg(&self.inventory)
            .args(extra)
            .env("ANSIBLE_HOME", self.dir.join("ansible"))
            .env("ANSIBLE_LOCAL_TEMP", self.dir.join("ansible/tmp"))
            .env("ANSIBLE_SSH_CONTROL_PATH_DIR", self.dir.join("cp"))
            .env("ANSIBLE_NOCOLOR", "1")
            // The ssh connections ansible keeps for its next task close soon after the run
            // (the hosts go away with the test).
            .env("ANSIBLE_SSH_ARGS", "-o ControlMaster=auto -o ControlPersist=15s")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .unwrap();
        (status.success(), std::fs::read_to_string(&log).unwrap(), started.elapsed())
    }

    /// A deploy of `artifact` as release `version` that must succeed; its output.
    fn deploy(&self, artifact: &Path, version: &str) -> String {
        let (ok, out, took) =
            self.run(false, &Self::release(artifact, version), &format!("deploy-{version}.log"));
        assert!(ok, "deploy of {version} failed:\n{out}");
        eprintln!("deploy of {version} took {took:?}");
        out
    }

    fn release(artifact: &Path, version: &str) -> Vec<String> {
        vec![
            "-e".into(),
            format!("gw_artifact={}", artifact.display()),
            "-e".into(),
            format!("gw_version={version}"),
        ]
    }

    /// Run `command` on `h` over ssh.
    fn ssh(&self, h: &Host, command: &str) -> Output {
        Command::new("ssh")
            .arg("-i")
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
            ])
            .args(["-o", "LogLevel=ERROR", &format!("root@{}", h.ip), command])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// Snapshot of the process table of the installation in `gw_root`.
fn snapshot(gw_root: &Path) -> Option<table::Snapshot> {
    Shm::open(&gw_root.join("run/gatewayworker.stats"), false).ok().map(|s| table::snapshot(&s))
}

/// Pids of the ready processes of `role` once `n` of them (and nothing else) are ready.
fn wait_ready(gw_root: &Path, role: Role, n: usize) -> Vec<u32> {
    wait_until(&format!("{n} ready {role:?} in {}", gw_root.display()), Duration::from_secs(60), || {
        let s = snapshot(gw_root)?;
        let rows: Vec<_> = s.rows.iter().filter(|r| r.role != Role::Master).collect();
        let of: Vec<u32> = rows.iter().filter(|r| r.role == role).map(|r| r.pid).collect();
        (of.len() == n && rows.iter().all(|r| r.state == State::Ready)).then_some(of)
    })
}

/// The binary a process runs.
fn exe(pid: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap()
}

/// Every process of the installation in `gw_root` (its master included) runs release
/// `release`, once `n` of `role` are ready; the master's pid is `master`.
fn assert_runs(gw_root: &Path, role: Role, n: usize, release: &str, master: u32) {
    wait_ready(gw_root, role, n);
    let bin = gw_root.join("releases").join(release).join("gatewayworker");
    // The processes the release replaced exit once their work is handed over.
    let s = wait_until(
        &format!("every process of {} on {release}", gw_root.display()),
        Duration::from_secs(30),
        || {
            let s = snapshot(gw_root)?;
            s.rows.iter().all(|r| exe(r.pid) == bin).then_some(s)
        },
    );
    assert_eq!(s.master_pid, master, "the master of {} keeps its pid", gw_root.display());
    assert!(s.rows.iter().any(|r| r.pid == master && r.role == Role::Master), "{:?}", s.rows);
}

/// The master's pid of the installation in `gw_root`.
fn master_pid(gw_root: &Path) -> u32 {
    snapshot(gw_root).expect("a running installation").master_pid
}

/// The release `current` points at.
fn current(gw_root: &Path) -> String {
    let link = std::fs::read_link(gw_root.join("current")).unwrap();
    link.file_name().unwrap().to_string_lossy().into_owned()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Clients echoing in a loop, each with one message in flight; every reply must be the
/// message itself or `v2:` and the message, in order (a lost message times the client out).
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(u64, u64)>>,
}

impl Load {
    fn start(clients: Vec<Ws>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = clients
            .into_iter()
            .enumerate()
            .map(|(n, mut c)| {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let (mut sent, mut v2) = (0u64, 0u64);
                    while !stop.load(Ordering::Relaxed) {
                        let msg = format!("load {n} {sent}");
                        c.send(&msg);
                        let reply = c.recv_text();
                        sent += 1;
                        if reply != msg {
                            assert_eq!(reply, format!("v2:{msg}"), "load client {n}");
                            v2 += 1;
                        }
                    }
                    (sent, v2)
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Messages sent and answered by the v2 code, over all clients.
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.threads.into_iter().fold((0, 0), |(s, v), t| {
            let (sent, v2) = t.join().expect("a load client failed (disconnected, or a message lost)");
            (s + sent, v + v2)
        })
    }
}

/// Send `msg`, return the reply.
fn echo(c: &mut Ws, msg: &str) -> String {
    c.send(msg);
    c.recv_text()
}

#[test]
fn ansible_deploy_ships_builds_upgrades_stops_at_a_failing_host_and_rolls_back() {
    let needs = ["/usr/sbin/sshd", "ssh", "ssh-keygen", "unshare", "mount", "ansible-playbook"];
    if netns::skipped(TEST, &needs) {
        return;
    }
    let t0 = Instant::now();
    let v2 = v2_binary();
    let mut net = Net::new();
    let hosts = [net.host("m"), net.host("w1"), net.host("w2")];
    let register = hosts[0].addr(Conf::REGISTER_PORT);
    let confs = [
        Conf::master(&hosts[0], &[register], 1),
        Conf::worker(&hosts[1], &[register], 2, "echo"),
        Conf::worker(&hosts[2], &[register], 2, "echo"),
    ];
    let roots: Vec<PathBuf> = hosts.iter().map(|h| h.dir.join("srv")).collect();

    let ssh_dir = net.dir.join("ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    for key in ["host_key", "client_key"] {
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(ssh_dir.join(key)));
    }
    std::fs::create_dir_all("/run/sshd").unwrap();
    let mut hidden: Vec<PathBuf> = Vec::new();
    for p in ["cargo", "rustc", "rustup", "git"] {
        let places = [
            which(p),
            Some(PathBuf::from("/usr/bin").join(p)),
            Some(PathBuf::from("/usr/local/bin").join(p)),
        ];
        for place in places.into_iter().flatten().filter(|f| f.exists()) {
            if !hidden.contains(&place) {
                hidden.push(place);
            }
        }
    }
    let mut sshds = Vec::new();
    for (h, gw_root) in hosts.iter().zip(&roots) {
        std::fs::create_dir_all(gw_root).unwrap();
        std::fs::write(gw_root.join(".env"), OWN_ENV).unwrap();
        sshds.push(Sshd::start(h, &ssh_dir, &hidden));
    }
    let spec: Vec<(&Host, &Conf, &Path)> =
        hosts.iter().zip(&confs).zip(&roots).map(|((h, c), r)| (h, c, r.as_path())).collect();
    let d = Deployer::new(&net.dir.join("deployer"), &ssh_dir.join("client_key"), &spec);
    for h in &hosts {
        for tool in ["cargo --version", "git --version"] {
            let o = d.ssh(h, tool);
            assert!(!o.status.success(), "{} runs `{tool}` on {}: {}", h.name, h.name, out_text(&o));
        }
    }
    eprintln!("{TEST}: set up in {:?}", t0.elapsed());

    // First deploy: nothing runs yet; every host is started, the master machine first.
    let (r1, r2) =
        (artifact(Path::new(BIN), &d.dir, "gatewayworker-r1"), artifact(&v2, &d.dir, "gatewayworker-r2"));
    let out = d.deploy(&r1, "r1");
    let first_worker = out.find("[w1]").expect("w1 deployed");
    assert!(out.rfind("[m]").unwrap() < first_worker, "master machine first:\n{out}");
    let gateways = wait_ready(&roots[0], Role::Gateway, 1);
    let old: Vec<Vec<u32>> = roots[1..].iter().map(|r| wait_ready(r, Role::Worker, 2)).collect();
    let masters: Vec<u32> = roots.iter().map(|r| master_pid(r)).collect();

    // Clients of the old code, and a steady echo load through the deploy and the rollback.
    let ws = hosts[0].addr(Conf::WS_PORT);
    let mut clients: Vec<Ws> = (0..6).map(|_| Ws::connect_to(ws, "/")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(echo(c, &format!("before {i}")), format!("before {i}"));
    }
    let load = Load::start((0..4).map(|_| Ws::connect_to(ws, "/")).collect());

    // Second deploy: the v2 build, shipped as a given artifact: another binary, so every
    // host is upgraded.
    let out = d.deploy(&r2, "r2");
    assert_eq!(
        out.matches("Update the running cluster (upgrade)").count(),
        3,
        "upgrade on every host:\n{out}"
    );
    let handed_over = wait_ready(&roots[0], Role::Gateway, 1);
    assert_ne!(handed_over, gateways, "the gateway was replaced");
    assert_runs(&roots[0], Role::Gateway, 1, "r2", masters[0]);
    for (i, gw_root) in roots.iter().enumerate() {
        assert_eq!(current(gw_root), "r2");
        assert_eq!(listing(&gw_root.join("releases/r2")), RELEASE, "release dir of {}", hosts[i].name);
        let env = std::fs::read_to_string(gw_root.join(".env")).unwrap();
        assert!(env.starts_with(OWN_ENV), ".env of {} lost its own keys:\n{env}", hosts[i].name);
        assert!(env.contains(&format!("\nGW_LAN_IP={}\n", hosts[i].ip)), ".env of {}:\n{env}", hosts[i].name);
        let top = listing(gw_root);
        assert!(
            top.iter().all(|f| [".env", "conf", "current", "releases", "run"].contains(&f.as_str())),
            "{top:?}"
        );
    }
    for (i, gw_root) in roots[1..].iter().enumerate() {
        let new = wait_ready(gw_root, Role::Worker, 2);
        assert!(new.iter().all(|p| !old[i].contains(p)), "workers replaced: {old:?} -> {new:?}");
        assert_runs(gw_root, Role::Worker, 2, "r2", masters[i + 1]);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(echo(c, &format!("after {i}")), format!("v2:after {i}"), "client connected before");
    }
    let mut newcomer = Ws::connect_to(ws, "/");
    assert_eq!(echo(&mut newcomer, "newcomer"), "v2:newcomer");

    // A deploy whose conf is bad on the master machine stops there: nothing is switched on
    // it, and the worker machines are not touched at all.
    let bad = d.conf_dir.join("test-m.toml");
    let good = std::fs::read_to_string(&bad).unwrap();
    std::fs::write(&bad, format!("colour = \"blue\"\n{good}")).unwrap();
    let workers: Vec<Vec<u32>> = roots[1..].iter().map(|r| wait_ready(r, Role::Worker, 2)).collect();
    let (ok, out, _) = d.run(false, &Deployer::release(&r1, "r3"), "deploy-r3.log");
    assert!(!ok, "a deploy with a bad conf succeeded:\n{out}");
    assert!(
        out.contains("fatal: [m]") && out.contains("colour"),
        "the failure names the host and the key:\n{out}"
    );
    assert!(!out.contains("[w1]") && !out.contains("[w2]"), "worker machines touched:\n{out}");
    for gw_root in &roots {
        assert_eq!(current(gw_root), "r2");
    }
    for gw_root in &roots[1..] {
        assert_eq!(listing(&gw_root.join("releases")), ["r1", "r2"]);
    }
    let now: Vec<Vec<u32>> = roots[1..].iter().map(|r| wait_ready(r, Role::Worker, 2)).collect();
    assert_eq!(now, workers, "business workers untouched");
    std::fs::write(&bad, good).unwrap();

    // Rollback: every host back to r1, the old code serves the same clients.
    let (ok, out, took) = d.run(true, &[], "rollback.log");
    assert!(ok, "rollback failed:\n{out}");
    eprintln!("rollback took {took:?}");
    let upgrades = out.matches("Update the running cluster (upgrade)").count();
    assert_eq!(upgrades, 3, "upgrade back on every host:\n{out}");
    for gw_root in &roots {
        assert_eq!(current(gw_root), "r1");
    }
    assert_runs(&roots[0], Role::Gateway, 1, "r1", masters[0]);
    for (gw_root, master) in roots[1..].iter().zip(&masters[1..]) {
        assert_runs(gw_root, Role::Worker, 2, "r1", *master);
    }
    for (i, c) in clients.iter_mut().chain([&mut newcomer]).enumerate() {
        assert_eq!(echo(c, &format!("back {i}")), format!("back {i}"), "client {i} served by r1");
    }

    // A release with the running binary (a change to conf/ or web/ only) is reloaded: the
    // gateway keeps running, the business workers restart.
    let gateways = wait_ready(&roots[0], Role::Gateway, 1);
    let workers: Vec<Vec<u32>> = roots[1..].iter().map(|r| wait_ready(r, Role::Worker, 2)).collect();
    let out = d.deploy(&r1, "r4");
    assert_eq!(out.matches("Update the running cluster (reload)").count(), 3, "reload on every host:\n{out}");
    assert_eq!(wait_ready(&roots[0], Role::Gateway, 1), gateways, "the gateway was not restarted");
    for (i, gw_root) in roots[1..].iter().enumerate() {
        let new = wait_ready(gw_root, Role::Worker, 2);
        assert!(new.iter().all(|p| !workers[i].contains(p)), "workers replaced: {workers:?} -> {new:?}");
        for pid in new {
            assert_eq!(exe(pid), gw_root.join("releases/r4/gatewayworker"), "worker {pid} runs r4");
        }
        assert_eq!(master_pid(gw_root), masters[i + 1]);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(echo(c, &format!("r4 {i}")), format!("r4 {i}"), "client {i} served by r4");
    }
    let (sent, v2_replies) = load.finish();
    assert!(sent > 0 && v2_replies > 0, "load: {sent} sent, {v2_replies} answered by the v2 code");
    eprintln!("{TEST}: {:?} in all", t0.elapsed());
    drop(sshds);
    drop(net);
}

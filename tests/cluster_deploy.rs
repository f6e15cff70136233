//! `scripts/deploy.sh` against real hosts (network namespaces, see `tests/netns/mod.rs`): a
//! master machine and two worker machines, each running its own sshd on its own address
//! with keys the test generates, each with its own clone of a test origin repository and
//! its own `.env`. A first deploy starts the cluster; then a change to the business code
//! (the echo app) is committed, pushed and deployed, and is live on every worker machine
//! afterwards while clients connected before the deploy stay connected.
//!
//! The hosts share this machine's file system; each sshd runs in its own mount namespace
//! where the host's clone is mounted on the same path, so that every host builds at the
//! same path into one shared cargo target directory (incremental): each host really
//! builds from its own checkout, without the cost of a full build per host.

mod cluster;
mod netns;

use std::collections::HashSet;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cluster::{BIN, Ws};
use gatewayworker::internals::stats::{Role, Shm, State, table};
use netns::{Conf, Host, Net, wait_until};

const TEST: &str = "deploy_puts_new_business_code_live_on_every_host_and_no_client_disconnects";
const SECRET: &str = "GW_SECRET_KEY=deploy-test-secret\n# this host's own settings: a deploy keeps them\n";

fn out_text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Run `cmd`, panic with its output if it fails; its stdout.
fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}\n{}", o.status, out_text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=deploy test", "-c", "user.email=deploy-test@example.com"])
        .args(args))
}

/// The project root.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The cargo target directory the hosts build into: kept between runs (dependencies are
/// built once), seeded from this project's release build when there is one.
fn host_target_dir() -> PathBuf {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = tmp.join("deploy-hosts-target");
    let seed = tmp.parent().unwrap().join("release");
    if !dir.exists() && seed.join("deps").is_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        run(Command::new("cp").arg("-a").arg(&seed).arg(dir.join("release")));
    }
    dir
}

/// A host's sshd, in a mount namespace of its own where the host's clone is at `shared`.
struct Sshd(Child);

impl Sshd {
    fn start(h: &Host, ssh_dir: &Path, repo: &Path, shared: &Path, env: &str) -> Sshd {
        let conf = h.dir.join("sshd_config");
        std::fs::write(
            &conf,
            format!(
                "ListenAddress {ip}:22\nHostKey {keys}/host_key\nAuthorizedKeysFile {keys}/client_key.pub\n\
                 PidFile {dir}/sshd.pid\nStrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nLogLevel ERROR\nSetEnv {env}\n",
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
            .arg("mount --bind \"$1\" \"$2\" && exec /usr/sbin/sshd -D -e -f \"$3\"")
            .args([Path::new("sh"), repo, shared, &conf])
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

/// Snapshot of the process table of the installation in `repo`.
fn snapshot(repo: &Path) -> Option<table::Snapshot> {
    Shm::open(&repo.join("run/gatewayworker.stats"), false).ok().map(|s| table::snapshot(&s))
}

/// Pids of the ready processes of `role` once `n` of them (and nothing else) are ready.
fn wait_ready(repo: &Path, role: Role, n: usize) -> Vec<u32> {
    wait_until(&format!("{n} ready {role:?} in {}", repo.display()), Duration::from_secs(60), || {
        let s = snapshot(repo)?;
        let rows: Vec<_> = s.rows.iter().filter(|r| r.role != Role::Master).collect();
        let of: Vec<u32> = rows.iter().filter(|r| r.role == role).map(|r| r.pid).collect();
        (of.len() == n && rows.iter().all(|r| r.state == State::Ready)).then_some(of)
    })
}

/// Run scripts/deploy.sh of this project for the revision checked out in `dev`; its output
/// (stdout and stderr interleaved, as on a terminal) and how long it took.
fn deploy(dev: &Path, file: &Path, ssh: &str, log: &Path) -> (String, Duration) {
    let started = Instant::now();
    let out = std::fs::File::create(log).unwrap();
    let status = Command::new(root().join("scripts/deploy.sh"))
        .args([Path::new("--file"), file, Path::new("test")])
        .env("GIT_DIR", dev.join(".git"))
        .env("GW_BIN", BIN)
        .env("GW_DEPLOY_SSH", ssh)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    let text = std::fs::read_to_string(log).unwrap();
    assert!(status.success(), "deploy failed: {status}\n{text}");
    (text, started.elapsed())
}

/// Send `msg` and return the echo reply.
fn echo(c: &mut Ws, msg: &str) -> String {
    c.send(msg);
    c.recv_where(|t| t.ends_with(msg))
}

/// The pid in a reply of the changed echo app ("v2 <pid>: <message>").
fn v2_pid(reply: &str) -> u32 {
    let rest = reply.strip_prefix("v2 ").unwrap_or_else(|| panic!("not the new code: {reply:?}"));
    rest.split(':').next().unwrap().parse().unwrap()
}

#[test]
fn deploy_puts_new_business_code_live_on_every_host_and_no_client_disconnects() {
    if netns::skipped(TEST, &["/usr/sbin/sshd", "ssh", "ssh-keygen", "git", "unshare", "mount"]) {
        return;
    }
    if !root().join(".git").exists() {
        if std::env::var("GW_REQUIRE_NETNS").as_deref() == Ok("1") {
            panic!("{TEST}: GW_REQUIRE_NETNS=1 but the project is not a git checkout");
        }
        eprintln!("\nSKIPPED {TEST}: the project is not a git checkout (the test deploys its HEAD)");
        return;
    }
    let t0 = Instant::now();
    let mut net = Net::new();
    let hosts = [net.host("m"), net.host("w1"), net.host("w2")];
    let register = hosts[0].addr(Conf::REGISTER_PORT);

    // Keys: one host key for every sshd, one client key.
    let ssh_dir = net.dir.join("ssh");
    std::fs::create_dir_all(&ssh_dir).unwrap();
    for key in ["host_key", "client_key"] {
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(ssh_dir.join(key)));
    }
    // sshd's privilege separation directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let ssh = format!(
        "ssh -i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes \
         -o LogLevel=ERROR -o ConnectTimeout=10",
        ssh_dir.join("client_key").display()
    );

    // The developer's clone of this project on a branch of its own, with the test hosts'
    // conf files committed; the origin the hosts fetch from.
    let dev = net.dir.join("dev");
    let origin = net.dir.join("origin.git");
    run(Command::new("git").args(["clone", "-q"]).arg(root()).arg(&dev));
    git(&dev, &["checkout", "-q", "-B", "deploy-test"]);
    let confs = [
        ("conf/test-m.toml", Conf::master(&hosts[0], &[register], 1)),
        ("conf/test-w1.toml", Conf::worker(&hosts[1], &[register], 2, "echo")),
        ("conf/test-w2.toml", Conf::worker(&hosts[2], &[register], 2, "echo")),
    ];
    for (path, conf) in &confs {
        std::fs::write(dev.join(path), conf.render()).unwrap();
        git(&dev, &["add", path]);
    }
    git(&dev, &["commit", "-q", "-m", "Test hosts"]);
    run(Command::new("git").args(["init", "-q", "--bare"]).arg(&origin));
    git(&dev, &["remote", "set-url", "origin", origin.to_str().unwrap()]);
    git(&dev, &["push", "-q", "origin", "deploy-test"]);

    // Each host: its clone, its .env, its sshd (its clone mounted at `shared`).
    let shared = net.dir.join("repo");
    std::fs::create_dir_all(&shared).unwrap();
    let target = host_target_dir();
    let mut env = format!("CARGO_TARGET_DIR={} CARGO_INCREMENTAL=1", target.display());
    for var in ["CARGO_HOME", "RUSTUP_HOME", "RUSTUP_TOOLCHAIN"] {
        if let Ok(v) = std::env::var(var) {
            env += &format!(" {var}={v}");
        }
    }
    if let Some(dir) =
        std::env::var_os("CARGO").map(PathBuf::from).and_then(|c| c.parent().map(Path::to_path_buf))
    {
        env += &format!(" PATH={}:/usr/local/bin:/usr/bin:/bin", dir.display());
    }
    let mut repos = Vec::new();
    let mut sshds = Vec::new();
    for h in &hosts {
        let repo = h.dir.join("repo");
        run(Command::new("git").args(["clone", "-q", "-b", "deploy-test"]).arg(&origin).arg(&repo));
        std::fs::write(repo.join(".env"), SECRET).unwrap();
        sshds.push(Sshd::start(h, &ssh_dir, &repo, &shared, &env));
        repos.push(repo);
    }
    let deploy_toml = net.dir.join("deploy.toml");
    let mut toml = "[stages.test]\nremote = \"origin\"\n".to_string();
    // Worker machines listed first: the deploy does the master machine first anyway.
    for (i, h) in hosts.iter().enumerate().rev() {
        toml += &format!(
            "[[stages.test.hosts]]\nname = \"{}\"\nssh = \"root@{}\"\nmachine_type = \"{}\"\nconf = \"{}\"\npath = \"{}\"\n",
            h.name,
            h.ip,
            confs[i].1.machine_type,
            confs[i].0,
            shared.display()
        );
    }
    std::fs::write(&deploy_toml, toml).unwrap();
    eprintln!("{TEST}: set up in {:?}", t0.elapsed());

    // First deploy: nothing runs yet, every host is started.
    let (out, took) = deploy(&dev, &deploy_toml, &ssh, &net.dir.join("deploy-1.log"));
    eprintln!("first deploy (start) took {took:?}");
    let order: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("== ")).collect();
    assert!(order.len() == 3 && order[0].starts_with("m (master"), "{out}");
    let gateways = wait_ready(&repos[0], Role::Gateway, 1);
    let old: Vec<Vec<u32>> = repos[1..].iter().map(|r| wait_ready(r, Role::Worker, 2)).collect();

    // Clients of the old code, and a steady echo load through the deploy.
    let ws = hosts[0].addr(Conf::WS_PORT);
    let mut clients: Vec<Ws> = (0..8).map(|_| Ws::connect_to(ws, "/")).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(echo(c, &format!("before {i}")), format!("before {i}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|n| {
            let stop = Arc::clone(&stop);
            let mut c = Ws::connect_to(ws, "/");
            std::thread::spawn(move || {
                let (mut sent, mut new_code) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let msg = format!("load {n} {sent}");
                    let reply = echo(&mut c, &msg);
                    sent += 1;
                    if reply != msg {
                        v2_pid(&reply);
                        new_code += 1;
                    }
                }
                (sent, new_code)
            })
        })
        .collect();

    // The change: echo replies name the code version and the worker's pid.
    let echo_rs = dev.join("src/app/echo.rs");
    let code = std::fs::read_to_string(&echo_rs).unwrap();
    let changed = code.replace("if PREFIX.is_empty() {", "if false {").replace(
        "self.buf.extend_from_slice(PREFIX.as_bytes());",
        "self.buf.extend_from_slice(format!(\"v2 {}: \", std::process::id()).as_bytes());",
    );
    assert!(
        changed.matches("v2 {}").count() == 1 && changed.contains("if false {"),
        "echo.rs changed: update the test"
    );
    let changed = changed.replace("const PREFIX", "#[allow(dead_code)]\nconst PREFIX");
    std::fs::write(&echo_rs, changed).unwrap();
    git(&dev, &["commit", "-q", "-am", "Echo replies name the version and the worker"]);
    git(&dev, &["push", "-q", "origin", "deploy-test"]);
    let rev = git(&dev, &["rev-parse", "HEAD"]);

    let (out, took) = deploy(&dev, &deploy_toml, &ssh, &net.dir.join("deploy-2.log"));
    eprintln!("second deploy (business code change) took {took:?}");
    assert!(out.contains(&format!("deploy test: revision {rev} (HEAD) to 3 hosts: m w2 w1")), "{out}");
    assert!(out.contains(&format!("revision {rev} live on m w2 w1")), "{out}");
    // Each host compiled the change from its own checkout (cargo's output, through ssh).
    let sections: Vec<&str> = out.split("\n== ").skip(1).collect();
    assert_eq!(sections.len(), 3, "{out}");
    for s in sections {
        assert!(s.contains("Compiling gatewayworker"), "a host did not build the change:\n{out}");
    }

    // Every host is at the new revision, built, its conf linked, its .env untouched.
    for (i, repo) in repos.iter().enumerate() {
        assert_eq!(git(repo, &["rev-parse", "HEAD"]), rev);
        assert_eq!(std::fs::read_to_string(repo.join(".env")).unwrap(), SECRET);
        let link = std::fs::read_link(repo.join("conf/active.toml")).unwrap();
        assert_eq!(Path::new("conf").join(link), Path::new(confs[i].0));
    }
    assert_eq!(wait_ready(&repos[0], Role::Gateway, 1), gateways, "the gateway was not restarted");
    let new: Vec<Vec<u32>> = repos[1..].iter().map(|r| wait_ready(r, Role::Worker, 2)).collect();
    for (o, n) in old.iter().zip(&new) {
        assert!(o.iter().all(|p| !n.contains(p)), "workers replaced: {old:?} -> {new:?}");
    }
    let on_host = |pid: u32| new.iter().position(|n| n.contains(&pid));

    // Clients connected before the deploy are still connected and get the new code.
    let mut seen = HashSet::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let pid = v2_pid(&echo(c, &format!("after {i}")));
        seen.insert(on_host(pid).unwrap_or_else(|| panic!("pid {pid} is no new worker: {new:?}")));
    }
    // New clients too; both worker machines serve the new code.
    while seen.len() < 2 {
        assert!(clients.len() < 30, "no client served by one of the worker machines: {seen:?}");
        let mut c = Ws::connect_to(ws, "/");
        seen.insert(on_host(v2_pid(&echo(&mut c, "newcomer"))).unwrap());
        clients.push(c);
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let (sent, new_code) = t.join().expect("a load client failed (disconnected or no reply)");
        assert!(sent > 0 && new_code > 0, "load: {sent} sent, {new_code} answered by the new code");
    }
    eprintln!("{TEST}: {:?} in all", t0.elapsed());
    drop(sshds);
    drop(net);
}

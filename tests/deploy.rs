//! Deploying: what `scripts/deploy.sh` relies on, on any machine (reload of a master machine,
//! the active conf link of `scripts/start.sh`, the dry run).

mod cluster;

use std::io::Write as _;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cluster::{Cluster, Gw, Spec};

fn text(o: &Output) -> String {
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

/// The project root (where `scripts/deploy.sh` is).
fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch directory for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gw-deploy-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The project's HEAD, or None (with the reason printed) when this is not a git checkout:
/// deploy.sh deploys a revision of the repository it runs from.
fn head(test: &str) -> Option<String> {
    let out = Command::new("git").args(["rev-parse", "HEAD"]).current_dir(root()).output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_string()),
        _ => {
            let _ = writeln!(std::io::stderr(), "\nSKIPPED {test}: the project is not a git checkout");
            None
        }
    }
}

/// `scripts/deploy.sh args...` with the test binary and `ssh` as the ssh command.
fn deploy(args: &[&str], ssh: &str) -> Output {
    Command::new(root().join("scripts/deploy.sh"))
        .args(args)
        .env("GW_BIN", cluster::BIN)
        .env("GW_DEPLOY_SSH", ssh)
        .output()
        .unwrap()
}

const STAGE: &str = r#"
[stages.test]
remote = "upstream"

[[stages.test.hosts]]
name = "w1"
ssh = "gw@w1.example"
machine_type = "worker"
conf = "conf/worker1.toml"
path = "/srv/gw"

[[stages.test.hosts]]
name = "m1"
ssh = "gw@m1.example"
port = 2222
machine_type = "master"
conf = "conf/master.toml"
path = "gw"

[[stages.test.hosts]]
name = "w2"
ssh = "gw@w2.example"
machine_type = "worker"
conf = "conf/worker2.toml"
path = "/srv/gw"

[[stages.test.hosts]]
name = "a1"
ssh = "gw@a1.example"
machine_type = "all"
conf = "conf/local.toml"
path = "/srv/gw"
"#;

/// Lines `[host] step: command` of a dry run (or `[host] step` of a real one).
fn steps(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let (host, rest) = l.strip_prefix('[')?.split_once("] ")?;
            let step = rest.split(':').next().unwrap();
            Some((host.to_string(), step.to_string()))
        })
        .collect()
}

/// The dry run prints every ssh command, master machines (and all-in-one machines) first,
/// then worker machines, each host's steps in order; nothing is run.
#[test]
fn dry_run_prints_masters_first_then_workers() {
    let Some(sha) = head("dry_run_prints_masters_first_then_workers") else { return };
    let dir = scratch("dry");
    let file = dir.join("deploy.toml");
    std::fs::write(&file, STAGE).unwrap();
    // An ssh command that fails if it is ever run.
    let out = deploy(&["--dry-run", "--file", file.to_str().unwrap(), "test"], "false -x");
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let got = steps(&all);
    let mut want = Vec::new();
    for h in ["m1", "a1", "w1", "w2"] {
        for s in ["update", "build", "conf", "start"] {
            want.push((h.to_string(), s.to_string()));
        }
    }
    assert_eq!(got, want, "{all}");
    assert!(all.contains(&format!("revision {sha} (HEAD) to 4 hosts: m1 a1 w1 w2")), "{all}");
    assert!(all.contains("[m1] update: false -x -p 2222 gw@m1.example 'cd gw && "), "{all}");
    assert!(
        all.contains(&format!("git fetch --quiet upstream && git checkout --quiet --detach {sha}'")),
        "{all}"
    );
    assert!(all.contains("[m1] conf: false -x -p 2222 gw@m1.example 'cd gw && "), "{all}");
    assert!(all.contains("test -f conf/master.toml && ln -sfn master.toml conf/active.toml'"), "{all}");
    assert!(all.contains("[w2] build: false -x gw@w2.example 'cd /srv/gw && "), "{all}");
    assert!(all.contains("&& cargo build --release --bin gatewayworker'"), "{all}");
    assert!(all.contains("then scripts/start.sh reload; else scripts/start.sh start -d -q; fi'"), "{all}");
    assert!(all.contains("dry run: nothing done"), "{all}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A mistake in deploy.toml is reported with the file and the key, before any host is
/// touched.
#[test]
fn bad_deploy_toml_names_the_key_and_the_file() {
    if head("bad_deploy_toml_names_the_key_and_the_file").is_none() {
        return;
    }
    let dir = scratch("bad");
    let file = dir.join("deploy.toml");
    let f = file.to_str().unwrap();
    let cases = [
        (
            STAGE.replace("machine_type = \"all\"", "machine_type = \"both\""),
            "test",
            "`stages.test.hosts[3].machine_type`: \"both\": expected all, master or worker",
        ),
        (
            STAGE.replace("path = \"gw\"", "path = \"my gw\""),
            "test",
            "`stages.test.hosts[1].path`: \"my gw\"",
        ),
        (STAGE.replace("ssh = \"gw@w2.example\"\n", ""), "test", "`stages.test.hosts[2].ssh`: missing"),
        (STAGE.replace("port = 2222", "port = \"2222\""), "test", "`stages.test.hosts[1].port`"),
        (STAGE.replace("remote = ", "remotes = "), "test", "`stages.test.remotes`: unknown key"),
        (STAGE.to_string(), "prod", "`stages.prod`: no such stage (stages: test)"),
        (STAGE.replace("[stages.test]", "[stages.test"), "test", "TOML parse error"),
    ];
    for (toml, stage, want) in cases {
        std::fs::write(&file, toml).unwrap();
        let out = deploy(&["--dry-run", "--file", f, stage], "false");
        let all = text(&out);
        assert!(!out.status.success(), "{all}");
        assert!(all.contains(&format!("deploy config error in {f}")), "{all}");
        assert!(all.contains(want), "want {want:?} in:\n{all}");
        assert!(!all.contains("[m1]"), "{all}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The deploy stops at the first failing step and says which host, which step, and which
/// hosts were not deployed; no later host is contacted.
#[test]
fn deploy_stops_at_the_first_failing_host() {
    let Some(sha) = head("deploy_stops_at_the_first_failing_host") else { return };
    let dir = scratch("fail");
    let file = dir.join("deploy.toml");
    std::fs::write(&file, STAGE).unwrap();
    // A stand-in for ssh: logs each call, and fails the build on a1 like a compile error.
    let log = dir.join("calls.log");
    let fake = dir.join("fake-ssh");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> {log}\ncase \"$*\" in *a1.example*cargo\\ build*) echo 'error[E0425]: cannot find value' >&2; exit 101;; esac\nexit 0\n",
        log = log.display()
    );
    std::fs::write(&fake, script).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = deploy(&["--file", file.to_str().unwrap(), "test"], fake.to_str().unwrap());
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("error[E0425]"), "the host's own error is shown: {all}");
    assert!(all.contains("deploy: host a1 (step build) failed (exit 101)"), "{all}");
    assert!(all.contains("deploy: hosts deployed: m1\n"), "{all}");
    assert!(all.contains("deploy: hosts not yet deployed: a1 w1 w2\n"), "{all}");
    let calls = std::fs::read_to_string(&log).unwrap();
    let hosts: Vec<&str> =
        calls.lines().map(|l| l.split_whitespace().find(|w| w.starts_with("gw@")).unwrap()).collect();
    assert_eq!(hosts, ["gw@m1.example"; 4].iter().chain(&["gw@a1.example"; 2]).copied().collect::<Vec<_>>());
    assert!(calls.lines().next().unwrap().contains(&format!("--detach {sha}")), "{calls}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without --conf and $GW_CONF the binary uses conf/active.toml (the link a deploy makes)
/// when there is one, else conf/dev.toml.
#[test]
fn default_conf_is_the_active_link() {
    let dir = scratch("active");
    std::fs::create_dir_all(dir.join("conf")).unwrap();
    std::fs::write(
        dir.join("conf/worker1.toml"),
        "machine_type = \"worker\"\nrun_dir = \"run\"\n[worker]\napp = \"echo\"\n",
    )
    .unwrap();
    let status = || {
        let out = Command::new(cluster::BIN).arg("status").current_dir(&dir).env_remove("GW_CONF").output();
        text(&out.unwrap())
    };
    let before = status();
    assert!(before.contains("conf/dev.toml"), "{before}");
    std::os::unix::fs::symlink("worker1.toml", dir.join("conf/active.toml")).unwrap();
    assert!(status().contains("gatewayworker[conf/active.toml] not run"), "{}", status());
    let _ = std::fs::remove_dir_all(&dir);
}

//! Deploying: what the deploy playbook (`deploy/`) relies on, on any machine (reload of a
//! master machine, the active conf link), and the advertised address of a machine behind
//! NAT or in a container (inner ports bound to 0.0.0.0, another address announced).

mod cluster;
mod netns;

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cluster::{Cluster, Gw, Spec, Ws};
use netns::{Conf, Machine, Net, register_list, served_by};

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

/// Without --conf and $GW_CONF the binary uses conf/active.toml (the link a deploy makes)
/// when there is one, else conf/dev.toml.
#[test]
fn default_conf_is_the_active_link() {
    let dir = std::env::temp_dir().join(format!("gw-deploy-{}-active", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
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

/// The master machine binds its inner ports to 0.0.0.0 and advertises another address of
/// its own (standing for the address a NAT or a container host forwards to it): the register
/// lists that address, the worker machine links to the gateway through it, and client_ids
/// carry it, so a GatewayClient anywhere routes to the right gateway.
#[test]
fn inner_ports_bound_to_any_address_are_announced_by_the_advertised_one() {
    const TEST: &str = "inner_ports_bound_to_any_address_are_announced_by_the_advertised_one";
    if netns::skipped(TEST, &[]) {
        return;
    }
    let mut net = Net::new();
    let (m, w) = (net.host("master"), net.host("worker"));
    let o = m.ip.octets();
    let advertised = Ipv4Addr::new(o[0], o[1], o[2], 200);
    let out = m.command("ip").args(["addr", "add", &format!("{advertised}/32"), "dev", "eth0"]).output();
    assert!(out.is_ok_and(|o| o.status.success()), "adding the advertised address to {}", m.name);
    let register = m.addr(Conf::REGISTER_PORT);
    let mut conf = Conf::master(&m, &[register], 1);
    conf.lan_ip = Ipv4Addr::UNSPECIFIED;
    conf.extra = format!("advertise_ip = \"{advertised}\"\n");
    let master = Machine::start(&m, conf);
    let worker = Machine::start(&w, Conf::worker(&w, &[register], 2, "probe"));

    let inner = format!("{advertised}:{}", Conf::START_PORT);
    assert_eq!(register_list(register), Some(vec![inner.clone()]), "the register's gateway list");
    let at_master = master.inner_links();
    assert!(
        at_master.iter().any(|(t, local, _)| t == "tcp" && *local == inner),
        "the gateway accepted the workers on its advertised address: {at_master:?}"
    );
    let links = worker.inner_links();
    assert_eq!(links.len(), 2, "2 workers x 1 gateway: {links:?}");
    assert!(links.iter().all(|(t, _, foreign)| t == "tcp" && *foreign == inner), "{links:?}");

    // client_id = hex(ip, port, connection id) of the gateway: the advertised address.
    let want = format!("{:08x}{:04x}", u32::from(advertised), Conf::START_PORT);
    let mut seen = HashSet::new();
    for _ in 0..6 {
        let mut c = Ws::connect_to(m.addr(Conf::WS_PORT), "/");
        let id = c.id();
        assert!(id.starts_with(&want), "client_id {id} does not carry {inner}");
        seen.insert(served_by(&mut c));
    }
    assert!(seen.iter().all(|p| worker.pids("worker").contains(p)), "{seen:?}");
}

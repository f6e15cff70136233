//! Two registers (network namespaces, see `tests/netns/mod.rs`): machine m1 runs everything
//! (register, gateway, business workers), machine m2 is a master (register, gateway),
//! worker machines join; every machine lists both registers. A register that dies is rebuilt
//! from re-registration within about a second and no client notices; with one register
//! down the cluster keeps working and a new worker machine still finds the gateways; a
//! gateway machine that leaves is dropped by the workers and linked again when it returns.

mod cluster;
mod netns;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cluster::Ws;
use gatewayworker::api::GatewayClient;
use netns::{Conf, Machine, Net, Pinger, register_list, served_by, wait_until};
use serde_json::json;

/// Wait until `register` lists exactly `gateways` and counts `conns` connections (every
/// gateway and every business worker registered again). Returns how long that took.
fn wait_rebuilt(
    m: &Machine,
    register: SocketAddr,
    gateways: &HashSet<String>,
    conns: u64,
    since: Instant,
) -> Duration {
    wait_until(&format!("register {register} rebuilt"), Duration::from_secs(20), || {
        let list: HashSet<String> = register_list(register)?.into_iter().collect();
        let rows = m.rows("register");
        (list == *gateways && rows.len() == 1 && rows[0].connections == conns).then_some(())
    });
    since.elapsed()
}

/// Number of business-worker links of `m` (worker side): (unix, tcp).
fn worker_links(m: &Machine) -> (usize, usize) {
    let links = m.inner_links();
    // A worker's side of a link: its foreign address is the gateway (a socket path or the
    // gateway's inner port); a gateway's side has the worker as foreign address.
    let to_gateway = |f: &str| f.ends_with(".sock") || f.ends_with(&format!(":{}", Conf::START_PORT));
    let unix = links.iter().filter(|(t, _, f)| t == "unix" && to_gateway(f)).count();
    let tcp = links.iter().filter(|(t, _, f)| t == "tcp" && to_gateway(f)).count();
    (unix, tcp)
}

#[test]
fn two_registers_one_dies_and_comes_back_and_no_client_notices() {
    if netns::skipped("two_registers_one_dies_and_comes_back_and_no_client_notices", &[]) {
        return;
    }
    let mut net = Net::new();
    let (h_m1, h_m2, h_w1, h_w2) = (net.host("m1"), net.host("m2"), net.host("w1"), net.host("w2"));
    let (r1, r2) = (h_m1.addr(Conf::REGISTER_PORT), h_m2.addr(Conf::REGISTER_PORT));
    let registers = [r1, r2];
    let g1 = h_m1.addr(Conf::START_PORT).to_string();
    let g2 = h_m2.addr(Conf::START_PORT).to_string();
    let both: HashSet<String> = [g1.clone(), g2.clone()].into();
    let m1 = Machine::start(&h_m1, Conf::all(&h_m1, &registers, 1, 2, "probe"));
    let mut m2 = Machine::start(&h_m2, Conf::master(&h_m2, &registers, 1));
    let w1 = Machine::start(&h_w1, Conf::worker(&h_w1, &registers, 2, "probe"));

    // Every business worker links to both gateways: m1's own through its Unix socket, the
    // other machine's gateway (and, from w1, both) over TCP.
    wait_until("m1 workers linked to both gateways", Duration::from_secs(20), || {
        (worker_links(&m1) == (2, 2)).then_some(())
    });
    wait_until("w1 workers linked to both gateways", Duration::from_secs(20), || {
        (worker_links(&w1) == (0, 4)).then_some(())
    });
    assert!(m1.log().contains(&format!("linked to gateway {g1} (unix:")), "{}", m1.log());
    assert!(m1.log().contains(&format!("linked to gateway {g2} ({g2})")), "{}", m1.log());

    // Clients on both gateway machines reach each other (client ids route across machines).
    let (ws1, ws2) = (h_m1.addr(Conf::WS_PORT), h_m2.addr(Conf::WS_PORT));
    let mut c1 = Ws::connect_to(ws1, "/");
    let mut c2 = Ws::connect_to(ws2, "/");
    let (id1, id2) = (c1.id(), c2.id());
    c1.ok(json!({"op": "send_to_client", "id": id2, "msg": "from m1"}));
    c2.recv_where(|t| t == "from m1");
    c2.ok(json!({"op": "send_to_client", "id": id1, "msg": "from m2"}));
    c1.recv_where(|t| t == "from m2");
    let mut gc = GatewayClient::new(&[&r1.to_string(), &r2.to_string()], Conf::SECRET).unwrap();
    assert_eq!(gc.get_all_client_count().unwrap(), 2);

    // Steady traffic through m1's gateway during everything that follows.
    let load: Vec<Ws> = (0..6).map(|_| Ws::connect_to(ws1, "/")).collect();
    let pinger = Pinger::start(load, Duration::from_secs(10));
    pinger.wait_served("load running", Instant::now(), Duration::from_secs(20), |_| true);

    // Each register dies in turn (its master starts a new one at once): rebuilt from the
    // gateways' and workers' re-registration (2 gateways + 4 workers).
    for (m, r) in [(&m1, r1), (&m2, r2)] {
        let pid = m.pids("register")[0];
        let killed = Instant::now();
        // SAFETY: kill has no memory effects.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        let took = wait_rebuilt(m, r, &both, 6, killed);
        eprintln!("register {r} killed: rebuilt in {took:?}");
        assert!(took < Duration::from_secs(3), "register {r} rebuilt in {took:?}");
        assert_ne!(m.pids("register"), vec![pid]);
    }
    let since = Instant::now();
    pinger.wait_served("load after the register deaths", since, Duration::from_secs(20), |_| true);
    assert_eq!(gc.get_all_client_count().unwrap(), 8);

    // Machine m2 (register 2 and gateway 2) goes away. Its own client goes with it.
    drop(c2);
    m2.stop();
    wait_until("workers dropped gateway 2", Duration::from_secs(20), || {
        (worker_links(&m1) == (2, 0) && worker_links(&w1) == (0, 2)).then_some(())
    });
    assert_eq!(register_list(r1).unwrap(), vec![g1.clone()]);
    // A GatewayClient listing the dead register first falls back to the live one.
    let mut gc_r2_first = GatewayClient::new(&[&r2.to_string(), &r1.to_string()], Conf::SECRET).unwrap();
    assert_eq!(gc_r2_first.get_all_client_count().unwrap(), 7);
    gc_r2_first.send_to_all("register 2 is down").unwrap();
    c1.recv_where(|t| t == "register 2 is down");

    // A new worker machine starts while register 2 is down: it finds the gateway through
    // register 1 and gets new clients (it has the fewest).
    let w2 = Machine::start(&h_w2, Conf::worker(&h_w2, &registers, 2, "probe"));
    assert_eq!(worker_links(&w2), (0, 2));
    let w2_workers = w2.pids("worker");
    let mut newcomers: Vec<Ws> = Vec::new();
    while !newcomers.iter_mut().any(|c| w2_workers.contains(&served_by(c))) {
        assert!(newcomers.len() < 10, "no new client served by the new worker machine");
        newcomers.push(Ws::connect_to(ws1, "/"));
    }

    // m2 comes back: register 2 is rebuilt (2 gateways, 6 workers) and every worker links to
    // gateway 2 again.
    let back = Instant::now();
    m2.restart();
    let took = wait_rebuilt(&m2, r2, &both, 8, back);
    eprintln!("machine m2 back: register rebuilt {took:?} after its start");
    wait_until("workers linked to gateway 2 again", Duration::from_secs(20), || {
        (worker_links(&m1) == (2, 2) && worker_links(&w1) == (0, 4) && worker_links(&w2) == (0, 4))
            .then_some(())
    });
    let mut c3 = Ws::connect_to(ws2, "/");
    let id3 = c3.id();
    c1.ok(json!({"op": "send_to_client", "id": id3, "msg": "welcome back"}));
    c3.recv_where(|t| t == "welcome back");
    let total = 6 + 1 + newcomers.len() + 1;
    assert_eq!(gc_r2_first.get_all_client_count().unwrap(), total);

    // Nothing was lost and nobody was disconnected by any of it.
    let logs = pinger.finish();
    assert!(logs.iter().all(|l| l.lost == 0 && l.answered > 0), "{logs:?}");
    for c in newcomers.iter_mut().chain([&mut c1, &mut c3]) {
        c.id();
    }
    drop((m1, m2, w1, w2, net));
}

//! A cluster across machines (network namespaces, see `tests/netns/mod.rs`): one master
//! machine (register + two gateway processes), two worker machines (business workers, the
//! probe app), the test process as the client machine. Clients exchange messages through
//! the master's gateways with workers on both worker machines; a worker machine that dies,
//! and one that silently drops off the network, are routed around with no client
//! disconnected.

mod cluster;
mod netns;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use cluster::Ws;
use gatewayworker::api::{ClientId, GatewayClient};
use netns::{Conf, Machine, Net, Pinger, served_by};
use serde_json::json;

const CLIENTS: usize = 12;

#[test]
fn worker_machines_serve_clients_and_are_routed_around_when_they_go() {
    if netns::skipped("worker_machines_serve_clients_and_are_routed_around_when_they_go", &[]) {
        return;
    }
    let mut net = Net::new();
    let (m, h1, h2) = (net.host("master"), net.host("worker1"), net.host("worker2"));
    let register = m.addr(Conf::REGISTER_PORT);
    let master = Machine::start(&m, Conf::master(&m, &[register], 2));
    let mut w1 = Machine::start(&h1, Conf::worker(&h1, &[register], 2, "probe"));
    let mut w2 = Machine::start(&h2, Conf::worker(&h2, &[register], 2, "probe"));

    // Worker machines link to the master's gateways over TCP (the gateways are on another
    // host: no Unix socket), each worker to each gateway process.
    let gateways: HashSet<String> = (0..2).map(|i| m.addr(Conf::START_PORT + i).to_string()).collect();
    for w in [&w1, &w2] {
        let links = w.inner_links();
        assert_eq!(links.len(), 4, "2 workers x 2 gateways on {}: {links:?}", w.host.name);
        assert!(links.iter().all(|(t, _, _)| t == "tcp"), "{links:?}");
        assert_eq!(links.iter().map(|(_, _, f)| f.clone()).collect::<HashSet<_>>(), gateways);
    }
    let at_master = master.inner_links();
    assert_eq!(at_master.len(), 8, "{at_master:?}");
    for w in [&h1, &h2] {
        let from_w = at_master.iter().filter(|(t, _, f)| t == "tcp" && f.starts_with(&format!("{}:", w.ip)));
        assert_eq!(from_w.count(), 4, "links from {}: {at_master:?}", w.name);
    }

    // Clients on the master's public port; their ids carry the master's LAN address.
    let ws_addr = m.addr(Conf::WS_PORT);
    let mut clients: Vec<Ws> = (0..CLIENTS).map(|_| Ws::connect_to(ws_addr, "/")).collect();
    let ids: Vec<String> = clients.iter_mut().map(|c| c.id()).collect();
    for id in &ids {
        let gw = id.parse::<ClientId>().unwrap().gateway();
        assert!(gateways.contains(&gw.to_string()), "client id {id} routes to {gw}");
    }
    // Both worker machines serve some of them.
    let serving: Vec<u32> = clients.iter_mut().map(served_by).collect();
    let on = |w: &Machine, pid: &u32| w.pids("worker").contains(pid);
    assert!(serving.iter().any(|p| on(&w1, p)) && serving.iter().any(|p| on(&w2, p)), "{serving:?}");
    for (i, c) in clients.iter_mut().enumerate() {
        c.ok(json!({"op": "bind_uid", "uid": format!("u{i}")}));
        c.ok(json!({"op": "join_group", "group": if i % 2 == 0 { "even" } else { "odd" }}));
    }

    // send_to_all, a group, uids and one client on the other gateway process, each sent by
    // a client served on one worker machine or the other.
    let a = serving.iter().position(|p| on(&w1, p)).unwrap();
    let b = serving.iter().position(|p| on(&w2, p)).unwrap();
    clients[a].ok(json!({"op": "send_to_all", "msg": "to all"}));
    for c in clients.iter_mut() {
        c.recv_where(|t| t == "to all");
    }
    clients[b].ok(json!({"op": "send_to_group", "groups": ["even"], "msg": "to even"}));
    clients[a].ok(json!({"op": "send_to_uid", "uids": ["u3", "u8"], "msg": "to uids"}));
    let other = (0..CLIENTS).find(|&i| {
        ids[i].parse::<ClientId>().unwrap().gateway() != ids[b].parse::<ClientId>().unwrap().gateway()
    });
    if let Some(o) = other {
        clients[b].ok(json!({"op": "send_to_client", "id": ids[o], "msg": "to one"}));
        clients[o].recv_where(|t| t == "to one");
    }
    let mut gc = GatewayClient::new(&[&register.to_string()], Conf::SECRET).unwrap();
    assert_eq!(gc.get_all_client_count().unwrap(), CLIENTS);
    gc.send_to_all("end of fan-out").unwrap();
    for (i, c) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            c.recv_where(|t| t == "to even");
        }
        if i == 3 || i == 8 {
            c.recv_where(|t| t == "to uids");
        }
        c.recv_where(|t| t == "end of fan-out");
        if other != Some(i) {
            c.assert_no_backlog();
        }
    }

    // Worker machine 2 dies: its clients move to worker machine 1 on their next message.
    let pinger = Pinger::start(clients, Duration::from_secs(1));
    pinger.wait_served("every client answered", Instant::now(), Duration::from_secs(20), |_| true);
    let dead = w2.pids("worker");
    let killed = Instant::now();
    w2.kill();
    let w1_workers = w1.pids("worker");
    let took = pinger.wait_served(
        "clients served by worker1 after the kill",
        killed,
        Duration::from_secs(20),
        |p| w1_workers.contains(&p),
    );
    eprintln!("worker machine killed: every client served again after {took:?}");
    assert!(!dead.is_empty() && master.log().contains("business worker"), "{}", master.log());

    // It comes back: the gateways take its workers again; new clients go to them (they
    // have the fewest clients).
    w2.restart();
    let w2_workers = w2.pids("worker");
    let mut newcomers: Vec<Ws> = Vec::new();
    while !newcomers.iter_mut().any(|c| w2_workers.contains(&served_by(c))) {
        assert!(newcomers.len() < 10, "no new client served by the restarted worker machine");
        newcomers.push(Ws::connect_to(ws_addr, "/"));
    }

    // Worker machine 1 drops off the network without a word (cable cut): the gateways
    // notice within the inner links' TCP timeout and its clients move to worker machine 2.
    let cut = Instant::now();
    h1.unplug();
    let took =
        pinger.wait_served("clients served by worker2 after the cut", cut, Duration::from_secs(40), |p| {
            w2_workers.contains(&p)
        });
    eprintln!("worker machine unplugged: every client served again after {took:?}");
    assert!(took < Duration::from_secs(25), "took {took:?}");
    let logs = pinger.finish();
    let lost: u64 = logs.iter().map(|l| l.lost).sum();
    let answered: u64 = logs.iter().map(|l| l.answered).sum();
    eprintln!("{answered} answers, {lost} requests lost in the kill and the cut");
    for mut c in newcomers {
        assert_eq!(c.ok(json!({"op": "whoami"})).as_str().map(str::len), Some(20));
    }
    // Put the cable back so that machine stops like the others.
    h1.plug();
    w1.stop();
    drop(w2);
    drop(master);
    drop(net);
}

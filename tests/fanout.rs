//! Sends to uids and groups reach only the gateways that hold them (membership
//! notifications, `docs/protocol.md` §7), from a business worker and from a GatewayClient,
//! and membership changes racing with sends lose nothing the causal rules promise.

mod cluster;

use std::collections::{BTreeMap, HashMap};

use cluster::{Cluster, Gw, Spec, Ws};
use gatewayworker::api::GatewayClient;
use gatewayworker::internals::stats::Role;
use serde_json::json;

const GATEWAYS: u16 = 4;

fn cluster(workers: u16) -> Cluster {
    Cluster::start(Spec::new("probe", workers, vec![Gw::new("websocket", GATEWAYS)]))
}

/// The gateway (0-based process index) of a client, from the inner port in its client_id.
fn gateway_of(c: &Cluster, id: &str) -> usize {
    let port = u16::from_str_radix(&id[8..12], 16).unwrap();
    (port - c.spec.gateways[0].start_port) as usize
}

/// A connected client: its socket, client_id, gateway and the pid of its business worker.
struct Client {
    ws: Ws,
    id: String,
    gw: usize,
    worker: u64,
}

fn connect(c: &Cluster) -> Client {
    let mut ws = c.ws(0);
    let id = ws.id();
    let worker = ws.ok(json!({"op": "worker"}))["pid"].as_u64().unwrap();
    Client { gw: gateway_of(c, &id), ws, id, worker }
}

/// Connect until `want(clients)` holds; every client is kept (a client that leaves sends
/// events of its own).
fn connect_until(c: &Cluster, want: impl Fn(&[Client]) -> bool) -> Vec<Client> {
    let mut all = Vec::new();
    while !want(&all) {
        assert!(all.len() < 200, "clients never spread over the gateways and workers");
        all.push(connect(c));
    }
    all
}

/// `total_request` of each gateway process, by index.
fn requests(c: &Cluster) -> BTreeMap<usize, u64> {
    let snap = c.snapshot().unwrap();
    let rows = snap.rows.iter().filter(|r| r.role == Role::Gateway);
    rows.map(|r| (r.id as usize, r.total_request)).collect()
}

fn delta(before: &BTreeMap<usize, u64>, after: &BTreeMap<usize, u64>) -> Vec<u64> {
    (0..GATEWAYS as usize).map(|g| after[&g] - before[&g]).collect()
}

/// Every client got `marker`, so every gateway executed what was sent before it.
fn all_got(clients: &mut [Client], marker: &str) {
    for cl in clients.iter_mut() {
        cl.ws.recv_where(|t| t == marker);
    }
}

#[test]
fn a_send_to_a_uid_or_group_reaches_only_the_gateways_that_hold_it() {
    let c = cluster(1);
    let mut all = connect_until(&c, |cl| (0..GATEWAYS as usize).all(|g| cl.iter().any(|x| x.gw == g)));
    // One client per gateway: the member on gateway 0, the sender on gateway 1.
    let mut one: Vec<Client> = Vec::new();
    for g in 0..GATEWAYS as usize {
        let i = all.iter().position(|x| x.gw == g).unwrap();
        one.push(all.remove(i));
    }
    one[0].ws.ok(json!({"op": "bind_uid", "uid": "solo"}));
    one[0].ws.ok(json!({"op": "join_group", "group": "room"}));
    let n = 20;

    // From the business worker.
    let before = requests(&c);
    for k in 0..n {
        let uid = json!({"op": "send_to_uid", "uids": ["solo"], "msg": format!("u{k}"), "quiet": true});
        one[1].ws.send(&uid.to_string());
        let group = json!({"op": "send_to_group", "groups": ["room"], "msg": format!("g{k}"), "quiet": true});
        one[1].ws.send(&group.to_string());
    }
    one[1].ws.ok(json!({"op": "send_to_all", "msg": "marker"}));
    for k in 0..n {
        assert_eq!(one[0].ws.recv_where(|t| t.starts_with('u')), format!("u{k}"));
        assert_eq!(one[0].ws.recv_where(|t| t.starts_with('g')), format!("g{k}"));
    }
    all_got(&mut one, "marker");
    let d = delta(&before, &requests(&c));
    // Gateway 0: the sends and the marker. Gateway 1: the sender's requests, the reply to
    // the last one and the marker. The others: the marker only.
    assert_eq!(d, [2 * n + 1, 2 * n + 3, 1, 1], "packets per gateway");

    // From a GatewayClient: its first call opens (and subscribes) a connection to every
    // gateway; the replies to a query come after the snapshots.
    let register = format!("127.0.0.1:{}", c.register_port);
    let mut gc = GatewayClient::new(&[&register], "").unwrap();
    assert_eq!(gc.get_all_client_count().unwrap(), GATEWAYS as usize + all.len());
    let before = requests(&c);
    for k in 0..n {
        gc.send_to_uid(&["solo"], format!("cu{k}")).unwrap();
        gc.send_to_group(&["room"], format!("cg{k}")).unwrap();
    }
    assert_eq!(gc.get_client_id_by_uid("solo").unwrap().len(), 1);
    assert_eq!(gc.get_client_count_by_group("room").unwrap(), 1);
    gc.send_to_all("marker2").unwrap();
    for k in 0..n {
        assert_eq!(one[0].ws.recv_where(|t| t.starts_with("cu")), format!("cu{k}"));
        assert_eq!(one[0].ws.recv_where(|t| t.starts_with("cg")), format!("cg{k}"));
    }
    all_got(&mut one, "marker2");
    let d = delta(&before, &requests(&c));
    assert_eq!(d, [2 * n + 3, 1, 1, 1], "packets per gateway (two queries to gateway 0)");

    // A uid bound by the GatewayClient itself is reached at once.
    let fresh = one[2].id.clone();
    gc.bind_uid(fresh.as_str(), "fresh").unwrap();
    gc.send_to_uid(&["fresh"], "to-fresh").unwrap();
    assert_eq!(one[2].ws.recv_where(|t| t == "to-fresh"), "to-fresh");
    c.stop();
}

/// Messages received by a client after the test's own traffic, until `end` (sent to it
/// last): each text with how many times it came.
fn rest_until_end(cl: &mut Client) -> HashMap<String, usize> {
    cl.ws.ok(json!({"op": "send_to_current_client", "msg": "end"}));
    let mut seen = HashMap::new();
    loop {
        let t = cl.ws.recv_text();
        if t == "end" {
            return seen;
        }
        if !t.starts_with('{') {
            *seen.entry(t).or_insert(0) += 1;
        }
    }
}

/// One gateway's share of the race: its two clients, on different business workers, take
/// turns to move into a fresh uid or group and send to it in the same callback (the
/// worker's own change), then to send to the other's (a change made at this gateway before
/// the event that causes the send), while the other gateways do the same and membership
/// notifications cross every link. Some rounds also join and leave `stable`, which other
/// gateways hold throughout.
fn mover_rounds(g: usize, mut pair: [Client; 2], rounds: usize) -> [Client; 2] {
    for k in 0..rounds {
        let (m, t) = if k % 2 == 0 { (0, 1) } else { (1, 0) };
        let (join, send, leave, list) = if k % 4 < 2 {
            ("bind_uid", "send_to_uid", "unbind_uid", "uids")
        } else {
            ("join_group", "send_to_group", "leave_group", "groups")
        };
        let name = format!("n{g}-{k}");
        let key = if join == "bind_uid" { "uid" } else { "group" };
        let own = format!("own:{g}:{k}");
        let mut batch = vec![json!({"op": join, key: name}), json!({"op": send, list: [name], "msg": own})];
        if g >= 2 && k % 3 == 0 {
            batch.push(json!({"op": "join_group", "group": "stable"}));
        }
        pair[m].ws.ok(json!({"op": "batch", "ops": batch}));
        assert_eq!(pair[m].ws.recv_where(|x| x == own), own);
        let cause = format!("cause:{g}:{k}");
        pair[t].ws.ok(json!({"op": send, list: [name], "msg": cause}));
        assert_eq!(pair[m].ws.recv_where(|x| x == cause), cause, "{} on gateway {g}", pair[m].id);
        pair[m].ws.ok(json!({"op": leave, key: name}));
        if g >= 2 && k % 3 == 0 {
            pair[m].ws.ok(json!({"op": "leave_group", "group": "stable"}));
        }
    }
    pair
}

#[test]
fn membership_changes_racing_with_sends_lose_nothing() {
    let c = cluster(2);
    // Per gateway: a client of each business worker (the movers), and one more for the
    // GatewayClient.
    let workers_of = |cl: &[Client]| {
        let mut pids: Vec<u64> = cl.iter().map(|x| x.worker).collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    };
    let mut all = connect_until(&c, |cl| {
        let pids = workers_of(cl);
        pids.len() == 2
            && (0..GATEWAYS as usize).all(|g| {
                pids.iter().all(|w| cl.iter().any(|x| x.gw == g && x.worker == *w))
                    && cl.iter().filter(|x| x.gw == g).count() >= 3
            })
    });
    let workers = workers_of(&all);
    let mut take = |pred: &dyn Fn(&Client) -> bool| {
        let i = all.iter().position(pred).unwrap();
        all.remove(i)
    };
    let mut pairs = Vec::new();
    let mut gc_clients = Vec::new();
    for g in 0..GATEWAYS as usize {
        let a = take(&|x: &Client| x.gw == g && x.worker == workers[0]);
        let b = take(&|x: &Client| x.gw == g && x.worker == workers[1]);
        pairs.push([a, b]);
        gc_clients.push(take(&|x: &Client| x.gw == g));
    }
    // `stable` is held by gateways 0 and 1 throughout.
    for cl in &mut gc_clients[..2] {
        cl.ws.ok(json!({"op": "join_group", "group": "stable"}));
    }
    let register = format!("127.0.0.1:{}", c.register_port);
    let rounds = 40;
    let (pairs, gc_clients) = std::thread::scope(|s| {
        let movers: Vec<_> = pairs
            .into_iter()
            .enumerate()
            .map(|(g, pair)| s.spawn(move || mover_rounds(g, pair, rounds)))
            .collect();
        let gc = s.spawn(move || {
            let mut gc = GatewayClient::new(&[&register], "").unwrap();
            for k in 0..rounds {
                gc.send_to_group(&["stable"], format!("stable:{k}")).unwrap();
                for (g, cl) in gc_clients.iter_mut().enumerate() {
                    let (group, uid) = (format!("gc{g}-{k}"), format!("gcu{g}-{k}"));
                    gc.join_group(cl.id.as_str(), &group).unwrap();
                    gc.send_to_group(&[&group], format!("gc:{g}:{k}")).unwrap();
                    gc.bind_uid(cl.id.as_str(), &uid).unwrap();
                    gc.send_to_uid(&[&uid], format!("gcu:{g}:{k}")).unwrap();
                    gc.leave_group(cl.id.as_str(), &group).unwrap();
                    gc.unbind_uid(cl.id.as_str(), &uid).unwrap();
                }
                for (g, cl) in gc_clients.iter_mut().enumerate() {
                    for want in [format!("gc:{g}:{k}"), format!("gcu:{g}:{k}")] {
                        assert_eq!(cl.ws.recv_where(|x| x == want), want);
                    }
                    if g < 2 {
                        let want = format!("stable:{k}");
                        assert_eq!(cl.ws.recv_where(|x| x == want), want);
                    }
                }
            }
            gc_clients
        });
        let pairs: Vec<[Client; 2]> = movers.into_iter().map(|h| h.join().unwrap()).collect();
        (pairs, gc.join().unwrap())
    });
    // Nothing came twice, and nothing came after its round that should have (the texts
    // already consumed above were each received once).
    let mut all: Vec<Client> = pairs.into_iter().flatten().chain(gc_clients).collect();
    for cl in &mut all {
        let rest = rest_until_end(cl);
        let dup: Vec<_> = rest.iter().filter(|(t, n)| **n > 1 || !t.starts_with("stable:")).collect();
        assert!(dup.is_empty(), "{} got again or unexpectedly: {dup:?}", cl.id);
    }
    c.stop();
}

//! The Gateway API end to end, driven through the `probe` application: two gateway
//! processes, two business workers, real websocket clients.

mod cluster;

use std::collections::{BTreeSet, HashSet};

use cluster::{Cluster, Gw, Spec, Ws, wait_for};
use serde_json::{Value as Json, json};

/// Connect until clients sit on both gateway processes and both workers; returns them
/// with their client_id, gateway inner port (from the id) and worker pid.
fn spread_clients(c: &Cluster, n: usize) -> Vec<(Ws, String)> {
    let mut clients = Vec::new();
    let mut ports = HashSet::new();
    let mut workers = HashSet::new();
    while clients.len() < n || ports.len() < 2 || workers.len() < 2 {
        assert!(clients.len() < 400, "clients never spread over both gateways and workers");
        let mut ws = c.ws(0);
        let id = ws.id();
        ports.insert(id[8..12].to_string());
        workers.insert(ws.ok(json!({"op": "worker"}))["pid"].as_u64().unwrap());
        clients.push((ws, id));
    }
    clients
}

fn cluster() -> Cluster {
    Cluster::start(Spec::new("probe", 2, vec![Gw::new("websocket", 2)]))
}

#[test]
fn send_to_all_reaches_every_client_on_both_gateways_through_both_workers() {
    let c = cluster();
    let mut clients = spread_clients(&c, 6);
    // Issue the broadcast from clients served by each worker.
    let mut by_worker: Vec<(u64, usize)> = Vec::new();
    for (i, (ws, _)) in clients.iter_mut().enumerate() {
        let pid = ws.ok(json!({"op": "worker"}))["pid"].as_u64().unwrap();
        if !by_worker.iter().any(|(p, _)| *p == pid) {
            by_worker.push((pid, i));
        }
    }
    assert_eq!(by_worker.len(), 2);
    for (pid, sender) in by_worker {
        let msg = format!("hello from worker {pid}");
        clients[sender].0.ok(json!({"op": "send_to_all", "msg": msg}));
        for (ws, _) in clients.iter_mut() {
            assert_eq!(ws.recv_where(|t| t.starts_with("hello from")), msg);
        }
    }
    // Restricted to a list, with an exclusion.
    let ids: Vec<String> = clients.iter().map(|(_, id)| id.clone()).collect();
    clients[0].0.ok(
        json!({"op": "send_to_all", "msg": "listed", "only": [ids[1], ids[2], ids[3]], "exclude": [ids[2]]}),
    );
    clients[0].0.ok(json!({"op": "send_to_all", "msg": "marker"}));
    for (i, (ws, _)) in clients.iter_mut().enumerate() {
        let got = ws.recv_where(|t| t == "listed" || t == "marker");
        if i == 1 || i == 3 {
            assert_eq!(got, "listed", "client {i}");
            assert_eq!(ws.recv_where(|t| t == "marker"), "marker");
        } else {
            assert_eq!(got, "marker", "client {i} must not get the listed message");
        }
    }
    // Exclusion only.
    clients[0].0.ok(json!({"op": "send_to_all", "msg": "not you", "exclude": [ids[0], ids[4]]}));
    clients[1].0.ok(json!({"op": "send_to_all", "msg": "marker2"}));
    for (i, (ws, _)) in clients.iter_mut().enumerate() {
        let got = ws.recv_where(|t| t == "not you" || t == "marker2");
        assert_eq!(got == "not you", i != 0 && i != 4, "client {i}");
    }
    c.stop();
}

#[test]
fn groups_uids_and_exclusions() {
    let c = cluster();
    let mut cl = spread_clients(&c, 5);
    let ids: Vec<String> = cl.iter().map(|(_, id)| id.clone()).collect();
    // 0,1,2 in g1; 2,3 in g2; 1 and 3 bound to uid u1, 4 to u2.
    for i in [0, 1, 2] {
        cl[i].0.ok(json!({"op": "join_group", "group": "g1"}));
    }
    cl[0].0.ok(json!({"op": "join_group", "id": ids[2], "group": "g2"}));
    cl[3].0.ok(json!({"op": "join_group", "group": "g2"}));
    cl[1].0.ok(json!({"op": "bind_uid", "uid": "u1"}));
    cl[0].0.ok(json!({"op": "bind_uid", "id": ids[3], "uid": "u1"}));
    cl[4].0.ok(json!({"op": "bind_uid", "uid": "u2"}));

    let expect = |cl: &mut Vec<(Ws, String)>, msg: &str, who: &[usize], marker: &str| {
        for (i, (ws, _)) in cl.iter_mut().enumerate() {
            let got = ws.recv_where(|t| t == msg || t == marker);
            assert_eq!(got == msg, who.contains(&i), "{msg:?} for client {i}");
            if got == msg {
                ws.recv_where(|t| t == marker);
            }
        }
    };
    cl[4].0.ok(json!({"op": "send_to_group", "groups": ["g1"], "msg": "to g1"}));
    cl[4].0.ok(json!({"op": "send_to_all", "msg": "m1"}));
    expect(&mut cl, "to g1", &[0, 1, 2], "m1");

    cl[4].0.ok(json!({"op": "send_to_group", "groups": ["g1", "g2"], "msg": "to both", "exclude": [ids[0]]}));
    cl[4].0.ok(json!({"op": "send_to_all", "msg": "m2"}));
    // Client 2 is in both groups: GatewayWorker delivers twice.
    let got2: Vec<String> = (0..2).map(|_| cl[2].0.recv_where(|t| t == "to both")).collect();
    assert_eq!(got2.len(), 2);
    expect(&mut cl, "to both", &[1, 3], "m2");

    cl[0].0.ok(json!({"op": "send_to_uid", "uids": ["u1"], "msg": "to u1"}));
    cl[0].0.ok(json!({"op": "send_to_all", "msg": "m3"}));
    expect(&mut cl, "to u1", &[1, 3], "m3");

    // leave / unbind / ungroup
    cl[1].0.ok(json!({"op": "leave_group", "group": "g1"}));
    cl[1].0.ok(json!({"op": "unbind_uid", "uid": "u1"}));
    cl[0].0.ok(json!({"op": "send_to_group", "groups": ["g1"], "msg": "g1 again"}));
    cl[0].0.ok(json!({"op": "send_to_uid", "uids": ["u1", "u2"], "msg": "uids again"}));
    cl[0].0.ok(json!({"op": "send_to_all", "msg": "m4"}));
    for (i, (ws, _)) in cl.iter_mut().enumerate() {
        let mut got = BTreeSet::new();
        loop {
            let t = ws.recv_where(|t| t == "g1 again" || t == "uids again" || t == "m4");
            if t == "m4" {
                break;
            }
            got.insert(t);
        }
        let want: BTreeSet<String> = match i {
            0 => ["g1 again"].iter().map(|s| s.to_string()).collect(),
            2 => ["g1 again"].iter().map(|s| s.to_string()).collect(),
            3 | 4 => ["uids again"].iter().map(|s| s.to_string()).collect(),
            _ => BTreeSet::new(),
        };
        assert_eq!(got, want, "client {i}");
    }
    cl[0].0.ok(json!({"op": "ungroup", "group": "g2"}));
    assert_eq!(cl[0].0.ok(json!({"op": "get_client_count_by_group", "group": "g2"})), 0);
    // Empty names are refused with a clear error, as GatewayWorker drops them.
    let e = cl[0].0.call(json!({"op": "join_group", "group": ""})).unwrap_err();
    assert!(e.contains("empty group"), "{e}");
    c.stop();
}

#[test]
fn sessions_persist_and_are_visible_to_queries() {
    let c = cluster();
    let mut cl = spread_clients(&c, 3);
    let ids: Vec<String> = cl.iter().map(|(_, id)| id.clone()).collect();
    cl[0].0.ok(json!({"op": "session_set", "key": "user", "value": "ann"}));
    cl[0].0.ok(json!({"op": "session_set", "key": "n", "value": 7}));
    assert_eq!(cl[0].0.ok(json!({"op": "session_get"})), json!({"user": "ann", "n": 7}));
    // Another client (maybe on the other worker) sees it through the gateway.
    assert_eq!(cl[1].0.ok(json!({"op": "get_session", "id": ids[0]})), json!({"user": "ann", "n": 7}));
    // set_session / update_session from elsewhere.
    cl[1].0.ok(json!({"op": "set_session", "id": ids[2], "session": {"a": {"x": 1, "y": 2}}}));
    cl[1].0.ok(json!({"op": "update_session", "id": ids[2], "session": {"a": {"y": 3}, "b": true}}));
    assert_eq!(cl[2].0.ok(json!({"op": "session_get"})), json!({"a": {"x": 1, "y": 3}, "b": true}));
    // The current client's session is changed and read back within one worker event.
    cl[2].0.ok(json!({"op": "session_set", "key": "b", "value": false}));
    let all = cl[1].0.ok(json!({"op": "get_all_client_sessions"}));
    assert_eq!(all[&ids[0]], json!({"user": "ann", "n": 7}));
    assert_eq!(all[&ids[2]], json!({"a": {"x": 1, "y": 3}, "b": false}));
    assert_eq!(all.as_object().unwrap().len(), cl.len());
    cl[0].0.ok(json!({"op": "join_group", "group": "room"}));
    let by_group = cl[1].0.ok(json!({"op": "get_client_sessions_by_group", "group": "room"}));
    assert_eq!(by_group, json!({ids[0].clone(): {"user": "ann", "n": 7}}));
    // Unknown client: no session.
    let gone = format!("{}ffffff00", &ids[0][..12]);
    assert_eq!(cl[1].0.ok(json!({"op": "get_session", "id": gone})), Json::Null);
    c.stop();
}

#[test]
fn every_query_answers_right() {
    let c = cluster();
    let mut cl = spread_clients(&c, 4);
    let ids: Vec<String> = cl.iter().map(|(_, id)| id.clone()).collect();
    let n = ids.len() as u64;
    cl[0].0.ok(json!({"op": "bind_uid", "uid": "alice"}));
    cl[1].0.ok(json!({"op": "bind_uid", "uid": "bob"}));
    cl[2].0.ok(json!({"op": "bind_uid", "uid": "bob"}));
    cl[0].0.ok(json!({"op": "join_group", "group": "red"}));
    cl[1].0.ok(json!({"op": "join_group", "group": "red"}));
    cl[3].0.ok(json!({"op": "join_group", "group": "blue"}));
    let q = &mut cl[3].0;
    assert_eq!(q.ok(json!({"op": "is_online", "id": ids[0]})), true);
    let offline = format!("{}7ffffff0", &ids[0][..12]);
    assert_eq!(q.ok(json!({"op": "is_online", "id": offline})), false);
    assert_eq!(q.ok(json!({"op": "is_uid_online", "uid": "bob"})), true);
    assert_eq!(q.ok(json!({"op": "is_uid_online", "uid": "carol"})), false);
    let bob: BTreeSet<String> =
        serde_json::from_value(q.ok(json!({"op": "get_client_id_by_uid", "uid": "bob"}))).unwrap();
    assert_eq!(bob, [ids[1].clone(), ids[2].clone()].into_iter().collect());
    assert_eq!(q.ok(json!({"op": "get_uid_by_client_id", "id": ids[0]})), "alice");
    assert_eq!(q.ok(json!({"op": "get_uid_by_client_id", "id": ids[3]})), Json::Null);
    assert_eq!(q.ok(json!({"op": "get_client_count_by_group", "group": "red"})), 2);
    assert_eq!(q.ok(json!({"op": "get_client_count_by_group", "group": "none"})), 0);
    assert_eq!(q.ok(json!({"op": "get_all_client_count"})), n);
    let uids: BTreeSet<String> = serde_json::from_value(q.ok(json!({"op": "get_all_uid_list"}))).unwrap();
    assert_eq!(uids, ["alice", "bob"].iter().map(|s| s.to_string()).collect());
    assert_eq!(q.ok(json!({"op": "get_all_uid_count"})), 2);
    let red_uids: BTreeSet<String> =
        serde_json::from_value(q.ok(json!({"op": "get_uid_list_by_group", "group": "red"}))).unwrap();
    assert_eq!(red_uids, ["alice", "bob"].iter().map(|s| s.to_string()).collect());
    assert_eq!(q.ok(json!({"op": "get_uid_count_by_group", "group": "red"})), 2);
    let red: BTreeSet<String> =
        serde_json::from_value(q.ok(json!({"op": "get_client_id_list_by_group", "group": "red"}))).unwrap();
    assert_eq!(red, [ids[0].clone(), ids[1].clone()].into_iter().collect());
    let all: BTreeSet<String> =
        serde_json::from_value(q.ok(json!({"op": "get_all_client_id_list"}))).unwrap();
    assert_eq!(all, ids.iter().cloned().collect());
    let groups: BTreeSet<String> =
        serde_json::from_value(q.ok(json!({"op": "get_all_group_id_list"}))).unwrap();
    assert_eq!(groups, ["red", "blue"].iter().map(|s| s.to_string()).collect());
    let gu = q.ok(json!({"op": "get_all_group_uid_list"}));
    let red_u: BTreeSet<String> = serde_json::from_value(gu["red"].clone()).unwrap();
    assert_eq!(red_u, ["alice", "bob"].iter().map(|s| s.to_string()).collect());
    assert!(gu.get("blue").is_none(), "blue has no member with a uid");
    assert_eq!(q.ok(json!({"op": "get_all_group_uid_count"})), json!({"red": 2}));
    let gc = q.ok(json!({"op": "get_all_group_client_id_list"}));
    assert_eq!(gc["blue"], json!([ids[3]]));
    assert_eq!(q.ok(json!({"op": "get_all_group_client_id_count"})), json!({"red": 2, "blue": 1}));
    let batch = q.ok(json!({"op": "batch_get_client_id_by_uid", "uids": ["alice", "zed"]}));
    assert_eq!(batch, json!({"alice": [ids[0]], "zed": []}));
    assert_eq!(
        q.ok(json!({"op": "is_uids_online", "uids": ["alice", "zed"]})),
        json!({"alice": true, "zed": false})
    );
    assert_eq!(
        q.ok(json!({"op": "batch_get_client_count_by_group", "groups": ["red", "blue", "none"]})),
        json!({"red": 2, "blue": 1, "none": 0})
    );
    // Malformed client_ids are refused by the API with a clear error; nothing else breaks.
    for bad in ["xyz", "7f00000108fc0000000", "zz00000108fc00000001"] {
        let e = q.call(json!({"op": "send_to_client", "id": bad, "msg": "x"})).unwrap_err();
        assert!(e.contains("malformed client_id"), "{e}");
        let e = q.call(json!({"op": "is_online", "id": bad})).unwrap_err();
        assert!(e.contains("malformed client_id"), "{e}");
    }
    assert_eq!(q.ok(json!({"op": "get_all_client_count"})), n);
    c.stop();
}

#[test]
fn close_and_destroy() {
    let c = cluster();
    let mut cl = spread_clients(&c, 3);
    let ids: Vec<String> = cl.iter().map(|(_, id)| id.clone()).collect();
    cl[2].0.ok(json!({"op": "join_group", "group": "watchers"}));
    // close with a final message: the message arrives, then the connection closes.
    cl[2].0.ok(json!({"op": "close_client", "id": ids[0], "msg": "bye"}));
    assert_eq!(cl[0].0.recv_where(|t| t == "bye"), "bye");
    cl[0].0.expect_closed();
    let closed = cl[2].0.recv_where(|t| t.contains("\"close\""));
    assert!(closed.contains(&ids[0]), "on_close ran: {closed}");
    // destroy: closed at once.
    cl[2].0.ok(json!({"op": "destroy_client", "id": ids[1]}));
    cl[1].0.expect_closed();
    let closed = cl[2].0.recv_where(|t| t.contains("\"close\""));
    assert!(closed.contains(&ids[1]));
    wait_for("two clients gone", || {
        (cl[2].0.ok(json!({"op": "get_all_client_count"})) == json!(ids.len() - 2)).then_some(())
    });
    // The survivor still works.
    assert_eq!(cl[2].0.ok(json!({"op": "is_online", "id": ids[2]})), true);
    c.stop();
}

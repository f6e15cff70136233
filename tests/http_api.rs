//! The HTTP server API end to end: a real cluster (two websocket gateway processes, a text
//! gateway, business workers running the probe app) with an `[http]` listener; every API
//! call is made over HTTP and its effect checked on real clients; every bad input is refused
//! without doing anything.

mod cluster;
mod http_client;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cluster::{BIN, Cluster, Gw, Spec, Text, Ws, wait_for};
use http_client::{Http, read_response, start_with_http};
use serde_json::{Value as Json, json};
use tungstenite::Message;

const KEY: &str = "test-key-0123456789";

/// A wrapper that runs the binary with the API key in its environment (as `.env` would).
fn keyed_bin(tag: &str) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("gw-http-bin-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("gatewayworker");
    std::fs::write(&path, format!("#!/bin/sh\nGW_HTTP_API_KEY={KEY} exec {BIN} \"$@\"\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn start(tag: &str, workers: u16, gateways: Vec<Gw>, http_extra: &str) -> (Cluster, Http) {
    let mut spec = Spec::new("probe", workers, gateways);
    spec.secret = "s3cret".into();
    spec.bin = keyed_bin(tag);
    start_with_http(spec, http_extra, KEY)
}

/// The next text message of `ws` that is not a probe reply.
fn push(ws: &mut Ws) -> String {
    ws.recv_where(|t| !t.starts_with("{\"op\""))
}

/// Four clients of the first gateway group, two on each of its two processes (others that
/// connected on the way are closed).
fn two_per_gateway(c: &Cluster) -> (Vec<Ws>, Vec<String>) {
    let mut a: Vec<(Ws, String)> = Vec::new();
    let mut b: Vec<(Ws, String)> = Vec::new();
    while a.len() < 2 || b.len() < 2 {
        assert!(a.len() + b.len() < 200, "clients never spread over both gateway processes");
        let mut w = c.ws(0);
        let id = w.id();
        if a.is_empty() || a[0].1[8..12] == id[8..12] {
            a.push((w, id));
        } else {
            b.push((w, id));
        }
    }
    a.truncate(2);
    b.truncate(2);
    a.into_iter().chain(b).unzip()
}

fn ids(v: &Json) -> Vec<String> {
    let mut l: Vec<String> = v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    l.sort();
    l
}

#[test]
fn sends_reach_real_clients_with_exclusions_raw_and_binary() {
    let (c, mut h) = start("sends", 1, vec![Gw::new("websocket", 2), Gw::new("text", 1)], "");
    let (mut ws, id) = two_per_gateway(&c);
    wait_for("4 clients", || (h.api("get_all_client_count", json!({})) == json!(4)).then_some(()));

    assert_eq!(h.api("send_to_all", json!({"message": "hi"})), json!(true));
    for w in ws.iter_mut() {
        assert_eq!(push(w), "hi");
    }
    h.api(
        "send_to_all",
        json!({"message": "listed", "client_id_array": [id[0], id[1], id[2]], "exclude_client_id": [id[1]]}),
    );
    h.api("send_to_all", json!({"message": "not-3", "exclude_client_id": id[3]}));
    h.api("send_to_all", json!({"message": "marker"}));
    let seen: Vec<Vec<String>> = ws
        .iter_mut()
        .map(|w| {
            let mut got = Vec::new();
            while got.last().map(String::as_str) != Some("marker") {
                got.push(push(w));
            }
            got
        })
        .collect();
    assert_eq!(seen[0], ["listed", "not-3", "marker"]);
    assert_eq!(seen[1], ["not-3", "marker"]);
    assert_eq!(seen[2], ["listed", "not-3", "marker"]);
    assert_eq!(seen[3], ["marker"]);

    h.api("send_to_client", json!({"client_id": id[2], "message": "just 2"}));
    assert_eq!(push(&mut ws[2]), "just 2");
    h.api("send_to_client", json!({"client_id": id[1], "message": "bin", "binary": true}));
    assert_eq!(ws[1].recv(), Message::binary(b"bin".to_vec()));

    // raw: the bytes go out without the protocol's framing (a text client sees no newline).
    let port = c.spec.gateways[1].port;
    let mut t = Text::connect(port);
    t.send(r#"{"op":"whoami","tag":1}"#);
    let tid = serde_json::from_str::<Json>(&t.recv()).unwrap()["ok"].as_str().unwrap().to_string();
    h.api("send_to_client", json!({"client_id": tid, "message": "ab", "raw": true}));
    h.api("send_to_client", json!({"client_id": tid, "message": "cd"}));
    assert_eq!(t.recv(), "abcd");

    h.api("close_client", json!({"client_id": id[3], "message": "bye"}));
    assert_eq!(push(&mut ws[3]), "bye");
    ws[3].expect_closed();
    h.api("destroy_client", json!({"client_id": id[2]}));
    ws[2].expect_closed();
    wait_for("two clients gone", || (h.api("get_all_client_count", json!({})) == json!(3)).then_some(()));
    assert_eq!(h.api("is_online", json!({"client_id": id[2]})), json!(false));
    assert_eq!(h.api("is_online", json!({"client_id": id[0]})), json!(true));
    // A client_id of a gateway nobody runs: the send fails as GatewayClient's would.
    let gone = format!("7f000001{:04x}00000001", cluster::free_port());
    let r = h.api_raw("send_to_client", &json!({"client_id": gone, "message": "x"}).to_string());
    assert_eq!(
        (r.status, r.json()["error"]["code"].as_str()),
        (502, Some("gateway_unreachable")),
        "{}",
        r.text()
    );
    assert_eq!(h.api("is_online", json!({"client_id": gone})), json!(false));
    c.stop();
}

#[test]
fn uids_groups_sessions_and_every_query() {
    let (c, mut h) = start("groups", 2, vec![Gw::new("websocket", 2)], "");
    let mut ws: Vec<Ws> = (0..3).map(|_| c.ws(0)).collect();
    let id: Vec<String> = ws.iter_mut().map(|w| w.id()).collect();

    h.api("bind_uid", json!({"client_id": id[0], "uid": "u1"}));
    h.api("bind_uid", json!({"client_id": id[1], "uid": 7}));
    assert_eq!(h.api("get_client_id_by_uid", json!({"uid": "u1"})), json!([id[0]]));
    assert_eq!(h.api("is_uid_online", json!({"uid": "7"})), json!(true));
    assert_eq!(h.api("get_uid_by_client_id", json!({"client_id": id[1]})), json!("7"));
    assert_eq!(h.api("get_uid_by_client_id", json!({"client_id": id[2]})), Json::Null);
    let mut uids: Vec<String> = serde_json::from_value(h.api("get_all_uid_list", json!({}))).unwrap();
    uids.sort();
    assert_eq!(uids, ["7", "u1"]);
    assert_eq!(h.api("get_all_uid_count", json!({})), json!(2));
    h.api("send_to_uid", json!({"uid": ["u1", "7"], "message": "to uids"}));
    assert_eq!(push(&mut ws[0]), "to uids");
    assert_eq!(push(&mut ws[1]), "to uids");
    let batch = h.api("batch_get_client_id_by_uid", json!({"uids": ["u1", "nobody"]}));
    assert_eq!(batch, json!({"u1": [id[0]], "nobody": []}));
    assert_eq!(
        h.api("is_uids_online", json!({"uids": ["u1", "nobody"]})),
        json!({"u1": true, "nobody": false})
    );

    for client in &id {
        h.api("join_group", json!({"client_id": client, "group": "g1"}));
    }
    h.api("join_group", json!({"client_id": id[0], "group": "g2"}));
    assert_eq!(h.api("get_client_count_by_group", json!({"group": "g1"})), json!(3));
    assert_eq!(ids(&h.api("get_client_id_list_by_group", json!({"group": "g1"}))), {
        let mut v = id.clone();
        v.sort();
        v
    });
    assert_eq!(
        h.api("batch_get_client_count_by_group", json!({"groups": ["g1", "g2", "g3"]})),
        json!({"g1": 3, "g2": 1, "g3": 0})
    );
    let mut groups: Vec<String> = serde_json::from_value(h.api("get_all_group_id_list", json!({}))).unwrap();
    groups.sort();
    assert_eq!(groups, ["g1", "g2"]);
    assert_eq!(h.api("get_uid_count_by_group", json!({"group": "g2"})), json!(1));
    assert_eq!(h.api("get_uid_list_by_group", json!({"group": "g2"})), json!(["u1"]));
    assert_eq!(h.api("get_all_group_uid_count", json!({}))["g1"], json!(2));
    assert_eq!(h.api("get_all_group_uid_list", json!({}))["g2"], json!(["u1"]));
    assert_eq!(h.api("get_all_group_client_id_count", json!({})), json!({"g1": 3, "g2": 1}));
    assert_eq!(h.api("get_all_group_client_id_list", json!({}))["g2"], json!([id[0]]));
    h.api("send_to_group", json!({"group": "g1", "message": "to g1", "exclude_client_id": [id[1]]}));
    h.api("send_to_all", json!({"message": "marker"}));
    assert_eq!(push(&mut ws[0]), "to g1");
    assert_eq!(push(&mut ws[1]), "marker");
    assert_eq!(push(&mut ws[2]), "to g1");

    h.api("leave_group", json!({"client_id": id[2], "group": "g1"}));
    assert_eq!(h.api("get_client_id_count_by_group", json!({"group": "g1"})), json!(2));
    h.api("ungroup", json!({"group": "g1"}));
    assert_eq!(h.api("get_client_count_by_group", json!({"group": "g1"})), json!(0));
    h.api("unbind_uid", json!({"client_id": id[1], "uid": "7"}));
    assert_eq!(h.api("is_uid_online", json!({"uid": "7"})), json!(false));

    h.api("set_session", json!({"client_id": id[0], "session": {"name": "ann", "n": 1}}));
    assert_eq!(h.api("get_session", json!({"client_id": id[0]})), json!({"name": "ann", "n": 1}));
    h.api("update_session", json!({"client_id": id[0], "session": {"n": 2, "list": [1, 2]}}));
    assert_eq!(
        h.api("get_session", json!({"client_id": id[0]})),
        json!({"name": "ann", "n": 2, "list": [1, 2]})
    );
    let all = h.api("get_all_client_sessions", json!({}));
    assert_eq!(all[&id[0]]["name"], "ann");
    assert_eq!(all.as_object().unwrap().len(), 3);
    assert_eq!(h.api("get_client_sessions_by_group", json!({"group": "g2"})).as_object().unwrap().len(), 1);
    assert_eq!(ids(&h.api("get_all_client_id_list", json!({}))).len(), 3);
    assert_eq!(h.api("get_all_client_id_count", json!({})), json!(3));
    c.stop();
}

#[test]
fn bad_input_is_refused_and_does_nothing() {
    let extra = "max_body_size = 1024\nheader_timeout = 0.5\nidle_timeout = 1";
    let (c, mut h) = start("bad", 1, vec![Gw::new("websocket", 1)], extra);
    let mut ws = c.ws(0);
    let id = ws.id();

    let send = br#"{"message":"must not arrive"}"#;
    let r = h.request("POST", "/api/send_to_all", &[], send);
    assert_eq!((r.status, r.header("WWW-Authenticate")), (401, Some("Bearer")));
    let r = h.request("POST", "/api/send_to_all", &[("Authorization", "Bearer wrong")], send);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "unauthorized");
    for (body, field) in [
        ("{\"message\":", "JSON"),
        ("[1]", "object"),
        ("{\"mesage\":\"x\"}", "`mesage`"),
        ("{\"message\":\"x\",\"raw\":1}", "`raw`"),
    ] {
        let r = h.api_raw("send_to_all", body);
        assert_eq!(r.status, 400, "{body}");
        assert!(r.json()["error"]["message"].as_str().unwrap().contains(field), "{body}: {}", r.text());
    }
    let r = h.api_raw("send_to_client", r#"{"client_id":"nothex","message":"x"}"#);
    assert!(r.status == 400 && r.text().contains("`client_id`"), "{}", r.text());
    let r = h.api_raw("bind_uid", &json!({"client_id": id}).to_string());
    assert!(r.status == 400 && r.text().contains("`uid`"), "{}", r.text());
    let r = h.api_raw("send_to_all", &json!({"message": "x".repeat(2000)}).to_string());
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (413, Some("body_too_large")));
    assert_eq!(h.api_raw("no_such_call", "{}").status, 404);
    assert_eq!(h.get("/nope").status, 404);
    let r = h.get("/api/send_to_all");
    assert_eq!((r.status, r.header("Allow")), (405, Some("POST")));
    assert_eq!(h.request("POST", "/metrics", &[], b"").status, 405);
    // None of the refused sends reached the client: the next push is the marker.
    h.api("send_to_all", json!({"message": "marker"}));
    assert_eq!(push(&mut ws), "marker");
    ws.assert_no_backlog();

    // A request that never completes gets 408 and the connection closes.
    let mut s = Http::connect(h.port);
    s.write_all(b"POST /api/send_to_all HTTP/1.1\r\nContent-Length: 10\r\n\r\n{").unwrap();
    let t0 = Instant::now();
    assert_eq!(read_response(&mut s).unwrap().status, 408);
    assert_eq!(s.read(&mut [0u8; 16]).unwrap(), 0);
    assert!(t0.elapsed() < Duration::from_secs(5));
    // A silent connection and an idle kept-alive one are closed.
    let mut silent = Http::connect(h.port);
    assert_eq!(silent.read(&mut [0u8; 16]).unwrap(), 0);
    let mut idle = Http::connect(h.port);
    idle.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut idle).unwrap().status, 200);
    let t0 = Instant::now();
    assert_eq!(idle.read(&mut [0u8; 16]).unwrap(), 0);
    assert!(t0.elapsed() >= Duration::from_millis(900), "closed before idle_timeout");
    // Garbage gets 400 and a close; the server still answers others.
    let mut g = Http::connect(h.port);
    g.write_all(b"\x01\x02 nonsense\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut g).unwrap().status, 400);
    assert_eq!(h.api("get_all_client_count", json!({})), json!(1));
    // Pipelined requests beyond what one read takes in (max_header_size + max_body_size) are
    // all answered, in order.
    let body = format!("{{{}}}", " ".repeat(900));
    let one = format!(
        "POST /api/get_all_client_count HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut p = Http::connect(h.port);
    p.write_all(one.repeat(40).as_bytes()).unwrap();
    let mut buf = Vec::new();
    for i in 0..40 {
        let r = http_client::read_next(&mut p, &mut buf).unwrap_or_else(|| panic!("response {i} missing"));
        assert_eq!(r.json()["result"], json!(1), "response {i}");
    }
    c.stop();
}

#[test]
fn a_stopped_gateway_delays_only_its_own_queries() {
    let (c, mut h) = start("slow", 1, vec![Gw::new("websocket", 2)], "");
    let snap = c.snapshot().unwrap();
    let row = snap.rows.iter().find(|r| r.role.name() == "gateway").unwrap();
    let stopped = format!("{:04x}", c.spec.gateways[0].start_port + row.id as u16);
    let mut ws: Vec<(Ws, String)> = Vec::new();
    while ws.len() < 6
        || ws.iter().all(|(_, id)| id[8..12] == stopped)
        || ws.iter().all(|(_, id)| id[8..12] != stopped)
    {
        assert!(ws.len() < 200, "clients never spread over both gateway processes");
        let mut w = c.ws(0);
        let id = w.id();
        ws.push((w, id));
    }
    let elsewhere = ws.iter().filter(|(_, id)| id[8..12] != stopped).count();
    unsafe { libc::kill(row.pid as i32, libc::SIGSTOP) };
    // Requests the HTTP process has taken in so far (its statistics slot).
    let taken = || c.snapshot().unwrap().rows.iter().find(|r| r.role.name() == "http").unwrap().total_request;
    let before = taken();
    let mut slow = Http::connect(h.port);
    let body = "{}";
    let req = format!(
        "POST /api/get_all_client_count HTTP/1.1\r\nAuthorization: Bearer {KEY}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let sent = Instant::now();
    slow.write_all(req.as_bytes()).unwrap();
    wait_for("the HTTP process to take the query", || (taken() > before).then_some(()));
    // While that query waits for the stopped gateway, other requests are answered at once.
    let t0 = Instant::now();
    assert_eq!(h.get("/healthz").status, 200);
    assert!(t0.elapsed() < Duration::from_secs(1), "healthz took {:?}", t0.elapsed());
    let r = read_response(&mut slow).unwrap();
    let took = sent.elapsed();
    unsafe { libc::kill(row.pid as i32, libc::SIGCONT) };
    // query_timeout = 2: the answer comes then, without the stopped gateway's clients.
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(6), "query took {took:?}");
    let n = r.json()["result"].clone();
    assert_eq!(n, json!(elsewhere));
    assert_eq!(h.api("get_all_client_count", json!({})), json!(ws.len()));
    c.stop();
}

#[test]
fn a_public_listener_without_a_key_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("gw-http-nokey-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("c.toml");
    std::fs::write(
        &conf,
        format!("run_dir = \"{}\"\n[register]\n[[gateway]]\nlisten = \"websocket://127.0.0.1:1\"\n[worker]\n[http]\nlisten = \"http://0.0.0.0:1\"\n", dir.join("run").display()),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["start", "--conf"])
        .arg(&conf)
        .current_dir(&dir)
        .env("GW_ENV_FILE", "none")
        .env_remove("GW_HTTP_API_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("GW_HTTP_API_KEY") && err.contains("c.toml") && err.contains("fix:"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn curl_keep_alive_expect_continue_connection_limit_and_connections_list() {
    let Some(curl) = http_client::tool("curl", "curl") else { return };
    let (c, mut h) = start("curl", 1, vec![Gw::new("websocket", 1)], "max_connections = 3");
    let mut ws = c.ws(0);
    ws.id();
    let url = format!("http://127.0.0.1:{}/api/", h.port);
    let big = json!({"message": "y".repeat(5000)}).to_string();
    let out = std::process::Command::new(&curl)
        .args([
            "-sv",
            "-H",
            &format!("Authorization: Bearer {KEY}"),
            "-H",
            "Expect: 100-continue",
            "-d",
            &big,
        ])
        .arg(format!("{url}send_to_all"))
        .args(["--next", "-sv", "-H", &format!("Authorization: Bearer {KEY}"), "-d", "{}"])
        .arg(format!("{url}get_all_client_count"))
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, r#"{"ok":true,"result":true}{"ok":true,"result":1}"#);
    assert!(stderr.contains("100 Continue") && stderr.contains("Re-using existing connection"), "{stderr}");
    assert_eq!(push(&mut ws).len(), 5000);

    // Two more held connections fill max_connections = 3 (with `h`'s): a fourth waits.
    let held: Vec<_> = (0..2).map(|_| Http::connect(h.port)).collect();
    assert_eq!(h.get("/healthz").status, 200);
    let mut fourth = Http::connect(h.port);
    fourth.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    fourth.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut b = [0u8; 1];
    let e = fourth.read(&mut b).unwrap_err();
    assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}");
    fourth.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    drop(held);
    assert_eq!(read_response(&mut fourth).unwrap().status, 200, "served once a slot freed");
    let m = h.get("/metrics").text();
    let hits = m
        .lines()
        .find(|l| l.contains("limit_hits_total{role=\"http\"") && l.contains("limit=\"connections\""))
        .unwrap();
    assert!(!hits.ends_with(" 0"), "{hits}");

    let out = c.run_cli(&["connections"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("Http") && text.contains("GatewayProtocol") && !text.contains("no answer"),
        "{text}"
    );
    c.stop();
}

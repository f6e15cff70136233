//! Behaviour replay against our gateway (`tests/compat/README.md`, "How a test should use
//! them", item 3): the captured GatewayWorker 4.0.0 requests, worker commands and client
//! traffic are replayed against the real binary (register + gateways only, `machine_type =
//! "master"`), the test playing the business worker on the gateways' inner ports, and what
//! comes back (query replies, bytes received by clients, packets sent to the worker) is
//! compared with the captured bytes.
//!
//! Synchronisation is by ordering, never by time: packets on one inner connection are executed
//! in order, so a query sent after a command is answered after the command ran (`Link::sync`),
//! and a message sent to a client after a command reaches it after whatever the command sent
//! it (the markers of the effects replay).

mod cluster;
mod support;

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use cluster::{Cluster, DEADLINE, Gw, Spec};
use gatewayworker::internals::wire::packet::{self, Header, cmd, flag};
use gatewayworker::internals::wire::php::{self, Key, Value};
use gatewayworker::internals::wire::register::worker_connect_body;
use serde_json::Value as Json;
use support::{Report, case_name, hex, to_hex};

/// The capture stack this file replays.
const VERSION: &str = "4.0.0";

/// Inner ports of the gateways in the capture stacks (README), per file.
const EFFECTS_TEXT_INNER: u16 = 14610;
const EFFECTS_WS_INNER: u16 = 14620;
const G2W_WS_INNER: u16 = 14300;
const G2W_TEXT_INNER: u16 = 14310;

/// The 4.0.0 cases of a capture file, in file order.
fn cases(file: &str) -> Vec<Json> {
    support::load(file).into_iter().filter(|c| c["gw_version"] == VERSION).collect()
}

fn hex_field(c: &Json, field: &str) -> Vec<u8> {
    hex(c[field].as_str().unwrap_or_default())
}

/// One GatewayProtocol packet as bytes.
fn pkt(command: u8, conn: u32, ext: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    packet::encode(&mut out, &Header::command(command, conn, flag::BODY_IS_SCALAR), ext, body);
    out
}

/// The query used to synchronise: `CMD_IS_ONLINE` for connection 0, always `i:0;`.
fn probe() -> Vec<u8> {
    pkt(cmd::IS_ONLINE, 0, b"", b"")
}

const PROBE_REPLY: &[u8] = b"\x00\x00\x00\x04i:0;";

fn connect(ip: &str, port: u16) -> TcpStream {
    let s = TcpStream::connect((ip, port)).unwrap_or_else(|e| panic!("connect {ip}:{port}: {e}"));
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Read until `n` bytes, EOF or the deadline; returns what came and whether EOF was seen.
fn read_n(s: &mut TcpStream, n: usize) -> (Vec<u8>, bool) {
    let mut got = vec![0u8; n];
    let mut have = 0;
    while have < n {
        match s.read(&mut got[have..]) {
            Ok(0) => {
                got.truncate(have);
                return (got, true);
            }
            Ok(k) => have += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                got.truncate(have);
                return (got, true);
            }
            Err(_) => {
                got.truncate(have);
                return (got, false);
            }
        }
    }
    (got, false)
}

/// Read everything until the server closes; the flag is false if it did not close before the
/// deadline.
fn read_to_eof(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, true),
            Ok(k) => got.extend_from_slice(&buf[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

/// Read an HTTP response head (through the blank line).
fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            other => panic!("no complete response head ({other:?}): {:?}", String::from_utf8_lossy(&head)),
        }
    }
    head
}

/// Lossy text for failure messages.
fn show(b: &[u8]) -> String {
    format!("{:?} ({})", String::from_utf8_lossy(b), to_hex(b))
}

/// A fake business worker's link to one gateway inner port.
struct Link {
    s: TcpStream,
    name: &'static str,
}

impl Link {
    /// Connect, send `CMD_WORKER_CONNECT` and wait until the gateway has registered it.
    fn worker(ip: &str, port: u16, name: &'static str) -> Link {
        let mut l = Link { s: connect(ip, port), name };
        let body = worker_connect_body("FakeWorker:0", "");
        l.send(&pkt(cmd::WORKER_CONNECT, 0, b"", &body));
        let mut r = Report::default();
        l.sync(&mut r, "worker connect");
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        l
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap_or_else(|e| panic!("{} link write: {e}", self.name));
    }

    /// The next packet the gateway sent on this link (raw bytes).
    fn packet(&mut self) -> Result<Vec<u8>, String> {
        let (mut b, eof) = read_n(&mut self.s, 4);
        if b.len() != 4 {
            return Err(format!("{} link: no packet (eof {eof}), got {}", self.name, show(&b)));
        }
        let len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        if len < packet::HEADER_LEN {
            return Err(format!("{} link: not a packet: {}", self.name, show(&b)));
        }
        let (rest, eof) = read_n(&mut self.s, len - 4);
        if rest.len() != len - 4 {
            return Err(format!("{} link: short packet (eof {eof})", self.name));
        }
        b.extend_from_slice(&rest);
        Ok(b)
    }

    /// Send the probe query and read up to its reply: every packet the gateway sent on this
    /// link before it is a failure of `case` (the link was expected to be quiet).
    fn sync(&mut self, r: &mut Report, case: &str) {
        self.send(&probe());
        loop {
            let (head, eof) = read_n(&mut self.s, 4);
            assert!(head.len() == 4, "{} link closed during sync of {case} (eof {eof})", self.name);
            if head == PROBE_REPLY[..4] {
                let (rest, _) = read_n(&mut self.s, 4);
                r.check(case, rest == PROBE_REPLY[4..], || format!("probe reply {}", show(&rest)));
                return;
            }
            let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            assert!(len >= packet::HEADER_LEN, "{} link out of step: {}", self.name, show(&head));
            let (rest, _) = read_n(&mut self.s, len - 4);
            let mut p = head;
            p.extend_from_slice(&rest);
            r.fail(case, format!("unexpected packet on the {} link: {}", self.name, describe(&p)));
        }
    }
}

/// Header fields of a packet, for failure messages.
fn describe(p: &[u8]) -> String {
    match packet::decode(p, usize::MAX) {
        Ok(Some((d, _))) => format!(
            "{:?} ext {} body {}",
            d.header,
            String::from_utf8_lossy(d.ext),
            String::from_utf8_lossy(d.body)
        ),
        _ => to_hex(p),
    }
}

/// Where our gateway lives, to put into a captured packet instead of the capture's ports.
#[derive(Clone, Copy)]
struct Ours {
    inner: u16,
    public: u16,
}

/// The captured packet `want` with the values that depend on this run replaced by ours:
/// `local_port`, `gateway_port`, `client_port` in the header, and `REMOTE_PORT` /
/// `SERVER_PORT` inside a websocket-connect body.
fn localize(want: &[u8], ours: Ours, client_port: u16) -> Result<Vec<u8>, String> {
    let (p, n) = packet::decode(want, usize::MAX)
        .map_err(|e| format!("capture does not decode: {e}"))?
        .ok_or("capture is not a whole packet")?;
    if n != want.len() {
        return Err("capture has trailing bytes".into());
    }
    let mut h = p.header;
    h.local_port = ours.inner;
    h.gateway_port = ours.public;
    h.client_port = client_port;
    let mut body = p.body.to_vec();
    if h.cmd == cmd::ON_WEBSOCKET_CONNECT {
        let mut v = php::unserialize(p.body).map_err(|e| format!("capture body: {e}"))?;
        if php::serialize(&v) != p.body {
            return Err("capture body does not re-serialize to itself".into());
        }
        let server = v
            .as_array_mut()
            .and_then(|a| a.get_mut(&Key::from_text("server")))
            .and_then(Value::as_array_mut)
            .ok_or("capture body has no server array")?;
        for (k, port) in [("REMOTE_PORT", client_port), ("SERVER_PORT", ours.public)] {
            let slot = server.get_mut(&Key::from_text(k)).ok_or(format!("capture body has no {k}"))?;
            *slot = Value::Int(port as i64);
        }
        body = php::serialize(&v);
    }
    let mut out = Vec::new();
    packet::encode(&mut out, &h, p.ext, &body);
    Ok(out)
}

/// Compare a packet our gateway sent with a captured one (after `localize`).
fn check_packet(r: &mut Report, case: &str, got: &[u8], want: &[u8], ours: Ours, client_port: u16) {
    match localize(want, ours, client_port) {
        Ok(want) => r.check(case, got == want, || {
            format!("packet differs:\n  got  {}\n  want {}", describe(got), describe(&want))
        }),
        Err(e) => r.fail(case, e),
    }
}

fn master(gateways: Vec<Gw>) -> Spec {
    let mut spec = Spec::new("echo", 0, gateways);
    spec.machine_type = "master";
    spec
}

/// A master with a text gateway and a websocket gateway (as in the captures), and a worker
/// link to each.
fn text_and_websocket_gateways() -> (Cluster, [Ours; 2], [Link; 2]) {
    let c = Cluster::start(master(vec![Gw::new("text", 1), Gw::new("websocket", 1)]));
    let ours = [0, 1].map(|i| Ours { inner: c.spec.gateways[i].start_port, public: c.spec.gateways[i].port });
    let links = [
        Link::worker("127.0.0.1", ours[0].inner, "text"),
        Link::worker("127.0.0.1", ours[1].inner, "websocket"),
    ];
    (c, ours, links)
}

// ----- queries.jsonl ---------------------------------------------------------------------

/// Send `request` (plus the probe unless the gateway is expected to close) on a fresh inner
/// connection and compare the whole reply with `want`.
fn replay_query(r: &mut Report, case: &str, port: u16, request: &[u8], want: &[u8], closes: bool) {
    let mut s = connect("127.0.0.1", port);
    if closes {
        s.write_all(request).unwrap();
        let (got, eof) = read_to_eof(&mut s);
        r.check(case, got == want, || format!("reply {} want {}", show(&got), show(want)));
        r.check(case, eof, || "the gateway did not close the connection".into());
        return;
    }
    // The probe's reply after the case's proves nothing else came and the connection is open.
    let mut bytes = request.to_vec();
    bytes.extend_from_slice(&probe());
    s.write_all(&bytes).unwrap();
    let mut expect = want.to_vec();
    expect.extend_from_slice(PROBE_REPLY);
    let (got, eof) = read_n(&mut s, expect.len());
    r.check(case, got == expect, || {
        format!("reply (+ probe reply) {}\n  want {} (eof {eof})", show(&got), show(&expect))
    });
}

#[test]
fn queries_replay_against_our_gateway() {
    let all = cases("queries.jsonl");
    let (secret, plain): (Vec<&Json>, Vec<&Json>) =
        all.iter().partition(|c| c["case"].as_str().unwrap_or_default().starts_with("secret_"));
    let mut r = Report::default();

    // State of the capture: clients 1, 2, 3 on one text gateway, built by the worker.
    let c = Cluster::start(master(vec![Gw::new("text", 1)]));
    let (public, inner) = (c.spec.gateways[0].port, c.spec.gateways[0].start_port);
    let mut w = Link::worker("127.0.0.1", inner, "text");
    let mut clients = Vec::new();
    for id in 1..=3u32 {
        let s = connect("127.0.0.1", public);
        let p = w.packet().unwrap();
        let (d, _) = packet::decode(&p, usize::MAX).unwrap().unwrap();
        assert_eq!((d.header.cmd, d.header.connection_id), (cmd::ON_CONNECT, id), "client {id} accepted");
        assert_eq!(d.header.client_port, s.local_addr().unwrap().port());
        clients.push(s);
    }
    let setup = plain[0]["setup_hex"].as_array().expect("first case has setup_hex");
    for h in setup {
        w.send(&hex(h.as_str().unwrap()));
    }
    w.sync(&mut r, "setup");

    for c in &plain {
        let name = case_name(c);
        let request = hex_field(c, "request_hex");
        let command = hex_field(c, "hex");
        if command != request {
            // A state change by the worker, then a read-back by a GatewayClient.
            w.send(&command);
            w.sync(&mut r, &name);
        }
        let closes = c["connection_closed_by_gateway"].as_bool().unwrap_or(false);
        replay_query(&mut r, &name, inner, &request, &hex_field(c, "reply_hex"), closes);
    }
    w.sync(&mut r, "end");
    drop(clients);

    // A gateway with secretKey "s3cret" (and no clients).
    let mut spec = master(vec![Gw::new("text", 1)]);
    spec.secret = "s3cret".into();
    let cs = Cluster::start(spec);
    let inner = cs.spec.gateways[0].start_port;
    for c in &secret {
        let closes = c["connection_closed_by_gateway"].as_bool().unwrap_or(false);
        let request = hex_field(c, "request_hex");
        replay_query(&mut r, &case_name(c), inner, &request, &hex_field(c, "reply_hex"), closes);
    }
    assert!(plain.len() >= 40 && secret.len() >= 5, "{} + {} cases", plain.len(), secret.len());
    r.finish("queries.jsonl replay", plain.len() + secret.len() + 2);
    cs.stop();
    c.stop();
}

// ----- gateway_effects.jsonl ---------------------------------------------------------------

/// A client of the effects replay.
struct Peer {
    name: String,
    /// 0 = text gateway, 1 = websocket gateway.
    gw: usize,
    s: TcpStream,
    conn: u32,
    port: u16,
    open: bool,
}

/// A message to a client as its gateway encodes it.
fn encoded(gw: usize, msg: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if gw == 0 {
        out.extend_from_slice(msg);
        out.push(b'\n');
    } else {
        assert!(msg.len() < 126);
        out.extend_from_slice(&[0x81, msg.len() as u8]);
        out.extend_from_slice(msg);
    }
    out
}

/// Our gateway (0 text, 1 websocket) that stands for a capture's inner port.
fn effects_gateway(capture_inner: u16) -> usize {
    match capture_inner {
        EFFECTS_TEXT_INNER => 0,
        EFFECTS_WS_INNER => 1,
        other => panic!("capture inner port {other} is neither gateway of the effects stack"),
    }
}

/// The connection id and source port the gateway reported in `ON_CONNECT` `p`.
fn accepted(p: &[u8]) -> (u8, u32, u16) {
    let (d, _) = packet::decode(p, usize::MAX).unwrap().unwrap();
    (d.header.cmd, d.header.connection_id, d.header.client_port)
}

#[test]
fn gateway_effects_replay_against_our_gateway() {
    let all = cases("gateway_effects.jsonl");
    let by_name = |n: &str| all.iter().find(|c| c["case"] == n).unwrap_or_else(|| panic!("case {n}"));
    let hs = by_name("ws_handshake_response_and_buffered_message");
    let ws_request = hex_field(hs, "client_request_hex");
    let ws_response = hs["client_received"][0]["handshake_response"].as_str().unwrap().as_bytes().to_vec();

    let (c, ours, mut links) = text_and_websocket_gateways();
    let mut r = Report::default();

    // A(1) B(2) C(3) on the text gateway, D(1) E(2) on the websocket gateway.
    let mut peers: Vec<Peer> = Vec::new();
    for (name, gw, conn) in [("A", 0, 1), ("B", 0, 2), ("C", 0, 3), ("D", 1, 1), ("E", 1, 2)] {
        let mut s = connect("127.0.0.1", ours[gw].public);
        let port = s.local_addr().unwrap().port();
        assert_eq!(accepted(&links[gw].packet().unwrap()), (cmd::ON_CONNECT, conn, port), "client {name}");
        if gw == 1 {
            s.write_all(&ws_request).unwrap();
            let head = read_head(&mut s);
            r.check("setup 101", head == ws_response, || format!("client {name}: {}", show(&head)));
            let (command, id, _) = accepted(&links[gw].packet().unwrap());
            assert_eq!((command, id), (cmd::ON_WEBSOCKET_CONNECT, conn), "client {name}");
        }
        peers.push(Peer { name: name.into(), gw, s, conn, port, open: true });
    }
    // uid u1 + groups g1, g2 for A; uid "42" + group g1 for B; group g2 for C. B also carries
    // the session {"k":"v"} its CMD_ON_CLOSE shows in DESTROY_text.
    let setup = [
        pkt(cmd::BIND_UID, 1, b"u1", b""),
        pkt(cmd::JOIN_GROUP, 1, b"g1", b""),
        pkt(cmd::JOIN_GROUP, 1, b"g2", b""),
        pkt(cmd::BIND_UID, 2, b"42", b""),
        pkt(cmd::JOIN_GROUP, 2, b"g1", b""),
        pkt(cmd::JOIN_GROUP, 3, b"g2", b""),
        pkt(cmd::SET_SESSION, 2, br#"a:1:{s:1:"k";s:1:"v";}"#, b""),
    ];
    for p in &setup {
        links[0].send(p);
    }
    links[0].sync(&mut r, "setup");

    let mut checked_cases = 0;
    for (i, case) in all.iter().enumerate() {
        let name = case_name(case);
        let received = case["client_received"].as_array().expect("client_received");
        let command = hex_field(case, "hex");
        let request = case.get("client_request_hex").map(|_| hex_field(case, "client_request_hex"));

        // Clients this case introduces: F (kept for later cases) or a one-off raw client,
        // both on the websocket gateway.
        let mut fresh = None;
        for rc in received {
            let who = rc["client"].as_str().unwrap();
            if peers.iter().any(|p| p.name == who) {
                continue;
            }
            assert!(name.starts_with("ws_"), "{name}: new client {who} on an unknown gateway");
            let s = connect("127.0.0.1", ours[1].public);
            let port = s.local_addr().unwrap().port();
            let conn = if who == "raw" {
                // Its CMD_ON_CONNECT is part of this case's worker_received.
                0
            } else {
                let (command, conn, p) = accepted(&links[1].packet().unwrap());
                assert_eq!((command, p), (cmd::ON_CONNECT, port), "{name}: client {who}");
                conn
            };
            fresh = Some(port);
            peers.push(Peer { name: who.into(), gw: 1, s, conn, port, open: true });
        }

        // The worker's command, on the gateway(s) of the clients it concerns. Markers and the
        // closes below come after it on the same links; only a client acting next needs the
        // command to have run first.
        if request.as_ref() != Some(&command) && !command.is_empty() {
            let mut gws: HashSet<usize> = received
                .iter()
                .filter(|rc| rc["hex"] != "" || rc["closed"] == true)
                .filter_map(|rc| peers.iter().find(|p| p.name == rc["client"].as_str().unwrap()))
                .map(|p| p.gw)
                .collect();
            if gws.is_empty() {
                gws = HashSet::from([0, 1]);
            }
            for gw in gws {
                links[gw].send(&command);
                if request.is_some() {
                    links[gw].sync(&mut r, &name);
                }
            }
        }
        // The client's own bytes.
        if let Some(req) = &request {
            let who = received[0]["client"].as_str().unwrap();
            let p = peers.iter_mut().find(|p| p.name == who).unwrap();
            p.s.write_all(req).unwrap();
        }

        // What every client received: exactly the captured bytes, then our marker (or EOF).
        // A client the case does not list (KICK/DESTROY cases list only their target) must
        // have received nothing.
        let marker = format!("marker-{i}");
        let mut expect = Vec::new();
        for p in peers.iter().filter(|p| p.open) {
            let rc = received.iter().find(|rc| rc["client"] == p.name.as_str());
            let want = rc.map(|rc| hex_field(rc, "hex")).unwrap_or_default();
            let closes = rc.is_some_and(|rc| rc["closed"] == true);
            if !closes {
                links[p.gw].send(&pkt(cmd::SEND_TO_ONE, p.conn, b"", marker.as_bytes()));
            }
            expect.push((p.name.clone(), want, closes));
        }
        for (who, want, closes) in expect {
            let p = peers.iter_mut().find(|p| p.name == who).unwrap();
            let what = format!("{name} client {who}");
            if closes {
                let (got, eof) = read_to_eof(&mut p.s);
                p.open = false;
                if want.starts_with(b"HTTP/1.1 400 ") {
                    // Our error page is not workerman's; the status line is the same.
                    let line = |b: &[u8]| b.split(|&c| c == b'\n').next().unwrap_or_default().to_vec();
                    r.check(&what, line(&got) == line(&want), || format!("got {}", show(&got)));
                } else {
                    r.check(&what, got == want, || format!("got {} want {}", show(&got), show(&want)));
                }
                r.check(&what, eof, || "not closed".into());
            } else {
                let mut want = want;
                want.extend_from_slice(&encoded(p.gw, marker.as_bytes()));
                let (got, eof) = read_n(&mut p.s, want.len());
                r.check(&what, got == want, || {
                    format!("got {} want {} (eof {eof})", show(&got), show(&want))
                });
            }
        }

        // What the worker received, then nothing else on either link.
        for wp in case["worker_received"].as_array().into_iter().flatten() {
            let want = hex_field(wp, "hex");
            let d = &wp["decoded"];
            let gw = effects_gateway(d["local_port"].as_u64().unwrap() as u16);
            let conn = d["connection_id"].as_u64().unwrap() as u32;
            let port = match peers.iter().find(|p| p.gw == gw && p.conn == conn && p.conn != 0) {
                Some(p) => p.port,
                None => fresh.expect("a packet for a client of this case"),
            };
            match links[gw].packet() {
                Ok(got) => check_packet(&mut r, &name, &got, &want, ours[gw], port),
                Err(e) => r.fail(&name, e),
            }
        }
        for link in links.iter_mut() {
            link.sync(&mut r, &name);
        }
        // A raw client is gone after its case.
        peers.retain(|p| p.name != "raw");
        checked_cases += 1;
    }
    assert!(checked_cases >= 26, "only {checked_cases} cases");
    r.finish("gateway_effects.jsonl replay", 26 * 3);
    c.stop();
}

// ----- gateway_to_worker.jsonl ---------------------------------------------------------------

/// Our gateway (0 text, 1 websocket) that stands for a capture's inner port.
fn g2w_gateway(capture_inner: u16) -> usize {
    match capture_inner {
        G2W_TEXT_INNER => 0,
        G2W_WS_INNER => 1,
        other => panic!("capture inner port {other} is neither gateway of the gateway_to_worker stack"),
    }
}

/// The captured packets of a case: `packets[].hex`, else `hex` (none when empty).
fn captured_packets(c: &Json) -> Vec<Vec<u8>> {
    match c["packets"].as_array() {
        Some(ps) => ps.iter().map(|p| hex_field(p, "hex")).collect(),
        None if c["hex"] == "" => Vec::new(),
        None => vec![hex_field(c, "hex")],
    }
}

/// A masked client close frame with status 1000.
const CLIENT_CLOSE: &[u8] = b"\x88\x82\x01\x02\x03\x04\x02\xea";
/// The server's close frame with status 1000.
const SERVER_CLOSE: &[u8] = b"\x88\x02\x03\xe8";

#[test]
fn gateway_to_worker_replay_against_our_gateway() {
    let all = cases("gateway_to_worker.jsonl");
    let effects = cases("gateway_effects.jsonl");
    let hs = effects.iter().find(|c| c["case"] == "ws_handshake_response_and_buffered_message").unwrap();
    // Both captured handshakes use the RFC 6455 sample key, as this one does.
    let ws_response = hs["client_received"][0]["handshake_response"].as_str().unwrap().as_bytes().to_vec();

    let (c, ours, mut links) = text_and_websocket_gateways();
    let mut r = Report::default();
    // The current client of each gateway and its source port.
    let mut current: Vec<Option<(TcpStream, u16)>> = vec![None, None];
    let mut checked_cases = 0;
    let mut binary_seen = false;

    for case in &all {
        let name = case_name(case);
        if case["case"] == "CMD_PING" {
            continue; // needs a gateway off 127.0.0.1: see `cmd_ping_keepalive_off_loopback`
        }
        let client = &case["client"];
        let gw = if client["transport"] == "text" { 0 } else { 1 };
        let want = captured_packets(case);
        let cmds: Vec<u8> = want.iter().map(|p| p[4]).collect();
        for p in &want {
            let local_port = u16::from_be_bytes([p[9], p[10]]);
            assert_eq!(g2w_gateway(local_port), gw, "{name}: packet from the other gateway");
        }

        if cmds.first() == Some(&cmd::ON_CONNECT) {
            let s = connect("127.0.0.1", ours[gw].public);
            let port = s.local_addr().unwrap().port();
            current[gw] = Some((s, port));
        }
        let Some((s, port)) = current[gw].as_mut() else { panic!("{name}: no client") };
        let port = *port;
        if case.get("setup_hex").is_some() {
            links[gw].send(&hex_field(case, "setup_hex"));
            links[gw].sync(&mut r, &name);
        }
        if let Some(req) = client["handshake_request"].as_str() {
            s.write_all(req.as_bytes()).unwrap();
            let head = read_head(s);
            r.check(&name, head == ws_response, || format!("handshake response {}", show(&head)));
        }
        if let Some(sent) = client["sent_hex"].as_str() {
            let sent = hex(sent);
            s.write_all(&sent).unwrap();
            if sent[0] == 0x89 {
                // A ping: the gateway answers with a pong carrying the unmasked payload.
                let n = (sent[1] & 0x7f) as usize;
                let payload: Vec<u8> = (0..n).map(|i| sent[6 + i] ^ sent[2 + i % 4]).collect();
                let mut pong = vec![0x8a, n as u8];
                pong.extend_from_slice(&payload);
                let (got, _) = read_n(s, pong.len());
                r.check(&name, got == pong, || format!("pong {}", show(&got)));
            }
        }
        if cmds.last() == Some(&cmd::ON_CLOSE) {
            if gw == 0 {
                s.shutdown(Shutdown::Both).unwrap();
            } else {
                s.write_all(CLIENT_CLOSE).unwrap();
                let (got, eof) = read_to_eof(s);
                r.check(&name, got == SERVER_CLOSE && eof, || {
                    format!("close reply {} (eof {eof})", show(&got))
                });
            }
            current[gw] = None;
        }

        for w in &want {
            let mut got = match links[gw].packet() {
                Ok(p) => p,
                Err(e) => {
                    r.fail(&name, e);
                    continue;
                }
            };
            if case["case"] == "ws_ON_MESSAGE_binary" {
                // Our extension: binary frames are flagged for our business workers.
                r.check(&name, got[21] & flag::BINARY != 0, || "no BINARY flag".into());
                got[21] &= !flag::BINARY;
                binary_seen = true;
            }
            check_packet(&mut r, &name, &got, w, ours[gw], port);
        }
        // Nothing else (ws_ping_frame_no_event: nothing at all).
        links[gw].sync(&mut r, &name);
        checked_cases += 1;
    }
    assert!(binary_seen, "the binary message case was not replayed");
    assert!(checked_cases >= 18, "only {checked_cases} cases");
    r.finish("gateway_to_worker.jsonl replay", checked_cases * 2);
    c.stop();
}

/// `CMD_PING`: every 25 s from gateway start when `lan_ip` is not 127.0.0.1.
#[test]
fn cmd_ping_keepalive_off_loopback() {
    let all = cases("gateway_to_worker.jsonl");
    let case = all.iter().find(|c| c["case"] == "CMD_PING").expect("CMD_PING case");
    let mut spec = master(vec![Gw::new("text", 1)]);
    spec.lan_ip = "127.0.0.2";
    let c = Cluster::start(spec);
    let mut link = Link::worker("127.0.0.2", c.spec.gateways[0].start_port, "text");
    link.s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let got = link.packet().unwrap_or_else(|e| panic!("{}: {e}", case_name(case)));
    assert_eq!(to_hex(&got), case["hex"].as_str().unwrap(), "{}", case_name(case));
    c.stop();
}

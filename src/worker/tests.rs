//! The worker's dispatch of gateway packets to the application, driven directly: packets
//! decoded from bytes, a recording application, a real link to a listening socket where a
//! changed session must arrive.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use super::*;
use crate::api::Context;
use crate::config::{Proto, WorkerConf};
use crate::wire::php::{Array, Key};

/// What the application saw: (callback, connection id, detail).
type Seen = Arc<Mutex<Vec<(&'static str, u32, Vec<u8>)>>>;

struct Recorder(Seen);

impl Recorder {
    fn note(&self, what: &'static str, id: ClientId, detail: &[u8]) {
        self.0.lock().unwrap().push((what, id.connection_id, detail.to_vec()));
    }
}

impl Events for Recorder {
    fn on_connect(&mut self, ctx: &mut Context<'_>, id: ClientId) {
        let remote = ctx.remote_addr().map(|a| a.to_string()).unwrap_or_default();
        self.note("connect", id, remote.as_bytes());
    }

    fn on_websocket_connect(&mut self, _ctx: &mut Context<'_>, id: ClientId, data: &Value) {
        self.note("websocket", id, &php::serialize(data));
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, id: ClientId, message: &[u8]) {
        match message {
            b"panic" => panic!("application bug"),
            b"remember" => {
                let session = ctx.session().unwrap();
                session.insert(Key::from_text("seen"), Value::Int(1));
            }
            _ => {}
        }
        let session = ctx.session().map(|s| php::serialize_array(s)).unwrap_or_default();
        self.note("message", id, &[message, b"|", &session].concat());
    }

    fn on_close(&mut self, _ctx: &mut Context<'_>, id: ClientId) {
        self.note("close", id, b"");
    }
}

/// A worker running `Recorder`, its reactor (for the context), and what it records.
fn worker() -> (Worker, Reactor<Timer>, Seen) {
    let dir = std::env::temp_dir().join(format!("worker-dispatch-{}", std::process::id()));
    let mut cfg = crate::gateway::tests::config(Proto::Text, &dir, |_| {});
    cfg.worker = Some(WorkerConf {
        name: "TestWorker".into(),
        count: 1,
        app: "test".into(),
        send_to_gateway_buffer_size: 1 << 20,
        query_timeout: Duration::from_secs(1),
        binary_passthrough: false,
    });
    let seen = Seen::default();
    let w = Worker::new(&cfg, 0, 0, Box::new(Recorder(seen.clone())), Stats::private().unwrap()).unwrap();
    (w, Reactor::new().unwrap(), seen)
}

/// An event from gateway 127.0.0.1:`port` for connection `id`, client 10.0.0.9:4567, with
/// a scalar body.
fn event(command: u8, port: u16, id: u32, ext: &[u8], body: &[u8]) -> Vec<u8> {
    event_flagged(command, port, id, flag::BODY_IS_SCALAR, ext, body)
}

fn event_flagged(command: u8, port: u16, id: u32, flags: u8, ext: &[u8], body: &[u8]) -> Vec<u8> {
    let header = packet::Header {
        cmd: command,
        local_ip: u32::from(Ipv4Addr::LOCALHOST),
        local_port: port,
        client_ip: u32::from(Ipv4Addr::new(10, 0, 0, 9)),
        client_port: 4567,
        connection_id: id,
        flag: flags,
        gateway_port: 8282,
    };
    let mut v = Vec::new();
    packet::encode(&mut v, &header, ext, body);
    v
}

/// A link from `w` to a listening "gateway": the accepted socket, its address, the link key.
fn linked(w: &mut Worker, r: &mut Reactor<Timer>) -> (std::net::TcpStream, SocketAddrV4, usize) {
    let gateway = TcpListener::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(addr) = gateway.local_addr().unwrap() else { unreachable!() };
    let key = w.links.dial(r.ctx().registry, addr).unwrap();
    let (peer, _) = gateway.accept().unwrap();
    // The connect finished (accepted): the next readiness makes the link usable.
    assert!(w.links.on_ready(key, Ready::WRITABLE).unwrap());
    (peer, addr, key)
}

fn dispatch(w: &mut Worker, reactor: &mut Reactor<Timer>, bytes: &[u8]) {
    let (p, _) = packet::decode(bytes, MAX_PACKET).unwrap().unwrap();
    w.dispatch(&mut reactor.ctx(), 0, &p);
}

#[test]
fn client_events_reach_their_callbacks_with_address_and_session() {
    let (mut w, mut r, seen) = worker();
    dispatch(&mut w, &mut r, &event(cmd::ON_CONNECT, 7000, 5, b"", b""));
    dispatch(&mut w, &mut r, &event(cmd::ON_MESSAGE, 7000, 5, b"a:1:{s:1:\"k\";i:2;}", b"hello"));
    // The handshake data is a serialized array (no scalar flag).
    let ws = event_flagged(cmd::ON_WEBSOCKET_CONNECT, 7000, 5, 0, b"", b"a:1:{s:3:\"get\";a:0:{}}");
    dispatch(&mut w, &mut r, &ws);
    dispatch(&mut w, &mut r, &event(cmd::ON_CLOSE, 7000, 5, b"", b""));
    let seen = seen.lock().unwrap();
    let expected: Vec<(&str, u32, &[u8])> = vec![
        ("connect", 5, b"10.0.0.9:4567"),
        ("message", 5, b"hello|a:1:{s:1:\"k\";i:2;}"),
        ("websocket", 5, b"a:1:{s:3:\"get\";a:0:{}}"),
        ("close", 5, b""),
    ];
    let got: Vec<(&str, u32, &[u8])> = seen.iter().map(|(a, b, c)| (*a, *b, c.as_slice())).collect();
    assert_eq!(got, expected);
}

#[test]
fn a_panicking_callback_is_counted_and_the_next_event_runs() {
    let (mut w, mut r, seen) = worker();
    dispatch(&mut w, &mut r, &event(cmd::ON_MESSAGE, 7000, 1, b"", b"panic"));
    dispatch(&mut w, &mut r, &event(cmd::ON_MESSAGE, 7000, 1, b"", b"after"));
    assert_eq!(Slot::get(&w.stats.slot().bad_input), 1);
    assert_eq!(seen.lock().unwrap().len(), 1, "the panicking call recorded nothing, the next did");
}

#[test]
fn a_changed_session_is_written_back_to_its_gateway() {
    let (mut w, mut r, _) = worker();
    let (mut peer, addr, _) = linked(&mut w, &mut r);
    dispatch(&mut w, &mut r, &event(cmd::ON_MESSAGE, addr.port(), 3, b"", b"remember"));
    assert!(w.links.flush_dirty().is_empty());
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut packets = Vec::new();
    while packets.len() < 3 {
        let mut chunk = [0u8; 4096];
        let n = peer.read(&mut chunk).unwrap();
        assert!(n > 0, "link closed");
        got.extend_from_slice(&chunk[..n]);
        packets.clear();
        let mut rest = &got[..];
        while let Ok(Some((p, used))) = packet::decode(rest, MAX_PACKET) {
            packets.push((p.header.cmd, p.header.connection_id, p.ext.to_vec()));
            rest = &rest[used..];
        }
    }
    assert_eq!(packets[0].0, cmd::WORKER_CONNECT);
    assert_eq!(packets[1].0, cmd::MEMBERSHIP_SUBSCRIBE);
    assert_eq!(packets[2], (cmd::SET_SESSION, 3, b"a:1:{s:4:\"seen\";i:1;}".to_vec()));
    let mut arr = Array::new();
    arr.insert(Key::from_text("seen"), Value::Int(1));
    assert_eq!(
        w.versions.get(&ClientId::new(u32::from(Ipv4Addr::LOCALHOST), addr.port(), 3)),
        Some(&crc32(&php::serialize_array(&arr)))
    );
}

#[test]
fn a_drain_acknowledgement_marks_its_link() {
    let (mut w, mut r, _) = worker();
    let (_peer, addr, key) = linked(&mut w, &mut r);
    assert_eq!(w.links.request_drain(), 1);
    assert!(!w.links.all_acked());
    let ack = event(cmd::WORKER_DRAIN, addr.port(), 0, b"", b"");
    let (p, _) = packet::decode(&ack, MAX_PACKET).unwrap().unwrap();
    w.dispatch(&mut r.ctx(), key, &p);
    assert!(w.links.all_acked());
}

/// The next `n` or more packets `peer` receives (within 10 s): (cmd, ext).
fn received(peer: &mut std::net::TcpStream, n: usize) -> Vec<(u8, Vec<u8>)> {
    peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    loop {
        let mut packets = Vec::new();
        let mut rest = &got[..];
        while let Ok(Some((p, used))) = packet::decode(rest, MAX_PACKET) {
            packets.push((p.header.cmd, p.ext.to_vec()));
            rest = &rest[used..];
        }
        if packets.len() >= n {
            return packets;
        }
        let mut chunk = [0u8; 4096];
        let read = peer.read(&mut chunk).unwrap();
        assert!(read > 0, "link closed");
        got.extend_from_slice(&chunk[..read]);
    }
}

/// A `MEMBERSHIP` packet with gateway count `count` and `ops`.
fn membership(count: u32, ops: &[crate::wire::membership::Op<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    ops.iter().for_each(|op| op.encode(&mut body));
    let mut v = Vec::new();
    packet::encode(
        &mut v,
        &packet::Header::command(cmd::MEMBERSHIP, count, flag::BODY_IS_SCALAR),
        b"",
        &body,
    );
    v
}

#[test]
fn a_link_sends_to_uids_only_where_its_gateway_holds_them() {
    use crate::api::context::Links as _;
    use crate::api::membership::Names;
    use crate::wire::membership::{Kind, Op};
    let (mut w, mut r, _) = worker();
    let (mut peer, addr, key) = linked(&mut w, &mut r);
    let u1 = Names::Uids(&["u1"]);
    // Before the snapshot: the gateway may hold anything.
    assert_eq!(w.links.holders(u1), [addr]);
    assert!(w.links.flush_dirty().is_empty());
    let sent = received(&mut peer, 2);
    assert_eq!(sent[1].0, cmd::MEMBERSHIP_SUBSCRIBE);
    let token = sent[1].1.clone();
    let on = |w: &mut Worker, r: &mut Reactor<Timer>, bytes: Vec<u8>| {
        let (p, _) = packet::decode(&bytes, MAX_PACKET).unwrap().unwrap();
        w.dispatch(&mut r.ctx(), key, &p);
    };
    on(&mut w, &mut r, membership(0, &[Op::Snapshot(&token), Op::Held(Kind::Group, b"g"), Op::End]));
    assert!(w.links.holders(u1).is_empty());
    assert_eq!(w.links.holders(Names::Groups(&["g"])), [addr]);
    // Our own bind: at once.
    let bind = Pkt::new(cmd::BIND_UID, 9, flag::BODY_IS_SCALAR, b"u1", b"");
    w.links.queue_to(addr, bind).unwrap();
    assert_eq!(w.links.holders(u1), [addr]);
    // The gateway ran it (count 1): its word from then on.
    on(&mut w, &mut r, membership(1, &[Op::Held(Kind::Uid, b"u1")]));
    on(&mut w, &mut r, membership(1, &[Op::Gone(Kind::Uid, b"u1")]));
    assert!(w.links.holders(u1).is_empty());
    // A reset: everything, and a new subscription on the link.
    on(&mut w, &mut r, membership(1, &[Op::Reset]));
    assert_eq!(w.links.holders(u1), [addr]);
    assert!(w.links.flush_dirty().is_empty());
    let sent = received(&mut peer, 2);
    assert_eq!(sent[0].0, cmd::BIND_UID);
    assert_eq!(sent[1].0, cmd::MEMBERSHIP_SUBSCRIBE);
    assert_ne!(sent[1].1, token, "a new token");
}

/// How many messages of connection `id` the application saw, and the position of the last.
fn messages_of(seen: &Seen, id: u32) -> (usize, Option<usize>) {
    let seen = seen.lock().unwrap();
    let n = seen.iter().filter(|(what, who, _)| *what == "message" && *who == id).count();
    (n, seen.iter().rposition(|(what, who, _)| *what == "message" && *who == id))
}

#[test]
fn a_busy_gateway_link_is_read_a_share_per_turn_and_the_other_gets_its_turn() {
    let (mut w, mut r, seen) = worker();
    // A share smaller than what the kernel buffers for one read, so it is what stops a read.
    w.turns.share = 16 << 10;
    let (mut busy, busy_addr, busy_key) = linked(&mut w, &mut r);
    let (mut quiet, quiet_addr, quiet_key) = linked(&mut w, &mut r);
    // 1500 events of about 200 bytes: many turns' shares.
    let one = event(cmd::ON_MESSAGE, busy_addr.port(), 1, b"", &[b'b'; 150]);
    let flood = one.repeat(1500);
    let writer = std::thread::spawn(move || busy.write_all(&flood).map(|()| busy));
    let _busy = writer.join().unwrap().unwrap();
    w.on_link_ready(&mut r.ctx(), busy_key, Ready::READABLE);
    let (first, _) = messages_of(&seen, 1);
    assert!(first > 0 && first < 1500, "one share read: {first}");
    assert_eq!(w.turns.again, vec![busy_key], "the rest waits for the next turn");
    quiet.write_all(&event(cmd::ON_MESSAGE, quiet_addr.port(), 2, b"", b"q")).unwrap();
    w.on_link_ready(&mut r.ctx(), quiet_key, Ready::READABLE);
    for _ in 0..1000 {
        if messages_of(&seen, 1).0 == 1500 {
            break;
        }
        if !w.end_of_turn(&mut r.ctx()) {
            // Bytes still in transit when the last read drained: the edge the reactor gives.
            w.on_link_ready(&mut r.ctx(), busy_key, Ready::READABLE);
        }
    }
    let ((n, last_busy), (_, quiet_at)) = (messages_of(&seen, 1), messages_of(&seen, 2));
    assert_eq!(n, 1500, "everything dispatched");
    assert!(quiet_at.unwrap() < last_busy.unwrap(), "the quiet gateway's event did not wait for the flood");
}

#[test]
fn a_link_whose_reply_queue_is_full_is_not_read_until_it_drains() {
    let (mut w, mut r, seen) = worker();
    let (mut peer, addr, key) = linked(&mut w, &mut r);
    // Replies queued to this gateway beyond send_to_gateway_buffer_size (1 MiB here).
    let big = vec![b'r'; 2 << 20];
    w.links.queue_to(addr, Pkt::new(cmd::SEND_TO_ONE, 9, flag::BODY_IS_SCALAR, b"", &big)).unwrap();
    peer.write_all(&event(cmd::ON_MESSAGE, addr.port(), 4, b"", b"waits")).unwrap();
    w.on_link_ready(&mut r.ctx(), key, Ready::READABLE);
    assert_eq!(w.turns.held, vec![key]);
    assert!(seen.lock().unwrap().is_empty(), "not read while the queue is full");
    // The gateway reads its replies; once the queue is below a quarter, the event is read.
    let mut reader = peer.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut total = 0;
        let mut chunk = vec![0u8; 1 << 16];
        while total < big.len() {
            total += reader.read(&mut chunk).unwrap();
        }
    });
    for _ in 0..100_000 {
        if messages_of(&seen, 4).0 == 1 {
            break;
        }
        w.end_of_turn(&mut r.ctx());
        w.on_link_ready(&mut r.ctx(), key, Ready::WRITABLE);
    }
    assert_eq!(messages_of(&seen, 4).0, 1);
    assert!(w.turns.held.is_empty());
    drain.join().unwrap();
}

/// A worker that knows one listening "gateway" and has started dialling it: the worker, its
/// reactor, the listener, its address and the link's key.
fn dialling() -> (Worker, Reactor<Timer>, TcpListener, SocketAddrV4, usize) {
    let (mut w, mut r, _) = worker();
    let gateway = TcpListener::bind("127.0.0.1:0").unwrap();
    let SocketAddr::V4(addr) = gateway.local_addr().unwrap() else { unreachable!() };
    w.known.gateways = vec![addr];
    w.dial_gateway(&mut r.ctx(), addr);
    let key = w.links.key_of(addr).unwrap();
    (w, r, gateway, addr, key)
}

#[test]
fn a_broken_gateway_link_is_redialled_at_once_then_after_a_second() {
    let (mut w, mut r, gateway, addr, key) = dialling();
    let (first, _) = gateway.accept().unwrap();
    assert!(w.links.on_ready(key, Ready::WRITABLE).unwrap());
    drop(first);
    // It was up (a gateway killed and restarted): dialled again now, not in a second.
    w.link_lost(&mut r.ctx(), key, "closed by the gateway");
    let again = w.links.key_of(addr).expect("redialled at once");
    assert!(!w.known.retrying.contains(&addr));
    let (_second, _) = gateway.accept().unwrap();
    assert!(w.links.on_ready(again, Ready::WRITABLE).unwrap());
    // Broken again within the second (a gateway that hangs up at once): the timer, no storm.
    w.link_lost(&mut r.ctx(), again, "closed by the gateway");
    assert!(!w.links.has(addr));
    assert!(w.known.retrying.contains(&addr));
}

#[test]
fn a_connect_that_fails_waits_a_second() {
    let (mut w, mut r, _gateway, addr, key) = dialling();
    // Never up: the connect itself failed.
    w.link_lost(&mut r.ctx(), key, "connection refused");
    assert!(!w.links.has(addr));
    assert!(w.known.retrying.contains(&addr));
}

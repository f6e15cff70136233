//! The handover of `upgrade`, in process: a gateway hands its clients and inner links to a
//! new one on the same listeners; clients, workers and GatewayClients see nothing change.

use super::*;
use crate::gateway::handover::DrainPlan;
use crate::wire::packet::cmd;

/// The state queries whose answers must not change across a handover.
fn state(w: &mut FakeWorker, ids: &[u32]) -> Vec<Vec<u8>> {
    let mut out = vec![
        w.query(cmd::GET_ALL_CLIENT_SESSIONS, 0, b""),
        w.query(cmd::GET_CLIENT_SESSIONS_BY_GROUP, 0, b"room"),
        w.query(cmd::GET_CLIENT_ID_BY_UID, 0, b"alice"),
        w.query(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, b"hall"),
    ];
    out.extend(ids.iter().map(|id| w.query(cmd::IS_ONLINE, *id, b"")));
    out
}

#[test]
fn clients_and_links_move_with_their_state_and_partial_input() {
    let Setup { gw, mut w, mut clients, ids } = setup(Proto::Text, 3);
    let mut api = gw.api();
    w.scalar(cmd::BIND_UID, ids[0], b"alice", b"");
    for (id, group) in [(ids[0], "room"), (ids[1], "room"), (ids[1], "hall")] {
        w.scalar(cmd::JOIN_GROUP, id, group.as_bytes(), b"");
    }
    w.scalar(cmd::SET_SESSION, ids[0], b"a:1:{s:1:\"n\";i:7;}", b"");
    clients[0].write(b"before\n");
    let got = w.expect(cmd::ON_MESSAGE);
    assert_eq!((got.header.connection_id, &got.body[..]), (ids[0], &b"before"[..]));
    // Half a line, and a command sent by the worker just before the switch.
    clients[2].write(b"hal");
    w.scalar(cmd::SEND_TO_ONE, ids[2], b"", b"just-before");
    let before = state(&mut api, &ids);

    let gw = gw.upgrade();

    // The same sockets on both sides: the worker link, the GatewayClient link, the clients.
    assert_eq!(clients[2].line(), b"just-before");
    clients[2].write(b"f\n");
    let got = w.expect(cmd::ON_MESSAGE);
    assert_eq!((got.header.connection_id, &got.body[..]), (ids[2], &b"half"[..]));
    assert_eq!(state(&mut api, &ids), before, "sessions, uids, groups unchanged");
    w.scalar(cmd::SEND_TO_GROUP, 0, b"{\"group\":[\"room\"]}", b"to-room");
    w.scalar(cmd::SEND_TO_UID, 0, b"[\"alice\"]", b"to-alice");
    assert_eq!(clients[0].line(), b"to-room");
    assert_eq!(clients[0].line(), b"to-alice");
    assert_eq!(clients[1].line(), b"to-room");
    // The session went along with the events.
    clients[0].write(b"after\n");
    let got = w.expect(cmd::ON_MESSAGE);
    assert_eq!(got.ext, b"a:1:{s:1:\"n\";i:7;}");
    // New clients are accepted by the new gateway, with ids after the old ones.
    let (mut d, id) = connected(&gw, &mut w);
    assert!(id > *ids.iter().max().unwrap());
    w.scalar(cmd::SEND_TO_ONE, id, b"", b"hello");
    assert_eq!(d.line(), b"hello");
    // A client that leaves now is reported once, by the new gateway.
    drop(clients.remove(1));
    assert_eq!(w.expect(cmd::ON_CLOSE).header.connection_id, ids[1]);
    w.sync();
    clients.iter_mut().for_each(Peer::assert_idle);
}

#[test]
fn twice_in_a_row() {
    let Setup { gw, mut w, mut clients, ids } = setup(Proto::Frame, 2);
    let gw = gw.upgrade().upgrade();
    clients[1].write(&[0, 0, 0, 6, b'h', b'i']);
    let got = w.expect(cmd::ON_MESSAGE);
    assert_eq!((got.header.connection_id, &got.body[..]), (ids[1], &b"hi"[..]));
    w.scalar(cmd::SEND_TO_ONE, ids[0], b"", b"ok");
    assert_eq!(clients[0].bytes(6), [0, 0, 0, 6, b'o', b'k']);
    drop(gw);
}

#[test]
fn the_drain_spreads_closes_evenly_in_id_order() {
    let start = Instant::now();
    let window = Duration::from_secs(10);
    let mut plan = DrainPlan::default();
    plan.plan(start, window, (1..=20).rev().collect());
    assert_eq!(plan.next_due(), Some(start + Duration::from_millis(250)));
    assert!(plan.due(start).is_empty());
    assert_eq!(plan.due(start + Duration::from_millis(250)), vec![1]);
    // No tenth of the window holds more than a tenth of the clients.
    for tenth in 1..=10 {
        let got = plan.due(start + window * tenth / 10);
        assert_eq!(got.len(), 2 - (tenth == 1) as usize, "tenth {tenth}: {got:?}");
    }
    assert_eq!(plan.next_due(), None);
}

/// A client frame: masked, FIN as given.
fn frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mask = [1, 2, 3, 4];
    let mut f = vec![(fin as u8) << 7 | op, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

#[test]
fn a_websocket_moves_in_the_middle_of_a_fragmented_message() {
    let Setup { gw, mut w, mut clients, ids } = setup(Proto::WebSocket, 1);
    let c = &mut clients[0];
    c.write(b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    c.until(|b| b.windows(4).position(|w| w == b"\r\n\r\n").map(|p| ((), p + 4)));
    assert_eq!(w.expect(cmd::ON_WEBSOCKET_CONNECT).header.connection_id, ids[0]);
    let mut bytes = frame(1, false, b"fir");
    let second = frame(0, true, b"st");
    bytes.extend_from_slice(&second[..4]);
    c.write(&bytes);
    w.sync();

    let _gw = gw.upgrade();

    c.write(&second[4..]);
    let got = w.expect(cmd::ON_MESSAGE);
    assert_eq!((got.header.connection_id, &got.body[..]), (ids[0], &b"first"[..]));
    c.write(&frame(9, true, b"p"));
    w.scalar(cmd::SEND_TO_ONE, ids[0], b"", b"reply");
    assert_eq!(c.bytes(10), b"\x8a\x01p\x81\x05reply");
}

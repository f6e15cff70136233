//! One test per GatewayProtocol command a worker sends to change or reach clients.

use super::*;
use crate::wire::packet::{cmd, flag};

#[test]
fn send_to_one_encodes_scalar_raw_and_php_values() {
    let Setup { gw: _gw, mut w, mut clients, ids } = setup(Proto::Text, 1);
    let (c, id) = (&mut clients[0], ids[0]);
    w.scalar(cmd::SEND_TO_ONE, id, b"", b"hello");
    assert_eq!(c.line(), b"hello");
    w.command(cmd::SEND_TO_ONE, id, flag::BODY_IS_SCALAR | flag::NOT_CALL_ENCODE, b"", b"ab");
    w.command(cmd::SEND_TO_ONE, id, 0, b"", b"s:3:\"php\";");
    w.command(cmd::SEND_TO_ONE, id, 0, b"", b"a:1:{s:1:\"k\";i:1;}");
    assert_eq!(c.line(), b"abphp");
    assert_eq!(c.line(), b"{\"k\":1}");
    // An unknown connection id changes nothing, the link stays usable.
    w.scalar(cmd::SEND_TO_ONE, id + 1000, b"", b"nobody");
    w.sync();
    c.assert_idle();
}

#[test]
fn send_to_all_honours_connections_and_exclude() {
    let Setup { gw: _gw, mut w, mut clients, ids } = setup(Proto::Text, 3);
    w.scalar(cmd::SEND_TO_ALL, 0, b"", b"all");
    for c in &mut clients {
        assert_eq!(c.line(), b"all");
    }
    let (a, c) = (ids[0], ids[2]);
    w.scalar(cmd::SEND_TO_ALL, 0, format!("{{\"connections\":[{a},{c}]}}").as_bytes(), b"listed");
    let exclude = format!("{{\"exclude\":{{\"{a}\":{a},\"{c}\":{c}}}}}");
    w.scalar(cmd::SEND_TO_ALL, 0, exclude.as_bytes(), b"not-excluded");
    let got: Vec<Vec<u8>> = clients.iter_mut().map(|c| c.line()).collect();
    assert_eq!(got, [&b"listed"[..], b"not-excluded", b"listed"]);
    w.sync();
    clients.iter_mut().for_each(Peer::assert_idle);
}

#[test]
fn kick_writes_the_message_then_closes() {
    let Setup { gw, mut w, mut clients, ids } = setup(Proto::Text, 1);
    w.scalar(cmd::KICK, ids[0], b"", b"bye");
    assert_eq!(clients[0].until_closed(), b"bye\n");
    assert_eq!(w.expect(cmd::ON_CLOSE).header.connection_id, ids[0]);
    // A kick with PHP null sends nothing.
    let (mut d, id) = connected(&gw, &mut w);
    w.command(cmd::KICK, id, 0, b"", b"N;");
    assert_eq!(d.until_closed(), b"");
    assert_eq!(w.expect(cmd::ON_CLOSE).header.connection_id, id);
}

#[test]
fn destroy_closes_without_the_kick_message() {
    let Setup { gw: _gw, mut w, mut clients, ids } = setup(Proto::Text, 1);
    w.scalar(cmd::DESTROY, ids[0], b"", b"");
    assert_eq!(clients[0].until_closed(), b"");
    assert_eq!(w.expect(cmd::ON_CLOSE).header.connection_id, ids[0]);
    w.ask(cmd::IS_ONLINE, ids[0], b"", "i:0;");
}

#[test]
fn bind_and_unbind_uid_and_send_to_uid() {
    let Setup { gw: _gw, mut w, mut clients, ids } = setup(Proto::Text, 3);
    for (id, uid) in ids.iter().zip(["u1", "u1", "u2"]) {
        w.scalar(cmd::BIND_UID, *id, uid.as_bytes(), b"");
    }
    w.scalar(cmd::SEND_TO_UID, 0, b"[\"u1\"]", b"to-u1");
    assert_eq!((clients[0].line(), clients[1].line()), (b"to-u1".to_vec(), b"to-u1".to_vec()));
    // Rebinding moves the client; unbinding removes it.
    w.scalar(cmd::BIND_UID, ids[1], b"u2", b"");
    w.scalar(cmd::UNBIND_UID, ids[0], b"", b"");
    w.ask(cmd::GET_CLIENT_ID_BY_UID, 0, b"u1", "a:0:{}");
    w.ask(cmd::GET_CLIENT_ID_BY_UID, 0, b"u2", format!("a:2:{{i:0;i:{};i:1;i:{};}}", ids[2], ids[1]));
    w.scalar(cmd::SEND_TO_UID, 0, b"[\"u1\",\"u2\"]", b"to-u2");
    assert_eq!((clients[1].line(), clients[2].line()), (b"to-u2".to_vec(), b"to-u2".to_vec()));
    w.sync();
    clients[0].assert_idle();
}

#[test]
fn join_leave_and_send_to_group_with_exclude() {
    let Setup { gw: _gw, mut w, mut clients, ids } = setup(Proto::Text, 2);
    for id in &ids {
        w.scalar(cmd::JOIN_GROUP, *id, b"room", b"");
    }
    let ext = format!("{{\"group\":[\"room\"],\"exclude\":{{\"{a}\":{a}}}}}", a = ids[0]);
    w.scalar(cmd::SEND_TO_GROUP, 0, ext.as_bytes(), b"to-room");
    assert_eq!(clients[1].line(), b"to-room");
    w.scalar(cmd::LEAVE_GROUP, ids[1], b"room", b"");
    w.scalar(cmd::SEND_TO_GROUP, 0, b"{\"group\":[\"room\"]}", b"again");
    assert_eq!(clients[0].line(), b"again");
    w.ask(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, b"room", "i:1;");
    clients[1].assert_idle();
}

#[test]
fn ungroup_empties_the_group_for_every_member() {
    let Setup { gw: _gw, mut w, mut clients, ids } = setup(Proto::Text, 1);
    for group in ["room", "hall"] {
        w.scalar(cmd::JOIN_GROUP, ids[0], group.as_bytes(), b"");
    }
    w.scalar(cmd::UNGROUP, 0, b"room", b"");
    w.scalar(cmd::SEND_TO_GROUP, 0, b"{\"group\":[\"room\"]}", b"lost");
    w.ask(cmd::GET_GROUP_ID_LIST, 0, b"", "a:1:{i:0;s:4:\"hall\";}");
    let select = format!("{{\"fields\":[\"groups\"],\"where\":{{\"connection_id\":[{}]}}}}", ids[0]);
    let row = format!("a:1:{{i:{};a:1:{{s:6:\"groups\";a:1:{{s:4:\"hall\";s:4:\"hall\";}}}}}}", ids[0]);
    w.ask(cmd::SELECT, 0, select.as_bytes(), row);
    clients[0].assert_idle();
}

#[test]
fn set_and_update_session_reach_the_next_event() {
    let Setup { gw: _gw, mut w, mut clients, ids } = setup(Proto::Text, 1);
    let id = ids[0];
    w.scalar(cmd::SET_SESSION, id, b"a:1:{s:1:\"a\";i:1;}", b"");
    w.ask(cmd::GET_SESSION_BY_CLIENT_ID, id, b"", "a:1:{s:1:\"a\";i:1;}");
    w.scalar(cmd::UPDATE_SESSION, id, b"a:1:{s:1:\"b\";i:2;}", b"");
    let merged = "a:2:{s:1:\"a\";i:1;s:1:\"b\";i:2;}";
    w.ask(cmd::GET_SESSION_BY_CLIENT_ID, id, b"", merged);
    clients[0].write(b"hi\n");
    let got = w.expect(cmd::ON_MESSAGE);
    assert_eq!((got.ext.as_slice(), got.body.as_slice()), (merged.as_bytes(), &b"hi"[..]));
    // Over the size limit: ignored, the old session stays.
    let big = format!("a:1:{{s:1:\"x\";s:5000:\"{}\";}}", "x".repeat(5000));
    w.scalar(cmd::SET_SESSION, id, big.as_bytes(), b"");
    w.ask(cmd::GET_SESSION_BY_CLIENT_ID, id, b"", merged);
}

#[test]
fn a_link_without_the_secret_is_closed() {
    let Setup { gw, mut w, mut clients, ids } = setup(Proto::Text, 1);
    let mut stranger = gw.stranger();
    stranger.scalar(cmd::SEND_TO_ONE, ids[0], b"", b"spoofed");
    stranger.until_closed();
    let mut wrong = gw.stranger();
    wrong.scalar(cmd::WORKER_CONNECT, 0, b"", &worker_connect_body("x:0", "wrong"));
    wrong.until_closed();
    w.sync();
    clients[0].assert_idle();
}

#[test]
fn a_gateway_client_with_the_secret_may_send() {
    let Setup { gw, w: _w, mut clients, ids } = setup(Proto::Text, 1);
    let mut api = gw.api();
    api.scalar(cmd::SEND_TO_ONE, ids[0], b"", b"from-api");
    assert_eq!(clients[0].line(), b"from-api");
    api.ask(cmd::IS_ONLINE, ids[0], b"", "i:1;");
}

#[test]
fn worker_drain_is_acknowledged_and_new_clients_go_elsewhere() {
    let Setup { gw, w: mut w1, mut clients, ids } = setup(Proto::Text, 1);
    let mut w2 = gw.worker("w:2");
    w1.scalar(cmd::WORKER_DRAIN, 0, b"", b"");
    w1.expect(cmd::WORKER_DRAIN);
    let (_c2, _) = connected(&gw, &mut w2);
    // The drained worker's client moves on its next event.
    clients[0].write(b"moved\n");
    let got = w2.expect(cmd::ON_MESSAGE);
    assert_eq!((got.header.connection_id, got.body.as_slice()), (ids[0], &b"moved"[..]));
    w1.sync();
    w1.assert_idle();
}

#[test]
fn a_reply_queued_before_a_bad_packet_is_still_sent() {
    let gw = Gw::start(Proto::Text);
    let mut api = gw.api();
    api.sync();
    // A query and, in the same write, a packet length under the header size: the link is
    // closed after this turn's flush.
    let mut bytes = Vec::new();
    packet::encode(&mut bytes, &Header::command(cmd::IS_ONLINE, 1, flag::BODY_IS_SCALAR), b"", b"");
    bytes.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0]);
    api.s.write_all(&bytes).unwrap();
    let rest = api.until_closed();
    assert_eq!(rest, b"\0\0\0\x04i:0;", "the reply, then the close");
}

//! One test per GatewayProtocol command a worker sends to change or reach clients.

use super::*;
use crate::wire::packet::{cmd, flag};

const SCALAR: u8 = flag::BODY_IS_SCALAR;

impl Client {
    /// Nothing arrived for this client (call after a worker's `sync`: the gateway writes to
    /// clients before it answers the query of that turn).
    pub fn assert_idle(&mut self) {
        self.s.set_nonblocking(true).unwrap();
        let mut b = [0u8; 64];
        let res = self.s.read(&mut b);
        self.s.set_nonblocking(false).unwrap();
        assert!(self.buf.is_empty(), "client has {:?}", self.buf);
        assert!(matches!(&res, Err(e) if e.kind() == io::ErrorKind::WouldBlock), "client read {res:?}");
    }
}

#[test]
fn send_to_one_encodes_scalar_raw_and_php_values() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut c, id) = connected(&gw, &mut w);
    w.command(cmd::SEND_TO_ONE, id, SCALAR, b"", b"hello");
    assert_eq!(c.line(), b"hello");
    w.command(cmd::SEND_TO_ONE, id, SCALAR | flag::NOT_CALL_ENCODE, b"", b"ab");
    w.command(cmd::SEND_TO_ONE, id, 0, b"", b"s:3:\"php\";");
    w.command(cmd::SEND_TO_ONE, id, 0, b"", b"a:1:{s:1:\"k\";i:1;}");
    assert_eq!(c.line(), b"abphp");
    assert_eq!(c.line(), b"{\"k\":1}");
    // An unknown connection id changes nothing, the link stays usable.
    w.command(cmd::SEND_TO_ONE, id + 1000, SCALAR, b"", b"nobody");
    w.sync();
    c.assert_idle();
}

#[test]
fn send_to_all_honours_connections_and_exclude() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut a, ida) = connected(&gw, &mut w);
    let (mut b, idb) = connected(&gw, &mut w);
    let (mut c, idc) = connected(&gw, &mut w);
    w.command(cmd::SEND_TO_ALL, 0, SCALAR, b"", b"all");
    for x in [&mut a, &mut b, &mut c] {
        assert_eq!(x.line(), b"all");
    }
    let only = format!("{{\"connections\":[{ida},{idc}]}}");
    w.command(cmd::SEND_TO_ALL, 0, SCALAR, only.as_bytes(), b"listed");
    let exclude = format!("{{\"exclude\":{{\"{ida}\":{ida},\"{idc}\":{idc}}}}}");
    w.command(cmd::SEND_TO_ALL, 0, SCALAR, exclude.as_bytes(), b"not-excluded");
    assert_eq!(a.line(), b"listed");
    assert_eq!(c.line(), b"listed");
    assert_eq!(b.line(), b"not-excluded");
    w.sync();
    for x in [&mut a, &mut b, &mut c] {
        x.assert_idle();
    }
    assert_ne!(idb, 0);
}

#[test]
fn kick_writes_the_message_then_closes() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut c, id) = connected(&gw, &mut w);
    w.command(cmd::KICK, id, SCALAR, b"", b"bye");
    assert_eq!(c.until_closed(), b"bye\n");
    assert_eq!(w.expect(cmd::ON_CLOSE).header.connection_id, id);
    // A kick with PHP null sends nothing.
    let (mut d, id) = connected(&gw, &mut w);
    w.command(cmd::KICK, id, 0, b"", b"N;");
    assert_eq!(d.until_closed(), b"");
    assert_eq!(w.expect(cmd::ON_CLOSE).header.connection_id, id);
}

#[test]
fn destroy_closes_without_writing() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut c, id) = connected(&gw, &mut w);
    w.command(cmd::SEND_TO_ONE, id, SCALAR, b"", b"queued");
    w.command(cmd::DESTROY, id, SCALAR, b"", b"");
    let got = c.until_closed();
    assert!(got.is_empty() || got == b"queued\n", "{got:?}");
    assert_eq!(w.expect(cmd::ON_CLOSE).header.connection_id, id);
    assert_eq!(w.query(cmd::IS_ONLINE, id, b""), b"i:0;");
}

#[test]
fn bind_and_unbind_uid_and_send_to_uid() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut a, ida) = connected(&gw, &mut w);
    let (mut b, idb) = connected(&gw, &mut w);
    let (mut c, idc) = connected(&gw, &mut w);
    w.command(cmd::BIND_UID, ida, SCALAR, b"u1", b"");
    w.command(cmd::BIND_UID, idb, SCALAR, b"u1", b"");
    w.command(cmd::BIND_UID, idc, SCALAR, b"u2", b"");
    w.command(cmd::SEND_TO_UID, 0, SCALAR, b"[\"u1\"]", b"to-u1");
    assert_eq!(a.line(), b"to-u1");
    assert_eq!(b.line(), b"to-u1");
    // Rebinding moves the client; unbinding removes it.
    w.command(cmd::BIND_UID, idb, SCALAR, b"u2", b"");
    w.command(cmd::UNBIND_UID, ida, SCALAR, b"", b"");
    assert_eq!(w.query(cmd::GET_CLIENT_ID_BY_UID, 0, b"u1"), b"a:0:{}");
    let u2 = format!("a:2:{{i:0;i:{idc};i:1;i:{idb};}}");
    assert_eq!(w.query(cmd::GET_CLIENT_ID_BY_UID, 0, b"u2"), u2.as_bytes());
    w.command(cmd::SEND_TO_UID, 0, SCALAR, b"[\"u1\",\"u2\"]", b"to-u2");
    assert_eq!(b.line(), b"to-u2");
    assert_eq!(c.line(), b"to-u2");
    w.sync();
    a.assert_idle();
}

#[test]
fn join_leave_and_send_to_group_with_exclude() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut a, ida) = connected(&gw, &mut w);
    let (mut b, idb) = connected(&gw, &mut w);
    w.command(cmd::JOIN_GROUP, ida, SCALAR, b"room", b"");
    w.command(cmd::JOIN_GROUP, idb, SCALAR, b"room", b"");
    let ext = format!("{{\"group\":[\"room\"],\"exclude\":{{\"{ida}\":{ida}}}}}");
    w.command(cmd::SEND_TO_GROUP, 0, SCALAR, ext.as_bytes(), b"to-room");
    assert_eq!(b.line(), b"to-room");
    w.command(cmd::LEAVE_GROUP, idb, SCALAR, b"room", b"");
    w.command(cmd::SEND_TO_GROUP, 0, SCALAR, b"{\"group\":[\"room\"]}", b"again");
    assert_eq!(a.line(), b"again");
    w.sync();
    b.assert_idle();
    assert_eq!(w.query(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, b"room"), b"i:1;");
}

#[test]
fn ungroup_empties_the_group_for_every_member() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut a, ida) = connected(&gw, &mut w);
    w.command(cmd::JOIN_GROUP, ida, SCALAR, b"room", b"");
    w.command(cmd::JOIN_GROUP, ida, SCALAR, b"hall", b"");
    w.command(cmd::UNGROUP, 0, SCALAR, b"room", b"");
    w.command(cmd::SEND_TO_GROUP, 0, SCALAR, b"{\"group\":[\"room\"]}", b"lost");
    assert_eq!(w.query(cmd::GET_GROUP_ID_LIST, 0, b""), b"a:1:{i:0;s:4:\"hall\";}");
    let row = format!("a:1:{{i:{ida};a:1:{{s:6:\"groups\";a:1:{{s:4:\"hall\";s:4:\"hall\";}}}}}}");
    let select = format!("{{\"fields\":[\"groups\"],\"where\":{{\"connection_id\":[{ida}]}}}}");
    assert_eq!(w.query(cmd::SELECT, 0, select.as_bytes()), row.as_bytes());
    a.assert_idle();
}

#[test]
fn set_and_update_session_reach_the_next_event() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut c, id) = connected(&gw, &mut w);
    w.command(cmd::SET_SESSION, id, SCALAR, b"a:1:{s:1:\"a\";i:1;}", b"");
    assert_eq!(w.query(cmd::GET_SESSION_BY_CLIENT_ID, id, b""), b"a:1:{s:1:\"a\";i:1;}");
    w.command(cmd::UPDATE_SESSION, id, SCALAR, b"a:1:{s:1:\"b\";i:2;}", b"");
    let merged = b"a:2:{s:1:\"a\";i:1;s:1:\"b\";i:2;}";
    assert_eq!(w.query(cmd::GET_SESSION_BY_CLIENT_ID, id, b""), merged);
    c.write(b"hi\n");
    let got = w.expect(cmd::ON_MESSAGE);
    assert_eq!((got.ext.as_slice(), got.body.as_slice()), (&merged[..], &b"hi"[..]));
    // Over the size limit: ignored, the old session stays.
    let big = format!("a:1:{{s:1:\"x\";s:5000:\"{}\";}}", "x".repeat(5000));
    w.command(cmd::SET_SESSION, id, SCALAR, big.as_bytes(), b"");
    assert_eq!(w.query(cmd::GET_SESSION_BY_CLIENT_ID, id, b""), merged);
}

#[test]
fn a_link_without_the_secret_is_closed() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut c, id) = connected(&gw, &mut w);
    let mut stranger = FakeWorker::connect(gw.inner);
    stranger.command(cmd::SEND_TO_ONE, id, SCALAR, b"", b"spoofed");
    stranger.expect_closed();
    let mut wrong = FakeWorker::connect(gw.inner);
    wrong.command(cmd::WORKER_CONNECT, 0, SCALAR, b"", &worker_connect_body("x:0", "wrong"));
    wrong.expect_closed();
    w.sync();
    c.assert_idle();
}

#[test]
fn a_gateway_client_with_the_secret_may_send() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let (mut c, id) = connected(&gw, &mut w);
    let mut api = FakeWorker::connect(gw.inner);
    let body = crate::wire::register::gateway_client_connect_body(SECRET);
    api.command(cmd::GATEWAY_CLIENT_CONNECT, 0, SCALAR, b"", &body);
    api.command(cmd::SEND_TO_ONE, id, SCALAR, b"", b"from-api");
    assert_eq!(c.line(), b"from-api");
    assert_eq!(api.query(cmd::IS_ONLINE, id, b""), b"i:1;");
}

#[test]
fn worker_drain_is_acknowledged_and_new_clients_go_elsewhere() {
    let gw = Gw::start(Proto::Text);
    let mut w1 = gw.worker("w:1");
    let (mut c1, id1) = connected(&gw, &mut w1);
    let mut w2 = gw.worker("w:2");
    w1.command(cmd::WORKER_DRAIN, 0, SCALAR, b"", b"");
    w1.expect(cmd::WORKER_DRAIN);
    let (_c2, _) = connected(&gw, &mut w2);
    // The drained worker's client moves on its next event.
    c1.write(b"moved\n");
    let got = w2.expect(cmd::ON_MESSAGE);
    assert_eq!((got.header.connection_id, got.body.as_slice()), (id1, &b"moved"[..]));
    w1.sync();
    w1.assert_idle();
}

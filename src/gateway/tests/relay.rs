//! One test per relay rule: which worker gets a client's events, and with what.

use super::*;
use crate::wire::packet::{cmd, flag};
use crate::wire::php::{self, Key, Value};

#[test]
fn events_carry_the_client_address_and_session() {
    let gw = Gw::start(Proto::Text);
    let mut w = gw.worker("w:0");
    let mut c = gw.client();
    let open = w.expect(cmd::ON_CONNECT);
    let h = open.header;
    assert_eq!((h.client_ip, h.client_port), (u32::from(Ipv4Addr::LOCALHOST), c.local().port()));
    assert_eq!((h.local_ip, h.gateway_port), (u32::from(Ipv4Addr::LOCALHOST), gw.public.port()));
    assert_eq!(open.header.flag & flag::BODY_IS_SCALAR, flag::BODY_IS_SCALAR);
    assert!(open.ext.is_empty() && open.body.is_empty());
    let id = h.connection_id;
    c.write(b"one\r\ntwo\n");
    assert_eq!(w.expect(cmd::ON_MESSAGE).body, b"one");
    assert_eq!(w.expect(cmd::ON_MESSAGE).body, b"two");
    w.command(cmd::SET_SESSION, id, flag::BODY_IS_SCALAR, b"a:1:{i:0;i:1;}", b"");
    w.sync();
    c.write(b"three\n");
    let got = w.expect(cmd::ON_MESSAGE);
    assert_eq!((got.ext.as_slice(), got.body.as_slice()), (&b"a:1:{i:0;i:1;}"[..], &b"three"[..]));
    drop(c);
    let closed = w.expect(cmd::ON_CLOSE);
    assert_eq!((closed.header.connection_id, closed.ext.as_slice()), (id, &b"a:1:{i:0;i:1;}"[..]));
}

#[test]
fn routing_is_sticky_with_least_connections_for_new_clients() {
    let gw = Gw::start(Proto::Text);
    let mut w1 = gw.worker("w:1");
    let mut w2 = gw.worker("w:2");
    let (mut a, ida) = connected(&gw, &mut w1);
    let (mut b, idb) = connected(&gw, &mut w2);
    for _ in 0..3 {
        a.write(b"from-a\n");
        b.write(b"from-b\n");
        assert_eq!(w1.expect(cmd::ON_MESSAGE).header.connection_id, ida);
        assert_eq!(w2.expect(cmd::ON_MESSAGE).header.connection_id, idb);
    }
    drop(b);
    assert_eq!(w2.expect(cmd::ON_CLOSE).header.connection_id, idb);
    // w2 has no client left: the next client goes there.
    let (_c, _) = connected(&gw, &mut w2);
}

#[test]
fn a_lost_worker_s_clients_move_to_another() {
    let gw = Gw::start(Proto::Text);
    let mut w1 = gw.worker("w:1");
    let mut w2 = gw.worker("w:2");
    let (mut a, ida) = connected(&gw, &mut w1);
    drop(w1);
    w2.sync();
    a.write(b"still-here\n");
    let got = w2.expect(cmd::ON_MESSAGE);
    assert_eq!((got.header.connection_id, got.body.as_slice()), (ida, &b"still-here"[..]));
}

#[test]
fn a_second_link_with_the_same_key_evicts_the_first() {
    let gw = Gw::start(Proto::Text);
    let mut old = gw.worker("w:1");
    let mut new = gw.worker("w:1");
    old.expect_closed();
    let (_c, _) = connected(&gw, &mut new);
}

#[test]
fn events_wait_for_the_first_worker() {
    let gw = Gw::start(Proto::Text);
    let mut api = FakeWorker::connect(gw.inner);
    let body = crate::wire::register::gateway_client_connect_body(SECRET);
    api.command(cmd::GATEWAY_CLIENT_CONNECT, 0, flag::BODY_IS_SCALAR, b"", &body);
    let mut c = gw.client();
    // Wait until the gateway accepted the client while no worker is linked.
    let until = Instant::now() + DEADLINE;
    while api.query(cmd::GET_CLIENT_COUNT_BY_GROUP, 0, b"") != b"i:1;" {
        assert!(Instant::now() < until, "client not accepted");
    }
    c.write(b"early\n");
    // The parked events come before any reply on this link: no `sync`.
    let mut w = gw.link_worker("w:0");
    let open = w.expect(cmd::ON_CONNECT);
    assert_eq!(open.header.client_port, c.local().port());
    assert_eq!(w.expect(cmd::ON_MESSAGE).body, b"early");
}

#[test]
fn websocket_handshake_data_then_frames() {
    let gw = Gw::start(Proto::WebSocket);
    let mut w = gw.worker("w:0");
    let (mut c, id) = connected(&gw, &mut w);
    c.write(
        b"GET /chat?room=7 HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: k=v\r\n\r\n",
    );
    let head = c.bytes(12);
    assert_eq!(head, b"HTTP/1.1 101");
    let data = w.expect(cmd::ON_WEBSOCKET_CONNECT);
    let Ok(Value::Array(a)) = php::unserialize(&data.body) else { panic!("bad connect data {data:?}") };
    let Some(Value::Array(server)) = a.get(&Key::from_text("server")) else { panic!("no server array") };
    assert_eq!(server.get(&Key::from_text("REQUEST_URI")), Some(&Value::Str(b"/chat?room=7".to_vec())));
    let Some(Value::Array(get)) = a.get(&Key::from_text("get")) else { panic!("no get array") };
    assert_eq!(get.get(&Key::from_text("room")), Some(&Value::Str(b"7".to_vec())));
    // The rest of the 101 response, then a masked text frame.
    let rest = c.until_header_end();
    assert!(rest.ends_with(b"\r\n\r\n"));
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    c.write(&frame);
    assert_eq!(w.expect(cmd::ON_MESSAGE).body, b"hi");
    w.command(cmd::SEND_TO_ONE, id, flag::BODY_IS_SCALAR, b"", b"yo");
    assert_eq!(c.bytes(4), [0x81, 2, b'y', b'o']);
}

impl Client {
    /// Bytes up to and including the blank line ending an HTTP head.
    fn until_header_end(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while !out.ends_with(b"\r\n\r\n") {
            out.extend(self.bytes(1));
        }
        out
    }
}

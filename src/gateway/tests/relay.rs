//! One test per relay rule: which worker gets a client's events, and with what.

use super::*;
use crate::wire::packet::{cmd, flag};
use crate::wire::php::{self, Key, Value};

#[test]
fn events_carry_the_client_address_and_session() {
    let Setup { gw, mut w, .. } = setup(Proto::Text, 0);
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
    w.scalar(cmd::SET_SESSION, id, b"a:1:{i:0;i:1;}", b"");
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
    let Setup { gw, w: mut w1, mut clients, ids } = setup(Proto::Text, 1);
    let mut w2 = gw.worker("w:2");
    let (mut b, idb) = connected(&gw, &mut w2);
    for _ in 0..3 {
        clients[0].write(b"from-a\n");
        b.write(b"from-b\n");
        assert_eq!(w1.expect(cmd::ON_MESSAGE).header.connection_id, ids[0]);
        assert_eq!(w2.expect(cmd::ON_MESSAGE).header.connection_id, idb);
    }
    drop(b);
    assert_eq!(w2.expect(cmd::ON_CLOSE).header.connection_id, idb);
    // w2 has no client left: the next client goes there.
    let (_c, _) = connected(&gw, &mut w2);
}

#[test]
fn a_lost_worker_s_clients_move_to_another() {
    let Setup { gw, w: w1, mut clients, ids } = setup(Proto::Text, 1);
    let mut w2 = gw.worker("w:2");
    drop(w1);
    w2.sync();
    clients[0].write(b"still-here\n");
    let got = w2.expect(cmd::ON_MESSAGE);
    assert_eq!((got.header.connection_id, got.body.as_slice()), (ids[0], &b"still-here"[..]));
}

#[test]
fn a_second_link_with_the_same_key_evicts_the_first() {
    let Setup { gw, w: mut old, .. } = setup(Proto::Text, 0);
    let mut new = gw.worker("w:0");
    old.until_closed();
    let (_c, _) = connected(&gw, &mut new);
}

#[test]
fn events_wait_for_the_first_worker() {
    let gw = Gw::start(Proto::Text);
    let mut api = gw.api();
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
    let Setup { gw: _gw, mut w, mut clients, ids } = setup(Proto::WebSocket, 1);
    let c = &mut clients[0];
    c.write(
        b"GET /chat?room=7 HTTP/1.1\r\nHost: example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: k=v\r\n\r\n",
    );
    let head = c.until(|buf| {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        Some((buf[..end].to_vec(), end))
    });
    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
    let data = w.expect(cmd::ON_WEBSOCKET_CONNECT);
    let Ok(Value::Array(a)) = php::unserialize(&data.body) else { panic!("bad connect data {data:?}") };
    let Some(Value::Array(server)) = a.get(&Key::from_text("server")) else { panic!("no server array") };
    assert_eq!(server.get(&Key::from_text("REQUEST_URI")), Some(&Value::Str(b"/chat?room=7".to_vec())));
    let Some(Value::Array(get)) = a.get(&Key::from_text("get")) else { panic!("no get array") };
    assert_eq!(get.get(&Key::from_text("room")), Some(&Value::Str(b"7".to_vec())));
    // A masked text frame in, a text frame out.
    let mask = [1u8, 2, 3, 4];
    let mut frame = vec![0x81, 0x80 | 2];
    frame.extend_from_slice(&mask);
    frame.extend(b"hi".iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    c.write(&frame);
    assert_eq!(w.expect(cmd::ON_MESSAGE).body, b"hi");
    w.scalar(cmd::SEND_TO_ONE, ids[0], b"", b"yo");
    assert_eq!(c.bytes(4), [0x81, 2, b'y', b'o']);
}

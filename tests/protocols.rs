//! Echo over every client protocol, through the real processes: client -> gateway ->
//! business worker -> gateway -> client.

mod cluster;

use cluster::{Cluster, Frame, Gw, Spec, Text, Ws};
use tungstenite::Message;

#[test]
fn websocket_text_and_binary_echo() {
    let c = Cluster::start(Spec::new("echo", 1, vec![Gw::new("websocket", 1)]));
    let mut ws = c.ws(0);
    ws.send("hello");
    assert_eq!(ws.recv_text(), "hello");
    ws.send_binary(&[0, 1, 2, 255]);
    match ws.recv() {
        Message::Binary(b) => assert_eq!(&b[..], &[0, 1, 2, 255]),
        other => panic!("binary must stay binary, got {other:?}"),
    }
    let big = "x".repeat(200_000);
    ws.send(&big);
    assert_eq!(ws.recv_text(), big);
    // Many messages in flight stay in order.
    for i in 0..500 {
        ws.send(&format!("m{i}"));
    }
    for i in 0..500 {
        assert_eq!(ws.recv_text(), format!("m{i}"));
    }
    c.stop();
}

#[test]
fn text_and_frame_protocols_echo() {
    let c = Cluster::start(Spec::new("echo", 1, vec![Gw::new("text", 1), Gw::new("frame", 1)]));
    let mut t = Text::connect(c.spec.gateways[0].port);
    t.send("line one");
    assert_eq!(t.recv(), "line one");
    t.w.write_all_str("a\r\nb\n");
    assert_eq!(t.recv(), "a");
    assert_eq!(t.recv(), "b");
    let mut f = Frame::connect(c.spec.gateways[1].port);
    f.send(b"framed \x00 bytes");
    assert_eq!(f.recv(), b"framed \x00 bytes");
    f.send(b"");
    assert_eq!(f.recv(), b"");
    c.stop();
}

#[test]
fn websocket_handshake_data_reaches_the_worker() {
    let c = Cluster::start(Spec::new("probe", 1, vec![Gw::new("websocket", 1)]));
    let mut ws = Ws::connect(c.spec.gateways[0].port, "/room?probe_ws=1&x[]=1&x[]=2&name=J%C3%BCrgen");
    let j: serde_json::Value = ws.recv_json();
    assert_eq!(j["event"], "websocket_connect");
    let d = &j["data"];
    assert_eq!(d["get"]["name"], "Jürgen");
    assert_eq!(d["get"]["x"], serde_json::json!({"0": "1", "1": "2"}));
    assert_eq!(d["server"]["REQUEST_URI"], "/room?probe_ws=1&x[]=1&x[]=2&name=J%C3%BCrgen");
    assert_eq!(d["server"]["SERVER_PORT"], c.spec.gateways[0].port);
    assert_eq!(d["server"]["REMOTE_ADDR"], "127.0.0.1");
    assert_eq!(d["server"]["HTTP_UPGRADE"], "websocket");
    c.stop();
}

trait WriteStr {
    fn write_all_str(&mut self, s: &str);
}

impl WriteStr for std::net::TcpStream {
    fn write_all_str(&mut self, s: &str) {
        std::io::Write::write_all(self, s.as_bytes()).unwrap();
    }
}

#[test]
fn messages_bigger_than_the_read_caps_pass_through() {
    let limits = "[gateway.limits]\nmax_package_size = 20000000\nsend_to_worker_buffer_size = 40000000\nsend_to_client_buffer_size = 40000000";
    let c = Cluster::start(Spec::new("echo", 1, vec![Gw::new("websocket", 1).with(limits)]));
    let mut ws = c.ws(0);
    let big: String = (0..6_000_000).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    ws.send(&big);
    assert_eq!(ws.recv_text(), big);
    ws.send("small after big");
    assert_eq!(ws.recv_text(), "small after big");
    c.stop();
}

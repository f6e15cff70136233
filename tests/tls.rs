//! wss: TLS on a gateway listener, the handshake driven on the reactor, certificate errors.

mod cluster;

use std::io::{Read, Write};

use cluster::{Cluster, Gw, Spec, tls};
use tungstenite::Message;

fn wss_cluster(extra_gw: &str, top: &str) -> Cluster {
    let mut spec = Spec::new("echo", 1, vec![Gw::new("wss", 1).with(extra_gw)]);
    spec.top = format!("{top}\n{}", tls::conf());
    Cluster::start(spec)
}

#[test]
fn wss_echo_text_binary_and_large() {
    let c = wss_cluster("", "");
    let mut ws = tls::ws(c.spec.gateways[0].port);
    ws.send(Message::text("secure hello")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("secure hello"));
    ws.send(Message::binary(vec![0u8, 159, 146, 150])).unwrap();
    assert_eq!(ws.read().unwrap(), Message::binary(vec![0u8, 159, 146, 150]));
    // Bigger than the TLS record size and than rustls' buffer limit.
    let big = "z".repeat(300_000);
    ws.send(Message::text(big.clone())).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text(big));
    for i in 0..200 {
        ws.send(Message::text(format!("m{i}"))).unwrap();
    }
    for i in 0..200 {
        assert_eq!(ws.read().unwrap(), Message::text(format!("m{i}")));
    }
    ws.close(None).unwrap();
    c.stop();
}

#[test]
fn production_stage_turns_websocket_into_wss() {
    let mut spec = Spec::new("echo", 1, vec![Gw::new("websocket", 1)]);
    spec.top = format!("stage_mode = \"production\"\n{}", tls::conf());
    let c = Cluster::start(spec);
    let mut ws = tls::ws(c.spec.gateways[0].port);
    ws.send(Message::text("prod")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("prod"));
    // Plain HTTP on the TLS port is not a TLS hello: closed, nothing else breaks.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", c.spec.gateways[0].port)).unwrap();
    plain.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    plain.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = plain.read_to_end(&mut buf);
    assert!(!buf.starts_with(b"HTTP/1.1 101"));
    ws.send(Message::text("still")).unwrap();
    assert_eq!(ws.read().unwrap(), Message::text("still"));
    c.stop();
}

#[test]
fn silent_tls_client_hits_the_handshake_timeout() {
    let c = wss_cluster("[gateway.limits]\nhandshake_timeout = 1", "");
    let port = c.spec.gateways[0].port;
    let mut good = tls::ws(port);
    // Connects and never says hello.
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.set_read_timeout(Some(cluster::DEADLINE)).unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = Vec::new();
    let _ = silent.read_to_end(&mut buf);
    assert!(t0.elapsed() < std::time::Duration::from_secs(4), "closed after {:?}", t0.elapsed());
    good.send(Message::text("fine")).unwrap();
    assert_eq!(good.read().unwrap(), Message::text("fine"));
    c.wait_log("handshake_timeout");
    let s = c.snapshot().unwrap();
    let gw = s.rows.iter().find(|r| r.role.name() == "gateway").unwrap();
    assert!(gw.limits[2] >= 1, "handshake timeouts are counted");
    c.stop();
}

#[test]
fn certificate_errors_stop_the_start_with_a_clear_message() {
    let dir = std::env::temp_dir().join(format!("gw-tls-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fix = |f: &str| cluster::repo_file(&format!("tests/fixtures/{f}")).display().to_string();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let cases = [
        (dir.join("missing.pem").display().to_string(), fix("test-only-key.pem"), "cannot read certificate"),
        (garbage.display().to_string(), fix("test-only-key.pem"), "no certificate found"),
        (
            fix("test-only-cert.pem"),
            dir.join("missing.key").display().to_string(),
            "cannot read a private key",
        ),
        (fix("test-only-cert.pem"), fix("test-only-other-key.pem"), "do not go together"),
    ];
    for (i, (cert, key, want)) in cases.iter().enumerate() {
        let conf = format!(
            "run_dir = \"{}\"\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n[register]\nlisten = \"text://127.0.0.1:{}\"\n[[gateway]]\nlisten = \"wss://127.0.0.1:{}\"\nstart_port = {}\n[worker]\napp = \"echo\"\n",
            dir.join("run").display(),
            cluster::free_port(),
            cluster::free_port(),
            cluster::free_range(1)
        );
        let path = dir.join(format!("tls{i}.toml"));
        std::fs::write(&path, conf).unwrap();
        let out = std::process::Command::new(cluster::BIN)
            .args(["start", "--conf"])
            .arg(&path)
            .env("GW_ENV_FILE", "none")
            .output()
            .unwrap();
        let msg = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "case {i} started");
        assert!(msg.contains(want) && msg.contains("`tls`"), "case {i}: {msg}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

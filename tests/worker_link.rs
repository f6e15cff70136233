//! What a gateway writes on a business worker's link, seen from a fake worker on the inner
//! port of a register + gateway machine (`machine_type = "master"`).

mod cluster;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;

use cluster::{Cluster, DEADLINE, Gw, Spec};
use gatewayworker::internals::wire::packet::{self, Header, cmd, flag};
use gatewayworker::internals::wire::register::worker_connect_body;

fn command(c: u8, conn: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    packet::encode(&mut out, &Header::command(c, conn, flag::BODY_IS_SCALAR), b"", body);
    out
}

/// Next packet on the link as (cmd, connection id), `None` at EOF.
fn next(s: &mut TcpStream) -> Option<(u8, u32)> {
    let mut head = [0u8; packet::HEADER_LEN];
    match s.read_exact(&mut head) {
        Ok(()) => {}
        Err(e) if matches!(e.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => return None,
        Err(e) => panic!("worker link: {e}"),
    }
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut rest = vec![0u8; len - packet::HEADER_LEN];
    s.read_exact(&mut rest).unwrap();
    let conn = u32::from_be_bytes([head[17], head[18], head[19], head[20]]);
    Some((head[4], conn))
}

#[test]
fn last_client_leaving_a_stopping_gateway_still_reaches_the_worker() {
    let mut spec = Spec::new("echo", 0, vec![Gw::new("text", 1)]);
    spec.machine_type = "master";
    let c = Cluster::start(spec);
    let g = &c.spec.gateways[0];
    let mut w = TcpStream::connect(("127.0.0.1", g.start_port)).unwrap();
    w.set_read_timeout(Some(DEADLINE)).unwrap();
    w.write_all(&command(cmd::WORKER_CONNECT, 0, &worker_connect_body("FakeWorker:0", ""))).unwrap();
    let client = TcpStream::connect(("127.0.0.1", g.port)).unwrap();
    assert_eq!(next(&mut w), Some((cmd::ON_CONNECT, 1)));
    // Graceful stop of the gateway process: it exits once its last client is gone.
    let gateway = c.pids("gateway")[0];
    unsafe { libc::kill(gateway as i32, libc::SIGQUIT) };
    c.wait_log("graceful stop, waiting for 1 clients");
    drop(client);
    assert_eq!(next(&mut w), Some((cmd::ON_CLOSE, 1)), "CMD_ON_CLOSE before the gateway exits");
    assert_eq!(next(&mut w), None, "then the gateway is gone");
    c.stop();
}

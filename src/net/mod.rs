//! Sockets: listeners bound by the master, the plain/TLS byte stream, one connection type
//! (`Conn`) and the table that owns connections, outgoing links, and the client protocols
//! (text, frame, websocket).

pub mod conn;
pub mod fdpass;
pub mod frame;
pub mod io;
pub mod link;
pub mod listener;
pub mod table;
pub mod text;
pub mod tls;
pub mod websocket;

use std::os::fd::AsFd;
use std::time::Duration;

/// Silence after which an inner link sends a keepalive probe, and between probes.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Unacknowledged data or unanswered probes for this long close an inner link.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Socket options of a TCP link between processes (a worker's link to a gateway, a register
/// link, a gateway's inner connection): no Nagle delay, and notice a peer host that vanished
/// without a FIN or a reset (power or cable cut, deleted VM). Without keepalive probes and a
/// user timeout the kernel retransmits for about 15 minutes while the clients routed to that
/// peer get no answer; with them the link closes within about `PEER_TIMEOUT` and is routed
/// around (or redialled). A working LAN acknowledges in well under a millisecond, so 10 s of
/// silence means the peer is gone.
pub fn inner_link_options(stream: &impl AsFd) {
    let s = socket2::SockRef::from(stream);
    let _ = s.set_tcp_nodelay(true);
    let probes = socket2::TcpKeepalive::new().with_time(KEEPALIVE).with_interval(KEEPALIVE);
    let _ = s.set_tcp_keepalive(&probes);
    let _ = s.set_tcp_user_timeout(Some(PEER_TIMEOUT));
}

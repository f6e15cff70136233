//! Accepting clients (with the connection limit and EMFILE back-off) and inner links.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::warn;

use super::client::Client;
use super::{Gateway, Stop, Timer};
use crate::net::io::Io;
use crate::net::tls::TlsIo;
use crate::reactor::{Ctx, would_block};
use crate::stats::Slot;
use crate::wire::packet::{cmd, flag};

impl Gateway {
    pub(super) fn accept_clients(&mut self, cx: &mut Ctx<'_, Timer>) {
        while self.accept.ready && !self.accept.backoff && self.stop == Stop::No {
            if self.clients.len() >= self.settings.limits.max_connections {
                if !self.accept.paused {
                    warn!(
                        "gateway: {} connections reached (gateway.limits.max_connections), pausing accept",
                        self.clients.len()
                    );
                    Slot::bump(&self.stats.slot().limit_conn);
                }
                self.accept.paused = true;
                return;
            }
            match self.accept.listeners.public.accept() {
                Ok((stream, peer)) => self.add_client(cx, stream, peer),
                Err(e) if would_block(&e) => self.accept.ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE/ENFILE/ENOMEM: the connection stays queued. Retry a little later
                    // instead of spinning on a listener that stays readable.
                    if let Some(more) = self.logs.gate.check("accept") {
                        warn!("gateway: accept failed: {e}; accepting again in 100 ms{more}");
                    }
                    Slot::bump(&self.stats.slot().limit_conn);
                    self.accept.backoff = true;
                    cx.after(Duration::from_millis(100), Timer::ResumeAccept);
                    return;
                }
            }
        }
    }

    pub(super) fn add_client(
        &mut self,
        cx: &mut Ctx<'_, Timer>,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
    ) {
        let _ = stream.set_nodelay(true);
        let io = match &self.accept.tls {
            Some(cfg) => match TlsIo::new(stream, cfg) {
                Ok(t) => Io::Tls(Box::new(t)),
                Err(e) => {
                    warn!("gateway: TLS session for {peer} failed: {e}");
                    return;
                }
            },
            None => Io::Tcp(stream),
        };
        let (ip, port) = match peer {
            SocketAddr::V4(a) => (u32::from(*a.ip()), a.port()),
            SocketAddr::V6(a) => (a.ip().to_ipv4_mapped().map_or(0, u32::from), a.port()),
        };
        let id = self.clients.alloc_id();
        let c = Client::new(id, io, self.me.proto, ip, port, self.clock);
        let handshaking = c.handshaking();
        let key = match self.clients.insert(cx.registry, c) {
            Ok(key) => key,
            Err(e) => {
                warn!("gateway: cannot watch client {peer}: {e}");
                return;
            }
        };
        if handshaking {
            let secs = self.settings.limits.handshake_timeout.as_secs_f64().ceil() as u32;
            self.clients.handshakes.push_back((self.clock + secs.max(1), id));
        }
        self.forward(key, cmd::ON_CONNECT, flag::BODY_IS_SCALAR, &[]);
    }

    pub(super) fn accept_inner(&mut self, cx: &mut Ctx<'_, Timer>, unix: bool) {
        loop {
            let res = if unix {
                self.accept.listeners.inner_unix.accept().map(|(s, _)| (Io::Unix(s), "unix".to_string()))
            } else {
                self.accept.listeners.inner_tcp.accept().map(|(s, a)| {
                    crate::net::inner_link_options(&s);
                    (Io::Tcp(s), a.to_string())
                })
            };
            match res {
                Ok((io, peer)) => {
                    let open = self.settings.secret.is_empty();
                    if let Err(e) = self.links.insert(cx.registry, io, peer, open) {
                        warn!("gateway: cannot watch an inner connection: {e}");
                    }
                }
                Err(e) if would_block(&e) => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    warn!("gateway: inner accept failed: {e}");
                    return;
                }
            }
        }
    }
}

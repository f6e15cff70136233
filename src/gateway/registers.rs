//! Links to the registers: announce this gateway, redial after a close, keep-alive.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use log::warn;
use mio::Token;

use super::Timer;
use crate::config::Config;
use crate::net::conn::ReadEnd;
use crate::net::link::{Link, Target};
use crate::reactor::{Ctx, Ready};
use crate::stats::conns::ConnInfo;
use crate::wire::register as lines;

/// The register links and the announcement sent on each connect.
pub struct Registers {
    links: Vec<Link>,
    hello: Vec<u8>,
}

impl Registers {
    /// Links to every configured register (not dialled yet); link `i` has token `base + i`.
    /// `address` is this gateway's inner address as workers dial it.
    pub fn new(cfg: &Config, base: usize, address: &str) -> Registers {
        let links = cfg
            .register_address
            .iter()
            .enumerate()
            .map(|(i, a)| Link::new(Target::Tcp(SocketAddr::V4(*a)), Token(base + i), "Text"))
            .collect();
        Registers { links, hello: lines::gateway_connect(address, &cfg.secret_key) }
    }

    pub fn dial_all(&mut self, cx: &mut Ctx<'_, Timer>) {
        for i in 0..self.links.len() {
            self.dial(cx, i);
        }
    }

    pub fn dial(&mut self, cx: &mut Ctx<'_, Timer>, i: usize) {
        let Some(link) = self.links.get_mut(i) else { return };
        if let Err(e) = link.dial(cx.registry, &self.hello) {
            warn!("gateway: cannot reach register {}: {e}; retrying in 1 s", link.target);
            link.close(cx.registry);
            cx.after(Duration::from_secs(1), Timer::RegisterRetry(i));
        }
    }

    pub fn on_ready(&mut self, cx: &mut Ctx<'_, Timer>, i: usize, ready: Ready) {
        let Some(link) = self.links.get_mut(i) else { return };
        let res = link.on_ready(ready).and_then(|_| {
            // The register never writes to gateways; read only to notice a close.
            match link.read(64 * 1024)? {
                ReadEnd::Eof => Err(io::ErrorKind::UnexpectedEof.into()),
                _ => {
                    if let Some(c) = link.connected_mut() {
                        c.inbuf.consume(c.inbuf.len());
                    }
                    link.flush()
                }
            }
        });
        if let Err(e) = res {
            warn!("gateway: register link {} closed ({e}); reconnecting in 1 s", link.target);
            link.close(cx.registry);
            cx.after(Duration::from_secs(1), Timer::RegisterRetry(i));
        }
    }

    /// Ping every register off loopback (GatewayWorker does not ping on loopback).
    pub fn keepalive(&mut self) {
        for link in &mut self.links {
            let loopback =
                matches!(&link.target, Target::Tcp(a) if a.ip() == IpAddr::V4(Ipv4Addr::LOCALHOST));
            if !loopback {
                let _ = link.send(lines::PING);
            }
        }
    }

    pub fn connected(&self) -> usize {
        self.links.iter().filter(|l| l.is_connected()).count()
    }

    pub fn conn_infos(&self) -> impl Iterator<Item = ConnInfo> + '_ {
        self.links.iter().map(|l| l.conn_info(0))
    }
}

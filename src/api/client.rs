//! `GatewayClient`: the Gateway API for programs outside the cluster's processes (a web
//! backend pushing to clients). Blocking: it asks a register for the gateway addresses
//! (cached for a second, registers tried in order) and talks to the gateways' inner ports,
//! on connections it keeps. On each it subscribes to the gateway's membership
//! notifications, so that a send or query about uids or groups goes only to the gateways
//! that may hold them (`docs/protocol.md` §7).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use super::gateway::Api;
use super::membership::Names;
use super::transport::{ApiError, Pkt, QueryPool, Transport};
use crate::wire::register::{parse_broadcast, worker_connect};

/// How long an address list from the register is reused.
const ADDRESS_CACHE: Duration = Duration::from_secs(1);
/// A gateway the registers listed this recently is still sent to when they no longer list
/// it (or cannot be reached): a register that restarts hears from the gateways again one
/// by one, so for a moment it lists only some of them, and a push to the others would be
/// dropped with no error.
const LISTED_GRACE: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Transport of a `GatewayClient`.
pub struct ClientTransport {
    registers: Vec<SocketAddr>,
    secret: String,
    timeout: Duration,
    cache: Option<(Instant, Vec<SocketAddrV4>)>,
    /// Every gateway listed within `LISTED_GRACE`, with when it was last listed.
    listed: Vec<(SocketAddrV4, Instant)>,
    pool: QueryPool,
}

impl ClientTransport {
    /// Ask the registers, in order, for the gateway list.
    fn lookup(&mut self) -> Result<Vec<SocketAddrV4>, ApiError> {
        let mut last = ApiError::NoGateway;
        for &reg in &self.registers {
            match ask_register(reg, &self.secret, self.timeout) {
                Ok(list) => return Ok(list),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The gateways listed now or within `LISTED_GRACE`; the lookup's error when there are
    /// none.
    fn refresh(
        &mut self,
        lookup: Result<Vec<SocketAddrV4>, ApiError>,
    ) -> Result<Vec<SocketAddrV4>, ApiError> {
        let now = Instant::now();
        let fresh = match lookup {
            Ok(list) => list,
            Err(e) if !self.listed.iter().any(|(_, t)| now.duration_since(*t) < LISTED_GRACE) => {
                return Err(e);
            }
            Err(e) => {
                log::warn!("gateway list: {e}; using the gateways listed in the last {LISTED_GRACE:?}");
                Vec::new()
            }
        };
        self.listed.retain(|(a, t)| now.duration_since(*t) < LISTED_GRACE && !fresh.contains(a));
        self.listed.extend(fresh.iter().map(|a| (*a, now)));
        Ok(self.listed.iter().map(|(a, _)| *a).collect())
    }
}

fn ask_register(reg: SocketAddr, secret: &str, timeout: Duration) -> Result<Vec<SocketAddrV4>, ApiError> {
    let io = |e| ApiError::Io(reg, e);
    let mut s = TcpStream::connect_timeout(&reg, CONNECT_TIMEOUT).map_err(io)?;
    s.set_read_timeout(Some(timeout)).map_err(io)?;
    s.write_all(&worker_connect(secret)).map_err(io)?;
    let mut line = Vec::new();
    BufReader::new(s).read_until(b'\n', &mut line).map_err(io)?;
    if line.is_empty() {
        return Err(ApiError::Io(
            reg,
            std::io::Error::other("register closed the connection (wrong secret key?)"),
        ));
    }
    let list = parse_broadcast(line.trim_ascii_end())
        .ok_or_else(|| ApiError::Io(reg, std::io::Error::other("unexpected reply from the register")))?;
    let addrs: Vec<SocketAddrV4> = list.iter().filter_map(|a| a.parse().ok()).collect();
    if addrs.is_empty() {
        return Err(ApiError::NoGateway);
    }
    Ok(addrs)
}

impl Transport for ClientTransport {
    fn gateways(&mut self) -> Result<Vec<SocketAddrV4>, ApiError> {
        if let Some((at, list)) = &self.cache
            && at.elapsed() < ADDRESS_CACHE
        {
            return Ok(list.clone());
        }
        let lookup = self.lookup();
        let list = self.refresh(lookup)?;
        self.cache = Some((Instant::now(), list.clone()));
        Ok(list)
    }

    /// The gateways whose cached connection says they may hold one of `names`, after
    /// applying every notification that arrived (without waiting); every gateway without a
    /// cached connection, or whose snapshot has not arrived.
    fn gateways_for(&mut self, names: Names<'_>) -> Result<Vec<SocketAddrV4>, ApiError> {
        let all = self.gateways()?;
        self.pool.drain_all();
        Ok(all.into_iter().filter(|gw| self.pool.may_hold(*gw, names)).collect())
    }

    fn send(&mut self, gw: SocketAddrV4, p: Pkt<'_>) -> Result<(), ApiError> {
        self.pool.send(gw, p)
    }

    fn query(&mut self, gws: &[SocketAddrV4], p: Pkt<'_>) -> Vec<(SocketAddrV4, Vec<u8>)> {
        self.pool.request(gws, p)
    }
}

/// The blocking Gateway API client (GatewayClient / `Lib\Gateway` outside workerman).
pub struct GatewayClient {
    api: Api<ClientTransport>,
}

impl GatewayClient {
    /// `registers`: one or more `ip:port` of registers (tried in order); `secret`: the
    /// cluster's secret key ('' for none).
    pub fn new(registers: &[&str], secret: &str) -> Result<GatewayClient, ApiError> {
        let mut addrs = Vec::new();
        for r in registers {
            let a = r
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .ok_or_else(|| ApiError::BadClientId(format!("register address {r:?}")))?;
            addrs.push(a);
        }
        let timeout = Duration::from_secs(5);
        Ok(GatewayClient {
            api: Api::new(ClientTransport {
                registers: addrs,
                secret: secret.to_string(),
                timeout,
                cache: None,
                listed: Vec::new(),
                pool: QueryPool::new(secret, timeout, None).subscribing(),
            }),
        })
    }

    /// Reply timeout of queries and register lookups (default 5 s).
    pub fn set_timeout(&mut self, t: Duration) {
        let secret = self.api.t.secret.clone();
        self.api.t.timeout = t;
        self.api.t.pool = QueryPool::new(&secret, t, None).subscribing();
    }
}

impl Deref for GatewayClient {
    type Target = Api<ClientTransport>;
    fn deref(&self) -> &Self::Target {
        &self.api
    }
}

impl DerefMut for GatewayClient {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.api
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ClientTransport {
        ClientTransport {
            registers: Vec::new(),
            secret: String::new(),
            timeout: Duration::from_secs(1),
            cache: None,
            listed: Vec::new(),
            pool: QueryPool::new("", Duration::from_secs(1), None),
        }
    }

    fn addr(port: u16) -> SocketAddrV4 {
        SocketAddrV4::new([10, 0, 0, 1].into(), port)
    }

    #[test]
    fn a_gateway_missing_from_a_fresh_list_is_kept_for_the_grace_period() {
        let mut t = client();
        assert_eq!(t.refresh(Ok(vec![addr(1), addr(2), addr(3)])).unwrap(), [addr(1), addr(2), addr(3)]);
        // A restarted register that heard from gateway 3 only so far.
        let mut got = t.refresh(Ok(vec![addr(3)])).unwrap();
        got.sort();
        assert_eq!(got, [addr(1), addr(2), addr(3)]);
        // Listed no more for longer than the grace period: forgotten.
        for (a, at) in t.listed.iter_mut() {
            if *a != addr(3) {
                *at -= LISTED_GRACE;
            }
        }
        assert_eq!(t.refresh(Ok(vec![addr(3)])).unwrap(), [addr(3)]);
    }

    #[test]
    fn an_unreachable_register_falls_back_on_recently_listed_gateways_only() {
        let mut t = client();
        let down = || Err(ApiError::NoGateway);
        assert!(matches!(t.refresh(down()), Err(ApiError::NoGateway)), "nothing listed yet");
        t.refresh(Ok(vec![addr(1)])).unwrap();
        assert_eq!(t.refresh(down()).unwrap(), [addr(1)]);
        t.listed[0].1 -= LISTED_GRACE;
        assert!(matches!(t.refresh(down()), Err(ApiError::NoGateway)), "listed too long ago");
    }
}

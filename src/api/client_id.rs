//! `client_id`: 20 lowercase hex chars = u32 gateway lan ip ‖ u16 gateway inner port ‖ u32
//! connection id (GatewayWorker's `Context::addressToClientId`). Unique across a cluster for
//! the life of the gateway process; do not persist it.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

/// A client's cluster-wide id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    /// The gateway's LAN address (`lan_ip`) as a number, first octet highest.
    pub gateway_ip: u32,
    /// The gateway's inner port (`start_port` + its number).
    pub gateway_port: u16,
    /// The connection's number within that gateway.
    pub connection_id: u32,
}

impl ClientId {
    /// The id of connection `connection_id` of the gateway at `gateway_ip:gateway_port`.
    pub fn new(gateway_ip: u32, gateway_port: u16, connection_id: u32) -> ClientId {
        ClientId { gateway_ip, gateway_port, connection_id }
    }

    /// The inner address of the gateway holding this client.
    pub fn gateway(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.gateway_ip), self.gateway_port)
    }

    /// Parse a client_id string; `None` unless it is exactly 20 hex chars.
    pub fn parse(s: &str) -> Option<ClientId> {
        let b = s.as_bytes();
        if b.len() != 20 || !b.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let gateway_ip = u32::from_str_radix(&s[0..8], 16).ok()?;
        let gateway_port = u16::from_str_radix(&s[8..12], 16).ok()?;
        let connection_id = u32::from_str_radix(&s[12..20], 16).ok()?;
        Some(ClientId { gateway_ip, gateway_port, connection_id })
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}{:04x}{:08x}", self.gateway_ip, self.gateway_port, self.connection_id)
    }
}

/// Error for a malformed client_id string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadClientId(pub String);

impl fmt::Display for BadClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed client_id {:?}: expected 20 hex characters", self.0)
    }
}

impl std::error::Error for BadClientId {}

impl FromStr for ClientId {
    type Err = BadClientId;
    fn from_str(s: &str) -> Result<ClientId, BadClientId> {
        ClientId::parse(s).ok_or_else(|| BadClientId(s.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_gatewayworker_ids() {
        let id: ClientId = "7f00000108fc00000001".parse().unwrap();
        assert_eq!(id, ClientId::new(0x7f000001, 2300, 1));
        assert_eq!(id.to_string(), "7f00000108fc00000001");
        assert_eq!(id.gateway().to_string(), "127.0.0.1:2300");
        for bad in [
            "",
            "7f00000108fc0000000",
            "7f00000108fc000000011",
            "7f00000108fc0000000g",
            "ZZ00000108fc00000001",
        ] {
            assert!(bad.parse::<ClientId>().is_err(), "{bad}");
        }
    }
}

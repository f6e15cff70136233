//! Everything two processes must agree on: GatewayProtocol packets, register JSON lines,
//! PHP-serialized values.

pub mod packet;
pub mod php;

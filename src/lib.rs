//! gatewayworker: a multi-process real-time socket server, wire-compatible with PHP's
//! workerman + GatewayWorker. See `README.md` for operations and the application API.

/// GatewayProtocol packets, register JSON lines, the PHP-serialize subset.
pub mod wire;

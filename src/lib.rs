//! gatewayworker: a multi-process real-time socket server, wire-compatible with PHP's
//! workerman + GatewayWorker. See `README.md` for operations and the application API.

/// What application code sees: `Events`, `Context` (the Gateway API), `ClientId`, `GatewayClient`.
pub mod api;
/// The applications bundled with the binary (chat demo, echo, broadcast, probe).
pub mod app;
/// Command line: start/stop/restart/reload/status, pid file, daemon.
pub mod cli;
/// Typed configuration from `conf/*.toml`, `.env` and the environment.
pub mod config;
/// Gateway processes: client connections, routing, sessions, uid/group tables, commands.
pub mod gateway;
/// The process logger and the helpers that keep hostile input from flooding the log.
pub mod logging;
/// The master process: listeners, spawning, respawning, reload.
pub mod master;
/// Sockets: listeners, the plain/TLS stream, client protocols (text, frame, websocket).
pub mod net;
/// The per-process event loop: poll, readiness as data, timers, signals, buffers.
pub mod reactor;
/// The register: the cluster's address book.
pub mod register;
/// Shared-memory statistics and the status table.
pub mod stats;
/// GatewayProtocol packets, register JSON lines, the PHP-serialize subset, links.
pub mod wire;
/// Business worker processes: links to gateways, dispatch to `Events`, graceful drain.
pub mod worker;

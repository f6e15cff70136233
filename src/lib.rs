//! gatewayworker: a multi-process real-time socket server, wire-compatible with PHP's
//! workerman + GatewayWorker. See `README.md` for operations and the application API,
//! `docs/architecture.md` for how it is built and `docs/protocol.md` for the wire protocol.
//!
//! The public surface is what an application needs: [`api`] (the `Events` trait, the Gateway
//! API, `GatewayClient`), [`app`] (the bundled applications) and [`cli::main`] (the command
//! line, given the application factory). Everything else is private to the crate.

/// What application code sees: `Events`, `Context` (the Gateway API), `ClientId`, `GatewayClient`.
pub mod api;
/// The applications bundled with the binary (chat demo, echo, broadcast, probe).
pub mod app;
/// Command line: start/stop/restart/reload/status, pid file, daemon.
pub mod cli;
/// Typed configuration from `conf/*.toml`, `.env` and the environment.
mod config;
/// The links a gateway or a business worker keeps to the registers (the register's clients).
mod discovery;
/// Gateway processes: client connections, routing, sessions, uid/group tables, commands.
mod gateway;
/// The HTTP listener: server API, Prometheus metrics, health probes, live dashboard.
mod http;
/// The process logger and the helpers that keep hostile input from flooding the log.
mod logging;
/// The master process: listeners, spawning, respawning, reload.
mod master;
/// Sockets: listeners, the plain/TLS stream, client protocols (text, frame, websocket).
mod net;
/// The per-process event loop: poll, readiness as data, timers, signals, buffers.
mod reactor;
/// The register: the cluster's address book.
mod register;
/// Shared-memory statistics and the status table.
mod stats;
/// GatewayProtocol packets, register JSON lines, the PHP-serialize subset, links.
mod wire;
/// Business worker processes: links to gateways, dispatch to `Events`, graceful drain.
mod worker;

/// Internals the integration tests and the fuzz targets exercise directly (feature
/// `internals`, off by default): the wire formats, the client protocol codecs and the
/// statistics region. Not an API: no stability promised.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod internals {
    /// The PHP `$_GET`/`$_SERVER`/`$_COOKIE` array a gateway builds from a handshake.
    pub mod gateway {
        pub use crate::gateway::server_vars;
    }
    /// Client protocol codecs.
    pub mod net {
        pub use crate::net::{frame, text, websocket};
    }
    /// The shared-memory statistics and the status table.
    pub mod stats {
        pub use crate::stats::*;
    }
    /// GatewayProtocol packets, register lines, the PHP value formats.
    pub mod wire {
        pub use crate::wire::{membership, packet, php, register};
    }
}

//! What application code sees: the `Events` trait a business worker runs, the `Context`
//! each callback gets (the whole GatewayWorker API), `ClientId`, and the blocking
//! `GatewayClient` for programs outside the cluster.

#![warn(missing_docs)]

mod client;
mod client_id;
pub(crate) mod context;
mod gateway;
pub(crate) mod membership;
pub(crate) mod transport;

pub use client::GatewayClient;
pub use client_id::ClientId;
pub use context::Context;
pub use gateway::{Api, SendOpts, ToClientId};
pub use transport::ApiError;

pub use crate::wire::php::{Array, Key, Value};

/// The application's event handlers, run in business worker processes (GatewayWorker's
/// `Events` class). Every callback may use the whole Gateway API through `ctx`.
pub trait Events {
    /// The worker process started (before it is linked to gateways).
    fn on_worker_start(&mut self, _ctx: &mut Context<'_>) {}

    /// A client connected (TCP accept; for websocket before its handshake).
    fn on_connect(&mut self, _ctx: &mut Context<'_>, _client_id: ClientId) {}

    /// A websocket client finished its handshake. `data` holds `get`, `server` and `cookie`
    /// as GatewayWorker builds them (see `README.md`).
    fn on_websocket_connect(&mut self, _ctx: &mut Context<'_>, _client_id: ClientId, _data: &Value) {}

    /// A client sent a message (`ctx.message_is_binary()` tells a binary websocket frame).
    fn on_message(&mut self, ctx: &mut Context<'_>, client_id: ClientId, message: &[u8]);

    /// A client is gone. Session changes made here are not saved.
    fn on_close(&mut self, _ctx: &mut Context<'_>, _client_id: ClientId) {}

    /// A timer added with `ctx.add_timer` fired.
    fn on_timer(&mut self, _ctx: &mut Context<'_>, _timer_id: u64) {}

    /// The worker process is stopping (after its last event).
    fn on_worker_stop(&mut self, _ctx: &mut Context<'_>) {}
}

/// Builds the application named by `[worker] app`; `None` for an unknown name.
pub type AppFactory = fn(&str) -> Option<Box<dyn Events>>;

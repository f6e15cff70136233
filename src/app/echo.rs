//! Benchmark applications: `echo` sends every message back to its sender (same frame type),
//! `broadcast` sends every message to every client.

use crate::api::{ClientId, Context, Events, SendOpts};

/// Text prefixed to every echo reply (empty by default); set with `GW_ECHO_PREFIX` at build
/// time, which lets a test tell two builds apart after a reload.
const PREFIX: &str = match option_env!("GW_ECHO_PREFIX") {
    Some(p) => p,
    None => "",
};

#[derive(Default)]
pub struct Echo {
    buf: Vec<u8>,
}

impl Events for Echo {
    fn on_message(&mut self, ctx: &mut Context<'_>, _client_id: ClientId, message: &[u8]) {
        let opts = if ctx.message_is_binary() { SendOpts::BINARY } else { SendOpts::TEXT };
        let reply = if PREFIX.is_empty() {
            message
        } else {
            self.buf.clear();
            self.buf.extend_from_slice(PREFIX.as_bytes());
            self.buf.extend_from_slice(message);
            &self.buf
        };
        if let Err(e) = ctx.send_to_current_client_opts(reply, opts) {
            log::warn!("echo: {e}");
        }
    }
}

pub struct Broadcast;

impl Events for Broadcast {
    fn on_message(&mut self, ctx: &mut Context<'_>, _client_id: ClientId, message: &[u8]) {
        let opts = if ctx.message_is_binary() { SendOpts::BINARY } else { SendOpts::TEXT };
        if let Err(e) = ctx.send_to_all_opts(message, None, &[], opts) {
            log::warn!("broadcast: {e}");
        }
    }
}

//! The applications bundled with the binary, chosen by `[worker] app`:
//! `chat` (the workerman-chat room), `echo` and `broadcast` (for benchmarks), `probe` (every
//! Gateway API call driven by JSON commands, for tests and diagnostics).

pub mod chat;
pub mod echo;
pub mod probe;

use crate::api::Events;

/// Build the bundled application called `name`.
pub fn bundled(name: &str) -> Option<Box<dyn Events>> {
    match name {
        "chat" => Some(Box::new(chat::Chat)),
        "echo" => Some(Box::new(echo::Echo::default())),
        "broadcast" => Some(Box::new(echo::Broadcast)),
        "probe" => Some(Box::new(probe::Probe)),
        _ => None,
    }
}

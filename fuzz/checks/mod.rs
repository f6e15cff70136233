//! Invariant checks for every decoder that reads bytes from outside, one module per fuzz
//! target. Each `check(data)` feeds `data` to the decoders and panics when something the code
//! promises does not hold. The fuzz targets (`fuzz/fuzz_targets/`) call them on generated
//! inputs; `tests/fuzz_regressions.rs` calls them on the inputs kept in
//! `tests/fuzz_regressions/<target>/`, so a plain `cargo test` replays every finding.

pub mod client_framing;
pub mod input;
pub mod packet;
pub mod php_unserialize;
pub mod register_lines;
pub mod ws_frames;
pub mod ws_handshake;

/// A target's checks: panics when an invariant does not hold for the input.
pub type Check = fn(&[u8]);

/// Every target by name, as `cargo fuzz run <name>` and the regression directories know it.
pub const TARGETS: [(&str, Check); 6] = [
    ("packet", packet::check),
    ("php_unserialize", php_unserialize::check),
    ("register_lines", register_lines::check),
    ("client_framing", client_framing::check),
    ("ws_handshake", ws_handshake::check),
    ("ws_frames", ws_frames::check),
];

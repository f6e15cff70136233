#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::ws_handshake::check(data));

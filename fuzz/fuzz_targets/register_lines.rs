#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::register_lines::check(data));

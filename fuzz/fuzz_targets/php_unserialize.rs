#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::php_unserialize::check(data));

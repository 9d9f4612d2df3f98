#![no_main]
//! See `chatd::fuzzing::http_request`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| chatd::fuzzing::http_request(data));

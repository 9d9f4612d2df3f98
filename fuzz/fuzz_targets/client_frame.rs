#![no_main]
//! See `chatd::fuzzing::client_frame`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| chatd::fuzzing::client_frame(data));

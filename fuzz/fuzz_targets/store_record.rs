#![no_main]
//! See `chatd::fuzzing::store_record`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| chatd::fuzzing::store_record(data));

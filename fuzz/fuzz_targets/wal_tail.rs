#![no_main]
//! See `chatd::fuzzing::wal_tail`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| chatd::fuzzing::wal_tail(data));

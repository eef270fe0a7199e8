#![no_main]
//! See `_native::fuzzing::netmap`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::netmap(data));

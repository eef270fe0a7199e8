#![no_main]
//! See `_native::fuzzing::queue`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::queue(data));

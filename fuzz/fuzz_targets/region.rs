#![no_main]
//! See `_native::fuzzing::region`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::region(data));

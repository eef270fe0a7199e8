#![no_main]
//! See `_native::fuzzing::msgq`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::msgq(data));

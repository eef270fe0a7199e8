#![no_main]
//! See `_native::fuzzing::apisock`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::apisock(data));

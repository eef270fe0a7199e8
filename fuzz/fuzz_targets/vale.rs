#![no_main]
//! See `_native::fuzzing::vale`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::vale(data));

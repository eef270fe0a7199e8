#![no_main]
//! See `_native::fuzzing::apicodec`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::apicodec(data));

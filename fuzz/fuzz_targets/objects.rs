#![no_main]
//! See `_native::fuzzing::objects`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::objects(data));

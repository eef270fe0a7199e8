#![no_main]
//! See `_native::fuzzing::memif_control`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::memif_control(data));

#![no_main]
//! See `_native::fuzzing::memif_rings`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::memif_rings(data));

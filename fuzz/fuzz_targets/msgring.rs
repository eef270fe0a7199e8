#![no_main]
//! See `_native::fuzzing::msgring`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| _native::fuzzing::msgring(data));

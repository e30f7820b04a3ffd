//! Stored blocks from untrusted bytes: decode and verify.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chain_core::fuzz_checks::block(data));

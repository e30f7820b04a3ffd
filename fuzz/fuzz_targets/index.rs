//! Index objects from untrusted bytes: decode, and re-encode what decodes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chain_core::fuzz_checks::index(data));

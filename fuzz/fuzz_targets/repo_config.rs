//! Config objects from untrusted bytes: decode, re-encode what decodes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chain_core::fuzz_checks::repo_config(data));

//! Key slots from untrusted bytes: decode, re-encode what decodes, never open with a wrong secret.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chain_core::fuzz_checks::key_slot(data));

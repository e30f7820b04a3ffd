//! Artifact ids and database names from untrusted bytes: parse, and print what parses.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chain_core::fuzz_checks::artifact_id(data));

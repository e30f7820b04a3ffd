//! The Neo4j chart's values file (`--values`) from untrusted bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| catena::values::fuzz_check(data));

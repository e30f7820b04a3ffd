//! The Neo4j chart's values file (`--values`) from untrusted bytes.
#![no_main]
#[path = "../../examples/catena/values.rs"]
#[allow(dead_code)]
mod values;
libfuzzer_sys::fuzz_target!(|data: &[u8]| values::fuzz_check(data));

//! Storage URLs (`--to-path`, `--from-path`) from untrusted bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| storage_backends::fuzz_checks::storage_url(data));

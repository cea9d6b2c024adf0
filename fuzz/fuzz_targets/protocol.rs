//! libFuzzer target for vhost-user message sequences; the checks are in the
//! harness.
#![no_main]

#[path = "../harness/mod.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::protocol::run(data));

//! Fuzz harnesses, shared by the libFuzzer targets in `fuzz/fuzz_targets`
//! and by `tests/fuzz_corpus.rs`, which replays the committed corpora.
#![allow(dead_code)]

pub mod datapath;
pub mod input;
pub mod protocol;

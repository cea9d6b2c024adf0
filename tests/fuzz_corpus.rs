//! Replays the fuzz corpora (inputs the fuzzers found interesting, and any
//! that once failed) and a bounded batch of fresh pseudo-random inputs, so
//! every CI run re-checks what long fuzzing runs established.

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use harness::{datapath, protocol};

use std::path::Path;

/// xorshift64*: a deterministic stream, so a failure reproduces by seed.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read(&p).expect("corpus file"),
            )
        })
        .collect()
}

#[test]
fn the_datapath_corpus_replays_cleanly() {
    let inputs = corpus("datapath");
    assert!(!inputs.is_empty(), "the committed corpus is missing");
    for (name, data) in inputs {
        eprintln!("replaying {name}");
        datapath::run(&data);
    }
}

#[test]
fn fresh_random_inputs_hold_the_datapath_invariants() {
    let mut rng = Random(0x5eed_1234_abcd_0001);
    for _ in 0..1500 {
        let len = (rng.next() % 4096) as usize;
        datapath::run(&rng.bytes(len));
    }
}

#[test]
fn the_protocol_corpus_replays_cleanly() {
    let inputs = corpus("protocol");
    assert!(!inputs.is_empty(), "the committed corpus is missing");
    for (name, data) in inputs {
        eprintln!("replaying {name}");
        protocol::run(&data);
    }
}

#[test]
fn fresh_random_message_sequences_are_survived() {
    let mut rng = Random(0x5eed_1234_abcd_0002);
    for _ in 0..300 {
        let len = (rng.next() % 2048) as usize;
        protocol::run(&rng.bytes(len));
    }
}

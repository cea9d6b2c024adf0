//! Code shared by the integration tests. Each test crate uses only part of
//! it, so unused items are expected here.
#![allow(dead_code)]

pub mod e2e;
pub mod frontend;
pub mod peers;
pub mod rawsock;
pub mod serve;

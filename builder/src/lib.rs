//! Dockerfile frontend. See README.md.

pub mod attest;
pub mod cache;
pub mod context;
pub mod copy;
pub mod dockerfile;
pub mod frontend;
pub mod lint;
pub mod plan;
pub mod shell;
pub mod solve;

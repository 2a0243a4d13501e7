//! Dockerfile frontend. See README.md.

pub mod context;
pub mod dockerfile;

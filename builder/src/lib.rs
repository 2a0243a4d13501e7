//! Dockerfile frontend. See README.md.

pub mod dockerfile;

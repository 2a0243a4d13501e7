//! Dockerfile frontend. See README.md.

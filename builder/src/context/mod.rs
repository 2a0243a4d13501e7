//! The build context: which files a build may see.

pub mod dockerignore;

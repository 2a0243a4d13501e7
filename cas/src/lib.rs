//! kiln's content-addressed store, OCI image model and archive codecs (DESIGN.md §2, §5).

pub mod archive;
pub mod attestation;
pub mod digest;
mod error;
pub mod image;
pub mod image_fs;
pub mod intoto;
pub mod purl;
pub mod reference;
pub mod registry;
pub mod store;
pub mod threads;

pub use digest::Digest;
pub use error::{Error, Result};
pub use image::Image;
pub use reference::Reference;
pub use store::{LockMode, Store};

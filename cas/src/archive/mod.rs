//! Tarballs in and out of the store: layer ingest, `import`, `load` (docker-archive and OCI
//! archives) and `save` (the hybrid docker-archive of DESIGN.md §5).

pub mod bundle;
pub mod compression;
pub mod import;
pub mod layer;
pub mod load;
pub mod oci_layout;
pub mod rootfs;
pub mod save;
pub mod tar_header;

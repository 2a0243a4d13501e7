//! Container runtime: overlay snapshots and namespaced processes (issue 4). See README.md.
//!
//! So far: [`snapshot`], the per-layer snapshot directories and the layer applier that fills them;
//! [`container`], the executor that runs a process in namespaces over an overlay of snapshots.

pub mod cgroup;
pub mod chroot;
pub mod container;
pub mod isolation;
pub mod process;
pub mod snapshot;

pub use snapshot::{
    apply_layer, commit_snapshot, prepare_snapshot, remove_incomplete_snapshots, ApplyError, ApplyOptions, ApplyStats,
    SnapshotError,
};

//! Container runtime: overlay snapshots and namespaced processes (issue 4). See README.md.
//!
//! So far: [`snapshot`], the per-layer snapshot directories and the layer applier that fills them;
//! [`container`], the executor that runs a process in namespaces over an overlay of snapshots.
//! [`chroot`], the same without namespaces or mounts (a chroot of a copied tree, the layer taken
//! as the tree's difference), for root without `CAP_SYS_ADMIN` (issue 13).

pub mod cgroup;
pub mod chroot;
pub mod container;
pub mod emulation;
pub mod isolation;
pub mod process;
pub mod snapshot;

pub use snapshot::{
    apply_layer, commit_snapshot, prepare_snapshot, remove_incomplete_snapshots, ApplyError, ApplyOptions, ApplyStats,
    SnapshotError,
};

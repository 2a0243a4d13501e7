//! The one integration-test binary for the `kiln` CLI. Each test gets its own temp dir and store
//! through `harness::Kiln`.

mod harness;
mod hostile;

mod attestations;
mod build;
mod build_config;
mod build_outputs;
mod build_scale;
mod bundles;
mod cache;
mod cli_surface;
mod container_fs;
mod containers;
mod context_files;
mod docker_compare;
mod docker_diff;
mod exec;
mod faults;
mod image_compare;
mod images;
mod import;
mod import_url;
mod info;
mod kept_layers;
mod lint;
mod load;
mod login_prompt;
mod mirrors;
mod multiplatform;
mod net_timeouts;
mod networking;
mod oci_layout;
mod registry;
mod registry_tls;
mod resources;
mod robustness;
pub mod rootless;
mod run_cmd;
mod run_flags;
mod run_steps;
mod save;
mod store_crash;
mod unprivileged;
mod volumes;

//! The OCI distribution client (DESIGN.md §5) and pull/push on top of it.
//!
//! - `client`: HTTP(S) to one registry: scheme choice (plain HTTP for loopback and insecure
//!   registries), anonymous/basic/bearer auth, manifests, blobs with redirects and resume,
//!   chunked uploads; every response read through limits.
//! - `auth`: docker's config.json credentials and `WWW-Authenticate` parsing.
//! - `pull` / `push`: moving one image between the store and a registry, verified end to end.
//! - `cache`: the build cache as an OCI artifact (`--cache-to/--cache-from type=registry`).

pub mod auth;
pub mod cache;
pub mod client;
pub mod mirror;
pub mod pull;
pub mod pull_list;
pub mod push;
pub mod push_list;

pub use auth::Credentials;
pub use cache::{pull_cache, push_cache, CacheImport};
pub use client::{Client, ClientOptions};
pub use mirror::{list_tags_with_mirrors, pull_all_with_mirrors, pull_with_mirrors, InsecureRegistry, Mirror};
pub use pull::{pull_image, LayerStatus, Platform, PullEvent, PullOutcome};
pub use push::{push_image, BlobStatus, LayerCompression, PushOutcome};

/// An error about a registry, named `registry/repository` in the message.
pub(crate) struct RegistryError {
    pub what: String,
    pub why: String,
}

impl From<RegistryError> for crate::Error {
    fn from(e: RegistryError) -> crate::Error {
        crate::Error::Registry { what: e.what, why: e.why }
    }
}

/// When `resolve_or_pull` contacts the registry (`kiln build --pull`, `--pull=never`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    /// Only when the store does not have the image.
    Missing,
    /// Every time, so a moved tag is followed.
    Always,
    /// Never: a missing image is an error (offline builds).
    Never,
}

/// The image `reference` names, for a build's `FROM`: taken from the store, or pulled (without
/// output) as `policy` says. Returns the image ID.
pub fn resolve_or_pull(
    store: &crate::Store,
    reference: &crate::Reference,
    platform: &Platform,
    policy: PullPolicy,
    options: ClientOptions,
) -> crate::Result<crate::Digest> {
    let index = store.index()?;
    let local = match index.list_of_tag(&reference.to_string()) {
        // A multi-platform image: its image for `platform`, if it has one.
        Some((_, list)) => {
            list.entries.iter().find(|e| platform_matches(platform, &e.platform)).map(|e| e.image.clone())
        }
        None => index.resolve(&reference.to_string()).ok(),
    };
    if let (PullPolicy::Never, None, Some((_, list))) = (policy, &local, index.list_of_tag(&reference.to_string())) {
        let has: Vec<&str> = list.entries.iter().map(|e| e.platform.as_str()).collect();
        return Err(crate::Error::ImageNotFound(format!(
            "{} for {platform} (the store's multi-platform image has {}; pulling is disabled)",
            reference.familiar(),
            has.join(", ")
        )));
    }
    match (policy, local) {
        (PullPolicy::Never, Some(id)) | (PullPolicy::Missing, Some(id)) => Ok(id),
        (PullPolicy::Never, None) => Err(crate::Error::ImageNotFound(format!(
            "{} (not in the store, and pulling is disabled)",
            reference.familiar()
        ))),
        (PullPolicy::Always, _) | (PullPolicy::Missing, None) => {
            let id = pull_with_mirrors(store, reference, platform, &options, &mut |_| {})?.id;
            // A build for several platforms pulls its base once per platform: the tag keeps
            // every platform pulled (a multi-platform image), not only the last one.
            if reference.digest().is_none() {
                store.add_to_list_as_before(&index, reference, &id, &Platform::host().to_string())?;
            }
            Ok(id)
        }
    }
}

/// Whether an image of `found` (`os/arch[/variant]`) serves a request for `wanted`: same OS and
/// architecture, and the variant when the request names one.
pub fn platform_matches(wanted: &Platform, found: &str) -> bool {
    let mut parts = found.splitn(3, '/');
    let (os, arch, variant) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next());
    os == wanted.os && arch == wanted.architecture && (wanted.variant.is_none() || wanted.variant.as_deref() == variant)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LockMode;

    #[test]
    fn resolve_or_pull_uses_the_store_and_never_means_offline() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path(), LockMode::Shared).unwrap();
        // Port 1 on loopback: any attempt to contact it fails.
        let reference = crate::Reference::parse("127.0.0.1:1/base:1").unwrap();
        let err = resolve_or_pull(&store, &reference, &Platform::host(), PullPolicy::Never, ClientOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("pulling is disabled"), "{err}");
        let err = resolve_or_pull(&store, &reference, &Platform::host(), PullPolicy::Missing, ClientOptions::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("127.0.0.1:1") && err.contains("cannot reach"), "{err}");
        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
        let id = store.put_bytes(config).unwrap();
        store.add_image(&id, std::slice::from_ref(&reference)).unwrap();
        for policy in [PullPolicy::Never, PullPolicy::Missing] {
            assert_eq!(
                resolve_or_pull(&store, &reference, &Platform::host(), policy, ClientOptions::default()).unwrap(),
                id
            );
        }
        assert!(resolve_or_pull(&store, &reference, &Platform::host(), PullPolicy::Always, ClientOptions::default())
            .is_err());
    }
}

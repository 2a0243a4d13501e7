//! `--cache-from` / `--cache-to` as docker buildx spells them: `type=local,src=DIR` /
//! `type=local,dest=DIR`, `type=registry,ref=REF[,mode=min|max][,registry.insecure=true]`, or a
//! bare `REF` (registry). Each spec imports before the build and exports after it.

use std::path::PathBuf;

use kiln_cas::registry::{pull_cache, push_cache, Client, ClientOptions};
use kiln_cas::{Reference, Store};

use super::local;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheSpec {
    /// A directory (`local.rs`); always every step the build used, as `mode=max`.
    Local(PathBuf),
    Registry {
        reference: Reference,
        /// `mode=max`: every stage's steps; `min` (the default, as BuildKit): only the steps behind
        /// the output image's layers.
        all_stages: bool,
        insecure: bool,
    },
}

/// Which flag a spec came from: `--cache-from` names a local cache with `src=`, `--cache-to`
/// with `dest=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    From,
    To,
}

impl CacheSpec {
    pub fn parse(spec: &str, direction: Direction) -> Result<CacheSpec, String> {
        let path_key = match direction {
            Direction::From => "src",
            Direction::To => "dest",
        };
        if !spec.contains('=') {
            return registry(spec, spec, false, false);
        }
        let mut kind = None;
        let mut path = None;
        let mut reference = None;
        let mut all_stages = false;
        let mut insecure = false;
        for field in spec.split(',') {
            match field.split_once('=') {
                Some(("type", v)) => kind = Some(v),
                Some((k, v)) if k == path_key => path = Some(v),
                Some(("ref", v)) => reference = Some(v),
                Some(("mode", "min")) => all_stages = false,
                Some(("mode", "max")) => all_stages = true,
                Some(("mode", other)) => {
                    return Err(format!("invalid cache mode \"{other}\" in \"{spec}\" (min, max)"))
                }
                Some(("registry.insecure", v)) => insecure = v == "true",
                Some((
                    "compression" | "compression-level" | "ignore-error" | "oci-mediatypes" | "image-manifest",
                    _,
                )) => {}
                _ => return Err(format!("invalid cache option \"{field}\" in \"{spec}\"")),
            }
        }
        match kind {
            Some("local") => path
                .map(|p| CacheSpec::Local(p.into()))
                .ok_or_else(|| format!("\"{spec}\": {path_key}=DIR is required for type=local")),
            Some("registry") => match reference {
                Some(r) => registry(spec, r, all_stages, insecure),
                None => Err(format!("\"{spec}\": ref=REFERENCE is required for type=registry")),
            },
            Some(other) => Err(format!("cache type \"{other}\" is not supported (local, registry)")),
            None => Err(format!("\"{spec}\": type= is required (type=local,{path_key}=DIR or type=registry,ref=REF)")),
        }
    }

    /// Brings the cache into the store before a build; returns a line for the progress output.
    /// A registry cache that cannot be read is not an error (the first build has none yet, and a
    /// registry outage must not stop a build that can run without it): the line says why.
    pub fn import(&self, store: &Store) -> Result<String, String> {
        match self {
            CacheSpec::Local(dir) => {
                let stats = local::import(store, dir)?;
                Ok(format!(
                    "importing cache from {}: {} records, {} layers",
                    dir.display(),
                    stats.records,
                    stats.blobs_copied
                ))
            }
            CacheSpec::Registry { reference, insecure, .. } => {
                let pulled = connect(reference, *insecure).and_then(|c| pull_cache(store, &c, reference));
                Ok(match pulled {
                    Ok(stats) => format!(
                        "importing cache from {reference}: {} records, {} layers downloaded ({} already here)",
                        stats.records, stats.layers_downloaded, stats.layers_present
                    ),
                    Err(e) => format!("importing cache from {reference} failed, building without it: {e}"),
                })
            }
        }
    }

    /// Writes the build's cache out after a build; `used` is every key the build used,
    /// `image_keys` those behind the output image.
    pub fn export(&self, store: &Store, used: &[String], image_keys: &[String]) -> Result<String, String> {
        match self {
            CacheSpec::Local(dir) => {
                let stats = local::export(store, used, dir)?;
                Ok(format!(
                    "exporting cache to {}: {} records, {} new layers ({} already there)",
                    dir.display(),
                    stats.records,
                    stats.blobs_copied,
                    stats.blobs_skipped
                ))
            }
            CacheSpec::Registry { reference, all_stages, insecure } => {
                let keys = if *all_stages { used } else { image_keys };
                let mut pushed = 0;
                let mut present = 0;
                let client = connect(reference, *insecure).map_err(|e| format!("exporting cache: {e}"))?;
                let (outcome, records) = push_cache(store, &client, reference, keys, &mut |_, status| match status {
                    kiln_cas::registry::BlobStatus::Pushed => pushed += 1,
                    kiln_cas::registry::BlobStatus::Preparing => {}
                    _ => present += 1,
                })
                .map_err(|e| format!("exporting cache to {reference}: {e}"))?;
                Ok(format!(
                    "exporting cache to {reference}: {records} records, {pushed} blobs pushed ({present} already there), manifest {}",
                    outcome.digest
                ))
            }
        }
    }
}

fn registry(spec: &str, reference: &str, all_stages: bool, insecure: bool) -> Result<CacheSpec, String> {
    let reference = Reference::parse(reference).map_err(|e| format!("invalid cache reference in \"{spec}\": {e}"))?;
    Ok(CacheSpec::Registry { reference, all_stages, insecure })
}

fn connect(reference: &Reference, insecure: bool) -> kiln_cas::Result<Client> {
    Client::connect(reference.domain(), ClientOptions { insecure, ..ClientOptions::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_registry_specs() {
        assert_eq!(
            CacheSpec::parse("type=local,dest=/tmp/c", Direction::To).unwrap(),
            CacheSpec::Local("/tmp/c".into())
        );
        assert_eq!(
            CacheSpec::parse("type=local,src=/tmp/c,mode=max", Direction::From).unwrap(),
            CacheSpec::Local("/tmp/c".into())
        );
        let Ok(CacheSpec::Registry { reference, all_stages: true, insecure: false }) =
            CacheSpec::parse("type=registry,ref=127.0.0.1:5000/app:cache,mode=max", Direction::To)
        else {
            panic!("registry spec with mode=max")
        };
        assert_eq!(reference.to_string(), "127.0.0.1:5000/app:cache");
        let Ok(CacheSpec::Registry { all_stages: false, .. }) =
            CacheSpec::parse("localhost:5000/app:cache", Direction::From)
        else {
            panic!("a bare reference is a registry cache")
        };
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let err = |s: &str, d| CacheSpec::parse(s, d).unwrap_err();
        assert!(err("type=gha", Direction::To).contains("\"gha\" is not supported"));
        assert!(err("dest=/x", Direction::To).contains("type= is required"));
        assert!(err("type=local", Direction::To).contains("dest=DIR is required"));
        assert!(err("type=local,src=/x", Direction::To).contains("invalid cache option \"src=/x\""));
        assert!(err("type=registry", Direction::From).contains("ref=REFERENCE is required"));
        assert!(err("type=registry,ref=a:b,mode=all", Direction::To).contains("invalid cache mode"));
        assert!(err("type=registry,ref=repo/UPPER:x", Direction::To).contains("invalid cache reference"));
        assert!(err("type=local,dest=/x,colour=red", Direction::To).contains("\"colour=red\""));
    }
}

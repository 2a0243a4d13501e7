//! `kiln build --check-reproducible`: the build runs twice, each time in a throwaway store that
//! starts with this store's images (blobs hard-linked, no build cache), and the two image IDs are
//! compared; if they differ, the first differing config field or file is named.

use std::collections::BTreeMap;
use std::fs;
use std::process::ExitCode;

use anyhow::{Context, Result};
use kiln_builder::plan::BuildPlan;
use kiln_builder::solve::{solve, SolveOptions};
use kiln_cas::image_fs::{FsEntry, ImageFs};
use kiln_cas::{Digest, LockMode, Store};
use serde_json::Value;

/// SOURCE_DATE_EPOCH used when the build does not give one: without it, every timestamp is the
/// time of the build and no two builds could match.
const DEFAULT_EPOCH: i64 = 0;

pub fn check(store: &Store, plan: &BuildPlan, options: &SolveOptions) -> Result<ExitCode> {
    let mut options = options.clone();
    options.no_cache = true;
    if options.source_date_epoch.is_none() {
        options.source_date_epoch = Some(DEFAULT_EPOCH);
        eprintln!("check-reproducible: no SOURCE_DATE_EPOCH given, using {DEFAULT_EPOCH}");
    }
    let scratch = store.root().join("tmp");
    fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut results = Vec::new();
    let mut dirs = Vec::new();
    for round in 1..=2 {
        let dir = kiln_cas::store::temp::OwnedTempDir::create(&scratch, "reproduce")?;
        seed_store(store, dir.path())?;
        let throwaway = Store::open(dir.path(), LockMode::Shared)?;
        let output = solve(&throwaway, plan, &options).with_context(|| format!("build {round} of 2"))?;
        results.push((output.image_id, throwaway));
        dirs.push(dir);
    }
    let (first, store_a) = &results[0];
    let (second, store_b) = &results[1];
    if first == second {
        println!("reproducible: both builds gave {first}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("NOT reproducible: {first} != {second}");
    println!("{}", first_difference(store_a, first, store_b, second)?);
    Ok(ExitCode::FAILURE)
}

/// A store holding the same images as `store`: blobs hard-linked (copied across file systems),
/// the image index copied; no build cache and no snapshots.
fn seed_store(store: &Store, dir: &std::path::Path) -> Result<()> {
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    for entry in fs::read_dir(store.root().join("blobs/sha256"))? {
        let entry = entry?;
        let target = blobs.join(entry.file_name());
        if fs::hard_link(entry.path(), &target).is_err() {
            fs::copy(entry.path(), &target)?;
        }
    }
    let index = store.root().join("images.json");
    if index.exists() {
        fs::copy(&index, dir.join("images.json"))?;
    }
    Ok(())
}

/// The first difference between two images: a config field, the number of layers, or the first
/// differing file of the first differing layer.
fn first_difference(a: &Store, id_a: &Digest, b: &Store, id_b: &Digest) -> Result<String> {
    let image_a = a.image(id_a)?;
    let image_b = b.image(id_b)?;
    let layers_a = image_a.diff_ids()?;
    let layers_b = image_b.diff_ids()?;
    for (i, (la, lb)) in layers_a.iter().zip(&layers_b).enumerate() {
        if la != lb {
            let mut fs_a = ImageFs::empty();
            fs_a.push_layer(a, la)?;
            let mut fs_b = ImageFs::empty();
            fs_b.push_layer(b, lb)?;
            let entries = |fs: &ImageFs| -> BTreeMap<String, FsEntry> {
                fs.paths().filter_map(|p| fs.entry(p).map(|e| (p.to_string(), e.clone()))).collect()
            };
            let (ea, eb) = (entries(&fs_a), entries(&fs_b));
            for path in ea.keys().chain(eb.keys()).collect::<std::collections::BTreeSet<_>>() {
                match (ea.get(path), eb.get(path)) {
                    (Some(x), Some(y)) => {
                        let what = describe_entry_difference(a, &fs_a, x, b, &fs_b, y, path)?;
                        if let Some(what) = what {
                            return Ok(format!("layer {i}: /{path}: {what}"));
                        }
                    }
                    (Some(_), None) => return Ok(format!("layer {i}: /{path} is only in the first build")),
                    (None, _) => return Ok(format!("layer {i}: /{path} is only in the second build")),
                }
            }
            return Ok(format!("layer {i} differs ({la} vs {lb}) in tar metadata only"));
        }
    }
    if layers_a.len() != layers_b.len() {
        return Ok(format!("the builds made {} and {} layers", layers_a.len(), layers_b.len()));
    }
    Ok(match first_json_difference(&image_a.config_json(), &image_b.config_json(), "config") {
        Some(path) => format!("the image configs differ at {path}"),
        None => "the image configs differ".to_string(),
    })
}

#[allow(clippy::too_many_arguments)]
fn describe_entry_difference(
    a: &Store,
    fs_a: &ImageFs,
    x: &FsEntry,
    b: &Store,
    fs_b: &ImageFs,
    y: &FsEntry,
    path: &str,
) -> Result<Option<String>> {
    let fields = [
        ("type", format!("{:?}", x.kind), format!("{:?}", y.kind)),
        ("mode", format!("{:o}", x.mode), format!("{:o}", y.mode)),
        ("owner", format!("{}:{}", x.uid, x.gid), format!("{}:{}", y.uid, y.gid)),
        ("mtime", x.mtime.to_string(), y.mtime.to_string()),
        ("size", x.size.to_string(), y.size.to_string()),
        ("link target", format!("{:?}", x.link), format!("{:?}", y.link)),
    ];
    for (name, va, vb) in fields {
        if va != vb {
            return Ok(Some(format!("{name} {va} vs {vb}")));
        }
    }
    let limit = 256 << 20;
    if fs_a.read_file(a, path, limit)? != fs_b.read_file(b, path, limit)? {
        return Ok(Some("content differs".into()));
    }
    Ok(None)
}

fn first_json_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let inner = first_json_difference(
                    x.get(key).unwrap_or(&Value::Null),
                    y.get(key).unwrap_or(&Value::Null),
                    &format!("{path}.{key}"),
                );
                if inner.is_some() {
                    return inner;
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (p, q))| first_json_difference(p, q, &format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(format!("{path} ({a} vs {b})")),
    }
}

//! What the far side of an air gap holds, and the two small documents that let a bundle say what
//! it carries: `kiln-delta.json` (a delta bundle's list of layers it expects the far store to
//! have, and of the blobs it does carry) and `SHA256SUMS` (the sha256 of every member, so `load`
//! can name the member a flipped byte is in).
//!
//! The far side is known only through what the user brings back from it: an image both sides
//! hold, an earlier bundle that was carried over, an inventory written there by
//! `kiln save --inventory`, or any text dump naming full digests (`kiln images --digests
//! --no-trunc`). All of them reduce to a set of layer diffIDs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::archive::compression::{self, Compression};
use crate::image::{diff_ids_of, parse_config};
use crate::store::{ImageIndex, Store};
use crate::{Digest, Error, Result};

/// The member that marks a delta bundle and lists what it expects and carries.
pub const DELTA_MEMBER: &str = "kiln-delta.json";
/// The member listing every other member's sha256, in `sha256sum` format.
pub const SUMS_MEMBER: &str = "SHA256SUMS";
/// manifest.json names a layer the bundle does not carry by this path, so that `docker load` (which
/// cannot complete a delta from its own store) fails on an error that says what the file is.
pub const NOT_CARRIED_DIR: &str = "kiln-delta-bundle.layer-not-carried.load-with-kiln-load";
/// Small members of a bundle read back by `--since BUNDLE`: configs and manifest.json.
const BUNDLE_SMALL_MEMBER: u64 = 4 << 20;
const BUNDLE_MEMORY_BUDGET: u64 = 256 << 20;
/// Lines of SHA256SUMS, and entries of kiln-delta.json and inventories.
const LIST_LIMIT: usize = 1_000_000;
const INVENTORY_LIMIT: u64 = 256 << 20;

/// Layers (by diffID) the far side already holds, and where that knowledge came from.
#[derive(Debug, Default)]
pub struct FarSide {
    pub layers: BTreeSet<Digest>,
    pub sources: Vec<String>,
}

impl FarSide {
    /// Adds what `base` says the far side holds. `base` is an image in `store` unless it names an
    /// existing file, which is read as a bundle (a tar, plain or compressed), an inventory, or a
    /// text listing full digests.
    pub fn add(&mut self, store: &Store, index: &ImageIndex, base: &str) -> Result<()> {
        let path = Path::new(base);
        let context = format!("--since {}", crate::digest::truncate_for_message(base));
        let found = if path.is_file() {
            self.add_file(store, index, path, &context)?
        } else {
            let id = index.resolve(base).map_err(|_| {
                Error::invalid(
                    &context,
                    "is neither an image in this store nor a file (a bundle, an inventory or a digest list)",
                )
            })?;
            self.add_image(store, &id)?
        };
        if found == 0 {
            return Err(Error::invalid(&context, "names no layer the far side holds"));
        }
        self.sources.push(base.to_string());
        Ok(())
    }

    fn add_image(&mut self, store: &Store, id: &Digest) -> Result<usize> {
        let layers = store.image(id)?.diff_ids()?;
        let n = layers.len().max(1);
        self.layers.extend(layers);
        Ok(n)
    }

    fn add_file(&mut self, store: &Store, index: &ImageIndex, path: &Path, context: &str) -> Result<usize> {
        let file = File::open(path).map_err(|e| Error::io("opening", path, e))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let head = reader.fill_buf().map_err(|e| Error::io("reading", path, e))?.to_vec();
        if Compression::detect(&head) != Compression::None || crate::archive::load::looks_like_tar(&head) {
            let layers = bundle_layers(reader, context)?;
            let n = layers.len().max(1);
            self.layers.extend(layers);
            return Ok(n);
        }
        let mut text = Vec::new();
        reader.take(INVENTORY_LIMIT + 1).read_to_end(&mut text).map_err(|e| Error::io("reading", path, e))?;
        if text.len() as u64 > INVENTORY_LIMIT {
            return Err(Error::invalid(context, format!("is over the {INVENTORY_LIMIT}-byte limit for a digest list")));
        }
        if let Ok(inventory) = serde_json::from_slice::<Inventory>(&text) {
            if inventory.kiln_inventory != 1 {
                return Err(Error::invalid(
                    context,
                    format!("is an inventory of version {}; this kiln reads version 1", inventory.kiln_inventory),
                ));
            }
            let n = inventory.layers.len() + inventory.images.len();
            self.layers.extend(inventory.layers);
            return Ok(n);
        }
        let text = String::from_utf8_lossy(&text);
        let mut found = 0;
        for token in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == ':')) {
            let token = token.rsplit_once('@').map_or(token, |(_, d)| d);
            let hex = token.strip_prefix("sha256:").unwrap_or(token);
            let is_hex = hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            if !is_hex || !(hex.len() == 64 || (hex.len() == 12 && token.len() == 12)) {
                continue;
            }
            // A full digest is an image ID or manifest digest of an image this store holds, or else
            // a layer; a 12-digit one (the IMAGE ID column) only an image this store holds.
            match index.resolve(hex) {
                Ok(id) => found += self.add_image(store, &id)?,
                Err(_) if hex.len() == 64 => {
                    self.layers.insert(Digest::from_hex(hex).expect("64 lowercase hex digits"));
                    found += 1;
                }
                Err(_) => {}
            }
        }
        Ok(found)
    }
}

/// The diffIDs of every image in a bundle: what the far side holds once the bundle is loaded.
/// Only manifest.json and the configs are read; layers stream past.
fn bundle_layers<R: BufRead>(reader: R, context: &str) -> Result<BTreeSet<Digest>> {
    let bad = |why: String| Error::invalid(context, why);
    let (_, reader) = compression::decompress(reader).map_err(|e| bad(format!("cannot be read as a bundle: {e}")))?;
    let mut archive = tar::Archive::new(reader);
    let mut small: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut budget = BUNDLE_MEMORY_BUDGET;
    for entry in archive.entries().map_err(|e| bad(format!("is not a tar archive: {e}")))? {
        let mut entry = entry.map_err(|e| bad(format!("is not a readable tar archive: {e}")))?;
        let size = entry.size();
        if !entry.header().entry_type().is_file() || size > BUNDLE_SMALL_MEMBER || size > budget {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_string();
        let mut bytes = Vec::with_capacity(size as usize);
        entry.read_to_end(&mut bytes).map_err(|e| bad(format!("member {name}: {e}")))?;
        budget -= size;
        small.insert(name, bytes);
    }
    let manifest =
        small.get("manifest.json").ok_or_else(|| bad("is a tar without manifest.json, so not a bundle".into()))?;
    #[derive(Deserialize)]
    struct Item {
        #[serde(rename = "Config")]
        config: String,
    }
    let items: Vec<Item> = serde_json::from_slice(manifest)
        .map_err(|e| bad(format!("manifest.json is not a docker-archive manifest: {e}")))?;
    let mut layers = BTreeSet::new();
    for item in items {
        let name = item.config.trim_start_matches("./");
        let config = small.get(name).ok_or_else(|| bad(format!("config {name} named by manifest.json is missing")))?;
        let parsed = parse_config(config, &format!("{context}: {name}"))?;
        layers.extend(diff_ids_of(&parsed, &format!("{context}: {name}"))?);
    }
    Ok(layers)
}

/// `kiln save --inventory`: what this store holds, for the near side's `--since`.
#[derive(Serialize, Deserialize)]
pub struct Inventory {
    #[serde(rename = "kilnInventory")]
    pub kiln_inventory: u32,
    pub images: Vec<Digest>,
    pub layers: Vec<Digest>,
}

/// The inventory of `images` (every image when empty): their IDs, and the layers of theirs this
/// store holds, both sorted.
pub fn inventory(store: &Store, images: &[String]) -> Result<Vec<u8>> {
    let index = store.index()?;
    let ids: BTreeSet<Digest> = if images.is_empty() {
        index.images.keys().cloned().collect()
    } else {
        images.iter().map(|name| index.resolve(name)).collect::<Result<_>>()?
    };
    let mut layers = BTreeSet::new();
    for id in &ids {
        for layer in store.image(id)?.diff_ids()? {
            if store.has_layer(&layer) {
                layers.insert(layer);
            }
        }
    }
    let inventory =
        Inventory { kiln_inventory: 1, images: ids.into_iter().collect(), layers: layers.into_iter().collect() };
    let mut bytes = serde_json::to_vec_pretty(&inventory).expect("inventory serialises");
    bytes.push(b'\n');
    Ok(bytes)
}

/// `kiln-delta.json`.
#[derive(Serialize, Deserialize, Debug)]
pub struct DeltaIndex {
    #[serde(rename = "kilnDeltaBundle")]
    pub version: u32,
    /// For a human (or docker user) who opens the file.
    #[serde(default)]
    pub note: String,
    /// Layers the far store must already hold, with the images that need each.
    pub expects: Vec<ExpectedLayer>,
    /// Every blob member the bundle carries.
    pub carries: Vec<CarriedBlob>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ExpectedLayer {
    pub digest: Digest,
    pub size: u64,
    #[serde(rename = "neededBy")]
    pub needed_by: Vec<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct CarriedBlob {
    pub digest: Digest,
    pub size: u64,
}

pub const DELTA_NOTE: &str = "A kiln delta bundle (kiln save --since): the layers under \"expects\" are not in it. \
Load it with `kiln load` into a store that holds them; docker load and skopeo cannot complete it.";

impl DeltaIndex {
    pub fn parse(bytes: &[u8]) -> Result<DeltaIndex> {
        let context = DELTA_MEMBER;
        let index: DeltaIndex = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(context, format!("is not a kiln delta index: {e}")))?;
        if index.version != 1 {
            return Err(Error::invalid(
                context,
                format!("is a delta index of version {}; this kiln reads version 1", index.version),
            ));
        }
        if index.expects.len() + index.carries.len() > LIST_LIMIT {
            return Err(Error::invalid(context, format!("lists more than {LIST_LIMIT} blobs")));
        }
        Ok(index)
    }
}

/// How a delta names an image that needs a layer: its first tag, or its ID when untagged.
pub fn image_name(tags: &[crate::Reference], id: &Digest) -> String {
    match tags.first() {
        Some(tag) => tag.familiar(),
        None => id.to_string(),
    }
}

/// The manifest.json path of a layer a delta does not carry.
pub fn not_carried_member(digest: &Digest) -> String {
    format!("{NOT_CARRIED_DIR}/{}", digest.hex())
}

/// SHA256SUMS text: `<hex>  <member>` per line, in the order given (the archive's).
pub fn sums_text<'a>(entries: impl IntoIterator<Item = (&'a str, &'a Digest)>) -> Vec<u8> {
    let mut out = String::new();
    for (name, digest) in entries {
        out.push_str(digest.hex());
        out.push_str("  ");
        out.push_str(name);
        out.push('\n');
    }
    out.into_bytes()
}

/// Parses SHA256SUMS text (`sha256sum` output, text or binary mode marker) into member → digest.
pub fn parse_sums(bytes: &[u8], context: &str) -> Result<BTreeMap<String, Digest>> {
    let text = std::str::from_utf8(bytes).map_err(|_| Error::invalid(context, "is not UTF-8 text"))?;
    let mut sums = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| Error::invalid(format!("{context}: line {}", i + 1), why.to_string());
        if sums.len() >= LIST_LIMIT {
            return Err(bad("too many lines"));
        }
        let (hex, rest) = line.split_once(' ').ok_or_else(|| bad("is not \"<sha256>  <name>\""))?;
        let name = rest
            .strip_prefix(' ')
            .or_else(|| rest.strip_prefix('*'))
            .ok_or_else(|| bad("is not \"<sha256>  <name>\""))?;
        let digest = Digest::from_hex(hex).map_err(|_| bad("does not start with a sha256 in hex"))?;
        if sums.insert(name.to_string(), digest).is_some() {
            return Err(bad("names a member twice"));
        }
    }
    Ok(sums)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_round_trip_and_refuse_garbage() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let text = sums_text([("blobs/sha256/x", &a), ("manifest.json", &b)]);
        let parsed = parse_sums(&text, "SHA256SUMS").unwrap();
        assert_eq!(parsed["blobs/sha256/x"], a);
        assert_eq!(parsed["manifest.json"], b);
        assert_eq!(parsed.len(), 2);
        for bad in ["zz  x\n", &format!("{}\n", a.hex()), &format!("{} x\n{} x\n", a.hex(), a.hex())] {
            assert!(parse_sums(bad.as_bytes(), "S").is_err(), "{bad}");
        }
        // sha256sum's binary-mode marker is read too.
        assert_eq!(parse_sums(format!("{} *f\n", a.hex()).as_bytes(), "S").unwrap()["f"], a);
    }

    #[test]
    fn delta_index_of_another_version_is_refused() {
        let text = br#"{"kilnDeltaBundle":2,"expects":[],"carries":[]}"#;
        assert!(DeltaIndex::parse(text).unwrap_err().to_string().contains("version 2"));
        assert!(DeltaIndex::parse(br#"{"kilnDeltaBundle":1,"expects":[],"carries":[]}"#).is_ok());
    }
}

//! Layers kept only as snapshots: the runtime's [`LayerMaker`] for the store's deferred layers
//! (`kiln_cas` `store/deferred.rs`). A RUN step's upper dir is adopted as its layer's snapshot
//! ([`Snapshots::adopt_layer`]) and the store records `snapshot:<chain ID hex>` as the recipe; when
//! a command needs the tar, it is made again from the snapshot with the diff options recorded
//! beside it, and the store checks it against the diffID.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use kiln_cas::store::{LayerIndex, LayerMaker};
use kiln_cas::{Digest, Store};

use super::Snapshots;

const RECIPE_PREFIX: &str = "snapshot:";

/// The store's recipe for the layer kept as the snapshot `chain`.
pub fn recipe(chain: &Digest) -> String {
    format!("{RECIPE_PREFIX}{}", chain.hex())
}

fn chain_of(recipe: &str) -> Option<Digest> {
    Digest::from_hex(recipe.strip_prefix(RECIPE_PREFIX)?).ok()
}

struct SnapshotLayers;

impl LayerMaker for SnapshotLayers {
    fn write_layer(&self, store: &Store, recipe: &str, out: &mut dyn Write) -> Result<(), String> {
        let chain = chain_of(recipe).ok_or_else(|| format!("unknown layer recipe \"{recipe}\""))?;
        let snapshots = Snapshots::open(store.root()).map_err(|e| e.to_string())?;
        snapshots.write_kept_layer(&chain, out).map_err(|e| e.to_string())
    }

    fn layer_index(&self, store: &Store, recipe: &str) -> Result<LayerIndex, String> {
        let chain = chain_of(recipe).ok_or_else(|| format!("unknown layer recipe \"{recipe}\""))?;
        let snapshots = Snapshots::open(store.root()).map_err(|e| e.to_string())?;
        snapshots.kept_layer_index(&chain).map_err(|e| e.to_string())
    }

    fn available(&self, store: &Store, recipe: &str) -> bool {
        let Some(chain) = chain_of(recipe) else { return false };
        let dir = store.root().join("snapshots");
        let is = |name: String, dir_wanted: bool| {
            std::fs::symlink_metadata(dir.join(name)).is_ok_and(|m| if dir_wanted { m.is_dir() } else { m.is_file() })
        };
        is(chain.hex().to_string(), true) && is(format!("{}.layer", chain.hex()), false)
    }
}

/// Lets `store` make the blobs of layers kept as snapshots, and lets builds keep them so.
pub fn install(store: &Store) {
    store.set_layer_maker(Arc::new(SnapshotLayers));
}

/// Chain IDs (hex) of the snapshots that are the only copy of a layer the store still records:
/// a sweep of unused snapshots must keep them.
pub fn backing_chains(store: &Store) -> kiln_cas::Result<BTreeSet<String>> {
    let mut chains = BTreeSet::new();
    for diff_id in store.deferred_layers()? {
        if let Some(chain) = store.deferred_layer(&diff_id).and_then(|r| chain_of(&r.recipe)) {
            chains.insert(chain.hex().to_string());
        }
    }
    Ok(chains)
}

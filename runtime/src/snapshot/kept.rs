//! Layers kept only as snapshots: the runtime's [`LayerMaker`] for the store's deferred layers
//! (`kiln_cas` `store/deferred.rs`). A RUN step's upper dir is adopted as its layer's snapshot
//! ([`Snapshots::adopt_layer`]) and the store records `snapshot:<chain ID hex>` as the recipe; when
//! a command needs the tar, it is made again from the snapshot with the diff options recorded
//! beside it, and the store checks it against the diffID.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, OnceLock};

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

/// The maker installed on one store handle. Its snapshots are opened once, on first use: that
/// open removes what a crash left and checks kept snapshots after a restart (which a command that
/// has not opened them yet, such as `save`, still needs), and later layers of the same command
/// skip both.
#[derive(Default)]
struct SnapshotLayers {
    snapshots: OnceLock<Result<Snapshots, String>>,
}

impl SnapshotLayers {
    fn snapshots(&self, store: &Store) -> Result<&Snapshots, String> {
        let opened = self.snapshots.get_or_init(|| Snapshots::open(store.root()).map_err(|e| e.to_string()));
        opened.as_ref().map_err(Clone::clone)
    }
}

impl LayerMaker for SnapshotLayers {
    fn write_layer(&self, store: &Store, recipe: &str, out: &mut dyn Write) -> Result<(), String> {
        let chain = chain_of(recipe).ok_or_else(|| format!("unknown layer recipe \"{recipe}\""))?;
        self.snapshots(store)?.write_kept_layer(&chain, out).map_err(|e| e.to_string())
    }

    fn layer_index(&self, store: &Store, recipe: &str) -> Result<LayerIndex, String> {
        let chain = chain_of(recipe).ok_or_else(|| format!("unknown layer recipe \"{recipe}\""))?;
        self.snapshots(store)?.kept_layer_index(&chain).map_err(|e| e.to_string())
    }

    fn available(&self, store: &Store, recipe: &str) -> bool {
        chain_of(recipe).is_some_and(|chain| Snapshots::attach(store.root()).kept_layer(&chain).is_some())
    }
}

/// Lets `store` make the blobs of layers kept as snapshots, and lets builds keep them so.
pub fn install(store: &Store) {
    store.set_layer_maker(Arc::new(SnapshotLayers::default()));
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

//! What the listing commands (images, inspect, history, rmi) know of an image: its config, its
//! tags in docker's familiar form, and its size.

use anyhow::{Context, Result};
use kiln_cas::store::{ImageIndex, ImageRecord};
use kiln_cas::{Digest, Image, Reference, Store};

pub struct ImageView {
    pub id: Digest,
    pub image: Image,
    pub record: ImageRecord,
    /// Familiar references (`busybox:latest`), sorted.
    pub tags: Vec<String>,
    /// Sum of the uncompressed layer sizes, as docker reports an image's size.
    pub size: u64,
    pub layer_sizes: Vec<u64>,
}

impl ImageView {
    pub fn load(store: &Store, index: &ImageIndex, id: &Digest) -> Result<ImageView> {
        let image = store.image(id).with_context(|| format!("reading image {id}"))?;
        let layer_sizes = store.layer_sizes(&image)?;
        let mut tags: Vec<String> = index
            .tags_of(id)
            .into_iter()
            .map(|t| Reference::parse(t).map(|r| r.familiar()).unwrap_or_else(|_| t.to_string()))
            .collect();
        tags.sort();
        Ok(ImageView {
            id: id.clone(),
            record: index.images.get(id).cloned().unwrap_or_default(),
            tags,
            size: layer_sizes.iter().sum(),
            layer_sizes,
            image,
        })
    }

    /// Every image in the store, newest first (as `docker images` lists them). A multi-platform
    /// image shows once, as its tag's (host platform's) image: its other platforms' images are
    /// not rows of their own.
    pub fn load_all(store: &Store, index: &ImageIndex) -> Result<Vec<ImageView>> {
        let members = index.list_members();
        let mut views = index
            .images
            .keys()
            .filter(|id| !members.contains(*id) || !index.tags_of(id).is_empty())
            .map(|id| ImageView::load(store, index, id))
            .collect::<Result<Vec<_>>>()?;
        views.sort_by(|a, b| b.created().cmp(&a.created()).then_with(|| a.id.cmp(&b.id)));
        Ok(views)
    }

    pub fn created(&self) -> Option<&str> {
        self.image.config.created().as_deref()
    }

    pub fn labels(&self) -> Vec<(String, String)> {
        let mut labels: Vec<(String, String)> = self
            .image
            .config
            .config()
            .as_ref()
            .and_then(|c| c.labels().clone())
            .map(|l| l.into_iter().collect())
            .unwrap_or_default();
        labels.sort();
        labels
    }
}

/// `sha256:…` in full, or the 12-digit short form docker shows by default.
pub fn display_id(id: &Digest, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.short().to_string()
    }
}

//! `kiln build --sbom`, `--provenance`, `--attest`: which attestations a build attaches, and their
//! predicates for each image built (the statements around them are made when the image list is
//! written or pushed, naming the manifest it is handed on as).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use kiln_builder::attest::provenance::{BaseImage, Mode, MountId, ProvenanceInput};
use kiln_builder::attest::sbom::{self, SbomOptions};
use kiln_builder::attest::statement::{PREDICATE_SLSA_V1, PREDICATE_SPDX};
use kiln_builder::plan::{Base, BuildPlan, Op};
use kiln_cas::image_fs::ImageFs;
use kiln_cas::{Digest, Reference, Store};

/// The attestations asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attestations {
    pub sbom: bool,
    pub provenance: Option<Mode>,
}

impl Attestations {
    /// From `--sbom VALUE`, `--provenance VALUE` and `--attest type=…` (buildx's spellings); a
    /// later flag overrides an earlier one for the same kind.
    pub fn parse(sbom: Option<&str>, provenance: Option<&str>, attest: &[String]) -> Result<Attestations> {
        let mut wanted = Attestations::default();
        if let Some(value) = sbom {
            wanted.sbom = parse_sbom(value).with_context(|| format!("invalid --sbom \"{value}\""))?;
        }
        if let Some(value) = provenance {
            wanted.provenance = parse_provenance(value).with_context(|| format!("invalid --provenance \"{value}\""))?;
        }
        for item in attest {
            let context = || format!("invalid --attest \"{item}\"");
            let (kind, rest) = match item.split_once(',') {
                Some((kind, rest)) => (kind, rest),
                None => (item.as_str(), ""),
            };
            match kind {
                "type=sbom" => {
                    wanted.sbom = if rest.is_empty() { true } else { parse_sbom(rest).with_context(context)? };
                }
                "type=provenance" => {
                    wanted.provenance =
                        if rest.is_empty() { Some(Mode::Min) } else { parse_provenance(rest).with_context(context)? };
                }
                _ => bail!("{}: expected type=sbom or type=provenance first", context()),
            }
        }
        Ok(wanted)
    }

    pub fn any(&self) -> bool {
        self.sbom || self.provenance.is_some()
    }
}

fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// `true`, `false`, or buildx's `key=value` list (`disabled=true`, `generator=…` is refused: kiln
/// has one scanner).
fn parse_sbom(value: &str) -> Result<bool> {
    if let Some(on) = parse_bool(value) {
        return Ok(on);
    }
    let mut on = true;
    for field in value.split(',') {
        match field.split_once('=') {
            Some(("disabled", v)) => on = !parse_bool(v).context("disabled takes true or false")?,
            Some(("generator", _)) => bail!("kiln has its own SBOM scanner; a generator image cannot be chosen"),
            _ => bail!("expected true, false or disabled=true"),
        }
    }
    Ok(on)
}

/// `true` (mode=min), `false`, or `mode=min|max[,version=v1][,disabled=true]`.
fn parse_provenance(value: &str) -> Result<Option<Mode>> {
    if let Some(on) = parse_bool(value) {
        return Ok(on.then_some(Mode::Min));
    }
    let mut mode = Mode::Min;
    let mut on = true;
    for field in value.split(',') {
        match field.split_once('=') {
            Some(("mode", v)) => mode = Mode::parse(v).map_err(anyhow::Error::msg)?,
            Some(("version", "v1")) => {}
            Some(("version", v)) => bail!("provenance version {v} is not supported (kiln writes SLSA v1)"),
            Some(("disabled", v)) => on = !parse_bool(v).context("disabled takes true or false")?,
            _ => bail!("expected true, false or mode=min|max"),
        }
    }
    Ok(on.then_some(mode))
}

/// What provenance says of the build as a whole.
pub struct BuildFacts<'a> {
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
    pub dockerfile_name: &'a str,
    pub dockerfile: &'a [u8],
    pub context_digest: Option<String>,
    pub secret_ids: Vec<String>,
    /// `--network none` for the whole build.
    pub no_network: bool,
    pub started_on: chrono::DateTime<chrono::Utc>,
    pub source_date_epoch: Option<i64>,
    /// The image's name in its SBOM: the first `-t`, else its ID.
    pub name: Option<String>,
}

/// The predicates to attach to `image`, built from `plan` (one platform's): SBOM first, then
/// provenance, as BuildKit orders them. The SBOM scan's warnings go to `warn`.
pub fn predicates(
    store: &Store,
    image: &Digest,
    plan: &BuildPlan,
    wanted: Attestations,
    facts: &BuildFacts<'_>,
    warn: &mut dyn FnMut(String),
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    if wanted.sbom {
        let config = store.image(image)?;
        let fs = ImageFs::load(store, &config)?;
        let options = SbomOptions {
            name: facts.name.clone().unwrap_or_else(|| image.to_string()),
            source_date_epoch: facts.source_date_epoch,
        };
        let (document, warnings) = sbom::generate(store, &fs, &options).context("making the SBOM")?;
        for warning in warnings {
            warn(format!("SBOM: {warning}"));
        }
        out.push((PREDICATE_SPDX.to_string(), document));
    }
    if let Some(mode) = wanted.provenance {
        let network = !facts.no_network
            && plan.stages.iter().flat_map(|s| &s.steps).any(|step| match &step.op {
                Op::Run(run) => run.network.as_deref() != Some("none"),
                _ => false,
            });
        let input = ProvenanceInput {
            mode,
            builder_id: format!("urn:kiln:builder:{}", env!("CARGO_PKG_VERSION")),
            build_args: facts.build_args.clone(),
            labels: facts.labels.clone(),
            target: facts.target.map(str::to_string),
            builder_platform: super::build::host_platform(),
            dockerfile_path: facts.dockerfile_name.to_string(),
            dockerfile: facts.dockerfile.to_vec(),
            context_digest: facts.context_digest.clone(),
            base_images: base_images(store, plan)?,
            secrets: facts.secret_ids.iter().map(|id| MountId { id: id.clone(), optional: false }).collect(),
            ssh: Vec::new(),
            network,
            started_on: Some(facts.started_on),
            finished_on: Some(chrono::Utc::now()),
            source_date_epoch: facts.source_date_epoch,
        };
        out.push((PREDICATE_SLSA_V1.to_string(), kiln_builder::attest::provenance::predicate(&input)));
    }
    Ok(out)
}

/// The base images of the stages a platform's build used: what each reference resolved to (a
/// multi-platform image's index, else the registry digest it was pulled as, else its ID).
fn base_images(store: &Store, plan: &BuildPlan) -> Result<Vec<BaseImage>> {
    let index = store.index()?;
    let mut bases: Vec<BaseImage> = Vec::new();
    for stage in &plan.stages {
        let Base::Image(reference) = &stage.base else { continue };
        let Ok(parsed) = Reference::parse(reference) else { continue };
        let digest = if let Some((list, _)) = index.list_of_tag(&parsed.to_string()) {
            list.clone()
        } else {
            let Ok(id) = index.resolve(&parsed.to_string()) else { continue };
            let pulled_as = index.images.get(&id).and_then(|record| {
                record.repo_digests.iter().find_map(|d| {
                    let (repo, digest) = d.split_once('@')?;
                    (repo == parsed.repository()).then(|| digest.parse::<Digest>().ok()).flatten()
                })
            });
            pulled_as.unwrap_or(id)
        };
        let base = BaseImage { reference: reference.clone(), digest, platform: stage.platform.clone() };
        if !bases.contains(&base) {
            bases.push(base);
        }
    }
    Ok(bases)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_buildx_spells_them() {
        let p = |s: Option<&str>, v: Option<&str>, a: &[&str]| {
            Attestations::parse(s, v, &a.iter().map(|x| x.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(p(None, None, &[]).unwrap(), Attestations::default());
        assert_eq!(p(Some("true"), None, &[]).unwrap(), Attestations { sbom: true, provenance: None });
        assert_eq!(p(None, Some("mode=max"), &[]).unwrap().provenance, Some(Mode::Max));
        assert_eq!(p(None, Some("true"), &[]).unwrap().provenance, Some(Mode::Min));
        assert_eq!(p(None, Some("false"), &[]).unwrap().provenance, None);
        let both = p(None, None, &["type=sbom", "type=provenance,mode=max"]).unwrap();
        assert_eq!(both, Attestations { sbom: true, provenance: Some(Mode::Max) });
        assert!(!p(Some("true"), None, &["type=sbom,disabled=true"]).unwrap().sbom);
        let err = p(Some("maybe"), None, &[]).unwrap_err();
        assert!(format!("{err:#}").contains("invalid --sbom \"maybe\""), "{err:#}");
        let err = p(None, Some("mode=fast"), &[]).unwrap_err();
        assert!(format!("{err:#}").contains("--provenance"), "{err:#}");
        let err = p(None, None, &["type=vex"]).unwrap_err();
        assert!(format!("{err:#}").contains("type=sbom or type=provenance"), "{err:#}");
    }
}

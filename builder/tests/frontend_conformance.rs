//! The planner over the real Dockerfiles of the shared corpus (`../shared/conformance`,
//! category `real`), with an image source that has every image: no file may panic, and the
//! share that plans is printed (run with `--nocapture`). Without the corpus the test says so
//! and passes.

use std::collections::BTreeMap;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

mod corpus;

use corpus::{corpus_dir, read_manifest};

use kiln_builder::dockerfile::parse_bytes;
use kiln_builder::frontend::{plan, BaseImageConfig, ImageConfigSource, PlanOptions};

/// Every image exists, with an empty config.
struct AnyImage;

impl ImageConfigSource for AnyImage {
    fn base_config(&self, _reference: &str, _platform: &str) -> Result<BaseImageConfig, String> {
        Ok(BaseImageConfig::default())
    }
}

/// The `real` Dockerfiles of the corpus, as paths relative to it.
fn real_dockerfiles(dir: &Path) -> Vec<String> {
    read_manifest(dir).into_iter().filter(|c| c.category == "real").map(|c| c.local_path).collect()
}

#[test]
fn plans_real_dockerfiles_without_panicking() {
    let Some(dir) = corpus_dir() else {
        return;
    };
    let files = real_dockerfiles(&dir);
    let (mut parsed, mut planned) = (0usize, 0usize);
    let mut failures: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut panics = Vec::new();
    for file in &files {
        let bytes = fs::read(dir.join(file)).expect("read Dockerfile");
        let Ok(dockerfile) = parse_bytes(&bytes) else {
            continue;
        };
        parsed += 1;
        let result = catch_unwind(AssertUnwindSafe(|| plan(&dockerfile, &PlanOptions::default(), &AnyImage)));
        match result {
            Ok(Ok(_)) => planned += 1,
            Ok(Err(e)) => {
                // Group by the message without its location and quoted specifics.
                let message = e.kind.to_string();
                let key: String = message.split(['"', ':']).next().unwrap_or(&message).to_string();
                failures.entry(key).or_default().push(format!("{file}: {e}"));
            }
            Err(_) => panics.push(file.clone()),
        }
    }
    println!(
        "planned {planned} of {parsed} parsed real Dockerfiles ({:.1}%); {} in the corpus",
        100.0 * planned as f64 / parsed.max(1) as f64,
        files.len()
    );
    for (kind, examples) in &failures {
        println!("  {:4}  {kind}", examples.len());
        for example in examples.iter().take(3) {
            println!("          {example}");
        }
    }
    assert!(panics.is_empty(), "planner panicked on: {panics:?}");
    assert!(parsed == 0 || planned * 10 >= parsed * 9, "fewer than 90% of the real Dockerfiles planned");
}

//! The shared conformance corpus (`../shared/conformance`, see its SOURCES.md): where it is,
//! and its manifest. Used by the parser and planner conformance tests.

#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

pub struct Case {
    pub local_path: String,
    pub category: String,
    pub buildkit_expect: String,
}

pub fn corpus_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance");
    if dir.join("manifest.tsv").is_file() {
        Some(dir)
    } else {
        println!("SKIP: conformance corpus not found at {} (manifest.tsv missing)", dir.display());
        None
    }
}

pub fn read_manifest(dir: &Path) -> Vec<Case> {
    let manifest = fs::read_to_string(dir.join("manifest.tsv")).expect("read manifest.tsv");
    let mut lines = manifest.lines();
    let header: Vec<&str> = lines.next().expect("manifest header").split('\t').collect();
    let column =
        |name: &str| header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("manifest has no {name} column"));
    let (path_col, category_col, expect_col) = (column("local_path"), column("category"), column("buildkit_expect"));
    lines
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let field = |i: usize| fields.get(i).copied().unwrap_or("").to_string();
            Case { local_path: field(path_col), category: field(category_col), buildkit_expect: field(expect_col) }
        })
        .collect()
}

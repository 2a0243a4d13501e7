//! Conformance of the Dockerfile parser with BuildKit, driven by the shared corpus
//! (`../shared/conformance/manifest.tsv`, see its SOURCES.md):
//! - `bk-testfile`: BuildKit's parser golden cases; the dump plus a newline must equal the
//!   `result` file byte for byte (BuildKit's `TestParseCases`);
//! - `bk-testfile-negative`: must fail, with a line number (`TestParseErrorCases`);
//! - `bk-testfile-line`: instruction start/end lines (`TestParseIncludesLineNumbers`);
//! - everything else (`real`, `builder-test`, `doc-snippet`, `go-test-snippet`): counted and
//!   reported; every file whose `buildkit_expect` is `ok` must parse.
//!
//! The corpus lives outside the repository; without it the test says so and passes.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use kiln_builder::dockerfile::{parse_bytes, Dockerfile, ParseError};

mod corpus;

use corpus::{corpus_dir, read_manifest};

fn parse_file(path: &Path) -> Result<Dockerfile, ParseError> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_bytes(&bytes)
}

#[test]
fn buildkit_parser_conformance() {
    let Some(dir) = corpus_dir() else {
        return;
    };
    let cases = read_manifest(&dir);
    let mut failures: Vec<String> = Vec::new();
    let mut golden_passed = 0;
    let mut golden_total = 0;
    let mut negative_passed = 0;
    let mut negative_total = 0;
    // category → (parsed, total)
    let mut shares: BTreeMap<String, (usize, usize)> = BTreeMap::new();

    for case in &cases {
        let path = dir.join(&case.local_path);
        match case.category.as_str() {
            "bk-testfile-result" => continue,
            "bk-testfile" => {
                golden_total += 1;
                let expected = fs::read_to_string(path.with_file_name("result"))
                    .unwrap_or_else(|e| panic!("read result for {}: {e}", case.local_path));
                match parse_file(&path) {
                    Ok(dockerfile) if dockerfile.dump() + "\n" == expected => golden_passed += 1,
                    Ok(dockerfile) => failures.push(format!(
                        "{}: dump differs\n--- expected\n{expected}--- got\n{}\n",
                        case.local_path,
                        dockerfile.dump()
                    )),
                    Err(error) => failures.push(format!("{}: {error}", case.local_path)),
                }
            }
            "bk-testfile-negative" => {
                negative_total += 1;
                match parse_file(&path) {
                    Err(error) if error.line >= 1 && error.to_string().contains(':') => {
                        println!("negative {}: {error}", case.local_path);
                        negative_passed += 1;
                    }
                    Err(error) => failures.push(format!("{}: error without a line number: {error}", case.local_path)),
                    Ok(_) => failures.push(format!("{}: parsed but must fail", case.local_path)),
                }
            }
            "bk-testfile-line" => match parse_file(&path) {
                Ok(dockerfile) => {
                    let lines: Vec<(usize, usize)> =
                        dockerfile.instructions.iter().map(|i| (i.span.start_line, i.span.end_line)).collect();
                    let whole = dockerfile.span();
                    if lines != [(5, 5), (11, 12), (17, 31)] || (whole.start_line, whole.end_line) != (5, 31) {
                        failures.push(format!(
                            "{}: lines {lines:?}, whole file {}..{}",
                            case.local_path, whole.start_line, whole.end_line
                        ));
                    }
                }
                Err(error) => failures.push(format!("{}: {error}", case.local_path)),
            },
            _ => {}
        }

        if case.category.starts_with("bk-") {
            if case.buildkit_expect == "ok" && parse_file(&path).is_err() {
                failures.push(format!("{}: BuildKit parses it, kiln does not", case.local_path));
            }
            continue;
        }
        let result = parse_file(&path);
        let share = shares.entry(case.category.clone()).or_default();
        share.1 += 1;
        match result {
            Ok(_) => share.0 += 1,
            Err(error) => {
                println!("{} ({}): {error}", case.local_path, case.category);
                if case.buildkit_expect == "ok" {
                    failures.push(format!("{}: BuildKit parses it: {error}", case.local_path));
                }
            }
        }
    }

    println!("bk-testfile: {golden_passed}/{golden_total} dumps equal BuildKit's result files");
    println!("bk-testfile-negative: {negative_passed}/{negative_total} rejected with a line");
    for (category, (parsed, total)) in &shares {
        let percent = 100.0 * *parsed as f64 / (*total).max(1) as f64;
        println!("{category}: {parsed}/{total} parsed ({percent:.1}%)");
    }
    assert!(golden_total > 0, "manifest lists no bk-testfile cases");
    assert!(failures.is_empty(), "{} conformance failures:\n{}", failures.len(), failures.join("\n"));
}

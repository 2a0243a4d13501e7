//! The Dockerfile parser must return `Ok` or `Err` on any input, never panic, and keep its
//! spans inside the file. Random inputs are built from Dockerfile-shaped fragments (so they
//! reach continuations, heredocs, JSON and flags) as well as from arbitrary bytes.

use kiln_builder::dockerfile::{parse, parse_bytes, Dockerfile};
use proptest::prelude::*;

const FRAGMENTS: &[&str] = &[
    "FROM ",
    "RUN ",
    "CMD ",
    "COPY ",
    "ADD ",
    "ENV ",
    "LABEL ",
    "ARG ",
    "ONBUILD ",
    "HEALTHCHECK ",
    "SHELL ",
    "EXPOSE ",
    "VOLUME ",
    "foo ",
    "run ",
    "\n",
    "\r\n",
    "\r",
    " ",
    "\t",
    "\\",
    "`",
    "#",
    "# escape=`\n",
    "# syntax=x\n",
    "# check=skip=all\n",
    "<<EOF",
    "<<-EOF",
    "<<'EOF'",
    "<<\"EOF\"",
    "3<<EOF",
    "EOF\n",
    "\tEOF\n",
    "[",
    "]",
    "\"",
    "'",
    ",",
    "=",
    "a",
    "b=c",
    "--",
    "--from=x ",
    "--mount=\"a b\" ",
    "{",
    "}",
    "${A:-b}",
    "$",
    "-",
    "\u{feff}",
    "é",
    "\u{a0}",
    "\u{2028}",
    "\\u0000",
    "\\ud800",
    "1e999",
    "null",
    ":",
];

fn fragments() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..60).prop_map(|parts| parts.concat())
}

fn check_invariants(source_lines: usize, dockerfile: &Dockerfile) {
    assert!(!dockerfile.instructions.is_empty());
    let dump = dockerfile.dump();
    assert!(dump.starts_with('('), "{dump}");
    for instruction in &dockerfile.instructions {
        let span = instruction.span;
        assert!(span.start_line >= 1 && span.start_line <= span.end_line, "{span:?}");
        assert!(span.end_line <= source_lines, "{span:?} beyond {source_lines} lines");
        assert!(span.column >= 1);
    }
}

fn line_count(source: &str) -> usize {
    source.split_inclusive('\n').count()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn dockerfile_shaped_input_never_panics(source in fragments()) {
        match parse(&source) {
            Ok(dockerfile) => check_invariants(line_count(&source), &dockerfile),
            Err(error) => prop_assert!(error.line >= 1),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        match parse_bytes(&bytes) {
            Ok(dockerfile) => {
                let text = String::from_utf8_lossy(&bytes);
                let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
                check_invariants(line_count(text), &dockerfile);
            }
            Err(error) => prop_assert!(error.line >= 1),
        }
    }

    #[test]
    fn arbitrary_text_never_panics(source in any::<String>()) {
        if let Ok(dockerfile) = parse(&source) {
            check_invariants(line_count(&source), &dockerfile);
        }
    }
}

#[test]
fn pathological_inputs_are_handled_quickly() {
    let started = std::time::Instant::now();
    let inputs = [
        format!("RUN [{}]\n", "[".repeat(60_000)),
        format!("CMD {}\n", "\"".repeat(60_000)),
        format!("FROM a\n{}", "RUN x \\\n".repeat(100_000)),
        format!("ENV {}\n", "a=b ".repeat(16_000)),
        format!("RUN {}\n", "<<EOF ".repeat(10_000)),
        format!("{}RUN x", "ONBUILD ".repeat(8_000)),
        "\\\n".repeat(200_000),
    ];
    for input in &inputs {
        let _ = parse(input);
    }
    assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
}

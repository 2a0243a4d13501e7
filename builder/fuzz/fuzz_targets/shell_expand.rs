//! Feeds arbitrary words to BuildKit-style word expansion with both escape characters: it must
//! return `Ok` or `Err`, never panic, and never produce a value over the 1 MiB limit.
#![no_main]

use std::collections::BTreeMap;

use kiln_builder::shell::Lexer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut env: BTreeMap<String, Option<String>> = BTreeMap::new();
    env.insert("A".into(), Some("a value".into()));
    env.insert("EMPTY".into(), Some(String::new()));
    env.insert("DECLARED".into(), None);
    env.insert("BIG".into(), Some("x".repeat(4096)));
    for escape in ['\\', '`'] {
        let lexer = Lexer::new(escape);
        if let Ok(expanded) = lexer.process_word(text, &env) {
            assert!(expanded.value.len() <= 1 << 20);
        }
        let _ = lexer.process_words(text, &env);
    }
});

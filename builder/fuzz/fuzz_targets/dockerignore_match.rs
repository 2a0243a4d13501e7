//! Compiles arbitrary .dockerignore text and matches paths against it: never panics.
#![no_main]

use kiln_builder::context::dockerignore::IgnoreMatcher;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let (patterns, paths) = text.split_once('\0').unwrap_or((text, "a/b/c"));
    if let Ok(matcher) = IgnoreMatcher::parse(patterns, ".dockerignore") {
        for path in paths.split('\n') {
            let _ = matcher.is_excluded(path);
            let _ = matcher.may_reinclude_under(path);
        }
    }
});

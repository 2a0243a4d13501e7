//! Feeds arbitrary bytes to the Dockerfile parser: it must return `Ok` or `Err`, never panic,
//! and whatever it accepts must dump and keep its spans ordered.
#![no_main]

use kiln_builder::dockerfile::parse_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(dockerfile) = parse_bytes(data) {
        let _ = dockerfile.dump();
        for instruction in &dockerfile.instructions {
            assert!(instruction.span.start_line >= 1);
            assert!(instruction.span.start_line <= instruction.span.end_line);
        }
    }
});

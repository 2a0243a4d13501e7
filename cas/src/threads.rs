//! rayon's global pool, started once on first use. Where it cannot get its threads (a pids
//! limit), work that would have gone to it runs on the calling thread instead of rayon panicking
//! ("The global thread pool has not been initialized").

use std::sync::OnceLock;

/// Whether rayon's global pool is there to use; false when its threads could not be started.
pub fn parallel() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| match rayon::ThreadPoolBuilder::new().build_global() {
        Ok(()) => true,
        // Someone started it already (tests do): it is there.
        Err(e) => e.to_string().contains("already"),
    })
}

//! Progress events the solver emits; the CLI turns them into tty, plain or rawjson output.

use std::time::SystemTime;

#[derive(Clone, Debug)]
pub enum ProgressEvent {
    /// A step (or an internal action such as loading the base image) began.
    Started {
        id: usize,
        name: String,
        at: SystemTime,
    },
    /// A line of output from a running step.
    Log {
        id: usize,
        line: String,
    },
    /// The step finished; `cached` when its result was reused rather than made.
    Finished {
        id: usize,
        at: SystemTime,
        cached: bool,
        error: Option<String>,
    },
    Warning(String),
}

pub trait Progress: Send + Sync {
    fn event(&self, event: ProgressEvent);
}

/// Discards everything (tests, `-q`).
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: ProgressEvent) {}
}

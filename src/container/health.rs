//! Health checks as docker runs them (moby `daemon/health.go`): when a probe is due, and how
//! its result moves the container's health between `starting`, `healthy` and `unhealthy`.
//!
//! Only the rules live here. Running a probe needs `exec` into the container and a loop in the
//! supervisor, which call [`health_check_due`] and [`Health::record`]; until they do, a
//! container's health is never probed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::HealthConfig;

/// docker's defaults for a zero field.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: u32 = 3;
/// Results kept in the log.
pub const MAX_LOG_ENTRIES: usize = 5;
/// Bytes of a probe's output kept.
pub const MAX_OUTPUT: usize = 4096;

fn or_default(nanos: i64, default: Duration) -> Duration {
    if nanos > 0 {
        Duration::from_nanos(nanos as u64)
    } else {
        default
    }
}

impl HealthConfig {
    /// Whether there is a check to run (`NONE` and an empty test disable it).
    pub fn enabled(&self) -> bool {
        !self.test.is_empty() && self.test[0] != "NONE"
    }

    pub fn interval(&self) -> Duration {
        or_default(self.interval, DEFAULT_INTERVAL)
    }

    pub fn timeout(&self) -> Duration {
        or_default(self.timeout, DEFAULT_TIMEOUT)
    }

    pub fn start_period(&self) -> Duration {
        or_default(self.start_period, Duration::ZERO)
    }

    pub fn retries(&self) -> u32 {
        if self.retries > 0 {
            self.retries.min(u32::MAX.into()) as u32
        } else {
            DEFAULT_RETRIES
        }
    }

    /// The probe's command line: `CMD` runs its arguments, `CMD-SHELL` runs `/bin/sh -c`.
    pub fn probe_argv(&self) -> Option<Vec<String>> {
        match self.test.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
            Some((kind, [command])) if kind == "CMD-SHELL" => {
                Some(vec!["/bin/sh".into(), "-c".into(), command.clone()])
            }
            _ => None,
        }
    }
}

/// Whether a probe is due: `interval` after the container started, then `interval` after the
/// previous probe ended. Times are offsets from any one origin.
pub fn health_check_due(
    check: &HealthConfig,
    started: Duration,
    last_probe_end: Option<Duration>,
    now: Duration,
) -> bool {
    check.enabled() && now >= last_probe_end.unwrap_or(started) + check.interval()
}

/// docker's `State.Health`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy` or `unhealthy`.
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<ProbeResult>,
}

/// One probe, as the log keeps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ProbeResult {
    /// RFC 3339.
    pub start: String,
    pub end: String,
    /// The probe's exit code; -1 when it timed out.
    pub exit_code: i32,
    pub output: String,
}

impl Default for Health {
    fn default() -> Health {
        Health { status: "starting".into(), failing_streak: 0, log: Vec::new() }
    }
}

impl Health {
    /// Takes one probe's result. `since_start` is how long after the container started the
    /// probe began: a failure inside the start period does not count while the container has
    /// never been healthy.
    pub fn record(&mut self, check: &HealthConfig, mut result: ProbeResult, since_start: Duration) {
        if result.output.len() > MAX_OUTPUT {
            let mut end = MAX_OUTPUT;
            while !result.output.is_char_boundary(end) {
                end -= 1;
            }
            result.output.truncate(end);
        }
        if result.exit_code == 0 {
            self.failing_streak = 0;
            self.status = "healthy".into();
        } else if !(self.status == "starting" && since_start < check.start_period()) {
            self.failing_streak += 1;
            if self.failing_streak >= check.retries() {
                self.status = "unhealthy".into();
            }
        }
        self.log.push(result);
        if self.log.len() > MAX_LOG_ENTRIES {
            self.log.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(test: &[&str], retries: i64, start_period_s: i64) -> HealthConfig {
        HealthConfig {
            test: test.iter().map(|s| s.to_string()).collect(),
            retries,
            start_period: start_period_s * 1_000_000_000,
            ..Default::default()
        }
    }

    fn probe(code: i32) -> ProbeResult {
        ProbeResult { start: String::new(), end: String::new(), exit_code: code, output: "x".repeat(5000) }
    }

    #[test]
    fn probes_are_due_every_interval_and_never_when_disabled() {
        let c = check(&["CMD-SHELL", "true"], 0, 0);
        let s = Duration::from_secs;
        assert!(!health_check_due(&c, s(100), None, s(129)));
        assert!(health_check_due(&c, s(100), None, s(130)));
        assert!(!health_check_due(&c, s(100), Some(s(131)), s(160)));
        assert!(health_check_due(&c, s(100), Some(s(131)), s(161)));
        assert!(!health_check_due(&check(&["NONE"], 0, 0), s(0), None, s(1000)));
        assert_eq!(c.probe_argv().unwrap(), vec!["/bin/sh", "-c", "true"]);
        assert_eq!(check(&["CMD", "curl", "-f"], 0, 0).probe_argv().unwrap(), vec!["curl", "-f"]);
        assert_eq!(check(&["CMD"], 0, 0).probe_argv(), None);
    }

    #[test]
    fn retries_start_period_and_the_log_follow_docker() {
        let c = check(&["CMD", "false"], 2, 10);
        let mut h = Health::default();
        h.record(&c, probe(1), Duration::from_secs(5));
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 0), "inside the start period");
        h.record(&c, probe(1), Duration::from_secs(11));
        assert_eq!((h.status.as_str(), h.failing_streak), ("starting", 1));
        h.record(&c, probe(1), Duration::from_secs(12));
        assert_eq!((h.status.as_str(), h.failing_streak), ("unhealthy", 2));
        h.record(&c, probe(0), Duration::from_secs(13));
        assert_eq!((h.status.as_str(), h.failing_streak), ("healthy", 0));
        // Once healthy, the start period no longer hides failures.
        let mut h2 = Health { status: "healthy".into(), ..Default::default() };
        h2.record(&c, probe(1), Duration::from_secs(1));
        assert_eq!(h2.failing_streak, 1);
        for _ in 0..10 {
            h.record(&c, probe(0), Duration::from_secs(20));
        }
        assert_eq!(h.log.len(), MAX_LOG_ENTRIES);
        assert!(h.log.iter().all(|p| p.output.len() == MAX_OUTPUT));
        assert_eq!(check(&["CMD", "x"], 0, 0).retries(), DEFAULT_RETRIES);
        assert_eq!(check(&["CMD", "x"], 0, 0).timeout(), DEFAULT_TIMEOUT);
    }
}

//! Health checks as docker runs them (moby `daemon/health.go`): when a probe is due, and how
//! its result moves the container's health between `starting`, `healthy` and `unhealthy`.
//!
//! The supervisor runs [`probe_loop`] beside each run of a container that has a check: it
//! execs the probe into the container when it is due (as `exec` does), kills it after the
//! timeout, and records each result in the container's `State.Health`.

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

/// Probes the running container (pid 1 `pid`, in `dir`) until `stop` is set; the health starts
/// as `starting`. Errors of one probe (kiln's, not the probe's) are recorded as failures.
pub fn probe_loop(dir: &std::path::Path, pid: i32, stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    let mut container = match super::read_record(dir) {
        Ok(record) => super::Container { dir: dir.to_path_buf(), record },
        Err(_) => return,
    };
    let Some(check) = container.record.config.healthcheck.clone().filter(|c| c.enabled()) else { return };
    let Some(argv) = check.probe_argv() else { return };
    let _ = container.update(|r| {
        r.state.health = Some(Health::default());
        Ok(())
    });
    let origin = Instant::now();
    let mut last_end = None;
    loop {
        while !health_check_due(&check, Duration::ZERO, last_end, origin.elapsed()) {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let since_start = origin.elapsed();
        let result = probe(&container, pid, &argv, check.timeout());
        last_end = Some(origin.elapsed());
        if stop.load(Ordering::SeqCst) {
            // The container ended during the probe: its failure says nothing about health.
            return;
        }
        let _ = container.update(|r| {
            r.state.health.get_or_insert_with(Health::default).record(&check, result.clone(), since_start);
            Ok(())
        });
    }
}

/// One probe: the command exec'd into the container with its user, environment and working
/// dir, output captured (at most [`MAX_OUTPUT`] bytes), killed after `timeout` (exit code -1).
fn probe(container: &super::Container, pid: i32, argv: &[String], timeout: Duration) -> ProbeResult {
    use std::sync::{mpsc, Arc, Mutex};
    let config = &container.record.config;
    let start = super::now();
    let output = Arc::new(Mutex::new(Vec::new()));
    let sink = output.clone();
    let (pid_tx, pid_rx) = mpsc::channel();
    let spec = kiln_runtime::container::ExecSpec {
        argv: argv.to_vec(),
        env: config.process_env(&config.hostname_for(container.id()), false),
        cwd: if config.working_dir.is_empty() { "/".into() } else { config.working_dir.clone() },
        user: config.user.clone(),
        output: Some(Box::new(move |data: &[u8]| {
            let mut out = sink.lock().unwrap_or_else(|p| p.into_inner());
            let room = MAX_OUTPUT.saturating_sub(out.len());
            out.extend_from_slice(&data[..data.len().min(room)]);
        })),
        seccomp: config.runtime_seccomp(),
        capabilities: config.capabilities().ok(),
        on_started: Some(Box::new(move |p| {
            let _ = pid_tx.send(p);
        })),
        ..Default::default()
    };
    let (done_tx, done_rx) = mpsc::channel();
    let runner = std::thread::spawn(move || {
        let _ = done_tx.send(kiln_runtime::container::exec_in(pid, spec));
    });
    let outcome = match done_rx.recv_timeout(timeout) {
        Ok(result) => Some(result),
        Err(_) => {
            if let Ok(probe_pid) = pid_rx.try_recv() {
                let _ = kiln_runtime::process::send_signal(probe_pid, 9);
            }
            None
        }
    };
    let _ = runner.join();
    let text = String::from_utf8_lossy(&output.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    let (exit_code, output) = match outcome {
        Some(Ok(r)) => (r.outcome.status(), text),
        Some(Err(e)) => (e.exit_status(), format!("{text}{e}")),
        None => (-1, format!("Health check exceeded timeout ({})", go_duration(timeout))),
    };
    ProbeResult { start, end: super::now(), exit_code, output }
}

/// A duration as Go prints it: `30s`, `300ms`, `1.5s`, `2m0s`.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        _ if ms < 1000 => format!("{ms}ms"),
        _ if ms < 60_000 => format!("{}s", d.as_secs_f64()),
        _ => format!("{}m{}s", ms / 60_000, (ms % 60_000) as f64 / 1000.0),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_as_go_prints_them() {
        use super::go_duration;
        use std::time::Duration;
        assert_eq!(go_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_secs(120)), "2m0s");
    }

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

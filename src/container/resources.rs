//! Resource limits of a container (`--memory`, `--cpus`, `--pids-limit`), as docker parses and
//! checks them, and the container's cgroup (which `stats`, `pause` and `unpause` read and
//! freeze; the runtime makes it at each start and removes it at the end).

use anyhow::{anyhow, bail, Result};
use kiln_runtime::cgroup::{CgroupError, CgroupSpec, Hierarchies};
use serde::{Deserialize, Serialize};

/// docker's smallest `--memory`.
pub const MIN_MEMORY: u64 = 6 * 1024 * 1024;

/// The persisted limits (docker's `HostConfig.Memory`, `NanoCpus`, `PidsLimit`); `None`:
/// unlimited.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(default)]
pub struct Resources {
    /// Bytes.
    pub memory: Option<u64>,
    /// Billionths of a CPU.
    pub nano_cpus: Option<u64>,
    /// Most processes; ≤ 0 is unlimited, as in docker.
    pub pids_limit: Option<i64>,
}

impl Resources {
    /// The flags' values, checked against docker's rules and against what this machine's
    /// cgroups can apply (one error line naming the flag).
    pub fn from_flags(memory: Option<u64>, cpus: Option<u64>, pids_limit: Option<i64>) -> Result<Resources> {
        if let Some(m) = memory.filter(|m| *m > 0) {
            if m < MIN_MEMORY {
                bail!("--memory {m}: the minimum memory limit allowed is 6MB");
            }
        }
        if let Some(nano) = cpus {
            let online = std::thread::available_parallelism().map(|n| n.get() as u64).unwrap_or(1);
            if nano > online * 1_000_000_000 || (nano > 0 && nano < 10_000_000) {
                bail!("--cpus: range of CPUs is from 0.01 to {online}.00, as there are only {online} CPUs available");
            }
        }
        let resources = Resources {
            // docker: 0 means no limit.
            memory: memory.filter(|m| *m > 0),
            nano_cpus: cpus.filter(|c| *c > 0),
            pids_limit: pids_limit.filter(|p| *p > 0),
        };
        resources.check_machine()?;
        Ok(resources)
    }

    /// Whether this machine has the controllers the limits need.
    pub fn check_machine(&self) -> Result<()> {
        if self.to_runtime().is_empty() {
            return Ok(());
        }
        let hierarchies = Hierarchies::detect().map_err(|e| anyhow!("resource limits: {e}"))?;
        hierarchies.check(&self.to_runtime()).map_err(|e| match e {
            CgroupError::NoController { controller, .. } => {
                let flag = match controller {
                    "memory" => "--memory",
                    "cpu" => "--cpus",
                    _ => "--pids-limit",
                };
                anyhow!("{flag}: this machine has no {controller} cgroup controller to apply it")
            }
            other => anyhow!("resource limits: {other}"),
        })
    }

    pub fn to_runtime(self) -> kiln_runtime::cgroup::Resources {
        kiln_runtime::cgroup::Resources { memory: self.memory, nano_cpus: self.nano_cpus, pids_limit: self.pids_limit }
    }

    /// The cgroup of container `id` with these limits.
    pub fn cgroup_spec(&self, id: &str) -> CgroupSpec {
        CgroupSpec { name: id.to_string(), resources: self.to_runtime() }
    }
}

/// Removes container `id`'s cgroup if one was left behind (its supervisor was killed before it
/// could), killing whatever is still in it.
pub fn remove_leftover_cgroup(id: &str) {
    if let Ok(cgroup) = kiln_runtime::cgroup::Cgroup::open(id) {
        let _ = cgroup.remove();
    }
}

/// After `signal` was sent to the process of `container`: a paused container is thawed (and
/// recorded running again) when the signal is SIGKILL or its stop signal, as docker does, so
/// that the signal is delivered and the container ends instead of staying frozen.
pub fn thaw_after_signal(container: &mut super::Container, signal: i32) -> Result<()> {
    if container.state().status != super::Status::Paused
        || (signal != 9 && signal != container.record.config.stop_signal_number())
    {
        return Ok(());
    }
    container.update(|r| {
        if r.state.status == super::Status::Paused {
            if let Ok(cgroup) = kiln_runtime::cgroup::Cgroup::open(&r.id) {
                cgroup.thaw().map_err(|e| anyhow!("unpausing container {}: {e}", r.id))?;
            }
            r.state.status = super::Status::Running;
        }
        Ok(())
    })
}

/// docker's memory sizes (go-units `RAMInBytes`): a decimal number, optionally a space, then an
/// optional unit b, k, m, g, t or p (any case, binary multiples, an optional `i` and `b`
/// after it: `64m`, `1.5GiB`, `512kb`).
pub fn parse_memory(text: &str) -> std::result::Result<u64, String> {
    let invalid = || format!("invalid size {text:?}: use a number with an optional unit b, k, m or g (like 64m)");
    let t = text.trim_end();
    let digits_end = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits_end);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') || number.contains("..") {
        return Err(invalid());
    }
    let value: f64 = number.parse().map_err(|_| invalid())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let mut chars = unit.chars().peekable();
    let shift = match chars.peek() {
        Some('k') => 10,
        Some('m') => 20,
        Some('g') => 30,
        Some('t') => 40,
        Some('p') => 50,
        _ => 0,
    };
    if shift > 0 {
        chars.next();
    }
    let rest: String = chars.collect();
    if !matches!(rest.as_str(), "" | "b" | "i" | "ib") {
        return Err(invalid());
    }
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes as u64)
}

/// `--cpus`: a decimal number of CPUs (`0.5`, `2`), as billionths of a CPU.
pub fn parse_cpus(text: &str) -> std::result::Result<u64, String> {
    let invalid = || format!("invalid number of CPUs {text:?}: use a decimal number like 0.5 or 2");
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_digit() || c == '.') || text.matches('.').count() > 1 {
        return Err(invalid());
    }
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > 9 || (whole.is_empty() && frac.is_empty()) {
        return Err(invalid());
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| invalid())? };
    let frac_nanos: u64 = if frac.is_empty() { 0 } else { format!("{frac:0<9}").parse().map_err(|_| invalid())? };
    whole.checked_mul(1_000_000_000).and_then(|w| w.checked_add(frac_nanos)).ok_or_else(invalid)
}

/// `--pids-limit`: an integer; ≤ 0 for no limit.
pub fn parse_pids_limit(text: &str) -> std::result::Result<i64, String> {
    text.parse().map_err(|_| format!("invalid number of processes {text:?}: use an integer (-1 for no limit)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes_parse_as_docker() {
        assert_eq!(parse_memory("64m"), Ok(64 << 20));
        assert_eq!(parse_memory("64M"), Ok(64 << 20));
        assert_eq!(parse_memory("1g"), Ok(1 << 30));
        assert_eq!(parse_memory("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_memory("512kb"), Ok(512 << 10));
        assert_eq!(parse_memory("100"), Ok(100));
        assert_eq!(parse_memory("100b"), Ok(100));
        assert_eq!(parse_memory("10 m"), Ok(10 << 20));
        for bad in ["", "m", "abc", "-1m", "64x", "64mm", "1..5m", ".5m", "1e3", "99999999999p"] {
            assert!(parse_memory(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cpus_parse_as_decimals() {
        assert_eq!(parse_cpus("0.5"), Ok(500_000_000));
        assert_eq!(parse_cpus("2"), Ok(2_000_000_000));
        assert_eq!(parse_cpus(".25"), Ok(250_000_000));
        assert_eq!(parse_cpus("1.000000001"), Ok(1_000_000_001));
        for bad in ["", ".", "abc", "-1", "1.2.3", "1e3", "0.0000000001", "1,5"] {
            assert!(parse_cpus(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn flags_are_checked_as_docker_does() {
        let err = Resources::from_flags(Some(1024), None, None).unwrap_err();
        assert_eq!(err.to_string(), "--memory 1024: the minimum memory limit allowed is 6MB");
        let err = Resources::from_flags(None, Some(1_000_000 * 1_000_000_000), None).unwrap_err();
        assert!(err.to_string().starts_with("--cpus: range of CPUs is from 0.01 to "), "{err}");
        assert!(Resources::from_flags(None, Some(1_000_000), None).is_err(), "0.001 CPUs is below docker's 0.01");
        // Zero and negative values mean "no limit", as in docker.
        let none = Resources::from_flags(Some(0), Some(0), Some(-1)).unwrap();
        assert_eq!(none, Resources::default());
        assert!(none.to_runtime().is_empty());
        assert_eq!(parse_pids_limit("-1"), Ok(-1));
        assert!(parse_pids_limit("ten").is_err());
    }

    #[test]
    fn old_records_without_limits_read() {
        let r: Resources = serde_json::from_str("{}").unwrap();
        assert_eq!(r, Resources::default());
        let r: Resources = serde_json::from_str(r#"{"memory":67108864}"#).unwrap();
        assert_eq!(r.cgroup_spec("abc").resources.memory, Some(64 << 20));
    }
}

//! `kiln stats`, `kiln pause`, `kiln unpause` (issue 12): read and freeze a container's cgroup
//! (made by the runtime for each start; see `kiln_runtime::cgroup`).
//!
//! `stats` shows docker's columns (CONTAINER ID, NAME, CPU %, MEM USAGE / LIMIT, MEM %, NET I/O,
//! BLOCK I/O, PIDS) with docker's units; CPU % is measured over half a second. Without
//! `--no-stream` the table is redrawn every second until interrupted.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use kiln_cas::Store;
use kiln_runtime::cgroup::{Cgroup, Stats};
use serde_json::{json, Value};

use crate::cli::{PauseArgs, StatsArgs};
use crate::container::{self, Container, Status};
use crate::output::{out, Template, ROWS};

const DEFAULT_FORMAT: &str =
    "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// docker's column titles for the fields of a `stats` row.
const STATS_TITLES: &[(&str, &str)] = &[
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// How long CPU use is measured for.
const CPU_SAMPLE: Duration = Duration::from_millis(500);

pub fn stats(store: &Store, args: StatsArgs) -> Result<ExitCode> {
    let template = match args.format.as_deref() {
        None | Some("") | Some("table") => Template::parse(DEFAULT_FORMAT)?,
        Some("json") => Template::parse("{{json .}}")?,
        Some(text) => Template::parse(text)?,
    };
    // Named containers are looked up once: an unknown one is an error, as in docker.
    let named: Vec<(String, String)> = {
        let all = container::list(store)?;
        let mut named = Vec::new();
        for wanted in &args.containers {
            match container::find_in(all.clone(), wanted) {
                Ok(c) => named.push((wanted.clone(), c.id().to_string())),
                Err(e) => {
                    eprintln!("Error: {e:#}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
        named
    };
    loop {
        let all = container::list(store)?;
        let selected: Vec<(String, Container)> = if named.is_empty() {
            all.into_iter()
                .filter(|c| args.all || c.state().status.is_live())
                .map(|c| (c.id().to_string(), c))
                .collect()
        } else {
            named
                .iter()
                .filter_map(|(wanted, id)| all.iter().find(|c| c.id() == id).map(|c| (wanted.clone(), c.clone())))
                .collect()
        };
        let rows = sample(&selected, args.no_trunc);
        let text = template.render_rows(&rows, &ROWS, STATS_TITLES)?;
        if args.no_stream {
            out!("{text}");
            return Ok(ExitCode::SUCCESS);
        }
        // docker redraws the screen: clear it, cursor home.
        out!("\x1b[2J\x1b[H{text}");
        std::thread::sleep(Duration::from_secs(1).saturating_sub(CPU_SAMPLE));
    }
}

/// One row per container; CPU use is measured over [`CPU_SAMPLE`] for all of them at once.
fn sample(selected: &[(String, Container)], no_trunc: bool) -> Vec<Value> {
    let cgroups: Vec<Option<Cgroup>> =
        selected.iter().map(|(_, c)| c.state().status.is_live().then(|| Cgroup::open(c.id()).ok()).flatten()).collect();
    let first: Vec<Option<Stats>> = cgroups.iter().map(|c| c.as_ref().and_then(|c| c.stats().ok())).collect();
    let started = Instant::now();
    if first.iter().any(Option::is_some) {
        std::thread::sleep(CPU_SAMPLE);
    }
    let elapsed = started.elapsed().as_nanos().max(1) as f64;
    let host_memory = host_memory();
    selected
        .iter()
        .zip(cgroups.iter().zip(first))
        .map(|((given, c), (cgroup, first))| {
            let id = if no_trunc { c.id().to_string() } else { c.record.short_id().to_string() };
            let second = cgroup.as_ref().and_then(|c| c.stats().ok());
            let usage = match (first, second) {
                (Some(a), Some(b)) => Some(Usage {
                    cpu_percent: b.cpu_usage_ns.saturating_sub(a.cpu_usage_ns) as f64 / elapsed * 100.0,
                    memory: b.memory_usage,
                    limit: b.memory_limit.unwrap_or(host_memory),
                    net: net_io(c),
                    block: (b.block_read, b.block_write),
                    pids: b.pids,
                }),
                _ => None,
            };
            row(given, &id, c.name(), usage)
        })
        .collect()
}

struct Usage {
    cpu_percent: f64,
    memory: u64,
    limit: u64,
    net: (u64, u64),
    block: (u64, u64),
    pids: u64,
}

/// A `stats` row as docker's formatter fills it; a container that is not running shows zeros.
fn row(given: &str, id: &str, name: &str, usage: Option<Usage>) -> Value {
    let u = usage.unwrap_or(Usage { cpu_percent: 0.0, memory: 0, limit: 0, net: (0, 0), block: (0, 0), pids: 0 });
    let mem_percent = if u.limit > 0 { u.memory as f64 / u.limit as f64 * 100.0 } else { 0.0 };
    json!({
        "BlockIO": format!("{} / {}", decimal_size(u.block.0), decimal_size(u.block.1)),
        "CPUPerc": format!("{:.2}%", u.cpu_percent),
        "Container": given,
        "ID": id,
        "MemPerc": format!("{mem_percent:.2}%"),
        "MemUsage": format!("{} / {}", binary_size(u.memory), binary_size(u.limit)),
        "Name": name,
        "NetIO": format!("{} / {}", decimal_size(u.net.0), decimal_size(u.net.1)),
        "PIDs": u.pids.to_string(),
    })
}

/// Bytes received and sent on the container's interfaces other than `lo` (nothing with the
/// host's network, as docker shows).
fn net_io(c: &Container) -> (u64, u64) {
    let pid = c.state().pid;
    if pid <= 0 || c.record.config.network == "host" {
        return (0, 0);
    }
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else { return (0, 0) };
    parse_net_dev(&text)
}

fn parse_net_dev(text: &str) -> (u64, u64) {
    let mut total = (0, 0);
    for line in text.lines().skip(2) {
        let Some((name, counters)) = line.split_once(':') else { continue };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = counters.split_whitespace().map(|n| n.parse().unwrap_or(0)).collect();
        if f.len() >= 9 {
            total.0 += f[0];
            total.1 += f[8];
        }
    }
    total
}

/// The machine's memory, which docker shows as the limit of a container without one.
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| l.strip_prefix("MemTotal:")?.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Go's `%.<precision>g`: `precision` significant digits, no trailing zeros, an exponent
/// (`1e+03`) when it is below -4 or not below the precision.
fn go_g(value: f64, precision: usize) -> String {
    if value == 0.0 {
        return "0".into();
    }
    let sci = format!("{:.*e}", precision - 1, value);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let trim = |s: &str| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= precision as i32 {
        format!("{}e{}{:02}", trim(mantissa), if exp < 0 { '-' } else { '+' }, exp.abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim(&format!("{value:.decimals$}"))
    }
}

/// go-units `CustomSize`: divide by `base` while the value is at least `base`.
fn custom_size(bytes: u64, precision: usize, base: f64, units: &[&str]) -> String {
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= base && unit < units.len() - 1 {
        size /= base;
        unit += 1;
    }
    format!("{}{}", go_g(size, precision), units[unit])
}

/// docker's memory figures (go-units `BytesSize`): binary units, four significant digits.
fn binary_size(bytes: u64) -> String {
    custom_size(bytes, 4, 1024.0, &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"])
}

/// docker's I/O figures (go-units `HumanSizeWithPrecision(n, 3)`): decimal units.
fn decimal_size(bytes: u64) -> String {
    custom_size(bytes, 3, 1000.0, &["B", "kB", "MB", "GB", "TB", "PB", "EB"])
}

pub fn pause(store: &Store, args: PauseArgs) -> Result<ExitCode> {
    each(store, &args.containers, |c| {
        c.update(|record| {
            match record.state.status {
                Status::Running => {}
                Status::Paused => bail!("Container {} is already paused", record.id),
                _ => bail!("Container {} is not running", record.id),
            }
            let cgroup = Cgroup::open(&record.id)
                .map_err(|e| anyhow::anyhow!("Container {} cannot be paused: {e}", record.id))?;
            cgroup.freeze().map_err(|e| anyhow::anyhow!("pausing container {}: {e}", record.id))?;
            record.state.status = Status::Paused;
            Ok(())
        })
    })
}

pub fn unpause(store: &Store, args: PauseArgs) -> Result<ExitCode> {
    each(store, &args.containers, |c| {
        c.update(|record| {
            if record.state.status != Status::Paused {
                bail!("Container {} is not paused", record.id);
            }
            let cgroup = Cgroup::open(&record.id)
                .map_err(|e| anyhow::anyhow!("Container {} cannot be unpaused: {e}", record.id))?;
            cgroup.thaw().map_err(|e| anyhow::anyhow!("unpausing container {}: {e}", record.id))?;
            record.state.status = Status::Running;
            Ok(())
        })
    })
}

/// Runs `action` on each named container, printing the name as given on success and one error
/// line otherwise; exit status 1 if any failed (docker's).
fn each(store: &Store, names: &[String], action: impl Fn(&mut Container) -> Result<()>) -> Result<ExitCode> {
    let mut failed = false;
    for wanted in names {
        let result = container::find(store, wanted).and_then(|mut c| action(&mut c));
        match result {
            Ok(()) => crate::output::outln!("{wanted}"),
            Err(e) => {
                eprintln!("Error: {}", crate::output::error_line(&e));
                failed = true;
            }
        }
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_as_docker_prints_them() {
        assert_eq!(binary_size(0), "0B");
        assert_eq!(binary_size(640 * 1024), "640KiB");
        assert_eq!(binary_size(64 << 20), "64MiB");
        assert_eq!(binary_size(25_275_965_440), "23.54GiB");
        assert_eq!(binary_size(1023), "1023B");
        assert_eq!(binary_size(1536), "1.5KiB");
        assert_eq!(binary_size((1 << 20) - 1), "1024KiB", "%.4g rounds up without changing unit");
        assert_eq!(decimal_size(0), "0B");
        assert_eq!(decimal_size(1234), "1.23kB");
        assert_eq!(decimal_size(999_700), "1e+03kB", "Go's %.3g of 999.7");
        assert_eq!(decimal_size(12_345_678), "12.3MB");
        assert_eq!(go_g(0.00001234, 3), "1.23e-05");
    }

    #[test]
    fn a_stopped_container_shows_zeros_as_docker_does() {
        let r = row("web", "c59dff3e3899", "web", None);
        assert_eq!(r["CPUPerc"], "0.00%");
        assert_eq!(r["MemUsage"], "0B / 0B");
        assert_eq!(r["MemPerc"], "0.00%");
        assert_eq!(r["NetIO"], "0B / 0B");
        assert_eq!(r["BlockIO"], "0B / 0B");
        assert_eq!(r["PIDs"], "0");
        let usage =
            Usage { cpu_percent: 12.345, memory: 640 << 10, limit: 64 << 20, net: (0, 0), block: (0, 0), pids: 1 };
        let r = row("c2a6", "c2a60b0ddce0", "cgh_x", Some(usage));
        assert_eq!((r["CPUPerc"].as_str(), r["MemPerc"].as_str()), (Some("12.35%"), Some("0.98%")));
        assert_eq!(r["MemUsage"], "640KiB / 64MiB");
        assert_eq!(r["Container"], "c2a6");
    }

    #[test]
    fn network_counters_leave_out_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit\n \
             face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
             lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
             eth0:    1234      10    0    0    0     0          0         0      567       5    0    0    0     0       0          0\n";
        assert_eq!(parse_net_dev(text), (1234, 567));
    }
}

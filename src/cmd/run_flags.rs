//! The flags of `run` and `create` beyond the command line itself: mounts (`-v`, `--mount`,
//! `--tmpfs`, the image's VOLUMEs), `--read-only`, capabilities, `--privileged`, `--add-host`,
//! `--init`, labels, health checks, and `--pull` (a missing image is pulled, as docker does).
//! Each is checked here, before anything is made, and recorded in the container's config.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use kiln_builder::solve::RunConfig;
use kiln_cas::{Digest, Reference, Store};

use crate::cli::RunArgs;
use crate::container::config::{ContainerConfig, HealthConfig, Mount, TINI};
use crate::container::{self, volume, Container};

/// The image `run`/`create` uses, pulled first as `--pull` says (`missing` by default: only when
/// the store does not have it, with docker's "Unable to find image" line; progress on stderr).
pub fn resolve_image(store: &Store, args: &RunArgs) -> Result<Digest> {
    let local = match store.index()?.resolve(&args.image) {
        Ok(id) => Some(id),
        Err(kiln_cas::Error::ImageNotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    // An image ID (or a prefix of one) names a local image; there is nothing to pull by it.
    let by_id = local.as_ref().is_some_and(|id| {
        let hex = args.image.strip_prefix("sha256:").unwrap_or(&args.image);
        id.hex().starts_with(hex)
    });
    match (args.pull.as_str(), local) {
        ("never", None) => {
            bail!("No such image: {}", familiar(&args.image))
        }
        ("always", Some(id)) if by_id => Ok(id),
        ("always", _) => pull(store, &args.image),
        (_, Some(id)) => Ok(id),
        (_, None) => {
            eprintln!("Unable to find image '{}' locally", familiar(&args.image));
            pull(store, &args.image)
        }
    }
}

fn familiar(text: &str) -> String {
    Reference::parse(text).map(|r| r.familiar()).unwrap_or_else(|_| text.to_string())
}

fn pull(store: &Store, image: &str) -> Result<Digest> {
    super::pull::pull_for_run(store, image)?;
    Ok(store.index()?.resolve(image)?)
}

/// Applies the flags to `config` (made from the image and the command line by `run.rs`).
pub fn apply(args: &RunArgs, image: &RunConfig, config: &mut ContainerConfig) -> Result<()> {
    config.mounts = mounts(args, image)?;
    config.readonly_rootfs = args.read_only;
    config.privileged = args.privileged;
    kiln_runtime::container::caps::CapSet::tweak(&args.cap_add, &args.cap_drop).map_err(|e| anyhow!("{e}"))?;
    config.cap_add = args.cap_add.clone();
    config.cap_drop = args.cap_drop.clone();
    config.extra_hosts = args.add_hosts.iter().map(|h| add_host(h)).collect::<Result<_>>()?;
    if args.init && !Path::new(TINI).exists() {
        bail!("--init: {TINI} is missing (it is in Debian's package tini)");
    }
    config.init = args.init;
    for file in &args.label_files {
        let text = fs::read_to_string(file).with_context(|| format!("reading --label-file {}", file.display()))?;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            set_label(&mut config.labels, line)?;
        }
    }
    for label in &args.labels {
        set_label(&mut config.labels, label)?;
    }
    config.healthcheck = healthcheck(args, image)?;
    Ok(())
}

/// Makes the volumes a new container's config names (anonymous ones marked so); on failure the
/// container goes again.
pub fn create_volumes(store: &Store, container: &Container) -> Result<()> {
    let made = container
        .record
        .config
        .mounts
        .iter()
        .filter(|m| m.kind == "volume")
        .try_for_each(|m| volume::create(store, Some(&m.source), BTreeMap::new(), m.anonymous).map(drop));
    if let Err(e) = made {
        let _ = container::remove_dir(&container.dir);
        let _ = volume::remove_anonymous(store, &container.record.config.mounts);
        return Err(e);
    }
    Ok(())
}

fn set_label(labels: &mut BTreeMap<String, String>, text: &str) -> Result<()> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        bail!("invalid label '{text}': empty name");
    }
    labels.insert(key.to_string(), value.to_string());
    Ok(())
}

/// `--add-host NAME:IP` (or `NAME=IP`); IP may be `host-gateway`.
fn add_host(text: &str) -> Result<String> {
    let bad = |why: &str| anyhow!("invalid argument \"{text}\" for \"--add-host\" flag: {why}");
    // `=` first: an IPv6 address holds `:`.
    let (name, ip) = text.split_once('=').or_else(|| text.split_once(':')).ok_or_else(|| bad("expected NAME:IP"))?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad("invalid host name"));
    }
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if ip != "host-gateway" && ip.parse::<std::net::IpAddr>().is_err() {
        return Err(bad(&format!("invalid IP address in add-host: \"{ip}\"")));
    }
    Ok(format!("{name}:{ip}"))
}

/// Every mount of the container: `-v`, `--mount`, `--tmpfs`, then an anonymous volume for each of
/// the image's VOLUMEs that nothing else is mounted at.
fn mounts(args: &RunArgs, image: &RunConfig) -> Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for v in &args.volumes {
        let mount = parse_volume(v)?;
        let bind_spec = if mount.anonymous { String::new() } else { v.clone() };
        mounts.push(Mount { bind_spec, ..mount });
    }
    for m in &args.mounts {
        mounts.push(parse_mount(m)?);
    }
    for t in &args.tmpfs {
        mounts.push(parse_tmpfs(t)?);
    }
    let clean = |t: &str| kiln_runtime::container::plan::clean_target(t).unwrap_or_else(|_| t.to_string());
    let mut seen = std::collections::HashSet::new();
    for m in &mounts {
        if !seen.insert(clean(&m.target)) {
            bail!("Duplicate mount point: {}", m.target);
        }
    }
    if let Some(serde_json::Value::Object(volumes)) = image.fields.get("Volumes") {
        for path in volumes.keys() {
            if path.starts_with('/') && !seen.contains(&clean(path)) {
                seen.insert(clean(path));
                mounts.push(anonymous(path));
            }
        }
    }
    Ok(mounts)
}

fn anonymous(target: &str) -> Mount {
    Mount {
        kind: "volume".into(),
        source: container::new_id(),
        target: target.to_string(),
        anonymous: true,
        ..Default::default()
    }
}

/// `-v`: `/HOST:/CTR[:OPTS]` (a bind of an existing host path), `NAME:/CTR[:OPTS]` (a named
/// volume, made if missing) or `/CTR` (an anonymous volume). OPTS: `ro`, `rw`, `nocopy`, `z`, `Z`,
/// comma-separated.
pub fn parse_volume(text: &str) -> Result<Mount> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, opts) = match parts.as_slice() {
        [t] => ("", *t, ""),
        [s, t] => (*s, *t, ""),
        [s, t, o] => (*s, *t, *o),
        _ => bail!("invalid volume specification: '{text}'"),
    };
    if !target.starts_with('/') {
        bail!("invalid volume specification: '{text}': the container path must be absolute");
    }
    let (mut readonly, mut no_copy) = (false, false);
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "nocopy" => no_copy = true,
            "z" | "Z" => {}
            _ => bail!("invalid volume specification: '{text}': unknown option '{opt}' (use ro, rw or nocopy)"),
        }
    }
    if source.is_empty() {
        return Ok(Mount { readonly, no_copy, ..anonymous(target) });
    }
    if source.starts_with('/') {
        // docker creates a missing host directory for `-v` (not for `--mount`).
        if fs::symlink_metadata(source).is_err() {
            fs::create_dir_all(source).with_context(|| format!("error while creating mount source path '{source}'"))?;
        }
        let host = fs::canonicalize(source).with_context(|| format!("volume source {source}"))?;
        let host = host.to_str().with_context(|| format!("volume source {source}: not UTF-8"))?.to_string();
        return Ok(Mount {
            kind: "bind".into(),
            source: host,
            target: target.to_string(),
            readonly,
            ..Default::default()
        });
    }
    volume::check_name(source)?;
    Ok(Mount {
        kind: "volume".into(),
        source: source.to_string(),
        target: target.to_string(),
        readonly,
        no_copy,
        ..Default::default()
    })
}

/// `--tmpfs /CTR[:OPTS]`: OPTS as mount(8) takes them; `size=` is applied, the usual flags are
/// accepted.
fn parse_tmpfs(text: &str) -> Result<Mount> {
    let (target, opts) = text.split_once(':').unwrap_or((text, ""));
    if !target.starts_with('/') {
        bail!("invalid --tmpfs \"{text}\": the container path must be absolute");
    }
    let mut size = None;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some(("size", s)) => size = Some(super::run::parse_size(s).with_context(|| format!("--tmpfs {text}"))?),
            Some(("mode" | "uid" | "gid" | "nr_inodes", _)) => {}
            None if matches!(opt, "rw" | "noexec" | "exec" | "nosuid" | "suid" | "nodev" | "dev" | "rprivate") => {}
            _ => bail!("invalid --tmpfs \"{text}\": unknown option '{opt}'"),
        }
    }
    Ok(Mount { kind: "tmpfs".into(), target: target.to_string(), size, ..Default::default() })
}

/// `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly][,volume-nocopy][,tmpfs-size=…]`
/// (docker's CSV syntax and key names).
pub fn parse_mount(text: &str) -> Result<Mount> {
    let bad = |why: String| anyhow!("invalid argument \"{text}\" for \"--mount\" flag: {why}");
    let mut kind = "volume".to_string();
    let (mut source, mut target) = (String::new(), String::new());
    let (mut readonly, mut no_copy, mut size) = (false, false, None);
    let boolean = |key: &str, value: Option<&str>| -> Result<bool> {
        match value.map(str::to_ascii_lowercase).as_deref() {
            None | Some("1") | Some("true") => Ok(true),
            Some("0") | Some("false") => Ok(false),
            Some(v) => Err(bad(format!("invalid value for {key}: {v}"))),
        }
    };
    for field in text.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need = |v: Option<&str>| {
            v.map(str::to_string).ok_or_else(|| bad(format!("invalid field '{field}' must be a key=value pair")))
        };
        match key.as_str() {
            "type" => kind = need(value)?,
            "source" | "src" => source = need(value)?,
            "target" | "destination" | "dst" => target = need(value)?,
            "readonly" | "ro" => readonly = boolean(&key, value)?,
            "volume-nocopy" => no_copy = boolean(&key, value)?,
            "tmpfs-size" => {
                size = Some(super::run::parse_size(&need(value)?).map_err(|e| bad(format!("tmpfs-size: {e}")))?)
            }
            "tmpfs-mode" | "bind-propagation" | "consistency" => {
                need(value)?;
            }
            _ => return Err(bad(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    if target.is_empty() {
        return Err(bad("target is required".into()));
    }
    if !target.starts_with('/') {
        return Err(bad(format!("target {target} must be an absolute path")));
    }
    match kind.as_str() {
        "bind" => {
            if source.is_empty() {
                return Err(bad("source is required when specifying a bind mount".into()));
            }
            if !source.starts_with('/') {
                return Err(bad(format!("bind source {source} must be an absolute path")));
            }
            let host =
                fs::canonicalize(&source).map_err(|_| bad(format!("bind source path does not exist: {source}")))?;
            let host = host.to_str().ok_or_else(|| bad(format!("bind source {source}: not UTF-8")))?.to_string();
            Ok(Mount { kind, source: host, target, readonly, ..Default::default() })
        }
        "volume" if source.is_empty() => Ok(Mount { readonly, no_copy, ..anonymous(&target) }),
        "volume" => {
            volume::check_name(&source)?;
            Ok(Mount { kind, source, target, readonly, no_copy, ..Default::default() })
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(bad("source is not allowed for a tmpfs mount".into()));
            }
            Ok(Mount { kind, target, size, ..Default::default() })
        }
        other => Err(bad(format!("unsupported mount type '{other}': use bind, volume or tmpfs"))),
    }
}

/// The image's HEALTHCHECK with the flags applied, as docker merges them.
fn healthcheck(args: &RunArgs, image: &RunConfig) -> Result<Option<HealthConfig>> {
    let given = args.health_cmd.is_some()
        || args.health_interval.is_some()
        || args.health_timeout.is_some()
        || args.health_start_period.is_some()
        || args.health_retries.is_some();
    if args.no_healthcheck {
        if given {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(Some(HealthConfig { test: vec!["NONE".into()], ..Default::default() }));
    }
    let mut check: HealthConfig =
        image.fields.get("Healthcheck").and_then(|v| serde_json::from_value(v.clone()).ok()).unwrap_or_default();
    if let Some(cmd) = &args.health_cmd {
        check.test = vec!["CMD-SHELL".into(), cmd.clone()];
    }
    let duration = |flag: &str, value: &Option<String>, into: &mut i64| -> Result<()> {
        if let Some(text) = value {
            *into = parse_go_duration(text)
                .map_err(|e| anyhow!("invalid argument \"{text}\" for \"--{flag}\" flag: {e}"))?;
            if *into < 0 {
                bail!("--{flag} cannot be negative");
            }
            if *into != 0 && *into < 1_000_000 {
                bail!("--{flag} cannot be less than 1ms");
            }
        }
        Ok(())
    };
    duration("health-interval", &args.health_interval, &mut check.interval)?;
    duration("health-timeout", &args.health_timeout, &mut check.timeout)?;
    duration("health-start-period", &args.health_start_period, &mut check.start_period)?;
    if let Some(r) = args.health_retries {
        check.retries = r.into();
    }
    if check == HealthConfig::default() {
        return Ok(None);
    }
    Ok(Some(check))
}

/// Go's `time.ParseDuration` (what docker's duration flags take): `300ms`, `1.5h`, `2h45m`, `0`;
/// nanoseconds.
pub fn parse_go_duration(text: &str) -> Result<i64> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        bail!("time: invalid duration \"{text}\"");
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().map_err(|_| anyhow!("time: invalid duration \"{text}\""))?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => bail!("time: missing unit in duration \"{text}\""),
            unit => bail!("time: unknown unit \"{unit}\" in duration \"{text}\""),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        bail!("time: invalid duration \"{text}\"");
    }
    Ok(if negative { -(total as i64) } else { total as i64 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_binds_and_anonymous_volumes_parse_as_docker() {
        let m = parse_volume("/tmp:/data:ro").unwrap();
        assert_eq!((m.kind.as_str(), m.readonly), ("bind", true));
        let m = parse_volume("cache:/var/cache:nocopy").unwrap();
        assert_eq!((m.kind.as_str(), m.source.as_str(), m.no_copy, m.anonymous), ("volume", "cache", true, false));
        let m = parse_volume("/data").unwrap();
        assert!(m.kind == "volume" && m.anonymous && m.source.len() == 64);
        for bad in ["../x:/data", "a/b:/data", "x:data", "/tmp:/data:bogus", "a:b:c:d"] {
            assert!(parse_volume(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("new/sub");
        let m = parse_volume(&format!("{}:/data", missing.display())).unwrap();
        assert!(missing.is_dir(), "docker makes a missing -v source");
        assert_eq!(m.source, missing.to_str().unwrap());
        assert!(parse_mount(&format!("type=bind,source={},target=/x", dir.path().join("other").display())).is_err());
        let err = parse_volume("../etc:/data").unwrap_err().to_string();
        assert!(err.contains("includes invalid characters for a local volume name"), "{err}");
    }

    #[test]
    fn mount_flags_parse_as_docker() {
        let m = parse_mount("type=bind,source=/tmp,target=/data,readonly").unwrap();
        assert_eq!(
            (m.kind.as_str(), m.source.as_str(), m.target.as_str(), m.readonly),
            ("bind", "/tmp", "/data", true)
        );
        let m = parse_mount("type=volume,src=v1,dst=/v,volume-nocopy=true").unwrap();
        assert_eq!((m.source.as_str(), m.no_copy), ("v1", true));
        let m = parse_mount("type=tmpfs,destination=/t,tmpfs-size=1m").unwrap();
        assert_eq!(m.size, Some(1 << 20));
        let m = parse_mount("target=/anon").unwrap();
        assert!(m.anonymous);
        let err = parse_mount("type=bind,source=/tmp,target=/x,colour=red").unwrap_err().to_string();
        assert!(err.contains("unexpected key 'colour'"), "{err}");
        assert!(!err.contains('\n'));
        assert!(parse_mount("type=bind,source=/tmp").unwrap_err().to_string().contains("target is required"));
        assert!(parse_mount("type=nfs,target=/x").is_err());
        assert!(parse_mount("type=volume,source=../x,target=/x").is_err());
        assert!(parse_mount("type=bind,source=/no/such/dir,target=/x")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    #[test]
    fn tmpfs_and_add_host() {
        assert_eq!(parse_tmpfs("/run:size=64k,noexec").unwrap().size, Some(65536));
        assert!(parse_tmpfs("run").is_err() && parse_tmpfs("/run:bogus").is_err());
        assert_eq!(add_host("db:10.0.0.5").unwrap(), "db:10.0.0.5");
        assert_eq!(add_host("v6=::1").unwrap(), "v6:::1");
        assert_eq!(add_host("gw:host-gateway").unwrap(), "gw:host-gateway");
        assert!(add_host("db:notanip").unwrap_err().to_string().contains("invalid IP address"));
        assert!(add_host("nocolon").is_err());
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s").unwrap(), 30_000_000_000);
        assert_eq!(parse_go_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_go_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_go_duration("1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_go_duration("0").unwrap(), 0);
        assert!(parse_go_duration("10").is_err() && parse_go_duration("1x").is_err() && parse_go_duration("").is_err());
    }
}

//! Containers as kiln keeps them: one directory `containers/<id>/` each, holding
//!
//! - `container.json`: the [`Record`] — what to run ([`ContainerConfig`], fixed at create) and
//!   where it is ([`State`]), replaced atomically, always under the container's `lock`;
//! - `image`: the image ID (what `rmi` and `prune` read, written before anything runs);
//! - `supervisor.lock`: flocked by the process that supervises the running container (a
//!   detached `kiln __supervise`, or the foreground `kiln run`). A record that says running
//!   while nobody holds this lock lost its supervisor; whoever reads it next records it exited;
//! - `upper/`, `work/`: the overlay's upper and work dirs (the container's changes);
//! - `<id>-json.log`: the container's output in docker's json-file format.
//!
//! No daemon: every kiln process reads the truth from here, and the supervisor is the only
//! writer of a running container's exit.

pub mod attach;
pub mod config;
// The rules are here and tested; the supervisor's probe loop (which needs `exec`) is not yet.
#[allow(dead_code)]
pub mod health;
pub mod logs;
pub mod ports;
pub mod resources;
pub mod supervisor;
pub mod volume;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use kiln_cas::Store;
use serde::{Deserialize, Serialize};

pub use config::ContainerConfig;

pub const RECORD: &str = "container.json";
pub const LOCK: &str = "lock";
/// `containers/.lock`: held while a name is checked and taken (hidden: not a container).
pub const NAMES_LOCK: &str = ".lock";
pub const SUPERVISOR_LOCK: &str = "supervisor.lock";

/// Exit status recorded for a container whose supervisor was killed: its processes died with it
/// (SIGKILL through PR_SET_PDEATHSIG), so docker's 128 + 9.
pub const KILLED_WITH_SUPERVISOR: i32 = 137;

/// Where a container is in its life (docker's `State.Status` values).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Exited,
    Dead,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether a supervisor owns the container now (its processes may be alive).
    pub fn is_live(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }

    pub fn can_start(self) -> bool {
        matches!(self, Status::Created | Status::Exited)
    }
}

/// The changing part of a record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct State {
    pub status: Status,
    /// Host pid of the container's process (pid 1 of its pid namespace); 0 when not running.
    pub pid: i32,
    /// Host pid of the supervisor; 0 when none.
    pub supervisor_pid: i32,
    pub exit_code: i32,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// RFC 3339 with nanoseconds, UTC; empty when never.
    pub started_at: String,
    pub finished_at: String,
    pub restart_count: u32,
    /// Why the last start failed (docker's `State.Error`).
    pub error: String,
    /// Set by `stop`, `kill` and `rm -f`: the supervisor does not restart a container it finds
    /// with this set, whatever the restart policy.
    pub stopped_by_user: bool,
    /// The host ports bound for the current (or last) start, set when it starts (see
    /// [`config::Prepared`]'s `spec.ports`); cleared when it exits. What `ps`, `port` and
    /// `inspect` show.
    pub ports: Vec<kiln_runtime::container::PortMapping>,
    /// Made by a foreground `run`, which holds its supervisor lock from the start: a container
    /// still `Created` with this set and the lock free lost its `run` before it started.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub claimed: bool,
    /// docker's `State.Health`, for a container with a health check (probed by its supervisor).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<health::Health>,
}

/// `container.json`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Record {
    pub id: String,
    pub name: String,
    /// RFC 3339 with nanoseconds, UTC.
    pub created: String,
    pub config: ContainerConfig,
    #[serde(default)]
    pub state: State,
}

impl Record {
    pub fn short_id(&self) -> &str {
        &self.id[..12.min(self.id.len())]
    }
}

/// A container found in the store.
#[derive(Clone, Debug)]
pub struct Container {
    pub dir: PathBuf,
    pub record: Record,
}

impl Container {
    pub fn id(&self) -> &str {
        &self.record.id
    }

    pub fn name(&self) -> &str {
        &self.record.name
    }

    /// The image ID (`sha256:…`).
    pub fn image_id(&self) -> &str {
        &self.record.config.image
    }

    pub fn upper_dir(&self) -> PathBuf {
        self.dir.join("upper")
    }

    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join(format!("{}-json.log", self.record.id))
    }

    pub fn state(&self) -> &State {
        &self.record.state
    }

    /// Reads the record again (another process may have changed it).
    pub fn reload(&mut self) -> Result<()> {
        self.record = read_record(&self.dir)?;
        if !settle(&self.dir, &mut self.record)? {
            bail!("No such container: {} (removed: it was --rm)", self.record.name);
        }
        Ok(())
    }

    /// Changes the record under the container's lock: reads the newest, lets `change` edit it,
    /// writes it atomically. Returns the written record.
    pub fn update<T>(&mut self, change: impl FnOnce(&mut Record) -> Result<T>) -> Result<T> {
        let _lock = lock_dir(&self.dir)?;
        let mut record = read_record(&self.dir)?;
        let out = change(&mut record)?;
        write_record(&self.dir, &record)?;
        self.record = record;
        Ok(out)
    }
}

pub fn containers_dir(store: &Store) -> PathBuf {
    store.root().join("containers")
}

/// Every container, newest first. Records that say live but whose supervisor is gone are
/// settled (recorded exited) on the way.
pub fn list(store: &Store) -> Result<Vec<Container>> {
    let dir = containers_dir(store);
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue; // being removed
        }
        let path = entry.path();
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue; // the names lock
        }
        // A record write killed half-way leaves its temp file; nobody holds it any more.
        let _ = kiln_cas::store::temp::remove_stale_temps(&path, true);
        if !path.join(RECORD).exists() {
            continue; // being created, or not a container of this kiln
        }
        match read_record(&path) {
            Ok(mut record) => {
                if settle(&path, &mut record)? {
                    out.push(Container { dir: path, record });
                }
            }
            Err(e) => eprintln!("warning: {e:#}"),
        }
    }
    out.sort_by(|a, b| b.record.created.cmp(&a.record.created));
    Ok(out)
}

/// The container named `wanted`, or whose ID is or starts with it (docker's lookup: an exact ID,
/// then an exact name, then a unique ID prefix).
pub fn find(store: &Store, wanted: &str) -> Result<Container> {
    let all = list(store)?;
    find_in(all, wanted)
}

pub fn find_in(all: Vec<Container>, wanted: &str) -> Result<Container> {
    let wanted_trim = wanted.strip_prefix('/').unwrap_or(wanted);
    if wanted_trim.is_empty() {
        bail!("No such container: {wanted}");
    }
    if let Some(c) = all.iter().find(|c| c.record.id == wanted_trim || c.record.name == wanted_trim) {
        return Ok(c.clone());
    }
    let mut by_prefix = all.into_iter().filter(|c| c.record.id.starts_with(wanted_trim));
    match (by_prefix.next(), by_prefix.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => bail!("No such container: {wanted}"),
        (Some(_), Some(_)) => bail!("multiple containers found with provided prefix: {wanted}"),
    }
}

pub fn read_record(dir: &Path) -> Result<Record> {
    let path = dir.join(RECORD);
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: not a container record", path.display()))
}

pub fn write_record(dir: &Path, record: &Record) -> Result<()> {
    let mut tmp = kiln_cas::store::temp::OwnedTemp::create(dir, RECORD, 0o600)
        .with_context(|| format!("writing the record in {}", dir.display()))?;
    std::io::Write::write_all(tmp.file(), &serde_json::to_vec_pretty(record)?)?;
    tmp.persist(&dir.join(RECORD)).with_context(|| format!("writing {}", dir.join(RECORD).display()))?;
    Ok(())
}

/// Opens (creating) the lock file at `path` and takes it exclusively, waiting for it.
pub fn lock_file(path: &Path) -> Result<fs::File> {
    let file = open_lock_file(path)?;
    file.lock().with_context(|| format!("locking {}", path.display()))?;
    Ok(file)
}

fn open_lock_file(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// The container's lock, held exclusively for a read-modify-write of its record.
pub fn lock_dir(dir: &Path) -> Result<fs::File> {
    lock_file(&dir.join(LOCK))
}

/// The lock of container names (`create`, `rename`).
pub fn lock_names(store: &Store) -> Result<fs::File> {
    lock_file(&containers_dir(store).join(NAMES_LOCK))
}

/// Whether a supervisor holds the container's supervisor lock.
pub fn supervisor_alive(dir: &Path) -> bool {
    let Ok(file) = fs::File::open(dir.join(SUPERVISOR_LOCK)) else { return false };
    // Shared, so that two checkers never make each other see the supervisor as alive.
    match file.try_lock_shared() {
        Ok(()) => false,
        Err(_) => true,
    }
}

/// Takes the supervisor lock of the container in `dir` (created if missing); `None` when another
/// process holds it.
pub fn take_supervisor_lock(dir: &Path) -> Result<Option<fs::File>> {
    let path = dir.join(SUPERVISOR_LOCK);
    let file = open_lock_file(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// A record that says live while no supervisor holds its lock: the supervisor was killed (and
/// the container's processes with it). Recorded as exited with 137, once, under the lock. A
/// `--rm` container whose supervisor died (or whose `run` died before starting it) is removed,
/// as its supervisor would have; returns false then.
fn settle(dir: &Path, record: &mut Record) -> Result<bool> {
    let orphaned = |r: &Record| {
        r.state.status.is_live()
            || (r.state.status == Status::Created && r.state.claimed)
            || (r.config.auto_remove && r.state.status == Status::Exited)
    };
    if !orphaned(record) || supervisor_alive(dir) {
        return Ok(true);
    }
    let lock = lock_dir(dir)?;
    let mut fresh = match read_record(dir) {
        Ok(r) => r,
        // Removed meanwhile by whoever settled it first.
        Err(_) if !dir.exists() => return Ok(false),
        Err(e) => return Err(e),
    };
    if !orphaned(&fresh) || supervisor_alive(dir) {
        *record = fresh;
        return Ok(true);
    }
    if fresh.state.status.is_live() {
        resources::remove_leftover_cgroup(&fresh.id);
    }
    if fresh.config.auto_remove {
        drop(lock);
        // Its anonymous volumes stay for `volume prune` (the store is not at hand here).
        remove_dir(dir)?;
        return Ok(false);
    }
    if fresh.state.status.is_live() {
        fresh.state.status = Status::Exited;
        fresh.state.exit_code = KILLED_WITH_SUPERVISOR;
        fresh.state.pid = 0;
        fresh.state.supervisor_pid = 0;
        fresh.state.finished_at = now();
    }
    // A foreground run that died before starting it: it stays, never started.
    fresh.state.claimed = false;
    write_record(dir, &fresh)?;
    *record = fresh;
    Ok(true)
}

/// Bytes of the regular files under `dir` (a container's own changes, for `ps -s` and `prune`).
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Now, as records store times.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// Removes a container's directory; the upper dir may hold root-owned files and whiteout devices.
/// It first leaves its live name (`containers/.<id>.kiln-doomed-…`, which nothing lists and the
/// next kiln removes), so a crash never leaves a half-removed container that looks whole.
pub fn remove_dir(dir: &Path) -> Result<()> {
    let parent = dir.parent().context("a container directory has a parent")?;
    let id = dir.file_name().context("a container directory has a name")?.to_string_lossy();
    let doomed = parent.join(kiln_cas::store::temp::unique_temp_name(&id, kiln_cas::store::temp::DOOMED_MARK));
    match fs::rename(dir, &doomed) {
        // Removed already (a --rm container settled by another kiln).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        other => other.with_context(|| format!("removing {}", dir.display()))?,
    }
    if let Err(e) = fs::remove_dir_all(&doomed) {
        if doomed.exists() {
            return Err(e).with_context(|| format!("removing {}", doomed.display()));
        }
    }
    Ok(())
}

/// docker's rule for names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn check_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!("Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed");
    }
    Ok(())
}

/// A fresh 64-hex container ID.
pub fn new_id() -> String {
    use std::io::Read;
    let mut seed = [0u8; 32];
    let _ = fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut seed));
    let noise = format!("{:?}{}{:?}", std::time::SystemTime::now(), std::process::id(), seed);
    kiln_cas::Digest::of(noise.as_bytes()).hex().to_string()
}

/// Makes `containers/<id>/` with its record and image file. The name must be free: checked
/// under the containers directory's lock so that two `run --name x` at once cannot both win.
pub fn create(store: &Store, name: Option<&str>, config: ContainerConfig) -> Result<Container> {
    Ok(create_inner(store, name, config, false)?.0)
}

/// [`create`] for a foreground `run`: the container comes with its supervisor lock already held
/// (and `claimed` set), so that a `run` killed before it starts the container is seen as gone.
pub fn create_claimed(store: &Store, name: Option<&str>, config: ContainerConfig) -> Result<(Container, fs::File)> {
    let (container, lock) = create_inner(store, name, config, true)?;
    Ok((container, lock.expect("claimed")))
}

fn create_inner(
    store: &Store,
    name: Option<&str>,
    config: ContainerConfig,
    claim: bool,
) -> Result<(Container, Option<fs::File>)> {
    let id = new_id();
    let root = containers_dir(store);
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let _names = lock_names(store)?;
    let name = match name {
        Some(name) => {
            check_name(name)?;
            if let Some(other) = list(store)?.into_iter().find(|c| c.record.name == name) {
                bail!(
                    "Conflict. The container name \"/{name}\" is already in use by container \"{}\". You have to remove (or rename) that container to be able to reuse that name.",
                    other.record.id
                );
            }
            name.to_string()
        }
        None => generated_name(&id),
    };
    // Made under a temp name and renamed in whole: `list` never sees a container without a record.
    let building = kiln_cas::store::temp::OwnedTempDir::create(&root, &id)
        .with_context(|| format!("creating a container in {}", root.display()))?;
    let held = if claim {
        Some(take_supervisor_lock(building.path())?.context("a fresh container's supervisor lock is free")?)
    } else {
        None
    };
    let state = State { claimed: claim, ..State::default() };
    let record = Record { id: id.clone(), name, created: now(), config, state };
    write_record(building.path(), &record)?;
    fs::write(building.path().join("image"), &record.config.image).context("recording the container's image")?;
    let dir = root.join(&id);
    building.persist(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok((Container { dir, record }, held))
}

/// docker's `adjective_surname`; kiln uses a short, readable, unique-enough form.
fn generated_name(id: &str) -> String {
    const LEFT: &[&str] = &[
        "brave", "calm", "eager", "fervent", "gifted", "happy", "jolly", "keen", "lucid", "modest", "nifty", "quirky",
        "serene", "tender", "vibrant", "zealous",
    ];
    const RIGHT: &[&str] = &[
        "babbage", "curie", "darwin", "euler", "fermat", "galois", "hopper", "kepler", "lovelace", "noether", "pascal",
        "ritchie", "shannon", "turing", "wozniak", "yalow",
    ];
    let byte = |i: usize| u8::from_str_radix(&id[i..i + 2], 16).unwrap_or(0) as usize;
    format!("{}_{}_{}", LEFT[byte(0) % LEFT.len()], RIGHT[byte(2) % RIGHT.len()], &id[4..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, name: &str) -> Container {
        Container {
            dir: PathBuf::from("/nonexistent"),
            record: Record {
                id: id.into(),
                name: name.into(),
                created: now(),
                config: ContainerConfig::default(),
                state: State::default(),
            },
        }
    }

    #[test]
    fn lookup_by_id_name_and_unique_prefix() {
        let all = vec![container("abc123", "web"), container("abd456", "db"), container("web999", "other")];
        assert_eq!(find_in(all.clone(), "web").unwrap().record.id, "abc123", "a name beats an ID prefix");
        assert_eq!(find_in(all.clone(), "/db").unwrap().record.id, "abd456");
        assert_eq!(find_in(all.clone(), "abc").unwrap().record.name, "web");
        assert_eq!(find_in(all.clone(), "web9").unwrap().record.name, "other");
        let err = find_in(all.clone(), "ab").unwrap_err().to_string();
        assert!(err.contains("multiple containers"), "{err}");
        let err = find_in(all, "zzz").unwrap_err().to_string();
        assert_eq!(err, "No such container: zzz");
    }

    #[test]
    fn names_follow_dockers_rule() {
        check_name("web-1.a_b").unwrap();
        for bad in ["", "a", "-web", "we b", "web/1", "_x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let name = generated_name(&new_id());
        check_name(&name).unwrap();
    }

    #[test]
    fn status_guards() {
        assert!(Status::Exited.can_start() && Status::Created.can_start());
        assert!(!Status::Running.can_start() && !Status::Paused.can_start());
        assert!(Status::Restarting.is_live() && !Status::Dead.is_live());
    }
}

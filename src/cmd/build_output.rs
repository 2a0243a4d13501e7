//! `kiln build -o/--output`, `--push` and `--load`: where a build's result goes, with buildx's
//! spelling and rules, so a buildx command line works unchanged.
//!
//! kiln has no daemon, so buildx's two image stores are one: the image a build makes is always in
//! kiln's store, and "exporting it as an image" or "loading it" both mean naming it there. Hence:
//! - no `-o`: the `-t` names are tagged in the store (buildx's default with the docker driver);
//! - `type=image` (or `registry`, or `--push`): tagged in the store, and pushed when `push=true`;
//! - `type=docker` without `dest`, or `--load`: tagged in the store;
//! - `type=local|tar|docker|oci` with a `dest`: written there, and the `-t` names are NOT tagged in
//!   the store unless one of the above is also asked for (as buildx does not load what it writes
//!   to a file). The image is still in the store, untagged, until `image prune`.
//!
//! Several outputs at once are allowed, as current buildx (BuildKit ≥ 0.13) allows them; at most
//! one may write to stdout. Every output is checked before the build starts, so a bad `-o` costs
//! no build time, and files are written beside their destination and renamed into place, so a
//! failed export leaves nothing half-written under the name asked for.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use kiln_cas::archive::oci_layout::SaveFormat;
use kiln_cas::archive::rootfs::{write_rootfs_tar, RootfsOptions};
use kiln_cas::archive::save::{plan_images, plan_list, SaveOptions, SavedImage};
use kiln_cas::registry::{push_image, Client, ClientOptions, LayerCompression};
use kiln_cas::{Digest, Reference, Store};

use crate::progress::Printer;

/// Where a file output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    Path(PathBuf),
}

impl Dest {
    fn parse(text: &str) -> Dest {
        if text == "-" {
            Dest::Stdout
        } else {
            Dest::Path(PathBuf::from(text))
        }
    }

    fn describe(&self) -> String {
        match self {
            Dest::Stdout => "stdout".to_string(),
            Dest::Path(path) => path.display().to_string(),
        }
    }
}

/// An output written outside the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileOutput {
    /// The root file system, unpacked into a directory.
    Local { dir: PathBuf },
    /// The root file system as one tar.
    Tar { dest: Dest },
    /// The image as a docker-archive (what `kiln save` writes).
    Docker { dest: Dest, names: Vec<Reference> },
    /// The image as an OCI image layout tar.
    Oci { dest: Dest, names: Vec<Reference> },
}

impl FileOutput {
    /// Whether the output can hold a multi-platform image (an index).
    pub fn keeps_platforms(&self) -> bool {
        matches!(self, FileOutput::Docker { .. } | FileOutput::Oci { .. })
    }
}

/// A push to a registry of every name in `names`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushOutput {
    pub names: Vec<Reference>,
    pub compression: LayerCompression,
    pub insecure: bool,
}

/// What a build does with its image, resolved from `-o`, `--push`, `--load` and `-t`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputPlan {
    /// Names tagged in kiln's store.
    pub store_names: Vec<Reference>,
    pub files: Vec<FileOutput>,
    pub pushes: Vec<PushOutput>,
}

impl OutputPlan {
    /// Whether some output writes to stdout (then nothing else may).
    pub fn uses_stdout(&self) -> bool {
        self.files.iter().any(|f| match f {
            FileOutput::Local { .. } => false,
            FileOutput::Tar { dest } | FileOutput::Docker { dest, .. } | FileOutput::Oci { dest, .. } => {
                *dest == Dest::Stdout
            }
        })
    }
}

/// One `-o` value as written: `type=…,dest=…,key=value…`, or buildx's short forms (`DIR` is
/// `type=local,dest=DIR`, `-` is `type=tar,dest=-`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct RawOutput {
    kind: String,
    dest: Option<String>,
    attrs: BTreeMap<String, String>,
}

fn parse_raw(spec: &str) -> Result<RawOutput> {
    let fields = split_fields(spec).map_err(|why| anyhow!("invalid --output \"{spec}\": {why}"))?;
    if fields.len() == 1 && fields[0] == spec && !spec.starts_with("type=") && !spec.contains('=') {
        let kind = if spec == "-" { "tar" } else { "local" };
        return Ok(RawOutput { kind: kind.to_string(), dest: Some(spec.to_string()), attrs: BTreeMap::new() });
    }
    let mut kind = None;
    let mut dest = None;
    let mut attrs = BTreeMap::new();
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            bail!("invalid --output \"{spec}\": \"{field}\" is not KEY=VALUE");
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "type" => kind = Some(value.to_string()),
            "dest" => dest = Some(value.to_string()),
            other => {
                attrs.insert(other.to_string(), value.to_string());
            }
        }
    }
    let Some(kind) = kind.filter(|k| !k.is_empty()) else {
        bail!("invalid --output \"{spec}\": type= is required (local, tar, docker, oci, image, registry)");
    };
    Ok(RawOutput { kind, dest, attrs })
}

/// Comma-separated fields, where a field in double quotes may hold commas (`"name=a,b"`) and `""`
/// inside quotes is one quote, as buildx reads them (CSV).
fn split_fields(spec: &str) -> std::result::Result<Vec<String>, String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    if quoted {
        return Err("a double quote is not closed".to_string());
    }
    fields.push(field);
    Ok(fields)
}

/// The keys each type takes besides `type` and `dest`.
fn allowed_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "local" | "tar" => &[],
        "docker" | "oci" => &["name", "tar"],
        _ => &["name", "push", "registry.insecure", "compression", "unpack"],
    }
}

fn parse_bool(spec: &str, key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Ok(true),
        "false" | "0" | "f" => Ok(false),
        _ => bail!("invalid --output \"{spec}\": {key}=\"{value}\" is not true or false"),
    }
}

/// `name=a,b`: several names, each a valid reference.
fn parse_names(spec: &str, value: &str) -> Result<Vec<Reference>> {
    value
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| Reference::parse(n).map_err(|e| anyhow!("invalid --output \"{spec}\": name \"{n}\": {e}")))
        .collect()
}

fn push_name(names: &mut Vec<Reference>, name: &Reference) {
    if !names.contains(name) {
        names.push(name.clone());
    }
}

/// Resolves the flags into a plan, checking every destination (nothing is built for an output
/// that cannot be written). `stdout_is_terminal` is passed in so tests need no terminal.
pub fn plan(
    outputs: &[String],
    push: bool,
    load: bool,
    tags: &[Reference],
    quiet: bool,
    stdout_is_terminal: bool,
) -> Result<OutputPlan> {
    let mut plan = OutputPlan::default();
    let mut image_outputs = 0;
    let mut loaded = false;
    let raw: Vec<(String, RawOutput)> = outputs
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| parse_raw(s).map(|r| (s.clone(), r)))
        .collect::<Result<_>>()?;
    if raw.is_empty() && !push {
        plan.store_names = tags.to_vec();
        return Ok(plan);
    }
    for (spec, out) in &raw {
        let kind = out.kind.as_str();
        if !matches!(kind, "local" | "tar" | "docker" | "oci" | "image" | "registry") {
            bail!("invalid --output \"{spec}\": unknown type \"{kind}\" (local, tar, docker, oci, image, registry)");
        }
        for key in out.attrs.keys() {
            if !allowed_keys(kind).contains(&key.as_str()) {
                let dest: &[&str] = if matches!(kind, "image" | "registry") { &[] } else { &["dest"] };
                let allowed = dest.iter().chain(allowed_keys(kind)).copied().collect::<Vec<_>>().join(", ");
                bail!("invalid --output \"{spec}\": unknown key \"{key}\" for type={kind} (it takes {allowed})");
            }
        }
        // buildx: the -t names replace name= for the image-writing types.
        let names = || -> Result<Vec<Reference>> {
            if !tags.is_empty() {
                return Ok(tags.to_vec());
            }
            out.attrs.get("name").map(|v| parse_names(spec, v)).transpose().map(Option::unwrap_or_default)
        };
        match kind {
            "local" => {
                let dir = match out.dest.as_deref() {
                    None | Some("") => bail!("invalid --output \"{spec}\": dest=DIR is required for type=local"),
                    Some("-") => bail!("invalid --output \"{spec}\": type=local writes a directory, not stdout"),
                    Some(dir) => PathBuf::from(dir),
                };
                if let Ok(meta) = fs::metadata(&dir) {
                    if !meta.is_dir() {
                        bail!("invalid --output \"{spec}\": destination directory {} is a file", dir.display());
                    }
                }
                plan.files.push(FileOutput::Local { dir });
            }
            "tar" | "oci" | "docker" => {
                if let Some(value) = out.attrs.get("tar") {
                    if !parse_bool(spec, "tar", value)? {
                        bail!(
                            "invalid --output \"{spec}\": tar=false (a directory layout) is not supported; \
                             write a tar (dest=FILE)"
                        );
                    }
                }
                let dest = match out.dest.as_deref() {
                    Some("") | None if kind == "docker" => {
                        // buildx's --load: into the image store, which for kiln is its own.
                        for name in names()? {
                            push_name(&mut plan.store_names, &name);
                        }
                        loaded = true;
                        continue;
                    }
                    Some("") | None => Dest::Stdout,
                    Some(text) => Dest::parse(text),
                };
                match &dest {
                    Dest::Stdout => {
                        if plan.uses_stdout() {
                            bail!("invalid --output \"{spec}\": multiple outputs configured to write to stdout");
                        }
                        if stdout_is_terminal {
                            bail!(
                                "invalid --output \"{spec}\": dest file is required for type={kind}, refusing to \
                                 write to a terminal (give dest=FILE or redirect)"
                            );
                        }
                        if quiet {
                            bail!(
                                "invalid --output \"{spec}\": -q prints the image ID on stdout, where this output \
                                 writes too; give dest=FILE"
                            );
                        }
                    }
                    Dest::Path(path) => {
                        if fs::metadata(path).is_ok_and(|m| m.is_dir()) {
                            bail!("invalid --output \"{spec}\": destination file {} is a directory", path.display());
                        }
                    }
                }
                plan.files.push(match kind {
                    "tar" => FileOutput::Tar { dest },
                    "docker" => FileOutput::Docker { dest, names: names()? },
                    _ => FileOutput::Oci { dest, names: names()? },
                });
            }
            _ => {
                image_outputs += 1;
                let mut pushing = kind == "registry" || push;
                if let Some(value) = out.attrs.get("push") {
                    pushing |= parse_bool(spec, "push", value)?;
                }
                let insecure = match out.attrs.get("registry.insecure") {
                    Some(value) => parse_bool(spec, "registry.insecure", value)?,
                    None => false,
                };
                let compression = match out.attrs.get("compression").map(String::as_str) {
                    None | Some("gzip") => LayerCompression::Gzip,
                    Some("zstd") => LayerCompression::Zstd,
                    Some(other) => bail!("invalid --output \"{spec}\": compression \"{other}\" (gzip, zstd)"),
                };
                if let Some(value) = out.attrs.get("unpack") {
                    parse_bool(spec, "unpack", value)?;
                }
                let names = names()?;
                for name in &names {
                    push_name(&mut plan.store_names, name);
                }
                if pushing {
                    if names.is_empty() {
                        bail!("invalid --output \"{spec}\": a name is needed to push (-t NAME or name=NAME)");
                    }
                    check_pushable(&names)?;
                    plan.pushes.push(PushOutput { names, compression, insecure });
                }
            }
        }
    }
    if push && image_outputs == 0 {
        if tags.is_empty() {
            bail!("--push needs a name to push to: give -t NAME");
        }
        check_pushable(tags)?;
        for name in tags {
            push_name(&mut plan.store_names, name);
        }
        plan.pushes.push(PushOutput { names: tags.to_vec(), compression: LayerCompression::Gzip, insecure: false });
    }
    if load && !loaded {
        for name in tags {
            push_name(&mut plan.store_names, name);
        }
    }
    Ok(plan)
}

fn check_pushable(names: &[Reference]) -> Result<()> {
    for name in names {
        if name.digest().is_some() {
            bail!("cannot push {name}: a digest reference cannot be pushed; use a tag");
        }
    }
    Ok(())
}

/// Writes every file output, then pushes. `epoch` is SOURCE_DATE_EPOCH, which BuildKit's local
/// and tar exporters give every file as its mtime.
pub fn export(
    store: &Store,
    image_id: &Digest,
    list: Option<&Digest>,
    plan: &OutputPlan,
    epoch: Option<i64>,
    printer: &Printer,
) -> Result<()> {
    for output in &plan.files {
        match output {
            FileOutput::Local { dir } => {
                printer.note(&format!("copying files to {}", dir.display()));
                write_local(store, image_id, dir, epoch)?;
            }
            FileOutput::Tar { dest } => {
                printer.note(&format!("sending tarball to {}", dest.describe()));
                let image = store.image(image_id)?;
                let options = RootfsOptions { mtime: epoch, owner: None };
                write_dest(dest, "type=tar", &mut |out, what| {
                    let mut buffered = BufWriter::with_capacity(1 << 20, &mut *out);
                    write_rootfs_tar(store, &image, &mut buffered, &options, what)?;
                    buffered.flush()?;
                    Ok(())
                })?;
            }
            FileOutput::Docker { dest, names } | FileOutput::Oci { dest, names } => {
                // The same plan, verification and writing as `kiln save --format docker|oci`.
                let (format, kind, shown) = match output {
                    FileOutput::Oci { .. } => (SaveFormat::Oci, "type=oci", "OCI layout"),
                    _ => (SaveFormat::Docker, "type=docker", "docker archive"),
                };
                printer.note(&format!("exporting {shown} to {}", dest.describe()));
                let options = SaveOptions { format, ..SaveOptions::default() };
                let plan = match list {
                    Some(list) => plan_list(store, list, names.clone(), &options)?,
                    None => {
                        plan_images(store, vec![SavedImage { id: image_id.clone(), tags: names.clone() }], &options)?
                    }
                };
                write_dest(dest, kind, &mut |out, what| {
                    plan.verify()?;
                    plan.write_to(out, what)?;
                    Ok(())
                })?;
            }
        }
    }
    for output in &plan.pushes {
        for name in &output.names {
            push(store, name, output, printer)?;
        }
    }
    Ok(())
}

/// Runs `write` on the destination: stdout directly (after every check, since bytes sent down a
/// pipe cannot be taken back), or a file written beside the path and renamed over it when done.
/// An existing destination that is not a regular file (a FIFO, /dev/null) is written in place;
/// through a symlink, the file it points at is replaced, as `kiln save -o` does.
fn write_dest(dest: &Dest, what_kind: &str, write: &mut dyn FnMut(&mut File, &str) -> Result<()>) -> Result<()> {
    match dest {
        Dest::Stdout => {
            let fd = io::stdout().as_fd().try_clone_to_owned().context("duplicating stdout")?;
            let mut out = File::from(fd);
            write(&mut out, "stdout").map_err(|e| {
                if is_broken_pipe(&e) {
                    anyhow::Error::new(crate::output::StdoutClosed)
                } else {
                    e.context(format!("{what_kind}: writing to stdout"))
                }
            })
        }
        Dest::Path(path) => {
            let what = path.display().to_string();
            if let Ok(meta) = fs::metadata(path) {
                if !meta.is_file() && !meta.is_dir() {
                    let mut out = fs::OpenOptions::new()
                        .write(true)
                        .open(path)
                        .with_context(|| format!("{what_kind}: opening {what}"))?;
                    return write(&mut out, &what).with_context(|| format!("{what_kind}: writing {what}"));
                }
            }
            let target = fs::canonicalize(path).unwrap_or_else(|_| path.clone());
            let (dir, name) = split_target(&target)?;
            let mut temp = tempfile::Builder::new()
                .prefix(&format!(".{name}.kiln-output-"))
                .tempfile_in(&dir)
                .with_context(|| format!("{what_kind}: creating a file in {}", dir.display()))?;
            write(temp.as_file_mut(), &what).with_context(|| format!("{what_kind}: writing {what}"))?;
            // buildx creates the file as os.Create does: 0666 less the umask (0644 as a rule).
            temp.as_file().set_permissions(fs::Permissions::from_mode(0o644))?;
            temp.as_file().sync_all().with_context(|| format!("{what_kind}: writing {what}"))?;
            temp.persist(&target).map_err(|e| anyhow!("{what_kind}: writing {what}: {}", e.error))?;
            Ok(())
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
            || cause.to_string().contains("Broken pipe")
    })
}

fn split_target(target: &Path) -> Result<(PathBuf, String)> {
    let name = target
        .file_name()
        .ok_or_else(|| anyhow!("{} is not a file name", target.display()))?
        .to_string_lossy()
        .into_owned();
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

/// The root file system unpacked into `dir` as BuildKit's local exporter leaves it: owned by the
/// user who ran the build, modes (setuid included), symlinks, hard links and mtimes kept. The tar
/// made for `type=tar` is unpacked by the layer applier, which resolves every path inside `dir`
/// (openat2 RESOLVE_IN_ROOT), so no symlink of the image can lead a write out of it.
///
/// A new `dir` is made beside its name and renamed into place only when complete (mode 0700, as
/// buildx makes it); an existing one is merged into, as buildx does (what the image has replaces
/// what is there; other files stay).
fn write_local(store: &Store, image_id: &Digest, dir: &Path, epoch: Option<i64>) -> Result<()> {
    let image = store.image(image_id)?;
    let me = fs::metadata("/proc/self").context("reading the current user id")?;
    let options = RootfsOptions { mtime: epoch, owner: Some((u64::from(me.uid()), u64::from(me.gid()))) };
    let what = dir.display().to_string();
    let exists = fs::symlink_metadata(dir).is_ok();
    let (work, temp) = if exists {
        (dir.to_path_buf(), None)
    } else {
        let (parent, name) = split_target(dir)?;
        fs::create_dir_all(&parent).with_context(|| format!("type=local: creating {}", parent.display()))?;
        let temp = tempfile::Builder::new()
            .prefix(&format!(".{name}.kiln-output-"))
            .tempdir_in(&parent)
            .with_context(|| format!("type=local: creating a directory in {}", parent.display()))?;
        fs::set_permissions(temp.path(), fs::Permissions::from_mode(0o700))?;
        (temp.path().to_path_buf(), Some(temp))
    };
    let (reader, mut writer) = io::pipe().context("type=local: making a pipe")?;
    let applied = std::thread::scope(|scope| {
        let producer = scope.spawn(move || -> Result<()> {
            write_rootfs_tar(store, &image, &mut writer, &options, &what)?;
            Ok(())
        });
        let opts = kiln_runtime::snapshot::ApplyOptions::default();
        let applied = kiln_runtime::snapshot::apply_layer(reader, &work, &opts);
        let produced = producer.join().map_err(|_| anyhow!("type=local: the tar writer panicked"))?;
        // The writer's error is the cause when both fail (the applier then saw a cut stream).
        produced.with_context(|| format!("type=local: writing {}", dir.display()))?;
        applied.map_err(|e| anyhow!("type=local: writing {}: {e}", dir.display()))
    })?;
    for warning in &applied.warnings {
        eprintln!("warning: type=local: {warning}");
    }
    if let Some(temp) = temp {
        let path = temp.keep();
        fs::rename(&path, dir).map_err(|e| {
            let _ = fs::remove_dir_all(&path);
            anyhow!("type=local: renaming into {}: {e}", dir.display())
        })?;
    }
    Ok(())
}

/// Pushes `name` (already tagged in the store) as `kiln push` does, its digest line in the build's
/// progress.
fn push(store: &Store, name: &Reference, output: &PushOutput, printer: &Printer) -> Result<()> {
    let options = crate::config::client_options(ClientOptions { insecure: output.insecure, ..Default::default() })?;
    let client = Client::connect(name.domain(), options).with_context(|| format!("pushing {name}"))?;
    printer.note(&format!("pushing {name}"));
    let outcome = push_image(store, &client, name, output.compression, &mut |_, _| {})
        .with_context(|| format!("pushing {name}"))?;
    printer.note(&format!("{}: digest: {} size: {}", name.tag().unwrap_or("latest"), outcome.digest, outcome.size));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(names: &[&str]) -> Vec<Reference> {
        names.iter().map(|n| Reference::parse(n).unwrap()).collect()
    }

    fn plan_of(outputs: &[&str], push: bool, load: bool, tags: &[&str]) -> Result<OutputPlan> {
        let outputs: Vec<String> = outputs.iter().map(|s| s.to_string()).collect();
        plan(&outputs, push, load, &refs(tags), false, false)
    }

    fn err(outputs: &[&str], push: bool, load: bool, tags: &[&str]) -> String {
        let e = plan_of(outputs, push, load, tags).unwrap_err().to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn no_output_tags_the_store_and_load_changes_nothing() {
        let plain = plan_of(&[], false, false, &["a:1"]).unwrap();
        assert_eq!(plain.store_names, refs(&["a:1"]));
        assert!(plain.files.is_empty() && plain.pushes.is_empty());
        assert_eq!(plan_of(&[], false, true, &["a:1"]).unwrap(), plain);
    }

    #[test]
    fn short_forms_are_local_and_stdout_tar() {
        let p = plan_of(&["out"], false, false, &["a:1"]).unwrap();
        assert_eq!(p.files, vec![FileOutput::Local { dir: PathBuf::from("out") }]);
        assert!(p.store_names.is_empty(), "a file output does not tag the store");
        let p = plan_of(&["-"], false, false, &[]).unwrap();
        assert_eq!(p.files, vec![FileOutput::Tar { dest: Dest::Stdout }]);
        let p = plan_of(&["type=tar"], false, false, &[]).unwrap();
        assert_eq!(p.files, vec![FileOutput::Tar { dest: Dest::Stdout }]);
    }

    #[test]
    fn load_adds_the_store_to_file_outputs() {
        let p = plan_of(&["type=tar,dest=x.tar"], false, true, &["a:1"]).unwrap();
        assert_eq!(p.store_names, refs(&["a:1"]));
        assert_eq!(p.files.len(), 1);
        let p = plan_of(&["type=docker"], false, false, &["a:1"]).unwrap();
        assert_eq!(p.store_names, refs(&["a:1"]));
        assert!(p.files.is_empty());
    }

    #[test]
    fn push_sets_push_on_image_outputs_or_adds_one() {
        let p = plan_of(&[], true, false, &["r.example/a:1", "r.example/a:2"]).unwrap();
        assert_eq!(p.pushes.len(), 1);
        assert_eq!(p.pushes[0].names, refs(&["r.example/a:1", "r.example/a:2"]));
        assert_eq!(p.store_names, refs(&["r.example/a:1", "r.example/a:2"]));
        let p = plan_of(&["type=image,compression=zstd"], true, false, &["r.example/a:1"]).unwrap();
        assert_eq!(p.pushes.len(), 1);
        assert_eq!(p.pushes[0].compression, LayerCompression::Zstd);
        let p = plan_of(&["type=registry,name=r.example/b:1,registry.insecure=true"], false, false, &[]).unwrap();
        assert_eq!(p.pushes[0].names, refs(&["r.example/b:1"]));
        assert!(p.pushes[0].insecure);
        let p = plan_of(&["type=image,\"name=r.example/b:1,r.example/b:2\""], false, false, &[]).unwrap();
        assert!(p.pushes.is_empty());
        assert_eq!(p.store_names, refs(&["r.example/b:1", "r.example/b:2"]));
        // -t replaces name=, as buildx does.
        let p = plan_of(&["type=docker,dest=x.tar,name=other:1"], false, false, &["a:1"]).unwrap();
        assert_eq!(p.files, vec![FileOutput::Docker { dest: Dest::Path("x.tar".into()), names: refs(&["a:1"]) }]);
        // --push combines with file outputs (current buildx).
        let p = plan_of(&["type=local,dest=d"], true, false, &["r.example/a:1"]).unwrap();
        assert_eq!((p.files.len(), p.pushes.len()), (1, 1));
    }

    #[test]
    fn bad_outputs_are_refused_in_one_line() {
        assert!(err(&["type=zip,dest=x"], false, false, &[]).contains("unknown type \"zip\""));
        assert!(err(&["type=local"], false, false, &[]).contains("dest=DIR is required"));
        assert!(err(&["type=local,dest=-"], false, false, &[]).contains("not stdout"));
        assert!(err(&["type=tar,dest=x,level=3"], false, false, &[]).contains("unknown key \"level\""));
        assert!(err(&["dest=x"], false, false, &[]).contains("type= is required"));
        assert!(err(&["type=tar,dest"], false, false, &[]).contains("not KEY=VALUE"));
        assert!(err(&["type=tar", "type=oci"], false, false, &[]).contains("multiple outputs"));
        assert!(err(&["type=docker,dest=x,tar=false"], false, false, &[]).contains("tar=false"));
        assert!(err(&["type=image,push=true"], false, false, &[]).contains("a name is needed to push"));
        assert!(plan_of(&["type=image"], false, false, &[]).unwrap().store_names.is_empty(), "unnamed is fine");
        assert!(err(&[], true, false, &[]).contains("--push needs a name"));
        assert!(err(&["type=image,push=maybe"], false, false, &["a:1"]).contains("not true or false"));
        assert!(err(&["type=\"tar"], false, false, &[]).contains("not closed"));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, "x").unwrap();
        let spec = format!("type=local,dest={}", file.display());
        assert!(err(&[&spec], false, false, &[]).contains("is a file"));
        let spec = format!("type=tar,dest={}", dir.path().display());
        assert!(err(&[&spec], false, false, &[]).contains("is a directory"));
        let outputs = vec!["type=tar".to_string()];
        let e = plan(&outputs, false, false, &[], false, true).unwrap_err().to_string();
        assert!(e.contains("terminal"), "{e}");
        let e = plan(&outputs, false, false, &[], true, false).unwrap_err().to_string();
        assert!(e.contains("-q"), "{e}");
    }
}

//! The store under races and kills: temp names unique per writer, nothing half-made under a live
//! name, leftovers of killed commands removed by the next kiln (DESIGN.md §2). The kills are made
//! with strace's fault injection (`-e inject=SYSCALL:signal=SIGKILL:when=N`).

use std::path::Path;
use std::process::Command;

use crate::harness::*;

/// Runs `kiln ARGS` under strace, killing it (SIGKILL) at the `when`-th call of one of `syscalls`.
pub(crate) fn kill_at(k: &Kiln, syscalls: &str, when: u32, args: &[&str]) -> std::process::Output {
    let kiln = assert_cmd::cargo::cargo_bin("kiln");
    Command::new("strace")
        .args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("inject={syscalls}:signal=SIGKILL:when={when}"))
        .arg(&kiln)
        .env_remove("KILN_ROOT")
        .arg("--root")
        .arg(k.root())
        .args(args)
        .output()
        .expect("run strace")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn two_stages_running_one_step_on_a_cold_store_never_collide() {
    if !is_root() {
        return;
    }
    let dockerfile = "FROM busybox AS a\nRUN echo same > /same\n\
                      FROM busybox AS b\nRUN echo same > /same\n\
                      FROM busybox\nCOPY --from=a /same /a\nCOPY --from=b /same /b\n";
    for round in 0..12 {
        let k = Kiln::new();
        k.import_busybox("busybox:latest");
        std::fs::create_dir_all(k.path("ctx")).unwrap();
        std::fs::write(k.path("ctx/Dockerfile"), dockerfile).unwrap();
        let ctx = k.path("ctx");
        let args = ["build", "--progress", "plain", "-t", "twins:1", ctx.to_str().unwrap()];
        let out = k.run(&args);
        assert!(out.status.success(), "round {round}: {}", String::from_utf8_lossy(&out.stderr));
        let steps = names_in(&k.root().join("cache/steps"));
        assert!(steps.iter().all(|n| !n.starts_with('.')), "round {round}: temp files left: {steps:?}");
        k.assert_fsck_clean();
    }
}

#[test]
fn a_save_killed_at_its_rename_keeps_the_old_archive_and_the_next_save_removes_its_temp() {
    if !have_tool("strace") {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let out = k.path("out.tar");
    let out_s = out.to_str().unwrap();
    k.ok(&["save", "-o", out_s, "busybox"]);
    let old = std::fs::read(&out).unwrap();
    k.ok(&["tag", "busybox", "second:1"]);
    let killed = kill_at(&k, "rename,renameat,renameat2", 1, &["save", "-o", out_s, "busybox", "second:1"]);
    assert!(!killed.status.success(), "the save was not killed");
    assert!(std::fs::read(&out).ok() == Some(old), "the old archive must survive a killed save");
    let partial: Vec<String> =
        names_in(k.dir.path()).into_iter().filter(|n| n.starts_with(".out.tar.kiln-save-partial-")).collect();
    assert_eq!(partial.len(), 1, "the killed save's temp file, named for what it is: {:?}", names_in(k.dir.path()));
    k.ok(&["save", "-o", out_s, "busybox", "second:1"]);
    let left: Vec<String> = names_in(k.dir.path()).into_iter().filter(|n| n.starts_with(".out.tar")).collect();
    assert!(left.is_empty(), "temp files left: {left:?}");
    let listing = Command::new("tar").arg("-tf").arg(&out).output().unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("manifest.json"));
}

#[test]
fn an_index_temp_left_by_a_kill_is_removed_and_fsck_stays_clean() {
    if !have_tool("strace") {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    // Killed between writing the new images.json and renaming it into place.
    let killed = kill_at(&k, "rename,renameat,renameat2", 1, &["tag", "busybox", "other:1"]);
    assert!(!killed.status.success(), "the tag was not killed");
    let temps: Vec<String> = names_in(&k.root()).into_iter().filter(|n| n.starts_with(".images.json")).collect();
    assert_eq!(temps.len(), 1, "the kill leaves the index's temp file: {:?}", names_in(&k.root()));
    k.assert_fsck_clean();
    let left: Vec<String> = names_in(&k.root()).into_iter().filter(|n| n.starts_with(".images.json")).collect();
    assert!(left.is_empty(), "the next kiln removes it: {left:?}");
}

#[test]
fn the_work_dir_of_a_killed_build_is_removed_by_the_next_kiln() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    std::fs::create_dir_all(k.path("ctx")).unwrap();
    std::fs::write(k.path("ctx/Dockerfile"), "FROM busybox\nRUN dd if=/dev/zero of=/big bs=1M count=4 && sleep 2\n")
        .unwrap();
    let mut child = k.cmd(&["build", "--progress", "quiet", k.path("ctx").to_str().unwrap()]).spawn().unwrap();
    let tmp = k.root().join("tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while names_in(&tmp).is_empty() {
        assert!(std::time::Instant::now() < deadline, "the build never made its work dir");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(1000));
    // While the build runs, its work dir is held: df counts it and nothing removes it.
    let df = k.ok(&["system", "df"]);
    let row = df.lines().find(|l| l.starts_with("Temporary files")).unwrap_or_else(|| panic!("{df}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&fields[2..4], ["1", "1"], "one temp dir, held: {row}");
    assert!(fields[4].ends_with("MB"), "the 4 MB the RUN wrote: {row}");
    assert!(!names_in(&tmp).is_empty());
    child.kill().unwrap();
    child.wait().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!names_in(&tmp).is_empty(), "the kill leaves the work dir");
    let df = k.ok(&["system", "df"]);
    assert!(names_in(&tmp).is_empty(), "left after the next kiln: {:?}\n{df}", names_in(&tmp));
    k.assert_fsck_clean();
}

/// Entries under `dir`, recursively (not following symlinks).
fn count_tree(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        n += 1;
        if entry.file_type().unwrap().is_dir() {
            n += count_tree(&entry.path());
        }
    }
    n
}

/// Live snapshot directories (named by a chain ID alone) and their entry counts.
fn live_snapshots(k: &Kiln) -> Vec<(String, usize)> {
    names_in(&k.root().join("snapshots"))
        .into_iter()
        .filter(|n| n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|n| {
            let count = count_tree(&k.root().join("snapshots").join(&n));
            (n, count)
        })
        .collect()
}

#[test]
fn a_prune_killed_while_deleting_a_snapshot_leaves_no_partial_one_under_its_name() {
    if !is_root() || !have_tool("strace") {
        return;
    }
    // Early in the deletion, in the middle (the reproducer), and near its end.
    for when in [2, 50, 250] {
        let k = Kiln::new();
        k.import_busybox("busybox:latest");
        let ls = ["run", "--rm", "--network", "none", "busybox", "sh", "-c", "find / -xdev | wc -l"];
        let files_before = k.ok(&ls);
        let full = live_snapshots(&k);
        assert_eq!(full.len(), 1, "run unpacked busybox's layer: {full:?}");
        assert!(full[0].1 > 250, "{full:?}");
        let killed = kill_at(&k, "unlinkat", when, &["image", "prune", "-a", "-f"]);
        assert!(!killed.status.success(), "when={when}: the prune was not killed");
        for (name, count) in live_snapshots(&k) {
            assert_eq!(count, full[0].1, "when={when}: snapshot {name} is partial under its live name");
        }
        // The same layer again: it must be unpacked whole, not taken from a half-deleted directory.
        k.import_busybox("busybox:latest");
        assert_eq!(k.ok(&ls), files_before, "when={when}");
        assert_eq!(live_snapshots(&k), full, "when={when}");
        k.assert_fsck_clean();
    }
}

/// Starts `kiln run ARGS` (a long sleep), waits until its container is recorded, and kills kiln.
fn kill_a_running_container(k: &Kiln, args: &[&str]) {
    let mut child = k.cmd(args).stdout(std::process::Stdio::null()).spawn().unwrap();
    let containers = k.root().join("containers");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        // Running: its record says so (a `run` killed before its container started leaves it
        // `Created`, which is the truth too, but not what this test is about).
        let running = names_in(&containers).iter().any(|c| {
            std::fs::read_to_string(containers.join(c).join("container.json"))
                .is_ok_and(|r| r.contains("\"status\": \"running\""))
        });
        if running {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the container never ran");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn ps_is_truthful_after_the_kiln_of_a_container_is_killed() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    kill_a_running_container(&k, &["run", "--rm", "--network", "none", "busybox", "sleep", "60"]);
    let ps = k.ok(&["ps", "-a"]);
    assert_eq!(ps.lines().count(), 1, "a killed --rm container is gone, not `Created`:\n{ps}");
    // Nothing but the lock of container names.
    let left: Vec<String> = names_in(&k.root().join("containers")).into_iter().filter(|n| n != ".lock").collect();
    assert!(left.is_empty(), "{left:?}");

    kill_a_running_container(&k, &["run", "--name", "kept", "--network", "none", "busybox", "sleep", "60"]);
    let ps = k.ok(&["ps", "-a"]);
    let row = ps.lines().find(|l| l.contains("kept")).unwrap_or_else(|| panic!("{ps}"));
    assert!(row.contains("Exited (137)"), "a killed container is reported as exited:\n{ps}");
    k.ok(&["rm", "kept"]);
    assert_eq!(k.ok(&["ps", "-a"]).lines().count(), 1);
}

/// A small tmpfs mounted at the test's store path, unmounted on drop.
struct SmallStoreFs(std::path::PathBuf);

impl SmallStoreFs {
    fn mount(k: &Kiln, size: &str) -> Option<SmallStoreFs> {
        std::fs::create_dir_all(k.root()).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "kiln-test-store"])
            .arg(k.root())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            eprintln!("skipping: cannot mount a tmpfs");
            return None;
        }
        Some(SmallStoreFs(k.root()))
    }

    /// Fills the file system to the last byte.
    fn fill(&self) {
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", self.0.join("filler").display()))
            .stderr(std::process::Stdio::null())
            .status();
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=1"])
            .arg(format!("of={}", self.0.join("filler-tail").display()))
            .stderr(std::process::Stdio::null())
            .status();
        let probe = std::fs::write(self.0.join("probe"), b"x");
        assert!(probe.is_err(), "the file system is not full");
    }
}

impl Drop for SmallStoreFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn rmi_and_prune_free_space_on_a_full_store() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    let Some(fs) = SmallStoreFs::mount(&k, "8m") else { return };
    k.import_busybox("busybox:latest");
    k.ok(&["tag", "busybox", "other:1"]);
    k.import_busybox("second:1");
    fs.fill();
    let out = k.ok(&["rmi", "other:1"]);
    assert!(out.contains("Untagged: other:1"), "{out}");
    let out = k.ok(&["rmi", "busybox"]);
    assert!(out.contains("Deleted:"), "{out}");
    fs.fill();
    let out = k.ok(&["image", "prune", "-a", "-f"]);
    assert!(out.contains("deleted:"), "{out}");
    assert_eq!(k.ok(&["images", "-q"]).trim(), "");
    std::fs::remove_file(k.root().join("filler")).unwrap();
    std::fs::remove_file(k.root().join("filler-tail")).unwrap();
    k.assert_fsck_clean();
}

#[test]
fn fsck_checks_snapshots_against_their_layers_and_repair_unpacks_them_again() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    std::fs::create_dir_all(k.path("ctx")).unwrap();
    std::fs::write(k.path("ctx/Dockerfile"), "FROM busybox\nRUN mkdir /d && echo hi > /d/f && rm /bin/vi\n").unwrap();
    k.ok(&["build", "--progress", "quiet", "-t", "built:1", k.path("ctx").to_str().unwrap()]);
    let ok = k.ok(&["system", "fsck", "--full"]);
    assert!(ok.contains("2 snapshots") && ok.contains("no problems"), "{ok}");
    let full = live_snapshots(&k);
    let busybox = full.iter().max_by_key(|(_, n)| *n).unwrap().0.clone();
    let snap = k.root().join("snapshots").join(&busybox);
    // What a crash in the old deleting code left: files gone, one changed in place.
    std::fs::remove_file(snap.join("bin/ls")).unwrap();
    std::fs::remove_file(snap.join("bin/cat")).unwrap();
    let sh = std::fs::read_link(snap.join("bin/sh")).ok();
    let victim = match &sh {
        Some(target) if target.is_absolute() => snap.join(target.strip_prefix("/").unwrap()),
        Some(target) => snap.join("bin").join(target),
        None => snap.join("bin/sh"),
    };
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&victim, &bytes).unwrap();

    let out = k.run(&["system", "fsck"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success(), "{text}");
    assert!(text.contains(&busybox) && text.contains("2 of ") && text.contains("missing"), "{text}");
    let out = k.run(&["system", "fsck", "--full"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("other content"), "{text}");
    let repaired = k.ok(&["system", "fsck", "--full", "--repair"]);
    assert!(repaired.contains("unpacked again") && repaired.contains("every problem repaired"), "{repaired}");
    assert_eq!(live_snapshots(&k), full);
    let clean = k.ok(&["system", "fsck", "--full"]);
    assert!(clean.contains("no problems"), "{clean}");
    let ls = k.ok(&["run", "--rm", "--network", "none", "built:1", "sh", "-c", "ls /bin/ls /bin/cat /d/f"]);
    assert_eq!(ls.lines().count(), 3, "{ls}");
}

#[test]
fn a_builder_prune_killed_while_deleting_cache_mounts_leaves_them_whole_or_gone() {
    if !is_root() || !have_tool("strace") {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    std::fs::create_dir_all(k.path("ctx")).unwrap();
    std::fs::write(
        k.path("ctx/Dockerfile"),
        "FROM busybox\nRUN --mount=type=cache,target=/c for i in $(seq 1 40); do echo $i > /c/f$i; done\n",
    )
    .unwrap();
    k.ok(&["build", "--progress", "quiet", "-t", "cached:1", k.path("ctx").to_str().unwrap()]);
    let mounts = k.root().join("cache-mounts");
    assert_eq!(count_tree(&mounts), 41, "one cache mount with 40 files");
    let killed = kill_at(&k, "unlinkat", 3, &["builder", "prune", "-a", "-f"]);
    assert!(!killed.status.success(), "the prune was not killed");
    if mounts.exists() {
        assert_eq!(count_tree(&mounts), 41, "a half-deleted cache mount is left under its live name");
    }
    k.ok(&["images"]);
    let doomed: Vec<String> = names_in(&k.root()).into_iter().filter(|n| n.contains("cache-mounts")).collect();
    assert!(doomed.is_empty(), "the next kiln removes what the kill left: {doomed:?}");
}

#[test]
fn an_older_kilns_work_dir_is_counted_by_df_reported_by_fsck_and_removed_by_repair() {
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let legacy = k.root().join("tmp/run-Ab12Cd/upper");
    std::fs::create_dir_all(&legacy).unwrap();
    std::fs::write(legacy.join("big"), vec![1u8; 3 << 20]).unwrap();
    let df = k.ok(&["system", "df"]);
    let row = df.lines().find(|l| l.starts_with("Temporary files")).unwrap_or_else(|| panic!("{df}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&fields[2..4], ["1", "0"], "one leftover, not held: {row}");
    assert!(fields[5].ends_with("MB"), "reclaimable: {row}");
    let out = k.run(&["system", "fsck"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!out.status.success() && text.contains("run-Ab12Cd"), "{text}");
    let repaired = k.ok(&["system", "fsck", "--repair"]);
    assert!(repaired.contains("removed"), "{repaired}");
    assert!(!k.root().join("tmp/run-Ab12Cd").exists());
    k.assert_fsck_clean();
}

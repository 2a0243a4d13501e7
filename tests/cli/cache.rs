//! Tests of the build cache (issue 5): what hits, what misses, and reproducible image IDs.

use std::os::unix::fs::PermissionsExt;

use crate::harness::*;

/// A store with busybox and a context; builds report which steps were cached.
pub(crate) struct CacheTest {
    pub k: Kiln,
}

impl CacheTest {
    pub fn new() -> CacheTest {
        let k = Kiln::new();
        let out = k
            .cmd(&["import", busybox_rootfs().to_str().unwrap(), "busybox:latest"])
            .env("SOURCE_DATE_EPOCH", "1600000000")
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::create_dir_all(k.path("ctx")).unwrap();
        CacheTest { k }
    }

    pub fn write(&self, path: &str, content: &str) {
        let full = self.k.path("ctx").join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, content).unwrap();
    }

    /// Builds and returns (image ID, names of the steps that were CACHED).
    pub fn build(&self, extra: &[&str]) -> (String, Vec<String>) {
        let ctx = self.k.path("ctx").to_str().unwrap().to_string();
        let iid = self.k.path("iid");
        let mut args = vec!["build", "--progress", "rawjson", "--iidfile", iid.to_str().unwrap(), "-t", "cached:1"];
        args.extend_from_slice(extra);
        args.push(&ctx);
        let out = self.k.run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        let mut cached = Vec::new();
        for line in stderr.lines() {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            for v in event["vertexes"].as_array().into_iter().flatten() {
                if v["cached"] == true {
                    let name = v["name"].as_str().unwrap_or("");
                    // "[2/4] COPY src /app/src" → "COPY"
                    cached
                        .push(name.split(']').nth(1).unwrap_or("").split_whitespace().next().unwrap_or("").to_string());
                }
            }
        }
        (std::fs::read_to_string(iid).unwrap(), cached)
    }

    /// The same build context in another test's store (a second CI machine).
    pub fn copy_context_to(&self, other: &CacheTest) {
        copy_tree(&self.k.path("ctx"), &other.k.path("ctx"));
    }
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

const DOCKERFILE: &str = "FROM busybox\nARG USED=one\nCOPY src /app/src\nRUN echo $USED > /used && find /app -type f | wc -l > /count\nENV DONE=yes\n";

pub(crate) fn cache_test() -> CacheTest {
    let t = CacheTest::new();
    t.write("Dockerfile", DOCKERFILE);
    t.write("src/a.txt", "a");
    t.write("src/b.txt", "b");
    t.write("unrelated.txt", "u");
    t.write("ignored.log", "i");
    t.write(".dockerignore", "*.log\n");
    t
}

#[test]
fn an_unchanged_rebuild_is_all_hits_and_the_same_image() {
    if !is_root() {
        return;
    }
    let t = cache_test();
    let (first, cached) = t.build(&[]);
    assert!(cached.is_empty(), "a cold build has no hits: {cached:?}");
    let (again, cached) = t.build(&[]);
    assert_eq!(again, first, "a fully cached rebuild gives the same image ID");
    assert_eq!(cached, ["ARG", "COPY", "RUN", "ENV"]);
    let (_, cached) = t.build(&["--no-cache"]);
    assert!(cached.is_empty(), "--no-cache runs everything: {cached:?}");
}

#[test]
fn unrelated_ignored_and_mtime_only_changes_hit() {
    if !is_root() {
        return;
    }
    let t = cache_test();
    let (first, _) = t.build(&[]);
    t.write("unrelated.txt", "changed but never copied");
    t.write("ignored.log", "changed but ignored");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options().write(true).open(t.k.path("ctx/src/a.txt")).unwrap().set_modified(old).unwrap();
    let (again, cached) = t.build(&[]);
    assert_eq!(cached, ["ARG", "COPY", "RUN", "ENV"], "touch, unrelated and ignored files must not miss");
    assert_eq!(again, first);
    // An unused build arg does not change anything either.
    let (_, cached) = t.build(&["--build-arg", "NOT_DECLARED=x"]);
    assert_eq!(cached, ["ARG", "COPY", "RUN", "ENV"]);
}

#[test]
fn content_mode_and_used_build_arg_changes_miss() {
    if !is_root() {
        return;
    }
    let t = cache_test();
    t.build(&[]);
    t.write("src/a.txt", "new content");
    let (_, cached) = t.build(&[]);
    assert_eq!(cached, ["ARG"], "a copied file's content changed: COPY and everything after miss");
    std::fs::set_permissions(t.k.path("ctx/src/b.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, cached) = t.build(&[]);
    assert_eq!(cached, ["ARG"], "a mode change misses");
    let (_, cached) = t.build(&["--build-arg", "USED=two"]);
    assert_eq!(cached, ["ARG", "COPY"], "a used build arg changes the RUN that sees it, not the COPY before it");
}

#[test]
fn source_date_epoch_builds_are_identical_across_stores() {
    if !is_root() {
        return;
    }
    // COPY, RUN (whose new files get the time they were made, clamped) and multi-stage.
    let dockerfile =
        "FROM busybox AS build\nCOPY src /src\nRUN mkdir /out && cat /src/* > /out/all && touch /out/made\n\
                      FROM busybox\nCOPY --from=build /out /out\nRUN ls -ln /out > /listing && rm /bin/false\n";
    let mut stores = Vec::new();
    let mut results = Vec::new();
    for _ in 0..2 {
        let t = CacheTest::new();
        t.write("Dockerfile", dockerfile);
        t.write("src/a", "A");
        t.write("src/b", "B");
        let (id, _) = t.build(&["--source-date-epoch", "1700000000"]);
        let archive = t.k.path("image.tar");
        t.k.ok(&["save", "-o", archive.to_str().unwrap(), "cached:1"]);
        let meta = t.k.path("meta.json");
        let ctx = t.k.path("ctx");
        t.k.ok(&[
            "build",
            "-q",
            "--source-date-epoch",
            "1700000000",
            "--metadata-file",
            meta.to_str().unwrap(),
            ctx.to_str().unwrap(),
        ]);
        let metadata: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta).unwrap()).unwrap();
        results.push((id, std::fs::read(&archive).unwrap(), metadata["containerimage.digest"].clone()));
        stores.push(t);
    }
    assert_eq!(results[0].0, results[1].0, "same image ID from two fresh stores");
    assert_eq!(results[0].2, results[1].2, "same manifest digest");
    assert!(results[0].1 == results[1].1, "kiln save archives differ byte for byte");
}

#[test]
fn builder_prune_forgets_the_cache_and_df_shows_it() {
    if !is_root() {
        return;
    }
    let t = cache_test();
    t.build(&[]);
    t.k.ok(&["rmi", "cached:1"]);
    let df = t.k.ok(&["system", "df"]);
    let line = df.lines().find(|l| l.starts_with("Build Cache")).unwrap().to_string();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_ne!(cells[2], "0", "records are counted: {df}");
    assert_ne!(cells[4], "0B", "the cache holds the removed image's layers: {df}");
    // The cache keeps the layers alive: a rebuild after rmi is all hits.
    let (_, cached) = t.build(&[]);
    assert_eq!(cached, ["ARG", "COPY", "RUN", "ENV"]);
    t.k.ok(&["rmi", "cached:1"]);
    let out = t.k.ok(&["builder", "prune", "-f"]);
    assert!(out.contains("Deleted build cache objects:") && out.contains("Total reclaimed space:"), "{out}");
    let (_, cached) = t.build(&[]);
    assert!(!cached.contains(&"COPY".to_string()), "pruned cache cannot hit: {cached:?}");
    t.k.ok(&["builder", "prune", "-a", "-f"]);
    t.k.assert_fsck_clean();
    assert!(t.k.fails(&["builder", "prune", "-f", "--filter", "colour=red"]).contains("invalid filter"));
}

#[test]
fn cache_exported_to_a_directory_makes_a_fresh_store_hit_everything() {
    if !is_root() {
        return;
    }
    let t = cache_test();
    t.write(
        "Dockerfile",
        "FROM busybox\nCOPY src /app/src\nRUN --mount=type=cache,target=/var/cache/app echo fetched >> /var/cache/app/log\nRUN cat /app/src/* > /all\n",
    );
    let dir = t.k.path("ci-cache");
    let to = format!("type=local,dest={}", dir.display());
    let (first, _) = t.build(&["--cache-to", &to]);
    assert!(dir.join("kiln-cache.json").exists());
    // A fresh store (a new CI machine) restores the directory and gets every step from it.
    let fresh = CacheTest::new();
    t.copy_context_to(&fresh);
    let from = format!("type=local,src={}", dir.display());
    let (again, cached) = fresh.build(&["--cache-from", &from]);
    assert_eq!(cached, ["COPY", "RUN", "RUN"], "every step is a hit");
    assert_eq!(again, first, "and the image is the same");
    // The cache mount's contents came along too.
    let log =
        std::fs::read_dir(fresh.k.root().join("cache-mounts")).unwrap().next().unwrap().unwrap().path().join("log");
    assert_eq!(std::fs::read_to_string(log).unwrap(), "fetched\n");
    // Exporting again writes no layer twice.
    let out = t.k.run(&[
        "build",
        "--progress",
        "plain",
        "--cache-to",
        &to,
        "-t",
        "cached:1",
        t.k.path("ctx").to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("0 new layers"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn check_reproducible_passes_a_deterministic_build_and_names_the_first_differing_file() {
    if !is_root() {
        return;
    }
    let t = cache_test();
    let ctx = t.k.path("ctx").to_str().unwrap().to_string();
    let out = t.k.ok(&["build", "--progress", "quiet", "--check-reproducible", &ctx]);
    assert!(out.starts_with("reproducible: both builds gave sha256:"), "{out}");
    t.write("Dockerfile", "FROM busybox\nCOPY src /src\nRUN cat /proc/sys/kernel/random/uuid > /random-id\n");
    let out = t.k.run(&["build", "--progress", "quiet", "--check-reproducible", &ctx]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOT reproducible") && text.contains("/random-id: content differs"), "{text}");
    assert_eq!(t.k.ok(&["images", "-q"]).lines().count(), 1, "only busybox: the throwaway builds tag nothing here");
}

//! Volumes as docker users use them: named and anonymous volumes, the image's VOLUMEs with their
//! content copied in, `--mount`, `volume create/ls/inspect/rm/prune`, `rm -v` (as root; they skip
//! without it).

use crate::harness::*;

fn image(k: &Kiln, tag: &str, dockerfile: &str) {
    let ctx = k.path(&format!("ctx-{}", tag.replace(':', "-")));
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), dockerfile).unwrap();
    k.ok(&["build", "-q", "-t", tag, ctx.to_str().unwrap()]);
}

fn names(k: &Kiln) -> Vec<String> {
    k.ok(&["volume", "ls", "-q"]).lines().map(str::to_string).collect()
}

#[test]
fn a_named_volume_keeps_data_across_containers() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    k.ok(&["run", "--rm", "-v", "notes:/notes", "busybox", "sh", "-c", "echo kept > /notes/a"]);
    assert_eq!(k.ok(&["run", "--rm", "-v", "notes:/n:ro", "busybox", "cat", "/n/a"]), "kept\n");
    let out = k.run(&["run", "--rm", "-v", "notes:/n:ro", "busybox", "touch", "/n/b"]);
    assert_ne!(out.status.code(), Some(0), ":ro is read-only");
    k.ok(&["run", "--rm", "--mount", "type=volume,source=notes,target=/m", "busybox", "test", "-f", "/m/a"]);
    let id = k.ok(&["create", "-v", "notes:/n:ro", "--mount", "type=volume,src=notes,dst=/m", "busybox", "true"]);
    let shown = k.ok(&[
        "inspect",
        "-f",
        "{{json .HostConfig.Binds}} {{json .HostConfig.Mounts}} {{range .Mounts}}{{.Name}}:{{.Destination}}:{{.RW}} {{end}}",
        id.trim(),
    ]);
    assert_eq!(
        shown.trim(),
        r#"["notes:/n:ro"] [{"ReadOnly":false,"Source":"notes","Target":"/m","Type":"volume"}] notes:/n:false notes:/m:true"#
    );
    k.ok(&["rm", id.trim()]);
    assert_eq!(names(&k), vec!["notes"], "--rm keeps a named volume");
    assert_eq!(k.ok(&["volume", "ls"]), "DRIVER    VOLUME NAME\nlocal     notes\n");
    let inspect: serde_json::Value = serde_json::from_str(&k.ok(&["volume", "inspect", "notes"])).unwrap();
    assert_eq!(inspect[0]["Name"], "notes");
    assert_eq!(inspect[0]["Driver"], "local");
    assert_eq!((&inspect[0]["Labels"], &inspect[0]["Scope"]), (&serde_json::json!({}), &serde_json::json!("local")));
    let mountpoint = inspect[0]["Mountpoint"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(format!("{mountpoint}/a")).unwrap(), "kept\n");
    k.ok(&["volume", "rm", "notes"]);
    assert!(names(&k).is_empty());
    k.assert_fsck_clean();
}

#[test]
fn the_images_volume_content_is_copied_into_a_new_volume() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    image(
        &k,
        "seeded:1",
        "FROM busybox\nRUN mkdir -p /data/sub && echo seed > /data/sub/file && ln -s /etc/passwd /data/link && chown -R 1000:1000 /data && chmod 0750 /data\nVOLUME /data\n",
    );
    // The image's VOLUME gets an anonymous volume, filled from the image.
    let out = k.ok(&[
        "run",
        "--name",
        "one",
        "seeded:1",
        "sh",
        "-c",
        "cat /data/sub/file; stat -c '%u %a' /data; readlink /data/link; echo new > /data/new",
    ]);
    assert_eq!(out, "seed\n1000 750\n/etc/passwd\n");
    let anon = names(&k);
    assert_eq!(anon.len(), 1, "{anon:?}");
    assert_eq!(anon[0].len(), 64);
    let labels = k.ok(&["volume", "inspect", "-f", "{{json .Labels}}", &anon[0]]);
    assert_eq!(labels.trim(), r#"{"com.docker.volume.anonymous":""}"#, "docker's mark of an anonymous volume");
    let vols = k.ok(&["inspect", "-f", "{{json .Config.Volumes}} {{(index .Mounts 0).Name}}", "one"]);
    assert_eq!(vols.trim(), format!("{{\"/data\":{{}}}} {}", anon[0]));
    // A named volume at that path is filled the same way, once; later content stays.
    k.ok(&["run", "--rm", "-v", "seeded:/data", "seeded:1", "sh", "-c", "echo changed > /data/sub/file"]);
    assert_eq!(k.ok(&["run", "--rm", "-v", "seeded:/data", "seeded:1", "cat", "/data/sub/file"]), "changed\n");
    // nocopy: an empty volume stays empty.
    assert_eq!(k.ok(&["run", "--rm", "-v", "bare:/data:nocopy", "seeded:1", "ls", "-A", "/data"]), "");
    // rm -v removes the container's anonymous volume, not the named ones.
    k.ok(&["rm", "-v", "one"]);
    let mut left = names(&k);
    left.sort();
    assert_eq!(left, vec!["bare", "seeded"]);
    // run --rm removes its anonymous volumes too.
    k.ok(&["run", "--rm", "-v", "/scratch", "busybox", "true"]);
    assert_eq!(names(&k).len(), 2);
    k.assert_fsck_clean();
}

#[test]
fn a_volume_in_use_is_not_removed_and_prune_takes_only_unused_anonymous_ones() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    assert_eq!(k.ok(&["volume", "create", "--label", "env=test", "kept"]), "kept\n");
    assert_eq!(k.ok(&["volume", "create", "kept"]), "kept\n", "creating an existing volume is fine");
    let id = k.ok(&["create", "-v", "kept:/k", "-v", "/anon", "busybox", "true"]);
    let id = id.trim();
    let err = k.fails(&["volume", "rm", "kept"]);
    assert_eq!(err.trim(), format!("Error: remove kept: volume is in use - [{id}]"));
    assert!(names(&k).contains(&"kept".to_string()));
    assert_eq!(k.ok(&["volume", "ls", "-q", "--filter", "label=env=test"]), "kept\n");
    assert_eq!(
        k.ok(&["volume", "ls", "--filter", "name=kep", "--format", "{{.Name}} {{.Driver}} {{.Labels}}"]),
        "kept local env=test\n"
    );
    assert_eq!(
        k.ok(&["volume", "ls", "--filter", "name=kept", "--format", "table {{.Name}}\t{{.Scope}}"]),
        "VOLUME NAME   SCOPE\nkept          local\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(k.ok(&["volume", "ls", "--filter", "name=kept", "--format", "json"]).trim()).unwrap();
    assert_eq!(json["Name"], "kept");
    assert_eq!(k.ok(&["volume", "ls", "-q", "--filter", "dangling=true"]), "");
    // In use: prune leaves everything.
    assert_eq!(k.ok(&["volume", "prune", "-f"]), "Total reclaimed space: 0B\n");
    assert_eq!(names(&k).len(), 2);
    k.ok(&["rm", id]);
    // Unused now: prune takes the anonymous one only; -a takes the named one too.
    let pruned = k.ok(&["volume", "prune", "-f"]);
    assert!(pruned.starts_with("Deleted Volumes:\n") && !pruned.contains("kept"), "{pruned}");
    assert_eq!(names(&k), vec!["kept"]);
    k.ok(&["volume", "prune", "-a", "-f"]);
    assert!(names(&k).is_empty());
    let err = k.fails(&["volume", "rm", "kept"]);
    assert_eq!(err.trim(), "Error: get kept: no such volume");
    k.ok(&["volume", "rm", "-f", "kept"]);
    k.assert_fsck_clean();
}

#[test]
fn hostile_volume_names_and_mount_options_get_one_error_line() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    k.import_busybox("busybox:latest");
    let before = k.store_state();
    for (args, wanted) in [
        (vec!["volume", "create", "../escape"], "includes invalid characters for a local volume name"),
        (vec!["volume", "create", "a/b"], "includes invalid characters for a local volume name"),
        (
            vec!["run", "--rm", "-v", "../x:/data", "busybox", "true"],
            "includes invalid characters for a local volume name",
        ),
        (vec!["run", "--rm", "-v", "..:/data", "busybox", "true"], "includes invalid characters"),
        (
            vec!["run", "--rm", "--mount", "type=volume,source=../../etc,target=/x", "busybox", "true"],
            "includes invalid characters",
        ),
        (
            vec!["run", "--rm", "--mount", "type=bind,source=/tmp,target=/x,colour=red", "busybox", "true"],
            "unexpected key 'colour' in 'colour=red'",
        ),
        (vec!["run", "--rm", "--mount", "type=bind,source=/tmp", "busybox", "true"], "target is required"),
        (vec!["run", "--rm", "--mount", "type=nfs,target=/x", "busybox", "true"], "unsupported mount type 'nfs'"),
        (vec!["run", "--rm", "-v", "/tmp:/data:bogus", "busybox", "true"], "unknown option 'bogus'"),
        (vec!["run", "--rm", "-v", "aa:/x", "-v", "bb:/x/", "busybox", "true"], "Duplicate mount point: /x/"),
        (vec!["volume", "inspect", "nosuch"], "get nosuch: no such volume"),
    ] {
        let out = k.run(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(wanted), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
    }
    assert!(!k.root().join("escape").exists() && !k.root().join("volumes/a").exists());
    assert!(k.ok(&["volume", "ls", "-q"]).is_empty());
    assert_eq!(k.store_state(), before, "the store is unchanged");
}

#[test]
fn concurrent_creates_of_one_volume_make_one() {
    if !is_root() {
        return;
    }
    let k = Kiln::new();
    let children: Vec<_> = (0..8)
        .map(|_| k.cmd(&["volume", "create", "shared"]).stdout(std::process::Stdio::piped()).spawn().unwrap())
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "shared\n");
    }
    assert_eq!(names(&k), vec!["shared"]);
    // What a create or rm killed half-way leaves (a temp or doomed dir nobody holds) goes with
    // the next change.
    let volumes = k.root().join("volumes");
    for leftover in [".half.kiln-tmp-999999-1-1", ".gone.kiln-doomed-999999-1-1"] {
        std::fs::create_dir_all(volumes.join(leftover).join("_data")).unwrap();
    }
    k.ok(&["volume", "create", "another"]);
    let entries: Vec<_> =
        std::fs::read_dir(k.root().join("volumes")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries.len(), 3, "the volumes and the lock, no leftovers: {entries:?}");
}

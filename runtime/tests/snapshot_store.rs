//! The snapshot store (`Snapshots`): layers unpacked once per chain ID and reused, concurrent
//! preparers (separate handles, as separate kiln processes would be) unpack each layer once,
//! corrupt blobs are refused and leave nothing behind, incomplete snapshots are removed on open
//! unless being unpacked right now, a RUN's upper dir is adopted by rename, and unused snapshots
//! are pruned unless leased. Run as root (whiteouts are 0/0 character devices); skipped otherwise.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};

mod common;

use common::*;
use kiln_cas::{Digest, LockMode, Store};
use kiln_runtime::snapshot::{chain_ids, commit_upper, hash_layer, DiffOptions, Snapshots, SnapshotsError};

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    store: Store,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("store");
    let store = Store::open(&root, LockMode::Shared).unwrap();
    Env { _tmp: tmp, root, store }
}

/// Layer 1: a base with a few files; layer 2 deletes one and adds one.
fn two_layers(store: &Store) -> Vec<Digest> {
    let l1 = Tar::default()
        .dir("etc/", 0o755)
        .file("etc/a", b"a1")
        .file("etc/b", b"b1")
        .dir("bin/", 0o755)
        .file_mode("bin/sh", b"#!", 0o4755, 0, 0)
        .finish();
    let l2 = Tar::default().file("etc/.wh.a", b"").file("etc/c", b"c2").finish();
    vec![store.put_bytes(&l1).unwrap(), store.put_bytes(&l2).unwrap()]
}

/// A layer of `n` files, so that unpacking it takes a moment.
fn big_layer(store: &Store, n: usize, tag: &str) -> Digest {
    let mut tar = Tar::default();
    tar.dir("many/", 0o755);
    for i in 0..n {
        tar.file(&format!("many/{tag}{i:05}"), tag.as_bytes());
    }
    store.put_bytes(&tar.finish()).unwrap()
}

fn snapshot_names(root: &Path) -> BTreeSet<String> {
    fs::read_dir(root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".lock") && !n.ends_with(".boot") && !n.ends_with(".layer") && !n.starts_with('.'))
        .collect()
}

#[test]
fn prepare_lowers_unpacks_once_and_reuses() {
    require_root!();
    let env = env();
    let diff_ids = two_layers(&env.store);
    let chains = chain_ids(&diff_ids);
    let snaps = Snapshots::open(&env.root).unwrap();
    let lowers = snaps.prepare_lowers(&env.store, &diff_ids).unwrap();
    assert_eq!(lowers, vec![snaps.path(&chains[1]), snaps.path(&chains[0])], "topmost first");
    assert_eq!(snaps.layers_unpacked(), 2);
    assert_eq!(fs::read(lowers[1].join("etc/a")).unwrap(), b"a1");
    assert!(is_whiteout(&lowers[0].join("etc/a")), "layer 2's deletion is an overlay whiteout");
    assert_eq!(fs::read(lowers[0].join("etc/c")).unwrap(), b"c2");
    assert!(!exists(&lowers[0].join("etc/b")), "a snapshot holds only its own layer");
    assert_eq!(lmeta(&lowers[1].join("bin/sh")).mode() & 0o7777, 0o4755);
    assert_eq!(lmeta(&env.root.join("snapshots")).mode() & 0o777, 0o700);
    let before: Vec<(u64, i64, i64)> = lowers
        .iter()
        .map(|p| lmeta(p))
        .chain([lmeta(&lowers[0].join("etc/c"))])
        .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
        .collect();

    // Same handle, and a new one (as another kiln process): nothing unpacked again.
    assert_eq!(snaps.prepare_lowers(&env.store, &diff_ids).unwrap(), lowers);
    let other = Snapshots::open(&env.root).unwrap();
    assert_eq!(other.prepare_lowers(&env.store, &diff_ids).unwrap(), lowers);
    // A prefix of the image reuses the bottom snapshot.
    assert_eq!(other.prepare_lowers(&env.store, &diff_ids[..1]).unwrap(), vec![lowers[1].clone()]);
    assert_eq!((snaps.layers_unpacked(), other.layers_unpacked()), (2, 0));
    let after: Vec<(u64, i64, i64)> = lowers
        .iter()
        .map(|p| lmeta(p))
        .chain([lmeta(&lowers[0].join("etc/c"))])
        .map(|m| (m.ino(), m.ctime(), m.ctime_nsec()))
        .collect();
    assert_eq!(before, after);
    assert!(other.prepare_lowers(&env.store, &[]).unwrap().is_empty());
}

#[test]
fn concurrent_preparers_unpack_each_layer_once() {
    require_root!();
    let env = env();
    let diff_ids = vec![big_layer(&env.store, 400, "a"), big_layer(&env.store, 400, "b")];
    let root = env.root.clone();
    let store = Arc::new(env.store);
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (root, store, barrier, diff_ids) = (root.clone(), store.clone(), barrier.clone(), diff_ids.clone());
            std::thread::spawn(move || {
                // Each thread has its own handle and its own lock file descriptions, as separate
                // processes would (flock locks belong to open file descriptions).
                let snaps = Snapshots::open(&root).unwrap();
                barrier.wait();
                let lowers = snaps.prepare_lowers(&store, &diff_ids).unwrap();
                (lowers, snaps.layers_unpacked())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(results.windows(2).all(|w| w[0].0 == w[1].0), "all get the same lowers");
    assert_eq!(results.iter().map(|r| r.1).sum::<u64>(), 2, "each layer unpacked exactly once");
    assert_eq!(fs::read_dir(results[0].0[0].join("many")).unwrap().count(), 400);
    let chains = chain_ids(&diff_ids);
    assert_eq!(snapshot_names(&root), chains.iter().map(|c| c.hex().to_string()).collect());
}

/// The unpacker of a layer leases it at once for a long-running container: a second preparer that
/// was waiting while it unpacked must not wait for that lease to end too (it used to block on the
/// exclusive lock for as long as the container ran).
#[test]
fn a_preparer_that_waited_for_an_unpack_is_not_held_by_the_unpackers_lease() {
    require_root!();
    let env = env();
    let diff_ids = vec![big_layer(&env.store, 6000, "slow")];
    let root = env.root.clone();
    let store = Arc::new(env.store);
    let (unpacked_tx, unpacked_rx) = std::sync::mpsc::channel();
    let (second_tx, second_rx) = std::sync::mpsc::channel();
    let first = {
        let (root, store, diff_ids) = (root.clone(), store.clone(), diff_ids.clone());
        std::thread::spawn(move || {
            let snaps = Snapshots::open(&root).unwrap();
            snaps.prepare_lowers(&store, &diff_ids).unwrap();
            let lease = snaps.lease(&chain_ids(&diff_ids)).unwrap();
            unpacked_tx.send(()).unwrap();
            // The "container" runs for a while, holding its lease.
            std::thread::sleep(std::time::Duration::from_secs(4));
            drop(lease);
        })
    };
    // Start the second while the first is unpacking (6000 files take a moment).
    std::thread::sleep(std::time::Duration::from_millis(20));
    let second = {
        let (root, store, diff_ids) = (root.clone(), store.clone(), diff_ids.clone());
        std::thread::spawn(move || {
            let snaps = Snapshots::open(&root).unwrap();
            let lowers = snaps.prepare_lowers(&store, &diff_ids).unwrap();
            second_tx.send((lowers, snaps.layers_unpacked())).unwrap();
        })
    };
    unpacked_rx.recv().unwrap();
    let (lowers, unpacked) = second_rx
        .recv_timeout(std::time::Duration::from_secs(2))
        .expect("the second preparer finished while the first one's lease is still held");
    assert_eq!(unpacked, 0, "the layer was unpacked once, by the first");
    assert_eq!(fs::read_dir(lowers[0].join("many")).unwrap().count(), 6000);
    first.join().unwrap();
    second.join().unwrap();
}

fn corrupt(store: &Store, digest: &Digest, edit: impl FnOnce(&mut Vec<u8>)) {
    let path = store.blob_path(digest);
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&path).unwrap();
    edit(&mut bytes);
    fs::write(&path, &bytes).unwrap();
}

#[test]
fn corrupt_blobs_are_refused_and_leave_no_snapshot() {
    require_root!();
    type Edit = fn(&mut Vec<u8>);
    let cases: [(&str, Edit); 4] = [
        ("content byte", |b| b[1024] ^= 1),         // etc/c's data: the tar still parses
        ("header byte", |b| b[0] ^= 0x20),          // first header's name: checksum fails
        ("truncated", |b| b.truncate(b.len() / 2)), // ends early
        ("appended", |b| b.extend_from_slice(&[0u8; 512])), // more zeros after the end
    ];
    for (name, edit) in cases {
        let env = env();
        let diff_ids = two_layers(&env.store);
        corrupt(&env.store, &diff_ids[1], edit);
        let snaps = Snapshots::open(&env.root).unwrap();
        let err = snaps.prepare_lowers(&env.store, &diff_ids).unwrap_err();
        assert!(matches!(err, SnapshotsError::Corrupt { .. }), "{name}: {err}");
        assert!(err.to_string().contains("does not match its digest"), "{name}: {err}");
        // The good bottom layer is kept; nothing of the bad one, complete or not.
        let chains = chain_ids(&diff_ids);
        assert_eq!(snapshot_names(&env.root), BTreeSet::from([chains[0].hex().to_string()]), "{name}");
        assert_eq!(snaps.layers_unpacked(), 1);
    }
    // A missing blob names its digest.
    let env = env();
    let missing = Digest::of(b"not stored");
    let err =
        Snapshots::open(&env.root).unwrap().prepare_lowers(&env.store, std::slice::from_ref(&missing)).unwrap_err();
    assert!(err.to_string().contains(&missing.to_string()), "{err}");
}

#[test]
fn open_removes_incomplete_snapshots_unless_being_unpacked() {
    require_root!();
    let env = env();
    let snaps_dir = env.root.join("snapshots");
    fs::create_dir_all(&snaps_dir).unwrap();
    let dead = Digest::of(b"dead").hex().to_string();
    let live = Digest::of(b"live").hex().to_string();
    for hex in [&dead, &live] {
        let dir = snaps_dir.join(format!("{hex}.incomplete"));
        fs::create_dir_all(dir.join("usr/bin")).unwrap();
        fs::write(dir.join("usr/bin/half"), b"half").unwrap();
    }
    fs::create_dir(snaps_dir.join("not-a-snapshot.incomplete")).unwrap();
    // Another process is unpacking `live`: it holds the lock.
    let lock =
        File::options().create(true).truncate(false).write(true).open(snaps_dir.join(format!("{live}.lock"))).unwrap();
    lock.lock().unwrap();
    let _snaps = Snapshots::open(&env.root).unwrap();
    assert!(!exists(&snaps_dir.join(format!("{dead}.incomplete"))), "crash leftover removed");
    assert!(exists(&snaps_dir.join(format!("{live}.incomplete"))), "in-progress unpack kept");
    assert!(exists(&snaps_dir.join("not-a-snapshot.incomplete")), "unknown names left alone");
    drop(lock);
    let _snaps = Snapshots::open(&env.root).unwrap();
    assert!(!exists(&snaps_dir.join(format!("{live}.incomplete"))));
}

#[test]
fn adopt_upper_makes_the_run_upper_the_next_snapshot() {
    require_root!();
    let env = env();
    let diff_ids = two_layers(&env.store);
    let snaps = Snapshots::open(&env.root).unwrap();
    let lowers = snaps.prepare_lowers(&env.store, &diff_ids[..1]).unwrap();
    let base_chain = chain_ids(&diff_ids[..1])[0].clone();

    // A RUN's upper dir (on the store's file system): a new file and a deletion.
    let upper = env.root.join("upper-1");
    fs::create_dir_all(upper.join("etc")).unwrap();
    fs::write(upper.join("etc/new"), b"made by RUN").unwrap();
    nix::sys::stat::mknod(&upper.join("etc/b"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
        .unwrap();
    let opts = DiffOptions { normalize_upper: true, source_date_epoch: Some(1_000), ..DiffOptions::default() };
    let (diff_id, _) = commit_upper(&env.store, &upper, &opts).unwrap();
    let upper_ino = lmeta(&upper).ino();
    let (chain, path) = snaps.adopt_upper(Some(&base_chain), &diff_id, &upper).unwrap();
    assert_eq!(chain, chain_ids(&[diff_ids[0].clone(), diff_id.clone()])[1]);
    assert!(!exists(&upper), "moved, not copied");
    assert_eq!(lmeta(&path).ino(), upper_ino);
    assert!(is_whiteout(&path.join("etc/b")));
    assert_eq!(lmeta(&path.join("etc/new")).mtime(), 1_000);

    // The image with that layer is prepared without unpacking anything.
    let other = Snapshots::open(&env.root).unwrap();
    let image = [diff_ids[0].clone(), diff_id.clone()];
    assert_eq!(other.prepare_lowers(&env.store, &image).unwrap(), vec![path.clone(), lowers[0].clone()]);
    assert_eq!(other.layers_unpacked(), 0);

    // The same layer made again (a concurrent build): the new upper is dropped, the snapshot kept.
    let upper2 = env.root.join("upper-2");
    fs::create_dir_all(upper2.join("etc")).unwrap();
    assert_eq!(snaps.adopt_upper(Some(&base_chain), &diff_id, &upper2).unwrap(), (chain.clone(), path.clone()));
    assert!(!exists(&upper2));
    assert_eq!(lmeta(&path).ino(), upper_ino);

    // A parent that is not there is refused, and the upper left where it is.
    let upper3 = env.root.join("upper-3");
    fs::create_dir(&upper3).unwrap();
    let err = snaps.adopt_upper(Some(&Digest::of(b"nope")), &diff_id, &upper3).unwrap_err();
    assert!(matches!(err, SnapshotsError::Missing(_)), "{err}");
    assert!(exists(&upper3));
}

#[test]
fn remove_unused_prunes_all_but_kept_and_leased() {
    require_root!();
    let env = env();
    let diff_ids = two_layers(&env.store);
    let other_image = vec![big_layer(&env.store, 50, "x")];
    let third_image = vec![big_layer(&env.store, 10, "y")];
    let snaps = Snapshots::open(&env.root).unwrap();
    snaps.prepare_lowers(&env.store, &diff_ids).unwrap();
    snaps.prepare_lowers(&env.store, &other_image).unwrap();
    snaps.prepare_lowers(&env.store, &third_image).unwrap();
    let keep: BTreeSet<String> = chain_ids(&diff_ids).iter().map(|c| c.hex().to_string()).collect();
    let third = chain_ids(&third_image);
    let lease = snaps.lease(&third).unwrap();
    let freed = snaps.remove_unused(&keep).unwrap();
    assert!(freed > 50 * 512, "freed {freed}");
    let mut expected = keep.clone();
    expected.insert(third[0].hex().to_string());
    assert_eq!(snapshot_names(&env.root), expected, "the leased snapshot is skipped");
    drop(lease);
    assert!(snaps.remove_unused(&keep).unwrap() > 0);
    assert_eq!(snapshot_names(&env.root), keep);
    // Lock files of removed snapshots are gone too; kept ones may stay.
    let locks: Vec<String> = fs::read_dir(env.root.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".lock"))
        .collect();
    assert!(locks.iter().all(|l| keep.contains(l.trim_end_matches(".lock"))), "{locks:?}");
    // Removed snapshots are unpacked again on demand.
    snaps.prepare_lowers(&env.store, &other_image).unwrap();
    assert!(snaps.path(&chain_ids(&other_image)[0]).join("many/x00049").exists());
    assert!(snaps.lease(&[Digest::of(b"absent")]).is_err());
}

#[test]
fn snapshots_of_an_earlier_boot_that_were_never_flushed_are_dropped_at_open() {
    if !is_root() {
        return;
    }
    let env = env();
    let diff_ids = two_layers(&env.store);
    let snaps = Snapshots::open(&env.root).unwrap();
    snaps.prepare_lowers(&env.store, &diff_ids).unwrap();
    let chains = chain_ids(&diff_ids);
    let marker = env.root.join("snapshots").join(format!("{}.boot", chains[1].hex()));
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
    assert_eq!(fs::read_to_string(&marker).unwrap().trim(), boot.trim(), "the commit recorded this boot");
    // Same boot: a reopen keeps everything (the page cache still holds the data).
    drop(snaps);
    Snapshots::open(&env.root).unwrap();
    assert_eq!(snapshot_names(&env.root).len(), 2);
    // Pretend the machine rebooted since: the unflushed snapshots go, and come back from the blobs.
    fs::write(&marker, "00000000-0000-0000-0000-000000000000").unwrap();
    fs::remove_file(env.root.join("snapshots/.boot-checked")).unwrap();
    let snaps = Snapshots::open(&env.root).unwrap();
    assert_eq!(snapshot_names(&env.root), BTreeSet::from([chains[0].hex().to_string()]));
    snaps.prepare_lowers(&env.store, &diff_ids).unwrap();
    assert_eq!(snaps.layers_unpacked(), 1, "only the dropped layer is unpacked again");
    assert_eq!(snapshot_names(&env.root).len(), 2);
}

#[test]
fn a_layer_kept_as_its_snapshot_gives_its_tar_again_and_survives_a_restart_only_if_whole() {
    require_root!();
    let env = env();
    kiln_runtime::snapshot::kept::install(&env.store);
    let diff_ids = two_layers(&env.store);
    let snaps = Snapshots::open(&env.root).unwrap();
    snaps.prepare_lowers(&env.store, &diff_ids[..1]).unwrap();
    let base_chain = chain_ids(&diff_ids[..1])[0].clone();
    let make_upper = |name: &str, text: &[u8]| {
        let upper = env.root.join(name);
        fs::create_dir_all(upper.join("etc")).unwrap();
        fs::write(upper.join("etc/new"), text).unwrap();
        fs::hard_link(upper.join("etc/new"), upper.join("etc/link")).unwrap();
        nix::sys::stat::mknod(&upper.join("etc/b"), nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::empty(), 0)
            .unwrap();
        upper
    };
    let opts = DiffOptions { source_date_epoch: Some(1_000), ..DiffOptions::default() };
    // The digest hashed without writing anything is the one a written blob gets.
    let twin = make_upper("twin", b"made by RUN");
    let (written, written_size) = commit_upper(&env.store, &twin, &opts).unwrap();
    let upper = make_upper("upper", b"made by RUN");
    let (diff_id, size) = hash_layer(&upper, &opts).unwrap();
    assert_eq!((&diff_id, size), (&written, written_size));
    let blob_bytes = fs::read(env.store.blob_path(&written)).unwrap();
    fs::remove_file(env.store.blob_path(&written)).unwrap();

    let (chain, path) = snaps.adopt_layer(Some(&base_chain), &diff_id, &upper, &opts).unwrap();
    env.store.defer_layer(&diff_id, size, &kiln_runtime::snapshot::kept::recipe(&chain)).unwrap();
    assert!(env.store.has_layer(&diff_id) && !env.store.has_blob(&diff_id));
    let kept = snaps.kept_layer(&chain).expect("recorded as the only copy");
    assert_eq!(kept.diff_id, diff_id);
    let mut again = Vec::new();
    snaps.write_kept_layer(&chain, &mut again).unwrap();
    assert_eq!(again, blob_bytes, "the same tar, byte for byte");

    // A restart since: a whole kept snapshot stays (checked, its boot marker dropped) ...
    let marker = env.root.join("snapshots").join(format!("{}.boot", chain.hex()));
    let checked = env.root.join("snapshots/.boot-checked");
    fs::write(&marker, "00000000-0000-0000-0000-000000000000").unwrap();
    fs::remove_file(&checked).unwrap();
    Snapshots::open(&env.root).unwrap();
    assert!(path.is_dir() && !marker.exists(), "kept after the check");
    assert!(env.store.has_layer(&diff_id));
    // ... and one whose data did not all reach the disk goes, so the layer reads as missing.
    fs::write(path.join("etc/new"), b"\0\0\0\0\0\0\0\0\0\0\0").unwrap();
    fs::write(&marker, "00000000-0000-0000-0000-000000000000").unwrap();
    // Scanned once per boot: a second open in the same boot does not look again ...
    Snapshots::open(&env.root).unwrap();
    assert!(path.is_dir());
    // ... the first open after a restart does.
    fs::write(&checked, "00000000-0000-0000-0000-000000000000").unwrap();
    Snapshots::open(&env.root).unwrap();
    assert!(!path.exists(), "a damaged sole copy is dropped");
    assert!(!env.store.has_layer(&diff_id));
    let err = env.store.open_blob(&diff_id).err().expect("nothing to make it from").to_string();
    assert!(err.contains(diff_id.hex()), "{err}");
    assert!(!env.store.has_blob(&diff_id));
}

#[test]
fn a_layer_index_is_the_layer_tar_with_file_contents_zeroed() {
    use std::io::Read;
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    fs::create_dir_all(upper.join("d/sub")).unwrap();
    fs::write(upper.join("d/a"), vec![7u8; 1000]).unwrap();
    fs::write(upper.join("d/empty"), b"").unwrap();
    fs::write(upper.join("d/sub/exact"), vec![1u8; 512]).unwrap();
    let long = "n".repeat(150);
    fs::write(upper.join("d").join(&long), b"long name: a PAX header").unwrap();
    fs::hard_link(upper.join("d/a"), upper.join("d/link")).unwrap();
    std::os::unix::fs::symlink("a", upper.join("d/sym")).unwrap();
    let opts = DiffOptions { source_date_epoch: Some(5), ..DiffOptions::default() };
    let mut tar = Vec::new();
    kiln_runtime::snapshot::diff_upper(&upper, &mut tar, &opts).unwrap();
    let mut index = kiln_runtime::snapshot::layer_index(&upper, &opts).unwrap();
    assert_eq!(index.len(), tar.len() as u64);
    let mut read = Vec::new();
    index.read_to_end(&mut read).unwrap();
    // Where they differ, the index has zeros and the tar has file bytes.
    let differing: Vec<usize> = (0..tar.len()).filter(|&i| tar[i] != read[i]).collect();
    assert!(differing.iter().all(|&i| read[i] == 0), "only contents are left out");
    assert_eq!(differing.len(), 1000 + 512 + "long name: a PAX header".len());
    // Listed the same way: every entry, with the same offsets.
    let list = |bytes: &[u8]| -> Vec<(String, u64, u64)> {
        let mut archive = tar::Archive::new(std::io::Cursor::new(bytes.to_vec()));
        archive
            .entries_with_seek()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().to_string_lossy().into_owned(), e.size(), e.raw_file_position())
            })
            .collect()
    };
    assert_eq!(list(&read), list(&tar));
}

//! Property tests of the layer applier (THREATS §6 items 4 and 10), as root:
//! - `hostile_sequences_stay_inside`: random sequences of entries built from hostile names and
//!   link targets (`..`, `/`, the victim's absolute path, whiteouts, symlink chains). Whatever the
//!   applier does with them (apply or refuse), it must not panic, and the `victim/` tree beside the
//!   snapshot must be unchanged with nothing new next to it.
//! - `layer_roundtrip`: a random consistent file tree written as a layer and applied must come
//!   back exactly: types, contents, link targets, modes (setuid/setgid/sticky), owners, mtimes, and
//!   hardlinks sharing an inode.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

// ---- hostile sequences -------------------------------------------------------------------------

const NAMES: &[&str] =
    &["a", "b", "..", ".", "", "victim", ".wh.a", ".wh.b", ".wh..", ".wh..wh..opq", "{V}", "/", "file", "ro"];
const TARGETS: &[&str] = &[
    "..",
    "/",
    "../..",
    "../../..",
    "{V}",
    "{V}/file",
    "{V}/ro",
    "a",
    "a/b",
    "../victim",
    "/victim/file",
    ".",
    "b/..",
];

#[derive(Debug, Clone)]
enum Op {
    File(String, u32),
    Dir(String, u32),
    Symlink(String, String),
    Hardlink(String, String),
    Fifo(String),
    CharDev(String),
}

fn name_strategy() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(NAMES), 1..4).prop_map(|parts| parts.join("/"))
}

fn target_strategy() -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(TARGETS).prop_map(str::to_string), name_strategy()]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let mode = prop::sample::select(vec![0o777u32, 0o4755, 0o000, 0o644]);
    prop_oneof![
        3 => (name_strategy(), mode.clone()).prop_map(|(n, m)| Op::File(n, m)),
        2 => (name_strategy(), mode).prop_map(|(n, m)| Op::Dir(n, m)),
        3 => (name_strategy(), target_strategy()).prop_map(|(n, t)| Op::Symlink(n, t)),
        2 => (name_strategy(), target_strategy()).prop_map(|(n, t)| Op::Hardlink(n, t)),
        1 => name_strategy().prop_map(Op::Fifo),
        1 => name_strategy().prop_map(Op::CharDev),
    ]
}

fn build_hostile(fx: &Fixture, ops: &[Op]) -> Vec<u8> {
    let v = fx.victim_abs();
    let fill = |s: &str| s.replace("{V}", &v);
    let mut tar = Tar::default();
    for op in ops {
        match op {
            Op::File(n, m) => tar.file_mode(&fill(n), b"pwned", *m, 0, 0),
            Op::Dir(n, m) => tar.dir(&fill(n), *m),
            Op::Symlink(n, t) => tar.symlink(&fill(n), &fill(t)),
            Op::Hardlink(n, t) => tar.hardlink(&fill(n), &fill(t)),
            Op::Fifo(n) => tar.node(&fill(n), b'6', (0, 0), 0o666),
            Op::CharDev(n) => tar.node(&fill(n), b'3', (1, 3), 0o666),
        };
    }
    tar.finish()
}

#[test]
fn hostile_sequences_stay_inside() {
    require_root!();
    let applied = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config { cases: 300, failure_persistence: None, ..Config::default() });
    runner
        .run(&prop::collection::vec(op_strategy(), 1..16), |ops| {
            let fx = Fixture::new();
            let tar = build_hostile(&fx, &ops);
            // Applied or refused: either way nothing outside may change. Twice: the second pass
            // goes through whatever the first one left.
            for _ in 0..2 {
                match fx.apply(&tar) {
                    Ok(_) => applied.fetch_add(1, Ordering::Relaxed),
                    Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                };
            }
            fx.check_outside();
            Ok(())
        })
        .unwrap();
    let (applied, refused) = (applied.into_inner(), refused.into_inner());
    eprintln!("hostile sequences: {applied} applied, {refused} refused");
    assert!(applied > 100, "too few sequences applied ({applied}) for the property to mean much");
}

#[test]
fn random_bytes_never_panic() {
    require_root!();
    let mut runner = TestRunner::new(Config { cases: 200, failure_persistence: None, ..Config::default() });
    let seed = {
        let fx = Fixture::new();
        build_hostile(
            &fx,
            &[
                Op::Symlink("a".into(), "{V}".into()),
                Op::File("a/file".into(), 0o644),
                Op::Dir("b".into(), 0o755),
                Op::File("b/.wh.c".into(), 0o644),
            ],
        )
    };
    runner
        .run(&prop::collection::vec((0..2048usize, any::<u8>()), 0..24), |mutations| {
            let fx = Fixture::new();
            let mut tar = seed.clone();
            for (at, byte) in mutations {
                let at = at % tar.len();
                tar[at] = byte;
            }
            let _ = fx.apply(&tar);
            fx.check_outside();
            Ok(())
        })
        .unwrap();
}

// ---- round trip --------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Node {
    Dir {
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    },
    File {
        data: Vec<u8>,
        mode: u32,
        uid: u64,
        gid: u64,
        mtime: u64,
    },
    Symlink {
        target: String,
        uid: u64,
        mtime: u64,
    },
    /// A hardlink to the n-th regular file (in path order) before it, if any.
    Hardlink {
        nth: usize,
    },
}

fn node_strategy() -> impl Strategy<Value = Node> {
    let dir_mode = prop::sample::select(vec![0o755u32, 0o700, 0o1777, 0o2775, 0o555]);
    let file_mode = prop::sample::select(vec![0o644u32, 0o4755, 0o600, 0o2711, 0o000, 0o6755]);
    let mtime = 0u64..4_000_000_000;
    prop_oneof![
        (dir_mode, 0u64..4, 0u64..4, mtime.clone()).prop_map(|(mode, uid, gid, mtime)| Node::Dir {
            mode,
            uid,
            gid,
            mtime
        }),
        (prop::collection::vec(any::<u8>(), 0..3000), file_mode, 0u64..4, 0u64..4, mtime.clone())
            .prop_map(|(data, mode, uid, gid, mtime)| Node::File { data, mode, uid, gid, mtime }),
        (prop::sample::select(TARGETS), 0u64..4, mtime).prop_map(|(target, uid, mtime)| Node::Symlink {
            target: target.to_string(),
            uid,
            mtime
        }),
        (0usize..8).prop_map(|nth| Node::Hardlink { nth }),
    ]
}

fn tree_strategy() -> impl Strategy<Value = BTreeMap<String, Node>> {
    let path = prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 1..4).prop_map(|p| p.join("/"));
    prop::collection::vec((path, node_strategy()), 1..24).prop_map(|entries| {
        // Keep a consistent tree: every parent of an entry is a directory in the tree.
        let mut tree: BTreeMap<String, Node> = BTreeMap::new();
        for (path, node) in entries {
            if tree.contains_key(&path) {
                continue;
            }
            let mut ok = true;
            let mut prefix = String::new();
            let parts: Vec<&str> = path.split('/').collect();
            for part in &parts[..parts.len() - 1] {
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(part);
                match tree.get(&prefix) {
                    Some(Node::Dir { .. }) | None => {}
                    Some(_) => ok = false,
                }
            }
            if !ok || tree.keys().any(|k| k.starts_with(&format!("{path}/"))) && !matches!(node, Node::Dir { .. }) {
                continue;
            }
            tree.insert(path, node);
        }
        // Parents not listed become explicit 0755 directories.
        let paths: Vec<String> = tree.keys().cloned().collect();
        for path in paths {
            let parts: Vec<&str> = path.split('/').collect();
            for i in 1..parts.len() {
                let prefix = parts[..i].join("/");
                tree.entry(prefix).or_insert(Node::Dir { mode: 0o755, uid: 0, gid: 0, mtime: 1 });
            }
        }
        tree
    })
}

/// Resolves hardlinks to the path of an earlier regular file, dropping those without one.
fn resolve_links(tree: &BTreeMap<String, Node>) -> BTreeMap<String, (Node, Option<String>)> {
    let mut files: Vec<String> = Vec::new();
    let mut out = BTreeMap::new();
    for (path, node) in tree {
        match node {
            Node::Hardlink { nth } => {
                if !files.is_empty() {
                    out.insert(path.clone(), (node.clone(), Some(files[nth % files.len()].clone())));
                }
            }
            Node::File { .. } => {
                files.push(path.clone());
                out.insert(path.clone(), (node.clone(), None));
            }
            _ => {
                out.insert(path.clone(), (node.clone(), None));
            }
        }
    }
    out
}

fn build_tree(tree: &BTreeMap<String, (Node, Option<String>)>) -> Vec<u8> {
    let mut tar = Tar::default();
    for (path, (node, link)) in tree {
        let name = path.as_bytes();
        match node {
            Node::Dir { mode, uid, gid, mtime } => {
                tar.header(H { name, typeflag: b'5', mode: *mode, uid: *uid, gid: *gid, mtime: *mtime, ..H::default() })
            }
            Node::File { data, mode, uid, gid, mtime } => {
                tar.header(H { name, data, mode: *mode, uid: *uid, gid: *gid, mtime: *mtime, ..H::default() })
            }
            Node::Symlink { target, uid, mtime } => tar.header(H {
                name,
                typeflag: b'2',
                mode: 0o777,
                link: target.as_bytes(),
                uid: *uid,
                mtime: *mtime,
                ..H::default()
            }),
            Node::Hardlink { .. } => tar.hardlink(path, link.as_ref().unwrap()),
        };
    }
    tar.finish()
}

fn check_tree(dest: &Path, tree: &BTreeMap<String, (Node, Option<String>)>) {
    let mut seen = Vec::new();
    let mut stack = vec![dest.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path.clone());
            }
            seen.push(path.strip_prefix(dest).unwrap().to_str().unwrap().to_string());
        }
    }
    seen.sort();
    assert_eq!(seen, tree.keys().cloned().collect::<Vec<_>>(), "the set of paths");
    for (path, (node, link)) in tree {
        let md = lmeta(&dest.join(path));
        match node {
            Node::Dir { mode, uid, gid, mtime } => {
                assert!(md.is_dir(), "{path}");
                assert_eq!(
                    (md.mode() & 0o7777, u64::from(md.uid()), u64::from(md.gid()), md.mtime() as u64),
                    (*mode, *uid, *gid, *mtime),
                    "{path}"
                );
            }
            Node::File { data, mode, uid, gid, mtime } => {
                assert!(md.is_file(), "{path}");
                assert_eq!(&fs::read(dest.join(path)).unwrap(), data, "{path}");
                assert_eq!(
                    (md.mode() & 0o7777, u64::from(md.uid()), u64::from(md.gid()), md.mtime() as u64),
                    (*mode, *uid, *gid, *mtime),
                    "{path}"
                );
            }
            Node::Symlink { target, uid, mtime } => {
                assert!(md.file_type().is_symlink(), "{path}");
                assert_eq!(fs::read_link(dest.join(path)).unwrap(), Path::new(target), "{path}");
                assert_eq!((u64::from(md.uid()), md.mtime() as u64), (*uid, *mtime), "{path}");
            }
            Node::Hardlink { .. } => {
                let target = lmeta(&dest.join(link.as_ref().unwrap()));
                assert_eq!(md.ino(), target.ino(), "{path} links to {link:?}");
            }
        }
    }
}

#[test]
fn layer_roundtrip() {
    require_root!();
    let mut runner = TestRunner::new(Config { cases: 150, failure_persistence: None, ..Config::default() });
    runner
        .run(&tree_strategy(), |tree| {
            let fx = Fixture::new();
            let tree = resolve_links(&tree);
            let tar = build_tree(&tree);
            fx.apply(&tar).unwrap();
            check_tree(&fx.dest, &tree);
            fx.check_outside();
            Ok(())
        })
        .unwrap();
}

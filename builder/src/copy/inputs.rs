//! What a COPY or ADD reads from the build context, found with the same selection rules as the
//! copy itself (globs, directories, symlinks followed inside the context, `.dockerignore`), but
//! without reading any content: the build cache hashes it, and only when its stat changed.

use std::path::{Path, PathBuf};

pub use super::sources::StatStamp;
use super::sources::{self, ContextTree, Node, NodeKind};
use super::CopyError;
use crate::context::dockerignore::IgnoreMatcher;
use crate::plan::{CopyOp, CopySource};

/// One object a step reads from the context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextInput {
    /// Path relative to the context root as the step names it (before symlinks in it resolve).
    pub named: Vec<u8>,
    /// `f` file, `d` directory, `l` symlink, `c`/`b` device, `p` fifo, `o` other.
    pub kind: char,
    pub mode: u32,
    /// Symlink target or device numbers; empty otherwise.
    pub detail: Vec<u8>,
    /// The host file to hash, for regular files, and what `stat` said of it.
    pub host: Option<PathBuf>,
    pub stamp: Option<StatStamp>,
}

/// Every context object `op` would read. `--parents` and anything this cannot enumerate falls
/// back to the whole (non-ignored) context, which is never wrong, only less precise.
pub fn context_inputs(dir: &Path, ignore: &IgnoreMatcher, op: &CopyOp) -> Result<Vec<ContextInput>, CopyError> {
    let tree = ContextTree { root: dir, ignore, with_xattrs: false };
    let mut inputs = Vec::new();
    let no_skip = |_: &[u8], _: bool| false;
    for source in &op.sources {
        let CopySource::Path(pattern) = source else { continue };
        let matches = if op.parents { Vec::new() } else { sources::expand(&tree, pattern)? };
        if op.parents {
            for (rel, node) in sources::walk(&tree, b"", &no_skip)? {
                inputs.push(input(&tree, rel.clone(), &rel, &node));
            }
            continue;
        }
        for m in matches {
            inputs.push(input(&tree, m.named.clone(), &m.resolved, &m.node));
            if m.node.is_dir() {
                for (rel, node) in sources::walk(&tree, &m.resolved, &no_skip)? {
                    let named = sources::join(&m.named, &rel);
                    let resolved = sources::join(&m.resolved, &rel);
                    inputs.push(input(&tree, named, &resolved, &node));
                }
            }
        }
    }
    inputs.sort_by(|a, b| a.named.cmp(&b.named));
    inputs.dedup();
    Ok(inputs)
}

fn input(tree: &ContextTree, named: Vec<u8>, resolved: &[u8], node: &Node) -> ContextInput {
    let (kind, detail, host) = match &node.kind {
        NodeKind::File { .. } => ('f', Vec::new(), Some(tree.root.join(sources::display(resolved)))),
        NodeKind::Dir => ('d', Vec::new(), None),
        NodeKind::Symlink(target) => ('l', target.clone(), None),
        NodeKind::Char(a, b) => ('c', format!("{a}:{b}").into_bytes(), None),
        NodeKind::Block(a, b) => ('b', format!("{a}:{b}").into_bytes(), None),
        NodeKind::Fifo => ('p', Vec::new(), None),
        NodeKind::Other => ('o', Vec::new(), None),
    };
    ContextInput { named, kind, mode: node.mode, detail, host, stamp: node.stamp }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(sources: &[&str]) -> CopyOp {
        CopyOp::from_context(sources, "/dst/")
    }

    #[test]
    fn lists_only_what_the_copy_selects_and_not_ignored_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/sub")).unwrap();
        std::fs::write(dir.path().join("src/a.rs"), "a").unwrap();
        std::fs::write(dir.path().join("src/sub/b.rs"), "b").unwrap();
        std::fs::write(dir.path().join("src/skip.log"), "x").unwrap();
        std::fs::write(dir.path().join("unrelated"), "u").unwrap();
        let ignore = IgnoreMatcher::parse("**/*.log\n", ".dockerignore").unwrap();
        let inputs = context_inputs(dir.path(), &ignore, &op(&["src"])).unwrap();
        let names: Vec<String> = inputs.iter().map(|i| String::from_utf8(i.named.clone()).unwrap()).collect();
        assert_eq!(names, ["src", "src/a.rs", "src/sub", "src/sub/b.rs"]);
        assert!(inputs[1].host.as_ref().unwrap().ends_with("src/a.rs"));
        assert!(context_inputs(dir.path(), &ignore, &op(&["missing"])).is_err());
    }
}

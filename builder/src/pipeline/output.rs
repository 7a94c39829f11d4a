//! The output directory `out/<cluster>/`: artifacts appear under their final
//! names only when complete, and `SHA256SUMS` (written last) is the mark
//! of a finished directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::artifact::checksums::{parse_sums, render_sums, SHA256SUMS as SUMS_FILE};

/// A node's artifacts, complete, in a private directory beside the final one.
pub struct PendingArtifacts {
    pub dir: PathBuf,
    /// (file name, sha256), in the order they are moved into place.
    pub files: Vec<(String, String)>,
}

/// Creates the private directory for a node's artifacts inside `out_dir`
/// (same filesystem, so the final renames are atomic). A leftover from an
/// interrupted build of the same node is removed first.
pub fn pending_dir(out_dir: &Path, node: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("creating the output directory {}", out_dir.display()))?;
    let dir = out_dir.join(format!(".partial-{node}"));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("removing the leftover {}", dir.display()))?;
    }
    std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Moves a node's artifacts into place and updates `SHA256SUMS`.
///
/// Order matters: the old sums file goes first (the directory stops looking
/// finished), then each artifact is renamed over its old version, then the
/// new sums file is renamed in.
pub fn publish(out_dir: &Path, pending: PendingArtifacts) -> Result<()> {
    let sums_path = out_dir.join(SUMS_FILE);
    let mut sums = read_sums(&sums_path)?;
    if sums_path.exists() {
        std::fs::remove_file(&sums_path)
            .with_context(|| format!("removing {}", sums_path.display()))?;
    }
    for (name, sha) in &pending.files {
        let from = pending.dir.join(name);
        let to = out_dir.join(name);
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        sums.insert(name.clone(), sha.clone());
    }
    // Drop entries whose files are gone (e.g. removed by hand).
    sums.retain(|name, _| out_dir.join(name).is_file());
    let tmp = out_dir.join(format!(".{SUMS_FILE}.tmp"));
    std::fs::write(&tmp, render_sums(&sums))
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &sums_path)
        .with_context(|| format!("moving {} into place", sums_path.display()))?;
    std::fs::remove_dir(&pending.dir)
        .with_context(|| format!("removing {}", pending.dir.display()))?;
    Ok(())
}

fn read_sums(path: &Path) -> Result<BTreeMap<String, String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(parse_sums(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_replaces_and_keeps_other_nodes() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path();
        std::fs::write(out.join("a.img"), "old a").unwrap();
        std::fs::write(out.join("b.img"), "b").unwrap();
        std::fs::write(
            out.join(SUMS_FILE),
            "111  a.img\n222  b.img\n333  gone.img\n",
        )
        .unwrap();
        let dir = pending_dir(out, "a").unwrap();
        std::fs::write(dir.join("a.img"), "new a").unwrap();
        publish(
            out,
            PendingArtifacts {
                dir: dir.clone(),
                files: vec![("a.img".into(), "999".into())],
            },
        )
        .unwrap();
        assert_eq!(std::fs::read_to_string(out.join("a.img")).unwrap(), "new a");
        assert_eq!(
            std::fs::read_to_string(out.join(SUMS_FILE)).unwrap(),
            "999  a.img\n222  b.img\n"
        );
        assert!(!dir.exists());
    }
}

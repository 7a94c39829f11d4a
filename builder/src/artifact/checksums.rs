//! SHA-256 of artifacts, and SHA256SUMS files that `sha256sum -c` accepts.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

/// Name of the checksum list written by `write_sha256sums`.
pub const SHA256SUMS: &str = "SHA256SUMS";

/// Hex SHA-256 of a file, read in 1 MiB chunks (images are gigabytes).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        File::open(path).with_context(|| format!("opening {} to hash it", path.display()))?;
    sha256_reader(&mut file).with_context(|| format!("reading {} to hash it", path.display()))
}

pub(crate) fn sha256_reader(reader: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The `sha256sum` line for one file: `<hex>  <name>`. Names with newlines or
/// backslashes would need sha256sum's escaping; we never produce such names,
/// so they are refused rather than escaped.
pub fn sha256sum_line(hex: &str, name: &str) -> Result<String> {
    ensure!(
        !name.is_empty() && !name.contains(['\n', '\r', '\\']),
        "cannot list `{}` in a SHA256SUMS file (empty, or has a newline or backslash)",
        name.escape_debug()
    );
    Ok(format!("{hex}  {name}\n"))
}

/// Writes `dir/SHA256SUMS` listing `names` (paths relative to `dir`), sorted
/// by name so the file is the same whatever order the caller used.
pub fn write_sha256sums(dir: &Path, names: &[&str]) -> Result<()> {
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut text = String::new();
    for name in sorted {
        let hex = sha256_file(&dir.join(name))?;
        text.push_str(&sha256sum_line(&hex, name)?);
    }
    let out = dir.join(SHA256SUMS);
    let mut tmp = super::artifact_temp(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(&out)
        .with_context(|| format!("moving {} into place", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::CommandExt;
    use std::process::Command;

    #[test]
    fn known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Spans several 1 MiB reads.
        std::fs::write(&p, vec![7u8; (3 << 20) + 5]).unwrap();
        let want = hex::encode(Sha256::digest(vec![7u8; (3 << 20) + 5]));
        assert_eq!(sha256_file(&p).unwrap(), want);
    }

    #[test]
    fn sums_file_is_sorted_and_sha256sum_accepts_it() {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in [("b.img", "b"), ("a.bmap", "a"), ("c.tar.gz", "c")] {
            std::fs::write(dir.path().join(name), data).unwrap();
        }
        write_sha256sums(dir.path(), &["c.tar.gz", "a.bmap", "b.img"]).unwrap();
        let text = std::fs::read_to_string(dir.path().join(SHA256SUMS)).unwrap();
        let names: Vec<_> = text
            .lines()
            .map(|l| l.split_once("  ").unwrap().1)
            .collect();
        assert_eq!(names, ["a.bmap", "b.img", "c.tar.gz"]);
        Command::new("sha256sum")
            .args(["-c", "--strict", SHA256SUMS])
            .current_dir(dir.path())
            .run_checked()
            .unwrap();
    }

    #[test]
    fn refuses_names_needing_escapes() {
        assert!(sha256sum_line("00", "a\nb").is_err());
        assert!(sha256sum_line("00", "a\\b").is_err());
        assert!(write_sha256sums(Path::new("/nonexistent"), &["x"]).is_err());
    }
}

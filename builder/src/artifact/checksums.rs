//! SHA-256 of artifacts, and SHA256SUMS files that `sha256sum -c` accepts:
//! written here for the build, parsed here for `flash` and `verify`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use thiserror::Error;

use crate::util::digest::sha256_file;

/// Name of the checksum list written by `write_sha256sums`.
pub const SHA256SUMS: &str = "SHA256SUMS";

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

/// `sha256sum -c` format, sorted by name.
pub fn render_sums(sums: &BTreeMap<String, String>) -> String {
    sums.iter()
        .map(|(name, sha)| format!("{sha}  {name}\n"))
        .collect()
}

pub fn parse_sums(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sha, name)| (name.trim_start_matches('*').to_string(), sha.to_string()))
        .collect()
}

/// A file does not match its entry in a SHA256SUMS file. Typed: `flash`
/// refuses on it, `verify` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{file} does not match its entry in {sums}: expected sha256 {expected}, got {actual}")]
pub struct SumsMismatch {
    pub file: String,
    pub sums: String,
    pub expected: String,
    pub actual: String,
}

/// A directory's SHA256SUMS, as read back by `flash` and `verify`.
pub struct Sums {
    pub path: PathBuf,
    entries: BTreeMap<String, String>,
}

impl Sums {
    /// `dir/SHA256SUMS`, or None when there is none (a copied image).
    pub fn load(dir: &Path) -> Result<Option<Sums>> {
        let path = dir.join(SHA256SUMS);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(Sums::parse(path, &text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The entries of `text`, read from `path` (named in mismatches).
    pub fn parse(path: PathBuf, text: &str) -> Sums {
        Sums {
            path,
            entries: parse_sums(text),
        }
    }

    pub fn entry(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(String::as_str)
    }

    /// Compares `actual` with the entry for `name` (no entry: nothing to check).
    pub fn check(&self, name: &str, actual: &str) -> Result<(), SumsMismatch> {
        match self.entry(name) {
            Some(expected) if !expected.eq_ignore_ascii_case(actual) => Err(SumsMismatch {
                file: name.to_string(),
                sums: self.path.display().to_string(),
                expected: expected.to_string(),
                actual: actual.to_string(),
            }),
            _ => Ok(()),
        }
    }

    /// Hashes `file` (small: the bmap) and checks it now.
    pub fn check_file(&self, file: &Path) -> Result<()> {
        let name = file_name(file);
        if self.entry(&name).is_some() {
            let actual = sha256_file(file)?;
            self.check(&name, &actual)?;
        }
        Ok(())
    }
}

/// The name SHA256SUMS lists a file under: its last component.
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::CommandExt;
    use std::process::Command;

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

    #[test]
    fn sums_round_trip() {
        let mut m = BTreeMap::new();
        m.insert("x.img".to_string(), "ab".to_string());
        assert_eq!(parse_sums(&render_sums(&m)), m);
    }

    #[test]
    fn a_mismatch_names_both_sums() {
        let s = Sums::parse(PathBuf::from("out/SHA256SUMS"), "aa  n.img\n");
        assert_eq!(s.check("n.img", "AA"), Ok(()));
        assert_eq!(s.check("unlisted", "zz"), Ok(()));
        let err = s.check("n.img", "ab").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("expected sha256 aa, got ab") && msg.contains("out/SHA256SUMS"),
            "{msg}"
        );
    }
}

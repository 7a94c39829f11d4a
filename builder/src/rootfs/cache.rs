//! Is a cached base still what was made? Each entry `base/<key>/` holds the
//! tree (`rootfs/`), what made it (`record.json`), the tree's content
//! manifest (`content.txt`, see `digest`) and a seal (`seal.json`) with the
//! sha256 of both files. A base is used only when the seal, the record, the
//! manifest, the tree and the record's package list (against the tree's
//! dpkg status) all agree.
//!
//! This catches damage and edits (a deleted or emptied file, a changed
//! mode, an edited package version); it is no defence against someone who
//! rewrites the seal too: the cache is as trusted as the account that owns it.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::digest;
use crate::debian::packages::{parse_dpkg_status, InstalledPackage};

pub const TREE: &str = "rootfs";
pub const RECORD: &str = "record.json";
pub const CONTENT: &str = "content.txt";
pub const SEAL: &str = "seal.json";

#[derive(Debug, Serialize, Deserialize)]
struct Seal {
    version: u32,
    record_sha256: String,
    content_sha256: String,
    entries: usize,
}

/// What checking a cache entry found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Sound,
    /// Made by a habuild that recorded no digest: cannot be vouched for.
    Unsealed,
    /// What differs, one line each.
    Damaged(Vec<String>),
}

/// Records the content manifest and seal of the entry at `entry` (its
/// `rootfs/` and `record.json` complete).
pub fn seal(entry: &Path) -> Result<()> {
    let manifest = digest::tree_manifest(&entry.join(TREE))?;
    let record = read(&entry.join(RECORD))?;
    let seal = Seal {
        version: 1,
        record_sha256: hex::encode(Sha256::digest(&record)),
        content_sha256: hex::encode(Sha256::digest(manifest.as_bytes())),
        entries: manifest.lines().count(),
    };
    write(&entry.join(CONTENT), manifest.as_bytes())?;
    write(
        &entry.join(SEAL),
        &serde_json::to_vec_pretty(&seal).context("serialising the seal")?,
    )
}

/// Checks the entry at `entry` against its seal.
pub fn check(entry: &Path) -> Result<Health> {
    let started = Instant::now();
    let seal_path = entry.join(SEAL);
    if !seal_path.is_file() {
        return Ok(Health::Unsealed);
    }
    let seal: Seal = match serde_json::from_slice(&read(&seal_path)?) {
        Ok(s) => s,
        Err(e) => return Ok(Health::Damaged(vec![format!("{SEAL} does not parse: {e}")])),
    };
    let record = read(&entry.join(RECORD))?;
    if hex::encode(Sha256::digest(&record)) != seal.record_sha256 {
        return Ok(Health::Damaged(vec![format!(
            "{RECORD} was changed after the base was made"
        )]));
    }
    let recorded = read(&entry.join(CONTENT))?;
    if hex::encode(Sha256::digest(&recorded)) != seal.content_sha256 {
        return Ok(Health::Damaged(vec![format!(
            "{CONTENT} was changed after the base was made"
        )]));
    }
    let recorded = String::from_utf8_lossy(&recorded);
    let now = digest::tree_manifest(&entry.join(TREE))?;
    log::debug!(
        "checked the content digest of {} ({} entries) in {:.2?}",
        entry.display(),
        seal.entries,
        started.elapsed()
    );
    if now != recorded {
        return Ok(Health::Damaged(digest::differences(&recorded, &now, 10)));
    }
    // The tree is as made, so its dpkg status is too: the record's
    // package list (what <node>.json reports) must be the one it gives.
    let status_path = entry.join(TREE).join("var/lib/dpkg/status");
    let status = std::fs::read_to_string(&status_path)
        .with_context(|| format!("reading {}", status_path.display()))?;
    let listed = record_packages(&record)
        .with_context(|| format!("parsing {}", entry.join(RECORD).display()))?;
    if listed != parse_dpkg_status(&status) {
        return Ok(Health::Damaged(vec![format!(
            "the package list in {RECORD} is not what the tree's dpkg status says"
        )]));
    }
    Ok(Health::Sound)
}

/// One base of the cache, found on disk.
#[derive(Debug, Clone)]
pub struct Entry {
    pub key: String,
    pub path: PathBuf,
}

/// The bases under `cache_dir/base/` (leftover `.partial` bootstraps not
/// included), by key.
pub fn entries(cache_dir: &Path) -> Result<Vec<Entry>> {
    let base = cache_dir.join("base");
    let Ok(listing) = std::fs::read_dir(&base) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in listing {
        let e = e.with_context(|| format!("listing {}", base.display()))?;
        let key = e.file_name().to_string_lossy().into_owned();
        if e.path().is_dir() && !key.contains('.') {
            out.push(Entry {
                key,
                path: e.path(),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Leftover bootstraps (`base/<key>.partial`).
pub fn partials(cache_dir: &Path) -> Result<Vec<Entry>> {
    let base = cache_dir.join("base");
    let Ok(listing) = std::fs::read_dir(&base) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for e in listing {
        let e = e.with_context(|| format!("listing {}", base.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(key) = name.strip_suffix(".partial") {
            out.push(Entry {
                key: key.to_string(),
                path: e.path(),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// The key's lock (`base/<key>.lock`, the one `base::ensure_base` holds
/// while it checks or bootstraps), when no build holds it.
pub fn try_lock_key(cache_dir: &Path, key: &str) -> Result<Option<std::fs::File>> {
    let path = cache_dir.join("base").join(format!("{key}.lock"));
    let f = std::fs::File::create(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(f.try_lock().is_ok().then_some(f))
}

fn record_packages(record: &[u8]) -> Result<Vec<InstalledPackage>> {
    #[derive(Deserialize)]
    struct Packages {
        packages: Vec<InstalledPackage>,
    }
    Ok(serde_json::from_slice::<Packages>(record)?.packages)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.41-12\n\nPackage: systemd\nStatus: install ok installed\nArchitecture: amd64\nVersion: 257.9-1\n";

    /// A small entry as `base::ensure_base` leaves it, sealed.
    fn entry() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join(TREE);
        std::fs::create_dir_all(tree.join("var/lib/dpkg")).unwrap();
        std::fs::create_dir_all(tree.join("usr/lib/systemd")).unwrap();
        std::fs::write(tree.join("var/lib/dpkg/status"), STATUS).unwrap();
        std::fs::write(tree.join("usr/lib/systemd/systemd"), b"systemd").unwrap();
        std::fs::write(tree.join("usr/lib/libc.so.6"), b"libc").unwrap();
        let record = serde_json::json!({
            "key": "k",
            "recipe_version": 3,
            "spec_json": "{}",
            "packages": parse_dpkg_status(STATUS),
        });
        std::fs::write(
            t.path().join(RECORD),
            serde_json::to_vec_pretty(&record).unwrap(),
        )
        .unwrap();
        seal(t.path()).unwrap();
        t
    }

    fn damaged(e: &Path) -> Vec<String> {
        match check(e).unwrap() {
            Health::Damaged(d) => d,
            other => panic!("not noticed: {other:?}"),
        }
    }

    #[test]
    fn a_sealed_entry_is_sound_and_an_old_one_unsealed() {
        let e = entry();
        assert_eq!(check(e.path()).unwrap(), Health::Sound);
        std::fs::remove_file(e.path().join(SEAL)).unwrap();
        assert_eq!(check(e.path()).unwrap(), Health::Unsealed);
    }

    #[test]
    fn damage_to_the_tree_is_named() {
        let e = entry();
        std::fs::remove_file(e.path().join("rootfs/usr/lib/systemd/systemd")).unwrap();
        std::fs::write(e.path().join("rootfs/usr/lib/libc.so.6"), b"").unwrap();
        let d = damaged(e.path());
        assert!(
            d.iter().any(|l| l == "/usr/lib/systemd/systemd: missing"),
            "{d:?}"
        );
        assert!(
            d.iter()
                .any(|l| l.starts_with("/usr/lib/libc.so.6: size 4 → 0")),
            "{d:?}"
        );
    }

    #[test]
    fn an_edited_package_version_is_caught() {
        let e = entry();
        let record = e.path().join(RECORD);
        let text = std::fs::read_to_string(&record).unwrap();
        assert!(text.contains("257.9-1"));
        std::fs::write(&record, text.replace("257.9-1", "257.9-2")).unwrap();
        let d = damaged(e.path());
        assert!(d[0].contains("record.json was changed"), "{d:?}");

        // Resealed by hand: the tree's dpkg status still disagrees.
        seal(e.path()).unwrap();
        let d = damaged(e.path());
        assert!(d[0].contains("dpkg status"), "{d:?}");
    }

    #[test]
    fn an_edited_manifest_or_seal_is_caught() {
        let e = entry();
        let content = e.path().join(CONTENT);
        let text = std::fs::read_to_string(&content).unwrap();
        std::fs::write(
            &content,
            text.replace("usr/lib/libc.so.6", "usr/lib/libc.so.7"),
        )
        .unwrap();
        assert!(damaged(e.path())[0].contains("content.txt was changed"));
        std::fs::write(e.path().join(SEAL), "{").unwrap();
        assert!(damaged(e.path())[0].contains("does not parse"));
    }
}

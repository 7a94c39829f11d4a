//! The content digest of a cached base root filesystem: one line per
//! entry (type, mode, owner, size, sha256 or link target, path), sorted by
//! path, written when the base is made and compared before every use, so a
//! file deleted, emptied or changed in the cache is noticed instead of
//! built into an image.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// What one entry of the tree is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink(Vec<u8>),
    /// Block or character device, FIFO or socket: its type letter and rdev.
    Special(char, u64),
}

#[derive(Debug, Clone)]
struct Entry {
    rel: Vec<u8>,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    id: (u64, u64),
    nlink: u64,
}

/// The manifest of `root`: every entry below it (not `root` itself), one
/// line each, sorted by path. Regular files are hashed on every core.
pub fn tree_manifest(root: &Path) -> Result<String> {
    let entries = walk(root)?;
    let hashes = hash_files(root, &entries)?;
    let mut out = String::new();
    for (e, hash) in entries.iter().zip(hashes) {
        let (letter, what) = match &e.kind {
            Kind::File => ('f', hash.unwrap_or_default()),
            Kind::Dir => ('d', "-".to_string()),
            Kind::Symlink(target) => ('l', escape(target)),
            Kind::Special(letter, rdev) => (*letter, format!("rdev:{rdev:x}")),
        };
        out.push_str(&format!(
            "{letter} {:04o} {} {} {} {what} {}\n",
            e.mode & 0o7777,
            e.uid,
            e.gid,
            if matches!(e.kind, Kind::File) {
                e.size
            } else {
                0
            },
            escape(&e.rel)
        ));
    }
    Ok(out)
}

fn walk(root: &Path) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    for item in walker {
        let item = item.with_context(|| format!("walking {}", root.display()))?;
        let path = item.path();
        let m = std::fs::symlink_metadata(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let ft = m.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            let target = std::fs::read_link(path)
                .with_context(|| format!("reading the link {}", path.display()))?;
            Kind::Symlink(target.as_os_str().as_bytes().to_vec())
        } else {
            let letter = if ft.is_block_device() {
                'b'
            } else if ft.is_char_device() {
                'c'
            } else if ft.is_fifo() {
                'p'
            } else {
                's'
            };
            Kind::Special(letter, m.rdev())
        };
        let rel = path
            .strip_prefix(root)
            .context("walkdir returned a path outside the tree")?;
        entries.push(Entry {
            rel: rel.as_os_str().as_bytes().to_vec(),
            kind,
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            size: m.len(),
            id: (m.dev(), m.ino()),
            nlink: m.nlink(),
        });
    }
    Ok(entries)
}

/// The sha256 of every regular file (None for other entries); hard links
/// are read once.
fn hash_files(root: &Path, entries: &[Entry]) -> Result<Vec<Option<String>>> {
    let mut first_of: HashMap<(u64, u64), usize> = HashMap::new();
    let mut jobs = Vec::new();
    let mut alias = vec![None; entries.len()];
    for (i, e) in entries.iter().enumerate() {
        if e.kind != Kind::File {
            continue;
        }
        if e.nlink > 1 {
            if let Some(&first) = first_of.get(&e.id) {
                alias[i] = Some(first);
                continue;
            }
            first_of.insert(e.id, i);
        }
        jobs.push(i);
    }
    // Largest first, so no core is left with one big file at the end.
    jobs.sort_by_key(|&i| std::cmp::Reverse(entries[i].size));
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let results: Vec<Result<Vec<(usize, String)>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    let mut buf = vec![0u8; 1 << 18];
                    loop {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = jobs.get(j) else {
                            return Ok(done);
                        };
                        let path = root.join(std::ffi::OsStr::from_bytes(&entries[i].rel));
                        done.push((i, sha256_with(&path, &mut buf)?));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a hashing thread panicked")))
            })
            .collect()
    });
    let mut hashes: Vec<Option<String>> = vec![None; entries.len()];
    for r in results {
        for (i, h) in r? {
            hashes[i] = Some(h);
        }
    }
    for (i, a) in alias.iter().enumerate() {
        if let Some(first) = a {
            hashes[i] = hashes[*first].clone();
        }
    }
    Ok(hashes)
}

fn sha256_with(path: &PathBuf, buf: &mut [u8]) -> Result<String> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    loop {
        let n = f
            .read(buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// Path bytes as one token: printable ASCII but space and backslash as
/// is, everything else `\xNN` (names may hold anything but '/' and NUL).
fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

/// How two manifests differ, for a message: at most `limit` lines, each
/// naming a path ("missing", "added", or the fields that changed).
pub fn differences(recorded: &str, now: &str, limit: usize) -> Vec<String> {
    let parse = |text: &str| -> std::collections::BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| {
                l.rsplit_once(' ')
                    .map(|(f, p)| (p.to_string(), f.to_string()))
            })
            .collect()
    };
    let (a, b) = (parse(recorded), parse(now));
    let mut out = Vec::new();
    for (path, fields) in &a {
        match b.get(path) {
            None => out.push(format!("/{path}: missing")),
            Some(f) if f != fields => out.push(format!("/{path}: {}", changed(fields, f))),
            _ => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        out.push(format!("/{path}: not in the recorded base"));
    }
    let total = out.len();
    out.truncate(limit);
    if total > limit {
        out.push(format!("... and {} more", total - limit));
    }
    out
}

fn changed(was: &str, now: &str) -> String {
    let names = ["type", "mode", "owner", "group", "size", "content"];
    let diffs: Vec<String> = names
        .iter()
        .zip(was.split(' ').zip(now.split(' ')))
        .filter(|(_, (a, b))| a != b)
        .map(|(n, (a, b))| match *n {
            "content" => "content (sha256 or link target) differs".to_string(),
            _ => format!("{n} {a} → {b}"),
        })
        .collect();
    diffs.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
        std::fs::write(r.join("usr/lib/systemd/systemd"), vec![7u8; 300_000]).unwrap();
        std::fs::write(r.join("usr/lib/libc.so.6"), b"\x7fELF libc").unwrap();
        std::fs::hard_link(r.join("usr/lib/libc.so.6"), r.join("usr/lib/hard")).unwrap();
        std::os::unix::fs::symlink("lib/libc.so.6", r.join("usr/libc-link")).unwrap();
        std::fs::write(r.join("usr/odd name\n"), b"x").unwrap();
        t
    }

    #[test]
    fn lists_every_entry_once_sorted_with_hashes() {
        let t = tree();
        let m = tree_manifest(t.path()).unwrap();
        let lines: Vec<&str> = m.lines().collect();
        assert_eq!(lines.len(), 8, "{m}");
        let paths: Vec<&str> = lines
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
        let libc = hex::encode(Sha256::digest(b"\x7fELF libc"));
        assert!(m.contains(&format!(" 9 {libc} usr/lib/libc.so.6\n")), "{m}");
        assert!(m.contains(&format!(" 9 {libc} usr/lib/hard\n")), "{m}");
        assert!(m.contains(" lib/libc.so.6 usr/libc-link\n"), "{m}");
        assert!(m.contains("usr/odd\\x20name\\x0a\n"), "{m}");
        assert_eq!(m, tree_manifest(t.path()).unwrap(), "stable");
    }

    #[test]
    fn deleted_emptied_and_chmodded_files_are_named() {
        let t = tree();
        let r = t.path();
        let before = tree_manifest(r).unwrap();
        std::fs::remove_file(r.join("usr/lib/systemd/systemd")).unwrap();
        std::fs::write(r.join("usr/lib/libc.so.6"), b"").unwrap();
        std::fs::set_permissions(r.join("usr/lib"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        std::fs::write(r.join("usr/new"), b"n").unwrap();
        let after = tree_manifest(r).unwrap();
        assert_ne!(before, after);
        let d = differences(&before, &after, 10);
        let has = |s: &str| d.iter().any(|l| l.contains(s));
        assert!(has("/usr/lib/systemd/systemd: missing"), "{d:?}");
        assert!(has("/usr/lib/libc.so.6: size 9 → 0, content"), "{d:?}");
        assert!(has("/usr/lib: mode 0755 → 0700"), "{d:?}");
        assert!(has("/usr/new: not in the recorded base"), "{d:?}");
        let short = differences(&before, &after, 2);
        assert_eq!(short.len(), 3);
        assert!(short[2].starts_with("... and "), "{short:?}");
    }

    #[test]
    fn same_size_changed_content_is_caught() {
        let t = tree();
        let before = tree_manifest(t.path()).unwrap();
        std::fs::write(t.path().join("usr/lib/libc.so.6"), b"\x7fELF libC").unwrap();
        let d = differences(&before, &tree_manifest(t.path()).unwrap(), 10);
        assert!(
            d.iter()
                .any(|l| l.starts_with("/usr/lib/libc.so.6: content")),
            "{d:?}"
        );
    }
}

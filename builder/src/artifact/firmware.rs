//! Firmware bundle: the boot partition's tree as a deterministic .tar.gz, for
//! updating the boot partition of a running system without reflashing.
//!
//! Deterministic: entries in sorted order, mtime = the epoch, uid/gid 0 with
//! no user or group names, the mode from the file, a gzip header without
//! name or time. A `SHA256SUMS` member (last) lists every file.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::checksums::{sha256sum_line, SHA256SUMS};

/// Writes `out` (atomically: temp file + rename) from `boot_tree`. Symlinks
/// to files are stored as the files, matching what the FAT partition gets.
/// Errors name the bundle and the step (a full disk shows up mid-stream).
pub fn write_firmware_bundle(boot_tree: &Path, out: &Path, epoch: i64) -> Result<()> {
    write_bundle(boot_tree, out, epoch)
        .with_context(|| format!("writing the firmware bundle {}", out.display()))
}

fn write_bundle(boot_tree: &Path, out: &Path, epoch: i64) -> Result<()> {
    let mtime = u64::try_from(epoch)
        .with_context(|| format!("SOURCE_DATE_EPOCH {epoch} is before 1970"))?;
    ensure!(
        !boot_tree.join(SHA256SUMS).exists(),
        "{} already has a {SHA256SUMS}, which would clash with the bundle's own",
        boot_tree.display()
    );
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = super::artifact_temp(dir).with_context(|| {
        format!(
            "creating a temporary file in {} for the firmware bundle",
            dir.display()
        )
    })?;
    let gz = GzBuilder::new()
        .mtime(0)
        .write(BufWriter::new(tmp.as_file()), Compression::default());
    let mut tar = tar::Builder::new(gz);

    let mut sums = Vec::new();
    let walk = walkdir::WalkDir::new(boot_tree)
        .min_depth(1)
        .sort_by_file_name();
    for entry in walk {
        let entry = entry.with_context(|| format!("walking {}", boot_tree.display()))?;
        let rel = entry
            .path()
            .strip_prefix(boot_tree)
            .context("walkdir returned a path outside the tree")?;
        let Some(name) = rel.to_str() else {
            bail!("{} is not valid UTF-8", entry.path().display());
        };
        // Follows symlinks: the target's type, mode and content are stored.
        let meta = fs::metadata(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        let mut header = Header::new_gnu();
        header.set_mtime(mtime);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(meta.permissions().mode() & 0o7777);
        if meta.is_dir() {
            ensure!(
                !entry.path_is_symlink(),
                "{} is a symlink to a directory",
                entry.path().display()
            );
            header.set_entry_type(EntryType::Directory);
            header.set_size(0);
            tar.append_data(&mut header, format!("{name}/"), io::empty())
        } else if meta.is_file() {
            let file = File::open(entry.path())
                .with_context(|| format!("opening {}", entry.path().display()))?;
            let mut reader = HashingReader {
                inner: file,
                hasher: Sha256::new(),
            };
            header.set_entry_type(EntryType::Regular);
            header.set_size(meta.len());
            let added = tar.append_data(&mut header, name, &mut reader);
            sums.push((name.to_owned(), hex::encode(reader.hasher.finalize())));
            added
        } else {
            bail!(
                "{} is not a regular file or directory",
                entry.path().display()
            );
        }
        .with_context(|| format!("adding {} to the firmware bundle", entry.path().display()))?;
    }

    sums.sort();
    let mut listing = String::new();
    for (name, hex) in &sums {
        listing.push_str(&sha256sum_line(hex, name)?);
    }
    let mut header = Header::new_gnu();
    header.set_mtime(mtime);
    header.set_mode(0o644);
    header.set_entry_type(EntryType::Regular);
    header.set_size(listing.len() as u64);
    tar.append_data(&mut header, SHA256SUMS, listing.as_bytes())
        .context("adding SHA256SUMS to the firmware bundle")?;

    let gz = tar
        .into_inner()
        .context("finishing the firmware tar stream")?;
    let buffered = gz.finish().context("finishing the firmware gzip stream")?;
    buffered
        .into_inner()
        .map_err(|e| e.into_error())
        .context("flushing the firmware bundle")?;
    tmp.persist(out)
        .with_context(|| format!("moving the firmware bundle into place at {}", out.display()))?;
    Ok(())
}

/// Hashes what tar reads, so each file is read once.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::CommandExt;
    use std::os::unix::fs::symlink;
    use std::process::Command;

    fn make_tree(root: &Path) {
        fs::create_dir_all(root.join("overlays")).unwrap();
        fs::write(root.join("config.txt"), "arm_64bit=1\n").unwrap();
        fs::write(root.join("overlays/b.dtbo"), "b").unwrap();
        fs::write(root.join("overlays/a.dtbo"), "a").unwrap();
        fs::write(root.join("start4.elf"), vec![1u8; 300_000]).unwrap();
        fs::set_permissions(root.join("start4.elf"), fs::Permissions::from_mode(0o600)).unwrap();
        symlink("config.txt", root.join("linked.txt")).unwrap();
    }

    #[test]
    fn bundle_is_deterministic_and_self_checking() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, t2) = (dir.path().join("t1"), dir.path().join("t2"));
        make_tree(&t1);
        // A second copy made later: different mtimes, inodes and ctimes.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        make_tree(&t2);
        let (o1, o2) = (dir.path().join("a.tar.gz"), dir.path().join("b.tar.gz"));
        write_firmware_bundle(&t1, &o1, 1_700_000_000).unwrap();
        write_firmware_bundle(&t2, &o2, 1_700_000_000).unwrap();
        assert!(
            fs::read(&o1).unwrap() == fs::read(&o2).unwrap(),
            "bundles differ"
        );

        let listing = Command::new("tar")
            .args(["--numeric-owner", "--full-time", "-tvzf"])
            .arg(&o1)
            .env("TZ", "UTC")
            .output_checked()
            .unwrap();
        let lines: Vec<&str> = listing.lines().collect();
        assert_eq!(lines.len(), 7, "{listing}");
        assert!(
            lines
                .iter()
                .all(|l| l.contains(" 0/0 ") && l.contains("2023-11-14 22:13:20")),
            "{listing}"
        );
        let elf = lines.iter().find(|l| l.ends_with(" start4.elf")).unwrap();
        assert!(
            elf.starts_with("-rw------- ") && elf.contains(" 300000 "),
            "mode and size kept: {elf}"
        );
        assert!(
            lines[0].ends_with(" config.txt") && lines[6].ends_with(" SHA256SUMS"),
            "{listing}"
        );

        let x = dir.path().join("x");
        fs::create_dir(&x).unwrap();
        Command::new("tar")
            .arg("-xzf")
            .arg(&o1)
            .arg("-C")
            .arg(&x)
            .run_checked()
            .unwrap();
        let sums = fs::read_to_string(x.join(SHA256SUMS)).unwrap();
        assert_eq!(sums.lines().count(), 5, "{sums}");
        Command::new("sha256sum")
            .args(["-c", "--strict", SHA256SUMS])
            .current_dir(&x)
            .run_checked()
            .unwrap();
        assert_eq!(
            fs::read_to_string(x.join("linked.txt")).unwrap(),
            "arm_64bit=1\n"
        );
    }

    /// A full disk (a 64 KiB tmpfs, as root) must name the bundle and the step.
    #[test]
    fn a_full_disk_names_the_bundle_and_the_step() {
        if !crate::host::setup::is_root().unwrap_or(false) {
            eprintln!("skipped: mounting a small tmpfs needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("boot");
        fs::create_dir(&tree).unwrap();
        // Incompressible, so the bundle cannot fit.
        let mut block = Sha256::digest(b"seed").to_vec();
        let mut data = Vec::new();
        while data.len() < 400_000 {
            block = Sha256::digest(&block).to_vec();
            data.extend_from_slice(&block);
        }
        fs::write(tree.join("kernel8.img"), &data).unwrap();
        let small = dir.path().join("small");
        fs::create_dir(&small).unwrap();
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&small)
            .run_checked()
            .unwrap();
        let out = small.join("node-firmware.tar.gz");
        let result = write_firmware_bundle(&tree, &out, 0);
        Command::new("umount").arg(&small).run_checked().unwrap();
        let msg = format!("{:#}", result.unwrap_err());
        assert!(
            msg.contains(&out.display().to_string()) && msg.contains("kernel8.img"),
            "{msg}"
        );
        assert!(msg.contains("No space left on device"), "{msg}");
    }

    #[test]
    fn refuses_a_tree_with_its_own_sha256sums() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(SHA256SUMS), "").unwrap();
        assert!(write_firmware_bundle(dir.path(), &dir.path().join("o.tgz"), 0).is_err());
    }
}

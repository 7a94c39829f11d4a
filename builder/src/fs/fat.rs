//! FAT32 from a staged directory tree, placed at a byte offset inside a disk
//! image without mounts or loop devices: mkfs.vfat and mtools build it in a
//! temporary file next to the image, which is then copied in sparsely.
//!
//! Why not format in place (`mkfs.vfat --offset`, mtools `img@@offset`)?
//! mtools 4.0.32 fails with "Error reading FAT" when the file is much larger
//! than the FAT32 inside it (a 64 MiB filesystem in a 300 MiB file already
//! fails), so in place only works for toy images. The copy costs little:
//! only written blocks move.
//!
//! Determinism: `mkfs.vfat --invariant` fixes every time/random field, then
//! `mlabel -N` sets our volume id (in both boot sectors); mtools stamps every
//! entry with SOURCE_DATE_EPOCH (TZ=UTC, because FAT stores local time); and
//! entries are created in byte-sorted name order.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

use crate::util::CommandExt;

/// Most files mcopy gets per invocation, to stay far below ARG_MAX.
const MCOPY_BATCH: usize = 256;

/// Characters FAT long names cannot hold; mtools would mangle or ask.
const FORBIDDEN: &[char] = &['"', '*', '/', ':', '<', '>', '?', '\\', '|'];

pub struct FatParams<'a> {
    /// Volume label: 1-11 characters of A-Z, 0-9, `-` and `_`.
    pub label: &'a str,
    /// Volume serial; blkid shows it as the FAT "UUID" (`ABCD-1234`).
    pub volume_id: u32,
    pub source_date_epoch: i64,
}

/// The volume id as blkid, fstab and `mdir` spell it: `ABCD-1234`.
pub fn format_volume_id(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
}

/// One step of filling the filesystem, in the order it must run.
#[derive(Debug, PartialEq, Eq)]
enum Op {
    /// Create these directories (FAT paths like `::/overlays`).
    Mkdir(Vec<String>),
    /// Copy these host files into the FAT directory `dir` (e.g. `::/overlays/`).
    Copy { dir: String, files: Vec<PathBuf> },
}

/// Formats `size` bytes at `offset` of `image` as FAT32 holding `tree`.
/// The image must already extend past `offset + size`; the range is replaced
/// entirely. Host symlinks to files are stored as the files they point to
/// (FAT has no symlinks).
pub fn make_fat(
    image: &Path,
    offset: u64,
    size: u64,
    tree: &Path,
    params: &FatParams,
) -> Result<()> {
    ensure!(
        offset.is_multiple_of(512),
        "FAT offset {offset} is not sector aligned"
    );
    ensure!(
        size.is_multiple_of(1024) && size > 0,
        "FAT size {size} is not a positive multiple of 1 KiB"
    );
    validate_label(params.label)?;
    // Plan the whole copy first so a bad tree fails before any tool runs.
    let ops = plan_ops(tree)
        .with_context(|| format!("scanning the FAT source tree {}", tree.display()))?;

    // Same directory as the image: same filesystem (sparse support, space),
    // and /tmp may be a small tmpfs.
    let dir = image
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".habuild-fat-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary FAT image in {}", dir.display()))?;
    tmp.as_file()
        .set_len(size)
        .with_context(|| format!("sizing {}", tmp.path().display()))?;
    build_fat_file(tmp.path(), offset, tree, &ops, params).with_context(|| {
        format!(
            "building FAT32 from {} in {}",
            tree.display(),
            tmp.path().display()
        )
    })?;

    let dst = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .with_context(|| format!("opening {} to place the FAT filesystem", image.display()))?;
    let mut src = tmp
        .reopen()
        .with_context(|| format!("reopening {}", tmp.path().display()))?;
    super::copy_sparse_into(&mut src, size, &dst, offset).with_context(|| {
        format!(
            "copying the FAT filesystem into {} at offset {offset}",
            image.display()
        )
    })?;
    Ok(())
}

/// Formats `fat` (a file exactly the filesystem's size) and fills it.
fn build_fat_file(
    fat: &Path,
    offset: u64,
    tree: &Path,
    ops: &[Op],
    params: &FatParams,
) -> Result<()> {
    Command::new("mkfs.vfat")
        .args(["-F", "32", "-S", "512", "--invariant", "-n", params.label])
        // Hidden sectors = the partition's start on the disk, which FAT boot
        // code and some firmware read; mkfs.vfat cannot know it for a file.
        .arg(format!("-h{}", offset / 512))
        .arg(fat)
        .run_checked()
        .context("formatting FAT32")?;
    mtools("mlabel", params.source_date_epoch)
        .arg("-i")
        .arg(fat)
        .args(["-N", &format!("{:08x}", params.volume_id)])
        .arg(format!("::{}", params.label))
        .run_checked()
        .context("setting the FAT volume id")?;
    for op in ops {
        let mut cmd = match op {
            Op::Mkdir(dirs) => {
                let mut c = mtools("mmd", params.source_date_epoch);
                c.arg("-i").arg(fat).args(dirs);
                c
            }
            Op::Copy { dir, files } => {
                let mut c = mtools("mcopy", params.source_date_epoch);
                c.arg("-i").arg(fat).arg("-Q").args(files).arg(dir);
                c
            }
        };
        cmd.run_checked()
            .with_context(|| format!("copying files from {}", tree.display()))?;
    }
    Ok(())
}

/// An mtools command with a pinned environment: timestamps from
/// SOURCE_DATE_EPOCH in UTC, no user configuration, no prompts.
fn mtools(tool: &str, source_date_epoch: i64) -> Command {
    let mut cmd = Command::new(tool);
    cmd.env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
        .env("TZ", "UTC")
        .env("MTOOLSRC", "/dev/null")
        // mtools converts host names to FAT long names via the locale's charset.
        .env("LC_ALL", "C.UTF-8")
        // A name clash would make mtools ask on stdin; never hang on that.
        .stdin(Stdio::null());
    cmd
}

fn validate_label(label: &str) -> Result<()> {
    let ok = (1..=11).contains(&label.len())
        && label
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    ensure!(
        ok,
        "FAT label `{label}` must be 1-11 characters of A-Z, 0-9, `-` or `_`"
    );
    Ok(())
}

/// Walks `tree` and returns the mmd/mcopy steps that recreate it, each
/// directory's entries in byte-sorted order.
fn plan_ops(tree: &Path) -> Result<Vec<Op>> {
    let mut ops = Vec::new();
    let mut pending = vec![(tree.to_path_buf(), String::from("::/"))];
    while let Some((host_dir, fat_dir)) = pending.pop() {
        let mut subdirs = Vec::new();
        let mut run: Vec<PathBuf> = Vec::new();
        for (name, path, is_dir) in sorted_entries(&host_dir)? {
            if is_dir {
                flush_copy(&mut ops, &fat_dir, &mut run);
                let fat_path = format!("{fat_dir}{name}");
                match ops.last_mut() {
                    Some(Op::Mkdir(dirs)) => dirs.push(fat_path.clone()),
                    _ => ops.push(Op::Mkdir(vec![fat_path.clone()])),
                }
                subdirs.push((path, format!("{fat_path}/")));
            } else {
                if run.len() == MCOPY_BATCH {
                    flush_copy(&mut ops, &fat_dir, &mut run);
                }
                run.push(path);
            }
        }
        flush_copy(&mut ops, &fat_dir, &mut run);
        // Reverse so the stack pops subdirectories in sorted order.
        pending.extend(subdirs.into_iter().rev());
    }
    Ok(ops)
}

fn flush_copy(ops: &mut Vec<Op>, fat_dir: &str, run: &mut Vec<PathBuf>) {
    if !run.is_empty() {
        ops.push(Op::Copy {
            dir: fat_dir.to_string(),
            files: std::mem::take(run),
        });
    }
}

/// (name, host path, is directory) for each entry of `dir`, sorted by name,
/// after checking that FAT can store it.
fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, bool)>> {
    let mut names: Vec<OsString> = fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    names.sort();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let Some(name) = name.to_str().map(str::to_owned) else {
            bail!(
                "{} is not valid UTF-8, which FAT cannot store",
                path.display()
            );
        };
        check_name(&name).with_context(|| format!("{} cannot be stored on FAT", path.display()))?;
        // FAT names are case-insensitive: two host names would collide.
        if !seen.insert(name.to_lowercase()) {
            bail!(
                "{} differs from another name in the same directory only by case",
                path.display()
            );
        }
        let meta =
            fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        let is_dir = if meta.file_type().is_symlink() {
            let target = fs::metadata(&path)
                .with_context(|| format!("following the symlink {}", path.display()))?;
            ensure!(
                target.is_file(),
                "{} is a symlink to a non-file; FAT can only store its target file",
                path.display()
            );
            false
        } else if meta.is_dir() {
            true
        } else {
            ensure!(
                meta.is_file(),
                "{} is a special file, which FAT cannot store",
                path.display()
            );
            false
        };
        out.push((name, path, is_dir));
    }
    Ok(out)
}

fn check_name(name: &str) -> Result<()> {
    ensure!(name.len() <= 255, "name longer than 255 bytes");
    ensure!(
        !name
            .chars()
            .any(|c| c.is_control() || FORBIDDEN.contains(&c)),
        "name contains a character FAT forbids"
    );
    ensure!(
        !name.ends_with(['.', ' ']),
        "FAT drops trailing dots and spaces"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn write(path: &Path, data: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    #[test]
    fn volume_id_format_matches_blkid() {
        assert_eq!(format_volume_id(0x0bad_f00d), "0BAD-F00D");
    }

    #[test]
    fn labels() {
        for ok in ["BOOT", "SYSTEM-BOOT", "A_1"] {
            validate_label(ok).unwrap();
        }
        for bad in ["", "boot", "TWELVE_CHARS", "WITH SPACE"] {
            assert!(validate_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn plan_is_sorted_and_batched() {
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        write(&t.join("z.txt"), "z");
        write(&t.join("a.txt"), "a");
        write(&t.join("overlays/b.dtbo"), "b");
        write(&t.join("overlays/a.dtbo"), "a");
        write(&t.join("b/deep/x"), "x");
        symlink("a.txt", t.join("m-link")).unwrap();
        let ops = plan_ops(t).unwrap();
        let want = vec![
            Op::Copy {
                dir: "::/".into(),
                files: vec![t.join("a.txt")],
            },
            Op::Mkdir(vec!["::/b".into()]),
            Op::Copy {
                dir: "::/".into(),
                files: vec![t.join("m-link")],
            },
            Op::Mkdir(vec!["::/overlays".into()]),
            Op::Copy {
                dir: "::/".into(),
                files: vec![t.join("z.txt")],
            },
            Op::Mkdir(vec!["::/b/deep".into()]),
            Op::Copy {
                dir: "::/b/deep/".into(),
                files: vec![t.join("b/deep/x")],
            },
            Op::Copy {
                dir: "::/overlays/".into(),
                files: vec![t.join("overlays/a.dtbo"), t.join("overlays/b.dtbo")],
            },
        ];
        assert_eq!(ops, want);
    }

    #[test]
    fn plan_rejects_what_fat_cannot_hold() {
        type Setup = fn(&Path);
        let cases: [(&str, Setup); 4] = [
            ("case", |t| {
                write(&t.join("README"), "");
                write(&t.join("readme"), "");
            }),
            ("forbidden char", |t| write(&t.join("a:b"), "")),
            ("dir symlink", |t| {
                fs::create_dir(t.join("d")).unwrap();
                symlink("d", t.join("l")).unwrap();
            }),
            ("dangling symlink", |t| {
                symlink("nowhere", t.join("l")).unwrap()
            }),
        ];
        for (name, setup) in cases {
            let dir = tempfile::tempdir().unwrap();
            setup(dir.path());
            assert!(plan_ops(dir.path()).is_err(), "{name}");
        }
    }

    #[test]
    fn builds_a_checkable_fat_at_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        write(&tree.join("config.txt"), "arm_64bit=1\n");
        write(&tree.join("overlays/vc4-kms-v3d.dtbo"), "dtbo");
        write(&tree.join("a-rather-long-file-name.txt"), "long");
        symlink("config.txt", tree.join("linked.txt")).unwrap();
        let image = dir.path().join("disk.img");
        let (offset, size) = (1u64 << 20, 40u64 << 20);
        // Far bigger than the filesystem: in-place mtools fails on such files.
        let image_len = offset + size + (400 << 20);
        let f = fs::File::create(&image).unwrap();
        f.set_len(image_len).unwrap();
        // Stale bytes in the target range must not survive.
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xee; 4096], offset + (20 << 20)).unwrap();
        let params = FatParams {
            label: "BOOT",
            volume_id: 0x1234_abcd,
            source_date_epoch: 1_700_000_000,
        };
        make_fat(&image, offset, size, &tree, &params).unwrap();
        assert_eq!(
            fs::metadata(&image).unwrap().len(),
            image_len,
            "image size unchanged"
        );
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            leftovers.len(),
            2,
            "temporary FAT file removed: {leftovers:?}"
        );

        // Check an extracted copy: fsck.fat has no offset option.
        let part = dir.path().join("part.img");
        let bytes = fs::read(&image).unwrap();
        let (a, b) = (offset as usize, (offset + size) as usize);
        assert!(
            bytes[a..b].windows(4).all(|w| w != [0xee; 4]),
            "stale bytes survived"
        );
        fs::write(&part, &bytes[a..b]).unwrap();
        Command::new("fsck.fat")
            .arg("-n")
            .arg(&part)
            .run_checked()
            .unwrap();
        let p = part.to_str().unwrap();
        let listing = mtools("mdir", 0)
            .args(["-i", p, "::/"])
            .output_checked()
            .unwrap();
        assert!(listing.contains("1234-ABCD"), "{listing}");
        assert!(
            listing.contains("2023-11-14  22:13"),
            "timestamps come from SOURCE_DATE_EPOCH: {listing}"
        );
        let text = mtools("mtype", 0)
            .args(["-i", p, "::/overlays/vc4-kms-v3d.dtbo"])
            .output_checked()
            .unwrap();
        assert_eq!(text, "dtbo");
        let linked = mtools("mtype", 0)
            .args(["-i", p, "::/linked.txt"])
            .output_checked()
            .unwrap();
        assert_eq!(
            linked, "arm_64bit=1\n",
            "symlinks are stored as their target's content"
        );
        let fsck = Command::new("fsck.fat")
            .args(["-nv"])
            .arg(&part)
            .output_checked()
            .unwrap();
        assert!(
            fsck.contains("2048 hidden sectors"),
            "hidden sectors = partition start: {fsck}"
        );
    }
}

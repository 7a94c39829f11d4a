//! ext4 from a staged directory tree, written at a byte offset inside a disk
//! image by `mke2fs -d -E offset=` (no mounts, no loop devices). Ownership,
//! modes, symlinks, hard links and xattrs of the tree are kept.
//!
//! Determinism needs e2fsprogs >= 1.47.1, the first release that honours
//! SOURCE_DATE_EPOCH: it stamps superblock and new inodes with it and clamps
//! every copied timestamp to it. UUID and directory hash seed come from the
//! caller, and the feature set comes from our own mke2fs.conf rather than the
//! build host's.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use rustix::fs::{AtFlags, Timestamps, CWD, UTIME_OMIT};
use uuid::Uuid;

use crate::util::CommandExt;

/// Oldest e2fsprogs that produces reproducible images (SOURCE_DATE_EPOCH support).
pub const MIN_E2FSPROGS_VERSION: &str = "1.47.1";

/// ext4 block size; partitions and offsets are multiples of it.
pub const BLOCK_SIZE: u64 = 4096;

/// Pinned mke2fs configuration, so the image does not depend on the build
/// host's /etc/mke2fs.conf. The feature list is Debian bookworm's ext4 set:
/// it leaves out `metadata_csum_seed` and `orphan_file`, which GRUB < 2.12
/// and e2fsprogs < 1.47 on the target cannot handle.
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
\treserved_ratio = 5.0

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

pub struct Ext4Params<'a> {
    /// Volume label, at most 16 bytes.
    pub label: &'a str,
    pub uuid: Uuid,
    /// Seed for directory hashing (htree); random unless pinned.
    pub hash_seed: Uuid,
    pub source_date_epoch: i64,
}

/// Makes an ext4 filesystem of `size` bytes at `offset` in `image`, filled
/// from `tree`. The image must already extend past `offset + size`; the
/// range is cleared first so blocks mke2fs leaves alone read as zeros.
///
/// Side effect: access times in `tree` older than SOURCE_DATE_EPOCH are
/// raised to it. mke2fs copies atimes and clamps only those newer than the
/// epoch, and merely reading a file can move its atime, so without this the
/// result would depend on when the tree was last read.
pub fn make_ext4(
    image: &Path,
    offset: u64,
    size: u64,
    tree: &Path,
    params: &Ext4Params,
) -> Result<()> {
    check_request(offset, size, tree, params)?;
    prepare_tree(tree, params.source_date_epoch)?;
    let file = fs::OpenOptions::new()
        .write(true)
        .open(image)
        .with_context(|| format!("opening {} to clear the ext4 range", image.display()))?;
    super::clear_range(&file, offset, size)
        .with_context(|| format!("clearing {size} bytes at {offset} in {}", image.display()))?;
    drop(file);

    let mut conf = tempfile::Builder::new()
        .prefix("habuild-mke2fs-")
        .suffix(".conf")
        .tempfile()
        .context("creating a temporary mke2fs.conf")?;
    conf.write_all(MKE2FS_CONF.as_bytes())
        .and_then(|()| conf.flush())
        .with_context(|| format!("writing {}", conf.path().display()))?;

    let epoch = params.source_date_epoch.to_string();
    let extended = [
        format!("offset={offset}"),
        format!("hash_seed={}", params.hash_seed),
        "root_owner=0:0".into(),
        // A bmap-flashed card keeps its old data wherever the image has a
        // hole, so the journal must really be written (a stale journal from
        // an earlier flash of the same image would have valid checksums).
        // Discard would punch holes and make mke2fs skip zeroing it.
        "nodiscard".into(),
        "lazy_journal_init=0".into(),
        // Inode tables stay unwritten (sparse) and are not flagged as zeroed:
        // the kernel zeroes them in the background on first read-write mount.
        "lazy_itable_init=1".into(),
    ]
    .join(",");
    Command::new("mke2fs")
        .env("MKE2FS_CONFIG", conf.path())
        // On a regular file mke2fs "zeroes" (journal, end of device) with
        // fallocate(ZERO_RANGE): unwritten extents, which SEEK_DATA reports
        // as holes, so the bmap would skip them. Make it write real zeros.
        .env("UNIX_IO_NOZEROOUT", "1")
        // -d adds directory entries (and so allocates inodes) in alphasort
        // order, which is strcoll(): pin the collation to plain byte order.
        .env("LC_ALL", "C")
        .env("SOURCE_DATE_EPOCH", &epoch)
        // The pre-1.47.1 knob (superblock and new-inode times only); with
        // SOURCE_DATE_EPOCH also set it changes nothing, on older versions it
        // gets as close to reproducible as they allow.
        .env("E2FSPROGS_FAKE_TIME", &epoch)
        .args(["-q", "-F", "-t", "ext4", "-T", "default", "-b"])
        .arg(BLOCK_SIZE.to_string())
        .args([
            "-L",
            params.label,
            "-U",
            &params.uuid.to_string(),
            "-E",
            &extended,
            "-d",
        ])
        .arg(tree)
        .arg(image)
        .arg(format!("{}k", size / 1024))
        .run_checked()
        .with_context(|| {
            format!(
                "making ext4 at offset {offset} in {} from {}",
                image.display(),
                tree.display()
            )
        })?;
    Ok(())
}

/// The checks every ext4 writer makes before touching anything.
pub(super) fn check_request(
    offset: u64,
    size: u64,
    tree: &Path,
    params: &Ext4Params,
) -> Result<()> {
    ensure!(
        offset.is_multiple_of(512),
        "ext4 offset {offset} is not sector aligned"
    );
    ensure!(
        size.is_multiple_of(BLOCK_SIZE) && size > 0,
        "ext4 size {size} is not a positive multiple of {BLOCK_SIZE}"
    );
    ensure!(
        !params.label.is_empty() && params.label.len() <= 16,
        "ext4 label `{}` must be 1-16 bytes",
        params.label
    );
    ensure!(
        tree.is_dir(),
        "ext4 source tree {} is not a directory",
        tree.display()
    );
    Ok(())
}

/// Refuses an epoch in the future, then raises old access times in `tree`
/// to it (see `make_ext4` on why).
pub(super) fn prepare_tree(tree: &Path, epoch: i64) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs();
    check_epoch(epoch, now)?;
    raise_atimes(tree, epoch)
        .with_context(|| format!("normalising access times under {}", tree.display()))?;
    Ok(())
}

/// mke2fs copies each file's change time (ctime) and lowers only those after
/// the epoch. No tool can set a ctime, and the staged tree's are the time of
/// this build, so an epoch in the future would leak the build time into
/// every inode: refuse it rather than make an image that looks reproducible.
fn check_epoch(epoch: i64, now: u64) -> Result<()> {
    ensure!(
        u64::try_from(epoch).is_ok_and(|e| e <= now),
        "SOURCE_DATE_EPOCH {epoch} is in the future (now {now}): the files' change times, which no tool can set, would carry the build time into the image; use a time in the past (e.g. the last commit's)"
    );
    Ok(())
}

/// Sets atime = `epoch` on every entry of `tree` (symlinks themselves, not
/// their targets) whose atime is older; mtimes are left alone.
fn raise_atimes(tree: &Path, epoch: i64) -> Result<()> {
    let times = Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: epoch,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_OMIT,
        },
    };
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry.with_context(|| format!("walking {}", tree.display()))?;
        let meta = fs::symlink_metadata(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        if meta.atime() < epoch {
            rustix::fs::utimensat(CWD, entry.path(), &times, AtFlags::SYMLINK_NOFOLLOW)
                .with_context(|| {
                    format!("setting the access time of {}", entry.path().display())
                })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn debugfs(fs_image: &Path, request: &str) -> String {
        Command::new("debugfs")
            .arg("-R")
            .arg(request)
            .arg(fs_image)
            .output_checked()
            .unwrap()
    }

    #[test]
    fn builds_a_checkable_ext4_at_an_offset_keeping_owners() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("etc/hostname"), "node\n").unwrap();
        let secret = tree.join("etc/secret");
        fs::write(&secret, "s").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&secret, Some(1000), Some(1000))
            .expect("tests run as root to chown");
        symlink("hostname", tree.join("etc/link")).unwrap();

        let image = dir.path().join("disk.img");
        let (offset, size) = (3u64 << 20, 32u64 << 20);
        let f = fs::File::create(&image).unwrap();
        f.set_len(offset + size + (1 << 20)).unwrap();
        // Stale bytes in the range (an image file being reused) must not survive.
        std::os::unix::fs::FileExt::write_all_at(&f, &[0xee; 8192], offset + size - (1 << 20))
            .unwrap();
        let uuid = Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888);
        let params = Ext4Params {
            label: "root",
            uuid,
            hash_seed: uuid,
            source_date_epoch: 1_700_000_000,
        };
        make_ext4(&image, offset, size, &tree, &params).unwrap();

        let bytes = fs::read(&image).unwrap();
        let range = &bytes[offset as usize..(offset + size) as usize];
        assert!(
            !range.windows(8).any(|w| w == [0xee; 8]),
            "stale bytes survived"
        );

        let at = format!("{}?offset={offset}", image.display());
        Command::new("e2fsck")
            .args(["-fn", &at])
            .run_checked()
            .unwrap();
        let stats = debugfs(Path::new(&at), "stats");
        assert!(stats.contains(&uuid.to_string()), "{stats}");
        assert!(
            stats.contains("Block count:              8192"),
            "fills exactly its size: {stats}"
        );
        let stat = debugfs(Path::new(&at), "stat /etc/secret");
        assert!(stat.contains("Mode:  0600"), "{stat}");
        assert!(stat.contains("User:  1000   Group:  1000"), "{stat}");
        assert!(
            stat.contains("mtime: 0x6553f100"),
            "mtime clamped to the epoch: {stat}"
        );
        let link = debugfs(Path::new(&at), "stat /etc/link");
        assert!(link.contains("Fast link dest: \"hostname\""), "{link}");
        assert_eq!(debugfs(Path::new(&at), "cat /etc/hostname"), "node\n");
    }

    #[test]
    fn future_epoch_is_refused() {
        check_epoch(1_700_000_000, 1_700_000_000).unwrap();
        let e = check_epoch(1_700_000_001, 1_700_000_000).unwrap_err();
        assert!(e.to_string().contains("in the future"), "{e}");
        assert!(check_epoch(-1, 1_700_000_000).is_err());
    }

    #[test]
    fn rejects_bad_parameters_before_running_tools() {
        let dir = tempfile::tempdir().unwrap();
        let p = |label| Ext4Params {
            label,
            uuid: Uuid::nil(),
            hash_seed: Uuid::nil(),
            source_date_epoch: 0,
        };
        let img = dir.path().join("x.img");
        assert!(make_ext4(&img, 0, 4095, dir.path(), &p("root")).is_err());
        assert!(make_ext4(&img, 1, 4096, dir.path(), &p("root")).is_err());
        assert!(make_ext4(&img, 0, 4096, dir.path(), &p("seventeen-bytes-x")).is_err());
    }
}

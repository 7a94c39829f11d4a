//! The native writer checked by independent tools (e2fsck, debugfs) and
//! against mke2fs's build of the same tree.

use super::*;
use crate::fs::ext4::make_ext4;
use crate::util::CommandExt;
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, CWD};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::process::Command;
use uuid::Uuid;

const EPOCH: i64 = 1_700_000_000;
const OFFSET: u64 = 3 << 20;
const SIZE: u64 = 32 << 20;
/// An mtime before the epoch, which both writers keep (in whole seconds).
const OLD: (i64, i64) = (1_600_000_000, 123_456_789);

/// Every kind of entry the writer handles. Times are "now" (after the
/// epoch, so clamped) except etc/hostname's mtime.
fn make_tree(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    for d in ["etc", "home/user", "usr/bin", "dev", "shared", "var"] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    // The root directory's owner must not carry over (root_owner=0:0).
    std::os::unix::fs::chown(&tree, Some(1000), Some(1000)).unwrap();
    fs::write(tree.join("etc/hostname"), "node\n").unwrap();
    let old = Timespec {
        tv_sec: OLD.0,
        tv_nsec: OLD.1,
    };
    let times = Timestamps {
        last_access: old,
        last_modification: old,
    };
    rustix::fs::utimensat(CWD, tree.join("etc/hostname"), &times, AtFlags::empty()).unwrap();
    let secret = tree.join("etc/secret");
    fs::write(&secret, "s").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    let notes = tree.join("home/user/notes");
    fs::write(&notes, "mine").unwrap();
    std::os::unix::fs::chown(&notes, Some(1000), Some(1000)).expect("tests run as root to chown");
    fs::write(tree.join("etc/empty"), "").unwrap();
    symlink("hostname", tree.join("etc/link")).unwrap();
    // Longer than the 60 bytes an inode holds: stored in a block.
    symlink(
        "../".repeat(25) + "etc/hostname",
        tree.join("etc/long-link"),
    )
    .unwrap();
    fs::write(tree.join("usr/bin/a"), "#!/bin/sh\n").unwrap();
    fs::hard_link(tree.join("usr/bin/a"), tree.join("usr/bin/b")).unwrap();
    for (name, major, minor) in [("null", 1, 3), ("big", 259, 300)] {
        rustix::fs::mknodat(
            CWD,
            tree.join("dev").join(name),
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(major, minor),
        )
        .expect("tests run as root to mknod");
    }
    // A POSIX ACL (user 1000 may read), in the format the kernel takes.
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (1u16, 7u16, u32::MAX),
        (2, 5, 1000),
        (4, 5, u32::MAX),
        (0x10, 5, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend(tag.to_le_bytes());
        acl.extend(perm.to_le_bytes());
        acl.extend(id.to_le_bytes());
    }
    rustix::fs::lsetxattr(
        tree.join("shared"),
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    )
    .expect("the test directory's filesystem takes POSIX ACLs");
    // Over 1 MiB, not a multiple of the block size, not compressible.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let big: Vec<u8> = (0..(3 << 19) + 123)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    // Zero blocks mke2fs -d leaves as holes: inside, at the end (a short
    // all-zero last block), and a whole file of zeros.
    let mut padded = big[..4096].to_vec();
    padded.extend([0u8; 8192]);
    padded.extend(&big[4096..4196]);
    padded.extend([0u8; 4000]);
    padded.extend(&big[8192..8292]);
    fs::write(tree.join("usr/bin/padded"), &padded).unwrap();
    fs::write(
        tree.join("var/zero-tail"),
        [&big[..4096], &[0u8; 100][..]].concat(),
    )
    .unwrap();
    fs::write(tree.join("var/zeros"), [0u8; 10000]).unwrap();
    fs::write(tree.join("var/big"), big).unwrap();
    tree
}

/// Asserts that the filesystem's blocks `first..=last` are data in the
/// image file (`mapped`, its data extents), not holes a bmap flash would
/// skip.
fn assert_mapped(mapped: &[std::ops::Range<u64>], first: u64, last: u64, what: &str) {
    let (start, end) = (
        OFFSET + first * BLOCK_SIZE,
        OFFSET + (last + 1) * BLOCK_SIZE,
    );
    assert!(
        mapped.iter().any(|r| r.start <= start && end <= r.end),
        "{what}: blocks {first}-{last} are (partly) a hole"
    );
}

fn params() -> Ext4Params<'static> {
    let uuid = Uuid::from_u128(0x1111_2222_3333_4444_5555_6666_7777_8888);
    Ext4Params {
        label: "root",
        uuid,
        hash_seed: Uuid::from_u128(0x9999_aaaa_bbbb_cccc_dddd_eeee_ffff_0000),
        source_date_epoch: EPOCH,
    }
}

/// A fresh image file with stale bytes where the filesystem goes.
fn blank_image(path: &Path) {
    let f = File::create(path).unwrap();
    f.set_len(OFFSET + SIZE + (1 << 20)).unwrap();
    f.write_all_at(&[0xee; 8192], OFFSET + SIZE - (1 << 20))
        .unwrap();
}

/// debugfs on the filesystem at OFFSET in `image`.
fn debugfs(image: &Path, request: &str) -> String {
    Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(format!("{}?offset={OFFSET}", image.display()))
        .output_checked()
        .unwrap()
}

/// A `stat` without what legitimately differs between two writers: inode
/// and block numbers, checksums, and the xattr block's address.
fn normalized_stat(image: &Path, path: &str) -> String {
    let stat = debugfs(image, &format!("stat {path}"));
    let stat = stat.split("EXTENTS:").next().unwrap_or_default();
    stat.lines()
        .filter(|l| !l.contains("checksum") && !l.starts_with("File ACL:"))
        .map(|l| match l.strip_prefix("Inode: ") {
            Some(rest) => rest.split_once(' ').map_or("", |(_, r)| r).trim_start(),
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn native_ext4_passes_fsck_and_matches_mke2fs_per_file() {
    let dir = tempfile::tempdir().unwrap();
    let tree = make_tree(dir.path());
    let (native, reference) = (dir.path().join("native.img"), dir.path().join("mke2fs.img"));
    blank_image(&native);
    blank_image(&reference);
    make_ext4_native(&native, OFFSET, SIZE, &tree, &params()).unwrap();
    make_ext4(&reference, OFFSET, SIZE, &tree, &params()).unwrap();

    let bytes = fs::read(&native).unwrap();
    assert!(
        !bytes[OFFSET as usize..(OFFSET + SIZE) as usize]
            .windows(8)
            .any(|w| w == [0xee; 8]),
        "stale bytes survived"
    );
    Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={OFFSET}", native.display()))
        .run_checked()
        .unwrap();

    let stats = debugfs(&native, "stats");
    let line = |s: &str, key: &str| s.lines().find(|l| l.starts_with(key)).map(str::to_owned);
    for key in [
        "Filesystem volume name:",
        "Filesystem UUID:",
        "Directory Hash Seed:",
        "Block count:",
    ] {
        assert_eq!(
            line(&stats, key),
            line(&debugfs(&reference, "stats"), key),
            "{key}"
        );
    }
    assert!(stats.contains(&params().uuid.to_string()), "{stats}");

    // Per-file metadata as mke2fs gives it, for every entry of the tree.
    let entries = walkdir::WalkDir::new(&tree).sort_by_file_name();
    for entry in entries {
        let entry = entry.unwrap();
        let rel = entry.path().strip_prefix(&tree).unwrap();
        let path = format!("/{}", rel.display());
        assert_eq!(
            normalized_stat(&native, &path),
            normalized_stat(&reference, &path),
            "stat {path}"
        );
        assert_eq!(
            debugfs(&native, &format!("ea_list {path}")),
            debugfs(&reference, &format!("ea_list {path}")),
            "ea_list {path}"
        );
    }

    // The facts themselves, not only agreement with mke2fs.
    let stat = |p: &str| debugfs(&native, &format!("stat {p}"));
    let secret = stat("/etc/secret");
    assert!(
        secret.contains("Mode:  0600") && secret.contains("User:     0"),
        "{secret}"
    );
    assert!(
        secret.contains("mtime: 0x6553f100:00000000"),
        "clamped to the epoch: {secret}"
    );
    let notes = stat("/home/user/notes");
    assert!(notes.contains("User:  1000   Group:  1000"), "{notes}");
    let hostname = stat("/etc/hostname");
    assert!(
        hostname.contains("mtime: 0x5f5e1000:00000000"),
        "older times kept: {hostname}"
    );
    assert!(stat("/usr/bin/b").contains("Links: 2"));
    assert!(stat("/dev/null").contains("Device major/minor number: 01:03"));
    assert!(stat("/dev/big").contains("Device major/minor number: 259:300"));
    assert!(stat("/etc/link").contains("Fast link dest: \"hostname\""));
    let root = stat("/");
    assert!(root.contains("User:     0   Group:     0"), "{root}");
    let acl = debugfs(&native, "ea_list /shared");
    // ext4's ACL format (version 1, no ids on the short entries), which
    // the kernel accepts, with user 1000's entry.
    assert!(
        acl.contains(
            "system.posix_acl_access (28) = 01 00 00 00 01 00 07 00 02 00 05 00 e8 03 00 00"
        ),
        "{acl}"
    );

    assert_eq!(debugfs(&native, "cat /etc/hostname"), "node\n");
    assert_eq!(debugfs(&native, "cat /etc/empty"), "");
    let dumped = dir.path().join("big.out");
    debugfs(&native, &format!("dump /var/big {}", dumped.display()));
    assert!(fs::read(&dumped).unwrap() == fs::read(tree.join("var/big")).unwrap());

    // Zero blocks are holes in the file, as mke2fs makes them (the
    // per-file comparison above covers Blockcount), and read as zeros.
    assert!(stat("/var/zeros").contains("Blockcount: 0"));
    for name in ["usr/bin/padded", "var/zero-tail", "var/zeros"] {
        let out = dir.path().join("out");
        debugfs(&native, &format!("dump /{name} {}", out.display()));
        assert!(
            fs::read(&out).unwrap() == fs::read(tree.join(name)).unwrap(),
            "{name}"
        );
    }

    // The journal is written out, not a hole a bmap flash would skip.
    let mapped = crate::fs::data_extents(&File::open(&native).unwrap(), OFFSET + SIZE).unwrap();
    let journal = stat("<8>");
    let extents = journal
        .split("EXTENTS:")
        .nth(1)
        .expect("journal extents")
        .trim();
    let mut covered = 0;
    for ext in extents.split(", ") {
        let phys = ext.split(':').nth(1).unwrap();
        let (a, b) = phys.split_once('-').unwrap_or((phys, phys));
        let (a, b) = (a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap());
        assert_mapped(&mapped, a, b, "journal");
        covered += (b + 1 - a) * BLOCK_SIZE;
    }
    assert!(covered >= 1024 * BLOCK_SIZE, "journal of {covered} bytes");

    // So are the bitmaps and the inode tables, which mkext4 flags as
    // zeroed: a card's old data there would be taken for inodes.
    let per_group: u64 = line(&stats, "Inode blocks per group:")
        .and_then(|l| l.split(':').nth(1)?.trim().parse().ok())
        .expect("inode blocks per group");
    let mut tables = 0;
    for l in stats
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("Group "))
    {
        // " Group  0: block bitmap at 2, inode bitmap at 8, inode table at 14"
        let at = |key: &str| -> u64 {
            let rest = &l[l.find(key).unwrap_or_else(|| panic!("{key} in {l}")) + key.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        for (key, len) in [
            ("block bitmap at ", 1),
            ("inode bitmap at ", 1),
            ("inode table at ", per_group),
        ] {
            let first = at(key);
            assert_mapped(&mapped, first, first + len - 1, l);
        }
        tables += 1;
    }
    assert!(tables >= 1, "no group summary in debugfs stats:\n{stats}");
}

#[test]
fn native_builds_are_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let mut images = Vec::new();
    for name in ["a", "b"] {
        // Re-created trees: new inode numbers, ctimes and mtimes.
        let tree = make_tree(&dir.path().join(name));
        let image = dir.path().join(format!("{name}.img"));
        blank_image(&image);
        make_ext4_native(&image, OFFSET, SIZE, &tree, &params()).unwrap();
        images.push(fs::read(&image).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    assert!(images[0] == images[1], "native images differ");
}

#[test]
fn non_utf8_names_are_refused_with_the_path() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(tree.join("etc")).unwrap();
    fs::write(
        tree.join("etc")
            .join(std::ffi::OsStr::from_bytes(b"caf\xe9")),
        "x",
    )
    .unwrap();
    let image = dir.path().join("x.img");
    blank_image(&image);
    let e = make_ext4_native(&image, OFFSET, SIZE, &tree, &params()).unwrap_err();
    let msg = format!("{e:#}");
    assert!(msg.contains("UTF-8") && msg.contains("etc/caf"), "{msg}");
}

//! Disk image assembly: a sparse file, a partition table, and a filesystem in
//! each partition, all written in place without mounts or loop devices.

pub mod layout;
pub mod table;

use std::fs::OpenOptions;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use uuid::Uuid;

use crate::config::board::PartitionRole;
use crate::config::Ext4Writer;
use crate::fs::{ext4, fat};
use crate::plan::DiskSpec;
use layout::{default_image_size, plan_layout, DiskLayout, PartitionRequest, PlacedPartition};

pub struct AssembleRequest<'a> {
    pub layout: &'a DiskLayout,
    /// Contents of every Boot/Esp partition.
    pub boot_tree: &'a Path,
    /// Contents of every Root partition.
    pub root_tree: &'a Path,
    /// Everything random in the image (disk/partition/filesystem ids, hash
    /// seeds) is derived from this, so equal inputs give equal images.
    pub seed: &'a [u8],
    pub source_date_epoch: i64,
    /// FAT volume label, e.g. "BOOT".
    pub boot_label: &'a str,
    /// ext4 volume label, e.g. "root".
    pub root_label: &'a str,
    /// Which program writes the Root partitions' ext4.
    pub ext4_writer: Ext4Writer,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionReport {
    pub label: String,
    pub role: PartitionRole,
    pub start: u64,
    pub size: u64,
    /// PARTUUID as Linux shows it (GPT GUID, or MBR `<signature>-<index>`).
    pub part_uuid: String,
    /// Filesystem id as blkid shows it: ext4 UUID, or FAT `ABCD-1234`.
    pub fs_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AssembleReport {
    /// GPT disk GUID, or MBR signature as `0x1234abcd`.
    pub disk_id: String,
    pub partitions: Vec<PartitionReport>,
}

/// The filesystem UUID `assemble` gives the partition labelled
/// `partition_label` (the layout label, not the volume label, so A/B root
/// partitions get distinct ids). Callers use it to write fstab and the
/// kernel command line before the image exists.
pub fn fs_uuid(seed: &[u8], partition_label: &str) -> Uuid {
    table::derive_uuid(seed, &format!("filesystem {partition_label}"))
}

/// The FAT volume id `assemble` gives the partition labelled `partition_label`.
pub fn fat_volume_id(seed: &[u8], partition_label: &str) -> u32 {
    let b = fs_uuid(seed, partition_label).into_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// The filesystem id string (as blkid / fstab `UUID=` spell it) for a partition.
pub fn fs_id(seed: &[u8], role: PartitionRole, partition_label: &str) -> String {
    match role {
        PartitionRole::Boot | PartitionRole::Esp => {
            fat::format_volume_id(fat_volume_id(seed, partition_label))
        }
        PartitionRole::Root => fs_uuid(seed, partition_label).to_string(),
    }
}

/// Builds one partition's filesystem in its byte range of `image`.
fn build_partition(req: &AssembleRequest, part: &PlacedPartition, image: &Path) -> Result<()> {
    let started = Instant::now();
    match part.role {
        PartitionRole::Boot | PartitionRole::Esp => {
            let params = fat::FatParams {
                label: req.boot_label,
                volume_id: fat_volume_id(req.seed, &part.label),
                source_date_epoch: req.source_date_epoch,
            };
            fat::make_fat(image, part.start, part.size, req.boot_tree, &params)
        }
        PartitionRole::Root => {
            let params = ext4::Ext4Params {
                label: req.root_label,
                uuid: fs_uuid(req.seed, &part.label),
                hash_seed: table::derive_uuid(req.seed, &format!("ext4 hash seed {}", part.label)),
                source_date_epoch: req.source_date_epoch,
            };
            crate::fs::make_ext4_with(
                req.ext4_writer,
                image,
                part.start,
                part.size,
                req.root_tree,
                &params,
            )
        }
    }
    .with_context(|| format!("building partition `{}` of {}", part.label, image.display()))?;
    log::debug!(
        "partition `{}` built in {:.1?}",
        part.label,
        started.elapsed()
    );
    Ok(())
}

/// The layout of `spec`'s disk for a root tree of `root_bytes`: the plan's
/// boot partition first, the root taking the rest, on a disk of the
/// requested size or, by default, the root's content plus headroom.
pub fn layout_for(spec: &DiskSpec, root_bytes: u64) -> Result<DiskLayout> {
    let total = spec
        .image_size
        .unwrap_or_else(|| default_image_size(spec.boot.size, root_bytes, spec.power_of_two));
    let requests = [
        PartitionRequest {
            label: spec.boot.label.clone(),
            role: spec.boot.role,
            size: Some(spec.boot.size),
        },
        PartitionRequest {
            label: spec.root_label.clone(),
            role: PartitionRole::Root,
            size: None,
        },
    ];
    plan_layout(spec.table, spec.arch, &requests, total)
        .with_context(|| format!("laying out a {total}-byte disk"))
}

/// Builds the whole disk image at `image` (a temporary path; the caller
/// renames it into place). An existing file there is truncated. The file
/// stays sparse: only tables and filesystem data are allocated, which is what
/// the bmap records. On error the partial file is left for the caller to remove.
pub fn assemble(req: &AssembleRequest, image: &Path) -> Result<AssembleReport> {
    let layout = req.layout;
    for (role_tree, needed) in [
        (
            req.boot_tree,
            layout
                .partitions
                .iter()
                .any(|p| p.role != PartitionRole::Root),
        ),
        (
            req.root_tree,
            layout
                .partitions
                .iter()
                .any(|p| p.role == PartitionRole::Root),
        ),
    ] {
        ensure!(
            !needed || role_tree.is_dir(),
            "source tree {} is not a directory",
            role_tree.display()
        );
    }

    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(image)
        .with_context(|| format!("creating the disk image {}", image.display()))?;
    // set_len on an empty file makes one big hole: nothing is allocated yet.
    file.set_len(layout.total_size)
        .with_context(|| format!("sizing {} to {} bytes", image.display(), layout.total_size))?;
    drop(file);

    let ids = table::write_table(image, layout, req.seed)?;
    // Each filesystem goes into its own byte range of the image, so they
    // are built at the same time: on a 2-core build machine the FAT (mkfs +
    // mtools) and the ext4 (mke2fs -d) overlap instead of adding up.
    let built: Vec<Result<()>> = std::thread::scope(|scope| {
        let handles: Vec<_> = layout
            .partitions
            .iter()
            .map(|part| scope.spawn(move || build_partition(req, part, image)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a filesystem builder panicked")))
            })
            .collect()
    });
    let mut partitions = Vec::with_capacity(layout.partitions.len());
    for ((part, part_uuid), result) in layout.partitions.iter().zip(ids.part_uuids).zip(built) {
        result?;
        partitions.push(PartitionReport {
            label: part.label.clone(),
            role: part.role,
            start: part.start,
            size: part.size,
            part_uuid,
            fs_id: fs_id(req.seed, part.role, &part.label),
        });
    }
    Ok(AssembleReport {
        disk_id: ids.disk_id,
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::layout::{plan_layout, PartitionRequest, MIB};
    use super::*;
    use crate::config::board::{Arch, PartitionTable};
    use crate::util::CommandExt;
    use std::fs;
    use std::io::{Read, Seek, SeekFrom, Write};
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::PathBuf;
    use std::process::Command;

    const EPOCH: i64 = 1_700_000_000;

    /// A boot tree and a root tree with the awkward cases: a subdirectory, a
    /// symlink, a file owned by uid 1000 with mode 0600.
    fn make_trees(dir: &Path) -> (PathBuf, PathBuf) {
        let boot = dir.join("boot");
        fs::create_dir_all(boot.join("overlays")).unwrap();
        fs::write(boot.join("config.txt"), "arm_64bit=1\n").unwrap();
        fs::write(boot.join("cmdline.txt"), "root=LABEL=root\n").unwrap();
        fs::write(boot.join("overlays/vc4-kms-v3d.dtbo"), vec![0xd0; 5000]).unwrap();
        let root = dir.join("root");
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("etc/hostname"), "node1\n").unwrap();
        fs::write(root.join("usr/bin/tool"), vec![0x7f; 70_000]).unwrap();
        fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        let key = root.join("etc/user.key");
        fs::write(&key, "k").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::chown(&key, Some(1000), Some(1000))
            .expect("these tests run as root (chown)");
        symlink("../usr/bin/tool", root.join("etc/tool-link")).unwrap();
        (boot, root)
    }

    fn test_layout(table: PartitionTable) -> DiskLayout {
        let (first, arch) = match table {
            PartitionTable::Mbr => (PartitionRole::Boot, Arch::Arm64),
            PartitionTable::Gpt => (PartitionRole::Esp, Arch::Amd64),
        };
        let requests = [
            PartitionRequest {
                label: "boot".into(),
                role: first,
                size: Some(40 * MIB),
            },
            PartitionRequest {
                label: "root".into(),
                role: PartitionRole::Root,
                size: None,
            },
        ];
        plan_layout(table, arch, &requests, 128 * MIB).unwrap()
    }

    fn build(dir: &Path, layout: &DiskLayout, name: &str) -> (PathBuf, AssembleReport) {
        build_with(dir, layout, name, Ext4Writer::Mke2fs)
    }

    fn build_with(
        dir: &Path,
        layout: &DiskLayout,
        name: &str,
        ext4_writer: Ext4Writer,
    ) -> (PathBuf, AssembleReport) {
        let (boot, root) = make_trees(&dir.join(format!("{name}-trees")));
        let image = dir.join(name);
        let req = AssembleRequest {
            layout,
            boot_tree: &boot,
            root_tree: &root,
            seed: b"test-seed",
            source_date_epoch: EPOCH,
            boot_label: "BOOT",
            root_label: "root",
            ext4_writer,
        };
        let report = assemble(&req, &image).unwrap();
        (image, report)
    }

    /// Copies one partition out, so tools without offset support (fsck.fat)
    /// can check it and e2fsck sees the partition's real size.
    fn extract(image: &Path, part: &PartitionReport, out: &Path) {
        let mut src = fs::File::open(image).unwrap();
        src.seek(SeekFrom::Start(part.start)).unwrap();
        let mut dst = fs::File::create(out).unwrap();
        std::io::copy(&mut src.take(part.size), &mut dst).unwrap();
    }

    fn sfdisk(image: &Path) -> serde_json::Value {
        let out = Command::new("sfdisk")
            .arg("-J")
            .arg(image)
            .output_checked()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["partitiontable"].clone()
    }

    /// Every independent check of an assembled image.
    fn check_image(dir: &Path, image: &Path, report: &AssembleReport, table: PartitionTable) {
        let t = sfdisk(image);
        let parts = t["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 2);
        for (p, r) in parts.iter().zip(&report.partitions) {
            assert_eq!(p["start"].as_u64(), Some(r.start / 512), "{p}");
            assert_eq!(p["size"].as_u64(), Some(r.size / 512), "{p}");
        }
        match table {
            PartitionTable::Mbr => {
                assert_eq!(t["label"], "dos");
                assert_eq!(
                    (&parts[0]["type"], &parts[0]["bootable"]),
                    (&"c".into(), &true.into())
                );
                assert_eq!(parts[1]["type"], "83");
            }
            PartitionTable::Gpt => {
                assert_eq!(t["label"], "gpt");
                assert_eq!(parts[0]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
                assert_eq!(parts[1]["type"], "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709");
                assert_eq!(
                    parts[1]["uuid"].as_str().unwrap().to_lowercase(),
                    report.partitions[1].part_uuid
                );
            }
        }

        let (boot, root) = (&report.partitions[0], &report.partitions[1]);
        let fat_img = dir.join("fat.part");
        extract(image, boot, &fat_img);
        Command::new("fsck.fat")
            .arg("-n")
            .arg(&fat_img)
            .run_checked()
            .unwrap();
        let at = fat_img.to_str().unwrap();
        let cfg = Command::new("mtype")
            .args(["-i", at, "::/config.txt"])
            .output_checked()
            .unwrap();
        assert_eq!(cfg, "arm_64bit=1\n");
        let listing = Command::new("mdir")
            .args(["-i", at, "::/overlays"])
            .output_checked()
            .unwrap();
        assert!(
            listing.contains("vc4-kms-v3d.dtbo") && listing.contains(&boot.fs_id),
            "{listing}"
        );

        let ext_img = dir.join("ext4.part");
        extract(image, root, &ext_img);
        Command::new("e2fsck")
            .arg("-fn")
            .arg(&ext_img)
            .run_checked()
            .unwrap();
        let debugfs = |req: &str| {
            Command::new("debugfs")
                .args(["-R", req])
                .arg(&ext_img)
                .output_checked()
                .unwrap()
        };
        let key = debugfs("stat /etc/user.key");
        assert!(
            key.contains("User:  1000   Group:  1000") && key.contains("Mode:  0600"),
            "{key}"
        );
        let link = debugfs("stat /etc/tool-link");
        assert!(
            link.contains("Type: symlink") && link.contains("../usr/bin/tool"),
            "{link}"
        );
        assert!(debugfs("stats").contains(&root.fs_id));
        assert_eq!(root.fs_id, fs_uuid(b"test-seed", "root").to_string());
    }

    #[test]
    fn mbr_image_passes_independent_checks() {
        let dir = tempfile::tempdir().unwrap();
        let layout = test_layout(PartitionTable::Mbr);
        let (image, report) = build(dir.path(), &layout, "mbr.img");
        check_image(dir.path(), &image, &report, PartitionTable::Mbr);
        assert!(report.disk_id.starts_with("0x"));
        assert_eq!(
            report.partitions[1].part_uuid,
            format!("{}-02", &report.disk_id[2..])
        );
    }

    #[test]
    fn gpt_image_passes_independent_checks() {
        let dir = tempfile::tempdir().unwrap();
        let layout = test_layout(PartitionTable::Gpt);
        let (image, report) = build(dir.path(), &layout, "gpt.img");
        check_image(dir.path(), &image, &report, PartitionTable::Gpt);
        Command::new("sfdisk")
            .arg("--verify")
            .arg(&image)
            .run_checked()
            .unwrap();
    }

    #[test]
    fn native_ext4_writer_image_passes_independent_checks() {
        let dir = tempfile::tempdir().unwrap();
        let layout = test_layout(PartitionTable::Gpt);
        let (image, report) = build_with(dir.path(), &layout, "native.img", Ext4Writer::Native);
        check_image(dir.path(), &image, &report, PartitionTable::Gpt);
    }

    #[test]
    fn same_inputs_give_identical_images() {
        let dir = tempfile::tempdir().unwrap();
        for table in [PartitionTable::Mbr, PartitionTable::Gpt] {
            let layout = test_layout(table);
            let (a, _) = build(dir.path(), &layout, &format!("{table:?}-a.img"));
            // Trees re-created a second later: new inodes, ctimes and mtimes.
            std::thread::sleep(std::time::Duration::from_millis(1100));
            let (b, _) = build(dir.path(), &layout, &format!("{table:?}-b.img"));
            assert!(
                fs::read(&a).unwrap() == fs::read(&b).unwrap(),
                "{table:?} images differ"
            );
        }
    }

    /// Flashing with bmap writes only mapped blocks; the card keeps old data
    /// elsewhere. Simulate that over garbage and check the result still
    /// passes every tool, i.e. nothing the filesystems rely on is a hole.
    #[test]
    fn image_survives_bmap_flash_over_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let layout = test_layout(PartitionTable::Mbr);
        let (image, report) = build(dir.path(), &layout, "img");
        let src = fs::File::open(&image).unwrap();
        // What a bmap maps: the image's data extents, in 4 KiB blocks.
        let ranges: Vec<std::ops::Range<u64>> = crate::fs::data_extents(&src, layout.total_size)
            .unwrap()
            .into_iter()
            .map(|e| e.start / 4096..e.end.div_ceil(4096))
            .collect();
        let mapped: u64 = ranges.iter().map(|r| r.end - r.start).sum::<u64>() * 4096;
        assert!(
            mapped < layout.total_size / 4,
            "image is sparse: {mapped} of {} bytes mapped",
            layout.total_size
        );
        // e2fsck does not read a clean journal, so check directly that the
        // journal (inode 8) was written rather than left as a hole.
        let root = &report.partitions[1];
        let ext_img = dir.path().join("journal-check.part");
        extract(&image, root, &ext_img);
        let stat = Command::new("debugfs")
            .args(["-R", "stat <8>"])
            .arg(&ext_img)
            .output_checked()
            .unwrap();
        let extents = stat
            .split("EXTENTS:")
            .nth(1)
            .expect("journal extents")
            .trim();
        for ext in extents.split(", ") {
            let phys = ext.split(':').nth(1).unwrap();
            let (a, b) = phys.split_once('-').unwrap_or((phys, phys));
            let first = root.start / 4096 + a.parse::<u64>().unwrap();
            let last = root.start / 4096 + b.parse::<u64>().unwrap();
            assert!(
                ranges.iter().any(|r| r.start <= first && last < r.end),
                "journal blocks {ext} are a hole"
            );
        }

        let card = dir.path().join("card");
        let mut out = fs::File::create(&card).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..layout.total_size / (1 << 20) {
            for b in chunk.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            out.write_all(&chunk).unwrap();
        }
        let mut src = src;
        for r in &ranges {
            src.seek(SeekFrom::Start(r.start * 4096)).unwrap();
            out.seek(SeekFrom::Start(r.start * 4096)).unwrap();
            std::io::copy(&mut (&mut src).take((r.end - r.start) * 4096), &mut out).unwrap();
        }
        drop(out);
        check_image(dir.path(), &card, &report, PartitionTable::Mbr);
    }

    #[test]
    fn fs_ids_are_per_partition_label() {
        assert_ne!(fs_uuid(b"s", "rootA"), fs_uuid(b"s", "rootB"));
        assert_eq!(
            fs_id(b"s", PartitionRole::Root, "rootA"),
            fs_uuid(b"s", "rootA").to_string()
        );
        assert_eq!(
            fs_id(b"s", PartitionRole::Boot, "boot"),
            crate::fs::fat::format_volume_id(fat_volume_id(b"s", "boot"))
        );
    }
}

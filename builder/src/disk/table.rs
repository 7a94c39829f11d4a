//! Writes the partition table (MBR, or GPT with its protective MBR) into an
//! existing image file. Every identifier is derived from a caller-given seed,
//! so the same inputs always produce the same bytes.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{ensure, Context, Result};
use gpt::disk::LogicalBlockSize;
use gpt::partition_types::{self, Type};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::layout::{DiskLayout, PlacedPartition, SECTOR};
use crate::config::board::{Arch, PartitionRole, PartitionTable};

/// Namespace for every UUID habuild derives (v5). Fixed forever: changing it
/// changes every disk, partition and filesystem id of every image.
const HABUILD_NAMESPACE: Uuid = uuid::uuid!("5b1f0f3e-8a4c-5d2e-9c61-3f7a2b9d4e10");

/// Partition identifiers as Linux reports them (blkid PARTUUID, sfdisk -J).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableIds {
    /// GPT: the disk GUID. MBR: the disk signature as `0x1234abcd`.
    pub disk_id: String,
    /// PARTUUID per partition, in layout order. GPT: the partition GUID;
    /// MBR: `<signature>-<2-digit index>`, which is what `root=PARTUUID=` takes.
    pub part_uuids: Vec<String>,
}

/// A UUID that depends only on `seed` and `purpose`. The seed is
/// length-prefixed so no (seed, purpose) pair can collide with another.
pub fn derive_uuid(seed: &[u8], purpose: &str) -> Uuid {
    let mut name = Vec::with_capacity(8 + seed.len() + purpose.len());
    name.extend_from_slice(&(seed.len() as u64).to_le_bytes());
    name.extend_from_slice(seed);
    name.extend_from_slice(purpose.as_bytes());
    Uuid::new_v5(&HABUILD_NAMESPACE, &name)
}

/// The MBR disk signature for `seed`: the first four bytes of a hash, never
/// zero (some tools treat a zero signature as "none").
pub fn mbr_signature(seed: &[u8]) -> u32 {
    let digest = Sha256::new()
        .chain_update(b"habuild mbr signature\0")
        .chain_update(seed)
        .finalize();
    let sig = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);
    if sig == 0 {
        1
    } else {
        sig
    }
}

/// The identifiers `write_table` will use, computable before the image exists
/// (e.g. for `root=PARTUUID=` in a kernel command line).
pub fn table_ids(layout: &DiskLayout, seed: &[u8]) -> TableIds {
    match layout.table {
        PartitionTable::Mbr => {
            let sig = mbr_signature(seed);
            TableIds {
                disk_id: format!("0x{sig:08x}"),
                part_uuids: (1..=layout.partitions.len())
                    .map(|i| format!("{sig:08x}-{i:02x}"))
                    .collect(),
            }
        }
        PartitionTable::Gpt => TableIds {
            disk_id: derive_uuid(seed, "gpt disk").to_string(),
            part_uuids: layout
                .partitions
                .iter()
                .map(|p| gpt_part_guid(seed, &p.label).to_string())
                .collect(),
        },
    }
}

fn gpt_part_guid(seed: &[u8], label: &str) -> Uuid {
    derive_uuid(seed, &format!("gpt partition {label}"))
}

/// Writes the table for `layout` into `image`, which must already be
/// `layout.total_size` bytes long. The gap before the first partition is
/// zeroed explicitly so that, when flashed via bmap, no stale MBR/GPT from the
/// card's previous life survives there.
pub fn write_table(image: &Path, layout: &DiskLayout, seed: &[u8]) -> Result<TableIds> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {} to write the partition table", image.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading the size of {}", image.display()))?
        .len();
    ensure!(
        len == layout.total_size,
        "{} is {len} bytes but the layout is for {} bytes",
        image.display(),
        layout.total_size
    );
    let head = layout.partitions.first().map_or(0, |p| p.start);
    zero_range(&mut file, 0, head)
        .with_context(|| format!("clearing the table area of {}", image.display()))?;

    let ids = table_ids(layout, seed);
    match layout.table {
        PartitionTable::Mbr => write_mbr(&mut file, layout, mbr_signature(seed)),
        PartitionTable::Gpt => write_gpt(&mut file, layout, seed),
    }
    .with_context(|| {
        format!(
            "writing the {:?} partition table to {}",
            layout.table,
            image.display()
        )
    })?;
    file.sync_all()
        .with_context(|| format!("syncing {}", image.display()))?;
    Ok(ids)
}

fn zero_range(file: &mut File, start: u64, end: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 64 * 1024];
    file.seek(SeekFrom::Start(start))?;
    let mut pos = start;
    while pos < end {
        let n = (end - pos).min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        pos += n as u64;
    }
    Ok(())
}

/// Sector number of a byte offset that the layout guarantees is aligned.
fn lba(bytes: u64) -> u64 {
    bytes / SECTOR
}

fn mbr_type(role: PartitionRole) -> u8 {
    match role {
        PartitionRole::Boot => 0x0c, // FAT32 with LBA addressing
        PartitionRole::Esp => 0xef,
        PartitionRole::Root => 0x83,
    }
}

fn write_mbr(file: &mut File, layout: &DiskLayout, signature: u32) -> Result<()> {
    let mut mbr = mbrman::MBR::new_from(file, SECTOR as u32, signature.to_le_bytes())
        .context("initialising the MBR")?;
    for (i, part) in layout.partitions.iter().enumerate() {
        let field = |v: u64, what: &str| {
            u32::try_from(lba(v)).with_context(|| {
                format!(
                    "partition `{}` {what} exceeds the MBR's 32-bit sectors",
                    part.label
                )
            })
        };
        // The Pi firmware and old BIOSes look for the active flag on the FAT partition.
        let boot = if part.role == PartitionRole::Boot {
            mbrman::BOOT_ACTIVE
        } else {
            mbrman::BOOT_INACTIVE
        };
        mbr[i + 1] = mbrman::MBRPartitionEntry {
            boot,
            // CHS is obsolete; every consumer we target uses the LBA fields.
            first_chs: mbrman::CHS::empty(),
            sys: mbr_type(part.role),
            last_chs: mbrman::CHS::empty(),
            starting_lba: field(part.start, "start")?,
            sectors: field(part.size, "size")?,
        };
    }
    mbr.write_into(file).context("writing the MBR")?;
    Ok(())
}

fn gpt_type(role: PartitionRole, arch: Arch) -> Type {
    match (role, arch) {
        (PartitionRole::Boot, _) => partition_types::BASIC,
        (PartitionRole::Esp, _) => partition_types::EFI,
        (PartitionRole::Root, Arch::Arm64) => partition_types::LINUX_ROOT_ARM_64,
        (PartitionRole::Root, Arch::Amd64) => partition_types::LINUX_ROOT_X64,
    }
}

fn gpt_entry(part: &PlacedPartition, arch: Arch, seed: &[u8]) -> gpt::partition::Partition {
    gpt::partition::Partition {
        part_type_guid: gpt_type(part.role, arch),
        part_guid: gpt_part_guid(seed, &part.label),
        first_lba: lba(part.start),
        last_lba: lba(part.end()) - 1,
        flags: 0,
        name: part.label.clone(),
    }
}

fn write_gpt(file: &mut File, layout: &DiskLayout, seed: &[u8]) -> Result<()> {
    let total_lbas = lba(layout.total_size);
    // The protective MBR covers the whole disk, capped at what 32 bits hold.
    let pmbr_len = u32::try_from(total_lbas - 1).unwrap_or(u32::MAX);
    gpt::mbr::ProtectiveMBR::with_lb_size(pmbr_len)
        .overwrite_lba0(file)
        .context("writing the protective MBR")?;

    let mut disk = gpt::GptConfig::new()
        .writable(true)
        .logical_block_size(LogicalBlockSize::Lb512)
        .create_from_device(&mut *file, Some(derive_uuid(seed, "gpt disk")))
        .context("initialising the GPT headers")?;
    let entries = layout
        .partitions
        .iter()
        .zip(1u32..)
        .map(|(part, id)| (id, gpt_entry(part, layout.arch, seed)))
        .collect();
    disk.update_partitions(entries)
        .context("filling the GPT partition array")?;
    disk.write()
        .context("writing the GPT headers and partition arrays")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::layout::{plan_layout, PartitionRequest, MIB};
    use crate::util::CommandExt;
    use std::process::Command;

    fn layout(table: PartitionTable, arch: Arch) -> DiskLayout {
        let requests = [
            PartitionRequest {
                label: "boot".into(),
                role: PartitionRole::Boot,
                size: Some(8 * MIB),
            },
            PartitionRequest {
                label: "root".into(),
                role: PartitionRole::Root,
                size: None,
            },
        ];
        plan_layout(table, arch, &requests, 32 * MIB).unwrap()
    }

    fn sfdisk_json(image: &Path) -> serde_json::Value {
        let out = Command::new("sfdisk")
            .arg("-J")
            .arg(image)
            .output_checked()
            .unwrap();
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["partitiontable"].clone()
    }

    fn image_with(
        layout: &DiskLayout,
        seed: &[u8],
    ) -> (tempfile::TempDir, std::path::PathBuf, TableIds) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        File::create(&path)
            .unwrap()
            .set_len(layout.total_size)
            .unwrap();
        let ids = write_table(&path, layout, seed).unwrap();
        (dir, path, ids)
    }

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        assert_eq!(derive_uuid(b"a", "x"), derive_uuid(b"a", "x"));
        assert_ne!(derive_uuid(b"a", "x"), derive_uuid(b"b", "x"));
        assert_ne!(derive_uuid(b"a", "x"), derive_uuid(b"a", "y"));
        // Length prefix: moving bytes between seed and purpose changes the id.
        assert_ne!(derive_uuid(b"ab", "c"), derive_uuid(b"a", "bc"));
        assert_eq!(derive_uuid(b"a", "x").get_version_num(), 5);
        assert_ne!(mbr_signature(b"a"), mbr_signature(b"b"));
    }

    #[test]
    fn mbr_table_reads_back_with_sfdisk() {
        let l = layout(PartitionTable::Mbr, Arch::Arm64);
        let (_dir, path, ids) = image_with(&l, b"seed");
        let t = sfdisk_json(&path);
        assert_eq!(t["label"], "dos");
        assert_eq!(t["id"], ids.disk_id.as_str());
        let parts = t["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (parts[0]["start"].as_u64(), parts[0]["size"].as_u64()),
            (Some(2048), Some(8 * 2048))
        );
        assert_eq!(parts[0]["type"], "c");
        assert_eq!(parts[0]["bootable"], true);
        assert_eq!(parts[1]["type"], "83");
        assert!(parts[1].get("bootable").is_none());
        assert_eq!(parts[1]["start"].as_u64(), Some(9 * 2048));
        assert_eq!(parts[1]["size"].as_u64(), Some(23 * 2048));
        assert!(ids.part_uuids[1].ends_with("-02"), "{:?}", ids.part_uuids);
    }

    #[test]
    fn gpt_table_reads_back_with_sfdisk() {
        for (arch, root_type) in [
            (Arch::Arm64, "B921B045-1DF0-41C3-AF44-4C6F280D3FAE"),
            (Arch::Amd64, "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709"),
        ] {
            let l = layout(PartitionTable::Gpt, arch);
            let (_dir, path, ids) = image_with(&l, b"seed");
            let t = sfdisk_json(&path);
            assert_eq!(t["label"], "gpt");
            assert_eq!(t["id"].as_str().unwrap().to_lowercase(), ids.disk_id);
            let parts = t["partitions"].as_array().unwrap();
            assert_eq!(parts[0]["type"], "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7");
            assert_eq!(parts[1]["type"], root_type);
            assert_eq!(parts[0]["name"], "boot");
            assert_eq!(parts[1]["name"], "root");
            assert_eq!(
                parts[1]["uuid"].as_str().unwrap().to_lowercase(),
                ids.part_uuids[1]
            );
            // Root ends 1 MiB before the end of the disk: 32 MiB - 1 MiB.
            let end = parts[1]["start"].as_u64().unwrap() + parts[1]["size"].as_u64().unwrap();
            assert_eq!(end, 31 * 2048);
            // sfdisk --verify checks both headers, CRCs and the protective MBR.
            Command::new("sfdisk")
                .arg("--verify")
                .arg(&path)
                .run_checked()
                .unwrap();
        }
    }

    #[test]
    fn same_seed_same_bytes() {
        let l = layout(PartitionTable::Gpt, Arch::Amd64);
        let (_a, pa, _) = image_with(&l, b"seed");
        let (_b, pb, _) = image_with(&l, b"seed");
        let (_c, pc, _) = image_with(&l, b"other");
        let read = |p: &Path| std::fs::read(p).unwrap();
        assert!(
            read(&pa) == read(&pb),
            "same seed must give identical tables"
        );
        assert!(read(&pa) != read(&pc), "another seed must change the ids");
    }

    #[test]
    fn rejects_wrong_image_size() {
        let l = layout(PartitionTable::Mbr, Arch::Arm64);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        File::create(&path)
            .unwrap()
            .set_len(l.total_size - MIB)
            .unwrap();
        let err = write_table(&path, &l, b"s").unwrap_err();
        assert!(format!("{err:#}").contains("layout is for"), "{err:#}");
    }
}

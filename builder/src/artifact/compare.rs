//! Comparing two builds of one image: the first differing byte, named as a
//! partition (from `<node>.json`'s layout) and, inside ext4, as the file
//! whose data, directory block or inode holds it. This is what a failed
//! reproducibility check needs to say, so the cause can be fixed.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use super::report::{ImageLayout, PartitionSpan};
use crate::util::CommandExt;
use anyhow::{Context, Result};

/// Where a byte offset of the disk falls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Region {
    /// Before the first partition, between partitions or after the last:
    /// partition table (and its GPT backup) or padding.
    Outside,
    /// `offset` is relative to the partition's start.
    Partition { index: usize, offset: u64 },
}

pub fn locate(parts: &[PartitionSpan], offset: u64) -> Region {
    parts
        .iter()
        .position(|p| offset >= p.start && offset < p.start + p.size)
        .map_or(Region::Outside, |index| Region::Partition {
            index,
            offset: offset - parts[index].start,
        })
}

/// First offset at which the two readers differ; a shorter stream differs
/// where it ends. None when equal.
pub fn first_difference(a: &mut impl Read, b: &mut impl Read) -> Result<Option<u64>> {
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut pos = 0u64;
    loop {
        let na = read_full(a, &mut ba).context("reading the first image")?;
        let nb = read_full(b, &mut bb).context("reading the second image")?;
        let n = na.min(nb);
        if let Some(i) = ba[..n].iter().zip(&bb[..n]).position(|(x, y)| x != y) {
            return Ok(Some(pos + i as u64));
        }
        if na != nb {
            return Ok(Some(pos + n as u64));
        }
        if na == 0 {
            return Ok(None);
        }
        pos += n as u64;
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Compares two image files; Ok(None) when identical, otherwise a sentence
/// naming the offset, the partition and (ext4) the file. `layout` is the
/// first build's.
pub fn explain_difference(a: &Path, b: &Path, layout: &ImageLayout) -> Result<Option<String>> {
    let mut fa = File::open(a).with_context(|| format!("opening {}", a.display()))?;
    let mut fb = File::open(b).with_context(|| format!("opening {}", b.display()))?;
    let Some(off) = first_difference(&mut fa, &mut fb)? else {
        return Ok(None);
    };
    let what = match locate(&layout.partitions, off) {
        Region::Outside => format!(
            "outside every partition ({} partition table or padding)",
            layout.table
        ),
        Region::Partition { index, offset } => {
            let p = &layout.partitions[index];
            let inside = if p.role == "root" {
                ext4_owner(a, p.start, offset)
                    .unwrap_or_else(|e| format!("(could not name the file: {e:#})"))
            } else {
                fat_region(a, p.start, offset)
                    .unwrap_or_else(|e| format!("(could not read the FAT geometry: {e:#})"))
            };
            format!(
                "in partition {} `{}` ({}) at partition offset {offset}: {inside}",
                index + 1,
                p.label,
                p.role
            )
        }
    };
    Ok(Some(format!(
        "{} and {} first differ at byte {off}, {what}",
        a.display(),
        b.display()
    )))
}

/// ext4 facts `debugfs -R stats` prints that map a block to an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ext4Geometry {
    pub block_size: u64,
    pub inodes_per_group: u64,
    pub inode_size: u64,
    /// First block of each group's inode table, by group.
    pub inode_tables: Vec<u64>,
}

pub fn parse_stats(text: &str) -> Option<Ext4Geometry> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let inode_tables = text
        .lines()
        .filter(|l| l.trim_start().starts_with("Group "))
        .filter_map(|l| l.split("inode table at ").nth(1))
        .filter_map(|v| v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
        .collect();
    Some(Ext4Geometry {
        block_size: field("Block size:")?,
        inodes_per_group: field("Inodes per group:")?,
        inode_size: field("Inode size:")?,
        inode_tables,
    })
}

impl Ext4Geometry {
    /// The inode whose on-disk record holds byte `offset` of the filesystem.
    pub fn inode_at(&self, offset: u64) -> Option<u64> {
        let table_blocks = self.inodes_per_group * self.inode_size / self.block_size;
        self.inode_tables
            .iter()
            .enumerate()
            .find_map(|(g, &first)| {
                let start = first * self.block_size;
                let end = (first + table_blocks) * self.block_size;
                (offset >= start && offset < end).then(|| {
                    g as u64 * self.inodes_per_group + (offset - start) / self.inode_size + 1
                })
            })
    }
}

/// `icheck` output: the inode owning the block, if any.
pub fn parse_icheck(text: &str) -> Option<u64> {
    text.lines().nth(1)?.split_whitespace().nth(1)?.parse().ok()
}

/// `ncheck` output: the first path of the inode.
pub fn parse_ncheck(text: &str) -> Option<String> {
    let line = text.lines().nth(1)?;
    let (_, path) = line.split_once(char::is_whitespace)?;
    // debugfs prints entries of the root directory as `//name`.
    let path = path.trim();
    let path = path
        .strip_prefix('/')
        .filter(|p| p.starts_with('/'))
        .unwrap_or(path);
    Some(path.to_string()).filter(|p| !p.is_empty())
}

/// Inodes below the first ordinary one have no path; name them (ext4 docs).
fn special_inode(ino: u64) -> Option<&'static str> {
    match ino {
        1 => Some("bad blocks inode"),
        2 => Some("root directory /"),
        7 => Some("resize inode (reserved group descriptor blocks)"),
        8 => Some("journal"),
        3..=10 => Some("reserved inode"),
        _ => None,
    }
}

fn debugfs(image: &Path, start: u64, request: &str) -> Result<String> {
    Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(format!("{}?offset={start}", image.display()))
        .output_checked()
        .with_context(|| format!("debugfs -R '{request}'"))
}

/// Names what holds byte `offset` of the ext4 filesystem at `start`.
pub fn ext4_owner(image: &Path, start: u64, offset: u64) -> Result<String> {
    let geo = parse_stats(&debugfs(image, start, "stats")?).context("parsing debugfs stats")?;
    let block = offset / geo.block_size;
    let (ino, how) = match geo.inode_at(offset) {
        Some(ino) => (ino, "the inode record (times, size, mode, extents)"),
        None => match parse_icheck(&debugfs(image, start, &format!("icheck {block}"))?) {
            Some(ino) => (ino, "data or directory entries"),
            None => {
                return Ok(format!(
                    "block {block}, filesystem metadata (superblock, group descriptors or bitmaps)"
                ))
            }
        },
    };
    let name = match special_inode(ino) {
        Some(s) => s.to_string(),
        None => parse_ncheck(&debugfs(image, start, &format!("ncheck {ino}"))?)
            .unwrap_or_else(|| "an unlinked inode".into()),
    };
    Ok(format!("block {block}, {how} of inode {ino}: {name}"))
}

/// FAT32 geometry from the boot sector (Microsoft's FAT specification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatGeometry {
    pub bytes_per_sector: u64,
    pub sectors_per_cluster: u64,
    pub reserved_sectors: u64,
    pub fats: u64,
    pub sectors_per_fat: u64,
}

pub fn parse_fat_boot_sector(bs: &[u8]) -> Option<FatGeometry> {
    let u16at = |o: usize| {
        Some(u64::from(u16::from_le_bytes([
            *bs.get(o)?,
            *bs.get(o + 1)?,
        ])))
    };
    let u32at = |o: usize| {
        Some(u64::from(u32::from_le_bytes(
            bs.get(o..o + 4)?.try_into().ok()?,
        )))
    };
    let g = FatGeometry {
        bytes_per_sector: u16at(11)?,
        sectors_per_cluster: u64::from(*bs.get(13)?),
        reserved_sectors: u16at(14)?,
        fats: u64::from(*bs.get(16)?),
        sectors_per_fat: u32at(36)?,
    };
    (g.bytes_per_sector >= 512 && g.sectors_per_cluster > 0).then_some(g)
}

impl FatGeometry {
    /// Which FAT area holds byte `offset` of the filesystem.
    pub fn describe(&self, offset: u64) -> String {
        let sector = offset / self.bytes_per_sector;
        let data = self.reserved_sectors + self.fats * self.sectors_per_fat;
        if sector < self.reserved_sectors {
            format!("reserved sector {sector} (boot sector, FSInfo or their backups)")
        } else if sector < data {
            format!("file allocation table, sector {sector}")
        } else {
            let cluster = (sector - data) / self.sectors_per_cluster + 2;
            format!("data cluster {cluster} (a file's content or a directory's entries)")
        }
    }
}

fn fat_region(image: &Path, start: u64, offset: u64) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let f = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let mut bs = [0u8; 512];
    f.read_exact_at(&mut bs, start)
        .with_context(|| format!("reading the FAT boot sector at {start}"))?;
    Ok(parse_fat_boot_sector(&bs)
        .context("not a FAT boot sector")?
        .describe(offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> Vec<PartitionSpan> {
        vec![
            PartitionSpan {
                label: "ESP".into(),
                role: "esp".into(),
                start: 1 << 20,
                size: 4 << 20,
                part_uuid: String::new(),
            },
            PartitionSpan {
                label: "root".into(),
                role: "root".into(),
                start: 5 << 20,
                size: 8 << 20,
                part_uuid: String::new(),
            },
        ]
    }

    #[test]
    fn offsets_map_to_partitions() {
        assert_eq!(locate(&parts(), 512), Region::Outside);
        assert_eq!(
            locate(&parts(), (1 << 20) + 7),
            Region::Partition {
                index: 0,
                offset: 7
            }
        );
        assert_eq!(
            locate(&parts(), 5 << 20),
            Region::Partition {
                index: 1,
                offset: 0
            }
        );
        assert_eq!(locate(&parts(), 13 << 20), Region::Outside, "backup GPT");
    }

    #[test]
    fn first_difference_finds_the_byte_and_length_changes() {
        let a = vec![7u8; 3 << 20];
        let mut b = a.clone();
        assert_eq!(first_difference(&mut &a[..], &mut &b[..]).unwrap(), None);
        b[(2 << 20) + 5] = 0;
        assert_eq!(
            first_difference(&mut &a[..], &mut &b[..]).unwrap(),
            Some((2 << 20) + 5)
        );
        assert_eq!(
            first_difference(&mut &a[..], &mut &a[..100]).unwrap(),
            Some(100)
        );
    }

    #[test]
    fn debugfs_outputs_are_parsed() {
        let stats = "Block size:               4096\nInodes per group:         7072\nInode size:\t          256\n Group  0: block bitmap at 84, inode bitmap at 90, inode table at 96\n           31517 free blocks\n Group  1: block bitmap at 85, inode bitmap at 91, inode table at 538\n";
        let g = parse_stats(stats).unwrap();
        assert_eq!(g.inode_tables, vec![96, 538]);
        assert_eq!(g.inode_at(96 * 4096), Some(1));
        assert_eq!(g.inode_at(96 * 4096 + 256 * 11 + 3), Some(12));
        assert_eq!(g.inode_at(538 * 4096), Some(7073));
        assert_eq!(g.inode_at(95 * 4096), None);
        assert_eq!(parse_icheck("Block\tInode number\n1234\t12\n"), Some(12));
        assert_eq!(
            parse_icheck("Block\tInode number\n1234\t<block not found>\n"),
            None
        );
        assert_eq!(
            parse_ncheck("Inode\tPathname\n12\t/etc/hostname\n").as_deref(),
            Some("/etc/hostname")
        );
        assert_eq!(
            parse_ncheck("Inode\tPathname\n12\t//bin\n").as_deref(),
            Some("/bin")
        );
        assert_eq!(parse_ncheck("Inode\tPathname\n"), None);
    }

    #[test]
    fn fat_areas_are_named() {
        let mut bs = [0u8; 512];
        bs[11..13].copy_from_slice(&512u16.to_le_bytes());
        bs[13] = 1;
        bs[14..16].copy_from_slice(&32u16.to_le_bytes());
        bs[16] = 2;
        bs[36..40].copy_from_slice(&100u32.to_le_bytes());
        let g = parse_fat_boot_sector(&bs).unwrap();
        assert!(g.describe(0).starts_with("reserved sector 0"));
        assert!(g.describe(40 * 512).starts_with("file allocation table"));
        assert!(g.describe(232 * 512).starts_with("data cluster 2 "));
        assert_eq!(parse_fat_boot_sector(&[0u8; 512]), None);
    }
}

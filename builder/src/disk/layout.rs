//! Partition layout math: where each partition starts and how big it is.
//!
//! Pure functions only, so every rule (alignment, the fill partition, the GPT
//! tail, MBR limits) is covered by table tests without touching a disk.

use thiserror::Error;

use crate::config::board::{Arch, PartitionRole, PartitionTable};

/// One mebibyte, the unit all partitions are aligned to.
pub const MIB: u64 = 1 << 20;

/// Logical sector size of every image we write.
pub const SECTOR: u64 = 512;

/// Where the first partition starts. 1 MiB leaves room for the MBR or the
/// primary GPT (34 sectors) and keeps partitions aligned to SD erase blocks.
pub const FIRST_PARTITION_START: u64 = MIB;

/// Space kept free at the end of a GPT disk. The backup header and entry
/// array need 33 sectors; we keep a whole MiB so the end stays aligned.
pub const GPT_TAIL_RESERVE: u64 = MIB;

/// MBR entries store start and length as 32-bit sector counts.
pub const MBR_MAX_BYTES: u64 = (u32::MAX as u64 + 1) * SECTOR;

/// Primary partitions an MBR can hold (we never write extended partitions).
pub const MBR_MAX_PARTITIONS: usize = 4;

/// Entries in the GPT array we write (the common default).
pub const GPT_MAX_PARTITIONS: usize = 128;

/// GPT partition names are 36 UTF-16 code units.
pub const GPT_NAME_MAX_UNITS: usize = 36;

/// Minimum headroom for ext4 metadata and journal on the root partition.
const ROOT_MIN_HEADROOM: u64 = 256 * MIB;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRequest {
    pub label: String,
    pub role: PartitionRole,
    /// Bytes, rounded up to a MiB. `None` takes the rest of the disk and is
    /// only allowed on the last partition.
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedPartition {
    pub label: String,
    pub role: PartitionRole,
    /// Byte offset from the start of the disk, MiB aligned.
    pub start: u64,
    /// Bytes, a multiple of a MiB.
    pub size: u64,
}

impl PlacedPartition {
    pub fn end(&self) -> u64 {
        self.start + self.size
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskLayout {
    pub table: PartitionTable,
    pub arch: Arch,
    pub total_size: u64,
    pub partitions: Vec<PlacedPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LayoutError {
    #[error("no partitions were requested")]
    NoPartitions,
    #[error("disk size {0} bytes is not a positive multiple of 1 MiB")]
    UnalignedDiskSize(u64),
    #[error("partition `{0}` has size zero")]
    ZeroSize(String),
    #[error("partition `{0}` takes the rest of the disk but is not the last partition")]
    FillNotLast(String),
    #[error("partition label `{0}` is used more than once")]
    DuplicateLabel(String),
    #[error("partition label `{0}` is empty or longer than {GPT_NAME_MAX_UNITS} UTF-16 units")]
    BadLabel(String),
    #[error("{count} partitions requested but a {table:?} table holds at most {max}")]
    TooManyPartitions {
        table: PartitionTable,
        count: usize,
        max: usize,
    },
    #[error("disk of {total} bytes is too small: the partitions need {needed} bytes")]
    TooSmall { needed: u64, total: u64 },
    #[error("disk of {0} bytes is larger than an MBR can address (2 TiB); use GPT")]
    TooLargeForMbr(u64),
}

/// Places the requested partitions back to back from 1 MiB, each start and
/// size aligned to 1 MiB. For GPT the last MiB stays free for the backup header.
pub fn plan_layout(
    table: PartitionTable,
    arch: Arch,
    requests: &[PartitionRequest],
    total_size: u64,
) -> Result<DiskLayout, LayoutError> {
    validate_requests(table, requests)?;
    if total_size == 0 || !total_size.is_multiple_of(MIB) {
        return Err(LayoutError::UnalignedDiskSize(total_size));
    }
    if table == PartitionTable::Mbr && total_size > MBR_MAX_BYTES {
        return Err(LayoutError::TooLargeForMbr(total_size));
    }
    let usable_end = match table {
        PartitionTable::Mbr => total_size,
        PartitionTable::Gpt => total_size.saturating_sub(GPT_TAIL_RESERVE),
    };
    // Bytes the disk must have for every fixed partition plus 1 MiB for a fill one.
    let tail = total_size - usable_end;
    let needed = requests
        .iter()
        .map(|r| r.size.map_or(MIB, round_up_mib))
        .fold(FIRST_PARTITION_START + tail, u64::saturating_add);
    if needed > total_size {
        return Err(LayoutError::TooSmall {
            needed,
            total: total_size,
        });
    }

    let mut start = FIRST_PARTITION_START;
    let mut partitions = Vec::with_capacity(requests.len());
    for req in requests {
        let size = match req.size {
            Some(bytes) => round_up_mib(bytes),
            None => usable_end - start,
        };
        partitions.push(PlacedPartition {
            label: req.label.clone(),
            role: req.role,
            start,
            size,
        });
        start += size;
    }
    Ok(DiskLayout {
        table,
        arch,
        total_size,
        partitions,
    })
}

/// Checks everything about the requests that does not depend on disk size.
fn validate_requests(
    table: PartitionTable,
    requests: &[PartitionRequest],
) -> Result<(), LayoutError> {
    if requests.is_empty() {
        return Err(LayoutError::NoPartitions);
    }
    let max = match table {
        PartitionTable::Mbr => MBR_MAX_PARTITIONS,
        PartitionTable::Gpt => GPT_MAX_PARTITIONS,
    };
    if requests.len() > max {
        return Err(LayoutError::TooManyPartitions {
            table,
            count: requests.len(),
            max,
        });
    }
    for (i, req) in requests.iter().enumerate() {
        let units = req.label.encode_utf16().count();
        if units == 0 || units > GPT_NAME_MAX_UNITS {
            return Err(LayoutError::BadLabel(req.label.clone()));
        }
        if requests[..i].iter().any(|r| r.label == req.label) {
            return Err(LayoutError::DuplicateLabel(req.label.clone()));
        }
        match req.size {
            Some(0) => return Err(LayoutError::ZeroSize(req.label.clone())),
            None if i + 1 != requests.len() => {
                return Err(LayoutError::FillNotLast(req.label.clone()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// A disk size that fits a boot partition of `boot_size` bytes and a root
/// filesystem holding `root_content_bytes`.
///
/// Root gets its content plus max(30 %, 256 MiB) for ext4 metadata, journal
/// and reserved blocks. The GPT tail MiB is always included so the size works
/// for either table. With `power_of_two` the result is the next power of two,
/// because QEMU's raspi machines reject SD images of any other size.
pub fn default_image_size(boot_size: u64, root_content_bytes: u64, power_of_two: bool) -> u64 {
    let headroom = (root_content_bytes / 10 * 3).max(ROOT_MIN_HEADROOM);
    let root = round_up_mib(root_content_bytes.saturating_add(headroom));
    let total = [round_up_mib(boot_size), root, GPT_TAIL_RESERVE]
        .into_iter()
        .fold(FIRST_PARTITION_START, u64::saturating_add);
    if power_of_two {
        total.checked_next_power_of_two().unwrap_or(total)
    } else {
        total
    }
}

/// Rounds up to a whole MiB (saturating at the largest MiB multiple).
pub fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(MIB).saturating_mul(MIB)
}

#[cfg(test)]
mod tests {
    use super::*;
    use PartitionRole::*;
    use PartitionTable::*;

    fn req(label: &str, role: PartitionRole, size: Option<u64>) -> PartitionRequest {
        PartitionRequest {
            label: label.into(),
            role,
            size,
        }
    }

    fn pi_requests(boot: u64) -> Vec<PartitionRequest> {
        vec![req("boot", Boot, Some(boot)), req("root", Root, None)]
    }

    /// (start, size) pairs in MiB, for compact expectations.
    fn placed_mib(layout: &DiskLayout) -> Vec<(u64, u64)> {
        layout
            .partitions
            .iter()
            .map(|p| (p.start / MIB, p.size / MIB))
            .collect()
    }

    #[test]
    fn placement_table() {
        struct Case {
            name: &'static str,
            table: PartitionTable,
            requests: Vec<PartitionRequest>,
            total_mib: u64,
            want: Vec<(u64, u64)>,
        }
        let cases = [
            Case {
                name: "mbr fill",
                table: Mbr,
                requests: pi_requests(256 * MIB),
                total_mib: 2048,
                want: vec![(1, 256), (257, 1791)],
            },
            Case {
                name: "gpt fill keeps tail",
                table: Gpt,
                requests: pi_requests(256 * MIB),
                total_mib: 2048,
                want: vec![(1, 256), (257, 1790)],
            },
            Case {
                name: "sizes round up to MiB",
                table: Mbr,
                requests: vec![req("boot", Boot, Some(MIB + 1)), req("root", Root, Some(1))],
                total_mib: 16,
                want: vec![(1, 2), (3, 1)],
            },
            Case {
                name: "fixed sizes leave free space",
                table: Gpt,
                requests: vec![
                    req("esp", Esp, Some(100 * MIB)),
                    req("root", Root, Some(200 * MIB)),
                ],
                total_mib: 1024,
                want: vec![(1, 100), (101, 200)],
            },
            Case {
                name: "exact fit gpt",
                table: Gpt,
                requests: vec![
                    req("esp", Esp, Some(8 * MIB)),
                    req("root", Root, Some(6 * MIB)),
                ],
                total_mib: 16,
                want: vec![(1, 8), (9, 6)],
            },
            Case {
                name: "minimal fill",
                table: Mbr,
                requests: pi_requests(8 * MIB),
                total_mib: 10,
                want: vec![(1, 8), (9, 1)],
            },
            Case {
                name: "four mbr partitions",
                table: Mbr,
                requests: vec![
                    req("a", Boot, Some(MIB)),
                    req("b", Root, Some(MIB)),
                    req("c", Root, Some(MIB)),
                    req("d", Root, None),
                ],
                total_mib: 8,
                want: vec![(1, 1), (2, 1), (3, 1), (4, 4)],
            },
        ];
        for case in cases {
            let layout = plan_layout(
                case.table,
                Arch::Arm64,
                &case.requests,
                case.total_mib * MIB,
            )
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(placed_mib(&layout), case.want, "{}", case.name);
            assert_eq!(layout.total_size, case.total_mib * MIB, "{}", case.name);
            for p in &layout.partitions {
                assert_eq!(p.start % MIB, 0, "{}: start aligned", case.name);
                assert_eq!(p.size % MIB, 0, "{}: size aligned", case.name);
            }
            let last_end = layout.partitions.last().unwrap().end();
            let limit = if case.table == Gpt {
                layout.total_size - GPT_TAIL_RESERVE
            } else {
                layout.total_size
            };
            assert!(last_end <= limit, "{}: GPT tail stays free", case.name);
        }
    }

    #[test]
    fn error_table() {
        let five: Vec<_> = (0..5)
            .map(|i| req(&format!("p{i}"), Root, Some(MIB)))
            .collect();
        let cases: Vec<(
            &str,
            PartitionTable,
            Vec<PartitionRequest>,
            u64,
            LayoutError,
        )> = vec![
            ("empty", Mbr, vec![], 64 * MIB, LayoutError::NoPartitions),
            (
                "zero size",
                Gpt,
                vec![req("boot", Boot, Some(0)), req("root", Root, None)],
                64 * MIB,
                LayoutError::ZeroSize("boot".into()),
            ),
            (
                "fill not last",
                Gpt,
                vec![req("root", Root, None), req("boot", Boot, Some(MIB))],
                64 * MIB,
                LayoutError::FillNotLast("root".into()),
            ),
            (
                "duplicate label",
                Mbr,
                vec![req("x", Boot, Some(MIB)), req("x", Root, None)],
                64 * MIB,
                LayoutError::DuplicateLabel("x".into()),
            ),
            (
                "empty label",
                Mbr,
                vec![req("", Root, None)],
                64 * MIB,
                LayoutError::BadLabel(String::new()),
            ),
            (
                "label too long",
                Gpt,
                vec![req(&"x".repeat(37), Root, None)],
                64 * MIB,
                LayoutError::BadLabel("x".repeat(37)),
            ),
            (
                "too many mbr",
                Mbr,
                five,
                64 * MIB,
                LayoutError::TooManyPartitions {
                    table: Mbr,
                    count: 5,
                    max: 4,
                },
            ),
            (
                "unaligned disk",
                Mbr,
                pi_requests(MIB),
                64 * MIB + 512,
                LayoutError::UnalignedDiskSize(64 * MIB + 512),
            ),
            (
                "zero disk",
                Mbr,
                pi_requests(MIB),
                0,
                LayoutError::UnalignedDiskSize(0),
            ),
            (
                "too small mbr",
                Mbr,
                pi_requests(63 * MIB),
                64 * MIB,
                LayoutError::TooSmall {
                    needed: 65 * MIB,
                    total: 64 * MIB,
                },
            ),
            (
                "gpt tail counts",
                Gpt,
                pi_requests(62 * MIB),
                64 * MIB,
                LayoutError::TooSmall {
                    needed: 65 * MIB,
                    total: 64 * MIB,
                },
            ),
            (
                "fixed overflow",
                Gpt,
                vec![
                    req("a", Boot, Some(40 * MIB)),
                    req("b", Root, Some(40 * MIB)),
                ],
                64 * MIB,
                LayoutError::TooSmall {
                    needed: 82 * MIB,
                    total: 64 * MIB,
                },
            ),
            (
                "mbr 2 TiB limit",
                Mbr,
                pi_requests(MIB),
                MBR_MAX_BYTES + MIB,
                LayoutError::TooLargeForMbr(MBR_MAX_BYTES + MIB),
            ),
        ];
        for (name, table, requests, total, want) in cases {
            assert_eq!(
                plan_layout(table, Arch::Amd64, &requests, total),
                Err(want),
                "{name}"
            );
        }
    }

    #[test]
    fn mbr_accepts_exactly_2_tib() {
        let layout = plan_layout(Mbr, Arch::Arm64, &pi_requests(256 * MIB), MBR_MAX_BYTES).unwrap();
        assert_eq!(layout.partitions[1].end(), MBR_MAX_BYTES);
    }

    #[test]
    fn default_size_table() {
        // (boot, content, power_of_two, expected)
        let cases = [
            // Small content: the 256 MiB floor wins. 1 + 256 + (100 + 256) + 1 = 614.
            (256 * MIB, 100 * MIB, false, 614 * MIB),
            (256 * MIB, 100 * MIB, true, 1024 * MIB),
            // Large content: 30 % wins. 2000 MiB * 1.3 = 2600 MiB; 1 + 512 + 2600 + 1 = 3114.
            (512 * MIB, 2000 * MIB, false, 3114 * MIB),
            (512 * MIB, 2000 * MIB, true, 4096 * MIB),
            // Odd byte counts round up to MiB; 1 + 1 + 257 + 1 = 260.
            (1, 1, false, 260 * MIB),
            // Already a power of two stays put: 1 + 254 + 256 + 1 = 512.
            (254 * MIB, 0, true, 512 * MIB),
        ];
        for (boot, content, pow2, want) in cases {
            let got = default_image_size(boot, content, pow2);
            assert_eq!(
                got / MIB,
                want / MIB,
                "boot={boot} content={content} pow2={pow2}"
            );
        }
    }

    #[test]
    fn default_size_fits_plan() {
        let (boot, content) = (256 * MIB, 900 * MIB);
        for pow2 in [false, true] {
            let total = default_image_size(boot, content, pow2);
            for table in [Mbr, Gpt] {
                let layout = plan_layout(table, Arch::Arm64, &pi_requests(boot), total).unwrap();
                assert!(
                    layout.partitions[1].size >= content + ROOT_MIN_HEADROOM,
                    "{table:?} pow2={pow2}"
                );
            }
        }
    }
}

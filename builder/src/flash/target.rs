//! Is this target safe to overwrite? Pure functions over what `sysfs` read
//! from /sys and /proc, so every refusal is testable with fixtures.

use super::human;
use super::refusal::Refusal;

/// A block device number (major, minor).
pub type DevNum = (u32, u32);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionFacts {
    pub name: String,
    pub dev: DevNum,
    /// Bytes from the start of the disk.
    pub start: u64,
    pub size: u64,
}

/// A device stacked on the target (device-mapper, md, bcache): `name`
/// holds `of`, which is the target, one of its partitions or another holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub of: String,
    pub name: String,
    pub dev: DevNum,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockFacts {
    /// Kernel name, e.g. `sdb` or `mmcblk0`.
    pub name: String,
    pub dev: DevNum,
    /// The whole disk's name when the target is a partition.
    pub parent: Option<String>,
    pub size: u64,
    pub removable: bool,
    pub read_only: bool,
    /// Vendor and model from /sys/block/<dev>/device, when the driver says.
    pub model: Option<String>,
    pub partitions: Vec<PartitionFacts>,
    /// Every device stacked on the disk or its partitions, transitively.
    pub holders: Vec<Holder>,
    /// 0 when the device cannot discard.
    pub discard_max_bytes: u64,
    pub logical_block_size: u64,
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub dev: DevNum,
    pub mount_point: String,
    pub source: String,
    /// The source's device number when it is a block device node; differs
    /// from `dev` on filesystems with anonymous devices (btrfs).
    pub source_dev: Option<DevNum>,
}

/// One active swap area from /proc/swaps, with what `sysfs` found it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    pub path: String,
    /// Set for a swap partition or device.
    pub block: Option<DevNum>,
    /// (st_dev, st_ino) for a swap file.
    pub file: Option<(u64, u64)>,
}

/// Parses /proc/self/mountinfo (see proc(5)). Lines that do not parse are
/// skipped: the kernel writes this file, a malformed line is not ours to fix.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_mount_line).collect()
}

fn parse_mount_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let dev = parse_devnum(fields.get(2)?)?;
    let mount_point = unescape(fields.get(4)?);
    let sep = fields.iter().position(|f| *f == "-")?;
    let source = unescape(fields.get(sep + 2)?);
    Some(Mount {
        dev,
        mount_point,
        source,
        source_dev: None,
    })
}

/// "8:17" → (8, 17).
pub fn parse_devnum(s: &str) -> Option<DevNum> {
    let (maj, min) = s.trim().split_once(':')?;
    Some((maj.parse().ok()?, min.parse().ok()?))
}

/// The file names in /proc/swaps (header line skipped).
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(unescape)
        .collect()
}

/// The kernel writes space, tab, newline and backslash in paths as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The refusals for a block device target, most serious first.
pub fn check_block(
    t: &BlockFacts,
    mounts: &[Mount],
    swaps: &[Swap],
    needed: u64,
    force: bool,
) -> Result<(), Refusal> {
    let device = format!("/dev/{}", t.name);
    let members = members(t);
    let member = |dev: DevNum| members.iter().find(|(_, d)| *d == dev).map(|(n, _)| n);
    let mount_on = |m: &Mount| member(m.dev).or_else(|| m.source_dev.and_then(member));

    if let Some(on) = mounts
        .iter()
        .filter(|m| m.mount_point == "/")
        .find_map(mount_on)
    {
        return Err(Refusal::RootDisk {
            device,
            on: format!("/dev/{on}"),
        });
    }
    if let Some(s) = swaps.iter().find(|s| s.block.and_then(member).is_some()) {
        return Err(Refusal::Swap {
            device,
            swap: s.path.clone(),
        });
    }
    if let Some((m, on)) = mounts.iter().find_map(|m| mount_on(m).map(|on| (m, on))) {
        return Err(Refusal::Mounted {
            device,
            on: format!("/dev/{on}"),
            mount_point: m.mount_point.clone(),
        });
    }
    if let Some(h) = t.holders.first() {
        return Err(Refusal::Held {
            device,
            on: format!("/dev/{}", h.of),
            holder: format!("/dev/{}", h.name),
        });
    }
    if let Some(disk) = &t.parent {
        return Err(Refusal::Partition {
            device,
            disk: format!("/dev/{disk}"),
        });
    }
    if t.read_only {
        return Err(Refusal::ReadOnly { device });
    }
    if t.size < needed {
        return Err(Refusal::TooSmall {
            device,
            size: t.size,
            needed,
        });
    }
    if !t.removable && !force {
        return Err(Refusal::NotRemovable {
            device,
            description: summary(t),
        });
    }
    Ok(())
}

/// A regular file target: refused when it is an active swap file or the
/// image (or bmap) being flashed.
pub fn check_file(
    path: &str,
    id: (u64, u64),
    swaps: &[Swap],
    sources: &[(u64, u64)],
) -> Result<(), Refusal> {
    if let Some(s) = swaps.iter().find(|s| s.file == Some(id)) {
        return Err(Refusal::Swap {
            device: path.to_string(),
            swap: s.path.clone(),
        });
    }
    if sources.contains(&id) {
        return Err(Refusal::SameAsSource {
            path: path.to_string(),
        });
    }
    Ok(())
}

/// The disk, its partitions and everything stacked on them.
fn members(t: &BlockFacts) -> Vec<(String, DevNum)> {
    let mut out = vec![(t.name.clone(), t.dev)];
    out.extend(t.partitions.iter().map(|p| (p.name.clone(), p.dev)));
    out.extend(t.holders.iter().map(|h| (h.name.clone(), h.dev)));
    out
}

/// "Generic SD/MMC 32GB, 29.7 GiB, removable".
pub fn summary(t: &BlockFacts) -> String {
    format!(
        "{}, {}, {}",
        t.model.as_deref().unwrap_or("unknown model"),
        human(t.size),
        if t.removable {
            "removable"
        } else {
            "NOT removable"
        }
    )
}

/// What the confirmation shows: the device and its current partitions.
pub fn describe(t: &BlockFacts) -> String {
    let mut s = format!("/dev/{}: {}\n", t.name, summary(t));
    if t.partitions.is_empty() {
        s.push_str("  no partitions\n");
    }
    for p in &t.partitions {
        s.push_str(&format!(
            "  /dev/{:<12} {:>10}  at {}\n",
            p.name,
            human(p.size),
            human(p.start)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
23 22 0:21 / /proc rw,nosuid shared:2 - proc proc rw
40 22 8:17 / /media/my\\040card rw,relatime shared:30 - vfat /dev/sdb1 rw
41 22 0:45 / /srv rw shared:31 - btrfs /dev/sdc2 rw
";

    const SWAPS: &str = "\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/dev/dm-1                               partition\t1048572\t\t0\t\t-2
/var/swap\\040file                        file\t\t1024\t\t0\t\t-3
";

    fn card() -> BlockFacts {
        BlockFacts {
            name: "sdb".into(),
            dev: (8, 16),
            size: 32 << 30,
            removable: true,
            model: Some("Generic SD/MMC".into()),
            partitions: vec![
                PartitionFacts {
                    name: "sdb1".into(),
                    dev: (8, 17),
                    start: 4 << 20,
                    size: 256 << 20,
                },
                PartitionFacts {
                    name: "sdb2".into(),
                    dev: (8, 18),
                    start: 260 << 20,
                    size: 31 << 30,
                },
            ],
            discard_max_bytes: 0,
            logical_block_size: 512,
            ..Default::default()
        }
    }

    fn check(t: &BlockFacts, mounts: &[Mount], swaps: &[Swap]) -> Result<(), Refusal> {
        check_block(t, mounts, swaps, 4 << 30, false)
    }

    #[test]
    fn parses_mountinfo_with_escapes() {
        let m = parse_mountinfo(MOUNTINFO);
        assert_eq!(m.len(), 4);
        assert_eq!(m[0].dev, (254, 0));
        assert_eq!(m[0].mount_point, "/");
        assert_eq!(m[2].mount_point, "/media/my card");
        assert_eq!(m[2].source, "/dev/sdb1");
    }

    #[test]
    fn parses_swaps_with_escapes() {
        assert_eq!(parse_swaps(SWAPS), ["/dev/dm-1", "/var/swap file"]);
        assert!(parse_swaps("Filename Type Size Used Priority\n").is_empty());
    }

    #[test]
    fn an_idle_card_passes() {
        let mounts = parse_mountinfo(MOUNTINFO)
            .into_iter()
            .filter(|m| m.dev != (8, 17))
            .collect::<Vec<_>>();
        assert_eq!(check(&card(), &mounts, &[]), Ok(()));
    }

    #[test]
    fn a_mounted_partition_refuses_the_disk() {
        let err = check(&card(), &parse_mountinfo(MOUNTINFO), &[]).unwrap_err();
        assert_eq!(
            err,
            Refusal::Mounted {
                device: "/dev/sdb".into(),
                on: "/dev/sdb1".into(),
                mount_point: "/media/my card".into()
            }
        );
        assert!(err.to_string().contains("unmount"), "{err}");
    }

    #[test]
    fn root_disk_is_refused_even_with_force() {
        let vda = BlockFacts {
            name: "vda".into(),
            dev: (254, 0),
            size: 256 << 30,
            ..Default::default()
        };
        let err = check_block(&vda, &parse_mountinfo(MOUNTINFO), &[], 1, true).unwrap_err();
        assert!(matches!(err, Refusal::RootDisk { .. }), "{err}");
    }

    #[test]
    fn root_through_device_mapper_and_btrfs_source() {
        // / on dm-0 (LUKS) over nvme0n1p3.
        let mut nvme = BlockFacts {
            name: "nvme0n1".into(),
            dev: (259, 0),
            size: 512 << 30,
            removable: true,
            partitions: vec![PartitionFacts {
                name: "nvme0n1p3".into(),
                dev: (259, 3),
                ..Default::default()
            }],
            holders: vec![Holder {
                of: "nvme0n1p3".into(),
                name: "dm-0".into(),
                dev: (253, 0),
            }],
            ..Default::default()
        };
        let on_dm = parse_mountinfo("1 0 253:0 / / rw - ext4 /dev/mapper/root rw\n");
        let err = check(&nvme, &on_dm, &[]).unwrap_err();
        assert_eq!(
            err,
            Refusal::RootDisk {
                device: "/dev/nvme0n1".into(),
                on: "/dev/dm-0".into()
            }
        );
        // btrfs: mountinfo has an anonymous 0:NN; the source node tells.
        nvme.holders.clear();
        let mut btrfs = parse_mountinfo("1 0 0:33 / / rw - btrfs /dev/nvme0n1p3 rw\n");
        assert_eq!(
            check(&nvme, &btrfs, &[]),
            Ok(()),
            "unknown without source_dev"
        );
        btrfs[0].source_dev = Some((259, 3));
        assert!(matches!(
            check(&nvme, &btrfs, &[]),
            Err(Refusal::RootDisk { .. })
        ));
    }

    #[test]
    fn swap_and_holders() {
        let mut t = card();
        t.holders.push(Holder {
            of: "sdb2".into(),
            name: "dm-1".into(),
            dev: (253, 1),
        });
        let swaps = [Swap {
            path: "/dev/dm-1".into(),
            block: Some((253, 1)),
            file: None,
        }];
        assert!(matches!(
            check(&t, &[], &swaps),
            Err(Refusal::Swap { ref swap, .. }) if swap == "/dev/dm-1"
        ));
        assert!(matches!(
            check(&t, &[], &[]),
            Err(Refusal::Held { ref holder, .. }) if holder == "/dev/dm-1"
        ));
    }

    #[test]
    fn size_partition_readonly_and_removable() {
        let mut t = card();
        t.size = 2 << 30;
        let err = check(&t, &[], &[]).unwrap_err();
        assert!(matches!(err, Refusal::TooSmall { .. }));
        assert!(err.to_string().contains("2.0 GiB"), "{err}");

        let mut t = card();
        t.read_only = true;
        assert!(matches!(check(&t, &[], &[]), Err(Refusal::ReadOnly { .. })));

        let mut t = card();
        t.name = "sdb1".into();
        t.parent = Some("sdb".into());
        t.partitions.clear();
        assert!(matches!(
            check(&t, &[], &[]),
            Err(Refusal::Partition { ref disk, .. }) if disk == "/dev/sdb"
        ));

        let mut t = card();
        t.removable = false;
        let err = check(&t, &[], &[]).unwrap_err();
        assert!(matches!(err, Refusal::NotRemovable { .. }));
        assert!(err.to_string().contains("--force"));
        assert_eq!(check_block(&t, &[], &[], 1, true), Ok(()));
    }

    #[test]
    fn file_targets() {
        let swaps = [Swap {
            path: "/swapfile".into(),
            block: None,
            file: Some((2049, 12)),
        }];
        assert!(matches!(
            check_file("/swapfile", (2049, 12), &swaps, &[]),
            Err(Refusal::Swap { .. })
        ));
        assert!(matches!(
            check_file("x.img", (1, 2), &swaps, &[(1, 2)]),
            Err(Refusal::SameAsSource { .. })
        ));
        assert_eq!(check_file("copy.img", (1, 3), &swaps, &[(1, 2)]), Ok(()));
    }

    #[test]
    fn description_lists_partitions() {
        let d = describe(&card());
        assert!(
            d.starts_with("/dev/sdb: Generic SD/MMC, 32.0 GiB, removable"),
            "{d}"
        );
        assert!(d.contains("/dev/sdb1") && d.contains("256.0 MiB"), "{d}");
    }
}

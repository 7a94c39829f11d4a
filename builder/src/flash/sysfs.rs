//! The I/O edge of target inspection: reads /sys and /proc into the plain
//! facts `target` judges. The roots are parameters so tests can point them
//! at a fixture tree.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::target::{
    parse_devnum, parse_mountinfo, parse_swaps, BlockFacts, DevNum, Holder, Mount, PartitionFacts,
    Swap,
};

/// Where the kernel's views live (the real ones, or a test's fixtures).
#[derive(Debug, Clone)]
pub struct Host {
    pub sys: PathBuf,
    pub mountinfo: PathBuf,
    pub swaps: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            sys: PathBuf::from("/sys"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            swaps: PathBuf::from("/proc/swaps"),
        }
    }
}

/// /sys counts sizes in 512-byte sectors whatever the device's sector size.
const SYSFS_SECTOR: u64 = 512;

impl Host {
    /// Facts about the block device with number `dev`.
    pub fn block(&self, dev: DevNum) -> Result<BlockFacts> {
        let link = self.sys.join(format!("dev/block/{}:{}", dev.0, dev.1));
        let dir = std::fs::canonicalize(&link).with_context(|| {
            format!(
                "finding block device {}:{} in {}",
                dev.0,
                dev.1,
                link.display()
            )
        })?;
        let name = file_name(&dir);
        let is_partition = dir.join("partition").exists();
        let parent = is_partition.then(|| dir.parent().map(file_name)).flatten();
        // Model, removable and queue limits belong to the whole disk.
        let disk_dir = if is_partition {
            dir.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| dir.clone())
        } else {
            dir.clone()
        };
        let model = ["vendor", "model"]
            .iter()
            .filter_map(|f| read_trim(&disk_dir.join("device").join(f)))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let partitions = if is_partition {
            Vec::new()
        } else {
            self.partitions(&dir)?
        };
        let mut holders = Vec::new();
        self.holders_of(&dir, &mut holders)?;
        for p in &partitions {
            self.holders_of(&dir.join(&p.name), &mut holders)?;
        }
        Ok(BlockFacts {
            name,
            dev,
            parent,
            size: read_u64(&dir.join("size"))? * SYSFS_SECTOR,
            removable: read_u64(&disk_dir.join("removable")).unwrap_or(0) == 1
                || is_sd_card(&disk_dir),
            read_only: read_u64(&dir.join("ro")).unwrap_or(0) == 1,
            model: (!model.is_empty()).then_some(model),
            partitions,
            holders,
            discard_max_bytes: read_u64(&disk_dir.join("queue/discard_max_bytes")).unwrap_or(0),
            logical_block_size: read_u64(&disk_dir.join("queue/logical_block_size"))
                .unwrap_or(SYSFS_SECTOR),
        })
    }

    fn partitions(&self, disk: &Path) -> Result<Vec<PartitionFacts>> {
        let mut out = Vec::new();
        for entry in read_dir_sorted(disk)? {
            if !entry.join("partition").exists() {
                continue;
            }
            out.push(PartitionFacts {
                name: file_name(&entry),
                dev: read_dev(&entry)?,
                start: read_u64(&entry.join("start"))? * SYSFS_SECTOR,
                size: read_u64(&entry.join("size"))? * SYSFS_SECTOR,
            });
        }
        Ok(out)
    }

    /// Appends the holders of the device at `dir`, and theirs, depth first.
    fn holders_of(&self, dir: &Path, out: &mut Vec<Holder>) -> Result<()> {
        let holders = dir.join("holders");
        if !holders.is_dir() {
            return Ok(());
        }
        let of = file_name(dir);
        for h in read_dir_sorted(&holders)? {
            let name = file_name(&h);
            if out.iter().any(|x| x.name == name) {
                continue;
            }
            let hdir = self.sys.join("class/block").join(&name);
            out.push(Holder {
                of: of.clone(),
                name,
                dev: read_dev(&hdir)?,
            });
            self.holders_of(&hdir, out)?;
        }
        Ok(())
    }

    /// The mount table, with each block-device source resolved to its number.
    pub fn mounts(&self) -> Result<Vec<Mount>> {
        let text = std::fs::read_to_string(&self.mountinfo)
            .with_context(|| format!("reading {}", self.mountinfo.display()))?;
        let mut mounts = parse_mountinfo(&text);
        for m in &mut mounts {
            if m.source.starts_with('/') {
                m.source_dev = block_dev_of(Path::new(&m.source));
            }
        }
        Ok(mounts)
    }

    /// Active swap areas, each resolved to a device number or file identity.
    pub fn swaps(&self) -> Result<Vec<Swap>> {
        let text = std::fs::read_to_string(&self.swaps)
            .with_context(|| format!("reading {}", self.swaps.display()))?;
        Ok(parse_swaps(&text)
            .into_iter()
            .map(|path| {
                let meta = std::fs::metadata(&path).ok();
                let block = block_dev_of(Path::new(&path));
                let file = meta
                    .filter(|m| m.file_type().is_file())
                    .map(|m| (m.dev(), m.ino()));
                Swap { path, block, file }
            })
            .collect())
    }
}

/// Built-in SD slots (mmcblk) report `removable` 0, but the MMC layer
/// says what is in the slot: "SD" for a card, "MMC" for soldered eMMC
/// (which stays non-removable).
fn is_sd_card(disk_dir: &Path) -> bool {
    read_trim(&disk_dir.join("device/type")).as_deref() == Some("SD")
}

/// The device number of a block device node; None for anything else.
pub fn block_dev_of(path: &Path) -> Option<DevNum> {
    let meta = std::fs::metadata(path).ok()?;
    meta.file_type().is_block_device().then(|| {
        let rdev = meta.rdev();
        (rustix::fs::major(rdev), rustix::fs::minor(rdev))
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn read_u64(p: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds {:?}, not a number", p.display(), text.trim()))
}

fn read_dev(dir: &Path) -> Result<DevNum> {
    let p = dir.join("dev");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    parse_devnum(&text).with_context(|| format!("{} holds {text:?}, not MAJOR:MINOR", p.display()))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        out.push(
            e.with_context(|| format!("listing {}", dir.display()))?
                .path(),
        );
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::refusal::Refusal;
    use crate::flash::target::check_block;

    fn put(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A fixture /sys: sdb (removable card, two partitions, sdb2 held by
    /// dm-3) laid out as the kernel does, with /sys/dev/block links.
    fn fixture(root: &Path) -> Host {
        let sys = root.join("sys");
        let disk = sys.join("devices/usb1/host0/block/sdb");
        put(&disk.join("dev"), "8:16\n");
        put(&disk.join("size"), "62333952\n");
        put(&disk.join("removable"), "1\n");
        put(&disk.join("ro"), "0\n");
        put(&disk.join("device/vendor"), "Generic \n");
        put(&disk.join("device/model"), "STORAGE DEVICE  \n");
        put(&disk.join("queue/discard_max_bytes"), "0\n");
        put(&disk.join("queue/logical_block_size"), "512\n");
        std::fs::create_dir_all(disk.join("holders")).unwrap();
        for (n, start, size) in [(1, 8192, 524288), (2, 532480, 61801472)] {
            let p = disk.join(format!("sdb{n}"));
            put(&p.join("partition"), &format!("{n}\n"));
            put(&p.join("dev"), &format!("8:{}\n", 16 + n));
            put(&p.join("start"), &format!("{start}\n"));
            put(&p.join("size"), &format!("{size}\n"));
            put(&p.join("ro"), "0\n");
            std::fs::create_dir_all(p.join("holders")).unwrap();
        }
        let dm = sys.join("devices/virtual/block/dm-3");
        put(&dm.join("dev"), "253:3\n");
        std::fs::create_dir_all(dm.join("holders")).unwrap();
        std::fs::create_dir_all(sys.join("class/block")).unwrap();
        std::os::unix::fs::symlink(&dm, sys.join("class/block/dm-3")).unwrap();
        std::os::unix::fs::symlink(&dm, disk.join("sdb2/holders/dm-3")).unwrap();
        std::fs::create_dir_all(sys.join("dev/block")).unwrap();
        std::os::unix::fs::symlink(&disk, sys.join("dev/block/8:16")).unwrap();
        std::os::unix::fs::symlink(disk.join("sdb1"), sys.join("dev/block/8:17")).unwrap();
        put(
            &root.join("mountinfo"),
            "22 1 254:0 / / rw - ext4 /dev/vda rw\n",
        );
        put(&root.join("swaps"), "Filename Type Size Used Priority\n");
        Host {
            sys,
            mountinfo: root.join("mountinfo"),
            swaps: root.join("swaps"),
        }
    }

    #[test]
    fn reads_a_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        let host = fixture(dir.path());
        let t = host.block((8, 16)).unwrap();
        assert_eq!(t.name, "sdb");
        assert_eq!(t.size, 62333952 * 512);
        assert!(t.removable && !t.read_only);
        assert_eq!(t.model.as_deref(), Some("Generic STORAGE DEVICE"));
        assert_eq!(t.partitions.len(), 2);
        assert_eq!(t.partitions[1].start, 532480 * 512);
        assert_eq!(
            t.holders,
            [Holder {
                of: "sdb2".into(),
                name: "dm-3".into(),
                dev: (253, 3)
            }]
        );
        let mounts = host.mounts().unwrap();
        let err = check_block(&t, &mounts, &host.swaps().unwrap(), 1 << 30, false).unwrap_err();
        assert!(matches!(err, Refusal::Held { .. }), "{err}");

        // A card in a built-in slot: removable 0, but the MMC type says SD.
        let mmc = host.sys.join("devices/mmc0/block/mmcblk0");
        put(&mmc.join("dev"), "179:0\n");
        put(&mmc.join("size"), "1000\n");
        put(&mmc.join("removable"), "0\n");
        put(&mmc.join("device/type"), "SD\n");
        std::os::unix::fs::symlink(&mmc, host.sys.join("dev/block/179:0")).unwrap();
        assert!(host.block((179, 0)).unwrap().removable);
        put(&mmc.join("device/type"), "MMC\n");
        assert!(
            !host.block((179, 0)).unwrap().removable,
            "eMMC is not removable"
        );

        let p = host.block((8, 17)).unwrap();
        assert_eq!(p.parent.as_deref(), Some("sdb"));
        assert!(p.removable, "partitions inherit the disk's removable flag");
        assert!(host.block((9, 9)).is_err());
    }

    #[test]
    fn reads_the_real_host() {
        let host = Host::default();
        let mounts = host.mounts().unwrap();
        assert!(mounts.iter().any(|m| m.mount_point == "/"));
        host.swaps().unwrap();
    }
}

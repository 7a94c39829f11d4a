//! The throw-away copy a test guest boots: the image copied sparsely, plus
//! one test-only unit (qemu/habuild-check.service) that reports to the
//! serial console. The image itself is never opened for writing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::CommandExt;

/// Where a partition lies in the image (bytes).
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    pub start: u64,
    pub size: u64,
}

/// Copies `image` to `copy` keeping holes (fast, and the copy stays small).
pub fn sparse_copy(image: &Path, copy: &Path) -> Result<()> {
    Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(copy)
        .run_checked()
        .with_context(|| format!("copying {} for the test guest", image.display()))
}

/// Writes one partition of `image` to its own file (mtools cannot open a
/// FAT at an offset inside a larger file).
pub fn extract(image: &Path, part: Extent, out: &Path) -> Result<()> {
    let mut src = File::open(image).with_context(|| format!("opening {}", image.display()))?;
    src.seek(SeekFrom::Start(part.start))
        .with_context(|| format!("seeking in {}", image.display()))?;
    let mut dst = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut left = part.size;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = buf.len().min(left as usize);
        src.read_exact(&mut buf[..n])
            .with_context(|| format!("reading {}", image.display()))?;
        dst.write_all(&buf[..n])
            .with_context(|| format!("writing {}", out.display()))?;
        left -= n as u64;
    }
    Ok(())
}

/// Copies files out of a FAT filesystem image.
pub fn fat_files(fat: &Path, names: &[&str], dest: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for n in names {
        let to = dest.join(n.rsplit('/').next().unwrap_or(n));
        Command::new("mcopy")
            .arg("-n")
            .arg("-i")
            .arg(fat)
            .arg(format!("::{n}"))
            .arg(&to)
            .run_checked()
            .with_context(|| format!("reading {n} from the boot partition"))?;
        out.push(to);
    }
    Ok(out)
}

/// Adds the check script and its enabled unit to the root filesystem at
/// `root` inside the copy (debugfs writes through e2fsprogs' `?offset=`).
pub fn add_check_unit(
    copy: &Path,
    root: Extent,
    project_qemu_dir: &Path,
    work: &Path,
) -> Result<()> {
    let fs = format!("{}?offset={}", copy.display(), root.start);
    let script = project_qemu_dir.join("guest-check.sh");
    let unit = project_qemu_dir.join("habuild-check.service");
    let cmds = work.join("debugfs-cmds");
    let text = format!(
        "mkdir /usr/local/lib/habuild-check\n\
         write {} /usr/local/lib/habuild-check/guest-check.sh\n\
         write {} /etc/systemd/system/habuild-check.service\n\
         symlink /etc/systemd/system/multi-user.target.wants/habuild-check.service /etc/systemd/system/habuild-check.service\n",
        script.display(),
        unit.display()
    );
    std::fs::write(&cmds, text).with_context(|| format!("writing {}", cmds.display()))?;
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&fs)
        .output_checked()
        .context("adding the check unit to the test copy")?;
    log::debug!("debugfs: {out}");
    // debugfs reports command errors on stderr but exits 0: verify instead.
    let back = Command::new("debugfs")
        .arg("-R")
        .arg("stat /etc/systemd/system/multi-user.target.wants/habuild-check.service")
        .arg(&fs)
        .output_checked()?;
    anyhow::ensure!(
        back.contains("Type: symlink"),
        "the check unit was not added to the test copy of {}",
        copy.display()
    );
    Ok(())
}

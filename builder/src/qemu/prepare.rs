//! The throw-away copy a test guest boots: the image copied sparsely, plus
//! one test-only unit (qemu/habuild-check.service) that reports to the
//! serial console. The image itself is never opened for writing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::artifact::report::PartitionSpan;
use crate::util::CommandExt;

/// Where a partition lies in the image (bytes).
#[derive(Debug, Clone, Copy)]
pub struct Extent {
    pub start: u64,
    pub size: u64,
}

/// Copies `image` to `copy` keeping holes (fast, and the copy stays small).
impl From<&PartitionSpan> for Extent {
    fn from(p: &PartitionSpan) -> Extent {
        Extent {
            start: p.start,
            size: p.size,
        }
    }
}

pub fn sparse_copy(image: &Path, copy: &Path) -> Result<()> {
    Command::new("cp")
        .arg("--sparse=always")
        .arg(image)
        .arg(copy)
        .run_checked()
        .with_context(|| format!("copying {} for the test guest", image.display()))
}

/// Makes `file` `size` bytes long (the new part a hole), as a larger card.
pub fn grow_file(file: &Path, size: u64) -> Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("growing {} to {size} bytes", file.display()))
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
    add_test_unit(
        copy,
        root,
        &project_qemu_dir.join("guest-check.sh"),
        &project_qemu_dir.join("habuild-check.service"),
        project_qemu_dir,
        work,
    )
}

/// Adds `script` and the shell library it sources (`seal.sh` from
/// `project_qemu_dir`) to /usr/local/lib/habuild-check/, and `unit`
/// (enabled for multi-user.target, under its own name) to the root
/// filesystem at `root` inside the copy.
pub fn add_test_unit(
    copy: &Path,
    root: Extent,
    script: &Path,
    unit: &Path,
    project_qemu_dir: &Path,
    work: &Path,
) -> Result<()> {
    let fs = format!("{}?offset={}", copy.display(), root.start);
    let name = |p: &Path| -> Result<String> {
        Ok(p.file_name()
            .with_context(|| format!("{} has no file name", p.display()))?
            .to_string_lossy()
            .into_owned())
    };
    let (script_name, unit_name) = (name(script)?, name(unit)?);
    let cmds = work.join(format!("debugfs-cmds-{unit_name}"));
    let text = format!(
        "mkdir /usr/local/lib/habuild-check\n\
         write {} /usr/local/lib/habuild-check/{script_name}\n\
         write {} /usr/local/lib/habuild-check/seal.sh\n\
         write {} /etc/systemd/system/{unit_name}\n\
         symlink /etc/systemd/system/multi-user.target.wants/{unit_name} /etc/systemd/system/{unit_name}\n",
        script.display(),
        project_qemu_dir.join("seal.sh").display(),
        unit.display()
    );
    std::fs::write(&cmds, text).with_context(|| format!("writing {}", cmds.display()))?;
    let out = Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&cmds)
        .arg(&fs)
        .output_checked()
        .with_context(|| format!("adding {unit_name} to the test copy"))?;
    log::debug!("debugfs: {out}");
    // debugfs reports command errors on stderr but exits 0: verify instead.
    for (path, kind) in [
        (
            format!("/etc/systemd/system/multi-user.target.wants/{unit_name}"),
            "symlink",
        ),
        (
            format!("/usr/local/lib/habuild-check/{script_name}"),
            "regular",
        ),
        (
            "/usr/local/lib/habuild-check/seal.sh".to_string(),
            "regular",
        ),
    ] {
        let back = Command::new("debugfs")
            .arg("-R")
            .arg(format!("stat {path}"))
            .arg(&fs)
            .output_checked()?;
        anyhow::ensure!(
            back.contains(&format!("Type: {kind}")),
            "{path} was not added to the test copy of {}",
            copy.display()
        );
    }
    Ok(())
}

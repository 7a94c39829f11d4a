//! systemd-repart as a contender of the assembly benchmark: the same disk
//! built offline from repart.d definitions, and checked (see main.rs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use habuild::disk::layout::DiskLayout;
use habuild::qemu::prepare::{extract, Extent};
use habuild::util::CommandExt;

use super::{e2fsck_files, EPOCH};

/// The attached loop devices, as `losetup -a` lists them.
pub fn loop_devices() -> Result<String> {
    Command::new("losetup").arg("-a").output_checked()
}

/// systemd-repart building the same disk offline from repart.d definitions.
pub struct Repart {
    bin: std::ffi::OsString,
    definitions: PathBuf,
    boot: PathBuf,
}

impl Repart {
    /// `$HABUILD_BENCH_REPART` or `systemd-repart`, if it has `--offline`,
    /// with definitions for the layout written under `scratch`; `None`,
    /// said why, if there is none.
    pub fn find(
        scratch: &Path,
        root: &Path,
        boot: &Path,
        layout: &DiskLayout,
    ) -> Result<Option<Self>> {
        let bin =
            std::env::var_os("HABUILD_BENCH_REPART").unwrap_or_else(|| "systemd-repart".into());
        match Command::new(&bin).arg("--help").output_checked() {
            Err(e) => {
                eprintln!("systemd-repart not measured: {e:#}");
                return Ok(None);
            }
            Ok(help) if !help.contains("--offline=") => {
                let bin = bin.to_string_lossy();
                eprintln!(
                    "systemd-repart not measured: {bin} has no --offline \
                     (systemd 254 or later needed; see this example's doc comment)"
                );
                return Ok(None);
            }
            Ok(_) => {}
        }
        let version = Command::new(&bin).arg("--version").output_checked()?;
        eprintln!("systemd-repart: {}", version.lines().next().unwrap_or("?"));
        let definitions = scratch.join("repart.d");
        std::fs::create_dir_all(&definitions)?;
        let (esp, root_part) = (&layout.partitions[0], &layout.partitions[1]);
        // systemd-repart leaves out of a copied tree the contents of the API
        // file systems' directories and of other partitions' mount points
        // (the ESP's /boot and /efi); naming them again copies them as well.
        let mut root_copies = format!("CopyFiles={}:/\n", root.display());
        for dir in ["boot", "efi", "dev", "proc", "sys", "run", "tmp", "var/tmp"] {
            if root.join(dir).is_dir() {
                root_copies += &format!("CopyFiles={}:/{dir}\n", root.join(dir).display());
            }
        }
        let esp_conf = format!(
            "[Partition]
Type=esp
Label=ESP
Format=vfat
CopyFiles={boot}:/
SizeMinBytes={size}
SizeMaxBytes={size}
",
            boot = boot.display(),
            size = esp.size,
        );
        let root_conf = format!(
            "[Partition]
Type=root
Label=root
Format=ext4
{root_copies}SizeMinBytes={size}
SizeMaxBytes={size}
",
            size = root_part.size,
        );
        for (file, text) in [("10-esp.conf", esp_conf), ("20-root.conf", root_conf)] {
            std::fs::write(definitions.join(file), text)
                .with_context(|| format!("writing {file}"))?;
        }
        Ok(Some(Self {
            bin,
            definitions,
            boot: boot.to_path_buf(),
        }))
    }

    fn args(&self, image: &Path, size: u64) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = [
            "--offline=yes",
            "--dry-run=no",
            "--empty=create",
            "--seed=0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "--pretty=no",
            "--no-pager",
        ]
        .map(Into::into)
        .into();
        args.push(format!("--size={size}").into());
        args.push(format!("--definitions={}", self.definitions.display()).into());
        args.push(image.into());
        args
    }

    /// One run into a new `image` of `size` bytes; returns its wall time.
    pub fn run(&self, image: &Path, size: u64) -> Result<f64> {
        let t = Instant::now();
        Command::new(&self.bin)
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
            .args(self.args(image, size))
            .run_checked()
            .context("running systemd-repart")?;
        Ok(t.elapsed().as_secs_f64())
    }

    /// One untimed run under strace, if installed: `--offline=yes` must open
    /// no loop device and mount nothing.
    pub fn traced(&self, image: &Path, size: u64) -> Result<()> {
        if Command::new("strace").arg("-V").output_checked().is_err() {
            eprintln!("systemd-repart: strace not found, its system calls are not checked");
            return Ok(());
        }
        let trace = image.with_extension("strace");
        Command::new("strace")
            .args([
                "-f",
                "-e",
                "trace=open,openat,mount,fsmount,move_mount",
                "-o",
            ])
            .arg(&trace)
            .arg(&self.bin)
            .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
            .args(self.args(image, size))
            .run_checked()
            .context("running systemd-repart under strace")?;
        let text = std::fs::read_to_string(&trace).context("reading the strace output")?;
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("\"/dev/loop") || l.contains("mount("))
            .collect();
        ensure!(
            bad.is_empty(),
            "systemd-repart --offline=yes used loop devices or mounts:\n{}",
            bad.join("\n")
        );
        eprintln!("systemd-repart: strace shows no loop device opened and no mount");
        std::fs::remove_file(&trace)?;
        std::fs::remove_file(image)?;
        Ok(())
    }

    /// Untimed checks of one image: the partitions where habuild puts them,
    /// both filesystems clean, and all files copied.
    pub fn check(&self, image: &Path, layout: &DiskLayout, habuild_files: u64) -> Result<()> {
        let table: serde_json::Value = serde_json::from_str(
            &Command::new("sfdisk")
                .arg("--json")
                .arg(image)
                .output_checked()?,
        )
        .context("parsing sfdisk --json")?;
        let placed: Vec<(u64, u64)> = table["partitiontable"]["partitions"]
            .as_array()
            .context("no partitions in sfdisk --json")?
            .iter()
            .map(|p| Some((p["start"].as_u64()? * 512, p["size"].as_u64()? * 512)))
            .collect::<Option<_>>()
            .context("a partition without start or size in sfdisk --json")?;
        let planned: Vec<(u64, u64)> = layout
            .partitions
            .iter()
            .map(|p| (p.start, p.size))
            .collect();
        ensure!(
            placed == planned,
            "systemd-repart placed {placed:?}, habuild {planned:?} (bytes)"
        );
        let (esp, root) = (placed[0], placed[1]);
        let files =
            e2fsck_files(image, root.0).context("e2fsck of systemd-repart's root filesystem")?;
        // The host's mke2fs.conf may add `orphan_file`, one more inode, which
        // habuild leaves out (its targets' e2fsprogs cannot handle it).
        let features = Command::new("debugfs")
            .args(["-R", "features"])
            .arg(format!("{}?offset={}", image.display(), root.0))
            .output_checked()?;
        let orphan_file = u64::from(features.contains(" orphan_file"));
        ensure!(
            files == habuild_files + orphan_file,
            "systemd-repart's root filesystem has {files} inodes, \
             habuild's {habuild_files} (orphan_file: {orphan_file})"
        );
        // fsck.fat takes no offset: check a copy of the ESP.
        let esp_copy = image.with_extension("esp");
        let extent = Extent {
            start: esp.0,
            size: esp.1,
        };
        extract(image, extent, &esp_copy).context("copying the ESP out")?;
        Command::new("fsck.fat")
            .arg("-n")
            .arg(&esp_copy)
            .run_checked()
            .context("fsck.fat of systemd-repart's ESP")?;
        std::fs::remove_file(&esp_copy)?;
        let listed = Command::new("mdir")
            .args(["-/", "-b", "-i"])
            .arg(format!("{}@@{}", image.display(), esp.0))
            .arg("::")
            .output_checked()?;
        let entries = walkdir::WalkDir::new(&self.boot)
            .min_depth(1)
            .into_iter()
            .count();
        ensure!(
            listed.lines().count() == entries,
            "systemd-repart's ESP lists {} entries, the boot tree has {entries}:\n{listed}",
            listed.lines().count()
        );
        eprintln!(
            "systemd-repart: partitions as habuild's, e2fsck -fn and fsck.fat -n clean, \
             {files} inodes (habuild's {habuild_files} + orphan_file {orphan_file}), \
             {entries} ESP entries (as the boot tree)"
        );
        Ok(())
    }
}

//! Assembly benchmark (not a test): staged tree → finished disk image, by
//! habuild (`disk::assemble`, with each of its ext4 writers), by genimage and
//! by systemd-repart, on the same trees, layout (GPT: 256 MiB ESP, ext4 root
//! filling the rest) and disk size, in the same run. Prints a Markdown table
//! for benchmarks/README.md.
//!
//!     cargo run --release --example bench_assembly -- ROOT_TREE BOOT_TREE [RUNS]
//!
//! ROOT_TREE is e.g. a cached base (`target/habuild-test-cache/base/KEY/rootfs`),
//! BOOT_TREE any directory of boot files. Both are copied to a scratch
//! directory first (untimed), as each tool may touch its input.
//!
//! systemd-repart is run with `--offline=yes` (no loop devices, no mounts),
//! which needs systemd 254 or later; without it (Debian 12's 252 builds
//! images on loop devices) its columns are left out, with a message. The
//! binary is `$HABUILD_BENCH_REPART` or `systemd-repart` on PATH. On Debian
//! 12, either install systemd from bookworm-backports
//! (`apt-get install -t bookworm-backports systemd`), or, without touching
//! the installed packages, unpack it into a scratch directory (needs
//! bookworm-backports in the APT sources):
//!
//!     apt-get download -t bookworm-backports systemd libsystemd-shared
//!     for d in *.deb; do dpkg-deb -x "$d" x; done
//!     HABUILD_BENCH_REPART=$PWD/x/bin/systemd-repart \
//!     LD_LIBRARY_PATH=$PWD/x/usr/lib/x86_64-linux-gnu/systemd cargo run ...
//!
//! Each tool's output is checked once, untimed: `e2fsck -fn` of the root
//! filesystem (and for systemd-repart also `fsck.fat -n` of its ESP, the
//! number of inodes against habuild's and of ESP entries against the boot
//! tree, and, if `strace` is installed, that it opened no loop device and
//! mounted nothing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use habuild::config::board::{Arch, PartitionRole, PartitionTable};
use habuild::config::Ext4Writer;
use habuild::disk::layout::{default_image_size, plan_layout, PartitionRequest, MIB};
use habuild::util::CommandExt;

mod repart;
use repart::{loop_devices, Repart};

const EPOCH: i64 = 1_735_689_600;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    ensure!(
        args.len() >= 3,
        "usage: bench_assembly ROOT_TREE BOOT_TREE [RUNS]"
    );
    let runs: usize = args.get(3).map_or(Ok(3), |r| r.parse())?;
    let scratch = tempfile::Builder::new()
        .prefix("habuild-bench-asm-")
        .tempdir_in("/var/tmp")?;
    let root = scratch.path().join("root");
    let boot = scratch.path().join("boot");
    for (from, to) in [(&args[1], &root), (&args[2], &boot)] {
        Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .run_checked()?;
    }
    let root_bytes = tree_bytes(&root)?;
    let total = default_image_size(256 * MIB, root_bytes, false);
    let layout = plan_layout(
        PartitionTable::Gpt,
        Arch::Amd64,
        &[
            PartitionRequest {
                label: "ESP".into(),
                role: PartitionRole::Esp,
                size: Some(256 * MIB),
            },
            PartitionRequest {
                label: "root".into(),
                role: PartitionRole::Root,
                size: None,
            },
        ],
        total,
    )?;

    let root_part = &layout.partitions[1];
    let repart = Repart::find(scratch.path(), &root, &boot, &layout)?;
    let loops_before = loop_devices()?;
    if let Some(repart) = &repart {
        repart.traced(&scratch.path().join("repart-traced.img"), total)?;
    }
    // habuild's root filesystem, as e2fsck counts its inodes ("files").
    let mut habuild_files = 0;
    let (mut ours, mut native, mut theirs, mut floor, mut systemd) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let image = scratch.path().join("habuild.img");
        for (writer, times) in [
            (Ext4Writer::Mke2fs, &mut ours),
            (Ext4Writer::Native, &mut native),
        ] {
            let t = Instant::now();
            habuild::disk::assemble(
                &habuild::disk::AssembleRequest {
                    layout: &layout,
                    boot_tree: &boot,
                    root_tree: &root,
                    seed: b"bench",
                    source_date_epoch: EPOCH,
                    boot_label: "ESP",
                    root_label: "root",
                    ext4_writer: writer,
                },
                &image,
            )?;
            times.push(t.elapsed().as_secs_f64());
            if times.len() == 1 {
                // Untimed: a fast writer of a broken filesystem is no result.
                let files = e2fsck_files(&image, root_part.start)
                    .with_context(|| format!("e2fsck of the root filesystem ({writer:?})"))?;
                eprintln!("{writer:?}: e2fsck -fn of the root filesystem is clean, {files} inodes");
                if writer == Ext4Writer::Mke2fs {
                    habuild_files = files;
                }
            }
            std::fs::remove_file(&image)?;
        }
        theirs.push(genimage(scratch.path(), &root, &boot, root_part.size)?);
        floor.push(root_fs_alone(&image, total, root_part, &root)?);
        std::fs::remove_file(&image)?;
        if let Some(repart) = &repart {
            let image = scratch.path().join("repart.img");
            systemd.push(repart.run(&image, total)?);
            if systemd.len() == 1 {
                repart.check(&image, &layout, habuild_files)?;
            }
            std::fs::remove_file(&image)?;
        }
    }
    ensure!(
        loop_devices()? == loops_before,
        "the set of loop devices changed during the benchmark"
    );
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (h, n, g, f) = (
        median(&mut ours),
        median(&mut native),
        median(&mut theirs),
        median(&mut floor),
    );
    let mut header = "| tree | disk | habuild, mke2fs (s) | habuild, native (s) | genimage (s) | habuild mke2fs / genimage | habuild native / genimage | native / mke2fs | root ext4 alone, mke2fs (s) | root ext4 alone / genimage |".to_string();
    let mut row = format!(
        "| {:.0} MiB root + {:.0} MiB boot | {:.0} MiB GPT | {h:.2} | {n:.2} | {g:.2} | {:.2} | {:.2} | {:.2} | {f:.2} | {:.2} |",
        root_bytes as f64 / MIB as f64,
        tree_bytes(&boot)? as f64 / MIB as f64,
        total as f64 / MIB as f64,
        h / g,
        n / g,
        n / h,
        f / g
    );
    if !systemd.is_empty() {
        let r = median(&mut systemd);
        header += " systemd-repart (s) | habuild mke2fs / systemd-repart | habuild native / systemd-repart |";
        row += &format!(" {r:.2} | {:.2} | {:.2} |", h / r, n / r);
    }
    println!("{header}");
    println!("{}|", "|---".repeat(header.matches(" |").count()));
    println!("{row}");
    eprintln!(
        "habuild (mke2fs) runs {ours:?}, habuild (native) runs {native:?}, \
         genimage runs {theirs:?}, root ext4 alone {floor:?}, \
         systemd-repart runs {systemd:?} (median of {runs})"
    );
    Ok(())
}

/// The used inodes ("files") of the ext4 filesystem at `offset` in `image`,
/// which `e2fsck -fn` must find clean.
fn e2fsck_files(image: &Path, offset: u64) -> Result<u64> {
    let out = Command::new("e2fsck")
        .arg("-fn")
        .arg(format!("{}?offset={offset}", image.display()))
        .output_checked()?;
    // The summary line: "LABEL: USED/TOTAL files (...), USED/TOTAL blocks".
    out.lines()
        .find_map(|l| l.split_once(": ")?.1.split_once('/')?.0.parse().ok())
        .with_context(|| format!("no summary line in e2fsck's output:\n{out}"))
}

/// habuild's root filesystem step alone (`mke2fs -d` into the partition's
/// byte range, as `assemble` runs it), into a fresh sparse file of the disk's
/// size: the floor of habuild's assembly, whose other partitions are built
/// beside it. Returns its wall time.
fn root_fs_alone(
    image: &Path,
    disk_size: u64,
    part: &habuild::disk::layout::PlacedPartition,
    root: &Path,
) -> Result<f64> {
    let file = std::fs::File::create(image).context("creating the scratch image")?;
    file.set_len(disk_size)
        .context("sizing the scratch image")?;
    drop(file);
    let t = Instant::now();
    habuild::fs::ext4::make_ext4(
        image,
        part.start,
        part.size,
        root,
        &habuild::fs::ext4::Ext4Params {
            label: "root",
            uuid: habuild::disk::fs_uuid(b"bench", "root"),
            hash_seed: habuild::disk::fs_uuid(b"bench", "root"),
            source_date_epoch: EPOCH,
        },
    )?;
    Ok(t.elapsed().as_secs_f64())
}

/// One genimage run with the same layout; returns its wall time.
fn genimage(scratch: &Path, root: &Path, boot: &Path, root_size: u64) -> Result<f64> {
    let dir = scratch.join("genimage");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    for d in ["tmp", "out", "input", "emptyroot"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    // Both filesystems are filled from srcpath, so genimage's own copy of
    // rootpath (an empty directory here) costs nothing.
    let cfg = format!(
        r#"image esp.vfat {{
  srcpath = "{boot}"
  vfat {{ extraargs = "-F 32" }}
  size = 256M
}}
image root.ext4 {{
  srcpath = "{root}"
  ext4 {{ use-mke2fs = true }}
  size = {root_size}
}}
image disk.img {{
  hdimage {{ partition-table-type = "gpt" }}
  partition esp {{ image = "esp.vfat" partition-type-uuid = "U" offset = 1M }}
  partition root {{ image = "root.ext4" partition-type-uuid = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709" }}
}}
"#,
        boot = boot.display(),
        root = root.display(),
    );
    let cfg_path = dir.join("genimage.cfg");
    std::fs::write(&cfg_path, cfg).context("writing genimage.cfg")?;
    let t = Instant::now();
    Command::new("genimage")
        .env("SOURCE_DATE_EPOCH", EPOCH.to_string())
        .arg("--config")
        .arg(&cfg_path)
        .arg("--rootpath")
        .arg(dir.join("emptyroot"))
        .arg("--tmppath")
        .arg(dir.join("tmp"))
        .arg("--inputpath")
        .arg(dir.join("input"))
        .arg("--outputpath")
        .arg(dir.join("out"))
        .run_checked()
        .context("running genimage")?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        dir.join("out/disk.img").is_file(),
        "genimage wrote no disk.img"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(secs)
}

fn tree_bytes(tree: &PathBuf) -> Result<u64> {
    let mut total = 0;
    for e in walkdir::WalkDir::new(tree) {
        let e = e?;
        if e.file_type().is_file() {
            total += e.metadata()?.len().div_ceil(4096) * 4096;
        }
        total += 256;
    }
    Ok(total)
}

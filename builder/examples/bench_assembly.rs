//! Assembly benchmark (not a test): staged tree → finished disk image, by
//! habuild (`disk::assemble`, with each of its ext4 writers) and by genimage, on the same trees, layout
//! (GPT: 256 MiB ESP, ext4 root filling the rest) and disk size, in the same
//! run. Prints a Markdown table for benchmarks/README.md.
//!
//!     cargo run --release --example bench_assembly -- ROOT_TREE BOOT_TREE [RUNS]
//!
//! ROOT_TREE is e.g. a cached base (`target/habuild-test-cache/base/KEY/rootfs`),
//! BOOT_TREE any directory of boot files. Both are copied to a scratch
//! directory first (untimed), as each tool may touch its input.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use habuild::disk::layout::{
    default_image_size, plan_layout, Arch, PartitionRequest, PartitionRole, PartitionTable, MIB,
};
use habuild::fs::Ext4Writer;
use habuild::util::CommandExt;

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
    let (mut ours, mut native, mut theirs, mut floor) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
                Command::new("e2fsck")
                    .arg("-fn")
                    .arg(format!("{}?offset={}", image.display(), root_part.start))
                    .run_checked()
                    .with_context(|| format!("e2fsck of the root filesystem ({writer:?})"))?;
                eprintln!("{writer:?}: e2fsck -fn of the root filesystem is clean");
            }
            std::fs::remove_file(&image)?;
        }
        theirs.push(genimage(scratch.path(), &root, &boot, root_part.size)?);
        floor.push(root_fs_alone(&image, total, root_part, &root)?);
        std::fs::remove_file(&image)?;
    }
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
    println!("| tree | disk | habuild, mke2fs (s) | habuild, native (s) | genimage (s) | habuild mke2fs / genimage | habuild native / genimage | native / mke2fs | root ext4 alone, mke2fs (s) | root ext4 alone / genimage |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {:.0} MiB root + {:.0} MiB boot | {:.0} MiB GPT | {h:.2} | {n:.2} | {g:.2} | {:.2} | {:.2} | {:.2} | {f:.2} | {:.2} |",
        root_bytes as f64 / MIB as f64,
        tree_bytes(&boot)? as f64 / MIB as f64,
        total as f64 / MIB as f64,
        h / g,
        n / g,
        n / h,
        f / g
    );
    eprintln!("habuild (mke2fs) runs {ours:?}, habuild (native) runs {native:?}, genimage runs {theirs:?}, root ext4 alone {floor:?} (median of {runs})");
    Ok(())
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

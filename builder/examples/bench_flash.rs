//! Flash benchmark (not a timed test): `habuild flash` (by default, and
//! with `--check-image-hash`) vs `dd bs=4M conv=fsync` vs `bmaptool copy`,
//! to a regular file and to a loop device, on one image; prints a Markdown
//! table.
//!
//!     cargo run --release --example bench_flash -- IMAGE [RUNS] [pairs]
//!
//! `pairs`: only `habuild flash` and `bmaptool copy`, alternating (the
//! comparison the flash's speed goal is about).
//!
//! IMAGE needs its `.bmap` beside it (and may have a SHA256SUMS). Each
//! cell is the median of RUNS (default 3) interleaved runs, each to a fresh
//! sparse target in a temporary directory next to the image (so the same
//! disk), deleted and synced before the next run. The image is read once
//! first so every tool starts from a warm cache. "Bytes written" is what each tool handed to write(2) (`wchar` in
//! /proc/<pid>/io; for a child process, read from the shell that waited for
//! it). habuild runs in-process (the library call `habuild flash` makes) and
//! its time includes reading every mapped range back (for a file, while
//! its fsync runs).
//!
//! Needs root for the loop device; skips it when `losetup` fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use habuild::flash::{self, FlashOptions};
use habuild::util::CommandExt;

#[derive(Clone, Copy, PartialEq)]
enum Tool {
    Habuild,
    /// The same with `--check-image-hash`: shows what hashing the whole
    /// image against SHA256SUMS costs.
    HabuildImageHash,
    Dd,
    Bmaptool,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Habuild => "habuild flash",
            Tool::HabuildImageHash => "habuild flash --check-image-hash",
            Tool::Dd => "dd bs=4M conv=fsync",
            Tool::Bmaptool => "bmaptool copy",
        }
    }
}

struct Sample {
    wall: Duration,
    bytes: u64,
    /// habuild only: (write, verify).
    split: Option<(Duration, Duration)>,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(image) = args.first().map(PathBuf::from) else {
        bail!("usage: bench_flash IMAGE [RUNS] [pairs]");
    };
    let runs: usize = args.get(1).map(|r| r.parse()).transpose()?.unwrap_or(3);
    let pairs = match args.get(2).map(String::as_str) {
        None => false,
        Some("pairs") => true,
        Some(other) => bail!("unknown option {other:?} (expected `pairs`)"),
    };
    let bmap_path = flash::default_bmap(&image);
    let bmap = habuild::artifact::bmap::read(&bmap_path)?;
    let size = bmap.image_size;
    let work_in = image.parent().unwrap_or(Path::new("."));
    let work = tempfile::Builder::new()
        .prefix(".bench-flash-")
        .tempdir_in(work_in)
        .with_context(|| format!("creating a work directory in {}", work_in.display()))?;
    eprintln!(
        "image {} : {} , mapped {} ; warming the cache",
        image.display(),
        flash::human(size),
        flash::human(bmap.mapped_bytes())
    );
    Command::new("cat")
        .arg(&image)
        .stdout(std::process::Stdio::null())
        .status()
        .context("reading the image once")?;

    let tools: &[Tool] = if pairs {
        &[Tool::Habuild, Tool::Bmaptool]
    } else {
        &[
            Tool::Habuild,
            Tool::HabuildImageHash,
            Tool::Bmaptool,
            Tool::Dd,
        ]
    };
    let mut rows = Vec::new();
    for target_kind in ["file", "loop device"] {
        // Runs interleave the tools, so a busy moment on a shared machine
        // hits every tool alike instead of one tool's whole series.
        let mut samples: Vec<Vec<Sample>> = tools.iter().map(|_| Vec::new()).collect();
        'runs: for run in 0..runs {
            for (i, &tool) in tools.iter().enumerate() {
                let backing = work.path().join(format!("target-{run}"));
                let _ = std::fs::remove_file(&backing);
                let sample = if target_kind == "file" {
                    measure(tool, &image, &bmap_path, &backing)?
                } else {
                    std::fs::File::create(&backing)?.set_len(size + (16 << 20))?;
                    let dev = match Loop::attach(&backing) {
                        Ok(d) => d,
                        Err(e) => {
                            eprintln!("no loop device ({e:#}); skipping loop-device rows");
                            break 'runs;
                        }
                    };
                    measure(tool, &image, &bmap_path, &dev.0)?
                };
                let split = sample.split.map_or(String::new(), |(w, v)| {
                    format!(
                        " (write {:.2}s, verify {:.2}s)",
                        w.as_secs_f64(),
                        v.as_secs_f64()
                    )
                });
                eprintln!(
                    "{target_kind:>11} {:<30} run {run}: {:>7.2}s {}{split}",
                    tool.name(),
                    sample.wall.as_secs_f64(),
                    flash::human(sample.bytes)
                );
                samples[i].push(sample);
                let _ = std::fs::remove_file(&backing);
                // Let the deletion's writeback and discards finish before
                // the next tool starts, so they are not charged to it.
                Command::new("sync").status().context("running sync")?;
            }
        }
        for (&tool, mut s) in tools.iter().zip(samples) {
            if !s.is_empty() {
                s.sort_by_key(|x| x.wall);
                rows.push((target_kind, tool, s.swap_remove(s.len() / 2)));
            }
        }
    }
    println!("| target | tool | bytes written | wall time (median of {runs}) | notes |");
    println!("|---|---|---:|---:|---|");
    for (target, tool, s) in rows {
        let note = match s.split {
            // A file's fsync runs during its read-back.
            Some((w, v)) => format!(
                "write {:.2} s + read-back verify{} {:.2} s",
                w.as_secs_f64(),
                if target == "file" { " and fsync" } else { "" },
                v.as_secs_f64()
            ),
            None if tool == Tool::Dd => "writes every byte, verifies nothing".into(),
            None => "verifies the image against the bmap while reading it".into(),
        };
        println!(
            "| {target} | {} | {} ({} B) | {:.2} s | {note} |",
            tool.name(),
            flash::human(s.bytes),
            s.bytes,
            s.wall.as_secs_f64()
        );
    }
    Ok(())
}

fn measure(tool: Tool, image: &Path, bmap: &Path, target: &Path) -> Result<Sample> {
    let started = Instant::now();
    match tool {
        Tool::Habuild | Tool::HabuildImageHash => {
            let before = own_wchar()?;
            let opts = FlashOptions {
                image: image.to_path_buf(),
                bmap: Some(bmap.to_path_buf()),
                target: target.to_path_buf(),
                force: true,
                yes: true,
                check_image_hash: tool == Tool::HabuildImageHash,
                no_bmap: false,
            };
            let report = flash::flash(&opts, &mut |_| Ok(true), &|| false)?;
            Ok(Sample {
                wall: started.elapsed(),
                bytes: own_wchar()? - before,
                split: Some((report.write_time, report.verify_time)),
            })
        }
        Tool::Dd | Tool::Bmaptool => {
            let cmd = match tool {
                Tool::Dd => format!(
                    "dd if={} of={} bs=4M conv=fsync status=none",
                    q(image),
                    q(target)
                ),
                _ => format!(
                    "bmaptool -q copy --bmap {} {} {}",
                    q(bmap),
                    q(image),
                    q(target)
                ),
            };
            // The shell's /proc/self/io, read after `wait`, includes the
            // reaped child's counters; `exec` makes the reader the shell.
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("{cmd} && exec grep ^wchar: /proc/self/io"))
                .output_checked()?;
            let wall = started.elapsed();
            let bytes = out
                .trim()
                .strip_prefix("wchar:")
                .and_then(|v| v.trim().parse().ok())
                .with_context(|| format!("reading wchar from {out:?}"))?;
            Ok(Sample {
                wall,
                bytes,
                split: None,
            })
        }
    }
}

fn own_wchar() -> Result<u64> {
    let io = std::fs::read_to_string("/proc/self/io").context("reading /proc/self/io")?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no wchar in /proc/self/io")
}

fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// A loop device over a file, detached on drop.
struct Loop(PathBuf);

impl Loop {
    fn attach(file: &Path) -> Result<Loop> {
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(file)
            .output_checked()?;
        Ok(Loop(PathBuf::from(out.trim())))
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Err(e) = Command::new("losetup").arg("-d").arg(&self.0).run_checked() {
            eprintln!("could not detach {}: {e:#}", self.0.display());
        }
    }
}

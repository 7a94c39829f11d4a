//! Image size benchmark (not a test): for each image, its raw size, what it
//! allocates on disk (it is sparse), what its bmap maps (what `habuild
//! flash` and `bmaptool copy` write), and its size compressed with
//! `zstd -3` and `xz -6` (single-threaded, as a download would be made).
//! Prints a Markdown table for benchmarks/README.md.
//!
//!     cargo run --release --example bench_size -- IMAGE...
//!
//! Each IMAGE needs its `.bmap` beside it. The compressed forms go to a
//! temporary directory and are deleted.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

fn main() -> Result<()> {
    let images: Vec<String> = std::env::args().skip(1).collect();
    ensure!(!images.is_empty(), "usage: bench_size IMAGE...");
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    println!("| image | raw | allocated (sparse) | mapped in the bmap | `zstd -3` | `xz -6` |");
    println!("|---|---:|---:|---:|---:|---:|");
    for image in &images {
        let image = Path::new(image);
        let meta =
            std::fs::metadata(image).with_context(|| format!("reading {}", image.display()))?;
        let bmap_path = image.with_extension("img.bmap");
        let bmap = habuild::artifact::bmap::read(&bmap_path)?;
        let zstd = compressed(image, &scratch.path().join("i.zst"), "zstd", &["-3", "-T1"])?;
        let xz = compressed(image, &scratch.path().join("i.xz"), "xz", &["-6", "-T1"])?;
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            image.file_name().unwrap_or_default().to_string_lossy(),
            grouped(meta.len()),
            grouped(meta.blocks() * 512),
            grouped(bmap.mapped_bytes()),
            grouped(zstd),
            grouped(xz),
        );
    }
    Ok(())
}

/// Size of `image` compressed by `tool ARGS -c`.
fn compressed(image: &Path, out: &Path, tool: &str, args: &[&str]) -> Result<u64> {
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let status = Command::new(tool)
        .args(args)
        .arg("-c")
        .arg(image)
        .stdout(file)
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("running {tool} on {}", image.display()))?;
    ensure!(
        status.success(),
        "{tool} failed on {}: {status}",
        image.display()
    );
    let size = std::fs::metadata(out)
        .with_context(|| format!("reading {}", out.display()))?
        .len();
    std::fs::remove_file(out).with_context(|| format!("removing {}", out.display()))?;
    Ok(size)
}

/// 588103680 → "588,103,680".
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

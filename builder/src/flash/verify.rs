//! Reading the mapped ranges back from the target and checking them
//! against the bmap: what the card returns, not what we meant to write.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::bmap::Bmap;
use super::Stopped;

/// A range that reads back differently from the image.
#[derive(Debug, Error)]
#[error("verification failed: {range} of the target read back with sha256 {actual}, the image has {expected}")]
pub struct Mismatch {
    pub range: String,
    pub expected: String,
    pub actual: String,
}

/// Drops the target's cached pages so reads come from the device: after a
/// write, the page cache would hand back our own data and prove nothing.
/// The target must already be synced (only clean pages are dropped).
pub fn drop_cache(target: &File) -> Result<()> {
    rustix::fs::fadvise(target, 0, None, rustix::fs::Advice::DontNeed)
        .context("dropping the cached pages of the target (posix_fadvise)")
}

/// Checks every mapped range; the first one that differs is the error.
pub fn verify(
    target: &File,
    bmap: &Bmap,
    stop: &dyn Fn() -> bool,
    bar: &ProgressBar,
) -> Result<()> {
    let mut buf = vec![0u8; 4 << 20];
    for range in &bmap.ranges {
        let span = bmap.byte_range(range);
        let mut hasher = Sha256::new();
        let mut pos = span.start;
        while pos < span.end {
            if stop() {
                return Err(Stopped.into());
            }
            let n = (span.end - pos).min(buf.len() as u64) as usize;
            target
                .read_exact_at(&mut buf[..n], pos)
                .with_context(|| format!("reading back {n} bytes at offset {pos}"))?;
            hasher.update(&buf[..n]);
            bar.inc(n as u64);
            pos += n as u64;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != range.sha256 {
            return Err(Mismatch {
                range: bmap.describe(range),
                expected: range.sha256.clone(),
                actual,
            }
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::bmap::MappedRange;

    #[test]
    fn first_differing_range_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let data: Vec<u8> = (0..5 * 4096u32).map(|i| (i % 199) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let sum = |r: std::ops::Range<usize>| hex::encode(Sha256::digest(&data[r]));
        let bmap = Bmap {
            image_size: data.len() as u64,
            block_size: 4096,
            blocks_count: 5,
            mapped_blocks: 3,
            ranges: vec![
                MappedRange {
                    blocks: 0..1,
                    sha256: sum(0..4096),
                },
                MappedRange {
                    blocks: 3..5,
                    sha256: sum(3 * 4096..5 * 4096),
                },
            ],
        };
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let bar = ProgressBar::hidden();
        verify(&f, &bmap, &|| false, &bar).unwrap();
        // Unmapped block 1 may differ; mapped block 4 may not.
        f.write_all_at(b"x", 4096 + 7).unwrap();
        verify(&f, &bmap, &|| false, &bar).unwrap();
        f.write_all_at(b"x", 4 * 4096 + 7).unwrap();
        let err = verify(&f, &bmap, &|| false, &bar).unwrap_err();
        let m = err.downcast_ref::<Mismatch>().unwrap();
        assert_eq!(m.range, "blocks 3-4 (bytes 12288..20480)");
        assert!(verify(&f, &bmap, &|| true, &bar)
            .unwrap_err()
            .is::<Stopped>());
    }
}

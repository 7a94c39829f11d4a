//! Reading the mapped ranges back from the target and checking them
//! against the bmap: what the card returns, not what we meant to write.
//!
//! This is the one SHA-256 pass of a flash. The body (everything past the
//! first MiB) is checked after it is written and flushed, before the first
//! MiB is written: a range that reaches into the first MiB is hashed from
//! the held-back bytes that will go there, then from the target. After the
//! first MiB is written, it is read back and compared with those bytes.
//! So every mapped byte on the target is proven against the bmap, and a
//! wrong image (or wrong card) is found before the card gets a partition
//! table. When a range differs, the image's range is hashed too, to say
//! which of the two is wrong.
//!
//! Two threads share the work (see `ranges`), each with a reader running
//! one chunk ahead. On a block device, reads are direct where it allows it
//! (see `direct`): they come from the device by construction, leave the
//! page cache alone (a card's worth of cached pages would push out
//! everything else), and do not depend on memory reclaim keeping up, which
//! made readahead through the page cache ten times slower than direct
//! reads on a busy build machine. A regular file is read through its page
//! cache, which holds what the file holds (see `job`): the pages just
//! written are read without a disk access.

use std::ops::Range;
use std::path::Path;
use std::sync::mpsc;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::direct::{AlignedBuf, Target, ALIGN};
use super::ranges::{par_ranges, THREADS};
use super::refusal::Refusal;
use super::source::{Hash, ImageSource};
use super::stream::{Head, HEAD};
use super::Stopped;
use crate::artifact::bmap::{Bmap, MappedRange};

/// Bytes per read.
const READ: usize = 4 << 20;

/// A range that reads back differently from the image.
#[derive(Debug, Error)]
#[error("verification failed: {range} of the target read back with sha256 {actual}, the image has {expected}")]
pub struct Mismatch {
    pub range: String,
    pub expected: String,
    pub actual: String,
}

/// Drops a block device's cached pages so reads come from the device:
/// after a buffered write, the page cache would hand back our own data and
/// prove nothing about the card. The device must already be synced (only
/// clean pages are dropped). Also used after the read-back, so the card's
/// content does not stay cached for nothing. A regular file keeps its
/// pages: they are what the file holds.
pub fn drop_cache(target: &Target) -> Result<()> {
    if !target.is_block() {
        return Ok(());
    }
    rustix::fs::fadvise(target.file(), 0, None, rustix::fs::Advice::DontNeed)
        .context("dropping the cached pages of the target (posix_fadvise)")
}

/// Checks every mapped range, the part below [`HEAD`] from `head`, the rest
/// read back from the target (a block device synced before, a file's pages
/// while they are flushed: see `job`); the first range that differs is the
/// error: [`Mismatch`] when the image has the bmap's bytes there,
/// [`Refusal::ImageRange`] when the image does not.
pub fn verify_body(
    target: &Target,
    bmap: &Bmap,
    head: &Head,
    image: &Path,
    stop: &(dyn Fn() -> bool + Sync),
    bar: &ProgressBar,
) -> Result<()> {
    drop_cache(target)?;
    let from = Source {
        target,
        head: Some(head),
    };
    let checked = par_ranges(bmap, THREADS, |i| {
        let range = &bmap.ranges[i];
        let actual = hash_range(&from, bmap, range, stop, bar)?;
        if actual == range.sha256 {
            return Ok(());
        }
        let in_image = hash_image_range(image, bmap.byte_range(range))?;
        if in_image != range.sha256 {
            return Err(Refusal::ImageRange {
                range: bmap.describe(range),
                expected: range.sha256.clone(),
                actual: in_image,
            }
            .into());
        }
        Err(mismatch(bmap, range, actual))
    });
    drop_cache(target)?;
    checked
}

/// Reads the written first MiB back and compares it with `head`, whose
/// bytes `verify_body` checked; a difference is a [`Mismatch`] of the
/// range it is in.
pub fn verify_head(target: &Target, bmap: &Bmap, head: &Head) -> Result<()> {
    drop_cache(target)?;
    let mut buf = AlignedBuf::new(HEAD as usize + 2 * ALIGN);
    for p in &head.pieces {
        let back = target.read_span(&mut buf, p.clone())?;
        let Some(at) = back
            .iter()
            .zip(&head.buf[p.start as usize..p.end as usize])
            .position(|(a, b)| a != b)
        else {
            continue;
        };
        let offset = p.start + at as u64;
        let range = bmap
            .ranges
            .iter()
            .find(|r| bmap.byte_range(r).contains(&offset))
            .context("a byte of the first MiB outside every mapped range")?;
        let bar = ProgressBar::hidden();
        let from = Source { target, head: None };
        let actual = hash_range(&from, bmap, range, &|| false, &bar)?;
        return Err(mismatch(bmap, range, actual));
    }
    Ok(())
}

fn mismatch(bmap: &Bmap, range: &MappedRange, actual: String) -> anyhow::Error {
    Mismatch {
        range: bmap.describe(range),
        expected: range.sha256.clone(),
        actual,
    }
    .into()
}

/// Where `hash_range` gets a range's bytes.
struct Source<'a> {
    target: &'a Target,
    /// Bytes below [`HEAD`] come from here when given.
    head: Option<&'a Head>,
}

/// SHA-256 of `range` as `from` has it. The reads run one chunk ahead of
/// the hash on a thread of their own, so the device and the CPU work at the
/// same time (direct reads have no kernel readahead to do that for us).
fn hash_range(
    from: &Source,
    bmap: &Bmap,
    range: &MappedRange,
    stop: &(dyn Fn() -> bool + Sync),
    bar: &ProgressBar,
) -> Result<String> {
    let span = bmap.byte_range(range);
    let mut hasher = Sha256::new();
    let mut pos = span.start;
    if let Some(head) = from.head.filter(|h| pos < h.buf.len() as u64) {
        let end = span.end.min(head.buf.len() as u64);
        hasher.update(&head.buf[pos as usize..end as usize]);
        bar.inc(end - pos);
        pos = end;
    }
    let (full_tx, full_rx) = mpsc::sync_channel::<Result<(AlignedBuf, Range<usize>)>>(1);
    let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while pos < span.end {
                let end = (pos + READ as u64).min(span.end);
                let mut buf = free_rx
                    .try_recv()
                    .unwrap_or_else(|_| AlignedBuf::new(READ + 2 * ALIGN));
                let read = match stop() {
                    true => Err(Stopped.into()),
                    false => from.target.read_into(&mut buf, pos..end),
                };
                let failed = read.is_err();
                // The hashing side hangs up only when it is done.
                if full_tx.send(read.map(|at| (buf, at))).is_err() || failed {
                    return;
                }
                pos = end;
            }
        });
        for read in full_rx {
            let (buf, at) = read?;
            hasher.update(&buf[at.clone()]);
            bar.inc(at.len() as u64);
            let _ = free_tx.send(buf);
        }
        Ok(hex::encode(hasher.finalize()))
    })
}

/// SHA-256 of `span` of the image (only when a range failed: this reads,
/// and for a compressed image decompresses, the image again).
fn hash_image_range(image: &Path, span: Range<u64>) -> Result<String> {
    let mut source = ImageSource::open(image, Hash::None)?;
    source.skip_to(span.start)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; READ];
    let mut pos = span.start;
    while pos < span.end {
        let n = (span.end - pos).min(READ as u64) as usize;
        source.read(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::fixture::{case, Case, B};
    use std::os::unix::fs::FileExt;

    fn body(c: &Case, stop: bool) -> Result<()> {
        let bar = ProgressBar::hidden();
        verify_body(&c.target, &c.bmap, &c.head, &c.image, &|| stop, &bar)
    }

    /// Through the page cache (a file) and with O_DIRECT (a device) alike.
    #[test]
    fn the_first_differing_range_is_named_and_blamed_right() {
        for direct in [false, true] {
            first_difference_named(direct);
        }
    }

    fn first_difference_named(direct: bool) {
        let c = case(direct);
        body(&c, false).unwrap();
        let target = &c.plain;
        // Unmapped block 100 may differ; mapped blocks may not.
        target.write_all_at(b"x", 100 * B).unwrap();
        body(&c, false).unwrap();
        target.write_all_at(b"x", 600 * B).unwrap();
        target.write_all_at(b"x", 300 * B + 7).unwrap();
        target.sync_all().unwrap();
        for _ in 0..10 {
            let err = body(&c, false).unwrap_err();
            let m = err.downcast_ref::<Mismatch>().expect("the target's fault");
            assert_eq!(m.range, "blocks 300-300 (bytes 1228800..1232896)");
        }
        assert!(body(&c, true).unwrap_err().is::<Stopped>());
    }

    #[test]
    fn a_wrong_image_is_blamed_on_the_image() {
        let c = case(false);
        // The image is wrong and the target got what the image has.
        let image = std::fs::OpenOptions::new()
            .write(true)
            .open(&c.image)
            .unwrap();
        for f in [&image, &c.plain] {
            f.write_all_at(b"\xff", 410 * B).unwrap();
        }
        let err = body(&c, false).unwrap_err();
        assert!(
            matches!(err.downcast_ref::<Refusal>(), Some(Refusal::ImageRange { range, .. }) if range.starts_with("blocks 400-419")),
            "{err:#}"
        );
    }

    #[test]
    fn the_head_is_read_back_after_it_is_written() {
        let c = case(false);
        for p in &c.head.pieces {
            let r = p.start as usize..p.end as usize;
            c.target.write_at(&c.head.buf[r], p.start).unwrap();
        }
        c.target.file().sync_all().unwrap();
        verify_head(&c.target, &c.bmap, &c.head).unwrap();
        c.plain.write_all_at(b"x", 3 * B).unwrap();
        c.plain.sync_all().unwrap();
        let err = verify_head(&c.target, &c.bmap, &c.head).unwrap_err();
        let m = err.downcast_ref::<Mismatch>().unwrap();
        assert_eq!(m.range, "blocks 2-4 (bytes 8192..20480)");
    }
}

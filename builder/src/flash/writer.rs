//! Writing: clear the old partition table, write the mapped ranges past the
//! first MiB, and the first MiB last.
//!
//! Why this order: a card whose first MiB (partition table, and on the Pi
//! the start of the boot partition) is zeros does not boot and is seen as
//! blank, so an interruption at any point before the last step leaves a card
//! that is obviously unfinished, never one that boots a half-written image,
//! and never one whose *old* partition table points into new data.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::ProgressBar;

use super::bmap::Bmap;
use super::source::ImageSource;
use super::stream::{self, Chunk};
use super::target::BlockFacts;
use super::Stopped;
use crate::util::CommandExt;

/// The part of the image written last.
pub const HEAD: u64 = 1 << 20;

/// Test hook: pause (until killed or interrupted) once this many image
/// bytes are written and synced, so tests can interrupt a flash part-way.
pub const PAUSE_ENV: &str = "HABUILD_TEST_FLASH_PAUSE_AFTER_BYTES";

/// Chunks in flight between the reading and the writing thread.
const QUEUE: usize = 4;

/// On a block device, flush every this many bytes: the page cache would
/// otherwise take the whole image in seconds, the progress bar would show
/// a finished write while the card is still busy for minutes, and Ctrl-C
/// would wait for all of it.
const BLOCK_SYNC_EVERY: u64 = 64 << 20;

/// The first MiB of the image, held back until everything else is written.
#[derive(Debug)]
pub struct Head {
    pub buf: Vec<u8>,
    /// Mapped pieces of `buf`; the rest is zeros and already zero on the target.
    pub pieces: Vec<Range<u64>>,
}

/// What the body write did.
pub struct Body {
    pub head: Head,
    pub bytes: u64,
}

/// Block device: zero the first MiB (and a backup GPT at the end, which
/// would otherwise describe the old layout), then discard the rest of the
/// image's span. Returns (bytes zeroed, bytes discarded).
///
/// Discard, not zeroing, for the unmapped ranges: `BLKDISCARD` needs an
/// ioctl (unsafe; no safe wrapper in rustix or nix), so it goes through
/// the `blkdiscard` tool. It is a courtesy to the card's flash translation
/// layer (faster writes, less wear) and makes a loop device read zeros,
/// but it does not promise zeros on every card, and USB readers usually do
/// not pass it through. Correctness does not depend on it: habuild images
/// map every block whose content matters (mke2fs with `nodiscard`, a
/// written journal, inode tables not flagged as zeroed; see `fs::ext4`).
/// Writing zeros instead (or BLKZEROOUT, which falls back to writing zeros
/// where the device cannot offload it) would write the whole image span,
/// as slow as `dd`.
pub fn prepare_block(
    target: &File,
    device: &Path,
    facts: &BlockFacts,
    image_size: u64,
) -> Result<(u64, u64)> {
    let shown = device.display();
    let head = HEAD.min(facts.size);
    target
        .write_all_at(&vec![0u8; head as usize], 0)
        .with_context(|| format!("clearing the partition table of {shown}"))?;
    let mut zeroed = head;
    if facts.size >= image_size + 4096 && facts.size >= 8192 {
        let tail_at = facts.size - 4096;
        let mut tail = vec![0u8; 4096];
        target
            .read_exact_at(&mut tail, tail_at)
            .with_context(|| format!("reading the end of {shown}"))?;
        if has_backup_gpt(&tail) {
            target
                .write_all_at(&[0u8; 4096], tail_at)
                .with_context(|| format!("clearing the backup GPT at the end of {shown}"))?;
            zeroed += 4096;
        }
    }
    target
        .sync_all()
        .with_context(|| format!("flushing {shown}"))?;
    let discarded = match discard_span(facts, image_size) {
        Some(span) => discard(device, &span).unwrap_or_else(|e| {
            log::warn!("discard failed, continuing without it: {e:#}");
            0
        }),
        None => 0,
    };
    Ok((zeroed, discarded))
}

/// Regular file: empty it and give it the image's size, so every unmapped
/// range is a hole that reads as zeros (and a copy stays sparse).
pub fn prepare_file(target: &File, path: &Path, image_size: u64) -> Result<()> {
    target
        .set_len(0)
        .and_then(|()| target.set_len(image_size))
        .with_context(|| format!("resizing {} to {image_size} bytes", path.display()))
}

/// The backup GPT header ("EFI PART") in the last 512- or 4096-byte sector.
pub fn has_backup_gpt(tail4k: &[u8]) -> bool {
    const SIG: &[u8] = b"EFI PART";
    tail4k.len() == 4096 && (tail4k[4096 - 512..].starts_with(SIG) || tail4k.starts_with(SIG))
}

/// What to discard: the image's span after the first MiB, aligned inward
/// to the device's logical blocks; None when the device cannot discard.
pub fn discard_span(facts: &BlockFacts, image_size: u64) -> Option<Range<u64>> {
    if facts.discard_max_bytes == 0 {
        return None;
    }
    let align = facts.logical_block_size.max(512);
    let start = HEAD.div_ceil(align) * align;
    let end = image_size.min(facts.size) / align * align;
    (end > start).then_some(start..end)
}

fn discard(device: &Path, span: &Range<u64>) -> Result<u64> {
    // --force: we hold the device open with O_EXCL ourselves (that is our
    // guard against concurrent users), and blkdiscard's own O_EXCL would
    // then fail with EBUSY.
    Command::new("blkdiscard")
        .arg("--force")
        .arg("--offset")
        .arg(span.start.to_string())
        .arg("--length")
        .arg((span.end - span.start).to_string())
        .arg(device)
        .run_checked()
        .with_context(|| format!("discarding the old contents of {}", device.display()))?;
    Ok(span.end - span.start)
}

/// Streams the mapped ranges from `source` to `target`. A second thread
/// (`stream::read_ranges`) reads, hashes and checks each range against the
/// bmap and keeps the first MiB back, while this one writes: on two cores,
/// reading and hashing then overlap the writes instead of taking turns.
/// `sync` flushes periodically (block devices).
pub fn write_body(
    source: &mut ImageSource,
    target: &File,
    bmap: &Bmap,
    sync: bool,
    stop: &dyn Fn() -> bool,
    bar: &ProgressBar,
) -> Result<Body> {
    let pause_after = std::env::var(PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = mpsc::sync_channel::<Chunk>(QUEUE);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        let reader = scope.spawn(move || stream::read_ranges(source, bmap, full_tx, free_rx));
        // The channels end with this call, so a failed write stops the reader.
        let written = write_chunks(full_rx, free_tx, target, sync, stop, bar, pause_after);
        let head = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the image reading thread panicked"))?;
        // A write error or stop comes first: the reader then only saw a
        // closed channel. Otherwise the reader's error (a range that does
        // not match the bmap) is the story.
        let bytes = written?;
        Ok(Body { head: head?, bytes })
    })
}

fn write_chunks(
    full: mpsc::Receiver<Chunk>,
    free: mpsc::Sender<Vec<u8>>,
    target: &File,
    sync: bool,
    stop: &dyn Fn() -> bool,
    bar: &ProgressBar,
    pause_after: Option<u64>,
) -> Result<u64> {
    let mut bytes = 0u64;
    let mut unsynced = 0u64;
    for chunk in full {
        if stop() {
            return Err(Stopped.into());
        }
        let data = &chunk.buf[..chunk.len];
        target
            .write_all_at(data, chunk.offset)
            .with_context(|| format!("writing {} bytes at offset {}", chunk.len, chunk.offset))?;
        let n = chunk.len as u64;
        bytes += n;
        unsynced += n;
        bar.inc(n);
        // The reader may already be gone (it read the last range).
        let _ = free.send(chunk.buf);
        if sync && unsynced >= BLOCK_SYNC_EVERY {
            target.sync_data().context("flushing written data")?;
            unsynced = 0;
        }
        if pause_after.is_some_and(|p| bytes >= p) {
            pause(target, bytes, stop)?;
        }
    }
    Ok(bytes)
}

/// Writes the held-back first MiB. Returns the bytes written.
pub fn write_head(target: &File, head: &Head) -> Result<u64> {
    let mut bytes = 0;
    for p in &head.pieces {
        target
            .write_all_at(&head.buf[p.start as usize..p.end as usize], p.start)
            .with_context(|| format!("writing the first MiB (bytes {}..{})", p.start, p.end))?;
        bytes += p.end - p.start;
    }
    Ok(bytes)
}

/// Zeros the first MiB again (after a failed verification) and flushes.
pub fn clear_head(target: &File) -> std::io::Result<()> {
    target.write_all_at(&vec![0u8; HEAD as usize], 0)?;
    target.sync_all()
}

/// The test hook: make what was written so far durable, say so on stderr
/// (the test waits for this line), then wait to be killed or interrupted.
fn pause(target: &File, bytes: u64, stop: &dyn Fn() -> bool) -> Result<()> {
    target
        .sync_all()
        .context("flushing before the test pause")?;
    eprintln!("habuild-test: paused after {bytes} bytes");
    loop {
        if stop() {
            return Err(Stopped.into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_gpt_detection() {
        let mut tail = vec![0u8; 4096];
        assert!(!has_backup_gpt(&tail));
        tail[4096 - 512..4096 - 504].copy_from_slice(b"EFI PART");
        assert!(has_backup_gpt(&tail), "512-byte sectors");
        let mut tail = vec![0u8; 4096];
        tail[..8].copy_from_slice(b"EFI PART");
        assert!(has_backup_gpt(&tail), "4 KiB sectors");
    }

    #[test]
    fn discard_span_is_aligned_and_skips_the_head() {
        let facts = BlockFacts {
            size: 1 << 30,
            discard_max_bytes: 1 << 30,
            logical_block_size: 4096,
            ..Default::default()
        };
        assert_eq!(discard_span(&facts, 100 << 20), Some(HEAD..100 << 20));
        assert_eq!(
            discard_span(&facts, (100 << 20) + 1000),
            Some(HEAD..100 << 20)
        );
        assert_eq!(discard_span(&facts, 4096), None);
        let no_discard = BlockFacts {
            discard_max_bytes: 0,
            ..facts
        };
        assert_eq!(discard_span(&no_discard, 100 << 20), None);
    }
}

//! Writing: make the old partition table unreachable, write the mapped
//! ranges past the first MiB, and the first MiB last.
//!
//! Why this order: a card without a partition table (its first sectors
//! zero) does not boot and is seen as blank, so an interruption at any
//! point before the last step leaves a card that is obviously unfinished,
//! never one that boots a half-written image, and never one whose *old*
//! partition table points into new data.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use rustix::fs::FallocateFlags;

use super::direct::{AlignedBuf, Target, ALIGN};
use super::source::ImageSource;
use super::stream::{self, Chunk, Head, HEAD};
use super::target::BlockFacts;
use super::Stopped;
use crate::artifact::bmap::Bmap;
use crate::util::CommandExt;

/// What must read as zeros for the old contents to be unreachable: the MBR
/// (sector 0) and the primary GPT (header in LBA 1, 128 entries of 128
/// bytes from LBA 2), for 512- and 4096-byte sectors alike (4096 × 6). It
/// also covers the signatures of a filesystem made on the whole disk
/// without a partition table (a FAT boot sector at 0, an ext2/3/4
/// superblock at 1024). The rest of the first MiB is unreachable without
/// them; the image's own first MiB is written last, as a whole.
pub const TABLES: u64 = 24 << 10;

/// Test hook: pause (until killed or interrupted) once this many image
/// bytes are written and synced, so tests can interrupt a flash part-way.
pub const PAUSE_ENV: &str = "HABUILD_TEST_FLASH_PAUSE_AFTER_BYTES";

/// Chunks in flight between the reading and the writing thread.
const QUEUE: usize = 4;

/// A block device written through the page cache (no `O_DIRECT`) is
/// flushed every this many bytes: the page cache would otherwise take the
/// whole image in seconds, the progress bar would show a finished write
/// while the card is still busy for minutes, and Ctrl-C would wait for all
/// of it. Direct writes need no such flush: each one waits for the device.
const BLOCK_SYNC_EVERY: u64 = 64 << 20;

/// What preparing a block device did, in bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prepared {
    /// Zeros written because the device did not clear the tables itself.
    pub zeroed: u64,
    /// The image's span, zeroed or discarded by the device (no data sent).
    pub cleared: u64,
}

/// Block device: clear the image's span (first MiB included) without
/// sending data, check that the partition tables now read as zeros, and
/// write zeros over them only if they do not; the same for a backup GPT at
/// the end, which would otherwise still describe the old layout. Flushed
/// before returning, so the old table is gone before any new data lands.
pub fn prepare_block(
    target: &Target,
    device: &Path,
    facts: &BlockFacts,
    image_size: u64,
) -> Result<Prepared> {
    let shown = device.display();
    let cleared = match clear_span(facts, image_size) {
        Some(span) => clear(target, device, facts, span),
        None => 0,
    };
    let mut zeroed = ensure_zero(target, 0..TABLES.min(facts.size))
        .with_context(|| format!("clearing the partition table of {shown}"))?;
    if facts.size >= image_size + 4096 && facts.size >= 8192 {
        let tail = facts.size - 4096..facts.size;
        let mut buf = AlignedBuf::new(4096 + 2 * ALIGN);
        let old = target
            .read_span(&mut buf, tail.clone())
            .with_context(|| format!("reading the end of {shown}"))?;
        if has_backup_gpt(old) {
            // Not worth a discard: it is rare (a card that held a GPT
            // image) and 4 KiB.
            zeroed += ensure_zero(target, tail)
                .with_context(|| format!("clearing the backup GPT at the end of {shown}"))?;
        }
    }
    target
        .file()
        .sync_all()
        .with_context(|| format!("flushing {shown}"))?;
    Ok(Prepared { zeroed, cleared })
}

/// Regular file: empty it and give it the image's size, so every unmapped
/// range, and the first MiB until it is written last, is a hole that reads
/// as zeros (and a copy stays sparse).
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

/// What to clear: the image's span from 0, cut at the device's end and
/// aligned down to its logical blocks.
pub fn clear_span(facts: &BlockFacts, image_size: u64) -> Option<Range<u64>> {
    let align = facts.logical_block_size.max(512);
    let end = image_size.min(facts.size) / align * align;
    (end > 0).then_some(0..end)
}

/// Clears `span` without sending data; returns the bytes cleared (0 when
/// the device can do neither).
///
/// First as write-zeroes with unmap: `fallocate(PUNCH_HOLE)` on a block
/// device, which the kernel turns into a zeroing command that the device
/// carries out itself and never into written zeros (it fails instead); when
/// it succeeds the span reads as zeros (loop devices, NVMe, many SSDs).
/// Else `BLKDISCARD` where the device can discard (most SD cards; USB
/// readers usually do not pass it through): a courtesy to the card's flash
/// translation layer (faster writes, less wear) that does not promise
/// zeros. The ioctl needs `unsafe`, which this workspace denies, and
/// neither rustix nor nix wraps it safely, so it goes through the
/// `blkdiscard` tool.
///
/// Correctness does not depend on either: habuild images map every block
/// whose content matters (mke2fs with `nodiscard`, a written journal,
/// inode tables not flagged as zeroed; see `fs::ext4`), which is also what
/// makes `bmaptool copy` safe, and `ensure_zero` checks the tables.
/// Writing zeros over the span instead would write the whole image span,
/// as slowly as `dd`.
fn clear(target: &Target, device: &Path, facts: &BlockFacts, span: Range<u64>) -> u64 {
    let len = span.end - span.start;
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    match rustix::fs::fallocate(target.file(), punch, span.start, len) {
        Ok(()) => return len,
        Err(e) => log::debug!("{} cannot write zeroes ({e}); discarding", device.display()),
    }
    if facts.discard_max_bytes == 0 {
        return 0;
    }
    discard(device, &span).unwrap_or_else(|e| {
        log::warn!("discard failed, continuing without it: {e:#}");
        0
    })
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

/// Makes `region` read as zeros, writing only if it does not already (a
/// device that zeroed or discarded it costs one small read). Returns the
/// bytes written.
fn ensure_zero(target: &Target, region: Range<u64>) -> Result<u64> {
    let len = (region.end - region.start) as usize;
    let mut buf = AlignedBuf::new(len + 2 * ALIGN);
    if target
        .read_span(&mut buf, region.clone())?
        .iter()
        .all(|&b| b == 0)
    {
        return Ok(0);
    }
    target.write_at(&AlignedBuf::new(len), region.start)?;
    Ok(len as u64)
}

/// Streams the mapped ranges past the first MiB from `source` to
/// `target` and returns the bytes written. A second thread
/// (`stream::read_body`) reads (and decompresses) while this one writes.
/// `block`: the target is a block device (flushed periodically when it is
/// written through the page cache).
pub fn write_body(
    source: &mut ImageSource,
    target: &Target,
    bmap: &Bmap,
    block: bool,
    stop: &dyn Fn() -> bool,
    bar: &ProgressBar,
) -> Result<u64> {
    let pause_after = std::env::var(PAUSE_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let sync = block && !target.is_direct();
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = mpsc::sync_channel::<Chunk>(QUEUE);
        let (free_tx, free_rx) = mpsc::channel::<AlignedBuf>();
        let reader = scope.spawn(move || stream::read_body(source, bmap, full_tx, free_rx));
        // The channels end with this call, so a failed write stops the reader.
        let out = Out { target, sync, bar };
        let bytes = write_chunks(full_rx, free_tx, &out, stop, pause_after);
        let read = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the image reading thread panicked"))?;
        // A write error or stop comes first: the reader then only saw a
        // closed channel. Otherwise the reader's error is the story.
        let bytes = bytes?;
        read.map(|()| bytes)
    })
}

/// Where `write_chunks` puts what it is given.
struct Out<'a> {
    target: &'a Target,
    sync: bool,
    bar: &'a ProgressBar,
}

fn write_chunks(
    full: mpsc::Receiver<Chunk>,
    free: mpsc::Sender<AlignedBuf>,
    out: &Out,
    stop: &dyn Fn() -> bool,
    pause_after: Option<u64>,
) -> Result<u64> {
    let mut bytes = 0u64;
    let mut unsynced = 0u64;
    for chunk in full {
        if stop() {
            return Err(Stopped.into());
        }
        out.target.write_at(&chunk.buf[..chunk.len], chunk.offset)?;
        let n = chunk.len as u64;
        bytes += n;
        unsynced += n;
        out.bar.inc(n);
        // The reader may already be gone (it read the last range).
        let _ = free.send(chunk.buf);
        if out.sync && unsynced >= BLOCK_SYNC_EVERY {
            out.target
                .file()
                .sync_data()
                .context("flushing written data")?;
            unsynced = 0;
        }
        if pause_after.is_some_and(|p| bytes >= p) {
            pause(out.target.file(), bytes, stop)?;
        }
    }
    Ok(bytes)
}

/// Writes the held-back first MiB. Returns the bytes written.
pub fn write_head(target: &Target, head: &Head) -> Result<u64> {
    let mut bytes = 0;
    for p in &head.pieces {
        target
            .write_at(&head.buf[p.start as usize..p.end as usize], p.start)
            .context("writing the first MiB")?;
        bytes += p.end - p.start;
    }
    Ok(bytes)
}

/// Zeros the first MiB again (after a failed verification) and flushes.
/// Written, not discarded: this card already returned wrong data once.
pub fn clear_head(target: &Target) -> Result<()> {
    target.write_at(&AlignedBuf::new(HEAD as usize), 0)?;
    target.file().sync_all().context("flushing the target")
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
    fn clear_span_is_aligned_and_within_the_device() {
        let facts = BlockFacts {
            size: 1 << 30,
            logical_block_size: 4096,
            ..Default::default()
        };
        assert_eq!(clear_span(&facts, 100 << 20), Some(0..100 << 20));
        assert_eq!(clear_span(&facts, (100 << 20) + 1000), Some(0..100 << 20));
        assert_eq!(clear_span(&facts, 4000), None);
        assert_eq!(clear_span(&facts, 2 << 30), Some(0..1 << 30));
    }

    /// A target whose tables do not read as zeros gets exactly the table
    /// sectors written; one that reads as zeros gets nothing.
    #[test]
    fn ensure_zero_writes_only_when_needed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("card");
        std::fs::write(&path, vec![0x5a; 2 * HEAD as usize]).unwrap();
        let t = Target::open(&path, false).unwrap();
        assert_eq!(ensure_zero(&t, 0..TABLES).unwrap(), TABLES);
        assert_eq!(ensure_zero(&t, 0..TABLES).unwrap(), 0);
        let data = std::fs::read(&path).unwrap();
        assert!(data[..TABLES as usize].iter().all(|&b| b == 0));
        assert!(data[TABLES as usize..].iter().all(|&b| b == 0x5a));
    }
}

//! The writing half of a flash, once the target is open and confirmed:
//! clear → read the image's first MiB → write the rest (the body) → flush
//! → check the body against the bmap → write the first MiB → flush → read
//! it back. See `writer` for why the first MiB goes last, and `verify` for
//! why the check sits between.
//!
//! The check follows the whole body's write and flush rather than each
//! chunk's: a card can return what was just written from its cache, or
//! from a place that a later write overwrites (counterfeit cards that wrap
//! around past their real capacity), so only a read after everything is
//! written proves what the card keeps. (Checking a regular file chunk by
//! chunk while it was written, with direct reads, was tried: on the
//! benchmark's disk, reads beside writes were no faster than after them.)
//!
//! A regular file is written through the page cache and its body is read
//! back from there while a second thread flushes it (`fsync`); the first
//! MiB is written only after both succeeded, then flushed and read back
//! the same way. For a file that proves what a read from the disk would:
//! its filesystem keeps the bytes it was given, so after a successful
//! `fsync` the page cache returns what the file holds, and a write the disk
//! did not take surfaces as an `fsync` error, which fails the flash. None
//! of a card's failures (a cache answering instead of the flash, writes
//! that wrap around) exist there. Reading the disk back with `O_DIRECT`, as
//! from a card, took 0.6 s for 561 MiB on the benchmark's VM, longer than
//! writing it (see benchmarks/README.md).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use indicatif::ProgressBar;

use super::direct::Target;
use super::source::{BackgroundHash, Hash, ImageSource};
use super::stream::Head;
use super::target::BlockFacts;
use super::{bytes_bar, stream, verify, writer, Interrupted, Refusal, Stopped};
use crate::artifact::bmap::Bmap;
use crate::artifact::checksums::Sums;

/// What the target is left as when we stop before the end.
const NOT_BOOTABLE: &str = "it has no partition table, it will not boot";

pub struct Job<'a> {
    pub image: &'a Path,
    pub target: &'a Path,
    /// The target as the user named it, for messages.
    pub shown: String,
    pub bmap: &'a Bmap,
    pub block: Option<&'a BlockFacts>,
    pub stop: &'a (dyn Fn() -> bool + Sync),
}

pub struct Done {
    pub prepared: writer::Prepared,
    /// Image bytes written (body and first MiB).
    pub bytes: u64,
    /// Clearing and writing (with their flushes), and reading back:
    /// together, the whole flash. A file's body is flushed during its
    /// read-back, so that flush counts as verifying.
    pub write_time: Duration,
    pub verify_time: Duration,
}

impl Job<'_> {
    /// `entry`: the image's SHA256SUMS entry to hash the whole image for.
    pub fn run(
        &self,
        target: &Target,
        mut source: ImageSource,
        sums: Option<&Sums>,
        entry: Option<&(String, Hash)>,
    ) -> Result<Done> {
        let started = Instant::now();
        let prepared = match self.block {
            Some(facts) => writer::prepare_block(target, self.target, facts, self.size())?,
            None => {
                writer::prepare_file(target.file(), self.target, self.size())?;
                writer::Prepared::default()
            }
        };
        let head = stream::read_head(&mut source, self.bmap).with_context(|| self.unusable())?;
        // A raw image's SHA256SUMS hash covers its holes, which the stream
        // skips: a second reader hashes it alongside. A compressed one is
        // hashed in its stream (see `ImageSource::open`).
        let hasher = match entry {
            Some((_, Hash::Stored)) if !source.is_compressed() => {
                Some(BackgroundHash::start(self.image))
            }
            _ => None,
        };
        let bar = bytes_bar("writing", self.body_bytes(&head));
        let written = writer::write_body(
            &mut source,
            target,
            self.bmap,
            self.block.is_some(),
            self.stop,
            &bar,
        );
        bar.finish_and_clear();
        let body_bytes = written
            .with_context(|| {
                format!(
                    "writing {} to {} stopped: the target is incomplete ({NOT_BOOTABLE})",
                    self.image.display(),
                    self.shown
                )
            })
            .map_err(|e| self.stopped_as(e))?;
        let streamed = source
            .finish(self.size())
            .with_context(|| self.unusable())?;
        let image_sum = match hasher {
            Some(h) => Some(h.join()?),
            None => streamed,
        };
        if let (Some(s), Some((name, _)), Some(actual)) = (sums, entry, &image_sum) {
            s.check(name, actual)
                .map_err(Refusal::from)
                .with_context(|| self.unusable())?;
        }
        if self.block.is_some() {
            self.flush(target)?;
        }
        let mut write_time = started.elapsed();

        let verified_at = Instant::now();
        let bar = bytes_bar("verifying", self.bmap.mapped_bytes());
        let checked = self.check_body(target, &head, &bar);
        bar.finish_and_clear();
        checked
            .with_context(|| self.unusable())
            .map_err(|e| self.stopped_as(e))?;
        let mut verify_time = verified_at.elapsed();
        if (self.stop)() {
            return Err(self.stopped_as(Stopped.into()));
        }

        let head_at = Instant::now();
        let head_bytes = writer::write_head(target, &head)?;
        self.flush(target)?;
        write_time += head_at.elapsed();
        let head_checked_at = Instant::now();
        if let Err(e) = verify::verify_head(target, self.bmap, &head) {
            // A card that reads back wrong must not boot: clear its table again.
            let cleared = match writer::clear_head(target) {
                Ok(()) => "its first MiB was zeroed again so it does not boot",
                Err(_) => "clearing its first MiB failed too",
            };
            return Err(e.context(format!("{} is not usable: {cleared}", self.shown)));
        }
        verify_time += head_checked_at.elapsed();
        Ok(Done {
            prepared,
            bytes: body_bytes + head_bytes,
            write_time,
            verify_time,
        })
    }

    fn size(&self) -> u64 {
        self.bmap.image_size
    }

    /// Mapped bytes past the first MiB.
    fn body_bytes(&self, head: &Head) -> u64 {
        let in_head: u64 = head.pieces.iter().map(|p| p.end - p.start).sum();
        self.bmap.mapped_bytes() - in_head
    }

    /// Reads the body back against the bmap: a block device was flushed
    /// before; a file is flushed meanwhile (see the module's comment), and a
    /// failed flush fails the check.
    fn check_body(&self, target: &Target, head: &Head, bar: &ProgressBar) -> Result<()> {
        let check = || verify::verify_body(target, self.bmap, head, self.image, self.stop, bar);
        if self.block.is_some() {
            return check();
        }
        std::thread::scope(|scope| {
            let flushing = scope.spawn(|| self.flush(target));
            let checked = check();
            let flushed = flushing
                .join()
                .map_err(|_| anyhow!("the flushing thread panicked"))?;
            checked.and(flushed)
        })
    }

    fn flush(&self, target: &Target) -> Result<()> {
        target
            .file()
            .sync_all()
            .with_context(|| format!("flushing {}", self.shown))
    }

    fn unusable(&self) -> String {
        format!(
            "nothing bootable was written to {} ({NOT_BOOTABLE})",
            self.shown
        )
    }

    /// A stop becomes [`Interrupted`], which says what state the target is in.
    fn stopped_as(&self, e: anyhow::Error) -> anyhow::Error {
        if e.is::<Stopped>() {
            Interrupted {
                target: self.shown.clone(),
                state: NOT_BOOTABLE,
            }
            .into()
        } else {
            e
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::*;
    use crate::flash::fixture::{case, Case, B};
    use crate::flash::verify::Mismatch;

    fn job<'a>(c: &'a Case, stop: &'a (dyn Fn() -> bool + Sync)) -> Job<'a> {
        Job {
            image: &c.image,
            target: &c.path,
            shown: c.path.display().to_string(),
            bmap: &c.bmap,
            block: None,
            stop,
        }
    }

    /// A file's body is read back from its page cache while it is flushed:
    /// a byte that differs there (changed after the write, not yet
    /// flushed) is what the file holds, and is found.
    #[test]
    fn a_file_is_checked_while_it_is_flushed() {
        let c = case(false);
        let bar = ProgressBar::hidden();
        let run = job(&c, &|| false);
        run.check_body(&c.target, &c.head, &bar).unwrap();
        c.plain.write_all_at(b"x", 410 * B + 3).unwrap();
        let err = run.check_body(&c.target, &c.head, &bar).unwrap_err();
        let m = err.downcast_ref::<Mismatch>().expect("the target's fault");
        assert_eq!(m.range, "blocks 400-419 (bytes 1638400..1720320)");
        let stopped = job(&c, &|| true).check_body(&c.target, &c.head, &bar);
        assert!(stopped.unwrap_err().is::<Stopped>());
    }
}

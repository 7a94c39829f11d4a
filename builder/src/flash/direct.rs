//! The target: a block device written and read with `O_DIRECT` where it
//! can be, a regular file through the page cache.
//!
//! Why direct for a device: a buffered write copies every byte into the
//! page cache and leaves it dirty for the kernel to write back later, so
//! the flash either stalls in one long fsync at the end or must flush
//! periodically (the copy then waits for the device at every flush); on a
//! loop device the data is even cached twice, once for the loop device and
//! once for its backing file.
//! With `O_DIRECT` each write goes from our buffer to the device, the
//! progress bar shows what the device took, Ctrl-C is answered within one
//! write, and the read-back comes from the device without first evicting
//! our own pages. Where the kernel refuses `O_DIRECT` the device is used
//! buffered, as before.
//!
//! Why buffered for a file: its filesystem keeps what it is given, so the
//! read-back may come from the page cache and overlap the flush (see
//! `job`); direct writes would only make the writer wait for the disk.

use std::fs::{File, OpenOptions};
use std::ops::{Deref, DerefMut, Range};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{ensure, Context, Result};
use rustix::fs::OFlags;

/// Alignment of buffers, offsets and lengths for `O_DIRECT`: a page, which
/// is a multiple of every logical block size (512 or 4096) we meet.
pub const ALIGN: usize = 4096;

/// A heap buffer whose usable part starts on an [`ALIGN`] boundary. Safe
/// code cannot ask the allocator for alignment (this workspace denies
/// `unsafe`), so the vector is `ALIGN` bytes longer and the buffer starts at
/// its first aligned byte; the heap block never moves, as the vector never
/// grows.
pub struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + ALIGN];
        let start = (ALIGN - raw.as_ptr() as usize % ALIGN) % ALIGN;
        AlignedBuf { raw, start, len }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBuf({} bytes)", self.len)
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// The opened target: a block device (held with `O_EXCL`) or a file.
pub struct Target {
    file: File,
    path: PathBuf,
    block: bool,
    /// Cleared for good when the kernel refuses an aligned direct write.
    direct: AtomicBool,
}

impl Target {
    /// Block devices are opened with `O_EXCL`: the kernel then refuses if
    /// anyone else (a filesystem, device-mapper, another flash) has claimed
    /// the device since we inspected it, and keeps them out while we write.
    /// Only block devices are tried with `O_DIRECT`.
    pub fn open(path: &Path, block: bool) -> Result<Target> {
        Target::open_with(path, block, block)
    }

    /// `direct`: try `O_DIRECT` (tests use it on files, to cover the
    /// direct path without a block device).
    pub(crate) fn open_with(path: &Path, block: bool, direct: bool) -> Result<Target> {
        let attempt = |direct: bool| {
            let mut flags = OFlags::empty();
            if block {
                flags |= OFlags::EXCL;
            }
            if direct {
                flags |= OFlags::DIRECT;
            }
            let mut o = OpenOptions::new();
            o.read(true)
                .write(true)
                .create(!block)
                .custom_flags(flags.bits() as i32);
            o.open(path)
        };
        let (file, direct) = match direct.then(|| attempt(true)) {
            None => (attempt(false), false),
            Some(Ok(f)) => (Ok(f), true),
            Some(Err(e)) if e.raw_os_error() == Some(einval()) => (attempt(false), false),
            Some(Err(e)) => (Err(e), false),
        };
        let file = file.with_context(|| {
            if block {
                format!("opening {} exclusively (is it in use?)", path.display())
            } else {
                format!("opening {} for writing", path.display())
            }
        })?;
        if block && !direct {
            log::info!(
                "{} does not take O_DIRECT; writing through the page cache",
                path.display()
            );
        }
        Ok(Target {
            file,
            path: path.to_path_buf(),
            block,
            direct: AtomicBool::new(direct),
        })
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn is_block(&self) -> bool {
        self.block
    }

    pub fn is_direct(&self) -> bool {
        self.direct.load(Ordering::Relaxed)
    }

    /// Writes `data` at `offset`. A piece that is not aligned (the partial
    /// last block of an odd-sized image) is written buffered, by turning
    /// `O_DIRECT` off for that one write; callers write from one thread.
    pub fn write_at(&self, data: &[u8], offset: u64) -> Result<()> {
        let context = || format!("writing {} bytes at offset {offset}", data.len());
        if !self.is_direct() {
            return write_buffered(&self.file, data, offset).with_context(context);
        }
        if !is_aligned(data.as_ptr() as usize, offset, data.len()) {
            self.set_direct(false)?;
            let written = write_buffered(&self.file, data, offset).with_context(context);
            self.set_direct(true)?;
            return written;
        }
        match self.file.write_all_at(data, offset) {
            Err(e) if e.raw_os_error() == Some(einval()) => {
                // The filesystem accepted the flag at open but not the write.
                log::info!(
                    "{} refused a direct write; writing through the page cache",
                    self.path.display()
                );
                self.set_direct(false)?;
                self.direct.store(false, Ordering::Relaxed);
                write_buffered(&self.file, data, offset).with_context(context)
            }
            other => other.with_context(context),
        }
    }

    /// Reads `span` of the target into `buf` and returns those bytes.
    pub fn read_span<'b>(&self, buf: &'b mut AlignedBuf, span: Range<u64>) -> Result<&'b [u8]> {
        let at = self.read_into(buf, span)?;
        Ok(&buf[at])
    }

    /// Reads `span` of the target into `buf` and says where in `buf` it is.
    /// With `O_DIRECT` the read covers `span` widened to [`ALIGN`] (so `buf`
    /// needs up to `2 * ALIGN` bytes of room beyond the span's length); a
    /// short read past the end of the file or device is fine as long as
    /// `span` itself was read.
    pub fn read_into(&self, buf: &mut AlignedBuf, span: Range<u64>) -> Result<Range<usize>> {
        let context = || format!("reading back bytes {}..{}", span.start, span.end);
        let len = (span.end - span.start) as usize;
        if !self.is_direct() {
            self.file
                .read_exact_at(&mut buf[..len], span.start)
                .with_context(context)?;
            return Ok(0..len);
        }
        let align = ALIGN as u64;
        let from = span.start / align * align;
        let to = span.end.div_ceil(align) * align;
        let window = (to - from) as usize;
        ensure!(window <= buf.len(), "read buffer too small for {:?}", span);
        let skip = (span.start - from) as usize;
        let mut got = 0;
        while got < skip + len {
            let n = self
                .file
                .read_at(&mut buf[got..window], from + got as u64)
                .with_context(context)?;
            ensure!(n > 0, "{}: the target ends early", context());
            got += n;
        }
        Ok(skip..skip + len)
    }

    fn set_direct(&self, on: bool) -> Result<()> {
        let flags = rustix::fs::fcntl_getfl(&self.file).context("reading the target's flags")?;
        let flags = if on {
            flags | OFlags::DIRECT
        } else {
            flags - OFlags::DIRECT
        };
        rustix::fs::fcntl_setfl(&self.file, flags).context("switching O_DIRECT on the target")
    }
}

/// Bytes per buffered write(2), as `bmaptool` writes. Writes of 2 MiB or
/// more make the kernel (6.18) fill the page cache with 2 MiB folios, and
/// on the benchmark's VM those cost five to ten times the system time:
/// 560 MiB with `dd` after 3 s idle took 0.6-1.6 s of it in 2, 4 or 8 MiB
/// writes, 0.15-0.3 s in 1 MiB writes (see benchmarks/README.md).
const BUFFERED_WRITE: usize = 1 << 20;

fn write_buffered(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut at = offset;
    for piece in data.chunks(BUFFERED_WRITE) {
        file.write_all_at(piece, at)?;
        at += piece.len() as u64;
    }
    Ok(())
}

fn is_aligned(addr: usize, offset: u64, len: usize) -> bool {
    addr.is_multiple_of(ALIGN) && offset.is_multiple_of(ALIGN as u64) && len.is_multiple_of(ALIGN)
}

/// EINVAL: how the kernel refuses O_DIRECT (at open, or at the first write).
fn einval() -> i32 {
    rustix::io::Errno::INVAL.raw_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffer_is_aligned_and_sized() {
        for len in [0, 1, 4096, 1 << 20] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
            b.fill(1);
            assert!(b.iter().all(|&x| x == 1));
        }
    }

    /// Unaligned pieces and spans work on a direct target too.
    #[test]
    fn unaligned_writes_and_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let t = Target::open_with(&path, false, true).unwrap();
        let mut data = AlignedBuf::new(3 * ALIGN);
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        t.write_at(&data[..2 * ALIGN], 0).unwrap();
        t.write_at(&data[2 * ALIGN..2 * ALIGN + 100], 2 * ALIGN as u64)
            .unwrap();
        t.write_at(&data[7..20], 3 * ALIGN as u64 + 7).unwrap();
        t.file().sync_all().unwrap();
        let mut buf = AlignedBuf::new(4 * ALIGN);
        assert_eq!(
            t.read_span(&mut buf, 5..2 * ALIGN as u64 + 100).unwrap(),
            &data[5..2 * ALIGN + 100]
        );
        let end = 3 * ALIGN as u64;
        assert_eq!(
            t.read_span(&mut buf, end + 7..end + 20).unwrap(),
            &data[7..20]
        );
        assert!(
            t.read_span(&mut buf, end + 7..end + 21).is_err(),
            "past the end"
        );
    }

    /// A file is written through the page cache, in pieces.
    #[test]
    fn buffered_writes_land_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        let t = Target::open(&path, false).unwrap();
        assert!(!t.is_direct() && !t.is_block());
        let data: Vec<u8> = (0..5 * BUFFERED_WRITE / 2)
            .map(|i| (i % 251) as u8)
            .collect();
        t.write_at(&data, 7).unwrap();
        let mut buf = AlignedBuf::new(data.len());
        let end = 7 + data.len() as u64;
        assert!(t.read_span(&mut buf, 7..end).unwrap() == &data[..]);
    }
}

//! Filesystems built from staged directory trees straight into a disk image
//! at a byte offset: FAT32 for firmware/ESP partitions, ext4 for root. Also
//! the sparse-file helpers they and the bmap writer share.

pub mod ext4;
pub mod ext4_native;
pub mod fat;
mod xattr;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use rustix::fs::{FallocateFlags, SeekFrom as RxSeek};
use rustix::io::Errno;

use crate::config::Ext4Writer;

/// Makes the root ext4 with `writer`; see [`ext4::make_ext4`].
pub fn make_ext4_with(
    writer: Ext4Writer,
    image: &std::path::Path,
    offset: u64,
    size: u64,
    tree: &std::path::Path,
    params: &ext4::Ext4Params,
) -> Result<()> {
    match writer {
        Ext4Writer::Mke2fs => ext4::make_ext4(image, offset, size, tree, params),
        Ext4Writer::Native => ext4_native::make_ext4_native(image, offset, size, tree, params),
    }
}

/// Byte ranges of `file` (below `size`) that hold data, from
/// SEEK_DATA/SEEK_HOLE. Holes read as zeros and take no space. Note that
/// unwritten (fallocated) extents count as holes on most filesystems.
pub fn data_extents(file: &File, size: u64) -> Result<Vec<Range<u64>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        let data = match rustix::fs::seek(file, RxSeek::Data(pos)) {
            Ok(d) => d,
            Err(Errno::NXIO) => break, // no data after `pos`
            Err(e) => return Err(e).context("lseek(SEEK_DATA)"),
        };
        if data >= size {
            break;
        }
        let hole = rustix::fs::seek(file, RxSeek::Hole(data))
            .context("lseek(SEEK_HOLE)")?
            .min(size);
        out.push(data..hole);
        pos = hole;
    }
    Ok(out)
}

/// Makes `dst[offset..offset + len]` read as zeros without allocating it
/// (punches a hole), so nothing from an earlier build survives there.
pub(crate) fn clear_range(dst: &File, offset: u64, len: u64) -> Result<()> {
    let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    match rustix::fs::fallocate(dst, flags, offset, len) {
        Ok(()) => Ok(()),
        // Filesystems without hole punching: zero the range the slow way.
        Err(Errno::OPNOTSUPP) => write_zeros(dst, offset, len).context("zeroing the target range"),
        Err(e) => Err(e).context("punching a hole for the target range"),
    }
}

/// Makes `dst[offset..offset + len]` an exact copy of `src[..len]` while
/// keeping holes as holes: the range is cleared first, then only `src`'s
/// data extents are written.
pub(crate) fn copy_sparse_into(src: &mut File, len: u64, dst: &File, offset: u64) -> Result<()> {
    clear_range(dst, offset, len)?;
    let mut buf = vec![0u8; 1 << 20];
    for extent in data_extents(src, len)? {
        src.seek(SeekFrom::Start(extent.start))
            .context("seeking in the source")?;
        let mut pos = extent.start;
        while pos < extent.end {
            let n = (extent.end - pos).min(buf.len() as u64) as usize;
            src.read_exact(&mut buf[..n])
                .context("reading the source")?;
            dst.write_all_at(&buf[..n], offset + pos)
                .context("writing the target")?;
            pos += n as u64;
        }
    }
    Ok(())
}

fn write_zeros(dst: &File, offset: u64, len: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len() as u64) as usize;
        dst.write_all_at(&zeros[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_is_exact_and_stays_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let src_path = dir.path().join("src");
        let src = File::create(&src_path).unwrap();
        src.set_len(8 << 20).unwrap();
        src.write_all_at(b"head", 0).unwrap();
        src.write_all_at(&[9u8; 5000], 6 << 20).unwrap();
        let dst = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        dst.set_len(16 << 20).unwrap();
        // Old content in the target range must not survive.
        dst.write_all_at(&[0xee; 1 << 20], (2 << 20) + (3 << 20))
            .unwrap();
        let mut src = File::open(&src_path).unwrap();
        copy_sparse_into(&mut src, 8 << 20, &dst, 2 << 20).unwrap();

        let whole = std::fs::read(dir.path().join("dst")).unwrap();
        let want = std::fs::read(&src_path).unwrap();
        assert!(whole[2 << 20..10 << 20] == want[..], "copied range differs");
        assert!(whole[..2 << 20]
            .iter()
            .chain(&whole[10 << 20..])
            .all(|&b| b == 0));
        let mapped: u64 = data_extents(&dst, 16 << 20)
            .unwrap()
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        assert!(
            mapped < 1 << 20,
            "target stays sparse: {mapped} bytes mapped"
        );
    }
}

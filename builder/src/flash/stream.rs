//! The reading side of the write: reads the image's first MiB, which is
//! held back for the very last write, then walks the bmap's ranges through
//! the rest of the image and hands them to the writing thread in chunks
//! (whose buffers come back to be reused).
//!
//! Nothing is hashed here: the read-back hashes what the target returns
//! against the bmap (see `verify`), which proves the image's bytes and the
//! target's in one pass; a second SHA-256 pass over the image as it is read
//! would cost as much CPU again (the bottleneck on a fast target) and prove
//! nothing more about the card.

use std::ops::Range;
use std::sync::mpsc;

use anyhow::{bail, Result};

use super::direct::AlignedBuf;
use super::source::ImageSource;
use crate::artifact::bmap::Bmap;

/// The part of the image written last.
pub const HEAD: u64 = 1 << 20;

/// The first MiB of the image, held back until everything else is written.
#[derive(Debug)]
pub struct Head {
    pub buf: AlignedBuf,
    /// Mapped pieces of `buf`; the rest is zeros and already zero on the target.
    pub pieces: Vec<Range<u64>>,
}

/// Large enough that a write is one request to the device, small enough
/// that the queue stays a few MiB.
pub const CHUNK: usize = 4 << 20;

/// `buf[..len]` goes to `offset` on the target.
pub struct Chunk {
    pub offset: u64,
    /// Aligned, so the writer can hand it to an `O_DIRECT` target as it is.
    pub buf: AlignedBuf,
    pub len: usize,
}

/// Reads the mapped pieces of the first MiB, which is written last: read
/// first, it can be checked along with the rest before it is written.
pub fn read_head(source: &mut ImageSource, bmap: &Bmap) -> Result<Head> {
    let head_len = HEAD.min(bmap.image_size);
    let mut head = Head {
        buf: AlignedBuf::new(head_len as usize),
        pieces: Vec::new(),
    };
    for range in &bmap.ranges {
        let span = bmap.byte_range(range);
        if span.start >= head_len {
            break;
        }
        let end = span.end.min(head_len);
        source.skip_to(span.start)?;
        source.read(&mut head.buf[span.start as usize..end as usize])?;
        push_piece(&mut head.pieces, span.start..end);
    }
    Ok(head)
}

/// Reads every mapped range past the first MiB in order (after
/// [`read_head`]), in chunks to `out`. Stops early (with an error) when
/// the writer hangs up.
pub fn read_body(
    source: &mut ImageSource,
    bmap: &Bmap,
    out: mpsc::SyncSender<Chunk>,
    free: mpsc::Receiver<AlignedBuf>,
) -> Result<()> {
    for range in &bmap.ranges {
        let span = bmap.byte_range(range);
        let mut pos = span.start.max(HEAD);
        if pos >= span.end {
            continue;
        }
        source.skip_to(pos)?;
        while pos < span.end {
            let len = (span.end - pos).min(CHUNK as u64) as usize;
            let mut buf = free.try_recv().unwrap_or_else(|_| AlignedBuf::new(CHUNK));
            source.read(&mut buf[..len])?;
            let chunk = Chunk {
                offset: pos,
                buf,
                len,
            };
            if out.send(chunk).is_err() {
                bail!("the writer stopped");
            }
            pos += len as u64;
        }
    }
    Ok(())
}

fn push_piece(pieces: &mut Vec<Range<u64>>, r: Range<u64>) {
    match pieces.last_mut() {
        Some(last) if last.end == r.start => last.end = r.end,
        _ => pieces.push(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::bmap::MappedRange;
    use crate::flash::source::Hash;

    #[test]
    fn pieces_merge_when_adjacent() {
        let mut p = Vec::new();
        push_piece(&mut p, 0..10);
        push_piece(&mut p, 10..20);
        push_piece(&mut p, 30..40);
        assert_eq!(p, [0..20, 30..40]);
    }

    /// A range that straddles the first MiB: its head part is held back,
    /// the rest is sent; raw and compressed images alike.
    #[test]
    fn splits_at_the_head() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let data: Vec<u8> = (0..(3u64 << 20)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let zst = dir.path().join("img.zst");
        std::fs::write(&zst, zstd::encode_all(&data[..], 1).unwrap()).unwrap();
        let range = |blocks| MappedRange {
            blocks,
            sha256: String::new(),
        };
        let bmap = Bmap {
            image_size: data.len() as u64,
            block_size: 4096,
            blocks_count: 768,
            mapped_blocks: 302,
            ranges: vec![range(1..3), range(200..500)],
        };
        for p in [&path, &zst] {
            let (tx, rx) = mpsc::sync_channel(1000);
            let (_free_tx, free_rx) = mpsc::channel();
            let mut src = ImageSource::open(p, Hash::None).unwrap();
            let head = read_head(&mut src, &bmap).unwrap();
            read_body(&mut src, &bmap, tx, free_rx).unwrap();
            let chunks = rx.into_iter().collect::<Vec<_>>();
            assert_eq!(head.pieces, [4096..3 * 4096, 200 * 4096..HEAD]);
            assert_eq!(head.buf[5000], data[5000]);
            assert_eq!(head.buf[0], 0, "unmapped head bytes stay zero");
            assert_eq!(chunks.len(), 1);
            assert_eq!(chunks[0].offset, HEAD);
            assert_eq!(
                chunks[0].buf[..chunks[0].len],
                data[HEAD as usize..500 * 4096]
            );
        }
    }
}

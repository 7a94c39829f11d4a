//! The reading side of the write: walks the bmap's ranges through the
//! image, checks each range's SHA-256 as it streams past, keeps the first
//! MiB back for the very last write, and hands everything else to the
//! writing thread in chunks (whose buffers come back to be reused).

use std::ops::Range;
use std::sync::mpsc;

use anyhow::{bail, Result};
use sha2::{Digest, Sha256};

use super::bmap::Bmap;
use super::refusal::Refusal;
use super::source::ImageSource;
use super::writer::{Head, HEAD};

/// Large enough that a write is one request to the device, small enough
/// that the queue stays a few MiB.
pub const CHUNK: usize = 4 << 20;

/// `buf[..len]` goes to `offset` on the target.
pub struct Chunk {
    pub offset: u64,
    pub buf: Vec<u8>,
    pub len: usize,
}

/// Reads every mapped range; returns the held-back head when all ranges
/// matched the bmap. Stops early (with an error) when the writer hangs up.
pub fn read_ranges(
    source: &mut ImageSource,
    bmap: &Bmap,
    out: mpsc::SyncSender<Chunk>,
    free: mpsc::Receiver<Vec<u8>>,
) -> Result<Head> {
    let head_len = HEAD.min(bmap.image_size);
    let mut head = Head {
        buf: vec![0u8; head_len as usize],
        pieces: Vec::new(),
    };
    for range in &bmap.ranges {
        let span = bmap.byte_range(range);
        source.skip_to(span.start)?;
        let mut hasher = Sha256::new();
        let mut pos = span.start;
        while pos < span.end {
            let n = (span.end - pos).min(CHUNK as u64) as usize;
            let mut buf = free.try_recv().unwrap_or_else(|_| vec![0u8; CHUNK]);
            source.read(&mut buf[..n])?;
            hasher.update(&buf[..n]);
            // The part below HEAD waits in memory; the rest goes out now.
            let split = (head_len.clamp(pos, pos + n as u64) - pos) as usize;
            if split > 0 {
                let at = pos as usize;
                head.buf[at..at + split].copy_from_slice(&buf[..split]);
                push_piece(&mut head.pieces, pos..pos + split as u64);
            }
            if split < n {
                if split > 0 {
                    buf.copy_within(split..n, 0);
                }
                let chunk = Chunk {
                    offset: pos + split as u64,
                    buf,
                    len: n - split,
                };
                if out.send(chunk).is_err() {
                    bail!("the writer stopped");
                }
            }
            pos += n as u64;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != range.sha256 {
            return Err(Refusal::ImageRange {
                range: bmap.describe(range),
                expected: range.sha256.clone(),
                actual,
            }
            .into());
        }
    }
    Ok(head)
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
    use crate::flash::bmap::MappedRange;
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
    /// the rest is sent, and the hash covers both.
    #[test]
    fn splits_at_the_head_and_checks_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("img");
        let data: Vec<u8> = (0..(3u64 << 20)).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let blocks = |b: Range<u64>, ok: bool| MappedRange {
            sha256: if ok {
                hex::encode(Sha256::digest(
                    &data[(b.start * 4096) as usize..(b.end * 4096) as usize],
                ))
            } else {
                "0".repeat(64)
            },
            blocks: b,
        };
        let bmap = |last_ok| Bmap {
            image_size: data.len() as u64,
            block_size: 4096,
            blocks_count: 768,
            mapped_blocks: 302,
            ranges: vec![blocks(1..3, true), blocks(200..500, last_ok)],
        };
        let run = |b: &Bmap| {
            let (tx, rx) = mpsc::sync_channel(1000);
            let (_free_tx, free_rx) = mpsc::channel();
            let mut src = ImageSource::open(&path, Hash::None).unwrap();
            let head = read_ranges(&mut src, b, tx, free_rx);
            (head, rx.into_iter().collect::<Vec<_>>())
        };
        let (head, chunks) = run(&bmap(true));
        let head = head.unwrap();
        assert_eq!(head.pieces, [4096..3 * 4096, 200 * 4096..HEAD]);
        assert_eq!(head.buf[5000], data[5000]);
        assert_eq!(head.buf[0], 0, "unmapped head bytes stay zero");
        assert_eq!(chunks[0].offset, HEAD);
        assert_eq!(
            chunks[0].buf[..chunks[0].len],
            data[HEAD as usize..500 * 4096]
        );

        let (head, _) = run(&bmap(false));
        let err = head.unwrap_err();
        assert!(
            matches!(err.downcast_ref::<Refusal>(), Some(Refusal::ImageRange { range, .. }) if range.starts_with("blocks 200-499")),
            "{err:#}"
        );
    }
}

//! Block map (bmap format 2.0, as bmap-tools reads it) for a sparse image:
//! `bmaptool copy` then writes only the mapped blocks and verifies each
//! range's SHA-256.
//!
//! Mapped ranges are the file's allocated extents (SEEK_DATA/SEEK_HOLE), so
//! everything that must reach the card has to be *written* into the image,
//! even zeros; holes are skipped and keep whatever the card held before.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Block size of the map; matches bmap-tools' default and ext4's block.
pub const BLOCK_SIZE: u64 = 4096;

/// Length of a hex SHA-256, and of the all-zero placeholder bmap-tools
/// substitutes for BmapFileChecksum when verifying the file.
const CHECKSUM_HEX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BmapSummary {
    pub image_size: u64,
    pub block_size: u64,
    pub blocks_count: u64,
    pub mapped_blocks: u64,
    /// Mapped block ranges, end exclusive.
    pub ranges: Vec<Range<u64>>,
    /// The BmapFileChecksum written into the file.
    pub bmap_checksum: String,
}

/// Writes the bmap of `image` to `bmap_out` (atomically: temp file + rename).
pub fn write_bmap(image: &Path, bmap_out: &Path) -> Result<BmapSummary> {
    let mut file =
        File::open(image).with_context(|| format!("opening {} to map it", image.display()))?;
    let image_size = file
        .metadata()
        .with_context(|| format!("reading the size of {}", image.display()))?
        .len();
    let ranges = mapped_blocks(&file, image_size)
        .with_context(|| format!("finding the data extents of {}", image.display()))?;
    let mut hashed = Vec::with_capacity(ranges.len());
    for r in &ranges {
        let sum = range_sha256(&mut file, r, image_size).with_context(|| {
            format!(
                "hashing blocks {}-{} of {}",
                r.start,
                r.end - 1,
                image.display()
            )
        })?;
        hashed.push((r.clone(), sum));
    }
    let blocks_count = image_size.div_ceil(BLOCK_SIZE);
    let mapped_blocks = ranges.iter().map(|r| r.end - r.start).sum();
    let (xml, bmap_checksum) = render(image_size, blocks_count, mapped_blocks, &hashed);

    let dir = bmap_out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = crate::artifact::artifact_temp(dir).with_context(|| {
        format!(
            "creating a temporary file in {} for the bmap",
            dir.display()
        )
    })?;
    tmp.write_all(xml.as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(bmap_out)
        .with_context(|| format!("moving the bmap into place at {}", bmap_out.display()))?;
    Ok(BmapSummary {
        image_size,
        block_size: BLOCK_SIZE,
        blocks_count,
        mapped_blocks,
        ranges,
        bmap_checksum,
    })
}

/// Block ranges (end exclusive) of `file` that hold data, merged where they
/// touch. Extent edges are widened to whole blocks, never narrowed, so no
/// data is lost if the host filesystem's blocks are smaller than ours.
pub fn mapped_blocks(file: &File, size: u64) -> Result<Vec<Range<u64>>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for extent in crate::fs::data_extents(file, size)? {
        let blocks = extent.start / BLOCK_SIZE..extent.end.div_ceil(BLOCK_SIZE);
        match out.last_mut() {
            Some(last) if blocks.start <= last.end => last.end = last.end.max(blocks.end),
            _ => out.push(blocks),
        }
    }
    Ok(out)
}

/// SHA-256 of the blocks in `range`, stopping at the end of the image for a
/// partial last block (as bmap-tools does).
fn range_sha256(file: &mut File, range: &Range<u64>, image_size: u64) -> Result<String> {
    let start = range.start * BLOCK_SIZE;
    let end = (range.end * BLOCK_SIZE).min(image_size);
    file.seek(SeekFrom::Start(start))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = end - start;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        file.read_exact(&mut buf[..n])?;
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hex::encode(hasher.finalize()))
}

/// The bmap XML and its BmapFileChecksum: the SHA-256 of the file with the
/// checksum field set to 64 ASCII zeros, exactly what bmap-tools recomputes.
fn render(
    image_size: u64,
    blocks_count: u64,
    mapped: u64,
    ranges: &[(Range<u64>, String)],
) -> (String, String) {
    let placeholder = "0".repeat(CHECKSUM_HEX_LEN);
    let percent = if blocks_count == 0 {
        0.0
    } else {
        mapped as f64 * 100.0 / blocks_count as f64
    };
    let mut x = format!(
        "<?xml version=\"1.0\" ?>\n\
         <!-- Block map written by habuild: only the listed (mapped) blocks hold\n     \
         data; the rest of the image is zeros and need not be written. -->\n\n\
         <bmap version=\"2.0\">\n    \
         <!-- Image size in bytes: {size_h} -->\n    \
         <ImageSize> {image_size} </ImageSize>\n\n    \
         <!-- Size of a block in bytes -->\n    \
         <BlockSize> {BLOCK_SIZE} </BlockSize>\n\n    \
         <!-- Count of blocks in the image file -->\n    \
         <BlocksCount> {blocks_count} </BlocksCount>\n\n    \
         <!-- Count of mapped blocks: {mapped_h} or {percent:.1}% -->\n    \
         <MappedBlocksCount> {mapped} </MappedBlocksCount>\n\n    \
         <!-- Type of checksum used in this file -->\n    \
         <ChecksumType> sha256 </ChecksumType>\n\n    \
         <!-- The checksum of this bmap file. When it is calculated, the value of\n         \
         the checksum has be zero (all ASCII \"0\" symbols).  -->\n    \
         <BmapFileChecksum> {placeholder} </BmapFileChecksum>\n\n    \
         <!-- The block map: ranges of mapped blocks (inclusive) and their sha256. -->\n    \
         <BlockMap>\n",
        size_h = human_size(image_size),
        mapped_h = human_size(mapped * BLOCK_SIZE),
    );
    for (r, sum) in ranges {
        let span = if r.end - r.start == 1 {
            r.start.to_string()
        } else {
            format!("{}-{}", r.start, r.end - 1)
        };
        x.push_str(&format!(
            "        <Range chksum=\"{sum}\"> {span} </Range>\n"
        ));
    }
    x.push_str("    </BlockMap>\n</bmap>\n");
    let checksum = hex::encode(Sha256::digest(x.as_bytes()));
    (x.replacen(&placeholder, &checksum, 1), checksum)
}

/// Sizes for the comments, in bmap-tools' style ("1.5 GiB").
fn human_size(bytes: u64) -> String {
    if bytes < 512 {
        return format!("{bytes} bytes");
    }
    let mut size = bytes as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        size /= 1024.0;
        if size < 1024.0 {
            return format!("{size:.1} {unit}");
        }
    }
    format!("{:.1} PiB", size / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::CommandExt;
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    /// A 16 MiB sparse file with data at a few places, one of them unaligned.
    fn sparse_image(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("img");
        let f = File::create(&path).unwrap();
        f.set_len(16 << 20).unwrap();
        f.write_all_at(&[0xaa; 10_000], 0).unwrap();
        f.write_all_at(b"middle", (5 << 20) + 100).unwrap();
        f.write_all_at(&[0x55; 8192], (16 << 20) - 8192).unwrap();
        path
    }

    #[test]
    fn ranges_follow_allocated_extents() {
        let dir = tempfile::tempdir().unwrap();
        let path = sparse_image(dir.path());
        let f = File::open(&path).unwrap();
        let ranges = mapped_blocks(&f, f.metadata().unwrap().len()).unwrap();
        let total_blocks = (16 << 20) / BLOCK_SIZE;
        // Host filesystems allocate in their own blocks (4 KiB or more), so
        // check containment rather than exact edges.
        let covers = |b: u64| ranges.iter().any(|r| r.contains(&b));
        for block in [
            0,
            2,
            (5 << 20) / BLOCK_SIZE,
            total_blocks - 2,
            total_blocks - 1,
        ] {
            assert!(covers(block), "block {block} must be mapped: {ranges:?}");
        }
        assert!(
            !covers(total_blocks / 2 + 100),
            "a hole stays unmapped: {ranges:?}"
        );
        assert!(
            ranges.windows(2).all(|w| w[0].end < w[1].start),
            "sorted and merged: {ranges:?}"
        );
    }

    #[test]
    fn checksum_is_over_the_zeroed_field() {
        let (xml, sum) = render(8192, 2, 1, &[(0..1, "ab".repeat(32))]);
        assert!(xml.contains(&format!("<BmapFileChecksum> {sum} </BmapFileChecksum>")));
        let zeroed = xml.replacen(&sum, &"0".repeat(64), 1);
        assert_eq!(hex::encode(Sha256::digest(zeroed.as_bytes())), sum);
        assert!(
            xml.contains("<Range chksum=\"") && xml.contains("> 0 </Range>"),
            "{xml}"
        );
    }

    #[test]
    fn bmaptool_round_trips_and_catches_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let image = sparse_image(dir.path());
        let bmap = dir.path().join("img.bmap");
        let summary = write_bmap(&image, &bmap).unwrap();
        assert_eq!(summary.blocks_count, 4096);
        assert!(
            summary.mapped_blocks < summary.blocks_count / 2,
            "{summary:?}"
        );

        let copy = dir.path().join("copy");
        Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(&bmap)
            .arg(&image)
            .arg(&copy)
            .run_checked()
            .unwrap();
        assert!(
            std::fs::read(&image).unwrap() == std::fs::read(&copy).unwrap(),
            "copy differs from image"
        );

        // Same bmap, image changed inside a mapped range: bmaptool must refuse.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        f.write_all_at(b"X", 1).unwrap();
        let err = Command::new("bmaptool")
            .arg("copy")
            .arg("--bmap")
            .arg(&bmap)
            .arg(&image)
            .arg(&copy)
            .run_checked();
        let msg = format!(
            "{:#}",
            err.expect_err("corrupted image must fail verification")
        );
        assert!(msg.contains("checksum mismatch"), "{msg}");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_size(100), "100 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(3 << 30), "3.0 GiB");
    }
}

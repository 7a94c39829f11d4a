//! Reading a block map (bmap format 2.x, as `write` and bmap-tools
//! write it). The format is a handful of flat elements, so a small scanner
//! is enough; comments are dropped first because they may contain text that
//! looks like elements.
//!
//! Like bmap-tools, the file's own `BmapFileChecksum` is checked before
//! anything is trusted: the SHA-256 of the file with the checksum's value
//! replaced by as many ASCII zeros.

use std::ops::Range;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The file's `BmapFileChecksum` does not match its contents: the `.bmap`
/// is damaged or was edited. Typed: `flash` refuses on it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("the block map's BmapFileChecksum is {expected} but its contents hash to {actual}: the .bmap is damaged or was edited")]
pub struct ChecksumMismatch {
    pub expected: String,
    pub actual: String,
}

/// One mapped range of blocks (end exclusive) and the SHA-256 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedRange {
    pub blocks: Range<u64>,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bmap {
    pub image_size: u64,
    pub block_size: u64,
    pub blocks_count: u64,
    pub mapped_blocks: u64,
    /// Sorted, non-overlapping.
    pub ranges: Vec<MappedRange>,
}

impl Bmap {
    /// Byte span of `r` in the image; the last block may be partial.
    pub fn byte_range(&self, r: &MappedRange) -> Range<u64> {
        let start = r.blocks.start * self.block_size;
        let end = (r.blocks.end * self.block_size).min(self.image_size);
        start..end
    }

    /// Bytes that a flash writes: the mapped blocks, cut at the image end.
    pub fn mapped_bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| {
                let b = self.byte_range(r);
                b.end - b.start
            })
            .sum()
    }

    /// A map of every block of the image read from `image` (to its end),
    /// in ranges of `range_blocks` blocks with their SHA-256: what
    /// `flash --no-bmap` writes and checks, all of it, free blocks too.
    pub fn whole(
        image: &mut impl std::io::Read,
        block_size: u64,
        range_blocks: u64,
    ) -> std::io::Result<Bmap> {
        let chunk = (block_size * range_blocks) as usize;
        let mut buf = vec![0u8; chunk];
        let mut ranges = Vec::new();
        let mut size = 0u64;
        loop {
            let mut n = 0;
            while n < chunk {
                match image.read(&mut buf[n..])? {
                    0 => break,
                    got => n += got,
                }
            }
            if n == 0 {
                break;
            }
            let first = size / block_size;
            size += n as u64;
            ranges.push(MappedRange {
                blocks: first..size.div_ceil(block_size),
                sha256: hex::encode(Sha256::digest(&buf[..n])),
            });
            if n < chunk {
                break;
            }
        }
        let blocks_count = size.div_ceil(block_size);
        Ok(Bmap {
            image_size: size,
            block_size,
            blocks_count,
            mapped_blocks: blocks_count,
            ranges,
        })
    }

    /// "blocks 10-19 (bytes 40960..81920)": how errors name a range.
    pub fn describe(&self, r: &MappedRange) -> String {
        let b = self.byte_range(r);
        format!(
            "blocks {}-{} (bytes {}..{})",
            r.blocks.start,
            r.blocks.end - 1,
            b.start,
            b.end
        )
    }
}

/// Reads and checks `path`.
pub fn read(path: &Path) -> Result<Bmap> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the block map {}", path.display()))?;
    parse(&text).with_context(|| format!("reading the block map {}", path.display()))
}

/// Parses bmap XML and checks it: its own checksum first (a mismatch is a
/// [`ChecksumMismatch`]), then that the numbers agree with each other.
pub fn parse(text: &str) -> Result<Bmap> {
    let body = strip_comments(text);
    let version = attribute(&body, "bmap", "version").context("no <bmap version=...> element")?;
    ensure!(
        version.split('.').next() == Some("2"),
        "bmap format {version} is not supported (habuild reads 2.x, which has SHA-256 checksums)"
    );
    let checksum_type = element(&body, "ChecksumType")?;
    ensure!(
        checksum_type == "sha256",
        "checksum type {checksum_type:?} is not supported (only sha256)"
    );
    let stored = element(&body, "BmapFileChecksum")?;
    let zeroed = text.replace(stored, &"0".repeat(stored.len()));
    let actual = hex::encode(Sha256::digest(zeroed.as_bytes()));
    if !actual.eq_ignore_ascii_case(stored) {
        return Err(ChecksumMismatch {
            expected: stored.to_string(),
            actual,
        }
        .into());
    }

    let image_size = number(&body, "ImageSize")?;
    let block_size = number(&body, "BlockSize")?;
    let blocks_count = number(&body, "BlocksCount")?;
    let mapped_blocks = number(&body, "MappedBlocksCount")?;
    ensure!(block_size > 0, "BlockSize is 0");
    ensure!(
        blocks_count == image_size.div_ceil(block_size),
        "BlocksCount {blocks_count} does not fit ImageSize {image_size} in blocks of {block_size}"
    );
    let ranges = ranges(&body)?;
    let mut end = 0;
    for r in &ranges {
        ensure!(
            r.blocks.start >= end && r.blocks.end <= blocks_count,
            "range {}-{} overlaps another or lies past block {blocks_count}",
            r.blocks.start,
            r.blocks.end - 1
        );
        end = r.blocks.end;
    }
    let counted: u64 = ranges.iter().map(|r| r.blocks.end - r.blocks.start).sum();
    ensure!(
        counted == mapped_blocks,
        "MappedBlocksCount is {mapped_blocks} but the ranges hold {counted} blocks"
    );
    Ok(Bmap {
        image_size,
        block_size,
        blocks_count,
        mapped_blocks,
        ranges,
    })
}

fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<!--") {
        out.push_str(&rest[..start]);
        rest = match rest[start..].find("-->") {
            Some(end) => &rest[start + end + 3..],
            None => "",
        };
    }
    out.push_str(rest);
    out
}

/// The trimmed text of the first `<name>...</name>`.
fn element<'a>(body: &'a str, name: &str) -> Result<&'a str> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = body
        .find(&open)
        .with_context(|| format!("no <{name}> element"))?
        + open.len();
    let len = body[start..]
        .find(&close)
        .with_context(|| format!("<{name}> is not closed"))?;
    Ok(body[start..start + len].trim())
}

fn number(body: &str, name: &str) -> Result<u64> {
    let text = element(body, name)?;
    text.parse()
        .with_context(|| format!("<{name}> holds {text:?}, not a number"))
}

/// The value of `attr` in the first `<tag ...>` start tag.
fn attribute<'a>(body: &'a str, tag: &str, attr: &str) -> Option<&'a str> {
    let open = format!("<{tag}");
    let mut from = 0;
    while let Some(at) = body[from..].find(&open) {
        let start = from + at + open.len();
        let end = start + body[start..].find('>')?;
        // `<bmap` must not match `<bmapfoo`.
        if body[start..].starts_with(|c: char| c.is_whitespace() || c == '>') {
            return attr_value(&body[start..end], attr);
        }
        from = start;
    }
    None
}

fn attr_value<'a>(tag_body: &'a str, attr: &str) -> Option<&'a str> {
    let key = format!("{attr}=");
    let mut from = 0;
    while let Some(at) = tag_body[from..].find(&key) {
        let pos = from + at;
        let preceded_ok = pos == 0 || tag_body[..pos].ends_with(char::is_whitespace);
        let rest = &tag_body[pos + key.len()..];
        if preceded_ok {
            let quote = rest.chars().next().filter(|q| *q == '"' || *q == '\'')?;
            let value = &rest[1..];
            return value.find(quote).map(|end| &value[..end]);
        }
        from = pos + key.len();
    }
    None
}

fn ranges(body: &str) -> Result<Vec<MappedRange>> {
    let map = element(body, "BlockMap")?;
    let mut out = Vec::new();
    let mut rest = map;
    while let Some(at) = rest.find("<Range") {
        let tag_end = rest[at..].find('>').context("unclosed <Range> tag")? + at;
        let tag = &rest[at + "<Range".len()..tag_end];
        let close = rest[tag_end..]
            .find("</Range>")
            .context("<Range> is not closed")?
            + tag_end;
        let span = rest[tag_end + 1..close].trim();
        let sha256 = attr_value(tag, "chksum")
            .with_context(|| format!("range {span:?} has no chksum attribute"))?;
        ensure!(
            sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
            "range {span:?}: {sha256:?} is not a SHA-256"
        );
        out.push(MappedRange {
            blocks: parse_span(span)?,
            sha256: sha256.to_ascii_lowercase(),
        });
        rest = &rest[close + "</Range>".len()..];
    }
    Ok(out)
}

/// "5" or "5-9" (inclusive) → 5..6 or 5..10.
fn parse_span(span: &str) -> Result<Range<u64>> {
    let bad = || format!("{span:?} is not a block range like 5 or 5-9");
    let (first, last) = match span.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (span, span),
    };
    let first: u64 = first.parse().with_context(bad)?;
    let last: u64 = last.parse().with_context(bad)?;
    if last < first {
        bail!(bad());
    }
    Ok(first..last + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_whole_image_map_covers_every_byte() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 13) as u8).collect();
        let m = Bmap::whole(&mut &data[..], 1024, 4).unwrap();
        assert_eq!(m.image_size, 10_000);
        assert_eq!((m.blocks_count, m.mapped_blocks), (10, 10));
        assert_eq!(m.ranges.len(), 3);
        assert_eq!(m.ranges[2].blocks, 8..10);
        assert_eq!(m.byte_range(&m.ranges[2]), 8192..10_000);
        assert_eq!(m.mapped_bytes(), 10_000);
        let last = hex::encode(Sha256::digest(&data[8192..]));
        assert_eq!(m.ranges[2].sha256, last);
        assert!(Bmap::whole(&mut &[][..], 4096, 4)
            .unwrap()
            .ranges
            .is_empty());
    }

    fn written_by_habuild() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.img");
        let f = std::fs::File::create(&img).unwrap();
        f.set_len(1 << 20).unwrap();
        f.write_all_at(&[1; 5000], 0).unwrap();
        f.write_all_at(&[2; 10], 600_000).unwrap();
        let bmap = dir.path().join("a.img.bmap");
        super::super::write_bmap(&img, &bmap).unwrap();
        (dir, bmap)
    }

    #[test]
    fn reads_what_the_pipeline_writes() {
        let (_dir, path) = written_by_habuild();
        let b = read(&path).unwrap();
        assert_eq!(b.image_size, 1 << 20);
        assert_eq!(b.block_size, 4096);
        assert_eq!(b.blocks_count, 256);
        assert_eq!(b.ranges[0].blocks.start, 0);
        assert!(b
            .ranges
            .iter()
            .any(|r| r.blocks.contains(&(600_000 / 4096))));
        assert_eq!(b.describe(&b.ranges[0]).split(' ').next(), Some("blocks"));
    }

    #[test]
    fn tampering_is_a_refusal() {
        let (_dir, path) = written_by_habuild();
        let text = std::fs::read_to_string(&path).unwrap();
        let tampered = text.replacen("<BlocksCount> 256", "<BlocksCount> 255", 1);
        let err = parse(&tampered).unwrap_err();
        assert!(err.downcast_ref::<ChecksumMismatch>().is_some(), "{err:#}");
    }

    /// A bmap as bmap-tools 3.6 writes it (`bmaptool create`), checksum
    /// recomputed here, with an inclusive single-block range.
    #[test]
    fn reads_bmap_tools_style() {
        let xml = "<?xml version=\"1.0\" ?>\n<!-- <ImageSize> 1 </ImageSize> in a comment -->\n\
<bmap version=\"2.0\">\n    <ImageSize> 10000 </ImageSize>\n    <BlockSize> 4096 </BlockSize>\n\
    <BlocksCount> 3 </BlocksCount>\n    <MappedBlocksCount> 2 </MappedBlocksCount>\n\
    <ChecksumType> sha256 </ChecksumType>\n\
    <BmapFileChecksum> 0000000000000000000000000000000000000000000000000000000000000000 </BmapFileChecksum>\n\
    <BlockMap>\n        <Range chksum=\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"> 0 </Range>\n\
        <Range chksum='bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb'> 2-2 </Range>\n    </BlockMap>\n</bmap>\n";
        let sum = hex::encode(Sha256::digest(xml.as_bytes()));
        let xml = xml.replace(&"0".repeat(64), &sum);
        let b = parse(&xml).unwrap();
        assert_eq!(b.image_size, 10000);
        assert_eq!(b.ranges.len(), 2);
        assert_eq!(b.ranges[0].blocks, 0..1);
        assert_eq!(b.ranges[0].sha256, "a".repeat(64));
        assert_eq!(b.byte_range(&b.ranges[1]), 8192..10000);
        assert_eq!(b.mapped_bytes(), 4096 + 1808);
    }

    #[test]
    fn inconsistent_numbers_are_errors() {
        let good = |mapped: &str, ranges: &str| {
            let xml = format!(
                "<bmap version=\"2.0\"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize>\
<BlocksCount>2</BlocksCount><MappedBlocksCount>{mapped}</MappedBlocksCount>\
<ChecksumType>sha256</ChecksumType><BmapFileChecksum>{z}</BmapFileChecksum>\
<BlockMap>{ranges}</BlockMap></bmap>",
                z = "0".repeat(64)
            );
            let sum = hex::encode(Sha256::digest(xml.as_bytes()));
            parse(&xml.replace(&"0".repeat(64), &sum))
        };
        let r = |span: &str| format!("<Range chksum=\"{}\">{span}</Range>", "c".repeat(64));
        assert!(good("1", &r("1")).is_ok());
        assert!(good("2", &r("1")).is_err(), "count mismatch");
        assert!(good("1", &r("2")).is_err(), "past the end");
        assert!(good("2", &(r("1") + &r("0"))).is_err(), "unsorted");
        assert!(good("1", &r("1-0")).is_err(), "backwards");
        assert!(parse("<bmap version=\"1.4\"></bmap>").is_err());
    }
}

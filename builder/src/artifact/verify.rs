//! `habuild verify`: is this image file, or this card it was flashed to,
//! what the build published? Checked against the artifacts beside the
//! image: its `SHA256SUMS` entry (the `.img` itself only: a card is larger
//! and its unmapped blocks hold anything), every mapped range of the `.bmap`,
//! and the partition table `<node>.json` records. A compressed image
//! (`.img.zst`, `.img.xz`, `.img.gz`, told by its magic bytes) is checked
//! as a stream: decompressed once, never to a temporary file.

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::bmap::{self, Bmap};
use super::checksums::{file_name, Sums};
use super::report::{read_layout, ImageLayout};
use crate::util::CommandExt;

/// What to check and against what.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// The image file, or the device/file it was flashed to.
    pub target: PathBuf,
    pub bmap: PathBuf,
    pub json: PathBuf,
    /// Directory whose `SHA256SUMS` lists the image (and bmap, json).
    pub sums_dir: PathBuf,
}

/// One check's outcome; `problem` is None when it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub check: String,
    pub problem: Option<String>,
}

impl Finding {
    fn ok(check: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            problem: None,
        }
    }
    fn bad(check: impl Into<String>, problem: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            problem: Some(problem.into()),
        }
    }
}

/// Defaults for a built image `<dir>/<node>.img` (or `.img.zst`,
/// `.img.xz`, `.img.gz`): `.img.bmap` and `<node>.json` beside it, and
/// that directory's SHA256SUMS.
pub fn request_for_image(target: &Path, image: Option<&Path>) -> VerifyRequest {
    let image = image.unwrap_or(target);
    let plain = super::compression::strip_suffix(image);
    let s = plain.to_string_lossy();
    let stem = s.strip_suffix(".img").unwrap_or(&s);
    VerifyRequest {
        target: target.to_path_buf(),
        bmap: PathBuf::from(format!("{s}.bmap")),
        json: PathBuf::from(format!("{stem}.json")),
        sums_dir: image
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    }
}

/// Runs every check; errors only when the inputs cannot be read at all.
pub fn verify(req: &VerifyRequest) -> Result<Vec<Finding>> {
    let mut out = Vec::new();
    let sums = Sums::load(&req.sums_dir)?;
    if let Some(f) = interrupted_publish(req) {
        out.push(f);
    }
    for f in [&req.bmap, &req.json] {
        let check = format!(
            "{} against {}",
            file_name(f),
            req.sums_dir.join(super::checksums::SHA256SUMS).display()
        );
        out.push(match listed(sums.as_ref(), f) {
            Err(problem) => Finding::bad(check, problem),
            Ok(_) => match sums.as_ref().map(|s| s.check_file(f)) {
                Some(Err(e)) => Finding::bad(check, format!("{e:#}")),
                _ => Finding::ok(check),
            },
        });
    }
    let bmap = bmap::read(&req.bmap)?;
    let layout = read_layout(&req.json)?;
    let mut target =
        File::open(&req.target).with_context(|| format!("opening {}", req.target.display()))?;
    let format = if req.target.is_file() {
        super::compression::sniff(&req.target)?
    } else {
        None
    };
    // Decompressed once: the ranges are checked as they pass, and the
    // image's ends are kept for sfdisk to read the partition table from.
    let streamed =
        match format {
            Some(format) => {
                let file = target
                    .try_clone()
                    .with_context(|| format!("opening {}", req.target.display()))?;
                let mut reader = super::compression::decoder(format, file)?;
                Some(check_stream(&mut reader, &bmap).with_context(|| {
                    format!("decompressing {} ({format})", req.target.display())
                })?)
            }
            None => None,
        };
    // Block devices report length 0 in metadata; seeking to the end works for both.
    let len = match &streamed {
        Some(s) => s.len,
        None => target
            .seek(SeekFrom::End(0))
            .with_context(|| format!("finding the size of {}", req.target.display()))?,
    };

    let size_check = format!("size of {} ({len} bytes)", req.target.display());
    out.push(size_finding(&size_check, len, bmap.image_size, layout.size));

    // The image itself (a file beside SHA256SUMS) must be listed; a card
    // or a copy elsewhere is checked through the listed bmap instead.
    let name = file_name(&req.target);
    let beside_sums = req
        .target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        == req.sums_dir.as_path();
    if beside_sums && req.target.is_file() {
        let check = format!(
            "{name} against {}",
            req.sums_dir.join(super::checksums::SHA256SUMS).display()
        );
        out.push(match listed(sums.as_ref(), &req.target) {
            Err(problem) => Finding::bad(check, problem),
            Ok(expected) => {
                let actual = crate::util::digest::sha256_file(&req.target)?;
                if actual.eq_ignore_ascii_case(&expected) {
                    Finding::ok(check)
                } else {
                    Finding::bad(check, format!("sha256 {actual}, SHA256SUMS has {expected}"))
                }
            }
        });
    }

    // A compressed image's table is read from its ends, put back at their
    // offsets in a sparse scratch file of the image's size.
    let scratch = match &streamed {
        Some(s) => Some(s.ends_file()?),
        None => None,
    };
    match &streamed {
        Some(s) => out.push(s.finding.clone()),
        None => out.extend(check_ranges(&target, len, &bmap)?),
    }
    if len >= layout.size.min(1 << 20) {
        let table_source = scratch
            .as_ref()
            .map(|t| t.path())
            .unwrap_or(req.target.as_path());
        let table = Command::new("sfdisk")
            .arg("-J")
            .arg(table_source)
            .output_checked();
        let check = format!("partition table against {}", req.json.display());
        out.push(match table {
            Ok(json) => match compare_table(&layout, &json) {
                Ok(diffs) if diffs.is_empty() => Finding::ok(check),
                Ok(diffs) => Finding::bad(check, diffs.join("; ")),
                Err(e) => Finding::bad(check, format!("{e:#}")),
            },
            Err(e) => Finding::bad(check, format!("no readable partition table: {e:#}")),
        });
    }
    Ok(out)
}

/// The SHA256SUMS entry of `file`; a file SHA256SUMS does not list (or a
/// directory without one) was not published by habuild, or its entry was
/// lost, so nothing vouches for it.
fn listed(sums: Option<&Sums>, file: &Path) -> Result<String, String> {
    let Some(s) = sums else {
        return Err("there is no SHA256SUMS beside it: nothing vouches for this file".into());
    };
    s.entry(&file_name(file))
        .map(str::to_string)
        .ok_or_else(|| format!("no entry for {} in {}", file_name(file), s.path.display()))
}

/// A publish of this node that was interrupted after its commit point
/// (`pipeline::output`): its files are neither all old nor all new.
fn interrupted_publish(req: &VerifyRequest) -> Option<Finding> {
    let node = req.json.file_stem()?.to_str()?;
    let journal = super::publishing_dir(&req.sums_dir, node);
    journal.exists().then(|| {
        Finding::bad(
            format!("publish of {node}"),
            format!(
                "it was interrupted ({} is there); run `habuild image` again to complete it",
                journal.display()
            ),
        )
    })
}

/// A target shorter than the image cannot hold it (truncated or too small).
pub fn size_finding(check: &str, len: u64, bmap_size: u64, json_size: u64) -> Finding {
    if bmap_size != json_size {
        return Finding::bad(check, format!("the bmap says the image is {bmap_size} bytes, the node report {json_size}: they are not from one build"));
    }
    if len < bmap_size {
        return Finding::bad(
            check,
            format!("shorter than the image's {bmap_size} bytes: truncated, or not the whole card"),
        );
    }
    Finding::ok(check)
}

/// What one pass over a decompressed image found.
struct Streamed {
    len: u64,
    finding: Finding,
    /// The image's first and last MiB (partition tables live there).
    head: Vec<u8>,
    tail: Vec<u8>,
}

const ENDS: usize = 1 << 20;

impl Streamed {
    /// A sparse file of the image's size holding only its ends.
    fn ends_file(&self) -> Result<tempfile::NamedTempFile> {
        let t = tempfile::NamedTempFile::new().context("creating a scratch file for sfdisk")?;
        let f = t.as_file();
        f.set_len(self.len)
            .with_context(|| format!("sizing {}", t.path().display()))?;
        f.write_all_at(&self.head, 0)
            .and_then(|_| f.write_all_at(&self.tail, self.len - self.tail.len() as u64))
            .with_context(|| format!("writing {}", t.path().display()))?;
        Ok(t)
    }
}

/// Every mapped range's sha256, over an image read once from start to end
/// (a decompressing reader); each differing range is named.
fn check_stream(image: &mut dyn std::io::Read, bmap: &Bmap) -> Result<Streamed> {
    let mut bad = Vec::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut head = Vec::with_capacity(ENDS);
    let mut tail: std::collections::VecDeque<u8> = std::collections::VecDeque::new();
    let mut pos = 0u64;
    let mut ranges = bmap.ranges.iter().peekable();
    let mut hasher: Option<Sha256> = None;
    loop {
        let n = image.read(&mut buf).context("reading")?;
        if n == 0 {
            break;
        }
        let chunk = &buf[..n];
        if head.len() < ENDS {
            let take = (ENDS - head.len()).min(n);
            head.extend_from_slice(&chunk[..take]);
        }
        tail.extend(chunk[n.saturating_sub(ENDS)..].iter());
        if tail.len() > ENDS {
            tail.drain(..tail.len() - ENDS);
        }
        // Feed each range the part of this chunk it covers.
        let end = pos + n as u64;
        while let Some(r) = ranges.peek() {
            let span = bmap.byte_range(r);
            if span.start >= end {
                break;
            }
            let from = span.start.max(pos);
            let to = span.end.min(end);
            if from < to {
                hasher
                    .get_or_insert_with(Sha256::new)
                    .update(&chunk[(from - pos) as usize..(to - pos) as usize]);
            }
            if span.end > end {
                break;
            }
            let actual = hex::encode(hasher.take().unwrap_or_default().finalize());
            if actual != r.sha256 {
                bad.push(format!(
                    "{}: sha256 {actual}, the bmap has {}",
                    bmap.describe(r),
                    r.sha256
                ));
            }
            ranges.next();
        }
        pos = end;
    }
    for r in ranges {
        bad.push(format!("{}: past the end of the image", bmap.describe(r)));
    }
    let check = format!("{} mapped ranges of the bmap", bmap.ranges.len());
    Ok(Streamed {
        len: pos,
        finding: if bad.is_empty() {
            Finding::ok(check)
        } else {
            Finding::bad(check, format!("{} differ: {}", bad.len(), bad.join("; ")))
        },
        head,
        tail: tail.into(),
    })
}

/// Every mapped range's sha256; each differing range is named.
fn check_ranges(target: &File, len: u64, bmap: &Bmap) -> Result<Vec<Finding>> {
    let mut bad = Vec::new();
    let mut buf = vec![0u8; 4 << 20];
    for r in &bmap.ranges {
        let span = bmap.byte_range(r);
        if span.end > len {
            bad.push(format!("{}: past the end of the target", bmap.describe(r)));
            continue;
        }
        let mut h = Sha256::new();
        let mut pos = span.start;
        while pos < span.end {
            let n = (span.end - pos).min(buf.len() as u64) as usize;
            target
                .read_exact_at(&mut buf[..n], pos)
                .with_context(|| format!("reading {n} bytes at offset {pos}"))?;
            h.update(&buf[..n]);
            pos += n as u64;
        }
        let actual = hex::encode(h.finalize());
        if actual != r.sha256 {
            bad.push(format!(
                "{}: sha256 {actual}, the bmap has {}",
                bmap.describe(r),
                r.sha256
            ));
        }
    }
    let check = format!("{} mapped ranges of the bmap", bmap.ranges.len());
    Ok(vec![if bad.is_empty() {
        Finding::ok(check)
    } else {
        Finding::bad(check, format!("{} differ: {}", bad.len(), bad.join("; ")))
    }])
}

/// Differences between `sfdisk -J` output and the recorded layout.
pub fn compare_table(expected: &ImageLayout, sfdisk_json: &str) -> Result<Vec<String>> {
    let v: serde_json::Value = serde_json::from_str(sfdisk_json).context("parsing sfdisk -J")?;
    let t = &v["partitiontable"];
    let mut diffs = Vec::new();
    let label = t["label"].as_str().unwrap_or_default();
    let want_label = if expected.table == "mbr" {
        "dos"
    } else {
        expected.table.as_str()
    };
    if label != want_label {
        diffs.push(format!("table is {label:?}, expected {want_label:?}"));
    }
    let id = t["id"].as_str().unwrap_or_default();
    if !expected.disk_id.is_empty() && !id.eq_ignore_ascii_case(&expected.disk_id) {
        diffs.push(format!("disk id {id}, expected {}", expected.disk_id));
    }
    let sector = t["sectorsize"].as_u64().unwrap_or(512);
    let found = t["partitions"].as_array().cloned().unwrap_or_default();
    if found.len() != expected.partitions.len() {
        diffs.push(format!(
            "{} partitions, expected {}",
            found.len(),
            expected.partitions.len()
        ));
    }
    for (i, (p, f)) in expected.partitions.iter().zip(&found).enumerate() {
        let start = f["start"].as_u64().unwrap_or_default() * sector;
        let size = f["size"].as_u64().unwrap_or_default() * sector;
        if (start, size) != (p.start, p.size) {
            diffs.push(format!(
                "partition {} `{}` at {start} ({size} bytes), expected at {} ({} bytes)",
                i + 1,
                p.label,
                p.start,
                p.size
            ));
        }
        // GPT partitions carry their GUID; MBR ones derive it from the disk id.
        if let Some(uuid) = f["uuid"].as_str() {
            if !p.part_uuid.is_empty() && !uuid.eq_ignore_ascii_case(&p.part_uuid) {
                diffs.push(format!(
                    "partition {} `{}` has PARTUUID {uuid}, expected {}",
                    i + 1,
                    p.label,
                    p.part_uuid
                ));
            }
        }
    }
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::report::PartitionSpan;

    fn layout() -> ImageLayout {
        ImageLayout {
            size: 10 << 20,
            table: "gpt".into(),
            disk_id: "98ed6762-66dd-5329-aef0-2ea10f4fe1bb".into(),
            partitions: vec![PartitionSpan {
                label: "ESP".into(),
                role: "esp".into(),
                start: 1 << 20,
                size: 4 << 20,
                part_uuid: "223961bc-5515-5a79-bbdf-9db8a93ac111".into(),
            }],
        }
    }

    const SFDISK: &str = r#"{"partitiontable":{"label":"gpt","id":"98ED6762-66DD-5329-AEF0-2EA10F4FE1BB",
        "sectorsize":512,"partitions":[{"start":2048,"size":8192,
        "uuid":"223961BC-5515-5A79-BBDF-9DB8A93AC111","name":"ESP"}]}}"#;

    #[test]
    fn matching_table_has_no_differences() {
        assert_eq!(
            compare_table(&layout(), SFDISK).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn moved_partition_and_other_ids_are_named() {
        let moved = SFDISK
            .replace("\"start\":2048", "\"start\":4096")
            .replace("98ED", "00ED");
        let d = compare_table(&layout(), &moved).unwrap();
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("disk id 00ED"), "{d:?}");
        assert!(d[1].contains("partition 1 `ESP` at 2097152"), "{d:?}");
        let mbr = r#"{"partitiontable":{"label":"dos","id":"0x1","partitions":[]}}"#;
        let d = compare_table(&layout(), mbr).unwrap();
        assert!(d[0].contains("\"dos\", expected \"gpt\""), "{d:?}");
    }

    #[test]
    fn short_target_is_truncated() {
        assert!(size_finding("s", 100, 100, 100).problem.is_none());
        assert!(
            size_finding("s", 200, 100, 100).problem.is_none(),
            "a card is larger"
        );
        let p = size_finding("s", 99, 100, 100).problem.unwrap();
        assert!(p.contains("truncated"), "{p}");
        assert!(size_finding("s", 100, 100, 101).problem.is_some());
    }

    #[test]
    fn a_file_without_an_entry_is_not_vouched_for() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path();
        assert!(listed(None, &dir.join("n.img.bmap"))
            .unwrap_err()
            .contains("no SHA256SUMS"));
        std::fs::write(dir.join("SHA256SUMS"), "aa  n.img\n").unwrap();
        let sums = Sums::load(dir).unwrap();
        assert_eq!(listed(sums.as_ref(), &dir.join("n.img")), Ok("aa".into()));
        let e = listed(sums.as_ref(), &dir.join("n.img.bmap")).unwrap_err();
        assert!(e.contains("no entry for n.img.bmap"), "{e}");

        let req = request_for_image(&dir.join("n.img"), None);
        assert!(interrupted_publish(&req).is_none());
        std::fs::create_dir(super::super::publishing_dir(dir, "n")).unwrap();
        let f = interrupted_publish(&req).unwrap();
        assert!(f.problem.unwrap().contains("interrupted"));
    }

    #[test]
    fn a_stream_checks_every_range_and_names_the_bad_one() {
        let data: Vec<u8> = (0..(3u64 << 20)).map(|i| (i % 241) as u8).collect();
        let sha = |r: std::ops::Range<usize>| hex::encode(Sha256::digest(&data[r]));
        let range = |blocks: std::ops::Range<u64>, sha256| super::super::bmap::MappedRange {
            blocks,
            sha256,
        };
        let mut bmap = Bmap {
            image_size: data.len() as u64,
            block_size: 4096,
            blocks_count: 768,
            mapped_blocks: 0,
            // One range crosses the 4 MiB read size's boundaries within it.
            ranges: vec![
                range(0..2, sha(0..8192)),
                range(100..700, sha(100 * 4096..700 * 4096)),
            ],
        };
        // A reader that hands out odd-sized pieces.
        struct Dribble<'a>(&'a [u8]);
        impl std::io::Read for Dribble<'_> {
            fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(b.len()).min(777_777);
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let s = check_stream(&mut Dribble(&data), &bmap).unwrap();
        assert_eq!(s.len, data.len() as u64);
        assert_eq!(s.finding.problem, None);
        assert!(s.head[..] == data[..ENDS] && s.tail[..] == data[data.len() - ENDS..]);
        bmap.ranges[1].sha256 = "00".into();
        bmap.ranges.push(range(900..901, String::new()));
        let p = check_stream(&mut Dribble(&data), &bmap)
            .unwrap()
            .finding
            .problem
            .unwrap();
        assert!(p.starts_with("2 differ"), "{p}");
        assert!(
            p.contains("blocks 100-699") && p.contains("past the end"),
            "{p}"
        );
    }

    #[test]
    fn defaults_sit_beside_the_image() {
        let r = request_for_image(Path::new("out/c/n.img.xz"), None);
        assert_eq!(r.bmap, Path::new("out/c/n.img.bmap"));
        assert_eq!(r.json, Path::new("out/c/n.json"));
        let r = request_for_image(Path::new("out/c/n.img"), None);
        assert_eq!(r.bmap, Path::new("out/c/n.img.bmap"));
        assert_eq!(r.json, Path::new("out/c/n.json"));
        assert_eq!(r.sums_dir, Path::new("out/c"));
        let r = request_for_image(Path::new("/dev/sdx"), Some(Path::new("out/c/n.img")));
        assert_eq!(
            (r.target.as_path(), r.bmap.as_path()),
            (Path::new("/dev/sdx"), Path::new("out/c/n.img.bmap"))
        );
    }
}

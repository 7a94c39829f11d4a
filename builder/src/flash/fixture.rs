//! A small flash in progress for unit tests: an image, its bmap, the held
//! back first MiB, and a target holding the image's body.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::direct::{AlignedBuf, Target};
use super::stream::{Head, HEAD};
use crate::artifact::bmap::{Bmap, MappedRange};

/// The bmap's block size.
pub const B: u64 = 4096;

pub struct Case {
    _dir: tempfile::TempDir,
    pub image: PathBuf,
    pub path: PathBuf,
    pub target: Target,
    /// A second, plain handle on the target, to damage single bytes.
    pub plain: std::fs::File,
    pub bmap: Bmap,
    pub head: Head,
}

/// A 3 MiB image, some ranges in the first MiB, and a target holding the
/// image's body (its first MiB not written yet: zeros), opened as a file
/// is, or with `O_DIRECT` as a device is (where the filesystem takes it).
pub fn case(direct: bool) -> Case {
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..768 * B).map(|i| (i % 199) as u8).collect();
    let image = dir.path().join("img");
    std::fs::write(&image, &data).unwrap();
    let blocks = [0..1, 2..5, 300..301, 400..420, 500..700];
    let bmap = Bmap {
        image_size: data.len() as u64,
        block_size: B,
        blocks_count: 768,
        mapped_blocks: 225,
        ranges: blocks
            .iter()
            .map(|b| MappedRange {
                blocks: b.clone(),
                sha256: hex::encode(Sha256::digest(
                    &data[(b.start * B) as usize..(b.end * B) as usize],
                )),
            })
            .collect(),
    };
    let mut head = Head {
        buf: AlignedBuf::new(HEAD as usize),
        pieces: vec![0..B, 2 * B..5 * B],
    };
    for p in &head.pieces {
        let r = p.start as usize..p.end as usize;
        head.buf[r.clone()].copy_from_slice(&data[r]);
    }
    let mut body = data.clone();
    body[..HEAD as usize].fill(0);
    let path = dir.path().join("target");
    std::fs::write(&path, &body).unwrap();
    let target = Target::open_with(&path, false, direct).unwrap();
    let plain = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    Case {
        _dir: dir,
        image,
        path,
        target,
        plain,
        bmap,
        head,
    }
}

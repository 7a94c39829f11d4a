//! The output directory's SHA256SUMS (read by `artifact::checksums`), as
//! far as flashing needs it: which entry covers the image, and checking
//! the (small) bmap up front, where a mismatch is a refusal.

use std::path::Path;

use anyhow::Result;

use super::refusal::Refusal;
use super::source::Hash;
use crate::artifact::checksums::{file_name, Sums};

/// Hashes `file` (small: the bmap) and checks it against its entry now.
pub fn check_file(sums: &Sums, file: &Path) -> Result<()> {
    sums.check_file(file).map_err(|err| {
        match err.downcast::<crate::artifact::checksums::SumsMismatch>() {
            Ok(m) => Refusal::from(m).into(),
            Err(err) => err,
        }
    })
}

/// The image entry that `flash` hashes the whole image for, if any.
///
/// Only when asked (`check_image_hash`), or when SHA256SUMS does not
/// list the bmap. When it does, the bmap is checked against it before
/// anything is written, and every mapped range is checked against the
/// bmap's SHA-256 as it streams to the target, so every byte written is
/// already tied to SHA256SUMS; unmapped ranges are not written at all.
/// The whole-image hash would add only the image's unmapped bytes,
/// which do not reach the card, for about a second per GiB of CPU.
/// Without the bmap's entry, only the bmap's own checksum vouches for
/// it, which catches damage but not a bmap and image swapped together.
pub fn image_check(sums: &Sums, image: &Path, bmap: &Path, asked: bool) -> Option<(String, Hash)> {
    let bmap_listed = sums.entry(&file_name(bmap)).is_some();
    if asked || !bmap_listed {
        image_entry(sums, image)
    } else {
        None
    }
}

/// Which entry covers the image and so which bytes to hash: the file as
/// stored when listed under its own name, the decompressed stream when
/// only the `.img` it came from is listed.
pub fn image_entry(sums: &Sums, image: &Path) -> Option<(String, Hash)> {
    let name = file_name(image);
    if sums.entry(&name).is_some() {
        return Some((name, Hash::Stored));
    }
    let plain = [".zst", ".xz", ".gz"]
        .iter()
        .find_map(|s| name.strip_suffix(s))?;
    sums.entry(plain)
        .map(|_| (plain.to_string(), Hash::Decompressed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(text: &str) -> Sums {
        Sums::parse("out/SHA256SUMS".into(), text)
    }

    #[test]
    fn picks_the_entry_and_what_to_hash() {
        let s = sums("aa  n.img\nbb  n.img.bmap\n");
        assert_eq!(
            image_entry(&s, Path::new("o/n.img")),
            Some(("n.img".into(), Hash::Stored))
        );
        assert_eq!(
            image_entry(&s, Path::new("o/n.img.zst")),
            Some(("n.img".into(), Hash::Decompressed))
        );
        let s = sums("cc  n.img.zst\n");
        assert_eq!(
            image_entry(&s, Path::new("n.img.zst")),
            Some(("n.img.zst".into(), Hash::Stored))
        );
        assert_eq!(image_entry(&s, Path::new("other.img")), None);
    }

    #[test]
    fn whole_image_hash_only_when_asked_or_the_bmap_is_unlisted() {
        let (img, bmap) = (Path::new("o/n.img"), Path::new("o/n.img.bmap"));
        let both = sums("aa  n.img\nbb  n.img.bmap\n");
        assert_eq!(image_check(&both, img, bmap, false), None);
        assert_eq!(
            image_check(&both, img, bmap, true),
            Some(("n.img".into(), Hash::Stored))
        );
        let image_only = sums("aa  n.img\n");
        assert_eq!(
            image_check(&image_only, img, bmap, false),
            Some(("n.img".into(), Hash::Stored))
        );
        let bmap_only = sums("bb  n.img.bmap\n");
        assert_eq!(image_check(&bmap_only, img, bmap, true), None);
    }
}

//! The output directory's SHA256SUMS, as far as flashing needs it: which
//! entry covers the image, and checking the (small) bmap up front.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::refusal::Refusal;
use super::source::Hash;
use crate::artifact::checksums::{sha256_file, SHA256SUMS};
use crate::pipeline::output::parse_sums;

pub struct Sums {
    pub path: PathBuf,
    entries: BTreeMap<String, String>,
}

impl Sums {
    /// `dir/SHA256SUMS`, or None when there is none (a copied image).
    pub fn load(dir: &Path) -> Result<Option<Sums>> {
        let path = dir.join(SHA256SUMS);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(Sums {
                entries: parse_sums(&text),
                path,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn entry(&self, name: &str) -> Option<&str> {
        self.entries.get(name).map(String::as_str)
    }

    /// Compares `actual` with the entry for `name` (no entry: nothing to check).
    pub fn check(&self, name: &str, actual: &str) -> Result<(), Refusal> {
        match self.entry(name) {
            Some(expected) if !expected.eq_ignore_ascii_case(actual) => {
                Err(Refusal::SumsMismatch {
                    file: name.to_string(),
                    sums: self.path.display().to_string(),
                    expected: expected.to_string(),
                    actual: actual.to_string(),
                })
            }
            _ => Ok(()),
        }
    }

    /// Hashes `file` (small: the bmap) and checks it now.
    pub fn check_file(&self, file: &Path) -> Result<()> {
        let name = file_name(file);
        if self.entry(&name).is_some() {
            let actual = sha256_file(file)?;
            self.check(&name, &actual)?;
        }
        Ok(())
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
    pub fn image_check(&self, image: &Path, bmap: &Path, asked: bool) -> Option<(String, Hash)> {
        let bmap_listed = self.entry(&file_name(bmap)).is_some();
        if asked || !bmap_listed {
            self.image_entry(image)
        } else {
            None
        }
    }

    /// Which entry covers the image and so which bytes to hash: the file as
    /// stored when listed under its own name, the decompressed stream when
    /// only the `.img` it came from is listed.
    pub fn image_entry(&self, image: &Path) -> Option<(String, Hash)> {
        let name = file_name(image);
        if self.entry(&name).is_some() {
            return Some((name, Hash::Stored));
        }
        let plain = name.strip_suffix(".zst")?;
        self.entry(plain)
            .map(|_| (plain.to_string(), Hash::Decompressed))
    }
}

pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sums(text: &str) -> Sums {
        Sums {
            path: PathBuf::from("out/SHA256SUMS"),
            entries: parse_sums(text),
        }
    }

    #[test]
    fn picks_the_entry_and_what_to_hash() {
        let s = sums("aa  n.img\nbb  n.img.bmap\n");
        assert_eq!(
            s.image_entry(Path::new("o/n.img")),
            Some(("n.img".into(), Hash::Stored))
        );
        assert_eq!(
            s.image_entry(Path::new("o/n.img.zst")),
            Some(("n.img".into(), Hash::Decompressed))
        );
        let s = sums("cc  n.img.zst\n");
        assert_eq!(
            s.image_entry(Path::new("n.img.zst")),
            Some(("n.img.zst".into(), Hash::Stored))
        );
        assert_eq!(s.image_entry(Path::new("other.img")), None);
    }

    #[test]
    fn whole_image_hash_only_when_asked_or_the_bmap_is_unlisted() {
        let (img, bmap) = (Path::new("o/n.img"), Path::new("o/n.img.bmap"));
        let both = sums("aa  n.img\nbb  n.img.bmap\n");
        assert_eq!(both.image_check(img, bmap, false), None);
        assert_eq!(
            both.image_check(img, bmap, true),
            Some(("n.img".into(), Hash::Stored))
        );
        let image_only = sums("aa  n.img\n");
        assert_eq!(
            image_only.image_check(img, bmap, false),
            Some(("n.img".into(), Hash::Stored))
        );
        let bmap_only = sums("bb  n.img.bmap\n");
        assert_eq!(bmap_only.image_check(img, bmap, true), None);
    }

    #[test]
    fn mismatch_is_a_refusal_naming_both_sums() {
        let s = sums("aa  n.img\n");
        assert_eq!(s.check("n.img", "AA"), Ok(()));
        assert_eq!(s.check("unlisted", "zz"), Ok(()));
        let err = s.check("n.img", "ab").unwrap_err();
        assert!(matches!(err, Refusal::SumsMismatch { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("expected sha256 aa, got ab") && msg.contains("out/SHA256SUMS"),
            "{msg}"
        );
    }
}

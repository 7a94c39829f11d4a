//! Compressed images: `habuild image --compress` writes `.img.zst` or
//! `.img.xz`; `flash` and `verify` read `.img.zst`, `.img.xz` and
//! `.img.gz` as streams. The format is told by the file's magic bytes,
//! never its name; the name only decides where the bmap is looked for.
//!
//! Compression is deterministic (same image, same bytes): zstd and xz run
//! single-threaded at a fixed level with no time or name in their headers.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A compressed image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Zstd,
    Xz,
    Gzip,
}

impl Format {
    /// The file name suffix, without the dot.
    pub fn suffix(self) -> &'static str {
        match self {
            Format::Zstd => "zst",
            Format::Xz => "xz",
            Format::Gzip => "gz",
        }
    }

    /// `--compress` values (gzip is read, never written: it is slower than
    /// zstd and larger than xz).
    pub fn parse_written(s: &str) -> Result<Format, String> {
        match s {
            "zst" | "zstd" => Ok(Format::Zstd),
            "xz" => Ok(Format::Xz),
            _ => Err(format!("{s:?}: expected zst or xz")),
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.suffix())
    }
}

const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// Bytes [`sniff`] reads.
pub const MAGIC_LEN: usize = 6;

/// The format whose magic `head` starts with; None for anything else
/// (a raw image starts with its boot sector).
pub fn detect(head: &[u8]) -> Option<Format> {
    [
        (ZSTD_MAGIC, Format::Zstd),
        (XZ_MAGIC, Format::Xz),
        (GZIP_MAGIC, Format::Gzip),
    ]
    .into_iter()
    .find(|(magic, _)| head.starts_with(magic))
    .map(|(_, f)| f)
}

/// The compression of the file at `path`, from its first bytes.
pub fn sniff(path: &Path) -> Result<Option<Format>> {
    let mut f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = [0u8; MAGIC_LEN];
    let mut n = 0;
    while n < head.len() {
        let got = f
            .read(&mut head[n..])
            .with_context(|| format!("reading the first bytes of {}", path.display()))?;
        if got == 0 {
            break;
        }
        n += got;
    }
    Ok(detect(&head[..n]))
}

/// A decompressing reader over `inner`. Multi-frame zstd, multi-stream xz
/// and multi-member gzip are read whole, as their command-line tools do.
pub fn decoder<R: Read + Send + 'static>(format: Format, inner: R) -> Result<Box<dyn Read + Send>> {
    let buffered = BufReader::with_capacity(1 << 20, inner);
    Ok(match format {
        Format::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buffered)
                .context("starting a zstd decoder")?,
        ),
        Format::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(buffered)),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
    })
}

/// zstd level 9: most of what zstd's slowest levels save (their speed
/// falls tenfold past ~12) at a speed that keeps a build's compression
/// step in seconds; single-threaded, so the output depends only on the
/// input and the library's version.
pub const ZSTD_LEVEL: i32 = 9;
/// xz preset 6 is xz's own default; single-threaded (deterministic).
pub const XZ_PRESET: u32 = 6;

/// `<image>.<suffix>`, e.g. `master-arm-1.img.zst`.
pub fn compressed_name(image_name: &str, format: Format) -> String {
    format!("{image_name}.{}", format.suffix())
}

/// Compresses `src` into `dst` (created with `mode`), deterministically;
/// returns `dst`'s size.
pub fn compress_file(src: &Path, dst: &Path, format: Format, mode: u32) -> Result<u64> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut input = BufReader::with_capacity(
        1 << 20,
        File::open(src).with_context(|| format!("opening {} to compress it", src.display()))?,
    );
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(dst)
        .with_context(|| format!("creating {}", dst.display()))?;
    let out = BufWriter::with_capacity(1 << 20, out);
    let what = || format!("compressing {} into {}", src.display(), dst.display());
    let file = match format {
        Format::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).with_context(what)?;
            // The size in the frame header lets readers size buffers; the
            // checksum lets `zstd -t` and every reader catch damage.
            let len = std::fs::metadata(src).with_context(what)?.len();
            enc.set_pledged_src_size(Some(len)).with_context(what)?;
            enc.include_checksum(true).with_context(what)?;
            std::io::copy(&mut input, &mut enc).with_context(what)?;
            enc.finish().with_context(what)?
        }
        Format::Xz => {
            let mut enc = liblzma::write::XzEncoder::new(out, XZ_PRESET);
            std::io::copy(&mut input, &mut enc).with_context(what)?;
            enc.finish().with_context(what)?
        }
        Format::Gzip => anyhow::bail!("habuild does not write gzip images (use zst or xz)"),
    };
    let file = file
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(what)?;
    file.sync_all()
        .with_context(|| format!("flushing {}", dst.display()))?;
    Ok(file
        .metadata()
        .with_context(|| format!("reading the size of {}", dst.display()))?
        .len())
}

/// The name an image has without its compression suffix
/// (`x.img.zst` → `x.img`); other names stay as they are.
pub fn strip_suffix(path: &Path) -> PathBuf {
    let s = path.as_os_str().to_string_lossy();
    for suffix in [".zst", ".xz", ".gz"] {
        if let Some(stem) = s.strip_suffix(suffix) {
            return PathBuf::from(stem);
        }
    }
    path.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn sample() -> Vec<u8> {
        (0..2_000_000u32).map(|i| ((i / 7) % 251) as u8).collect()
    }

    #[test]
    fn magic_bytes_decide_not_names() {
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]), Some(Format::Zstd));
        assert_eq!(detect(b"\xfd7zXZ\x00"), Some(Format::Xz));
        assert_eq!(detect(&[0x1f, 0x8b, 8, 0]), Some(Format::Gzip));
        assert_eq!(detect(b"\xfd7zXZ"), None, "a truncated magic is not xz");
        assert_eq!(detect(&[0u8; 6]), None, "an MBR starts with code or zeros");
        assert_eq!(detect(&[]), None);
    }

    #[test]
    fn every_format_round_trips_and_is_sniffed() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("x.img");
        let data = sample();
        std::fs::write(&raw, &data).unwrap();
        for format in [Format::Zstd, Format::Xz] {
            // A misleading name: the magic decides.
            let out = dir.path().join(format!("x-{format}.img.gz"));
            compress_file(&raw, &out, format, 0o600).unwrap();
            assert_eq!(sniff(&out).unwrap(), Some(format));
            let mut back = Vec::new();
            decoder(format, File::open(&out).unwrap())
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert!(back == data, "{format} round trip");
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&out).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let gz = dir.path().join("x.img.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&data).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(sniff(&gz).unwrap(), Some(Format::Gzip));
        let mut back = Vec::new();
        decoder(Format::Gzip, File::open(&gz).unwrap())
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert!(back == data);
        assert_eq!(sniff(&raw).unwrap(), None);
        assert!(compress_file(&raw, &dir.path().join("y.gz"), Format::Gzip, 0o644).is_err());
    }

    #[test]
    fn compression_is_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("x.img");
        std::fs::write(&raw, sample()).unwrap();
        for format in [Format::Zstd, Format::Xz] {
            let a = dir.path().join(format!("a.{format}"));
            let b = dir.path().join(format!("b.{format}"));
            compress_file(&raw, &a, format, 0o644).unwrap();
            compress_file(&raw, &b, format, 0o644).unwrap();
            assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
        }
    }

    #[test]
    fn suffixes() {
        assert_eq!(strip_suffix(Path::new("o/x.img.xz")), Path::new("o/x.img"));
        assert_eq!(strip_suffix(Path::new("x.img.gz")), Path::new("x.img"));
        assert_eq!(strip_suffix(Path::new("x.img")), Path::new("x.img"));
        assert_eq!(compressed_name("n.img", Format::Xz), "n.img.xz");
        assert_eq!(Format::parse_written("zstd"), Ok(Format::Zstd));
        assert!(Format::parse_written("gz").is_err());
    }
}

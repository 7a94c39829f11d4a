//! The image as a forward-only stream: a raw `.img` read at offsets, or a
//! compressed image (`.img.zst`, `.img.xz`, `.img.gz`) decompressed on the
//! fly (never unpacked to a temporary file). Compressed input is
//! recognised by its magic bytes, not its name (`artifact::compression`).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};

use crate::artifact::compression::{self, Format};

/// Which bytes to hash for the image's SHA256SUMS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    None,
    /// The file as stored (for a compressed image listed under its own name).
    Stored,
    /// The image after decompression (a compressed image whose sums list
    /// the `.img`).
    Decompressed,
}

pub struct ImageSource {
    path: PathBuf,
    kind: Kind,
    pos: u64,
    decompressed_hash: Option<Sha256>,
}

enum Kind {
    Raw(File),
    Compressed {
        format: Format,
        decoder: Box<dyn Read + Send>,
        /// The compressed file's rest is read through this (same file
        /// offset as the decoder's) once the image has ended.
        rest: File,
        stored_hash: Arc<Mutex<Option<Sha256>>>,
    },
}

/// Hashes every byte read through it.
struct Hashing<R> {
    inner: R,
    hasher: Arc<Mutex<Option<Sha256>>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.lock().expect("hash lock").as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The image's compression, from its magic bytes (None: a raw image).
pub fn compression(path: &Path) -> Result<Option<Format>> {
    compression::sniff(path)
}

impl ImageSource {
    /// Opens `path`. For a raw image, `Hash::Stored` is the caller's to do
    /// (in parallel, see `writer`), because the stream skips the holes.
    pub fn open(path: &Path, hash: Hash) -> Result<ImageSource> {
        let file =
            File::open(path).with_context(|| format!("opening the image {}", path.display()))?;
        let kind = match compression(path)? {
            Some(format) => {
                let stored_hash = Arc::new(Mutex::new((hash == Hash::Stored).then(Sha256::new)));
                let rest = file
                    .try_clone()
                    .with_context(|| format!("opening {}", path.display()))?;
                let hashing = Hashing {
                    inner: file,
                    hasher: Arc::clone(&stored_hash),
                };
                let decoder = compression::decoder(format, hashing).with_context(|| {
                    format!("starting to decompress {} ({format})", path.display())
                })?;
                Kind::Compressed {
                    format,
                    decoder,
                    rest,
                    stored_hash,
                }
            }
            None => Kind::Raw(file),
        };
        Ok(ImageSource {
            path: path.to_path_buf(),
            kind,
            pos: 0,
            decompressed_hash: (hash == Hash::Decompressed).then(Sha256::new),
        })
    }

    pub fn is_compressed(&self) -> bool {
        matches!(self.kind, Kind::Compressed { .. })
    }

    /// The raw image's size (None for a compressed one: known only at the end).
    pub fn raw_len(&self) -> Result<Option<u64>> {
        match &self.kind {
            Kind::Raw(f) => Ok(Some(
                f.metadata()
                    .with_context(|| format!("reading the size of {}", self.path.display()))?
                    .len(),
            )),
            Kind::Compressed { .. } => Ok(None),
        }
    }

    /// Moves forward to `offset` (a compressed stream decompresses and drops).
    pub fn skip_to(&mut self, offset: u64) -> Result<()> {
        ensure!(offset >= self.pos, "image source cannot go backwards");
        if let Kind::Compressed { decoder: dec, .. } = &mut self.kind {
            let mut buf = vec![0u8; 1 << 20];
            while self.pos < offset {
                let n = (offset - self.pos).min(buf.len() as u64) as usize;
                read_full(dec, &mut buf[..n], &self.path)?;
                if let Some(h) = &mut self.decompressed_hash {
                    h.update(&buf[..n]);
                }
                self.pos += n as u64;
            }
        }
        self.pos = offset;
        Ok(())
    }

    /// Fills `buf` from the current position.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<()> {
        match &mut self.kind {
            Kind::Raw(f) => f.read_exact_at(buf, self.pos).with_context(|| {
                format!(
                    "reading {} bytes at {} of {}",
                    buf.len(),
                    self.pos,
                    self.path.display()
                )
            })?,
            Kind::Compressed { decoder, .. } => {
                read_full(decoder, buf, &self.path)?;
                if let Some(h) = &mut self.decompressed_hash {
                    h.update(&*buf);
                }
            }
        }
        self.pos += buf.len() as u64;
        Ok(())
    }

    /// Ends a compressed stream at `size`: checks nothing follows, reads the
    /// compressed file to its end, and returns the hash asked for at `open`.
    pub fn finish(mut self, size: u64) -> Result<Option<String>> {
        self.skip_to(size)?;
        let Kind::Compressed {
            format,
            mut decoder,
            rest,
            stored_hash,
        } = self.kind
        else {
            return Ok(None);
        };
        let mut probe = [0u8; 1];
        let extra = decoder
            .read(&mut probe)
            .with_context(|| format!("decompressing {} ({format})", self.path.display()))?;
        ensure!(
            extra == 0,
            "{} decompresses to more than the {size} bytes its block map says",
            self.path.display()
        );
        // Whatever the decoder left unread (it stops at the stream's end)
        // still belongs to the stored file's hash.
        drop(decoder);
        let mut rest = Hashing {
            inner: rest,
            hasher: Arc::clone(&stored_hash),
        };
        std::io::copy(&mut rest, &mut std::io::sink())
            .with_context(|| format!("reading {}", self.path.display()))?;
        let stored = stored_hash
            .lock()
            .expect("hash lock")
            .take()
            .map(|h| hex::encode(h.finalize()));
        let plain = self.decompressed_hash.map(|h| hex::encode(h.finalize()));
        Ok(stored.or(plain))
    }
}

/// SHA-256 of a whole file on a second thread, alongside the write (a raw
/// image's stream skips its holes, but its SHA256SUMS entry covers them).
/// Dropping it without `join` stops the thread at its next read.
pub struct BackgroundHash {
    handle: Option<std::thread::JoinHandle<Result<String>>>,
    cancel: Arc<AtomicBool>,
}

impl BackgroundHash {
    pub fn start(path: &Path) -> BackgroundHash {
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&cancel);
        let path = path.to_path_buf();
        let handle = std::thread::spawn(move || {
            let mut f = File::open(&path)
                .with_context(|| format!("opening {} to hash it", path.display()))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                if flag.load(Ordering::Relaxed) {
                    anyhow::bail!("hashing {} was cancelled", path.display());
                }
                let n = f
                    .read(&mut buf)
                    .with_context(|| format!("reading {} to hash it", path.display()))?;
                if n == 0 {
                    return Ok(hex::encode(hasher.finalize()));
                }
                hasher.update(&buf[..n]);
            }
        });
        BackgroundHash {
            handle: Some(handle),
            cancel,
        }
    }

    pub fn join(mut self) -> Result<String> {
        let handle = self.handle.take().expect("joined once");
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("the image hashing thread panicked"))?
    }
}

impl Drop for BackgroundHash {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

fn read_full(r: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<()> {
    r.read_exact(buf).with_context(|| {
        format!(
            "decompressing {} (it ends early or is damaged)",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_zstd_read_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let raw = dir.path().join("x.img");
        std::fs::write(&raw, &data).unwrap();
        let zst = dir.path().join("x.img.zst");
        std::fs::write(&zst, zstd::encode_all(&data[..], 3).unwrap()).unwrap();
        assert_eq!(compression(&zst).unwrap(), Some(Format::Zstd));
        assert_eq!(compression(&raw).unwrap(), None);
        // Named .img on purpose: the magic decides.
        let xz = dir.path().join("xz.img");
        compression::compress_file(&raw, &xz, Format::Xz, 0o644).unwrap();
        let gz = dir.path().join("x.img.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &data).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();

        for (path, hash) in [
            (&raw, Hash::None),
            (&zst, Hash::Decompressed),
            (&xz, Hash::Decompressed),
            (&gz, Hash::Decompressed),
        ] {
            let mut s = ImageSource::open(path, hash).unwrap();
            s.skip_to(1_000_000).unwrap();
            let mut buf = vec![0; 10];
            s.read(&mut buf).unwrap();
            assert_eq!(buf, data[1_000_000..1_000_010]);
            s.skip_to(2_999_990).unwrap();
            s.read(&mut buf).unwrap();
            assert_eq!(buf, data[2_999_990..]);
            let got = s.finish(data.len() as u64).unwrap();
            if hash == Hash::Decompressed {
                assert_eq!(got, Some(hex::encode(Sha256::digest(&data))));
            }
        }
        for path in [&zst, &xz, &gz] {
            let mut s = ImageSource::open(path, Hash::Stored).unwrap();
            assert!(s.is_compressed());
            s.skip_to(10).unwrap();
            let got = s.finish(data.len() as u64).unwrap();
            let want = hex::encode(Sha256::digest(std::fs::read(path).unwrap()));
            assert_eq!(got, Some(want), "{}", path.display());
        }
    }

    #[test]
    fn size_mismatch_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let zst = dir.path().join("x.img.zst");
        std::fs::write(&zst, zstd::encode_all(&[7u8; 100][..], 3).unwrap()).unwrap();
        assert!(ImageSource::open(&zst, Hash::None)
            .unwrap()
            .finish(99)
            .is_err());
        assert!(ImageSource::open(&zst, Hash::None)
            .unwrap()
            .finish(101)
            .is_err());
        assert!(ImageSource::open(&zst, Hash::None)
            .unwrap()
            .finish(100)
            .is_ok());
    }
}

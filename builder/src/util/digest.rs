//! SHA-256 of files, for everything that records or checks one (artifacts,
//! lock entries, bundles, the files of a boot partition).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

/// Hex SHA-256 of a file, read in 1 MiB chunks (images are gigabytes).
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        File::open(path).with_context(|| format!("opening {} to hash it", path.display()))?;
    sha256_reader(&mut file).with_context(|| format!("reading {} to hash it", path.display()))
}

fn sha256_reader(reader: &mut impl Read) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, "abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Spans several 1 MiB reads.
        std::fs::write(&p, vec![7u8; (3 << 20) + 5]).unwrap();
        let want = hex::encode(Sha256::digest(vec![7u8; (3 << 20) + 5]));
        assert_eq!(sha256_file(&p).unwrap(), want);
    }
}

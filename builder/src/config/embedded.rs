//! The data directories the binary carries (packed by build.rs): boards,
//! distro profiles and the seed manifest, overlays, guest scripts, the
//! bundle's pins. An installed habuild unpacks them once into its cache,
//! under a name made from their digest, and reads them from there as it
//! would read a checkout. Unpacking goes to a temporary directory renamed
//! into place, so a half-unpacked copy never carries the final name.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

const DATA: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/data.tar"));

/// Marks an unpacked copy, so that files users own (secrets, locks) are
/// never put beside its manifest.
const MARKER: &str = ".habuild-embedded-data";

/// Whether `dir` is a copy of the data unpacked from the binary.
pub fn is_unpacked_data(dir: &Path) -> bool {
    dir.join(MARKER).is_file()
}

/// The first 16 hex digits of the data's SHA-256: enough to tell copies apart.
pub fn data_digest() -> String {
    hex::encode(Sha256::digest(DATA))[..16].to_string()
}

/// The unpacked copy under `cache_dir/data/`, unpacked now if missing.
pub fn unpacked(cache_dir: &Path) -> Result<PathBuf> {
    let parent = cache_dir.join("data");
    let dir = parent.join(data_digest());
    if is_unpacked_data(&dir) {
        return Ok(dir);
    }
    std::fs::create_dir_all(&parent)
        .with_context(|| format!("creating {} for habuild's data", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(&parent)
        .with_context(|| format!("making a temporary directory in {}", parent.display()))?;
    tar::Archive::new(DATA)
        .unpack(staging.path())
        .with_context(|| format!("unpacking habuild's data into {}", staging.path().display()))?;
    let marker = staging.path().join(MARKER);
    std::fs::write(&marker, data_digest())
        .with_context(|| format!("writing {}", marker.display()))?;
    match std::fs::rename(staging.path(), &dir) {
        Ok(()) => {
            // Renamed away: nothing left for the guard to remove.
            let _ = staging.keep();
            Ok(dir)
        }
        // Another habuild unpacked the same data first.
        Err(_) if is_unpacked_data(&dir) => Ok(dir),
        Err(e) => Err(e).with_context(|| {
            format!(
                "moving habuild's data from {} to {}",
                staging.path().display(),
                dir.display()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binary_carries_the_data_with_executable_bits() {
        let cache = tempfile::tempdir().unwrap();
        let dir = unpacked(cache.path()).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in [
            "boards/rpi4.toml",
            "manifests/seed.toml",
            "overlays/control-plane/usr/local/lib/habuild/firstboot.sh",
            "bundle/go/kubernetes/go.sum",
        ] {
            assert_eq!(
                std::fs::read(dir.join(file)).unwrap(),
                std::fs::read(repo.join(file)).unwrap(),
                "{file}"
            );
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| std::fs::metadata(dir.join(p)).unwrap().permissions().mode();
        assert_eq!(
            mode("overlays/control-plane/usr/local/lib/habuild/firstboot.sh") & 0o777,
            0o755
        );
        assert_eq!(mode("boards/rpi4.toml") & 0o777, 0o644);
        // systemd's enablement links are links with the checkout's targets.
        let link =
            "overlays/common/etc/systemd/system/multi-user.target.wants/habuild-growroot.service";
        assert_eq!(
            std::fs::read_link(dir.join(link)).unwrap(),
            std::fs::read_link(repo.join(link)).unwrap()
        );
        // A second call finds the copy; nothing half-unpacked is left.
        assert_eq!(unpacked(cache.path()).unwrap(), dir);
        let names: Vec<_> = std::fs::read_dir(cache.path().join("data"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(data_digest())]);
        // It is a project like a checkout, and what belongs beside its
        // manifest goes to the current directory instead.
        crate::config::Project::at(&dir).unwrap();
        assert!(is_unpacked_data(&dir));
        let seed = dir.join("manifests/seed.toml");
        assert_eq!(
            crate::config::beside_manifest(&seed, "seed.secrets.toml"),
            PathBuf::from("seed.secrets.toml")
        );
        let repo_seed = repo.join("manifests/seed.toml");
        assert_eq!(
            crate::config::beside_manifest(&repo_seed, "seed.secrets.toml"),
            repo.join("manifests/seed.secrets.toml")
        );
    }
}

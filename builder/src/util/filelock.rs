//! Exclusive file locks that wait their turn and say so.

use std::fs::File;
use std::path::Path;

use anyhow::{Context, Result};

/// An exclusive flock on `path` (created with its directory), held until
/// the returned file is dropped. When another process holds it, prints
/// "waiting for `waiting_for` to finish" once and waits.
pub fn lock_waiting(path: &Path, waiting_for: &str) -> Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    if f.try_lock().is_err() {
        super::progress::line(format!("  waiting for {waiting_for} to finish"));
        f.lock()
            .with_context(|| format!("locking {}", path.display()))?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_lock_is_exclusive_until_dropped() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("a/b.lock");
        let held = lock_waiting(&path, "test").unwrap();
        let other = File::open(&path).unwrap();
        assert!(other.try_lock().is_err());
        drop(held);
        assert!(other.try_lock().is_ok());
    }
}

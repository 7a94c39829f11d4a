//! Temporary build directories are removed when the build ends, whether it
//! succeeds, fails or is interrupted with Ctrl-C, so nothing half-made is
//! left behind (final names only ever appear through a rename).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

fn registry() -> &'static Mutex<Vec<PathBuf>> {
    static PATHS: OnceLock<Mutex<Vec<PathBuf>>> = OnceLock::new();
    PATHS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Removes `path` when dropped, and on Ctrl-C (see `install_interrupt_handler`).
pub struct RemoveOnExit(PathBuf);

pub fn remove_on_exit(path: &Path) -> RemoveOnExit {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.to_path_buf());
    RemoveOnExit(path.to_path_buf())
}

impl Drop for RemoveOnExit {
    fn drop(&mut self) {
        remove(&self.0);
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| p != &self.0);
    }
}

fn remove(path: &Path) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(e) = result {
        if e.kind() != std::io::ErrorKind::NotFound {
            log::warn!("could not remove {}: {e}", path.display());
        }
    }
}

/// Work that must not be cut off mid-write (flashing a card) registers
/// with `cooperate()`: while it does, the first Ctrl-C only sets a flag
/// that the work polls between writes (`interrupted()`), so it can stop
/// cleanly and say what state it left; a second Ctrl-C exits at once.
static COOPERATING: AtomicUsize = AtomicUsize::new(0);
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// While alive, Ctrl-C sets `interrupted()` instead of exiting.
pub struct Cooperate(());

pub fn cooperate() -> Cooperate {
    COOPERATING.fetch_add(1, Ordering::SeqCst);
    Cooperate(())
}

impl Drop for Cooperate {
    fn drop(&mut self) {
        COOPERATING.fetch_sub(1, Ordering::SeqCst);
    }
}

/// True once Ctrl-C or SIGTERM arrived while someone cooperates.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// On Ctrl-C or SIGTERM: remove every registered temporary path, say so,
/// and exit with status 130 (unless some work cooperates, see above).
pub fn install_interrupt_handler() {
    let result = ctrlc::set_handler(|| {
        if COOPERATING.load(Ordering::SeqCst) > 0 && !INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!(
                "\ninterrupted: stopping after the current write (Ctrl-C again to quit at once)"
            );
            return;
        }
        let paths: Vec<PathBuf> = registry().lock().map(|p| p.clone()).unwrap_or_default();
        for p in &paths {
            remove(p);
        }
        eprintln!(
            "\ninterrupted: removed {} unfinished build director{}; no artifact was published",
            paths.len(),
            if paths.len() == 1 { "y" } else { "ies" }
        );
        std::process::exit(130);
    });
    if let Err(e) = result {
        log::warn!("no Ctrl-C handler: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_removes_directory() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("work");
        std::fs::create_dir_all(d.join("x")).unwrap();
        drop(remove_on_exit(&d));
        assert!(!d.exists());
    }
}

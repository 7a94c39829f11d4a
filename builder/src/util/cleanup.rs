//! Temporary build directories are removed when the build ends, whether it
//! succeeds, fails or is interrupted with Ctrl-C, so nothing half-made is
//! left behind (final names only ever appear through a rename).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// Registered paths, each with whether it belongs to an image build (an
/// unfinished node) or is some other temporary copy.
fn registry() -> &'static Mutex<Vec<(PathBuf, bool)>> {
    static PATHS: OnceLock<Mutex<Vec<(PathBuf, bool)>>> = OnceLock::new();
    PATHS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Removes `path` when dropped, and on Ctrl-C (see `install_interrupt_handler`).
pub struct RemoveOnExit(PathBuf);

/// A build directory of an image build.
pub fn remove_on_exit(path: &Path) -> RemoveOnExit {
    register(path, true)
}

/// A temporary directory of anything else (a test's copies).
pub fn remove_temporary_on_exit(path: &Path) -> RemoveOnExit {
    register(path, false)
}

fn register(path: &Path, build: bool) -> RemoveOnExit {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((path.to_path_buf(), build));
    RemoveOnExit(path.to_path_buf())
}

impl Drop for RemoveOnExit {
    fn drop(&mut self) {
        remove(&self.0);
        registry()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(p, _)| p != &self.0);
    }
}

fn remove(path: &Path) {
    if let Err(e) = try_remove(path) {
        log::warn!("could not remove {}: {e}", path.display());
    }
}

/// Removes `path`; Ok(false) when it was not there.
fn try_remove(path: &Path) -> std::io::Result<bool> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Work that must not be left half done (publishing a node) holds
/// `defer_interrupts()`: Ctrl-C or SIGTERM meanwhile is acted on when the
/// last such guard is dropped.
static DEFERRING: AtomicUsize = AtomicUsize::new(0);
static DEFERRED: AtomicBool = AtomicBool::new(false);

pub struct Deferred(());

pub fn defer_interrupts() -> Deferred {
    DEFERRING.fetch_add(1, Ordering::SeqCst);
    Deferred(())
}

impl Drop for Deferred {
    fn drop(&mut self) {
        if DEFERRING.fetch_sub(1, Ordering::SeqCst) == 1 && DEFERRED.load(Ordering::SeqCst) {
            exit_interrupted();
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

/// On Ctrl-C or SIGTERM: stop the tools habuild runs, remove every
/// registered temporary path, say what was done, and exit with status 130
/// (unless some work cooperates or defers, see above).
pub fn install_interrupt_handler() {
    let result = ctrlc::set_handler(|| {
        if COOPERATING.load(Ordering::SeqCst) > 0 && !INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!(
                "\ninterrupted: stopping after the current write (Ctrl-C again to quit at once)"
            );
            return;
        }
        if DEFERRING.load(Ordering::SeqCst) > 0 && !DEFERRED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted: finishing the publish under way first");
            return;
        }
        exit_interrupted();
    });
    if let Err(e) = result {
        log::warn!("no Ctrl-C handler: {e}");
    }
}

fn exit_interrupted() -> ! {
    // Tools first: a `cp` still writing into a directory defeats its removal.
    let stopped = super::children::stop_all(std::time::Duration::from_secs(5));
    let paths: Vec<(PathBuf, bool)> = registry().lock().map(|p| p.clone()).unwrap_or_default();
    let building = paths.iter().any(|(_, build)| *build);
    let mut removed = 0;
    let mut failed = Vec::new();
    for (p, _) in &paths {
        match try_remove(p) {
            Ok(true) => removed += 1,
            Ok(false) => {}
            Err(e) => failed.push(format!("{}: {e}", p.display())),
        }
    }
    eprintln!(
        "\n{}",
        interrupted_message(stopped, removed, &failed, building)
    );
    std::process::exit(130);
}

/// What the interruption did, as it happened; `building`: an image build
/// (whose unfinished node is not published) was under way.
pub fn interrupted_message(
    stopped: usize,
    removed: usize,
    failed: &[String],
    building: bool,
) -> String {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let mut parts = Vec::new();
    if stopped > 0 {
        parts.push(format!(
            "stopped {}",
            plural(stopped, "running tool", "running tools")
        ));
    }
    let removed = if building {
        plural(
            removed,
            "unfinished build directory",
            "unfinished build directories",
        )
    } else {
        plural(removed, "temporary directory", "temporary directories")
    };
    parts.push(format!("removed {removed}"));
    for f in failed {
        parts.push(format!(
            "could NOT remove {f} (the next build removes it, or remove it by hand)"
        ));
    }
    let published = if building {
        "; artifacts published before now stay, the unfinished node's were not published"
    } else {
        ""
    };
    format!("interrupted: {}{published}", parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_says_what_happened() {
        let m = interrupted_message(0, 1, &[], true);
        assert!(m.contains("removed 1 unfinished build directory;"), "{m}");
        assert!(!m.contains("stopped") && !m.contains("NOT"), "{m}");
        let failed = ["/c/work/n-1: Directory not empty".to_string()];
        let m = interrupted_message(2, 0, &failed, true);
        assert!(m.contains("stopped 2 running tools"), "{m}");
        assert!(m.contains("removed 0 unfinished build directories"), "{m}");
        assert!(
            m.contains("could NOT remove /c/work/n-1: Directory not empty"),
            "{m}"
        );
        let m = interrupted_message(1, 1, &[], false);
        assert_eq!(
            m,
            "interrupted: stopped 1 running tool; removed 1 temporary directory"
        );
    }

    #[test]
    fn guard_removes_directory() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("work");
        std::fs::create_dir_all(d.join("x")).unwrap();
        drop(remove_on_exit(&d));
        assert!(!d.exists());
    }
}

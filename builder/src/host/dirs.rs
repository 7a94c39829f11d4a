//! Where habuild keeps what outlives one run on this machine.

use std::path::PathBuf;

/// `$XDG_CACHE_HOME/habuild`, else `~/.cache/habuild`, else
/// `/var/cache/habuild` (no home: a system service).
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("habuild");
    }
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".cache/habuild"),
        _ => PathBuf::from("/var/cache/habuild"),
    }
}

//! Paths in messages: a relative path is shown as the absolute one it
//! means, so that a message about a default (`out/`, a secrets file in the
//! current directory) names the real place whatever directory it was run from.

use std::path::Path;

/// `p` made absolute against the current directory (without resolving
/// symlinks); `p` as given when even that fails.
pub fn shown(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_named_absolutely() {
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            shown(Path::new("out/seed")),
            cwd.join("out/seed").display().to_string()
        );
        assert_eq!(shown(Path::new("/x/y")), "/x/y");
    }
}

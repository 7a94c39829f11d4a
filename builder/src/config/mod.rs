//! Configuration: the cluster manifest, boards and distro profiles. Parsing
//! is pure (`&str` → value); `Project` does the file I/O.

pub mod board;
pub mod checks;
pub mod distro;
pub mod embedded;
pub mod error;
pub mod image;
pub mod manifest;
pub mod net;

#[cfg(test)]
mod checks_tests;
#[cfg(test)]
mod manifest_tests;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub use board::Board;
pub use distro::Distro;
pub use error::{ConfigError, ConfigErrors, UsageError};
pub use image::Ext4Writer;
pub use manifest::{Cluster, Node, Role};

/// The data directories habuild reads: `boards/`, `manifests/`, `overlays/`.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
}

/// The manifest used when the user names none: the seed document's cluster.
pub const DEFAULT_MANIFEST: &str = "manifests/seed.toml";

/// A file that belongs beside the manifest (its secrets, its lock): in the
/// manifest's directory, or in the current directory when the manifest is
/// the seed's copy built into habuild, whose directory is habuild's cache.
pub fn beside_manifest(manifest: &Path, name: &str) -> PathBuf {
    if is_builtin_manifest(manifest) {
        return PathBuf::from(name);
    }
    manifest.parent().unwrap_or(Path::new("")).join(name)
}

/// Whether `manifest` is in the copy of habuild's data unpacked from the
/// binary (`<data>/manifests/seed.toml`).
pub fn is_builtin_manifest(manifest: &Path) -> bool {
    manifest
        .parent()
        .and_then(Path::parent)
        .is_some_and(embedded::is_unpacked_data)
}

impl Project {
    /// Where habuild's data come from, the first that applies:
    /// `HABUILD_ROOT` (development), the habuild checkout the current
    /// directory is in, else the copy built into the binary, unpacked into
    /// `cache_dir` (see [`embedded`]).
    pub fn locate_with_cache(cache_dir: &Path) -> Result<Project> {
        if let Some(root) = std::env::var_os("HABUILD_ROOT") {
            let root = PathBuf::from(root);
            return Project::at(&root).with_context(|| "HABUILD_ROOT is set");
        }
        let cwd = std::env::current_dir().context("reading the current directory")?;
        for dir in cwd.ancestors() {
            if dir.join("boards").is_dir() && dir.join("overlays").is_dir() {
                return Project::at(dir);
            }
        }
        Project::at(&embedded::unpacked(cache_dir)?)
    }

    /// [`Project::locate_with_cache`] with the default cache directory.
    pub fn locate() -> Result<Project> {
        Project::locate_with_cache(&crate::host::dirs::default_cache_dir())
    }

    pub fn at(root: &Path) -> Result<Project> {
        for sub in ["boards", "manifests", "overlays"] {
            if !root.join(sub).is_dir() {
                bail!(
                    "{} has no {sub}/ directory: is it a habuild checkout? (set HABUILD_ROOT)",
                    root.display()
                );
            }
        }
        Ok(Project {
            root: root.to_path_buf(),
        })
    }

    fn names_in(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.root.join(dir);
        let mut names = Vec::new();
        for entry in
            std::fs::read_dir(&path).with_context(|| format!("listing {}", path.display()))?
        {
            let p = entry
                .with_context(|| format!("listing {}", path.display()))?
                .path();
            if p.extension().is_some_and(|e| e == "toml") {
                names.extend(p.file_stem().and_then(|s| s.to_str()).map(String::from));
            }
        }
        names.sort();
        Ok(names)
    }

    pub fn board_names(&self) -> Result<Vec<String>> {
        self.names_in("boards")
    }

    pub fn distro_names(&self) -> Result<Vec<String>> {
        self.names_in("manifests/distros")
    }

    pub fn board(&self, name: &str) -> Result<Board> {
        let path = self.root.join("boards").join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading board {name}: {}", path.display()))?;
        Ok(board::parse(&path, &text)?)
    }

    pub fn distro(&self, name: &str) -> Result<Distro> {
        let path = self
            .root
            .join("manifests/distros")
            .join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading distro profile {name}: {}", path.display()))?;
        Ok(distro::parse(&path, &text)?)
    }

    /// Loads and validates a manifest (the seed's cluster when `path` is None).
    pub fn manifest(&self, path: Option<&Path>) -> Result<Cluster> {
        let path = path
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.root.join(DEFAULT_MANIFEST));
        let boards = self.board_names()?;
        let distros = self.distro_names()?;
        manifest::load(
            &path,
            &manifest::Known {
                boards: &boards,
                distros: &distros,
            },
        )
    }
}

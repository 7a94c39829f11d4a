//! The lock file (`habuild.lock`): for every distinct base root filesystem
//! the manifest's images need, the packages it requests and every package
//! that ends up installed (name, version, architecture, sha256 of the .deb),
//! and the repositories' signed indexes they come from.
//!
//! A base is identified by what decides its content apart from the
//! archive's state: distro, architecture, repositories (suites and
//! components; the distro's mirror is left out, so a lock made against one
//! mirror holds for another or for a snapshot), requested packages and
//! bundle .debs. `resolve` computes an entry without a bootstrap; `format`
//! reads and writes the canonical file; `coverage` finds the entry an
//! image needs; `diff` says how two entries differ.

pub mod coverage;
pub mod diff;
pub mod format;
pub mod resolve;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::debian::packages::InstalledPackage;

/// The lock file's name beside the manifest.
pub const LOCK_FILE_NAME: &str = "habuild.lock";

/// The format's version; a lock of another version is refused.
pub const LOCK_VERSION: u32 = 1;

/// `from` of a package installed from the offline bundle.
pub const FROM_BUNDLE: &str = "bundle";

/// Where `habuild lock` writes and `habuild image` looks: beside the manifest.
pub fn default_path(manifest: &Path) -> PathBuf {
    crate::config::beside_manifest(manifest, LOCK_FILE_NAME)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    pub version: u32,
    #[serde(default, rename = "base")]
    pub bases: Vec<LockedBase>,
}

/// One base root filesystem: what identifies it, then what it installs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedBase {
    pub distro: String,
    pub arch: String,
    /// The manifest's nodes built on this base (for readers; not identity).
    pub nodes: Vec<String>,
    /// The packages habuild asks the bootstrapper for (`--include`).
    pub requested: Vec<String>,
    /// The offline bundle's .debs, by file name and content.
    #[serde(default)]
    pub bundle: Vec<BundleFile>,
    pub repositories: Vec<LockedRepository>,
    pub packages: Vec<LockedPackage>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundleFile {
    pub file: String,
    pub sha256: String,
}

/// One suite of a repository, as its signed InRelease file described it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedRepository {
    /// Only for repositories other than the distro's archive (pkgs.k8s.io):
    /// the distro's mirror is the site's choice, not part of the pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    pub suite: String,
    pub components: Vec<String>,
    /// The InRelease file's `Date`, verbatim.
    pub date: String,
    /// `Date` as a snapshot mirror's timestamp (`YYYYMMDDTHHMMSSZ`), for
    /// distros whose archive has a snapshot service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub inrelease_sha256: String,
}

impl LockedRepository {
    /// How packages name their repository in `from`: the suite for the
    /// distro's archive, the URI (and suite) for others.
    pub fn name(&self) -> String {
        repository_name(self.uri.as_deref(), &self.suite)
    }
}

pub fn repository_name(uri: Option<&str>, suite: &str) -> String {
    match uri {
        None => suite.to_string(),
        Some(u) if suite == "/" => u.to_string(),
        Some(u) => format!("{u} {suite}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// For archive packages the SHA256 the signed Packages index gives;
    /// for bundle packages the .deb file's own.
    pub sha256: String,
    /// The repository's `name()`, or `bundle`.
    pub from: String,
}

impl LockedBase {
    /// The installed set as dpkg records it (name, version, architecture).
    pub fn installed(&self) -> Vec<InstalledPackage> {
        let mut v: Vec<InstalledPackage> = self
            .packages
            .iter()
            .map(|p| InstalledPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                architecture: p.arch.clone(),
            })
            .collect();
        v.sort();
        v
    }

    /// A short name for messages: `debian-13 arm64 (master-arm-1, master-arm-2)`.
    pub fn label(&self) -> String {
        format!("{} {} ({})", self.distro, self.arch, self.nodes.join(", "))
    }

    /// Puts every list in its canonical order.
    pub fn canonicalize(&mut self) {
        self.nodes.sort();
        self.nodes.dedup();
        self.requested.sort();
        self.requested.dedup();
        self.bundle.sort();
        self.packages.sort_by(|a, b| {
            (&a.name, &a.arch, &a.version, &a.from).cmp(&(&b.name, &b.arch, &b.version, &b.from))
        });
    }
}

impl Lock {
    pub fn new(mut bases: Vec<LockedBase>) -> Lock {
        for b in &mut bases {
            b.canonicalize();
        }
        bases.sort_by(|a, b| {
            (&a.distro, &a.arch, &a.requested, &a.bundle, &a.nodes).cmp(&(
                &b.distro,
                &b.arch,
                &b.requested,
                &b.bundle,
                &b.nodes,
            ))
        });
        Lock {
            version: LOCK_VERSION,
            bases,
        }
    }
}

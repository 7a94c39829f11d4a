//! Distro profiles (`manifests/distros/<name>.toml`): suite, archive,
//! signing keyring and the package sets per role.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::error::{parse_toml, ConfigError, ConfigErrors};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Distro {
    pub name: String,
    pub pretty_name: String,
    pub suite: String,
    /// Further suites of the same archive (updates, security).
    #[serde(default)]
    pub extra_suites: Vec<String>,
    pub components: Vec<String>,
    /// The archive's signing keyring on the build host: apt verifies every
    /// Release file against it (never `trusted=yes`).
    pub keyring: String,
    /// The package that ships `keyring`, for error messages.
    pub keyring_package: String,
    pub mirror: Mirror,
    /// The archive has a snapshot service (the archive as it was at a
    /// timestamp): lock files record each suite's timestamp for it.
    #[serde(default)]
    pub snapshots: bool,
    /// Package sets: `common` for every image, then one per role.
    pub packages: BTreeMap<String, Vec<String>>,
}

/// Where packages come from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// Read the Debian mirror from the build host's apt configuration.
    #[serde(default)]
    pub from_host: bool,
    /// Archive URL per architecture (Ubuntu keeps arm64 on a ports archive).
    #[serde(default)]
    pub by_arch: BTreeMap<String, String>,
}

impl Distro {
    pub fn packages_for(&self, role: &str) -> Vec<String> {
        let mut all: Vec<String> = self.packages.get("common").cloned().unwrap_or_default();
        all.extend(self.packages.get(role).cloned().unwrap_or_default());
        all
    }
}

pub fn parse(file: &Path, text: &str) -> Result<Distro, ConfigErrors> {
    let d: Distro = parse_toml(file, text)?;
    let mut problems = Vec::new();
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if d.name != stem {
        problems.push(ConfigError {
            file: file.to_path_buf(),
            key: "name".into(),
            problem: format!("{:?} does not match the file name {stem:?}", d.name),
        });
    }
    if !d.mirror.from_host && d.mirror.by_arch.is_empty() {
        problems.push(ConfigError {
            file: file.to_path_buf(),
            key: "mirror".into(),
            problem: "set from_host = true or give by_arch URLs".into(),
        });
    }
    for key in d.packages.keys() {
        if !["common", "control-plane", "director"].contains(&key.as_str()) {
            problems.push(ConfigError {
                file: file.to_path_buf(),
                key: format!("packages.{key}"),
                problem: "expected common, control-plane or director".into(),
            });
        }
    }
    if problems.is_empty() {
        Ok(d)
    } else {
        Err(ConfigErrors(problems))
    }
}

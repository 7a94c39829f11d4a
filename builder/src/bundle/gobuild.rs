//! Builds a [`Component`]'s commands with the go command, from its wrapper
//! module in `bundle/go/<dir>`, and caches the binaries by everything that
//! makes them: the wrapper's go.mod and go.sum, the Go toolchain, the
//! target architecture and the flags. A second run with the same pins is a
//! cache hit that starts no compiler.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::components::{required_version, Component, Source};
use crate::util::CommandExt;

/// One component built (or found in the cache) for one architecture.
#[derive(Debug, Clone)]
pub struct Built {
    pub component: Component,
    pub arch: String,
    pub source: Source,
    /// Holds one binary per command, named as [`Component::commands`] says.
    pub dir: PathBuf,
    /// The upstream module's source in the Go module cache (its C helpers).
    pub module_dir: PathBuf,
    pub cached: bool,
    pub took: Duration,
}

impl Built {
    pub fn binary(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// The record beside cached binaries: what they were built from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CacheRecord {
    pub module: String,
    pub version: String,
    pub commit: Option<String>,
    /// The upstream module's checksum as go.sum records it (`h1:…`).
    pub module_sum: String,
    pub go: String,
    pub arch: String,
    pub ldflags: String,
    pub tags: Vec<String>,
}

/// Where and how to build.
pub struct GoEnv<'a> {
    /// `bundle/go` of the checkout.
    pub modules: &'a Path,
    /// `<cache>/bundle/bin`.
    pub cache: &'a Path,
    /// `go env GOVERSION`.
    pub go_version: &'a str,
    /// RFC 3339, from SOURCE_DATE_EPOCH.
    pub build_date: &'a str,
}

/// `go env GOVERSION`, or an error that says how to get Go.
pub fn go_version() -> Result<String> {
    let v = Command::new("go")
        .args(["env", "GOVERSION"])
        .output_checked()
        .context("asking the go command for its version (habuild bundle needs Go 1.26 or newer: `habuild doctor`)")?;
    Ok(v.trim().to_string())
}

/// A component's pin as go.mod, go.sum and the module proxy know it.
#[derive(Debug, Clone)]
pub struct Pinned {
    pub source: Source,
    /// The upstream module's checksum as go.sum records it (`h1:…`).
    pub module_sum: String,
    /// The module's source in the Go module cache (read-only).
    pub dir: PathBuf,
}

/// The pinned version of `c`, its checksum, its commit where the proxy
/// records it, and where its source is (downloaded if need be).
pub fn pinned(c: &Component, modules: &Path) -> Result<Pinned> {
    let dir = modules.join(c.dir);
    let go_mod = read(&dir.join("go.mod"))?;
    let version = required_version(&go_mod, c.module)
        .with_context(|| format!("reading the pin in {}", dir.join("go.mod").display()))?;
    let go_sum = read(&dir.join("go.sum"))?;
    let module_sum = go_sum
        .lines()
        .find_map(|l| {
            let mut p = l.split_whitespace();
            (p.next() == Some(c.module) && p.next() == Some(version.as_str()))
                .then(|| p.next().map(String::from))
                .flatten()
        })
        .with_context(|| {
            format!(
                "{} has no checksum of {}@{version}: run `go mod tidy` in {}",
                dir.join("go.sum").display(),
                c.module,
                dir.display()
            )
        })?;
    // -json prints the download's record; Origin (the tag's commit) is
    // there when the proxy recorded it, which it does not for every module.
    let out = Command::new("go")
        .current_dir(&dir)
        .args(["mod", "download", "-json"])
        .arg(format!("{}@{version}", c.module))
        .output_checked()
        .with_context(|| format!("downloading {}@{version} (the Go module proxy)", c.module))?;
    #[derive(Deserialize)]
    struct Download {
        #[serde(rename = "Origin")]
        origin: Option<Origin>,
        #[serde(rename = "Dir")]
        dir: PathBuf,
    }
    #[derive(Deserialize)]
    struct Origin {
        #[serde(rename = "Hash")]
        hash: Option<String>,
    }
    let d: Download = serde_json::from_str(&out)
        .with_context(|| format!("reading `go mod download -json {}` output", c.module))?;
    let commit = d.origin.and_then(|o| o.hash);
    Ok(Pinned {
        source: Source { version, commit },
        module_sum,
        dir: d.dir,
    })
}

/// Builds `c` for `arch` (`amd64`, `arm64`), or takes it from the cache.
pub fn build(c: &Component, arch: &str, env: &GoEnv) -> Result<Built> {
    let start = Instant::now();
    let wrapper = env.modules.join(c.dir);
    let Pinned {
        source,
        module_sum,
        dir: module_dir,
    } = pinned(c, env.modules)?;
    let ldflags = c.ldflags(&source, env.build_date)?;
    let record = CacheRecord {
        module: c.module.to_string(),
        version: source.version.clone(),
        commit: source.commit.clone(),
        module_sum,
        go: env.go_version.to_string(),
        arch: arch.to_string(),
        ldflags: ldflags.clone(),
        tags: c.tags.iter().map(|t| t.to_string()).collect(),
    };
    let key = cache_key(
        &record,
        &read(&wrapper.join("go.mod"))?,
        &read(&wrapper.join("go.sum"))?,
    );
    let dir = env
        .cache
        .join(c.dir)
        .join(format!("{}-{arch}-{}", source.version, &key[..16]));
    let marker = dir.join("built.json");
    if marker.is_file() && c.commands.iter().all(|(n, _)| dir.join(n).is_file()) {
        return Ok(Built {
            component: *c,
            arch: arch.into(),
            source,
            dir,
            module_dir,
            cached: true,
            took: start.elapsed(),
        });
    }
    let tmp = dir.with_extension(format!("partial-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut cmd = Command::new("go");
    cmd.current_dir(&wrapper)
        .env("CGO_ENABLED", "0")
        .env("GOOS", "linux")
        .env("GOARCH", arch)
        // The pins are go.mod and go.sum as committed: never rewrite them.
        .env("GOFLAGS", "-mod=readonly")
        .args(["build", "-trimpath", "-buildvcs=false"]);
    if !c.tags.is_empty() {
        cmd.arg("-tags").arg(c.tags.join(","));
    }
    cmd.arg("-ldflags").arg(&ldflags);
    if let [(name, pkg)] = c.commands {
        // One command: name the file (a module path ending in /v3 would
        // otherwise name it after its parent directory).
        cmd.arg("-o").arg(tmp.join(name)).arg(pkg);
    } else {
        cmd.arg("-o").arg(format!("{}/", tmp.display()));
        cmd.args(c.commands.iter().map(|(_, pkg)| *pkg));
    }
    cmd.run_checked().with_context(|| {
        format!(
            "building {} {} for {arch} in {}",
            c.module,
            source.version,
            wrapper.display()
        )
    })?;
    for (name, _) in c.commands {
        if !tmp.join(name).is_file() {
            bail!(
                "go build of {} left no {name} in {}",
                c.module,
                tmp.display()
            );
        }
    }
    std::fs::write(
        tmp.join("built.json"),
        serde_json::to_vec_pretty(&record).context("serialising the build record")?,
    )
    .with_context(|| format!("writing {}", tmp.join("built.json").display()))?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    Ok(Built {
        component: *c,
        arch: arch.into(),
        source,
        dir,
        module_dir,
        cached: false,
        took: start.elapsed(),
    })
}

/// Everything that makes the binaries, hashed.
fn cache_key(record: &CacheRecord, go_mod: &str, go_sum: &str) -> String {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(record).expect("a record serialises"));
    for part in [go_mod, go_sum] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> CacheRecord {
        CacheRecord {
            module: "m".into(),
            version: "v1".into(),
            commit: None,
            module_sum: "h1:x".into(),
            go: "go1.26.8".into(),
            arch: "arm64".into(),
            ldflags: "-s -w".into(),
            tags: vec![],
        }
    }

    #[test]
    fn the_cache_key_changes_with_every_input() {
        let base = cache_key(&record(), "mod", "sum");
        assert_eq!(base, cache_key(&record(), "mod", "sum"));
        let mut r = record();
        r.arch = "amd64".into();
        assert_ne!(base, cache_key(&r, "mod", "sum"));
        let mut r = record();
        r.go = "go1.27".into();
        assert_ne!(base, cache_key(&r, "mod", "sum"));
        assert_ne!(base, cache_key(&record(), "mod2", "sum"));
        assert_ne!(base, cache_key(&record(), "mod", "sum2"));
        // Lengths are part of the key: moving a byte between parts counts.
        assert_ne!(
            cache_key(&record(), "ab", "c"),
            cache_key(&record(), "a", "bc")
        );
    }
}

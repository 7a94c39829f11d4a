//! Resolves a base's lock entry without bootstrapping it. apt, in a scratch
//! directory of its own, fetches the repositories' InRelease files and
//! Packages indexes and verifies them as mmdebstrap's apt does (signatures
//! against each source's `signed-by` keyring, every index against the
//! InRelease hashes); then apt simulates the installs mmdebstrap makes for
//! `--variant=minbase`, in its order, each from the state the previous one
//! leaves: the essential set into an empty system, then `apt`, the
//! Priority:required packages and the includes, then the bundle's .debs
//! (habuild's customize hook). Each step's result is the next step's dpkg
//! status, so apt picks between alternatives as it does in the bootstrap.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{BundleFile, LockedBase, LockedPackage, LockedRepository, FROM_BUNDLE};
use crate::debian::apt::{self, PackageIndex};
use crate::debian::deb822::stanzas;
use crate::debian::packages::InstalledPackage;
use crate::plan::BaseSpec;
use crate::util::digest::sha256_file;
use crate::util::CommandExt;

#[derive(Debug, Clone, Copy)]
pub struct ResolveOptions {
    /// Record each distro suite's snapshot timestamp (the distro's archive
    /// has a snapshot service).
    pub snapshots: bool,
    /// Accept Release files past their `Valid-Until` (a snapshot mirror);
    /// see `apt::EXPIRED_RELEASE_OPTION`.
    pub allow_expired: bool,
}

/// The offline bundle's .debs of `spec`, by file name and sha256.
pub fn bundle_files(spec: &BaseSpec) -> Result<Vec<BundleFile>> {
    let mut out = Vec::new();
    for deb in &spec.local_debs {
        out.push(BundleFile {
            file: file_name(deb),
            sha256: sha256_file(deb)?,
        });
    }
    out.sort();
    Ok(out)
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

/// The lock entry of `spec` as the archive gives it now (`nodes` empty:
/// the caller knows them).
pub fn resolve_base(spec: &BaseSpec, opts: ResolveOptions) -> Result<LockedBase> {
    crate::debian::sources::check_keyrings(&spec.sources)?;
    crate::debian::reach::check_sources(&spec.sources, Duration::from_secs(10))?;
    let arch = spec.arch.debian_name();
    let scratch = tempfile::Builder::new()
        .prefix("habuild-lock-")
        .tempdir()
        .context("creating a scratch directory for apt")?;
    let root = scratch.path();
    let apt_conf = prepare_root(spec, root, opts.allow_expired)?;
    let apt_get = |args: &[&str]| {
        let mut c = Command::new("apt-get");
        c.env("APT_CONFIG", &apt_conf).env("LC_ALL", "C").args(args);
        c
    };

    apt_get(&["update", "--error-on=any"])
        .output_checked()
        .with_context(|| {
            format!(
                "fetching and verifying the package indexes of {} for {arch}",
                spec.distro
            )
        })?;
    let targets = apt::parse_index_targets(
        &apt_get(&["indextargets"])
            .output_checked()
            .context("listing the package indexes apt fetched")?,
    );

    // Every suite of every source, in the plan's order; each index file
    // with the name of its repository.
    let mut repositories = Vec::new();
    let mut index_files: Vec<(String, PathBuf)> = Vec::new();
    for (i, source) in spec.sources.iter().enumerate() {
        let repo_uri = format!("{}/", source.uri.trim_end_matches('/'));
        for suite in &source.suites {
            let indexes: Vec<&apt::PackagesIndex> = targets
                .iter()
                .filter(|t| t.repo_uri == repo_uri && &t.suite == suite)
                .collect();
            let Some(first) = indexes.first() else {
                bail!(
                    "apt fetched no {arch} Packages index for suite {suite} of {}",
                    source.uri
                );
            };
            let inrelease = first.inrelease_file()?;
            let text = std::fs::read_to_string(&inrelease)
                .with_context(|| format!("reading {}", inrelease.display()))?;
            let date = apt::release_date(&text)
                .with_context(|| format!("{} has no Date field", inrelease.display()))?;
            let is_distro = i == 0;
            let repo = LockedRepository {
                uri: (!is_distro).then(|| source.uri.clone()),
                suite: suite.clone(),
                components: source.components.clone(),
                date: date.to_string(),
                snapshot: if is_distro && opts.snapshots {
                    Some(apt::snapshot_timestamp(date)?)
                } else {
                    None
                },
                inrelease_sha256: sha256_file(&inrelease)?,
            };
            index_files.extend(indexes.iter().map(|t| (repo.name(), t.file.clone())));
            repositories.push(repo);
        }
    }
    let texts = index_files
        .iter()
        .map(|(_, f)| {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))
        })
        .collect::<Result<Vec<String>>>()?;
    let index = apt::index_packages(&texts.iter().map(String::as_str).collect::<Vec<_>>());
    let origin = Origins {
        index: &index,
        index_names: index_files.iter().map(|(n, _)| n.as_str()).collect(),
        bundle: bundle_control(&spec.local_debs)?,
    };

    let suite = &spec.sources[0].suites[0];
    let status = root.join("var/lib/dpkg/status");
    let mut packages = Vec::new();
    let mut installed_stanzas: Vec<&str> = Vec::new();
    let mut steps: Vec<Vec<String>> = vec![
        vec![apt::essential_pattern(suite, arch)],
        std::iter::once("apt".to_string())
            .chain(spec.packages.iter().cloned())
            .chain(std::iter::once(apt::required_pattern(suite, arch)))
            .collect(),
    ];
    if !spec.local_debs.is_empty() {
        steps.push(
            std::iter::once("--no-install-recommends".to_string())
                .chain(spec.local_debs.iter().map(|d| d.display().to_string()))
                .collect(),
        );
    }
    for (n, step) in steps.iter().enumerate() {
        let mut args = vec!["-s", "install"];
        args.extend(step.iter().map(String::as_str));
        let out = apt_get(&args).output_checked().with_context(|| {
            format!(
                "simulating step {} of the {} {arch} bootstrap",
                n + 1,
                spec.distro
            )
        })?;
        for p in apt::parse_simulation(&out)? {
            let (locked, stanza) = origin.locate(&p)?;
            packages.push(locked);
            installed_stanzas.extend(stanza);
        }
        std::fs::write(&status, apt::dpkg_status(installed_stanzas.iter().copied()))
            .with_context(|| format!("writing {}", status.display()))?;
    }

    let mut base = LockedBase {
        distro: spec.distro.clone(),
        arch: arch.to_string(),
        nodes: Vec::new(),
        requested: spec.packages.clone(),
        bundle: bundle_files(spec)?,
        repositories,
        packages,
    };
    base.canonicalize();
    Ok(base)
}

/// Lays out apt's scratch root; returns its configuration file.
fn prepare_root(spec: &BaseSpec, root: &Path, allow_expired: bool) -> Result<PathBuf> {
    for d in [
        "etc/apt/apt.conf.d",
        "etc/apt/preferences.d",
        "etc/apt/sources.list.d",
        "etc/apt/trusted.gpg.d",
        "var/lib/apt/lists/partial",
        "var/cache/apt/archives/partial",
        "var/lib/dpkg",
    ] {
        std::fs::create_dir_all(root.join(d))
            .with_context(|| format!("creating {}", root.join(d).display()))?;
    }
    let conf = root.join("apt.conf");
    let files = [
        (
            conf.clone(),
            apt::apt_config(root, spec.arch.debian_name(), allow_expired),
        ),
        (
            root.join("etc/apt/sources.list"),
            spec.sources
                .iter()
                .flat_map(|s| s.lines())
                .map(|l| l + "\n")
                .collect(),
        ),
        (root.join("var/lib/dpkg/status"), String::new()),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(conf)
}

/// Each bundle .deb's (package, version, architecture), read from its
/// control file, with its file name and sha256.
fn bundle_control(debs: &[PathBuf]) -> Result<Vec<(InstalledPackage, BundleFile)>> {
    let mut out = Vec::new();
    for deb in debs {
        let fields = Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .args(["Package", "Version", "Architecture"])
            .output_checked()
            .with_context(|| format!("reading the control file of {}", deb.display()))?;
        let s = stanzas(&fields);
        let field = |name| {
            s.first()
                .and_then(|s| s.get(name))
                .map(str::to_string)
                .with_context(|| format!("{} has no {name} field", deb.display()))
        };
        out.push((
            InstalledPackage {
                name: field("Package")?,
                version: field("Version")?,
                architecture: field("Architecture")?,
            },
            BundleFile {
                file: file_name(deb),
                sha256: sha256_file(deb)?,
            },
        ));
    }
    Ok(out)
}

/// Where each package apt would install comes from.
struct Origins<'a> {
    index: &'a PackageIndex<'a>,
    index_names: Vec<&'a str>,
    bundle: Vec<(InstalledPackage, BundleFile)>,
}

impl<'a> Origins<'a> {
    /// The lock entry of `p`, and its Packages stanza (None for a bundle .deb).
    fn locate(&self, p: &InstalledPackage) -> Result<(LockedPackage, Option<&'a str>)> {
        let entry = |sha256: &str, from: &str| LockedPackage {
            name: p.name.clone(),
            version: p.version.clone(),
            arch: p.architecture.clone(),
            sha256: sha256.to_string(),
            from: from.to_string(),
        };
        if let Some((_, f)) = self.bundle.iter().find(|(b, _)| b == p) {
            return Ok((entry(&f.sha256, FROM_BUNDLE), None));
        }
        match self
            .index
            .get(&(p.name.as_str(), p.version.as_str(), p.architecture.as_str()))
        {
            Some(o) => Ok((entry(o.sha256, self.index_names[o.index]), Some(o.stanza))),
            None => bail!(
                "apt would install {} {} ({}), which no fetched index nor the bundle offers",
                p.name,
                p.version,
                p.architecture
            ),
        }
    }
}

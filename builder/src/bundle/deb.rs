//! Debian packages from a spec: the control file is rendered here (pure),
//! the tree is assembled in a temporary directory and `dpkg-deb` builds it
//! with root as owner and SOURCE_DATE_EPOCH as every timestamp, so the
//! same inputs give the same .deb.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use walkdir::WalkDir;

use crate::util::CommandExt;

/// A file in a package: copied from `from` to `to` (absolute in the
/// target) with `mode`.
#[derive(Debug, Clone)]
pub struct DebFile {
    pub from: PathBuf,
    pub to: String,
    pub mode: u32,
}

/// What a package is and holds.
#[derive(Debug, Clone)]
pub struct DebSpec {
    pub name: String,
    /// The full version, revision included (`1.36.3-1.1`).
    pub version: String,
    pub arch: String,
    pub depends: Vec<String>,
    /// First line: the synopsis; the rest: the long description.
    pub description: String,
    /// Directory trees copied in as they are (`bundle/packages/<name>`).
    pub trees: Vec<PathBuf>,
    pub files: Vec<DebFile>,
    /// (link, target): symbolic links, the link absolute in the target.
    pub links: Vec<(String, String)>,
}

/// The `DEBIAN/control` text.
pub fn control(spec: &DebSpec, installed_size_kib: u64) -> String {
    let mut lines = vec![
        format!("Package: {}", spec.name),
        format!("Version: {}", spec.version),
        format!("Architecture: {}", spec.arch),
        "Maintainer: habuild bundle <bundle@habuild.invalid>".to_string(),
        format!("Installed-Size: {installed_size_kib}"),
    ];
    if !spec.depends.is_empty() {
        lines.push(format!("Depends: {}", spec.depends.join(", ")));
    }
    lines.push("Section: admin".into());
    lines.push("Priority: optional".into());
    let mut desc = spec.description.lines();
    lines.push(format!("Description: {}", desc.next().unwrap_or_default()));
    for l in desc {
        lines.push(if l.trim().is_empty() {
            " .".to_string()
        } else {
            format!(" {l}")
        });
    }
    lines.join("\n") + "\n"
}

/// The package's file name, as Debian names it.
pub fn file_name(spec: &DebSpec) -> String {
    format!("{}_{}_{}.deb", spec.name, spec.version, spec.arch)
}

/// Builds `spec` into `out/<file_name>`.
pub fn build(spec: &DebSpec, out: &Path, source_date_epoch: i64) -> Result<PathBuf> {
    let work = tempfile::tempdir().context("creating a temporary directory for a package tree")?;
    let tree = work.path().join(&spec.name);
    std::fs::create_dir_all(&tree).with_context(|| format!("creating {}", tree.display()))?;
    for t in &spec.trees {
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", t.display()))
            .arg(&tree)
            .run_checked()
            .with_context(|| format!("copying {} into the {} package", t.display(), spec.name))?;
    }
    for f in &spec.files {
        let to = tree.join(f.to.trim_start_matches('/'));
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(&f.from, &to)
            .with_context(|| format!("copying {} to {}", f.from.display(), to.display()))?;
        set_mode(&to, f.mode)?;
    }
    for (link, target) in &spec.links {
        let at = tree.join(link.trim_start_matches('/'));
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::os::unix::fs::symlink(target, &at)
            .with_context(|| format!("linking {} to {target}", at.display()))?;
    }
    let mut size = 0u64;
    let mut conffiles = Vec::new();
    for e in WalkDir::new(&tree).sort_by_file_name() {
        let e = e.with_context(|| format!("walking {}", tree.display()))?;
        let meta = e
            .path()
            .symlink_metadata()
            .with_context(|| format!("reading {}", e.path().display()))?;
        size += meta.len().div_ceil(1024);
        let rel = e.path().strip_prefix(&tree).expect("under the tree");
        if meta.is_file() && rel.starts_with("etc") {
            conffiles.push(format!("/{}", rel.display()));
        }
    }
    if spec.files.is_empty() && spec.trees.is_empty() && spec.links.is_empty() {
        bail!("the package {} would be empty", spec.name);
    }
    let debian = tree.join("DEBIAN");
    std::fs::create_dir_all(&debian).with_context(|| format!("creating {}", debian.display()))?;
    std::fs::write(debian.join("control"), control(spec, size))
        .with_context(|| format!("writing the control file of {}", spec.name))?;
    if !conffiles.is_empty() {
        std::fs::write(debian.join("conffiles"), conffiles.join("\n") + "\n")
            .with_context(|| format!("writing the conffiles of {}", spec.name))?;
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let deb = out.join(file_name(spec));
    Command::new("dpkg-deb")
        .env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
        // zstd: 3 s for the six packages where xz took about 97 s for five
        // (benchmarks/README.md); dpkg reads it from 1.21.18 on (Debian 12,
        // Ubuntu 22.04).
        .args(["--root-owner-group", "-Zzstd", "--build"])
        .arg(&tree)
        .arg(&deb)
        .run_checked()
        .with_context(|| format!("packaging {}", spec.name))?;
    Ok(deb)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DebSpec {
        DebSpec {
            name: "kubeadm".into(),
            version: "1.36.3-1.1".into(),
            arch: "arm64".into(),
            depends: vec!["cri-tools (>= 1.30.0)".into()],
            description: "Command-line utility for administering a Kubernetes cluster\nBuilt by habuild.\n\nFrom k8s.io/kubernetes v1.36.3.".into(),
            trees: vec![],
            files: vec![],
            links: vec![],
        }
    }

    #[test]
    fn control_has_the_fields_apt_needs() {
        let c = control(&spec(), 72000);
        assert!(
            c.starts_with("Package: kubeadm\nVersion: 1.36.3-1.1\nArchitecture: arm64\n"),
            "{c}"
        );
        assert!(c.contains("\nDepends: cri-tools (>= 1.30.0)\n"), "{c}");
        assert!(c.contains("\nInstalled-Size: 72000\n"), "{c}");
        // Long description: every line indented, empty lines as " .".
        assert!(c.ends_with("Description: Command-line utility for administering a Kubernetes cluster\n Built by habuild.\n .\n From k8s.io/kubernetes v1.36.3.\n"), "{c}");
    }

    #[test]
    fn named_as_debian_names_packages() {
        assert_eq!(file_name(&spec()), "kubeadm_1.36.3-1.1_arm64.deb");
    }
}

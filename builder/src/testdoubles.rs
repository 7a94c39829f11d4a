//! Builds the offline bundle of **test doubles** of kubeadm, kubelet,
//! kubectl and CRI-O (see tests/doubles/README.md): the real packages are
//! unreachable from the build machines, and the doubles must travel the
//! same path real packages take (`habuild image --k8s-bundle DIR`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::CommandExt;

/// Turns every `<pkg>/{control,root/}` under `src` into a .deb for `arch`
/// in `out`, plus a `SHA256SUMS` the bundle check verifies.
pub fn build_bundle(
    src: &Path,
    arch: &str,
    out: &Path,
    source_date_epoch: i64,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut packages: Vec<PathBuf> = std::fs::read_dir(src)
        .with_context(|| format!("listing test doubles in {}", src.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("control").is_file())
        .collect();
    packages.sort();
    let work = tempfile::tempdir().context("creating a temporary directory for package trees")?;
    let mut debs = Vec::new();
    let mut sums = std::collections::BTreeMap::new();
    for pkg in &packages {
        let control = std::fs::read_to_string(pkg.join("control"))
            .with_context(|| format!("reading {}", pkg.join("control").display()))?;
        let field = |f: &str| {
            control
                .lines()
                .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
        };
        let name =
            field("Package:").with_context(|| format!("{}: no Package field", pkg.display()))?;
        let version =
            field("Version:").with_context(|| format!("{}: no Version field", pkg.display()))?;
        let tree = work.path().join(&name);
        Command::new("cp")
            .arg("-a")
            .arg(pkg.join("root"))
            .arg(&tree)
            .run_checked()?;
        std::fs::create_dir_all(tree.join("DEBIAN"))?;
        std::fs::write(
            tree.join("DEBIAN/control"),
            format!(
                "{}Architecture: {arch}\n",
                control.trim_end().to_string() + "\n"
            ),
        )
        .with_context(|| format!("writing the control file of {name}"))?;
        let deb = out.join(format!("{name}_{version}_{arch}.deb"));
        Command::new("dpkg-deb")
            .env("SOURCE_DATE_EPOCH", source_date_epoch.to_string())
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&tree)
            .arg(&deb)
            .run_checked()
            .with_context(|| format!("packaging the {name} test double"))?;
        sums.insert(
            deb.file_name()
                .expect("named")
                .to_string_lossy()
                .into_owned(),
            crate::util::digest::sha256_file(&deb)?,
        );
        debs.push(deb);
    }
    std::fs::write(
        out.join("SHA256SUMS"),
        crate::artifact::checksums::render_sums(&sums),
    )
    .with_context(|| format!("writing {}/SHA256SUMS", out.display()))?;
    Ok(debs)
}

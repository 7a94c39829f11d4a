//! What is decided before planning, from the user's options and the build
//! host: the archive mirror, and where Kubernetes and CRI-O come from
//! (pkgs.k8s.io, probed and with its keyring present, or an offline bundle
//! checked against its SHA256SUMS).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::KubernetesChoice;
use crate::config::Cluster;
use crate::plan::KubernetesSource;

pub fn resolve_mirror(
    distro: &crate::config::Distro,
    arch: &str,
    flag: Option<&str>,
) -> Result<String> {
    if let Some(m) = flag {
        return Ok(m.trim_end_matches('/').to_string());
    }
    if distro.mirror.from_host {
        return crate::debian::host_sources::host_debian_mirror();
    }
    distro.mirror.by_arch.get(arch).cloned().with_context(|| {
        format!(
            "distro {} names no archive for {arch}; pass --mirror URL",
            distro.name
        )
    })
}

pub fn resolve_kubernetes(
    choice: &KubernetesChoice,
    cluster: &Cluster,
) -> Result<KubernetesSource> {
    match (&choice.bundle, choice.without) {
        (Some(_), true) => bail!("--k8s-bundle and --without-kubernetes exclude each other"),
        (None, true) => Ok(KubernetesSource::Without),
        (Some(dir), false) => {
            let dir = std::fs::canonicalize(dir).with_context(|| {
                format!("reading the offline bundle directory {}", dir.display())
            })?;
            let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("listing the offline bundle {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "deb"))
                .collect();
            debs.sort();
            if debs.is_empty() {
                bail!("the offline bundle {} holds no .deb files", dir.display());
            }
            verify_bundle_sums(&dir, &debs)?;
            Ok(KubernetesSource::Bundle { dir, debs })
        }
        (None, false) => {
            let sources = crate::plan::pkgs_k8s_io_sources(cluster, Path::new("/dev/null"));
            crate::debian::reach::check_sources(&sources, std::time::Duration::from_secs(10))?;
            let keyring = choice
                .keyring
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_K8S_KEYRING));
            if !keyring.is_file() {
                bail!(
                    "the pkgs.k8s.io signing keyring {} is missing: fetch it with\n  curl -fsSL https://pkgs.k8s.io/core:/stable:/v{}/deb/Release.key | gpg --dearmor -o {}\n(check its fingerprint DE15 B144 86CD 377B 9E87 6E1A 2346 54DA 9A29 6436), and add CRI-O's key (https://pkgs.k8s.io/addons:/cri-o:/stable:/v{}/deb/Release.key) to the same keyring, or pass --k8s-keyring FILE",
                    keyring.display(),
                    cluster.kubernetes_version.rsplit_once('.').map_or("", |v| v.0),
                    keyring.display(),
                    cluster.crio_version
                );
            }
            Ok(KubernetesSource::Upstream { keyring })
        }
    }
}

/// Where the Kubernetes install guide puts the pkgs.k8s.io key.
pub const DEFAULT_K8S_KEYRING: &str = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg";

/// A bundle may carry `SHA256SUMS`; when it does, every .deb must match it.
fn verify_bundle_sums(dir: &Path, debs: &[PathBuf]) -> Result<()> {
    let sums_path = dir.join("SHA256SUMS");
    if !sums_path.is_file() {
        return Ok(());
    }
    let sums = crate::artifact::checksums::parse_sums(
        &std::fs::read_to_string(&sums_path)
            .with_context(|| format!("reading {}", sums_path.display()))?,
    );
    for deb in debs {
        let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let expected = sums
            .get(name)
            .with_context(|| format!("{} does not list {name}", sums_path.display()))?;
        let actual = crate::util::digest::sha256_file(deb)?;
        if &actual != expected {
            bail!("{name} in the offline bundle does not match {} (sha256 {actual}, expected {expected})", sums_path.display());
        }
    }
    Ok(())
}

//! The control-plane images kubeadm needs, under the names `kubeadm config
//! images list` gives, built from the same binaries as the node packages,
//! and the `habuild-control-plane-images` package that carries them: the
//! oci-archive tarballs, a unit that loads them into CRI-O's storage before
//! CRI-O starts, and a CRI-O drop-in that pins them against the kubelet's
//! image garbage collection.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::deb::DebSpec;
use super::gobuild::Built;
use super::oci::{self, ImageSpec, LayerFile};
use super::packages::deb_version;
use crate::util::CommandExt;

/// Where the package puts the archives (read by load-images).
pub const IMAGE_DIR: &str = "usr/share/habuild/images";

/// The package's name.
pub const PACKAGE: &str = "habuild-control-plane-images";

const PATH_ENV: &str = "PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin";

/// Asks the built kubeadm which images it will use for `version` (an
/// arm64 kubeadm runs through binfmt_misc's qemu-aarch64).
pub fn kubeadm_image_list(kube: &Built, version: &str) -> Result<Vec<String>> {
    let out = Command::new(kube.binary("kubeadm"))
        .args(["config", "images", "list", "--kubernetes-version", version])
        .output_checked()
        .with_context(|| {
            format!(
                "asking the {} kubeadm for its image list (an arm64 kubeadm needs qemu-aarch64 in binfmt_misc: `habuild doctor --install`)",
                kube.arch
            )
        })?;
    let refs: Vec<String> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if refs.is_empty() {
        bail!("kubeadm config images list printed no image");
    }
    Ok(refs)
}

/// `registry.k8s.io/coredns/coredns:v1.14.2` → (`coredns`, `v1.14.2`).
pub fn name_and_tag(reference: &str) -> Result<(&str, &str)> {
    let (repo, tag) = reference
        .rsplit_once(':')
        .filter(|(r, t)| !t.contains('/') && !r.is_empty())
        .with_context(|| format!("image reference {reference:?} has no tag"))?;
    Ok((repo.rsplit('/').next().unwrap_or(repo), tag))
}

/// One image: its reference, the program in it and where it goes.
#[derive(Debug, Clone)]
pub struct Image {
    pub reference: String,
    pub binary: PathBuf,
    /// Absolute path of the program in the image.
    pub path: String,
}

/// Every image of kubeadm's list, matched to what was built.
#[derive(Debug)]
pub struct ImageSet {
    pub images: Vec<Image>,
    kubernetes_version: String,
}

impl ImageSet {
    /// Matches kubeadm's list to the built components, and refuses a list
    /// whose tags are not what was built (a pin that drifted from what
    /// this kubeadm expects: etcd, CoreDNS, pause).
    pub fn new(
        refs: &[String],
        built: &BTreeMap<&str, Built>,
        pause: &Path,
        pause_tag: &str,
    ) -> Result<ImageSet> {
        let kube = built
            .get("kubernetes")
            .context("Kubernetes was not built")?;
        let mut images = Vec::new();
        for r in refs {
            let (name, tag) = name_and_tag(r)?;
            let (binary, path, expected) = match name {
                "kube-apiserver" | "kube-controller-manager" | "kube-scheduler" | "kube-proxy" => (
                    kube.binary(name),
                    format!("/usr/local/bin/{name}"),
                    kube.source.version.clone(),
                ),
                "etcd" => {
                    let etcd = built.get("etcd").context("etcd was not built")?;
                    let v = etcd.source.version.trim_start_matches('v');
                    (
                        etcd.binary("etcd"),
                        "/usr/local/bin/etcd".into(),
                        // kubeadm tags etcd "3.6.8-0": the release plus an image revision.
                        if tag.starts_with(&format!("{v}-")) {
                            tag.to_string()
                        } else {
                            format!("{v}-*")
                        },
                    )
                }
                "coredns" => {
                    let c = built.get("coredns").context("CoreDNS was not built")?;
                    (
                        c.binary("coredns"),
                        "/coredns".into(),
                        c.source.version.clone(),
                    )
                }
                "pause" => (pause.to_path_buf(), "/pause".into(), pause_tag.to_string()),
                other => bail!("kubeadm lists an image habuild cannot build: {r} ({other})"),
            };
            if tag != expected {
                bail!(
                    "kubeadm {} expects {r}, but the bundle pins {name} at {expected}: change the pin in bundle/go/ (or bundle/pins) to match",
                    kube.source.version
                );
            }
            images.push(Image {
                reference: r.clone(),
                binary,
                path,
            });
        }
        Ok(ImageSet {
            images,
            kubernetes_version: kube.source.version.clone(),
        })
    }

    /// Writes the archives under `work` and returns the package that
    /// carries them, and the references.
    pub fn package(
        &self,
        root: &Path,
        arch: &str,
        work: &Path,
        epoch: i64,
    ) -> Result<(DebSpec, Vec<String>)> {
        let dir = work.join(IMAGE_DIR);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut refs = Vec::new();
        for img in &self.images {
            let (name, _) = name_and_tag(&img.reference)?;
            let data = std::fs::read(&img.binary)
                .with_context(|| format!("reading {}", img.binary.display()))?;
            let mut files = oci::base_files();
            files.push(LayerFile {
                path: img.path.trim_start_matches('/').to_string(),
                mode: 0o755,
                data,
            });
            let archive = oci::archive(&ImageSpec {
                reference: img.reference.clone(),
                arch: arch.to_string(),
                entrypoint: vec![img.path.clone()],
                env: vec![PATH_ENV.to_string()],
                files,
                epoch,
            })?;
            let tar = dir.join(format!("{name}.tar"));
            std::fs::write(&tar, archive).with_context(|| format!("writing {}", tar.display()))?;
            std::fs::write(
                dir.join(format!("{name}.ref")),
                format!("{}\n", img.reference),
            )
            .with_context(|| format!("writing the reference of {name}"))?;
            refs.push(img.reference.clone());
        }
        let dropin = work.join("etc/crio/crio.conf.d/20-habuild-images.conf");
        std::fs::create_dir_all(dropin.parent().expect("has a parent"))
            .with_context(|| format!("creating {}", dropin.display()))?;
        std::fs::write(&dropin, pinned_images_dropin(&refs))
            .with_context(|| format!("writing {}", dropin.display()))?;
        let src = super::components::Source {
            version: self.kubernetes_version.clone(),
            commit: None,
        };
        let spec = DebSpec {
            name: PACKAGE.into(),
            version: deb_version(&src),
            arch: arch.to_string(),
            depends: vec!["skopeo".into()],
            description: format!(
                "Kubernetes control-plane images for an air-gapped kubeadm\n\
                 Built by `habuild bundle` from the same binaries as the node packages:\n{}",
                refs.join("\n")
            ),
            trees: vec![
                root.join("bundle/packages/control-plane-images"),
                work.to_path_buf(),
            ],
            files: Vec::new(),
            links: vec![(
                "/etc/systemd/system/crio.service.requires/habuild-load-images.service".into(),
                "/usr/lib/systemd/system/habuild-load-images.service".into(),
            )],
        };
        Ok((spec, refs))
    }
}

/// The CRI-O drop-in that keeps the images from garbage collection.
pub fn pinned_images_dropin(refs: &[String]) -> String {
    let mut s = String::from(
        "# Installed with habuild-control-plane-images (habuild bundle): the\n\
         # kubelet's image garbage collection must never remove the images an\n\
         # air-gapped control plane cannot pull again.\n[crio.image]\npinned_images = [\n",
    );
    for r in refs {
        s.push_str(&format!("    \"{r}\",\n"));
    }
    s.push_str("]\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_references() {
        assert_eq!(
            name_and_tag("registry.k8s.io/coredns/coredns:v1.14.2").unwrap(),
            ("coredns", "v1.14.2")
        );
        assert_eq!(
            name_and_tag("registry.k8s.io/etcd:3.6.8-0").unwrap(),
            ("etcd", "3.6.8-0")
        );
        assert_eq!(
            name_and_tag("host:5000/pause:3.10.2").unwrap(),
            ("pause", "3.10.2")
        );
        assert!(name_and_tag("host:5000/pause").is_err());
    }

    #[test]
    fn the_dropin_is_toml_that_lists_every_image() {
        let refs = vec![
            "registry.k8s.io/pause:3.10.2".to_string(),
            "registry.k8s.io/etcd:3.6.8-0".into(),
        ];
        let v: toml::Value = toml::from_str(&pinned_images_dropin(&refs)).unwrap();
        let pinned: Vec<&str> = v["crio"]["image"]["pinned_images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap())
            .collect();
        assert_eq!(
            pinned,
            [
                "registry.k8s.io/pause:3.10.2",
                "registry.k8s.io/etcd:3.6.8-0"
            ]
        );
    }
}

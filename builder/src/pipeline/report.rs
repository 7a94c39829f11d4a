//! `<node>.json`: what is in an image. Board, distro, every installed
//! package, and the sha256 of every file habuild added or rendered. It
//! never holds a secret (certificate fingerprints at most).

use serde::Serialize;

use crate::disk::AssembleReport;
use crate::rootfs::packages::InstalledPackage;
use crate::rootfs::render::RenderedFile;

#[derive(Debug, Serialize)]
pub struct NodeReport {
    pub habuild_version: &'static str,
    pub cluster: String,
    pub node: String,
    pub role: String,
    pub address: String,
    pub board: String,
    pub arch: String,
    pub distro: String,
    pub distro_name: String,
    pub kubernetes: KubernetesReport,
    pub base_key: String,
    pub source_date_epoch: i64,
    pub image: ImageReport,
    pub packages: Vec<InstalledPackage>,
    pub files: FilesReport,
    /// Control planes: which image files hold secrets, and public
    /// fingerprints (CA, discovery hash, token ID); never a key or token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<crate::pki::stage::SecretsReport>,
}

#[derive(Debug, Serialize)]
pub struct KubernetesReport {
    /// "upstream" (pkgs.k8s.io), "bundle" (offline .debs) or "without".
    pub source: String,
    /// False when the image was built without kubeadm, kubelet, kubectl and
    /// CRI-O: their configuration is baked in, the binaries are not.
    pub packages_included: bool,
    pub kubernetes_version: String,
    pub crio_version: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bundle: Vec<BundleDeb>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// What differs from a pkgs.k8s.io install (a bundle from `habuild
    /// bundle`: its bundle.json).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct BundleDeb {
    pub file: String,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct ImageReport {
    pub file: String,
    pub size: u64,
    pub partition_table: String,
    /// What wrote the root filesystem (`--ext4-writer`).
    pub ext4_writer: crate::fs::Ext4Writer,
    pub layout: AssembleReport,
}

#[derive(Debug, Serialize)]
pub struct FilesReport {
    /// Files habuild rendered or added to the root filesystem.
    pub root: Vec<RenderedFile>,
    /// Every file of the boot partition.
    pub boot: Vec<RenderedFile>,
}

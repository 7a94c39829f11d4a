//! `<node>.json`: what is in an image. Board, distro, every installed
//! package, and the sha256 of every file habuild added or rendered. It
//! never holds a secret (certificate fingerprints at most).
//!
//! One owner for the format: the build writes [`NodeReport`]; the readers
//! (`verify`, the reproducibility check, the QEMU tiers) read the parts
//! they need through [`NodeJson`] and [`read_layout`], defined here too.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::debian::packages::InstalledPackage;
use crate::disk::AssembleReport;
use crate::rootfs::overlay::RenderedFile;

#[derive(Debug, Serialize)]
pub struct NodeReport {
    pub habuild_version: &'static str,
    /// The git commit habuild was built from ("unknown" outside git).
    pub habuild_commit: &'static str,
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
    pub ext4_writer: crate::config::Ext4Writer,
    pub layout: AssembleReport,
}

#[derive(Debug, Serialize)]
pub struct FilesReport {
    /// Files habuild rendered or added to the root filesystem.
    pub root: Vec<RenderedFile>,
    /// Every file of the boot partition.
    pub boot: Vec<RenderedFile>,
}

/// `<node>.json` as its readers see it: only what they use.
#[derive(Debug, Deserialize)]
pub struct NodeJson {
    pub node: String,
    pub role: String,
    pub board: String,
    pub image: ImageJson,
    pub files: FilesJson,
    /// Absent on directors.
    #[serde(default)]
    pub kubernetes: Option<KubernetesJson>,
}

#[derive(Debug, Deserialize)]
pub struct KubernetesJson {
    /// False for an image built with `--without-kubernetes`.
    pub packages_included: bool,
}

impl NodeJson {
    /// The raw image in `out_dir`, for readers that need random access
    /// (the QEMU tiers boot sparse copies of it); a compressed one is
    /// refused with what to do.
    pub fn raw_image(&self, out_dir: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
        let path = out_dir.join(&self.image.file);
        let plain = super::compression::strip_suffix(&path);
        anyhow::ensure!(
            plain == path,
            "{} is compressed; the QEMU tiers boot the raw image: build it without --compress, or decompress it beside its .bmap (zstd -d / xz -dk)",
            path.display()
        );
        Ok(path)
    }
}

#[derive(Debug, Deserialize)]
pub struct ImageJson {
    pub file: String,
    pub size: u64,
    /// "mbr" or "gpt".
    pub partition_table: String,
    pub layout: LayoutJson,
}

#[derive(Debug, Deserialize)]
pub struct LayoutJson {
    /// GPT disk GUID, or MBR signature as `0x1234abcd`.
    #[serde(default)]
    pub disk_id: String,
    pub partitions: Vec<PartitionSpan>,
}

/// One partition as `<node>.json` records it (`image.layout.partitions`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PartitionSpan {
    pub label: String,
    /// "boot", "esp" or "root".
    pub role: String,
    pub start: u64,
    pub size: u64,
    /// PARTUUID as Linux shows it (GPT GUID, or MBR `<signature>-<index>`).
    #[serde(default)]
    pub part_uuid: String,
}

#[derive(Debug, Deserialize)]
pub struct FilesJson {
    pub root: Vec<FileJson>,
}

#[derive(Debug, Deserialize)]
pub struct FileJson {
    pub path: String,
    pub sha256: String,
}

impl NodeJson {
    /// The partition of `role` ("boot", "esp" or "root").
    pub fn partition(&self, role: &str) -> Result<&PartitionSpan> {
        self.image
            .layout
            .partitions
            .iter()
            .find(|p| p.role == role)
            .with_context(|| format!("{}.json lists no {role} partition", self.node))
    }
}

/// The image facts `<node>.json` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLayout {
    pub size: u64,
    /// "mbr" or "gpt".
    pub table: String,
    /// GPT disk GUID, or MBR signature as `0x1234abcd`.
    pub disk_id: String,
    pub partitions: Vec<PartitionSpan>,
}

/// Parses the image section of a `<node>.json`.
pub fn parse_layout(json: &str) -> Result<ImageLayout> {
    #[derive(Deserialize)]
    struct ImageOnly {
        image: ImageJson,
    }
    let r: ImageOnly = serde_json::from_str(json).context("reading image.layout of <node>.json")?;
    Ok(ImageLayout {
        size: r.image.size,
        table: r.image.partition_table,
        disk_id: r.image.layout.disk_id,
        partitions: r.image.layout.partitions,
    })
}

pub fn read_layout(json: &Path) -> Result<ImageLayout> {
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    parse_layout(&text).with_context(|| format!("parsing {}", json.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_read_from_the_node_report() {
        let json = r#"{"node":"n","image":{"file":"n.img","size":100,"partition_table":"gpt",
            "layout":{"disk_id":"x","partitions":[{"label":"ESP","role":"esp","start":1,"size":2,
            "part_uuid":"u","fs_id":"f"}]}}}"#;
        let l = parse_layout(json).unwrap();
        assert_eq!((l.size, l.table.as_str()), (100, "gpt"));
        assert_eq!(l.partitions[0].label, "ESP");
    }
}

//! manifest + board + distro → one build plan per node. Pure: every input
//! that needs I/O (the host's mirror, file contents) is resolved before.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};
use serde::Serialize;

use crate::config::board::{Arch, PartitionRole, PartitionTable};
use crate::config::{Board, Cluster, Distro, Node, Role};
use crate::debian::sources::AptSource;

/// Where kubeadm, kubelet, kubectl and CRI-O come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum KubernetesSource {
    /// The upstream pkgs.k8s.io apt repositories, verified with `keyring`.
    Upstream { keyring: PathBuf },
    /// A directory of .deb files (air-gapped sites); each file's sha256 is
    /// recorded in the node's content manifest.
    Bundle { dir: PathBuf, debs: Vec<PathBuf> },
    /// Explicitly without the packages: their configuration is still baked in.
    Without,
}

/// The boot partition of a disk, with its typed role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootPartition {
    /// The partition's and its FAT volume's label.
    pub label: String,
    pub role: PartitionRole,
    /// Bytes.
    pub size: u64,
}

/// Everything the bootstrapper's result depends on; its hash keys the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BaseSpec {
    pub distro: String,
    pub arch: Arch,
    pub sources: Vec<AptSource>,
    /// Sorted and deduplicated, so equal sets give equal keys.
    pub packages: Vec<String>,
    /// Local .deb files installed with the packages (offline bundle).
    pub local_debs: Vec<PathBuf>,
}

/// How the disk is laid out: decided here, from the board and the user's
/// options; `disk` only places it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskSpec {
    pub table: PartitionTable,
    /// Picks the GPT root partition type.
    pub arch: Arch,
    /// The first partition: the firmware's or the EFI system partition.
    pub boot: BootPartition,
    /// The root partition's and filesystem's label; it takes the rest.
    pub root_label: String,
    /// None: just big enough for the root filesystem plus headroom.
    pub image_size: Option<u64>,
    pub power_of_two: bool,
    /// What writes the root filesystem.
    pub ext4_writer: crate::config::Ext4Writer,
}

#[derive(Debug, Clone)]
pub struct NodePlan {
    pub cluster: Cluster,
    pub node: Node,
    pub board: Board,
    pub distro: Distro,
    pub base: BaseSpec,
    pub kubernetes: KubernetesSource,
    /// Overlay trees applied in order onto the root filesystem.
    pub overlays: Vec<PathBuf>,
    /// Template tree rendered onto the boot partition.
    pub boot_overlay: PathBuf,
    pub disk: DiskSpec,
    pub source_date_epoch: i64,
}

/// Inputs decided by the user or resolved from the host before planning.
#[derive(Debug, Clone)]
pub struct PlanInputs {
    pub project_root: PathBuf,
    /// Archive URL for the distro (the host's Debian mirror, a flag, or the profile's).
    pub mirror: String,
    pub kubernetes: KubernetesSource,
    pub partition_table: Option<PartitionTable>,
    pub image_size: Option<u64>,
    pub ext4_writer: crate::config::Ext4Writer,
    pub source_date_epoch: i64,
}

pub fn pkgs_k8s_io_sources(cluster: &Cluster, keyring: &std::path::Path) -> Vec<AptSource> {
    let minor = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
    vec![
        AptSource {
            uri: format!(
                "https://pkgs.k8s.io/core:/stable:/v{}/deb/",
                minor(&cluster.kubernetes_version)
            ),
            suites: vec!["/".into()],
            components: vec![],
            signed_by: keyring.to_path_buf(),
        },
        AptSource {
            uri: format!(
                "https://pkgs.k8s.io/addons:/cri-o:/stable:/v{}/deb/",
                cluster.crio_version
            ),
            suites: vec!["/".into()],
            components: vec![],
            signed_by: keyring.to_path_buf(),
        },
    ]
}

pub fn plan_node(
    cluster: &Cluster,
    node: &Node,
    board: &Board,
    distro: &Distro,
    inputs: &PlanInputs,
) -> Result<NodePlan> {
    let board_distro = board.for_distro(&distro.name).ok_or_else(|| {
        anyhow!(
            "board {} has no support for distro {} (its file lists: {})",
            board.name,
            distro.name,
            board.distro.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    let table = inputs.partition_table.unwrap_or(board.partition_table);
    if !board.partition_tables.contains(&table) {
        bail!(
            "board {} cannot boot from a {table:?} partition table",
            board.name
        );
    }
    let role = node.role.as_str();

    let mut packages = distro.packages_for(role);
    packages.extend(board_distro.packages.iter().cloned());
    let mut sources = vec![AptSource {
        uri: inputs.mirror.clone(),
        suites: std::iter::once(distro.suite.clone())
            .chain(distro.extra_suites.iter().cloned())
            .collect(),
        components: distro.components.clone(),
        signed_by: PathBuf::from(&distro.keyring),
    }];
    let mut local_debs = Vec::new();
    if node.role == Role::ControlPlane {
        match &inputs.kubernetes {
            KubernetesSource::Upstream { keyring } => {
                sources.extend(pkgs_k8s_io_sources(cluster, keyring));
                // pkgs.k8s.io publishes every release with the Debian revision "-1.1";
                // CRI-O's repository carries a single minor version.
                for p in ["kubeadm", "kubelet", "kubectl"] {
                    packages.push(format!("{p}={}-1.1", cluster.kubernetes_version));
                }
                packages.push("cri-o".into());
            }
            KubernetesSource::Bundle { debs, .. } => local_debs.extend(debs.iter().cloned()),
            KubernetesSource::Without => {}
        }
    }
    packages.sort();
    packages.dedup();

    let root = &inputs.project_root;
    let mut overlays = vec![root.join("overlays/common")];
    overlays.push(root.join("overlays").join(role));

    Ok(NodePlan {
        cluster: cluster.clone(),
        node: node.clone(),
        board: board.clone(),
        distro: distro.clone(),
        base: BaseSpec {
            distro: distro.name.clone(),
            arch: board.arch,
            sources,
            packages,
            local_debs,
        },
        kubernetes: if node.role == Role::ControlPlane {
            inputs.kubernetes.clone()
        } else {
            KubernetesSource::Without
        },
        overlays,
        boot_overlay: root.join("boards").join(&board.boot_overlay),
        disk: DiskSpec {
            table,
            arch: board.arch,
            boot: BootPartition {
                label: board.boot_label.clone(),
                role: board.boot_role,
                size: board.boot_size_mib << 20,
            },
            root_label: board.root_label.clone(),
            image_size: inputs.image_size,
            power_of_two: board.power_of_two_size,
            ext4_writer: inputs.ext4_writer,
        },
        source_date_epoch: inputs.source_date_epoch,
    })
}

//! Options shared by `habuild image` and `habuild lock`: which manifest,
//! distro profile and package sources the images are planned from.

use std::path::PathBuf;

use clap::Args;

use crate::config::Project;
use crate::pipeline::{KubernetesChoice, PlanRequest, Selection};

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Cluster manifest (default: manifests/seed.toml, the seed's cluster).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Distro profile, overriding the manifest's `cluster.distro`.
    #[arg(long)]
    pub distro: Option<String>,
    /// Archive URL (default: the host's Debian mirror for Debian, the profile's archive otherwise).
    #[arg(long, env = "HABUILD_DEBIAN_MIRROR")]
    pub mirror: Option<String>,
    /// Offline bundle: a directory of .deb files with kubeadm, kubelet, kubectl and CRI-O.
    #[arg(long, value_name = "DIR")]
    pub k8s_bundle: Option<PathBuf>,
    /// Keyring that verifies the pkgs.k8s.io repositories.
    #[arg(long, value_name = "FILE")]
    pub k8s_keyring: Option<PathBuf>,
    /// Build control planes without the Kubernetes and CRI-O packages (their configuration is still baked in).
    #[arg(long)]
    pub without_kubernetes: bool,
}

impl SourceArgs {
    /// The plan request for `selection`, with the board's disk defaults and
    /// epoch 0 (callers that make disks override them).
    pub fn plan_request(&self, project: Project, selection: Selection) -> PlanRequest {
        PlanRequest {
            project,
            manifest: self.manifest.clone(),
            selection,
            board: None,
            distro: self.distro.clone(),
            mirror: self.mirror.clone(),
            kubernetes: KubernetesChoice {
                bundle: self.k8s_bundle.clone(),
                keyring: self.k8s_keyring.clone(),
                without: self.without_kubernetes,
            },
            partition_table: None,
            image_size: None,
            ext4_writer: Default::default(),
            source_date_epoch: 0,
            ssh_keys: Vec::new(),
        }
    }
}

//! Cluster secrets and PKI: the CAs, service-account key pair and bootstrap
//! token every control plane of one cluster shares, created once by
//! `habuild secrets init` and read by every build.
//!
//! Pure except [`store`] (the secrets file) and [`stage::install`] (writing
//! into a staged root tree). Secrets never reach logs, errors or `Debug`
//! output: problems name the file and key, never the value.

pub mod cert;
pub mod generate;
pub mod kubeconfig;
pub mod secrets;
pub mod stage;
pub mod store;
pub mod token;

#[cfg(test)]
mod kubeadm_tests;
#[cfg(test)]
mod tests;

pub use secrets::ClusterSecrets;
pub use token::BootstrapToken;

use crate::rootfs::overlay::KubeadmCtx;

/// kubeadm's CRI socket for CRI-O.
pub const CRIO_SOCKET: &str = "unix:///var/run/crio/crio.sock";

/// What the kubeadm configuration templates take from the secrets and the
/// manifest (see `overlays/control-plane/etc/habuild/kubeadm/`).
pub fn kubeadm_ctx(s: &ClusterSecrets, bootstrap_token_ttl: &str) -> KubeadmCtx {
    KubeadmCtx {
        bootstrap_token: s.bootstrap_token.expose().to_string(),
        bootstrap_token_ttl: bootstrap_token_ttl.to_string(),
        ca_cert_hash: s.discovery_hash.clone(),
        cri_socket: CRIO_SOCKET.to_string(),
    }
}

/// The kubeadm part of a node's template context: control planes only.
pub fn kubeadm_context(plan: &crate::plan::NodePlan, s: &ClusterSecrets) -> Option<KubeadmCtx> {
    (plan.node.role == crate::config::Role::ControlPlane)
        .then(|| kubeadm_ctx(s, &plan.cluster.bootstrap_token_ttl))
}

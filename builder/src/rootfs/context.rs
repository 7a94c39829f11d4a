//! What templates see, in one place: the context of one node, built from
//! its plan (pure), and the Handlebars rendering that uses it.
//!
//! The validated manifest's sections are embedded as they are, under the
//! manifest's own names (`cluster`, `network`, `vip`, `ssh`,
//! `loadbalancer`, `node`), and the node's board file as `board`; only
//! what no configuration holds is computed here: whether the node runs
//! `kubeadm init`, each director's initial VRRP state and peers, the LAN
//! NIC's name, and kubeadm's secrets (filled in by the pipeline from the
//! cluster's secrets file: the plan holds none). A new manifest key is a
//! field of its section's type (`config::manifest`), its check there, and
//! its use in a template; nothing here changes.

use anyhow::{bail, Context as _, Result};
use handlebars::{
    Context as HbContext, Handlebars, Helper, HelperResult, Output,
    RenderContext as HbRenderContext, RenderErrorReason,
};
use serde::Serialize;

use crate::config::manifest::{LoadBalancer, Network, Ssh, Tuning, Vip};
use crate::config::{Board, Cluster, Node, Role};
use crate::plan::{KubernetesSource, NodePlan};

/// The name a director's LAN NIC gets in its image (a systemd .link file
/// renames it), so keepalived.conf and the .network file do not depend on
/// how the kernel or udev would name the NIC of a particular machine (the
/// seed's PC called it eno1; a QEMU guest has enp0s2 or ens3).
pub const DIRECTOR_LAN: &str = "lan0";

/// kubeadm's CRI socket for CRI-O.
pub const CRIO_SOCKET: &str = "unix:///var/run/crio/crio.sock";

/// Everything a template may refer to, for one node of one cluster.
#[derive(Serialize, Clone, Debug)]
pub struct RenderContext<'a> {
    /// `[cluster]`: name, distro, versions, pod and service subnets,
    /// image_repository, bootstrap_token_ttl, ca_fingerprint.
    pub cluster: &'a Cluster,
    /// `[network]`: prefix_length, gateway, dns.
    pub network: &'a Network,
    /// `[vip]`: address, port.
    pub vip: &'a Vip,
    /// `[ssh]`: authorized_keys.
    pub ssh: &'a Ssh,
    /// `[kubeadm]` timeouts, `[etcd]` tuning and `[addons]`, as validated.
    pub tuning: &'a Tuning,
    /// `[loadbalancer]`, and every director with its initial VRRP state.
    pub loadbalancer: LoadBalancerCtx<'a>,
    /// This node's `[[nodes]]` entry, and whether it runs `kubeadm init`.
    pub node: NodeCtx<'a>,
    /// Control planes in manifest order; the first is the init node.
    pub control_planes: Vec<&'a Node>,
    /// The node's board file (`boards/<board>.toml`): boot_mount,
    /// boot_label, root_label, console, arch, ...
    pub board: &'a Board,
    pub boot: BootFiles,
    /// kubeadm's configuration of a control plane (bootstrap token, CA
    /// hash: from the cluster's secrets file); `None` on directors.
    pub kubeadm: Option<KubeadmCtx>,
    /// False when the image is built without kubeadm/kubelet/CRI-O packages.
    pub kubernetes_packages: bool,
    /// The NIC a director's network config and keepalived refer to by name;
    /// `None` on control planes (their .network matches kernel names).
    pub lan: Option<LanCtx>,
    /// This director's VRRP role; `None` on control planes.
    pub vrrp: Option<VrrpCtx>,
}

/// A `[[nodes]]` entry and its place in the cluster.
#[derive(Serialize, Clone, Debug)]
pub struct NodeCtx<'a> {
    #[serde(flatten)]
    pub node: &'a Node,
    /// The first control plane listed: it runs `kubeadm init`.
    pub is_init_node: bool,
}

/// Kernel and initramfs names on the boot partition (the board files'
/// `boot_files` copy them there under these names).
#[derive(Serialize, Clone, Debug)]
pub struct BootFiles {
    pub kernel_file: &'static str,
    pub initrd_file: &'static str,
}

/// What the kubeadm InitConfiguration / JoinConfiguration templates need
/// beyond the manifest. `bootstrap_token` is a secret: the files that
/// render it are 0600 (see `overlay::file_mode`).
#[derive(Serialize, Clone)]
pub struct KubeadmCtx {
    /// `[a-z0-9]{6}.[a-z0-9]{16}`
    pub bootstrap_token: String,
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo.
    pub ca_cert_hash: String,
    /// e.g. "unix:///var/run/crio/crio.sock"
    pub cri_socket: &'static str,
}

impl KubeadmCtx {
    /// From the cluster's secrets: the bootstrap token and the discovery
    /// hash of its CA.
    pub fn new(bootstrap_token: &str, ca_cert_hash: &str) -> KubeadmCtx {
        KubeadmCtx {
            bootstrap_token: bootstrap_token.to_string(),
            ca_cert_hash: ca_cert_hash.to_string(),
            cri_socket: CRIO_SOCKET,
        }
    }
}

impl std::fmt::Debug for KubeadmCtx {
    /// Without the token: a context may be logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeadmCtx")
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field("cri_socket", &self.cri_socket)
            .finish_non_exhaustive()
    }
}

/// The manifest's `[loadbalancer]` plus every director.
#[derive(Serialize, Clone, Debug)]
pub struct LoadBalancerCtx<'a> {
    #[serde(flatten)]
    pub settings: &'a LoadBalancer,
    /// Directors in manifest order; the first is the VRRP master.
    pub directors: Vec<DirectorCtx<'a>>,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct DirectorCtx<'a> {
    #[serde(flatten)]
    pub node: &'a Node,
    /// "MASTER" or "BACKUP": the initial VRRP state.
    pub state: &'static str,
}

/// A director's LAN NIC, named by a systemd .link file.
#[derive(Serialize, Clone, Debug)]
pub struct LanCtx {
    /// e.g. "lan0"
    pub name: &'static str,
    /// The MAC the .link file matches (lower-case); `None`: the fallback
    /// match on the one physical Ethernet NIC.
    pub mac: Option<String>,
}

/// This director's part in VRRP.
#[derive(Serialize, Clone, Debug)]
pub struct VrrpCtx {
    /// "MASTER" or "BACKUP"
    pub state: &'static str,
    pub priority: u8,
    /// The other directors' addresses, where adverts go by unicast; empty
    /// with a single director (multicast, as in the seed).
    pub unicast_peers: Vec<String>,
}

/// The context of `plan`'s node; `kubeadm` comes from the cluster's
/// secrets (control planes only).
pub fn render_context(plan: &NodePlan, kubeadm: Option<KubeadmCtx>) -> RenderContext<'_> {
    let c = &plan.cluster;
    let node = &plan.node;
    RenderContext {
        cluster: c,
        network: &c.network,
        vip: &c.vip,
        ssh: &c.ssh,
        tuning: &c.tuning,
        loadbalancer: LoadBalancerCtx {
            settings: &c.loadbalancer,
            directors: directors(c),
        },
        node: NodeCtx {
            node,
            is_init_node: node.role == Role::ControlPlane && c.init_node().name == node.name,
        },
        control_planes: c.control_planes().collect(),
        board: &plan.board,
        boot: BootFiles {
            kernel_file: "vmlinuz",
            initrd_file: "initrd.img",
        },
        kubeadm: kubeadm.filter(|_| node.role == Role::ControlPlane),
        kubernetes_packages: !matches!(plan.kubernetes, KubernetesSource::Without),
        lan: (node.role == Role::Director).then(|| LanCtx {
            name: DIRECTOR_LAN,
            mac: node.mac.clone(),
        }),
        vrrp: vrrp(c, node),
    }
}

/// The first director listed starts as VRRP master; the others, with the
/// lower priorities validation guarantees, as backups.
fn directors(c: &Cluster) -> Vec<DirectorCtx<'_>> {
    c.directors()
        .enumerate()
        .map(|(i, node)| DirectorCtx {
            node,
            state: if i == 0 { "MASTER" } else { "BACKUP" },
        })
        .collect()
}

fn vrrp(c: &Cluster, node: &Node) -> Option<VrrpCtx> {
    if node.role != Role::Director {
        return None;
    }
    let me = directors(c)
        .into_iter()
        .find(|d| d.node.name == node.name)?;
    Some(VrrpCtx {
        state: me.state,
        priority: me.node.priority,
        unicast_peers: c
            .directors()
            .filter(|d| d.name != node.name)
            .map(|d| d.address.to_string())
            .collect(),
    })
}

/// Renders one template with the node's context.
///
/// Strict mode: a variable missing from the context is an error naming the
/// template, so a typo cannot silently produce an empty config value.
/// Handlebars' strict mode covers `{{value}}` and `{{#each}}` but not
/// `{{#if}}`, where a missing path is just false: conditionals need a test
/// with the value set (see `pause_image_follows_image_repository`). No
/// HTML escaping: these are config files and scripts, where `=` or `'`
/// must come out as written.
pub fn render_template(name: &str, template: &str, ctx: &RenderContext) -> Result<String> {
    let mut hb = registry();
    hb.register_template_string(name, template)
        .with_context(|| format!("parsing template {name}"))?;
    hb.render(name, ctx)
        .with_context(|| format!("rendering template {name}"))
}

/// The pause (pod sandbox) image version kubeadm uses for a Kubernetes
/// release: `PauseVersion` in kubeadm's `cmd/kubeadm/app/constants`. CRI-O
/// must run the same image when pulls go to a private registry, otherwise
/// the sandbox image kubeadm pre-pulled there is not the one CRI-O asks for.
pub fn pause_version(kubernetes_version: &str) -> Result<&'static str> {
    let v = kubernetes_version.trim_start_matches('v');
    let mut parts = v.split('.');
    let (major, minor) = (parts.next(), parts.next());
    let minor: u32 = match (major, minor.map(str::parse)) {
        (Some("1"), Some(Ok(minor))) => minor,
        _ => {
            bail!("cannot read Kubernetes version {kubernetes_version:?} (expected 1.MINOR.PATCH)")
        }
    };
    match minor {
        // kubeadm's constants.PauseVersion of each release.
        31..=33 => Ok("3.10"),
        34..=35 => Ok("3.10.1"),
        36..=37 => Ok("3.10.2"),
        _ => bail!(
            "no known pause image version for Kubernetes {kubernetes_version}: \
             add kubeadm's PauseVersion for 1.{minor} to rootfs::context::pause_version"
        ),
    }
}

/// The template registry every render uses (see [`render_template`]).
fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("pause_version", Box::new(pause_version_helper));
    hb
}

/// `{{pause_version cluster.kubernetes_version}}`: see [`pause_version`].
fn pause_version_helper(
    h: &Helper,
    _: &Handlebars,
    _: &HbContext,
    _: &mut HbRenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let version = h
        .param(0)
        .and_then(|p| p.value().as_str())
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("pause_version", 0))?;
    let pause = pause_version(version).map_err(|e| RenderErrorReason::Other(format!("{e:#}")))?;
    out.write(pause)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_versions() {
        assert_eq!(pause_version("1.31.4").unwrap(), "3.10");
        assert_eq!(pause_version("v1.31.0").unwrap(), "3.10");
        assert_eq!(pause_version("1.33.1").unwrap(), "3.10");
        assert_eq!(pause_version("1.35.4").unwrap(), "3.10.1");
        assert_eq!(pause_version("1.36.3").unwrap(), "3.10.2");
        assert!(pause_version("1.18.2").is_err());
        assert!(pause_version("1.38.0").is_err());
        assert!(pause_version("latest").is_err());
    }
}

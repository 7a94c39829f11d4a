//! The template context of one node, from its plan (pure).

use crate::config::{Node, Role};
use crate::plan::{KubernetesSource, NodePlan};
use crate::rootfs::render::{BootCtx, ClusterCtx, NodeCtx, PeerCtx, RenderContext, VipCtx};

pub fn render_context(plan: &NodePlan) -> RenderContext {
    let c = &plan.cluster;
    let peer = |n: &Node| PeerCtx {
        name: n.name.clone(),
        address: n.address.to_string(),
    };
    RenderContext {
        cluster: ClusterCtx {
            name: c.name.clone(),
            kubernetes_version: c.kubernetes_version.clone(),
            crio_version: c.crio_version.clone(),
            pod_subnet: c.pod_subnet.to_string(),
            service_subnet: c.service_subnet.to_string(),
            image_repository: c.image_repository.clone(),
            control_plane_endpoint: format!("{}:{}", c.vip, c.api_port),
        },
        vip: VipCtx {
            address: c.vip.to_string(),
            port: c.api_port,
        },
        node: NodeCtx {
            name: plan.node.name.clone(),
            role: plan.node.role.as_str().to_string(),
            address: plan.node.address.to_string(),
            prefix_len: c.subnet.prefix,
            gateway: c.gateway.to_string(),
            dns: c.dns.iter().map(|d| d.to_string()).collect(),
            arch: plan.board.arch.debian_name().to_string(),
            board: plan.board.name.clone(),
            is_init_node: plan.node.role == Role::ControlPlane
                && c.init_node().name == plan.node.name,
        },
        // Filled from the cluster's secrets by the pipeline for control
        // planes (`pki::kubeadm_context`): the plan holds no secret.
        kubeadm: None,
        ssh_authorized_keys: c.ssh_authorized_keys.clone(),
        control_planes: c.control_planes().map(peer).collect(),
        director: peer(
            c.directors()
                .next()
                .expect("validation guarantees a director"),
        ),
        boot: BootCtx {
            mount: plan.board.boot_mount.clone(),
            fs_label: plan.board.boot_label.clone(),
            root_label: plan.board.root_label.clone(),
            console: plan.board.console.clone(),
            kernel_file: "vmlinuz".into(),
            initrd_file: "initrd.img".into(),
        },
        kubernetes_packages: !matches!(plan.kubernetes, KubernetesSource::Without),
    }
}

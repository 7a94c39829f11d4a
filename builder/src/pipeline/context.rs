//! The template context of one node, from its plan (pure).

use crate::config::{Cluster, Node, Role};
use crate::plan::{KubernetesSource, NodePlan};
use crate::rootfs::render::{
    BootCtx, ClusterCtx, DirectorCtx, LanCtx, LoadBalancerCtx, NodeCtx, PeerCtx, RenderContext,
    VipCtx, VrrpCtx,
};

/// The name a director's LAN NIC gets in its image (a systemd .link file
/// renames it), so keepalived.conf and the .network file do not depend on
/// how the kernel or udev would name the NIC of a particular machine (the
/// seed's PC called it eno1; a QEMU guest has enp0s2 or ens3).
pub const DIRECTOR_LAN: &str = "lan0";

pub fn render_context(plan: &NodePlan) -> RenderContext {
    let c = &plan.cluster;
    let peer = |n: &Node| PeerCtx {
        name: n.name.clone(),
        address: n.address.to_string(),
    };
    RenderContext {
        tuning: c.tuning.clone(),
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
        loadbalancer: loadbalancer(c),
        lan: (plan.node.role == Role::Director).then(|| LanCtx {
            name: DIRECTOR_LAN.into(),
            mac: plan.node.mac.clone(),
        }),
        vrrp: vrrp(c, &plan.node),
    }
}

/// The first director listed starts as VRRP master; the others, with the
/// lower priorities validation guarantees, as backups.
fn loadbalancer(c: &Cluster) -> LoadBalancerCtx {
    let lb = &c.loadbalancer;
    LoadBalancerCtx {
        virtual_router_id: lb.virtual_router_id,
        advert_int: lb.advert_int,
        lvs_scheduler: lb.lvs_scheduler.clone(),
        lvs_method: lb.lvs_method.clone(),
        weight: lb.weight,
        delay_loop: lb.delay_loop,
        connect_timeout: lb.connect_timeout,
        retry: lb.retry,
        delay_before_retry: lb.delay_before_retry,
        directors: c
            .directors()
            .enumerate()
            .map(|(i, d)| DirectorCtx {
                name: d.name.clone(),
                address: d.address.to_string(),
                state: if i == 0 { "MASTER" } else { "BACKUP" }.into(),
                priority: d.priority,
            })
            .collect(),
    }
}

fn vrrp(c: &Cluster, node: &Node) -> Option<VrrpCtx> {
    if node.role != Role::Director {
        return None;
    }
    let me = loadbalancer(c)
        .directors
        .into_iter()
        .find(|d| d.name == node.name)?;
    Some(VrrpCtx {
        state: me.state,
        priority: me.priority,
        unicast_peers: c
            .directors()
            .filter(|d| d.name != node.name)
            .map(|d| d.address.to_string())
            .collect(),
    })
}

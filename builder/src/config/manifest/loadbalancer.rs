//! `[loadbalancer]`: keepalived's VRRP instance and LVS virtual server.
//!
//! One type from the file to the templates: read with the seed's values as
//! defaults, checked in place, kept in `Cluster` and serialised into the
//! template context as it is (`loadbalancer.*`, see `rootfs::context`).
//! A new keepalived option is a field here, its check below, and its use
//! in `overlays/director/etc/keepalived/keepalived.conf.hbs`.

use serde::{Deserialize, Serialize};

use super::Problems;

/// keepalived / LVS settings; the defaults are the seed's keepalived.conf.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoadBalancer {
    /// VRRP router id, 1..=255 (wider here so that 256 is a clear problem,
    /// not a parse error).
    pub virtual_router_id: u16,
    pub advert_int: u32,
    /// IPVS scheduler, e.g. "wrr" (also names the module `ip_vs_wrr`).
    pub lvs_scheduler: String,
    /// "DR": the control planes are direct-routing real servers.
    pub lvs_method: String,
    pub weight: u32,
    pub delay_loop: u32,
    pub connect_timeout: u32,
    pub retry: u32,
    pub delay_before_retry: u32,
}

impl Default for LoadBalancer {
    fn default() -> Self {
        LoadBalancer {
            virtual_router_id: 254,
            advert_int: 1,
            lvs_scheduler: "wrr".into(),
            lvs_method: "DR".into(),
            weight: 10,
            delay_loop: 6,
            connect_timeout: 10,
            retry: 3,
            delay_before_retry: 3,
        }
    }
}

/// IPVS schedulers the kernel ships (`ip_vs_<name>`).
const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
];

pub(super) fn check(lb: &LoadBalancer, p: &mut Problems) {
    if !(1..=255).contains(&lb.virtual_router_id) {
        p.add(
            "loadbalancer.virtual_router_id",
            format!("{} is outside 1..=255 (VRRP)", lb.virtual_router_id),
        );
    }
    if lb.advert_int == 0 {
        p.add("loadbalancer.advert_int", "must be at least 1 second");
    }
    if !SCHEDULERS.contains(&lb.lvs_scheduler.as_str()) {
        p.add(
            "loadbalancer.lvs_scheduler",
            format!(
                "unknown LVS scheduler {:?}; known: {}",
                lb.lvs_scheduler,
                SCHEDULERS.join(", ")
            ),
        );
    }
    if lb.lvs_method != "DR" {
        p.add("loadbalancer.lvs_method", format!("{:?} is not supported: the control planes are set up as direct-routing real servers (\"DR\")", lb.lvs_method));
    }
    for (key, v) in [
        ("loadbalancer.delay_loop", lb.delay_loop),
        ("loadbalancer.connect_timeout", lb.connect_timeout),
    ] {
        if v == 0 {
            p.add(key, "must be at least 1 second");
        }
    }
}

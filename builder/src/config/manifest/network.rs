//! `[network]` and `[vip]`: the nodes' LAN (prefix, gateway, DNS) and the
//! API server's virtual IP. The VIP and `prefix_length` give the nodes'
//! subnet, which every address of the manifest must lie in.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::Problems;
use crate::config::net::Ipv4Cidr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    pub prefix_length: u8,
    pub gateway: String,
    pub dns: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVip {
    pub address: String,
    #[serde(default = "default_api_port")]
    pub port: u16,
}

fn default_api_port() -> u16 {
    6443
}

/// `[network]`, validated; templates see it as `network.*`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Network {
    pub prefix_length: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
}

/// `[vip]`, validated; templates see it as `vip.*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Vip {
    pub address: Ipv4Addr,
    pub port: u16,
}

/// The addresses of `[network]` and `[vip]`; None where a problem was recorded.
pub(super) struct Parsed {
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub vip: Option<Ipv4Addr>,
    /// The nodes' subnet: the VIP's network of `prefix_length` bits.
    pub subnet: Option<Ipv4Cidr>,
}

pub(super) fn check(n: &RawNetwork, v: &RawVip, p: &mut Problems) -> Parsed {
    if !(8..=30).contains(&n.prefix_length) {
        p.add(
            "network.prefix_length",
            format!("{} is outside 8..=30", n.prefix_length),
        );
    }
    let gateway = p.ipv4("network.gateway", &n.gateway);
    let dns: Vec<Ipv4Addr> = n
        .dns
        .iter()
        .enumerate()
        .filter_map(|(i, d)| p.ipv4(&format!("network.dns[{i}]"), d))
        .collect();
    if n.dns.is_empty() {
        p.add(
            "network.dns",
            "at least one DNS server is needed (kubeadm pulls images by name)",
        );
    }

    let vip = p.ipv4("vip.address", &v.address);
    if v.port == 0 {
        p.add("vip.port", "0 is not a usable port");
    }
    // No subnet from a prefix length out of range (already reported): a
    // clamped one would blame addresses for a prefix nobody wrote.
    let subnet = vip
        .filter(|_| (8..=30).contains(&n.prefix_length))
        .map(|v| Ipv4Cidr::containing(v, n.prefix_length));
    if let Some(v) = vip {
        in_subnet(p, "vip.address", v, subnet, vip);
    }
    if let Some(g) = gateway {
        in_subnet(p, "network.gateway", g, subnet, vip);
        if let Some(e) = crate::config::checks::gateway(g, vip) {
            p.add("network.gateway", e);
        }
    }
    Parsed {
        gateway,
        dns,
        vip,
        subnet,
    }
}

/// `a` (at `key`) must be a host address of the nodes' subnet.
/// `vip` is the VIP as given, which the message shows (the subnet's own
/// address is the network's, not the VIP).
pub(super) fn in_subnet(
    p: &mut Problems,
    key: &str,
    a: Ipv4Addr,
    subnet: Option<Ipv4Cidr>,
    vip: Option<Ipv4Addr>,
) {
    if let Some(s) = subnet {
        if !s.contains(a) {
            p.add(
                key,
                format!(
                    "{a} is outside the cluster subnet {s} (VIP {} with prefix /{})",
                    vip.unwrap_or(s.addr),
                    s.prefix
                ),
            );
        } else if a == s.network() || a == s.broadcast() {
            p.add(
                key,
                format!("{a} is the network or broadcast address of {s}"),
            );
        }
    }
}

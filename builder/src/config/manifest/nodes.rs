//! `[[nodes]]`: every machine of the cluster, its role, board and address
//! (and, for directors, its VRRP priority and LAN NIC). The first control
//! plane listed runs `kubeadm init`; the first director is the VRRP master.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::network::in_subnet;
use super::values::{is_hostname, parse_mac};
use super::{Known, Problems};
use crate::config::net::Ipv4Cidr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: String,
    pub role: Role,
    pub board: String,
    pub address: String,
    /// VRRP priority, directors only (the seed's director has 100).
    pub priority: Option<u8>,
    /// MAC address of the director's LAN NIC ("52:54:00:12:34:56"): the
    /// image names that NIC `lan0` by it. Directors only; optional.
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    ControlPlane,
    Director,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::Director => "director",
        }
    }
}

/// One `[[nodes]]` entry, validated; templates see this node as `node.*`
/// and the others in `control_planes` and `director`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    pub name: String,
    pub role: Role,
    pub board: String,
    pub address: Ipv4Addr,
    pub priority: u8,
    /// Directors only: the LAN NIC's MAC, lower-case, colon-separated.
    pub mac: Option<String>,
}

/// What the nodes are checked against: addresses already taken by the VIP
/// and the gateway, and the subnet every address must lie in.
pub(super) struct Context {
    pub vip: Option<Ipv4Addr>,
    pub gateway: Option<Ipv4Addr>,
    pub subnet: Option<Ipv4Cidr>,
}

pub(super) fn check(raw: &[RawNode], known: &Known, cx: &Context, p: &mut Problems) -> Vec<Node> {
    let mut nodes = Vec::new();
    let mut seen_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen_addrs: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut seen_macs: BTreeMap<String, String> = BTreeMap::new();
    if let Some(v) = cx.vip {
        seen_addrs.insert(v, "vip.address".into());
    }
    if let Some(g) = cx.gateway {
        seen_addrs.insert(g, "network.gateway".into());
    }
    for (i, rn) in raw.iter().enumerate() {
        let key = |k: &str| format!("nodes[{i}].{k}");
        if !is_hostname(&rn.name) {
            p.add(
                key("name"),
                format!(
                    "{:?} is not a valid hostname (lowercase letters, digits, '-')",
                    rn.name
                ),
            );
        } else if let Some(first) = seen_names.insert(&rn.name, i) {
            p.add(
                key("name"),
                format!("duplicate hostname {:?} (also nodes[{first}])", rn.name),
            );
        }
        if !known.boards.iter().any(|b| b == &rn.board) {
            p.add(
                key("board"),
                format!(
                    "unknown board {:?}; known: {}",
                    rn.board,
                    known.boards.join(", ")
                ),
            );
        }
        let address = p.ipv4(&key("address"), &rn.address);
        if let Some(a) = address {
            in_subnet(p, &key("address"), a, cx.subnet, cx.vip);
            if let Some(other) = seen_addrs.insert(a, key("address")) {
                p.add(
                    key("address"),
                    format!("duplicate address {a} (also {other})"),
                );
            }
        }
        match (rn.role, rn.priority) {
            (Role::ControlPlane, Some(_)) => {
                p.add(key("priority"), "only directors have a VRRP priority")
            }
            (Role::Director, Some(0 | 255)) => {
                p.add(key("priority"), "VRRP priority must be within 1..=254")
            }
            _ => {}
        }
        let mac = rn
            .mac
            .as_deref()
            .and_then(|m| match (rn.role, parse_mac(m)) {
                (Role::ControlPlane, _) => {
                    p.add(
                        key("mac"),
                        "only directors have a `mac` (it names their LAN NIC for keepalived)",
                    );
                    None
                }
                (_, Err(e)) => {
                    p.add(key("mac"), e);
                    None
                }
                (_, Ok(m)) => {
                    if let Some(other) = seen_macs.insert(m.clone(), key("mac")) {
                        p.add(
                            key("mac"),
                            format!("duplicate MAC address {m} (also {other})"),
                        );
                    }
                    Some(m)
                }
            });
        if let Some(address) = address {
            let default_priority = 100u8.saturating_sub(
                10 * nodes
                    .iter()
                    .filter(|n: &&Node| n.role == Role::Director)
                    .count() as u8,
            );
            nodes.push(Node {
                name: rn.name.clone(),
                role: rn.role,
                board: rn.board.clone(),
                address,
                priority: rn.priority.unwrap_or(default_priority),
                mac,
            });
        }
    }
    check_roles(raw, &nodes, p);
    nodes
}

/// At least one control plane and one director; directors listed in
/// decreasing priority (the first is the VRRP master).
fn check_roles(raw: &[RawNode], nodes: &[Node], p: &mut Problems) {
    if !raw.iter().any(|n| n.role == Role::ControlPlane) {
        p.add(
            "nodes",
            "no control plane: at least one node needs role = \"control-plane\"",
        );
    }
    if !raw.iter().any(|n| n.role == Role::Director) {
        p.add("nodes", "no director: at least one node needs role = \"director\" (it holds the VIP and balances the API servers)");
    }
    let directors: Vec<&Node> = nodes.iter().filter(|n| n.role == Role::Director).collect();
    for w in directors.windows(2) {
        if w[1].priority >= w[0].priority {
            let i = raw.iter().position(|n| n.name == w[1].name).unwrap_or(0);
            p.add(format!("nodes[{i}].priority"), format!("{} must be below the priority of {} ({}): the first director listed is the VRRP master", w[1].priority, w[0].name, w[0].priority));
        }
    }
}

//! `habuild status`: what a person wants to know after powering the nodes
//! on, asked the way a client would, with nothing but the manifest and the
//! secrets file: through the VIP, the API server's view of the nodes; each
//! control plane's API server `/readyz`; each etcd member's list and
//! health (a client certificate from the etcd CA); and which real servers
//! answer behind the VIP (each API server's serving certificate names its
//! node's address). [`judge`] turns the observations into problems; the
//! probes are in [`probe`].

pub mod probe;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::config::Cluster;

/// One thing observed, or why it could not be.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Seen<T> {
    Ok(T),
    Failed(String),
}

impl<T> Seen<T> {
    pub fn ok(&self) -> Option<&T> {
        match self {
            Seen::Ok(t) => Some(t),
            Seen::Failed(_) => None,
        }
    }
}

impl<T> From<anyhow::Result<T>> for Seen<T> {
    fn from(r: anyhow::Result<T>) -> Self {
        match r {
            Ok(t) => Seen::Ok(t),
            Err(e) => Seen::Failed(format!("{e:#}")),
        }
    }
}

/// A node as the API server lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiNode {
    pub name: String,
    pub ready: bool,
    pub kubelet_version: String,
}

/// An etcd member as a member reports the cluster's list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EtcdMember {
    pub name: String,
    pub id: String,
    pub is_learner: bool,
    pub client_urls: Vec<String>,
}

/// What one control plane answered directly (its own address).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ControlPlaneSeen {
    pub name: String,
    pub address: Ipv4Addr,
    /// `/readyz` of its API server.
    pub readyz: Seen<String>,
    /// `/health` of its etcd member.
    pub etcd_health: Seen<bool>,
}

/// Everything `habuild status` observed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Observed {
    pub vip: String,
    /// `/readyz` through the VIP.
    pub vip_readyz: Seen<String>,
    /// `/api/v1/nodes` through the VIP.
    pub nodes: Seen<Vec<ApiNode>>,
    pub control_planes: Vec<ControlPlaneSeen>,
    /// The member list, asked of the first member that answers.
    pub etcd_members: Seen<Vec<EtcdMember>>,
    /// Control-plane name → connections through the VIP it answered
    /// (`unknown` for a certificate naming no control plane).
    pub behind_vip: BTreeMap<String, u32>,
    pub vip_connections: u32,
}

/// The verdict: every problem found (none: the control plane is healthy).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verdict {
    pub healthy: bool,
    pub problems: Vec<String>,
}

/// Judges what was observed against the manifest (pure).
pub fn judge(m: &Cluster, o: &Observed) -> Verdict {
    let mut problems = Vec::new();
    let cps: Vec<_> = m.control_planes().collect();
    if let Seen::Failed(e) = &o.vip_readyz {
        problems.push(format!("the API through the VIP {}: {e}", o.vip));
    }
    match &o.nodes {
        Seen::Failed(e) => problems.push(format!("listing nodes through the VIP: {e}")),
        Seen::Ok(nodes) => {
            for cp in &cps {
                match nodes.iter().find(|n| n.name == cp.name) {
                    None => problems.push(format!("{} is not a node of the cluster", cp.name)),
                    Some(n) if !n.ready => problems.push(format!("{} is not Ready", cp.name)),
                    Some(_) => {}
                }
            }
        }
    }
    for cp in &o.control_planes {
        if let Seen::Failed(e) = &cp.readyz {
            problems.push(format!("{}'s API server ({}): {e}", cp.name, cp.address));
        }
        match &cp.etcd_health {
            Seen::Failed(e) => problems.push(format!("{}'s etcd: {e}", cp.name)),
            Seen::Ok(false) => {
                problems.push(format!("{}'s etcd reports itself unhealthy", cp.name))
            }
            Seen::Ok(true) => {}
        }
    }
    match &o.etcd_members {
        Seen::Failed(e) => problems.push(format!("the etcd member list: {e}")),
        Seen::Ok(members) => {
            for cp in &cps {
                match members.iter().find(|mb| mb.name == cp.name) {
                    None => problems.push(format!("{} is not an etcd member", cp.name)),
                    Some(mb) if mb.is_learner => problems.push(format!(
                        "{} is an etcd learner, not a voting member",
                        cp.name
                    )),
                    Some(_) => {}
                }
            }
            for mb in members {
                if !cps.iter().any(|cp| cp.name == mb.name) {
                    problems.push(format!(
                        "etcd member {:?} ({}) is no control plane of the manifest",
                        mb.name, mb.id
                    ));
                }
            }
        }
    }
    for cp in &cps {
        if o.behind_vip.get(&cp.name).copied().unwrap_or(0) == 0 {
            problems.push(format!(
                "{} did not answer behind the VIP ({} connections)",
                cp.name, o.vip_connections
            ));
        }
    }
    Verdict {
        healthy: problems.is_empty(),
        problems,
    }
}

/// The report as text, one line per fact.
pub fn render(m: &Cluster, o: &Observed, v: &Verdict) -> String {
    let mut s = format!("cluster {} through the VIP {}\n", m.name, o.vip);
    let seen = |x: &Seen<String>| match x {
        Seen::Ok(t) => t.clone(),
        Seen::Failed(e) => format!("FAILED: {e}"),
    };
    s.push_str(&format!(
        "  /readyz through the VIP: {}\n",
        seen(&o.vip_readyz)
    ));
    match &o.nodes {
        Seen::Ok(nodes) => {
            for n in nodes {
                s.push_str(&format!(
                    "  node {}: {} (kubelet {})\n",
                    n.name,
                    if n.ready { "Ready" } else { "NotReady" },
                    n.kubelet_version
                ));
            }
        }
        Seen::Failed(e) => s.push_str(&format!("  nodes: FAILED: {e}\n")),
    }
    for cp in &o.control_planes {
        s.push_str(&format!(
            "  {} ({}): API server /readyz {}; etcd {}; answered {} of {} connections through the VIP\n",
            cp.name,
            cp.address,
            seen(&cp.readyz),
            match &cp.etcd_health {
                Seen::Ok(true) => "healthy".to_string(),
                Seen::Ok(false) => "UNHEALTHY".to_string(),
                Seen::Failed(e) => format!("FAILED: {e}"),
            },
            o.behind_vip.get(&cp.name).copied().unwrap_or(0),
            o.vip_connections
        ));
    }
    match &o.etcd_members {
        Seen::Ok(ms) => s.push_str(&format!(
            "  etcd members: {}\n",
            ms.iter()
                .map(|m| format!("{}{}", m.name, if m.is_learner { " (learner)" } else { "" }))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Seen::Failed(e) => s.push_str(&format!("  etcd members: FAILED: {e}\n")),
    }
    if v.healthy {
        s.push_str("healthy\n");
    } else {
        for p in &v.problems {
            s.push_str(&format!("PROBLEM: {p}\n"));
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests;

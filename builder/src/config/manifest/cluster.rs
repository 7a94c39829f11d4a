//! `[cluster]`: the cluster's name, distro profile, versions, pod and
//! service networks, and kubeadm settings. Its keys stay flat on
//! [`Cluster`](super::Cluster), which templates see as `cluster.*`.

use serde::Deserialize;

use super::values::{is_hostname, is_version, parse_sha256_pin, parse_ttl};
use super::{Known, Problems};
use crate::config::net::Ipv4Cidr;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: String,
    #[serde(default = "default_distro")]
    pub distro: String,
    pub kubernetes_version: String,
    pub crio_version: String,
    #[serde(default = "default_pod_subnet")]
    pub pod_subnet: String,
    #[serde(default = "default_service_subnet")]
    pub service_subnet: String,
    /// Where kubeadm pulls control-plane images from (the seed uses a
    /// private registry); unset means kubeadm's default registry.
    pub image_repository: Option<String>,
    /// Lifetime of the bootstrap token `kubeadm init` creates ("24h",
    /// "2h30m"): every other control plane must first boot within it.
    #[serde(default = "default_token_ttl")]
    pub bootstrap_token_ttl: String,
    /// `sha256:<hex>` of the cluster CA certificate, as `habuild secrets
    /// init` prints it: builds refuse a secrets file with another CA.
    pub ca_fingerprint: Option<String>,
}

fn default_distro() -> String {
    "ubuntu-24.04".into()
}
fn default_pod_subnet() -> String {
    "10.88.0.0/16".into()
}
fn default_service_subnet() -> String {
    "10.96.0.0/12".into()
}
fn default_token_ttl() -> String {
    "24h".into()
}

/// The `[cluster]` values that need parsing; None where a problem was recorded.
pub(super) struct Parsed {
    pub pod_subnet: Option<Ipv4Cidr>,
    pub service_subnet: Option<Ipv4Cidr>,
    /// Normalised `sha256:<lower-case hex>`.
    pub ca_fingerprint: Option<String>,
}

pub(super) fn check(c: &RawCluster, known: &Known, p: &mut Problems) -> Parsed {
    if !is_hostname(&c.name) {
        p.add(
            "cluster.name",
            format!(
                "{:?} must be lowercase letters, digits and '-' (it names the output directory)",
                c.name
            ),
        );
    }
    if !known.distros.iter().any(|d| d == &c.distro) {
        p.add(
            "cluster.distro",
            format!(
                "unknown distro {:?}; known: {}",
                c.distro,
                known.distros.join(", ")
            ),
        );
    }
    check_versions(c, p);
    let pod_subnet = p.cidr("cluster.pod_subnet", &c.pod_subnet);
    let service_subnet = p.cidr("cluster.service_subnet", &c.service_subnet);
    if let Some(Err(e)) = c
        .image_repository
        .as_deref()
        .map(crate::config::checks::image_repository)
    {
        p.add("cluster.image_repository", e);
    }

    if let Err(e) = parse_ttl(&c.bootstrap_token_ttl) {
        p.add("cluster.bootstrap_token_ttl", e);
    }
    let ca_fingerprint = c.ca_fingerprint.as_deref().and_then(|f| {
        let pin = parse_sha256_pin(f);
        if pin.is_none() {
            p.add(
                "cluster.ca_fingerprint",
                format!("{f:?} is not \"sha256:<64 hex digits>\" (habuild secrets init prints it)"),
            );
        }
        pin
    });
    Parsed {
        pod_subnet,
        service_subnet,
        ca_fingerprint,
    }
}

fn check_versions(c: &RawCluster, p: &mut Problems) {
    if !is_version(&c.kubernetes_version, 3) {
        p.add(
            "cluster.kubernetes_version",
            format!(
                "{:?} is not a full version like \"1.31.4\"",
                c.kubernetes_version
            ),
        );
    } else if c
        .kubernetes_version
        .split('.')
        .take(2)
        .map(|x| x.parse::<u32>().unwrap_or(0))
        .lt([1, 31])
    {
        // The first-boot configuration uses kubeadm's config API v1beta4.
        p.add(
            "cluster.kubernetes_version",
            format!(
                "{:?} is too old: habuild writes kubeadm's v1beta4 configuration, which kubeadm reads from 1.31 on",
                c.kubernetes_version
            ),
        );
    }
    if !is_version(&c.crio_version, 2) {
        p.add(
            "cluster.crio_version",
            format!("{:?} is not a minor version like \"1.31\"", c.crio_version),
        );
    }
}

/// The pod and service networks overlap neither the nodes' subnet nor
/// each other (checked once the nodes' subnet is known).
pub(super) fn check_overlaps(parsed: &Parsed, subnet: Option<Ipv4Cidr>, p: &mut Problems) {
    for (key, s) in [
        ("cluster.pod_subnet", parsed.pod_subnet),
        ("cluster.service_subnet", parsed.service_subnet),
    ] {
        if let (Some(s), Some(net)) = (s, subnet) {
            if s.overlaps(&net) {
                p.add(key, format!("{s} overlaps the node subnet {net}"));
            }
        }
    }
    if let (Some(a), Some(b)) = (parsed.pod_subnet, parsed.service_subnet) {
        if a.overlaps(&b) {
            p.add(
                "cluster.service_subnet",
                format!("{b} overlaps cluster.pod_subnet {a}"),
            );
        }
    }
}

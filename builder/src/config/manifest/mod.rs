//! The cluster manifest: what the user writes (TOML), and the validated
//! `Cluster` every later stage reads. Loading never stops at the first
//! problem: the user gets every bad key of the file in one go.
//!
//! One file per section of the manifest, each with the section's types and
//! its `check`. Sections whose keys need no parsing (`[loadbalancer]`,
//! `[ssh]`, and `[kubeadm]`, `[etcd]`, `[addons]` in `tuning`) are one
//! type from the file to the templates: read with their
//! defaults, checked in place and kept in `Cluster` as they are. Sections
//! with addresses and networks (`[cluster]`, `[network]`, `[vip]`,
//! `[[nodes]]`) are read as text and parsed by their `check`, so that every
//! bad value is reported, not only the first one serde meets. The template
//! context (`rootfs::context`) embeds the validated sections under the
//! manifest's own names.

mod cluster;
mod loadbalancer;
mod network;
mod nodes;
pub mod ssh;
mod tuning;
mod values;

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{parse_toml_past_unknown, ConfigError, ConfigErrors};
use super::net::{parse_cidr, Ipv4Cidr};
pub use loadbalancer::LoadBalancer;
pub use network::{Network, Vip};
pub use nodes::{Node, Role};
pub use ssh::Ssh;
pub use tuning::{Addons, EtcdTuning, KubeadmTuning, Tuning};
pub use values::{parse_mac, parse_sha256_pin, parse_ttl};

/// The manifest file as written. Defaults are the seed document's values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    cluster: cluster::RawCluster,
    network: network::RawNetwork,
    vip: network::RawVip,
    #[serde(default)]
    loadbalancer: LoadBalancer,
    #[serde(default)]
    ssh: Ssh,
    #[serde(default)]
    kubeadm: KubeadmTuning,
    #[serde(default)]
    etcd: EtcdTuning,
    #[serde(default)]
    addons: Addons,
    #[serde(default)]
    nodes: Vec<nodes::RawNode>,
}

/// A manifest that passed validation: every later stage relies on it.
///
/// The `[cluster]` keys are its own fields, and that is all it serialises
/// to (templates see them as `cluster.*`); the other sections keep their
/// manifest names here and in the template context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cluster {
    pub name: String,
    pub distro: String,
    pub kubernetes_version: String,
    pub crio_version: String,
    pub pod_subnet: Ipv4Cidr,
    pub service_subnet: Ipv4Cidr,
    pub image_repository: Option<String>,
    /// kubeadm duration, validated: see [`parse_ttl`].
    pub bootstrap_token_ttl: String,
    /// Normalised `sha256:<lower-case hex>`.
    pub ca_fingerprint: Option<String>,
    #[serde(skip)]
    pub network: Network,
    /// The nodes' subnet: the VIP's network of `network.prefix_length` bits.
    #[serde(skip)]
    pub subnet: Ipv4Cidr,
    #[serde(skip)]
    pub vip: Vip,
    #[serde(skip)]
    pub loadbalancer: LoadBalancer,
    #[serde(skip)]
    pub ssh: Ssh,
    /// kubeadm timeouts, etcd tuning, add-ons (`[kubeadm]`, `[etcd]`,
    /// `[addons]`; templates see them as `tuning.*`).
    #[serde(skip)]
    pub tuning: Tuning,
    #[serde(skip)]
    pub nodes: Vec<Node>,
}

impl Cluster {
    pub fn control_planes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::ControlPlane)
    }
    pub fn directors(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.role == Role::Director)
    }
    /// The node that runs `kubeadm init`: the first control plane listed.
    pub fn init_node(&self) -> &Node {
        self.control_planes()
            .next()
            .expect("validation guarantees a control plane")
    }
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

/// What the manifest may refer to, known from `boards/` and the distro profiles.
pub struct Known<'a> {
    pub boards: &'a [String],
    pub distros: &'a [String],
}

/// Reads, parses and validates a manifest file.
pub fn load(path: &Path, known: &Known) -> anyhow::Result<Cluster> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading manifest {}", path.display()))?;
    Ok(parse(path, &text, known)?)
}

/// Parses and validates manifest text; `file` is only used in messages.
pub fn parse(file: &Path, text: &str, known: &Known) -> Result<Cluster, ConfigErrors> {
    // An unknown key does not hide the file's other problems.
    let (raw, unknown): (RawManifest, _) = parse_toml_past_unknown(file, text)?;
    match validate(file, raw, known) {
        Ok(c) if unknown.is_empty() => Ok(c),
        Ok(_) => Err(ConfigErrors(unknown)),
        Err(ConfigErrors(rest)) => Err(ConfigErrors(unknown.into_iter().chain(rest).collect())),
    }
}

/// The problems found so far in one file; each section's `check` adds to it.
struct Problems<'a> {
    file: &'a Path,
    list: Vec<ConfigError>,
}

impl Problems<'_> {
    fn add(&mut self, key: impl Into<String>, problem: impl Into<String>) {
        self.list.push(ConfigError {
            file: self.file.to_path_buf(),
            key: key.into(),
            problem: problem.into(),
        });
    }
    fn ipv4(&mut self, key: &str, value: &str) -> Option<Ipv4Addr> {
        match value.parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.add(key, format!("{value:?} is not an IPv4 address"));
                None
            }
        }
    }
    fn cidr(&mut self, key: &str, value: &str) -> Option<Ipv4Cidr> {
        parse_cidr(value).map_err(|e| self.add(key, e)).ok()
    }
}

/// Checks every section (in the file's order, so problems are listed as
/// the user reads the file), then builds the `Cluster`.
fn validate(file: &Path, raw: RawManifest, known: &Known) -> Result<Cluster, ConfigErrors> {
    let mut p = Problems {
        file,
        list: Vec::new(),
    };
    let c = cluster::check(&raw.cluster, known, &mut p);
    let n = network::check(&raw.network, &raw.vip, &mut p);
    cluster::check_overlaps(&c, n.subnet, &mut p);
    loadbalancer::check(&raw.loadbalancer, &mut p);
    ssh::check(&raw.ssh, &mut p);
    let nodes = nodes::check(
        &raw.nodes,
        known,
        &nodes::Context {
            vip: n.vip,
            gateway: n.gateway,
            subnet: n.subnet,
        },
        &mut p,
    );
    let tuning = Tuning {
        kubeadm: raw.kubeadm,
        etcd: raw.etcd,
        addons: raw.addons,
    };
    for (key, message) in tuning::validate(&tuning) {
        p.add(key, message);
    }
    if !p.list.is_empty() {
        return Err(ConfigErrors(p.list));
    }
    fn unwrap<T>(o: Option<T>) -> T {
        o.expect("checked above: no problems recorded")
    }
    let rc = raw.cluster;
    Ok(Cluster {
        name: rc.name,
        distro: rc.distro,
        kubernetes_version: rc.kubernetes_version,
        crio_version: rc.crio_version,
        pod_subnet: unwrap(c.pod_subnet),
        service_subnet: unwrap(c.service_subnet),
        image_repository: rc.image_repository,
        bootstrap_token_ttl: rc.bootstrap_token_ttl,
        ca_fingerprint: c.ca_fingerprint,
        network: Network {
            prefix_length: raw.network.prefix_length,
            gateway: unwrap(n.gateway),
            dns: n.dns,
        },
        subnet: unwrap(n.subnet),
        vip: Vip {
            address: unwrap(n.vip),
            port: raw.vip.port,
        },
        loadbalancer: raw.loadbalancer,
        ssh: raw.ssh,
        tuning,
        nodes,
    })
}

//! The cluster manifest: what the user writes (TOML), and the validated
//! `Cluster` every later stage reads. Loading never stops at the first
//! problem: the user gets every bad key of the file in one go.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use serde::Deserialize;

use super::error::{parse_toml, ConfigError, ConfigErrors};
use super::net::{parse_cidr, Ipv4Cidr};

/// The manifest file as written. Defaults are the seed document's values.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    pub cluster: RawCluster,
    pub network: RawNetwork,
    pub vip: RawVip,
    #[serde(default)]
    pub loadbalancer: RawLoadBalancer,
    #[serde(default)]
    pub ssh: RawSsh,
    #[serde(default)]
    pub nodes: Vec<RawNode>,
}

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

/// keepalived / LVS settings; the defaults are the seed's keepalived.conf.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLoadBalancer {
    pub virtual_router_id: u16,
    pub advert_int: u32,
    pub lvs_scheduler: String,
    pub lvs_method: String,
    pub weight: u32,
    pub delay_loop: u32,
    pub connect_timeout: u32,
    pub retry: u32,
    pub delay_before_retry: u32,
}

impl Default for RawLoadBalancer {
    fn default() -> Self {
        RawLoadBalancer {
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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSsh {
    #[serde(default)]
    pub authorized_keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    pub name: String,
    pub role: String,
    pub board: String,
    pub address: String,
    /// VRRP priority, directors only (the seed's director has 100).
    pub priority: Option<u8>,
    /// MAC address of the director's LAN NIC ("52:54:00:12:34:56"): the
    /// image names that NIC `lan0` by it. Directors only; optional.
    pub mac: Option<String>,
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
fn default_api_port() -> u16 {
    6443
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub role: Role,
    pub board: String,
    pub address: Ipv4Addr,
    pub priority: u8,
    /// Directors only: the LAN NIC's MAC, lower-case, colon-separated.
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadBalancer {
    pub virtual_router_id: u8,
    pub advert_int: u32,
    pub lvs_scheduler: String,
    pub lvs_method: String,
    pub weight: u32,
    pub delay_loop: u32,
    pub connect_timeout: u32,
    pub retry: u32,
    pub delay_before_retry: u32,
}

/// A manifest that passed validation: every later stage relies on it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub subnet: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
    pub vip: Ipv4Addr,
    pub api_port: u16,
    pub loadbalancer: LoadBalancer,
    pub ssh_authorized_keys: Vec<String>,
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
    let raw: RawManifest = parse_toml(file, text)?;
    validate(file, raw, known)
}

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

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// "52:54:00:AB:cd:EF" → "52:54:00:ab:cd:ef". A NIC's own address only:
/// six colon-separated hex octets, neither multicast/broadcast nor all zero
/// (those never belong to one card, so a .link file matching them would
/// name nothing, or the wrong thing).
pub fn parse_mac(s: &str) -> Result<String, String> {
    let octets: Vec<Option<u8>> = s
        .split(':')
        .map(|o| {
            // from_str_radix alone would take "+f".
            (o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u8::from_str_radix(o, 16).ok())
                .flatten()
        })
        .collect();
    let bad = || format!("{s:?} is not a MAC address like \"52:54:00:12:34:56\"");
    if octets.len() != 6 || octets.iter().any(Option::is_none) {
        return Err(bad());
    }
    let octets: Vec<u8> = octets.into_iter().flatten().collect();
    if octets[0] & 1 == 1 {
        return Err(format!(
            "{s:?} is a multicast or broadcast address, not a NIC's own"
        ));
    }
    if octets.iter().all(|&o| o == 0) {
        return Err(format!("{s:?} is the all-zero address, not a NIC's own"));
    }
    Ok(octets
        .iter()
        .map(|o| format!("{o:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// A bootstrap token TTL in the Go duration form kubeadm reads, limited to
/// hours, minutes and seconds ("24h", "1h30m", "90m"); returns seconds.
/// Zero ("never expires") is refused: the token would stay a valid join
/// credential on every card for ever.
pub fn parse_ttl(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration like \"24h\", \"2h30m\" or \"90m\"");
    let (mut total, mut digits, mut units) = (0u64, String::new(), String::new());
    for c in s.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let scale = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        // Each unit once, largest first, each with a number.
        if digits.is_empty()
            || units.contains(c)
            || units.chars().any(|u| "hms".find(u) > "hms".find(c))
        {
            return Err(bad());
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(scale)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        units.push(c);
        digits.clear();
    }
    if !digits.is_empty() || units.is_empty() {
        return Err(bad());
    }
    if total < 60 {
        return Err(format!(
            "{s:?} is shorter than a minute: the token must outlive kubeadm init and the joins"
        ));
    }
    Ok(total)
}

fn is_version(s: &str, parts: usize) -> bool {
    let p: Vec<&str> = s.split('.').collect();
    p.len() == parts
        && p.iter()
            .all(|x| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()))
}

fn validate(file: &Path, raw: RawManifest, known: &Known) -> Result<Cluster, ConfigErrors> {
    let mut p = Problems {
        file,
        list: Vec::new(),
    };
    let c = &raw.cluster;

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
    let pod_subnet = p.cidr("cluster.pod_subnet", &c.pod_subnet);
    let service_subnet = p.cidr("cluster.service_subnet", &c.service_subnet);
    if let Some(Err(e)) = c
        .image_repository
        .as_deref()
        .map(super::checks::image_repository)
    {
        p.add("cluster.image_repository", e);
    }

    if let Err(e) = parse_ttl(&c.bootstrap_token_ttl) {
        p.add("cluster.bootstrap_token_ttl", e);
    }
    let ca_fingerprint = c.ca_fingerprint.as_deref().and_then(|f| {
        let pin = crate::pki::cert::parse_sha256_pin(f);
        if pin.is_none() {
            p.add(
                "cluster.ca_fingerprint",
                format!("{f:?} is not \"sha256:<64 hex digits>\" (habuild secrets init prints it)"),
            );
        }
        pin
    });

    let n = &raw.network;
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

    let vip = p.ipv4("vip.address", &raw.vip.address);
    if raw.vip.port == 0 {
        p.add("vip.port", "0 is not a usable port");
    }
    let subnet = vip.map(|v| Ipv4Cidr::containing(v, n.prefix_length.clamp(8, 30)));
    let in_subnet = |p: &mut Problems, key: &str, a: Ipv4Addr| {
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
    };
    if let Some(v) = vip {
        in_subnet(&mut p, "vip.address", v);
    }
    if let Some(g) = gateway {
        in_subnet(&mut p, "network.gateway", g);
        if let Some(e) = super::checks::gateway(g, vip) {
            p.add("network.gateway", e);
        }
    }
    for (key, s) in [
        ("cluster.pod_subnet", pod_subnet),
        ("cluster.service_subnet", service_subnet),
    ] {
        if let (Some(s), Some(net)) = (s, subnet) {
            if s.overlaps(&net) {
                p.add(key, format!("{s} overlaps the node subnet {net}"));
            }
        }
    }
    if let (Some(a), Some(b)) = (pod_subnet, service_subnet) {
        if a.overlaps(&b) {
            p.add(
                "cluster.service_subnet",
                format!("{b} overlaps cluster.pod_subnet {a}"),
            );
        }
    }

    let lb = &raw.loadbalancer;
    if !(1..=255).contains(&lb.virtual_router_id) {
        p.add(
            "loadbalancer.virtual_router_id",
            format!("{} is outside 1..=255 (VRRP)", lb.virtual_router_id),
        );
    }
    if lb.advert_int == 0 {
        p.add("loadbalancer.advert_int", "must be at least 1 second");
    }
    const SCHEDULERS: &[&str] = &[
        "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh",
    ];
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

    for (i, k) in raw.ssh.authorized_keys.iter().enumerate() {
        let kind = k.split_whitespace().next().unwrap_or("");
        if k.contains('\n')
            || !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
            || k.split_whitespace().count() < 2
        {
            p.add(
                format!("ssh.authorized_keys[{i}]"),
                "not an OpenSSH public key line (\"ssh-ed25519 AAAA... comment\")",
            );
        }
    }

    let mut nodes = Vec::new();
    let mut seen_names: BTreeMap<&str, usize> = BTreeMap::new();
    let mut seen_addrs: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    let mut seen_macs: BTreeMap<String, String> = BTreeMap::new();
    if let Some(v) = vip {
        seen_addrs.insert(v, "vip.address".into());
    }
    if let Some(g) = gateway {
        seen_addrs.insert(g, "network.gateway".into());
    }
    for (i, rn) in raw.nodes.iter().enumerate() {
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
        let role = match rn.role.as_str() {
            "control-plane" => Some(Role::ControlPlane),
            "director" => Some(Role::Director),
            other => {
                p.add(
                    key("role"),
                    format!("unknown role {other:?}; expected \"control-plane\" or \"director\""),
                );
                None
            }
        };
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
            in_subnet(&mut p, &key("address"), a);
            if let Some(other) = seen_addrs.insert(a, key("address")) {
                p.add(
                    key("address"),
                    format!("duplicate address {a} (also {other})"),
                );
            }
        }
        match (role, rn.priority) {
            (Some(Role::ControlPlane), Some(_)) => {
                p.add(key("priority"), "only directors have a VRRP priority")
            }
            (Some(Role::Director), Some(0 | 255)) => {
                p.add(key("priority"), "VRRP priority must be within 1..=254")
            }
            _ => {}
        }
        let mac = rn.mac.as_deref().and_then(|m| match (role, parse_mac(m)) {
            (Some(Role::ControlPlane), _) => {
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
        if let (Some(role), Some(address)) = (role, address) {
            let default_priority = 100u8.saturating_sub(
                10 * nodes
                    .iter()
                    .filter(|n: &&Node| n.role == Role::Director)
                    .count() as u8,
            );
            nodes.push(Node {
                name: rn.name.clone(),
                role,
                board: rn.board.clone(),
                address,
                priority: rn.priority.unwrap_or(default_priority),
                mac,
            });
        }
    }
    if !raw.nodes.iter().any(|n| n.role == "control-plane") {
        p.add(
            "nodes",
            "no control plane: at least one node needs role = \"control-plane\"",
        );
    }
    if !raw.nodes.iter().any(|n| n.role == "director") {
        p.add("nodes", "no director: at least one node needs role = \"director\" (it holds the VIP and balances the API servers)");
    }
    let directors: Vec<&Node> = nodes.iter().filter(|n| n.role == Role::Director).collect();
    for w in directors.windows(2) {
        if w[1].priority >= w[0].priority {
            let i = raw
                .nodes
                .iter()
                .position(|n| n.name == w[1].name)
                .unwrap_or(0);
            p.add(format!("nodes[{i}].priority"), format!("{} must be below the priority of {} ({}): the first director listed is the VRRP master", w[1].priority, w[0].name, w[0].priority));
        }
    }

    if !p.list.is_empty() {
        return Err(ConfigErrors(p.list));
    }
    fn unwrap<T>(o: Option<T>) -> T {
        o.expect("checked above: no problems recorded")
    }
    Ok(Cluster {
        name: c.name.clone(),
        distro: c.distro.clone(),
        kubernetes_version: c.kubernetes_version.clone(),
        crio_version: c.crio_version.clone(),
        pod_subnet: unwrap(pod_subnet),
        service_subnet: unwrap(service_subnet),
        image_repository: c.image_repository.clone(),
        bootstrap_token_ttl: c.bootstrap_token_ttl.clone(),
        ca_fingerprint,
        subnet: unwrap(subnet),
        gateway: unwrap(gateway),
        dns,
        vip: unwrap(vip),
        api_port: raw.vip.port,
        loadbalancer: LoadBalancer {
            virtual_router_id: lb.virtual_router_id as u8,
            advert_int: lb.advert_int,
            lvs_scheduler: lb.lvs_scheduler.clone(),
            lvs_method: lb.lvs_method.clone(),
            weight: lb.weight,
            delay_loop: lb.delay_loop,
            connect_timeout: lb.connect_timeout,
            retry: lb.retry,
            delay_before_retry: lb.delay_before_retry,
        },
        ssh_authorized_keys: raw.ssh.authorized_keys.clone(),
        nodes,
    })
}

//! Manifest checks added in the hardening pass: small functions that
//! `manifest::validate` calls, each about one key. Pure.

use std::net::Ipv4Addr;

use super::manifest::Cluster;

/// `cluster.image_repository` as a registry/repository reference, the
/// grammar of the distribution project's `reference` (what kubeadm and
/// CRI-O parse it with): `[host[:port]/]path[/path...]`, no tag or digest
/// (kubeadm appends `/kube-apiserver:v1.x`). The value lands verbatim in a
/// quoted TOML string and in YAML, so anything outside the grammar (quotes,
/// `*`, `$(`, spaces) must stop here.
pub fn image_repository(s: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "{s:?} is not a registry reference like \"registry.example:5000/google_containers\": {why}"
        ))
    };
    if s.is_empty() || s.len() > 255 {
        return bad("it must be 1 to 255 characters");
    }
    let mut parts = s.split('/');
    let first = parts.next().unwrap_or_default();
    // As the reference grammar decides: a first part with '.' or ':', or
    // "localhost", is a registry host; otherwise it is a path component.
    let is_host = first.contains(['.', ':']) || first == "localhost";
    if is_host {
        if let Err(why) = registry_host(first) {
            return bad(&why);
        }
    } else if !path_component(first) {
        return bad(&format!("{first:?} is not a repository path component (lower-case letters and digits, separated by '.', '_', '__' or dashes)"));
    }
    for p in parts {
        if !path_component(p) {
            return bad(&format!("{p:?} is not a repository path component (lower-case letters and digits, separated by '.', '_', '__' or dashes; no tag or digest)"));
        }
    }
    Ok(())
}

/// `host[:port]`: DNS labels of letters, digits and inner dashes.
fn registry_host(s: &str) -> Result<(), String> {
    let (host, port) = match s.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !host.split('.').all(label) {
        return Err(format!("{host:?} is not a registry host name"));
    }
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return Err(format!("{p:?} is not a port number"));
        }
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &s[start..i];
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return false;
        }
    }
    true
}

/// The gateway is the LAN's router, where the nodes send off-subnet
/// traffic; the VIP moves between directors and routes nothing. (A node's
/// own address as gateway is a duplicate address, reported on the node.)
pub fn gateway(gateway: Ipv4Addr, vip: Option<Ipv4Addr>) -> Option<String> {
    (vip == Some(gateway)).then(|| {
        format!("{gateway} is the VIP (vip.address): the gateway must be the LAN's router")
    })
}

/// Advice about a valid manifest (printed, not refused).
pub fn warnings(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    let control_planes = c.control_planes().count();
    if control_planes == 2 {
        out.push(
            "2 control planes: stacked etcd needs a majority (2 of 2), so losing either one stops the cluster; two have no more fault tolerance than one and fail twice as often. Use 3 (or 1)".to_string(),
        );
    }
    out
}

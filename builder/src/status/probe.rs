//! The network side of `habuild status`: HTTPS requests with the cluster's
//! CAs and client certificates (ureq), and bare TLS handshakes through the
//! VIP (rustls) to read which API server's certificate answered.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use ureq::tls::{Certificate, ClientCert, PrivateKey, RootCerts, TlsConfig};

use super::{ApiNode, ControlPlaneSeen, EtcdMember, Observed, Seen};
use crate::config::Cluster;
use crate::pki::kubeconfig::{self, ETCD_STATUS_USER};
use crate::pki::secrets::ClusterSecrets;

/// How long one request may take (an API server under emulation is slow).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// An HTTPS client trusting `ca_pem` only, presenting `client`.
fn agent(ca_pem: &str, client: &kubeconfig::ClientCert) -> Result<ureq::Agent> {
    let ca = Certificate::from_pem(ca_pem.as_bytes()).context("reading the CA certificate")?;
    let cert =
        Certificate::from_pem(client.cert.as_bytes()).context("reading the client certificate")?;
    let key = PrivateKey::from_pem(client.key.as_bytes()).context("reading the client key")?;
    let tls = TlsConfig::builder()
        .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
        .client_cert(Some(ClientCert::new_with_certs(&[cert], key)))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into())
}

fn get(agent: &ureq::Agent, url: &str) -> Result<(u16, String)> {
    let mut resp = agent
        .get(url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer of GET {url}"))?;
    Ok((status, body))
}

/// `/readyz`: "ok" with 200, an error with what the server said otherwise.
pub fn readyz(agent: &ureq::Agent, base: &str) -> Result<String> {
    let (status, body) = get(agent, &format!("{base}/readyz"))?;
    if status != 200 {
        bail!("/readyz answered {status}: {}", failed_checks(&body));
    }
    Ok(body.trim().to_string())
}

/// The checks a verbose `/readyz` lists as failed (`[-]name failed: …`),
/// or the whole answer when it lists none.
pub fn failed_checks(body: &str) -> String {
    let failed: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("[-]"))
        .map(|l| l.split(" failed").next().unwrap_or(l))
        .collect();
    if failed.is_empty() {
        body.trim().to_string()
    } else {
        format!("failed checks: {}", failed.join(", "))
    }
}

/// The nodes and their Ready condition (pure).
pub fn parse_nodes(json: &str) -> Result<Vec<ApiNode>> {
    let v: Value = serde_json::from_str(json).context("parsing the node list")?;
    let items = v["items"]
        .as_array()
        .ok_or_else(|| anyhow!("the node list has no items"))?;
    Ok(items
        .iter()
        .map(|n| ApiNode {
            name: n["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            ready: n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            kubelet_version: n["status"]["nodeInfo"]["kubeletVersion"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        })
        .collect())
}

pub fn nodes(agent: &ureq::Agent, base: &str) -> Result<Vec<ApiNode>> {
    let (status, body) = get(agent, &format!("{base}/api/v1/nodes"))?;
    if status != 200 {
        bail!("/api/v1/nodes answered {status}: {}", body.trim());
    }
    parse_nodes(&body)
}

/// etcd's member list from its gRPC gateway's JSON (pure). IDs are
/// uint64 printed as strings; `isLearner` is absent when false.
pub fn parse_members(json: &str) -> Result<Vec<EtcdMember>> {
    let v: Value = serde_json::from_str(json).context("parsing etcd's member list")?;
    let members = v["members"]
        .as_array()
        .ok_or_else(|| anyhow!("etcd's answer has no members: {json}"))?;
    Ok(members
        .iter()
        .map(|m| EtcdMember {
            name: m["name"].as_str().unwrap_or_default().to_string(),
            id: match &m["ID"] {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            },
            is_learner: m["isLearner"].as_bool().unwrap_or(false),
            client_urls: m["clientURLs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|u| u.as_str().map(String::from))
                .collect(),
        })
        .collect())
}

pub fn etcd_members(agent: &ureq::Agent, addr: Ipv4Addr) -> Result<Vec<EtcdMember>> {
    let url = format!("https://{addr}:2379/v3/cluster/member/list");
    let mut resp = agent
        .post(&url)
        .send("{}")
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer of POST {url}"))?;
    if status != 200 {
        bail!("{url} answered {status}: {}", body.trim());
    }
    parse_members(&body)
}

/// etcd's `/health`: `{"health":"true",...}`.
pub fn etcd_health(agent: &ureq::Agent, addr: Ipv4Addr) -> Result<bool> {
    let (status, body) = get(agent, &format!("https://{addr}:2379/health"))?;
    let v: Value = serde_json::from_str(&body)
        .with_context(|| format!("etcd /health answered {status}: {}", body.trim()))?;
    Ok(v["health"] == "true")
}

/// Which control plane a certificate belongs to: the one whose address is
/// among its IP SANs (kubeadm puts the node's advertise address there).
pub fn cert_owner(cert_der: &[u8], m: &Cluster) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    let ips: Vec<Ipv4Addr> = san
        .value
        .general_names
        .iter()
        .filter_map(|g| match g {
            x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            _ => None,
        })
        .collect();
    m.control_planes()
        .find(|cp| ips.contains(&cp.address))
        .map(|cp| cp.name.clone())
}

/// One TLS handshake with `vip:port`: the serving certificate that came back.
fn handshake(vip: Ipv4Addr, port: u16, ca_pem: &str) -> Result<Vec<u8>> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = Certificate::from_pem(ca_pem.as_bytes()).context("reading the cluster CA")?;
    roots
        .add(rustls::pki_types::CertificateDer::from(ca.der().to_vec()))
        .context("trusting the cluster CA")?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(vip).into());
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name)
        .context("starting a TLS connection")?;
    let addr = SocketAddr::from((vip, port));
    let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {addr}"))?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .context("setting a timeout")?;
    sock.set_write_timeout(Some(Duration::from_secs(10)))
        .context("setting a timeout")?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .with_context(|| format!("TLS handshake with {addr}"))?;
    }
    let der = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or_else(|| anyhow!("{addr} showed no certificate"))?;
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    let _ = sock.flush();
    Ok(der)
}

/// Opens `n` connections through the VIP and counts who answered.
pub fn behind_vip(m: &Cluster, ca_pem: &str, n: u32) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let who = match handshake(m.vip.address, m.vip.port, ca_pem) {
            Ok(der) => cert_owner(&der, m).unwrap_or_else(|| "unknown".into()),
            Err(e) => {
                log::debug!("through the VIP: {e:#}");
                "no answer".into()
            }
        };
        *seen.entry(who).or_insert(0) += 1;
    }
    seen
}

/// Observes the cluster of `m` (every probe, even when some fail).
pub fn observe(m: &Cluster, s: &ClusterSecrets) -> Result<Observed> {
    let now = time::OffsetDateTime::now_utc();
    let admin = kubeconfig::issue_admin(s, now, 1)?;
    let api = agent(&s.ca.cert, &admin)?;
    let etcd_client = kubeconfig::issue_client(&s.etcd_ca, ETCD_STATUS_USER, None, now, 1)?;
    let etcd = agent(&s.etcd_ca.cert, &etcd_client)?;
    let vip_base = format!("https://{}:{}", m.vip.address, m.vip.port);
    let control_planes: Vec<ControlPlaneSeen> = m
        .control_planes()
        .map(|cp| ControlPlaneSeen {
            name: cp.name.clone(),
            address: cp.address,
            readyz: readyz(&api, &format!("https://{}:{}", cp.address, m.vip.port)).into(),
            etcd_health: etcd_health(&etcd, cp.address).into(),
        })
        .collect();
    let mut members = Seen::Failed("no control plane to ask".to_string());
    for cp in m.control_planes() {
        members = etcd_members(&etcd, cp.address).into();
        if members.ok().is_some() {
            break;
        }
    }
    // Enough connections that a weighted round robin meets every real
    // server more than once.
    let n = 4 * m.control_planes().count() as u32;
    Ok(Observed {
        vip: vip_base.clone(),
        vip_readyz: readyz(&api, &vip_base).into(),
        nodes: nodes(&api, &vip_base).into(),
        control_planes,
        etcd_members: members,
        behind_vip: behind_vip(m, &s.ca.cert, n),
        vip_connections: n,
    })
}

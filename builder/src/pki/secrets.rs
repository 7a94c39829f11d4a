//! The cluster's secrets and the TOML file that holds them: parse, check,
//! render. Pure (the caller reads and writes the file, see `store`).
//!
//! Every problem is reported with the file and the key, like manifest
//! problems, and never with the value: a message may end up in a CI log.

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use super::cert::{self, CertInfo};
use super::token::{BootstrapToken, TOKEN_FORMAT};
use crate::config::{Cluster, ConfigError, ConfigErrors};

/// Version of the file format written by this habuild.
pub const FORMAT_VERSION: u32 = 1;

/// A CA certificate and its private key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct CaPem {
    pub cert: String,
    pub key: String,
}

/// The service-account signing key pair, PEM (kubeadm's sa.key / sa.pub).
#[derive(Clone, PartialEq, Eq)]
pub struct ServiceAccountPem {
    pub key: String,
    pub public: String,
}

/// Everything the control planes of one cluster share, checked: each CA
/// certificate is a CA, not expired, and matches its key; the token has
/// kubeadm's format. Built only by [`ClusterSecrets::check`].
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecrets {
    pub cluster: String,
    pub ca: CaPem,
    pub front_proxy_ca: CaPem,
    pub etcd_ca: CaPem,
    pub service_account: ServiceAccountPem,
    pub bootstrap_token: BootstrapToken,
    /// `sha256:<hex>` of the cluster CA certificate's DER.
    pub ca_fingerprint: String,
    /// kubeadm's discovery hash of the cluster CA (sha256 of its SPKI).
    pub discovery_hash: String,
}

impl fmt::Debug for ClusterSecrets {
    /// Public facts only: a `{:?}` in a log must not leak a key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSecrets")
            .field("cluster", &self.cluster)
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("bootstrap_token", &self.bootstrap_token)
            .finish_non_exhaustive()
    }
}

/// The parts of a secrets file before they are checked.
#[derive(Clone)]
pub struct Parts {
    pub cluster: String,
    pub ca: CaPem,
    pub front_proxy_ca: CaPem,
    pub etcd_ca: CaPem,
    pub service_account: ServiceAccountPem,
    pub bootstrap_token: String,
    /// As recorded in the file; checked against the CA certificate.
    pub ca_fingerprint: Option<String>,
}

/// (key, problem) pairs, turned into [`ConfigError`]s by the caller.
pub type Problems = Vec<(String, String)>;

impl ClusterSecrets {
    /// Checks every part; `now` (seconds since the epoch) decides expiry.
    pub fn check(parts: Parts, now: i64) -> Result<ClusterSecrets, Problems> {
        let mut problems = Problems::new();
        if parts.cluster.is_empty() {
            problems.push(("cluster".into(), "is empty".into()));
        }
        let ca = check_ca("ca", &parts.ca, now, &mut problems);
        check_ca("front_proxy_ca", &parts.front_proxy_ca, now, &mut problems);
        check_ca("etcd_ca", &parts.etcd_ca, now, &mut problems);
        check_service_account(&parts.service_account, &mut problems);
        let token = BootstrapToken::parse(&parts.bootstrap_token);
        if token.is_none() {
            problems.push(("bootstrap_token".into(), TOKEN_FORMAT.into()));
        }
        let fingerprint = ca.as_ref().map(|c| cert::fingerprint(&c.der));
        if let (Some(recorded), Some(actual)) = (&parts.ca_fingerprint, &fingerprint) {
            match crate::config::manifest::parse_sha256_pin(recorded) {
                None => problems.push((
                    "ca_fingerprint".into(),
                    "not a \"sha256:<64 hex digits>\" value".into(),
                )),
                Some(r) if &r != actual => problems.push((
                    "ca_fingerprint".into(),
                    format!(
                        "does not match [ca].cert ({actual}): the file was edited or is corrupt"
                    ),
                )),
                Some(_) => {}
            }
        }
        match (problems.is_empty(), ca, token, fingerprint) {
            (true, Some(ca), Some(token), Some(fingerprint)) => Ok(ClusterSecrets {
                cluster: parts.cluster,
                discovery_hash: cert::discovery_hash(&ca),
                ca_fingerprint: fingerprint,
                ca: parts.ca,
                front_proxy_ca: parts.front_proxy_ca,
                etcd_ca: parts.etcd_ca,
                service_account: parts.service_account,
                bootstrap_token: token,
            }),
            _ => Err(problems),
        }
    }
}

fn check_ca(name: &str, ca: &CaPem, now: i64, problems: &mut Problems) -> Option<CertInfo> {
    let cert = match cert::read_cert(&ca.cert) {
        Ok(c) => c,
        Err(e) => {
            problems.push((format!("{name}.cert"), e));
            return None;
        }
    };
    let mut ok = true;
    if !cert.is_ca {
        problems.push((
            format!("{name}.cert"),
            "not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
        ));
        ok = false;
    }
    if cert.not_after <= now {
        problems.push((
            format!("{name}.cert"),
            format!("expired (notAfter {})", utc(cert.not_after)),
        ));
        ok = false;
    }
    match cert::read_key(&ca.key) {
        Ok(key) if !cert::key_matches(&key, &cert.spki_der) => {
            problems.push((
                format!("{name}.key"),
                format!("is not the key of [{name}].cert"),
            ));
            ok = false;
        }
        Ok(_) => {}
        Err(e) => {
            problems.push((format!("{name}.key"), e));
            ok = false;
        }
    }
    ok.then_some(cert)
}

fn check_service_account(sa: &ServiceAccountPem, problems: &mut Problems) {
    let key = match cert::read_key(&sa.key) {
        Ok(k) => k,
        Err(e) => {
            problems.push(("service_account.key".into(), e));
            return;
        }
    };
    let public = x509_parser::pem::parse_x509_pem(sa.public.as_bytes())
        .ok()
        .filter(|(_, p)| p.label == "PUBLIC KEY")
        .map(|(_, p)| p.contents);
    match public {
        None => problems.push((
            "service_account.public".into(),
            "not a PEM public key (\"BEGIN PUBLIC KEY\")".into(),
        )),
        Some(der) if !cert::key_matches(&key, &der) => problems.push((
            "service_account.public".into(),
            "is not the public half of service_account.key".into(),
        )),
        Some(_) => {}
    }
}

fn utc(ts: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ts)
        .map(|t| {
            format!(
                "{:04}-{:02}-{:02} UTC",
                t.year(),
                u8::from(t.month()),
                t.day()
            )
        })
        .unwrap_or_else(|_| ts.to_string())
}

/// The file as written (serde), before checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: u32,
    cluster: String,
    ca_fingerprint: Option<String>,
    bootstrap_token: String,
    ca: RawCa,
    front_proxy_ca: RawCa,
    etcd_ca: RawCa,
    service_account: RawSa,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCa {
    cert: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSa {
    key: String,
    public: String,
}

fn errors(file: &Path, problems: Problems) -> ConfigErrors {
    ConfigErrors(
        problems
            .into_iter()
            .map(|(key, problem)| ConfigError {
                file: file.to_path_buf(),
                key,
                problem,
            })
            .collect(),
    )
}

/// Parses and checks a secrets file's text; `file` is used in messages.
pub fn parse(file: &Path, text: &str, now: i64) -> Result<ClusterSecrets, ConfigErrors> {
    let raw: RawFile =
        serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|err| {
            let key = err.path().to_string();
            let inner = err.into_inner();
            let line = inner
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            // serde's messages may quote the offending value, which here can
            // be a key or a token: keep the message only when it quotes nothing.
            let msg = inner.message();
            let msg = if msg.contains('"') || msg.contains('`') || msg.contains('\'') {
                "not valid here (wrong type or malformed TOML)"
            } else {
                msg
            };
            let problem = match line {
                Some(l) => {
                    format!("{msg} (line {l}); the file is corrupt: restore it from your backup")
                }
                None => format!("{msg}; the file is corrupt: restore it from your backup"),
            };
            errors(
                file,
                vec![(
                    if key == "." {
                        "(top level)".into()
                    } else {
                        key
                    },
                    problem,
                )],
            )
        })?;
    if raw.version != FORMAT_VERSION {
        return Err(errors(
            file,
            vec![(
                "version".into(),
                format!(
                    "{} is not a secrets file version this habuild reads ({FORMAT_VERSION})",
                    raw.version
                ),
            )],
        ));
    }
    let parts = Parts {
        cluster: raw.cluster,
        ca: CaPem {
            cert: raw.ca.cert,
            key: raw.ca.key,
        },
        front_proxy_ca: CaPem {
            cert: raw.front_proxy_ca.cert,
            key: raw.front_proxy_ca.key,
        },
        etcd_ca: CaPem {
            cert: raw.etcd_ca.cert,
            key: raw.etcd_ca.key,
        },
        service_account: ServiceAccountPem {
            key: raw.service_account.key,
            public: raw.service_account.public,
        },
        bootstrap_token: raw.bootstrap_token,
        ca_fingerprint: raw.ca_fingerprint,
    };
    ClusterSecrets::check(parts, now).map_err(|p| errors(file, p))
}

/// The file's text. PEM holds only base64, dashes, spaces and newlines, so
/// TOML literal strings (`'''`) carry it unchanged.
pub fn render(s: &ClusterSecrets) -> String {
    let block = |v: &str| format!("'''\n{}\n'''", v.trim_end());
    let ca = |name: &str, what: &str, c: &CaPem| {
        format!(
            "\n# {what}\n[{name}]\ncert = {}\nkey = {}\n",
            block(&c.cert),
            block(&c.key)
        )
    };
    let mut out = format!(
        "# habuild cluster secrets of cluster {:?}: PRIVATE. Every control-plane\n\
         # image carries these CAs; anyone with this file can administer the\n\
         # cluster. Keep it 0600 and back it up: the cluster cannot be rebuilt\n\
         # or extended without it. Created by `habuild secrets init`.\n\
         version = {FORMAT_VERSION}\n\
         cluster = {:?}\n\
         # Pin it in the manifest ([cluster] ca_fingerprint) so that builds\n\
         # refuse a secrets file of another cluster.\n\
         ca_fingerprint = {:?}\n\
         bootstrap_token = {:?}\n",
        s.cluster,
        s.cluster,
        s.ca_fingerprint,
        s.bootstrap_token.expose()
    );
    out.push_str(&ca(
        "ca",
        "Cluster CA: /etc/kubernetes/pki/ca.{crt,key}",
        &s.ca,
    ));
    out.push_str(&ca(
        "front_proxy_ca",
        "Front-proxy CA: /etc/kubernetes/pki/front-proxy-ca.{crt,key}",
        &s.front_proxy_ca,
    ));
    out.push_str(&ca(
        "etcd_ca",
        "etcd CA: /etc/kubernetes/pki/etcd/ca.{crt,key}",
        &s.etcd_ca,
    ));
    out.push_str(&format!(
        "\n# Service-account token signing key: /etc/kubernetes/pki/sa.{{key,pub}}\n[service_account]\nkey = {}\npublic = {}\n",
        block(&s.service_account.key),
        block(&s.service_account.public)
    ));
    out
}

/// What a build must refuse: a secrets file made for another cluster.
///
/// Two checks, because a manifest may not pin its CA yet: the cluster name
/// recorded in the secrets file must be the manifest's, and when the
/// manifest pins `cluster.ca_fingerprint`, the secrets file's CA must be
/// that one (a same-named cluster whose secrets were re-created is
/// "another cluster" too: its nodes would not trust each other). Returns a
/// warning when the manifest pins nothing.
pub fn check_cluster(
    s: &ClusterSecrets,
    cluster: &Cluster,
    pinned: Option<&str>,
    manifest: &Path,
    secrets_file: &Path,
) -> Result<Option<String>, ConfigErrors> {
    let mut list = Vec::new();
    if s.cluster != cluster.name {
        list.push(ConfigError {
            file: secrets_file.to_path_buf(),
            key: "cluster".into(),
            problem: format!(
                "this secrets file belongs to cluster {:?}, the manifest {} describes cluster {:?}",
                s.cluster,
                manifest.display(),
                cluster.name
            ),
        });
    }
    match pinned {
        Some(pin) if pin != s.ca_fingerprint => list.push(ConfigError {
            file: manifest.to_path_buf(),
            key: "cluster.ca_fingerprint".into(),
            problem: format!(
                "the cluster CA in {} is {}, not the pinned {pin}: the secrets file is from another cluster (or its secrets were re-created)",
                secrets_file.display(),
                s.ca_fingerprint
            ),
        }),
        _ => {}
    }
    if !list.is_empty() {
        return Err(ConfigErrors(list));
    }
    Ok(pinned.is_none().then(|| {
        format!(
            "{} pins no cluster CA: add `ca_fingerprint = \"{}\"` to its [cluster] table so that builds refuse another cluster's secrets",
            manifest.display(),
            s.ca_fingerprint
        )
    }))
}

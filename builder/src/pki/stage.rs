//! The cluster secrets a control-plane image carries: kubeadm's shared CA
//! material under `/etc/kubernetes/pki` ("manual certificate distribution"),
//! so a `kubeadm join --control-plane` needs no `--upload-certs` window.
//! [`image_files`] decides what to write (pure); [`install`] writes it into
//! a staged root tree and says what it wrote, for `<node>.json`.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::cert;
use super::secrets::ClusterSecrets;
use crate::rootfs::overlay::RenderedFile;

/// kubeadm's certificates directory (`ClusterConfiguration.certificatesDir`).
pub const PKI_DIR: &str = "/etc/kubernetes/pki";

/// Rendered files that hold the bootstrap token (see overlays/control-plane).
pub const TOKEN_FILES: &[&str] = &["/etc/habuild/kubeadm/kubeadm.yaml"];

/// One file of the image's PKI.
#[derive(Clone, PartialEq, Eq)]
pub struct PkiFile {
    pub path: String,
    pub bytes: Vec<u8>,
    pub mode: u32,
    /// A private key: never readable by anyone but root.
    pub secret: bool,
}

/// What `<node>.json` says about the image's secrets: where they are and
/// public fingerprints, never their content.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SecretsReport {
    pub cluster: String,
    /// `sha256:` of the cluster CA certificate's DER.
    pub ca_fingerprint: String,
    /// kubeadm's `caCertHashes` entry for this cluster.
    pub discovery_hash: String,
    /// The bootstrap token's public ID (the secret half is not here).
    pub bootstrap_token_id: String,
    /// Image files that hold secrets (private keys, the bootstrap token); all 0600.
    pub secret_files: Vec<String>,
    /// Certificates in the image with their fingerprints.
    pub certificates: Vec<CertReport>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CertReport {
    pub path: String,
    pub fingerprint: String,
}

/// kubeadm's file names and modes: certificates and the public key 0644,
/// private keys 0600.
pub fn image_files(s: &ClusterSecrets) -> Vec<PkiFile> {
    let file = |name: &str, pem: &str, secret: bool| PkiFile {
        path: format!("{PKI_DIR}/{name}"),
        bytes: pem.as_bytes().to_vec(),
        mode: if secret { 0o600 } else { 0o644 },
        secret,
    };
    vec![
        file("ca.crt", &s.ca.cert, false),
        file("ca.key", &s.ca.key, true),
        file("etcd/ca.crt", &s.etcd_ca.cert, false),
        file("etcd/ca.key", &s.etcd_ca.key, true),
        file("front-proxy-ca.crt", &s.front_proxy_ca.cert, false),
        file("front-proxy-ca.key", &s.front_proxy_ca.key, true),
        file("sa.key", &s.service_account.key, true),
        file("sa.pub", &s.service_account.public, false),
    ]
}

/// The report for an image holding `files` and the rendered `root_files`.
pub fn report(s: &ClusterSecrets, files: &[PkiFile], root_files: &[RenderedFile]) -> SecretsReport {
    let mut secret_files: Vec<String> = files
        .iter()
        .filter(|f| f.secret)
        .map(|f| f.path.clone())
        .collect();
    secret_files.extend(
        root_files
            .iter()
            .filter(|f| TOKEN_FILES.contains(&f.path.as_str()))
            .map(|f| f.path.clone()),
    );
    let certificates = files
        .iter()
        .filter(|f| f.path.ends_with(".crt"))
        .filter_map(|f| {
            let pem = std::str::from_utf8(&f.bytes).ok()?;
            let info = cert::read_cert(pem).ok()?;
            Some(CertReport {
                path: f.path.clone(),
                fingerprint: cert::fingerprint(&info.der),
            })
        })
        .collect();
    SecretsReport {
        cluster: s.cluster.clone(),
        ca_fingerprint: s.ca_fingerprint.clone(),
        discovery_hash: s.discovery_hash.clone(),
        bootstrap_token_id: s.bootstrap_token.id().to_string(),
        secret_files,
        certificates,
    }
}

/// What [`install`] wrote.
pub struct Installed {
    /// For `<node>.json`'s file list (sha256 of each file, as for every
    /// file habuild adds; a digest of a random key reveals nothing).
    pub files: Vec<RenderedFile>,
    pub report: SecretsReport,
}

/// Writes the PKI into the staged root tree `root` (after the overlays,
/// before the filesystem is made). `root_files` are the files the overlays
/// rendered, to name those that carry the token.
pub fn install(root: &Path, s: &ClusterSecrets, root_files: &[RenderedFile]) -> Result<Installed> {
    let files = image_files(s);
    for f in &files {
        write_private(root, f)
            .with_context(|| format!("writing {} into {}", f.path, root.display()))?;
    }
    let rendered = files
        .iter()
        .map(|f| RenderedFile {
            path: f.path.clone(),
            sha256: cert::sha256_hex(&f.bytes),
            mode: f.mode,
        })
        .collect();
    Ok(Installed {
        files: rendered,
        report: report(s, &files, root_files),
    })
}

/// The overlays' files plus the PKI's, sorted by path: `<node>.json`'s list.
pub fn with_files(root_files: &[RenderedFile], pki: Option<&Installed>) -> Vec<RenderedFile> {
    let mut all = root_files.to_vec();
    if let Some(p) = pki {
        all.extend(p.files.iter().cloned());
    }
    all.sort_by(|a, b| a.path.cmp(&b.path));
    all
}

/// Creates the parents (0755, never through a symlink: the staged tree is a
/// foreign root) and the file with its final mode from the first byte.
fn write_private(root: &Path, f: &PkiFile) -> Result<()> {
    let rel = Path::new(f.path.trim_start_matches('/'));
    let mut dir = root.to_path_buf();
    let parents: Vec<Component> = rel
        .parent()
        .map(|p| p.components().collect())
        .unwrap_or_default();
    for c in parents {
        if !matches!(c, Component::Normal(_)) {
            bail!("invalid in-tree path {}", f.path);
        }
        dir.push(c);
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                bail!("refusing to write through symlink {}", dir.display())
            }
            Ok(m) if !m.is_dir() => bail!("{} is in the way: not a directory", dir.display()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
                fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                    .with_context(|| format!("setting the mode of {}", dir.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", dir.display())),
        }
    }
    let target = root.join(rel);
    match fs::symlink_metadata(&target) {
        Ok(m) if m.is_dir() => bail!("{} is a directory", target.display()),
        Ok(_) => {
            fs::remove_file(&target).with_context(|| format!("replacing {}", target.display()))?
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", target.display())),
    }
    let mut out = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(f.mode)
        .open(&target)
        .with_context(|| format!("creating {}", target.display()))?;
    out.write_all(&f.bytes)
        .with_context(|| format!("writing {}", target.display()))?;
    out.set_permissions(fs::Permissions::from_mode(f.mode))
        .with_context(|| format!("setting mode {:o} on {}", f.mode, target.display()))
}

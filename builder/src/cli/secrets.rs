//! `habuild secrets`: the cluster's secrets file (see `pki`). Thin: the
//! work is in `pki::generate`, `pki::secrets` and `pki::store`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use crate::config::{Project, DEFAULT_MANIFEST};
use crate::pki::{generate, secrets, store};

#[derive(Debug, Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    pub command: SecretsCommand,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Create the cluster's secrets file, once: CAs, service-account key, bootstrap token.
    Init(InitArgs),
    /// Show the public facts of a secrets file (CA fingerprint, discovery hash, token ID).
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Cluster manifest (default: manifests/seed.toml, the seed's cluster).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Secrets file (default: beside the manifest, <stem>.secrets.toml).
    #[arg(long, env = "HABUILD_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Replace an existing secrets file (its cluster's nodes will no longer
    /// trust images built from the new one).
    #[arg(long, conflicts_with = "if_missing")]
    pub force: bool,
    /// Keep an existing secrets file and succeed (for scripts that run
    /// `secrets init` before every build).
    #[arg(long)]
    pub if_missing: bool,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Cluster manifest (default: manifests/seed.toml, the seed's cluster).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Secrets file (default: beside the manifest, <stem>.secrets.toml).
    #[arg(long, env = "HABUILD_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Print one JSON document (the public facts) on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &SecretsArgs) -> Result<()> {
    match &args.command {
        SecretsCommand::Init(a) => init(a),
        SecretsCommand::Show(a) => show(a),
    }
}

fn init(a: &InitArgs) -> Result<()> {
    let project = Project::locate()?;
    let manifest = a
        .manifest
        .clone()
        .unwrap_or_else(|| project.root.join(DEFAULT_MANIFEST));
    let cluster = project.manifest(Some(&manifest))?;
    let path = store::resolve(&manifest, a.secrets.as_deref());
    if a.if_missing && path.exists() {
        println!("kept the existing secrets file {}", path.display());
        return Ok(());
    }
    let s = generate::generate(&cluster.name, time::OffsetDateTime::now_utc())
        .context("creating the cluster secrets")?;
    store::write_private(&path, &secrets::render(&s), a.force)?;
    // Public facts only: the file itself is the one place the keys and the
    // token are written.
    println!(
        "created {} (mode 0600) for cluster {:?}",
        path.display(),
        s.cluster
    );
    println!("  CA fingerprint: {}", s.ca_fingerprint);
    println!("  discovery hash: {}", s.discovery_hash);
    println!("  bootstrap token ID: {}", s.bootstrap_token.id());
    match &cluster.ca_fingerprint {
        Some(pin) if pin != &s.ca_fingerprint => println!(
            "{} pins another CA ({pin}): replace it with\n  ca_fingerprint = \"{}\"",
            manifest.display(),
            s.ca_fingerprint
        ),
        Some(_) => {}
        None => println!(
            "Pin the CA in {} ([cluster] table) so that builds refuse another cluster's secrets:\n  ca_fingerprint = \"{}\"",
            manifest.display(),
            s.ca_fingerprint
        ),
    }
    println!("Keep the file private and back it up: every control-plane image carries its CAs, and the cluster cannot be extended without it.");
    Ok(())
}

fn show(a: &ShowArgs) -> Result<()> {
    let project = Project::locate()?;
    let manifest = a
        .manifest
        .clone()
        .unwrap_or_else(|| project.root.join(DEFAULT_MANIFEST));
    let cluster = project.manifest(Some(&manifest))?;
    let path = store::resolve(&manifest, a.secrets.as_deref());
    // The unpinned-CA note is a build's; here the pin is one of the facts.
    let (s, _) = store::load_for_cluster(&path, &cluster, &manifest)?;
    let pinned = cluster.ca_fingerprint.is_some();
    if a.json {
        return super::output::document(&serde_json::json!({
            "ok": true,
            "file": path,
            "cluster": s.cluster,
            "ca_fingerprint": s.ca_fingerprint,
            "ca_pinned_in_manifest": pinned,
            "discovery_hash": s.discovery_hash,
            "bootstrap_token_id": s.bootstrap_token.id(),
        }));
    }
    println!("{}", path.display());
    println!("  cluster: {}", s.cluster);
    println!("  CA fingerprint: {}", s.ca_fingerprint);
    println!(
        "  pinned in {}: {}",
        manifest.display(),
        if pinned {
            "yes"
        } else {
            "no (see `secrets init`)"
        }
    );
    println!("  discovery hash: {}", s.discovery_hash);
    println!("  bootstrap token ID: {}", s.bootstrap_token.id());
    Ok(())
}

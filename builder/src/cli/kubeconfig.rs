//! `habuild kubeconfig`: an admin kubeconfig for the cluster's API VIP,
//! signed by the cluster CA from the secrets file (see `pki::kubeconfig`).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use crate::pki::{kubeconfig, store};

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Cluster manifest (default: manifests/seed.toml, the seed's cluster).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Secrets file (default: beside the manifest, <stem>.secrets.toml).
    #[arg(long, env = "HABUILD_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Where to write it (default: out/<cluster>/admin.conf); mode 0600.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Lifetime of the client certificate, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=3650))]
    pub days: i64,
}

pub fn run(a: &KubeconfigArgs) -> Result<()> {
    let (cluster, s) = super::cluster_and_secrets(a.manifest.as_deref(), a.secrets.as_deref())?;
    let client = kubeconfig::issue_admin(&s, time::OffsetDateTime::now_utc(), a.days)?;
    let server = format!("https://{}:{}", cluster.vip.address, cluster.vip.port);
    let text = kubeconfig::render(&cluster.name, &server, &s.ca.cert, &client);
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("out").join(&cluster.name).join("admin.conf"));
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    store::write_private(&out, &text, true)?;
    println!(
        "wrote {} (mode 0600): user {} in group {}, server {server}, valid {} days",
        out.display(),
        kubeconfig::ADMIN_USER,
        kubeconfig::ADMIN_GROUP,
        a.days
    );
    println!(
        "  use it with: KUBECONFIG={} kubectl get nodes",
        out.display()
    );
    Ok(())
}

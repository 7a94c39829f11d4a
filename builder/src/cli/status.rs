//! `habuild status`: the control plane's health as a client sees it
//! through the VIP (see `status`). Exit 0 only when all of it is healthy.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Cluster manifest (default: manifests/seed.toml, the seed's cluster).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Secrets file (default: beside the manifest, <stem>.secrets.toml).
    #[arg(long, env = "HABUILD_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Print one JSON document (observations and verdict) on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: &StatusArgs) -> Result<()> {
    let (cluster, s) = super::cluster_and_secrets(a.manifest.as_deref(), a.secrets.as_deref())?;
    let observed = crate::status::probe::observe(&cluster, &s)?;
    let verdict = crate::status::judge(&cluster, &observed);
    if a.json {
        super::output::document(&serde_json::json!({
            "ok": verdict.healthy,
            "observed": observed,
            "verdict": verdict,
        }))?;
    } else {
        print!("{}", crate::status::render(&cluster, &observed, &verdict));
    }
    if !verdict.healthy {
        bail!(
            "the control plane of {} is not healthy ({} problem(s))",
            cluster.name,
            verdict.problems.len()
        );
    }
    Ok(())
}

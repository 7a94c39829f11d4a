//! `habuild status`: the control plane's health as a client sees it
//! through the VIP (see `status`). Exit 0 only when all of it is healthy.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::config::{Project, DEFAULT_MANIFEST};
use crate::pki::store;

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
    let project = Project::locate()?;
    let manifest = a
        .manifest
        .clone()
        .unwrap_or_else(|| project.root.join(DEFAULT_MANIFEST));
    let cluster = project.manifest(Some(&manifest))?;
    let path = store::resolve(&manifest, a.secrets.as_deref());
    let s = store::load_for_cluster(&path, &cluster, &manifest)?;
    let observed = crate::status::probe::observe(&cluster, &s)?;
    let verdict = crate::status::judge(&cluster, &observed);
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "observed": observed,
                "verdict": verdict,
            }))?
        );
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

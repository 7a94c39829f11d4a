//! `habuild kubeconfig`: an admin kubeconfig for the cluster's API VIP,
//! signed by the cluster CA from the secrets file (see `pki::kubeconfig`).
//! Written to a file (never over one without `--force`), to stdout
//! (`--out -`), or merged into kubectl's own file (`--merge`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;

use crate::config::UsageError;
use crate::pki::{kubeconfig, store};

#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// Cluster manifest (default: manifests/seed.toml, the seed's cluster).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Secrets file (default: beside the manifest, <stem>.secrets.toml).
    #[arg(long, env = "HABUILD_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Where to write it, mode 0600 ("-": stdout). Default:
    /// out/<cluster>/admin.conf; with --merge, the kubeconfig to merge into.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace an existing --out file.
    #[arg(long, conflicts_with = "merge")]
    pub force: bool,
    /// Merge the cluster, user and context into a kubeconfig, keeping its
    /// other entries: --out FILE, else kubectl's file (the first existing
    /// file of $KUBECONFIG, else its first; without KUBECONFIG, ~/.kube/config).
    #[arg(long)]
    pub merge: bool,
    /// Lifetime of the client certificate, in days.
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(1..=3650))]
    pub days: i64,
}

/// Where `--merge` writes without `--out`, by kubectl's rules (pure):
/// `KUBECONFIG` is a `:`-separated list whose first existing file is used
/// (its first entry when none exists yet); without it, `~/.kube/config`.
pub fn merge_target(
    kubeconfig_env: Option<&str>,
    home: Option<&Path>,
    exists: impl Fn(&Path) -> bool,
) -> Result<PathBuf, UsageError> {
    let listed: Vec<PathBuf> = kubeconfig_env
        .unwrap_or("")
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if let Some(first) = listed.first() {
        return Ok(listed.iter().find(|p| exists(p)).unwrap_or(first).clone());
    }
    match home.filter(|h| !h.as_os_str().is_empty()) {
        Some(h) => Ok(h.join(".kube/config")),
        None => Err(UsageError(
            "--merge: neither KUBECONFIG nor HOME is set; name the file with --out FILE".into(),
        )),
    }
}

pub fn run(a: &KubeconfigArgs) -> Result<()> {
    let to_stdout = a.out.as_deref() == Some(Path::new("-"));
    if to_stdout && a.merge {
        return Err(UsageError("--merge needs a file, not --out -".into()).into());
    }
    let (cluster, s) = super::cluster_and_secrets(a.manifest.as_deref(), a.secrets.as_deref())?;
    let client = kubeconfig::issue_admin(&s, time::OffsetDateTime::now_utc(), a.days)?;
    let server = format!("https://{}:{}", cluster.vip.address, cluster.vip.port);
    let text = kubeconfig::render(&cluster.name, &server, &s.ca.cert, &client);
    let context = kubeconfig::context_name(&cluster.name);
    if to_stdout {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .context("writing the kubeconfig to stdout")?;
        return Ok(());
    }
    let out = match (&a.out, a.merge) {
        (Some(o), _) => o.clone(),
        (None, true) => merge_target(
            std::env::var("KUBECONFIG").ok().as_deref(),
            std::env::var_os("HOME").map(PathBuf::from).as_deref(),
            Path::exists,
        )?,
        (None, false) => PathBuf::from("out").join(&cluster.name).join("admin.conf"),
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if a.merge {
        let existing = match std::fs::read_to_string(&out) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", out.display())),
        };
        let merged = kubeconfig::merge(&existing, &text, &out)?;
        store::write_private(&out, &merged, true)?;
        eprintln!(
            "merged context {context} (server {server}, valid {} days) into {}, mode 0600; its other contexts are kept",
            a.days,
            out.display()
        );
        eprintln!("  use it with: kubectl --context {context} get nodes");
        return Ok(());
    }
    if out.exists() && !a.force {
        return Err(UsageError(format!(
            "{} exists: pass --force to replace it, --merge to add this cluster to it, or --out - for stdout",
            out.display()
        ))
        .into());
    }
    store::write_private(&out, &text, true)?;
    eprintln!(
        "wrote {} (mode 0600): user {} in group {}, server {server}, valid {} days",
        out.display(),
        kubeconfig::ADMIN_USER,
        kubeconfig::ADMIN_GROUP,
        a.days
    );
    eprintln!(
        "  use it with: KUBECONFIG={} kubectl get nodes",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_target_follows_kubectl() {
        let none = |_: &Path| false;
        let home = Some(Path::new("/home/u"));
        assert_eq!(
            merge_target(None, home, none).unwrap(),
            PathBuf::from("/home/u/.kube/config")
        );
        assert_eq!(
            merge_target(Some(""), home, none).unwrap(),
            PathBuf::from("/home/u/.kube/config")
        );
        // The first existing file of the list, else its first entry.
        let second = |p: &Path| p == Path::new("/b");
        assert_eq!(
            merge_target(Some("/a:/b:/c"), home, second).unwrap(),
            PathBuf::from("/b")
        );
        assert_eq!(
            merge_target(Some("/a:/b"), home, none).unwrap(),
            PathBuf::from("/a")
        );
        assert!(merge_target(None, None, none).is_err());
    }
}

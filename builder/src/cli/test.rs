//! `habuild test`: boot the images `habuild image` built, under QEMU.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;

use crate::config::manifest::Cluster;
use crate::config::Project;

#[derive(Debug, Args)]
pub struct TestArgs {
    /// Test this node's image.
    #[arg(long)]
    pub node: Option<String>,
    /// Test every node whose image exists in the output directory.
    #[arg(long, conflicts_with = "node")]
    pub all: bool,
    /// Cluster manifest the images were built from (default: the seed's).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Output directory the images are in (<out>/<cluster>/).
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// 1: each image boots as itself (--node or --all). 2: the whole
    /// cluster on a closed segment in a network namespace, and the seed's
    /// failover test (needs every node's image, root, and Kubernetes TEST
    /// DOUBLES in the control-plane images). 3: the same with the REAL
    /// Kubernetes (images built with a bundle from `habuild bundle`): the
    /// control plane must form by itself and `habuild status` must find it
    /// healthy. all: tier 1 on every image, then tier 2.
    #[arg(long, value_enum, default_value = "1")]
    pub tier: Tier,
    /// Tier 2: seconds allowed for the cluster to boot and form (tier 3:
    /// default 3600, the real programs under emulation are slow).
    #[arg(long)]
    pub boot_timeout: Option<u64>,
    /// Tier 3: the secrets file (default: beside the manifest).
    #[arg(long, env = "HABUILD_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Tier 3: memory of each control-plane guest.
    #[arg(long, default_value = "3G")]
    pub control_plane_memory: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Tier {
    #[value(name = "1")]
    One,
    #[value(name = "2")]
    Two,
    #[value(name = "3")]
    Three,
    All,
}

pub fn run(args: &TestArgs) -> Result<()> {
    let project = Project::locate()?;
    let cluster = project.manifest(args.manifest.as_deref())?;
    let out_dir = args.out.join(&cluster.name);
    if args.tier != Tier::One && args.node.is_some() {
        bail!("tiers 2 and 3 boot every node of the manifest: drop --node");
    }
    let boot_timeout = args.boot_timeout.unwrap_or(600);
    match args.tier {
        Tier::One => tier1(&project, &cluster, &out_dir, args.node.as_deref(), args.all),
        Tier::Two => tier2(&project, &cluster, &out_dir, boot_timeout),
        Tier::Three => tier3(&project, &cluster, &out_dir, args),
        Tier::All => {
            let started = std::time::Instant::now();
            // Tier 2 runs even when an image fails tier 1: its report says
            // more about why, and the run ends failed either way.
            let first = tier1(&project, &cluster, &out_dir, None, true);
            let second = tier2(&project, &cluster, &out_dir, boot_timeout);
            eprintln!(
                "habuild test --tier all: {:.0}s",
                started.elapsed().as_secs_f64()
            );
            match (first, second) {
                (Ok(()), Ok(())) => Ok(()),
                (Err(e), Ok(())) | (Ok(()), Err(e)) => Err(e),
                (Err(t1), Err(t2)) => Err(t2.context(format!("and tier 1: {t1:#}"))),
            }
        }
    }
}

fn tier2(project: &Project, cluster: &Cluster, out_dir: &Path, boot_timeout: u64) -> Result<()> {
    crate::host::doctor::require(&[
        "qemu-system-aarch64",
        "qemu-system-x86_64",
        "ip",
        "mcopy",
        "debugfs",
    ])?;
    let r = crate::qemu::tier2::run(
        project,
        cluster,
        out_dir,
        std::time::Duration::from_secs(boot_timeout),
    )?;
    eprintln!("report: {}", r.report.display());
    if !r.passed {
        bail!("tier 2 failed (see {})", r.report.display());
    }
    Ok(())
}

fn tier3(project: &Project, cluster: &Cluster, out_dir: &Path, args: &TestArgs) -> Result<()> {
    crate::host::doctor::require(&[
        "qemu-system-aarch64",
        "qemu-system-x86_64",
        "ip",
        "mcopy",
        "debugfs",
    ])?;
    let manifest = args
        .manifest
        .clone()
        .unwrap_or_else(|| project.root.join(crate::config::DEFAULT_MANIFEST));
    let secrets = crate::pki::store::resolve(&manifest, args.secrets.as_deref());
    let r = crate::qemu::tier3::run(
        project,
        cluster,
        out_dir,
        &crate::qemu::tier3::Tier3Options {
            manifest_path: &manifest,
            secrets_path: &secrets,
            timeout: std::time::Duration::from_secs(args.boot_timeout.unwrap_or(3600)),
            control_plane_memory: &args.control_plane_memory,
        },
    )?;
    eprint!("{}", r.text);
    eprintln!("report: {}", r.report.display());
    if !r.passed {
        bail!("tier 3 failed (see {})", r.report.display());
    }
    Ok(())
}

fn tier1(
    project: &Project,
    cluster: &Cluster,
    out_dir: &Path,
    node: Option<&str>,
    all: bool,
) -> Result<()> {
    let nodes: Vec<_> = match (node, all) {
        (Some(n), _) => vec![cluster
            .node(n)
            .ok_or_else(|| anyhow::anyhow!("the manifest has no node {n:?}"))?],
        (None, true) => cluster
            .nodes
            .iter()
            .filter(|n| out_dir.join(format!("{}.img", n.name)).is_file())
            .collect(),
        (None, false) => bail!("say which images: --node NAME or --all"),
    };
    if nodes.is_empty() {
        bail!(
            "no images in {} (build them with habuild image)",
            out_dir.display()
        );
    }
    let boards = nodes
        .iter()
        .map(|n| project.board(&n.board))
        .collect::<Result<Vec<_>>>()?;
    let mut tools: Vec<String> = ["mcopy", "debugfs", "fdtput", "dtc"]
        .map(String::from)
        .into();
    for b in &boards {
        if let Some(q) = &b.qemu {
            tools.push(format!("qemu-system-{}", q.system));
        }
    }
    tools.sort();
    tools.dedup();
    crate::host::doctor::require(&tools.iter().map(String::as_str).collect::<Vec<_>>())?;
    let mut failed = Vec::new();
    for (n, board) in nodes.into_iter().zip(boards) {
        eprintln!("tier 1: booting {} ({}) under QEMU", n.name, board.name);
        match crate::qemu::tier1::run(out_dir, cluster, n, &board, &project.root) {
            Ok(r) => {
                eprint!("{}", std::fs::read_to_string(&r.report).unwrap_or_default());
                if !r.passed {
                    failed.push(n.name.clone());
                }
            }
            Err(e) => {
                eprintln!("{}: tier 1 FAIL: {e:#}", n.name);
                failed.push(n.name.clone());
            }
        }
    }
    if !failed.is_empty() {
        bail!("tier 1 failed for: {}", failed.join(", "));
    }
    Ok(())
}

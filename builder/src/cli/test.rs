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
    /// Tier 2: seconds allowed for the cluster to boot and form (default
    /// 1200: five guests under TCG on two cores each get under half a core;
    /// tier 3: default 3600, the real programs under emulation are slow).
    #[arg(long)]
    pub boot_timeout: Option<u64>,
    /// Tier 3: the secrets file (default: beside the manifest).
    #[arg(long, env = "HABUILD_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Tier 3: memory of each control-plane guest.
    #[arg(long, default_value = "3G")]
    pub control_plane_memory: String,
    /// Tier 3: how the control planes are powered on. together: all at
    /// once, as a site does. one-at-a-time: each joiner only once the
    /// control plane before it has finished its first boot, so that no two
    /// control planes boot or join at once (for hosts with too few cores
    /// for the guests; the report names it).
    #[arg(long, value_enum, default_value = "together")]
    pub power_on: crate::qemu::tier3::PowerOn,
    /// Tier 3: vCPUs of the init node for its first boot (default: the same
    /// share as every control plane). With --power-on one-at-a-time the
    /// init node runs `kubeadm init` alone, and more vCPUs can help it
    /// there; once its first boot is done, the vCPUs above the share are
    /// taken offline, so that it leaves the host's cores to the joiners.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4))]
    pub init_node_cpus: Option<u16>,
    /// Tier 3: vCPUs of each joining control plane for its first boot (its
    /// `kubeadm join`; default: the share), then the share, as
    /// --init-node-cpus does for the init node. Meant for --power-on
    /// one-at-a-time, where only one node joins at a time.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4))]
    pub joiner_cpus: Option<u16>,
    /// Tier 3: boot the control planes' kernels with `highres=off`, so
    /// that their timers expire on the 4 ms tick. Under TCG every timer a
    /// guest arms wakes QEMU's main loop (over a thousand times a second
    /// on a busy control plane); on a host with too few cores that is CPU
    /// the guests lack. Not what a board runs, so the report names it.
    #[arg(long)]
    pub coarse_timers: bool,
    /// Print one JSON document (each tier's verdict; tier 1: every check
    /// of every node) on stdout; the reports stay on stderr.
    #[arg(long)]
    pub json: bool,
}

/// What one tier found: whether it passed, why not, and its JSON.
#[derive(Debug)]
pub struct TierOutcome {
    pub passed: bool,
    pub failure: String,
    pub json: serde_json::Value,
}

/// `test --json` (pure): `ok` only when every tier that ran passed.
pub fn outcomes_json(outcomes: &[TierOutcome]) -> serde_json::Value {
    serde_json::json!({
        "ok": outcomes.iter().all(|o| o.passed),
        "tiers": outcomes.iter().map(|o| &o.json).collect::<Vec<_>>(),
    })
}

/// Prints the JSON document (with `--json`) and fails if a tier failed.
fn finish(json: bool, outcomes: &[TierOutcome]) -> Result<()> {
    if json {
        super::output::document(&outcomes_json(outcomes))?;
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed)
        .map(|o| o.failure.as_str())
        .collect();
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
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

/// Tier 2's default `--boot-timeout`. Five guests under TCG on a 2-core
/// build machine took over 600 s to reach their first fact block (the
/// control planes' initramfs alone about 150 s), so 600 s failed CI.
const TIER2_BOOT_TIMEOUT_SECS: u64 = 1200;

pub fn run(args: &TestArgs) -> Result<()> {
    let project = Project::locate()?;
    let cluster = project.manifest(args.manifest.as_deref())?;
    let out_dir = args.out.join(&cluster.name);
    if args.tier != Tier::One && args.node.is_some() {
        return Err(crate::config::UsageError(
            "tiers 2 and 3 boot every node of the manifest: drop --node".into(),
        )
        .into());
    }
    let boot_timeout = args.boot_timeout.unwrap_or(TIER2_BOOT_TIMEOUT_SECS);
    let outcomes = match args.tier {
        Tier::One => vec![tier1(
            &project,
            &cluster,
            &out_dir,
            args.node.as_deref(),
            args.all,
        )?],
        Tier::Two => vec![tier2(&project, &cluster, &out_dir, boot_timeout)?],
        Tier::Three => vec![tier3(&project, &cluster, &out_dir, args)?],
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
                (Ok(a), Ok(b)) => vec![a, b],
                (Err(e), Ok(_)) | (Ok(_), Err(e)) => return Err(e),
                (Err(t1), Err(t2)) => return Err(t2.context(format!("and tier 1: {t1:#}"))),
            }
        }
    };
    finish(args.json, &outcomes)
}

fn tier2(
    project: &Project,
    cluster: &Cluster,
    out_dir: &Path,
    boot_timeout: u64,
) -> Result<TierOutcome> {
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
    Ok(TierOutcome {
        passed: r.passed,
        failure: format!("tier 2 failed (see {})", r.report.display()),
        json: serde_json::json!({"tier": "2", "passed": r.passed, "report": r.report}),
    })
}

fn tier3(
    project: &Project,
    cluster: &Cluster,
    out_dir: &Path,
    args: &TestArgs,
) -> Result<TierOutcome> {
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
            power_on: args.power_on,
            init_node_cpus: args.init_node_cpus.map(usize::from),
            joiner_cpus: args.joiner_cpus.map(usize::from),
            coarse_timers: args.coarse_timers,
        },
    )?;
    eprint!("{}", r.text);
    eprintln!("report: {}", r.report.display());
    Ok(TierOutcome {
        passed: r.passed,
        failure: format!("tier 3 failed (see {})", r.report.display()),
        json: serde_json::json!({"tier": "3", "passed": r.passed, "report": r.report}),
    })
}

fn tier1(
    project: &Project,
    cluster: &Cluster,
    out_dir: &Path,
    node: Option<&str>,
    all: bool,
) -> Result<TierOutcome> {
    let nodes: Vec<_> = match (node, all) {
        (Some(n), _) => crate::pipeline::select_nodes(
            cluster,
            &crate::pipeline::Selection::Node(n.to_string()),
            None,
        )?,
        (None, true) => cluster
            .nodes
            .iter()
            .filter(|n| out_dir.join(format!("{}.img", n.name)).is_file())
            .collect(),
        (None, false) => {
            return Err(
                crate::config::UsageError("say which images: --node NAME or --all".into()).into(),
            )
        }
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
    let mut results = Vec::new();
    for (n, board) in nodes.into_iter().zip(boards) {
        crate::util::progress::line(format!(
            "tier 1: booting {} ({}) under QEMU",
            n.name, board.name
        ));
        match crate::qemu::tier1::run(out_dir, cluster, n, &board, &project.root) {
            Ok(r) => {
                eprint!("{}", std::fs::read_to_string(&r.report).unwrap_or_default());
                if !r.passed {
                    failed.push(n.name.clone());
                }
                results.push(serde_json::json!({
                    "node": n.name,
                    "board": board.name,
                    "passed": r.passed,
                    "checks": r.checks.iter().map(|c| serde_json::json!({"ok": c.ok, "what": c.what})).collect::<Vec<_>>(),
                    "report": r.report,
                    "log": r.log,
                }));
            }
            Err(e) => {
                eprintln!("{}: tier 1 FAIL: {e:#}", n.name);
                failed.push(n.name.clone());
                results.push(serde_json::json!({
                    "node": n.name,
                    "board": board.name,
                    "passed": false,
                    "error": format!("{e:#}"),
                }));
            }
        }
    }
    Ok(TierOutcome {
        passed: failed.is_empty(),
        failure: format!("tier 1 failed for: {}", failed.join(", ")),
        json: serde_json::json!({"tier": "1", "passed": failed.is_empty(), "nodes": results}),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(tier: &str, passed: bool) -> TierOutcome {
        TierOutcome {
            passed,
            failure: format!("tier {tier} failed"),
            json: serde_json::json!({"tier": tier, "passed": passed}),
        }
    }

    #[test]
    fn the_document_holds_every_tier_and_fails_with_any() {
        let all = [outcome("1", true), outcome("2", false)];
        let d = outcomes_json(&all);
        assert_eq!(d["ok"], false);
        assert_eq!(d["tiers"][1]["tier"], "2");
        assert_eq!(outcomes_json(&all[..1])["ok"], true);
        let e = finish(false, &all).unwrap_err().to_string();
        assert_eq!(e, "tier 2 failed");
        assert!(finish(false, &all[..1]).is_ok());
    }
}

//! `habuild image`: loads and plans (`plan`; what the host decides first is
//! `inputs`), checks the lock (`locked`), then builds each selected node
//! as the named steps of `node`: base rootfs → layer → PKI → filesystems +
//! disk → artifacts → publishing (`output`).

mod inputs;
pub mod locked;
mod node;
pub mod output;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::config::board::PartitionTable;
use crate::config::{Cluster, Node, Project};
use crate::plan::{plan_node, KubernetesSource, NodePlan, PlanInputs};
use inputs::{resolve_kubernetes, resolve_mirror};
use node::{run_steps, NodeBuild, STEPS};

/// Which nodes of the manifest to build.
#[derive(Debug, Clone)]
pub enum Selection {
    /// `--node NAME`.
    Node(String),
    /// `--board B` alone: the first node of the manifest on that board.
    FirstOnBoard(String),
    /// `--all`.
    All,
}

/// How the user asked for Kubernetes and CRI-O packages.
#[derive(Debug, Clone, Default)]
pub struct KubernetesChoice {
    pub bundle: Option<PathBuf>,
    pub keyring: Option<PathBuf>,
    pub without: bool,
}

/// What decides the images' plans: the manifest, the profile, where the
/// packages come from, and the disk's shape.
#[derive(Debug, Clone)]
pub struct PlanRequest {
    pub project: Project,
    pub manifest: Option<PathBuf>,
    pub selection: Selection,
    /// `--board` given together with `--node`: must agree.
    pub board: Option<String>,
    pub distro: Option<String>,
    pub mirror: Option<String>,
    pub kubernetes: KubernetesChoice,
    pub partition_table: Option<PartitionTable>,
    pub image_size: Option<u64>,
    pub ext4_writer: crate::config::Ext4Writer,
    pub source_date_epoch: i64,
}

#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub plan: PlanRequest,
    /// `--secrets FILE`; default: beside the manifest (`pki::store`).
    pub secrets: Option<PathBuf>,
    /// `--lock FILE`; default: `habuild.lock` beside the manifest, if there.
    pub lock: Option<PathBuf>,
    pub out_dir: PathBuf,
    pub cache_dir: PathBuf,
}

/// The selected nodes' plans.
#[derive(Debug, Clone)]
pub struct Planned {
    pub cluster: Cluster,
    /// The manifest file (the default one when none was named).
    pub manifest: PathBuf,
    pub plans: Vec<NodePlan>,
}

#[derive(Debug, Clone)]
pub struct BuiltNode {
    pub node: String,
    pub role: crate::config::Role,
    pub image: PathBuf,
    pub image_size: u64,
    pub base_reused: bool,
    pub kubernetes_included: bool,
    pub seconds: f64,
}

pub fn select_nodes<'a>(
    cluster: &'a Cluster,
    selection: &Selection,
    board: Option<&str>,
) -> Result<Vec<&'a Node>> {
    let nodes: Vec<&Node> = match selection {
        Selection::All => cluster.nodes.iter().collect(),
        Selection::Node(name) => {
            let n = cluster.node(name).with_context(|| {
                format!(
                    "the manifest has no node {name:?} (nodes: {})",
                    cluster
                        .nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            if let Some(b) = board {
                if n.board != b {
                    bail!("node {name} is on board {}, not {b}", n.board);
                }
            }
            vec![n]
        }
        Selection::FirstOnBoard(b) => {
            vec![cluster
                .nodes
                .iter()
                .find(|n| &n.board == b)
                .with_context(|| format!("the manifest has no node on board {b:?}"))?]
        }
    };
    Ok(nodes)
}

/// Loads the manifest and plans every selected node (no image work).
pub fn plan(req: &PlanRequest) -> Result<Planned> {
    let mut cluster = req.project.manifest(req.manifest.as_deref())?;
    if let Some(d) = &req.distro {
        let known = req.project.distro_names()?;
        if !known.contains(d) {
            bail!("--distro {d:?} is unknown; known: {}", known.join(", "));
        }
        cluster.distro = d.clone();
    }
    for w in crate::config::checks::warnings(&cluster) {
        eprintln!("WARNING: {w}");
    }
    let nodes = select_nodes(&cluster, &req.selection, req.board.as_deref())?;
    let distro = req.project.distro(&cluster.distro)?;
    // Directors install no Kubernetes packages: building only directors
    // needs neither pkgs.k8s.io nor a bundle.
    let kubernetes = if nodes
        .iter()
        .any(|n| n.role == crate::config::Role::ControlPlane)
    {
        resolve_kubernetes(&req.kubernetes, &cluster)?
    } else {
        KubernetesSource::Without
    };
    let mut plans = Vec::new();
    for node in &nodes {
        let board = req.project.board(&node.board)?;
        let mirror = resolve_mirror(&distro, board.arch.debian_name(), req.mirror.as_deref())?;
        let inputs = PlanInputs {
            project_root: req.project.root.clone(),
            mirror,
            kubernetes: kubernetes.clone(),
            partition_table: req.partition_table,
            image_size: req.image_size,
            ext4_writer: req.ext4_writer,
            source_date_epoch: req.source_date_epoch,
        };
        plans.push(
            plan_node(&cluster, node, &board, &distro, &inputs)
                .with_context(|| format!("planning node {}", node.name))?,
        );
    }
    let manifest = req
        .manifest
        .clone()
        .unwrap_or_else(|| req.project.root.join(crate::config::DEFAULT_MANIFEST));
    Ok(Planned {
        cluster,
        manifest,
        plans,
    })
}

/// Builds every selected node; returns what was built.
pub fn build(req: &BuildRequest) -> Result<Vec<BuiltNode>> {
    let Planned {
        cluster,
        manifest,
        plans,
    } = plan(&req.plan)?;
    let out_dir = req.out_dir.join(&cluster.name);
    let secrets = crate::pki::store::for_build(
        &manifest,
        req.secrets.as_deref(),
        &cluster,
        plans
            .iter()
            .any(|p| p.node.role == crate::config::Role::ControlPlane),
    )?;
    // Before any image work: every selected image's base is in the lock.
    let lock = locked::load(req.lock.as_deref(), &manifest)?;
    let pins = match &lock {
        Some(l) => locked::entries(l, &plans)?.into_iter().map(Some).collect(),
        None => vec![None; plans.len()],
    };
    for line in crate::util::workdir::remove_stale(&req.cache_dir)? {
        eprintln!("{line}");
    }
    for node in output::recover(&out_dir)? {
        eprintln!(
            "completed the interrupted publish of {node} in {}",
            out_dir.display()
        );
    }
    let mut built = Vec::new();
    for (plan, pin) in plans.iter().zip(pins) {
        let node = &plan.node;
        eprintln!(
            "building {} ({} on {}, {})",
            node.name,
            node.role.as_str(),
            plan.board.name,
            plan.distro.pretty_name
        );
        if let KubernetesSource::Without = plan.kubernetes {
            if node.role == crate::config::Role::ControlPlane {
                eprintln!("  WARNING: built WITHOUT kubeadm, kubelet, kubectl and CRI-O (--without-kubernetes): their configuration is baked in, the packages are not; {}.json says so", node.name);
            }
        }
        let pin = pin.zip(lock.as_ref()).map(|(base, l)| locked::Pin {
            file: &l.path,
            base,
        });
        let started = Instant::now();
        let mut b = NodeBuild::new(plan, &out_dir, &req.cache_dir, secrets.as_ref(), pin)?;
        run_steps(&mut b, STEPS).with_context(|| format!("building the image of {}", node.name))?;
        built.push(b.built(started));
    }
    Ok(built)
}

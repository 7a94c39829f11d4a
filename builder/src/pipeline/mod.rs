//! `habuild image`: loads and plans (`plan`; what the host decides first is
//! `inputs`), checks the lock (`locked`), then builds each selected node
//! as the named steps of `node`: base rootfs → layer → PKI → filesystems +
//! disk → artifacts → publishing (`output`).

pub mod dry_run;
mod inputs;
pub mod locked;
mod node;
pub mod output;
#[cfg(test)]
mod select_tests;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::config::board::PartitionTable;
use crate::config::{Cluster, Node, Project, UsageError};
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
    /// `--ssh-key FILE`s: their keys are added to the manifest's `[ssh]`.
    pub ssh_keys: Vec<PathBuf>,
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
    /// `--allow-no-login`: build images nobody can log into (see
    /// `config::manifest::ssh::require_login`).
    pub allow_no_login: bool,
    /// Host tools the build needs, checked after the configuration (so a
    /// bad manifest is reported even on a host without them).
    pub tools: Vec<&'static str>,
    /// `--compress`: publish `<node>.img.zst` / `.img.xz` instead of `.img`.
    pub compress: Option<crate::artifact::compression::Format>,
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
    /// The published image (`.img`, or `.img.zst`/`.img.xz` when compressed).
    pub image: PathBuf,
    /// The disk's size (the decompressed image's).
    pub image_size: u64,
    /// The compressed file's size and the seconds compressing took.
    pub compressed: Option<(u64, f64)>,
    pub base_reused: bool,
    pub kubernetes_included: bool,
    pub seconds: f64,
}

/// The selected nodes of the manifest. A node or board that is not there
/// is a usage error (exit status 2) listing what is.
pub fn select_nodes<'a>(
    cluster: &'a Cluster,
    selection: &Selection,
    board: Option<&str>,
) -> Result<Vec<&'a Node>> {
    let listed = || {
        cluster
            .nodes
            .iter()
            .map(|n| format!("{} ({})", n.name, n.board))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let nodes: Vec<&Node> = match selection {
        Selection::All => cluster.nodes.iter().collect(),
        Selection::Node(name) => {
            let Some(n) = cluster.node(name) else {
                return Err(UsageError(format!(
                    "the manifest has no node {name:?}; its nodes: {}",
                    listed()
                ))
                .into());
            };
            if let Some(b) = board {
                if n.board != b {
                    return Err(UsageError(format!(
                        "node {name} is on board {}, not {b}",
                        n.board
                    ))
                    .into());
                }
            }
            vec![n]
        }
        Selection::FirstOnBoard(b) => match cluster.nodes.iter().find(|n| &n.board == b) {
            Some(n) => vec![n],
            None => {
                return Err(UsageError(format!(
                    "the manifest has no node on board {b:?}; its nodes: {}",
                    listed()
                ))
                .into())
            }
        },
    };
    Ok(nodes)
}

/// `--board B` must name a board of `boards/`: a usage error listing them.
pub fn check_board(board: &str, known: &[String]) -> Result<(), UsageError> {
    if known.iter().any(|k| k == board) {
        return Ok(());
    }
    Err(UsageError(format!(
        "--board {board:?} is not a known board; known boards: {}",
        known.join(", ")
    )))
}

/// Loads the manifest and plans every selected node (no image work).
pub fn plan(req: &PlanRequest) -> Result<Planned> {
    let mut cluster = req.project.manifest(req.manifest.as_deref())?;
    let board = match &req.selection {
        Selection::FirstOnBoard(b) => Some(b.as_str()),
        _ => req.board.as_deref(),
    };
    if let Some(b) = board {
        check_board(b, &req.project.board_names()?)?;
    }
    if let Some(d) = &req.distro {
        let known = req.project.distro_names()?;
        if !known.contains(d) {
            return Err(UsageError(format!(
                "--distro {d:?} is unknown; known: {}",
                known.join(", ")
            ))
            .into());
        }
        cluster.distro = d.clone();
    }
    let extra = ssh_keys_from_files(&req.ssh_keys)?;
    crate::config::manifest::ssh::add_keys(&mut cluster.ssh, extra);
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

/// The keys of every `--ssh-key` file, in order; every bad line of every
/// file is reported at once (a configuration error, exit status 2).
fn ssh_keys_from_files(files: &[PathBuf]) -> Result<Vec<String>> {
    use crate::config::{ConfigError, ConfigErrors};
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => match crate::config::manifest::ssh::keys_from_file(f, &text) {
                Ok(k) => keys.extend(k),
                Err(e) => problems.extend(e.0),
            },
            Err(e) => problems.push(ConfigError {
                file: f.clone(),
                key: "--ssh-key".into(),
                problem: format!("cannot be read: {e}"),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(ConfigErrors(problems).into());
    }
    Ok(keys)
}

/// Each plan's base in the lock, when there is a lock.
fn pins<'a>(
    lock: Option<&'a locked::LockInUse>,
    plans: &[NodePlan],
) -> Result<Vec<Option<locked::Pin<'a>>>> {
    Ok(match lock {
        Some(l) => locked::entries(l, plans)?
            .into_iter()
            .map(|base| {
                Some(locked::Pin {
                    file: &l.path,
                    base,
                })
            })
            .collect(),
        None => vec![None; plans.len()],
    })
}

/// A base made ready by `bases`.
#[derive(Debug, Clone)]
pub struct ReadyBase {
    pub node: String,
    pub key: String,
    pub tree: PathBuf,
    /// Found in the cache rather than bootstrapped now.
    pub reused: bool,
    pub seconds: f64,
}

/// `habuild image --bases-only`: the first step of each selected node's
/// build (its base root filesystem, found in the cache or bootstrapped
/// into it, pinned by the lock when there is one) and nothing after it.
/// Bases carry no login, secret or node identity, so neither secrets nor
/// an SSH key are required, and no output directory is touched. Fills the
/// cache ahead of builds: before going offline, or early in CI.
pub fn bases(req: &BuildRequest) -> Result<Vec<ReadyBase>> {
    let Planned {
        manifest, plans, ..
    } = plan(&req.plan)?;
    let lock = locked::load(req.lock.as_deref(), &manifest)?;
    let pins = pins(lock.as_ref(), &plans)?;
    crate::host::doctor::require(&["mmdebstrap"])?;
    let mut ready = Vec::new();
    for (plan, pin) in plans.iter().zip(pins) {
        crate::util::progress::line(format!(
            "base of {} ({} on {}, {})",
            plan.node.name,
            plan.node.role.as_str(),
            plan.board.name,
            plan.distro.pretty_name
        ));
        let started = Instant::now();
        let mut b = NodeBuild::new(plan, &req.out_dir, &req.cache_dir, None, pin)?;
        run_steps(&mut b, &STEPS[..1])
            .with_context(|| format!("making the base of {}", plan.node.name))?;
        let base = b.base();
        ready.push(ReadyBase {
            node: plan.node.name.clone(),
            key: base.key.clone(),
            tree: base.tree.clone(),
            reused: base.reused,
            seconds: started.elapsed().as_secs_f64(),
        });
    }
    Ok(ready)
}

/// Builds every selected node; returns what was built.
pub fn build(req: &BuildRequest) -> Result<Vec<BuiltNode>> {
    let Planned {
        cluster,
        manifest,
        plans,
    } = plan(&req.plan)?;
    let names: Vec<&str> = plans.iter().map(|p| p.node.name.as_str()).collect();
    crate::config::manifest::ssh::require_login(
        &cluster.ssh,
        &manifest,
        req.allow_no_login,
        &names,
    )?;
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
    let pins = pins(lock.as_ref(), &plans)?;
    crate::host::doctor::require(&req.tools)?;
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
        crate::util::progress::line(format!(
            "building {} ({} on {}, {})",
            node.name,
            node.role.as_str(),
            plan.board.name,
            plan.distro.pretty_name
        ));
        if let KubernetesSource::Without = plan.kubernetes {
            if node.role == crate::config::Role::ControlPlane {
                eprintln!("  WARNING: built WITHOUT kubeadm, kubelet, kubectl and CRI-O (--without-kubernetes): their configuration is baked in, the packages are not; {}.json says so", node.name);
            }
        }
        let started = Instant::now();
        let mut b = NodeBuild::new(plan, &out_dir, &req.cache_dir, secrets.as_ref(), pin)?
            .compressed(req.compress);
        run_steps(&mut b, STEPS).with_context(|| format!("building the image of {}", node.name))?;
        built.push(b.built(started));
    }
    Ok(built)
}

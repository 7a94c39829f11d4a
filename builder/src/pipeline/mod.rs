//! `habuild image`: runs the stages in order for each selected node.
//! manifest → plan → base rootfs → layer → filesystems + disk → artifacts.

pub mod context;
pub mod locked;
pub mod output;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::artifact;
use crate::config::{Cluster, Node, Project};
use crate::disk::layout::{
    default_image_size, plan_layout, PartitionRequest, PartitionRole, PartitionTable,
};
use crate::plan::{plan_node, KubernetesSource, NodePlan, PlanInputs};
use crate::rootfs::{base, layer};
use crate::util::cleanup;
use crate::util::progress::Step;
use output::PendingArtifacts;
use report::{BundleDeb, FilesReport, ImageReport, KubernetesReport, NodeReport};

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
    pub ext4_writer: crate::fs::Ext4Writer,
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
        built.push(
            build_node(plan, &out_dir, &req.cache_dir, secrets.as_ref(), pin)
                .with_context(|| format!("building the image of {}", node.name))?,
        );
    }
    Ok(built)
}

fn resolve_mirror(
    distro: &crate::config::Distro,
    arch: &str,
    flag: Option<&str>,
) -> Result<String> {
    if let Some(m) = flag {
        return Ok(m.trim_end_matches('/').to_string());
    }
    if distro.mirror.from_host {
        return crate::host::apt_sources::host_debian_mirror();
    }
    distro.mirror.by_arch.get(arch).cloned().with_context(|| {
        format!(
            "distro {} names no archive for {arch}; pass --mirror URL",
            distro.name
        )
    })
}

fn resolve_kubernetes(choice: &KubernetesChoice, cluster: &Cluster) -> Result<KubernetesSource> {
    match (&choice.bundle, choice.without) {
        (Some(_), true) => bail!("--k8s-bundle and --without-kubernetes exclude each other"),
        (None, true) => Ok(KubernetesSource::Without),
        (Some(dir), false) => {
            let dir = std::fs::canonicalize(dir).with_context(|| {
                format!("reading the offline bundle directory {}", dir.display())
            })?;
            let mut debs: Vec<PathBuf> = std::fs::read_dir(&dir)
                .with_context(|| format!("listing the offline bundle {}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "deb"))
                .collect();
            debs.sort();
            if debs.is_empty() {
                bail!("the offline bundle {} holds no .deb files", dir.display());
            }
            verify_bundle_sums(&dir, &debs)?;
            Ok(KubernetesSource::Bundle { dir, debs })
        }
        (None, false) => {
            let sources = crate::plan::pkgs_k8s_io_sources(cluster, Path::new("/dev/null"));
            crate::rootfs::reach::check_sources(&sources, std::time::Duration::from_secs(10))?;
            let keyring = choice
                .keyring
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_K8S_KEYRING));
            if !keyring.is_file() {
                bail!(
                    "the pkgs.k8s.io signing keyring {} is missing: fetch it with\n  curl -fsSL https://pkgs.k8s.io/core:/stable:/v{}/deb/Release.key | gpg --dearmor -o {}\n(check its fingerprint DE15 B144 86CD 377B 9E87 6E1A 2346 54DA 9A29 6436), and add CRI-O's key (https://pkgs.k8s.io/addons:/cri-o:/stable:/v{}/deb/Release.key) to the same keyring, or pass --k8s-keyring FILE",
                    keyring.display(),
                    cluster.kubernetes_version.rsplit_once('.').map_or("", |v| v.0),
                    keyring.display(),
                    cluster.crio_version
                );
            }
            Ok(KubernetesSource::Upstream { keyring })
        }
    }
}

/// Where the Kubernetes install guide puts the pkgs.k8s.io key.
pub const DEFAULT_K8S_KEYRING: &str = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg";

/// A bundle may carry `SHA256SUMS`; when it does, every .deb must match it.
fn verify_bundle_sums(dir: &Path, debs: &[PathBuf]) -> Result<()> {
    let sums_path = dir.join("SHA256SUMS");
    if !sums_path.is_file() {
        return Ok(());
    }
    let sums = output::parse_sums(
        &std::fs::read_to_string(&sums_path)
            .with_context(|| format!("reading {}", sums_path.display()))?,
    );
    for deb in debs {
        let name = deb.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let expected = sums
            .get(name)
            .with_context(|| format!("{} does not list {name}", sums_path.display()))?;
        let actual = artifact::checksums::sha256_file(deb)?;
        if &actual != expected {
            bail!("{name} in the offline bundle does not match {} (sha256 {actual}, expected {expected})", sums_path.display());
        }
    }
    Ok(())
}

fn build_node(
    plan: &NodePlan,
    out_dir: &Path,
    cache_dir: &Path,
    secrets: Option<&crate::pki::ClusterSecrets>,
    pin: Option<locked::Pin>,
) -> Result<BuiltNode> {
    let started = Instant::now();
    let node = &plan.node.name;
    let base = match pin {
        Some(pin) => locked::ensure_pinned_base(plan, cache_dir, pin)?,
        None => base::ensure_base(&plan.base, cache_dir, None)?,
    };
    if base.reused {
        eprintln!("  {:<44} {:>7}", "base root filesystem (cached)", "0.0s");
    }

    let work_dir = crate::util::workdir::create(cache_dir, node)?;
    let work = work_dir.path.clone();
    let step = Step::start("layering overlays and node identity");
    let mut ctx = context::render_context(plan);
    ctx.kubeadm = secrets.and_then(|s| crate::pki::kubeadm_context(plan, s));
    let staged = layer::stage(plan, &base.tree, &work, &ctx)?;
    step.finish();
    if plan.node.role == crate::config::Role::Director {
        // Before anything is assembled: a value keepalived rejects stops here.
        let step = Step::start("checking keepalived.conf (--config-test)");
        crate::rootfs::keepalived::check_staged_root(&staged.root_tree)?;
        step.finish();
    }

    let pending = output::pending_dir(out_dir, node)?;
    let _pending_guard = cleanup::remove_on_exit(&pending);
    let image_name = format!("{node}.img");
    let image_path = pending.join(&image_name);

    // The cluster's CAs and service-account key, after the overlays.
    let pki = match secrets.filter(|_| plan.node.role == crate::config::Role::ControlPlane) {
        Some(s) => Some(crate::pki::stage::install(
            &staged.root_tree,
            s,
            &staged.root_files,
        )?),
        None => None,
    };
    if let Some(p) = &pki {
        eprintln!(
            "  secrets in this image (mode 0600): {}",
            p.report.secret_files.join(", ")
        );
    }

    let step = Step::start("making filesystems and the disk image");
    let boot_role = if plan.board.boot_mount == "/boot/efi" {
        PartitionRole::Esp
    } else {
        PartitionRole::Boot
    };
    let total = match plan.disk.image_size {
        Some(s) => s,
        None => default_image_size(
            plan.disk.boot_size,
            staged.root_bytes,
            plan.disk.power_of_two,
        ),
    };
    let requests = [
        PartitionRequest {
            label: plan.board.boot_label.clone(),
            role: boot_role,
            size: Some(plan.disk.boot_size),
        },
        PartitionRequest {
            label: plan.board.root_label.clone(),
            role: PartitionRole::Root,
            size: None,
        },
    ];
    let layout = plan_layout(plan.disk.table, plan.board.arch, &requests, total)
        .with_context(|| format!("laying out a {total}-byte disk"))?;
    let seed = format!("habuild/{}/{}", plan.cluster.name, node);
    let assembled = crate::disk::assemble(
        &crate::disk::AssembleRequest {
            layout: &layout,
            boot_tree: &staged.boot_tree,
            root_tree: &staged.root_tree,
            seed: seed.as_bytes(),
            source_date_epoch: plan.source_date_epoch,
            boot_label: &plan.board.boot_label,
            root_label: &plan.board.root_label,
            ext4_writer: plan.disk.ext4_writer,
        },
        &image_path,
    )?;
    step.finish();

    let step = Step::start("writing bmap, firmware bundle, checksums");
    let bmap_name = format!("{image_name}.bmap");
    artifact::bmap::write_bmap(&image_path, &pending.join(&bmap_name))?;
    let fw_name = format!("{node}-firmware.tar.gz");
    artifact::firmware::write_firmware_bundle(
        &staged.boot_tree,
        &pending.join(&fw_name),
        plan.source_date_epoch,
    )?;
    // An image with the cluster's keys is as private as the secrets file,
    // and so is its firmware bundle (none there today; nothing relies on it).
    if pki.is_some() {
        output::make_private(&image_path)?;
        output::make_private(&pending.join(&fw_name))?;
    }

    let kubernetes_included = !matches!(plan.kubernetes, KubernetesSource::Without);
    let report = NodeReport {
        habuild_version: env!("CARGO_PKG_VERSION"),
        cluster: plan.cluster.name.clone(),
        node: node.clone(),
        role: plan.node.role.as_str().into(),
        address: plan.node.address.to_string(),
        board: plan.board.name.clone(),
        arch: plan.board.arch.debian_name().into(),
        distro: plan.distro.name.clone(),
        distro_name: plan.distro.pretty_name.clone(),
        kubernetes: kubernetes_report(plan)?,
        base_key: base.key.clone(),
        source_date_epoch: plan.source_date_epoch,
        image: ImageReport {
            file: image_name.clone(),
            size: layout.total_size,
            partition_table: format!("{:?}", plan.disk.table).to_lowercase(),
            ext4_writer: plan.disk.ext4_writer,
            layout: assembled,
        },
        packages: base.packages.clone(),
        files: FilesReport {
            root: crate::pki::stage::with_files(&staged.root_files, pki.as_ref()),
            boot: staged.boot_files.clone(),
        },
        secrets: pki.map(|p| p.report),
    };
    let json_name = format!("{node}.json");
    let json = serde_json::to_vec_pretty(&report).context("serialising the node report")?;
    std::fs::write(pending.join(&json_name), json)
        .with_context(|| format!("writing {json_name}"))?;

    // The image goes last, so a reader that sees it sees everything else.
    let mut files = Vec::new();
    for name in [&bmap_name, &fw_name, &json_name, &image_name] {
        files.push((
            name.clone(),
            artifact::checksums::sha256_file(&pending.join(name))?,
        ));
    }
    step.finish();
    output::publish(
        out_dir,
        PendingArtifacts {
            dir: pending.clone(),
            files,
        },
    )?;

    Ok(BuiltNode {
        node: node.clone(),
        role: plan.node.role,
        image: out_dir.join(&image_name),
        image_size: layout.total_size,
        base_reused: base.reused,
        kubernetes_included,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn kubernetes_report(plan: &NodePlan) -> Result<KubernetesReport> {
    let (source, bundle, note) = match &plan.kubernetes {
        KubernetesSource::Upstream { .. } => ("upstream", vec![], None),
        KubernetesSource::Bundle { debs, .. } => {
            let mut b = Vec::new();
            for d in debs {
                b.push(BundleDeb { file: d.file_name().unwrap_or_default().to_string_lossy().into(), sha256: artifact::checksums::sha256_file(d)? });
            }
            ("bundle", b, None)
        }
        KubernetesSource::Without => (
            "without",
            vec![],
            (plan.node.role == crate::config::Role::ControlPlane)
                .then(|| "built with --without-kubernetes: kubeadm, kubelet, kubectl and CRI-O are NOT installed; their configuration is baked in".to_string()),
        ),
    };
    Ok(KubernetesReport {
        source: source.into(),
        packages_included: source != "without",
        kubernetes_version: plan.cluster.kubernetes_version.clone(),
        crio_version: plan.cluster.crio_version.clone(),
        bundle,
        note,
    })
}

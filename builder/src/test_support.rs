//! What the crate's unit tests share: the repository's own data and plans
//! made from its manifests the way `habuild image` makes them (no I/O
//! beyond reading the repository).

use std::path::PathBuf;

use crate::config::{Cluster, Project};
use crate::plan::{plan_node, KubernetesSource, NodePlan, PlanInputs};

/// The repository root: boards/, manifests/, overlays/, tests/.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ has a parent")
        .to_path_buf()
}

/// The seed document's cluster.
pub const SEED: &str = "manifests/seed.toml";

/// The plan of `node` in `manifest` (relative to the repository root),
/// after `edit` changed the validated manifest; without Kubernetes
/// packages, against a mirror that is never contacted.
pub fn plan(manifest: &str, node: &str, edit: impl FnOnce(&mut Cluster)) -> NodePlan {
    let root = repo_root();
    let project = Project::at(&root).unwrap();
    let mut cluster = project.manifest(Some(&root.join(manifest))).unwrap();
    edit(&mut cluster);
    let node = cluster.node(node).unwrap().clone();
    let inputs = PlanInputs {
        project_root: root,
        mirror: "http://archive.invalid/debian".into(),
        kubernetes: KubernetesSource::Without,
        partition_table: None,
        image_size: None,
        ext4_writer: Default::default(),
        source_date_epoch: 0,
    };
    plan_node(
        &cluster,
        &node,
        &project.board(&node.board).unwrap(),
        &project.distro(&cluster.distro).unwrap(),
        &inputs,
    )
    .unwrap()
}

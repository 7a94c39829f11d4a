//! `habuild image --dry-run`: what a build would do, from the same plans
//! as a build (`plan`), and nothing written: the nodes, their boards and
//! distro, where their packages come from, whether each base is in the
//! cache, and the files that would be published.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::{plan, BuildRequest};
use crate::artifact::compression;
use crate::plan::{KubernetesSource, NodePlan};

/// One node as the build would make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDryRun {
    pub node: String,
    pub role: String,
    pub board: String,
    pub arch: String,
    pub distro: String,
    /// One line per apt source (`deb URI SUITE COMPONENTS`), then the
    /// Kubernetes packages' origin.
    pub sources: Vec<String>,
    pub kubernetes: String,
    pub base_key: String,
    pub base_cached: bool,
    pub outputs: Vec<PathBuf>,
}

/// The whole dry run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DryRun {
    pub cluster: String,
    pub manifest: PathBuf,
    pub cache_dir: PathBuf,
    pub nodes: Vec<NodeDryRun>,
}

/// The files a node's build publishes in `out_dir` (`<out>/<cluster>`).
pub fn outputs(out_dir: &Path, node: &str, compress: Option<compression::Format>) -> Vec<PathBuf> {
    let image = format!("{node}.img");
    let published = match compress {
        Some(f) => compression::compressed_name(&image, f),
        None => image.clone(),
    };
    [
        published,
        format!("{image}.bmap"),
        format!("{node}.json"),
        crate::artifact::sbom::file_name(node),
        format!("{node}-firmware.tar.gz"),
        crate::artifact::checksums::SHA256SUMS.to_string(),
    ]
    .into_iter()
    .map(|n| out_dir.join(n))
    .collect()
}

fn kubernetes(plan: &NodePlan) -> String {
    match &plan.kubernetes {
        _ if plan.node.role != crate::config::Role::ControlPlane => "none (director)".into(),
        KubernetesSource::Upstream { keyring } => {
            format!(
                "upstream apt repositories, verified with {}",
                keyring.display()
            )
        }
        KubernetesSource::Bundle { dir, debs } => {
            format!("bundle {} ({} .deb files)", dir.display(), debs.len())
        }
        KubernetesSource::Without => "WITHOUT (--without-kubernetes)".into(),
    }
}

/// Plans the build and looks the bases up in the cache; writes nothing.
pub fn dry_run(req: &BuildRequest) -> Result<DryRun> {
    let planned = plan(&req.plan)?;
    let out_dir = req.out_dir.join(&planned.cluster.name);
    let mut nodes = Vec::new();
    for p in &planned.plans {
        let (base_key, base_cached) = crate::rootfs::base::cached(&p.base, &req.cache_dir)?;
        let mut sources: Vec<String> = p.base.sources.iter().flat_map(|s| s.lines()).collect();
        if !p.base.local_debs.is_empty() {
            sources.push(format!("{} local .deb files", p.base.local_debs.len()));
        }
        nodes.push(NodeDryRun {
            node: p.node.name.clone(),
            role: p.node.role.as_str().into(),
            board: p.board.name.clone(),
            arch: p.board.arch.debian_name().into(),
            distro: p.distro.pretty_name.clone(),
            sources,
            kubernetes: kubernetes(p),
            base_key,
            base_cached,
            outputs: outputs(&out_dir, &p.node.name, req.compress),
        });
    }
    Ok(DryRun {
        cluster: planned.cluster.name,
        manifest: planned.manifest,
        cache_dir: req.cache_dir.clone(),
        nodes,
    })
}

/// The dry run as text, one block per node.
pub fn render(d: &DryRun) -> String {
    let mut s = format!(
        "dry run: nothing is built or written\ncluster {} (manifest {})\nbase cache {}\n",
        d.cluster,
        d.manifest.display(),
        d.cache_dir.display()
    );
    for n in &d.nodes {
        s.push_str(&format!(
            "\n{} ({} on {}, {}, {})\n",
            n.node, n.role, n.board, n.arch, n.distro
        ));
        s.push_str("  package sources:\n");
        for src in &n.sources {
            s.push_str(&format!("    {src}\n"));
        }
        s.push_str(&format!("  kubernetes: {}\n", n.kubernetes));
        s.push_str(&format!(
            "  base {}: {}\n",
            n.base_key,
            if n.base_cached {
                "cache hit (reused)"
            } else {
                "cache miss (would bootstrap)"
            }
        ));
        s.push_str("  would write:\n");
        for o in &n.outputs {
            s.push_str(&format!("    {}\n", o.display()));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_follow_the_compression() {
        let o = outputs(Path::new("out/seed"), "n1", Some(compression::Format::Xz));
        assert_eq!(o[0], Path::new("out/seed/n1.img.xz"));
        assert_eq!(o[1], Path::new("out/seed/n1.img.bmap"));
        assert!(o.contains(&PathBuf::from("out/seed/n1.cdx.json")));
        assert_eq!(
            outputs(Path::new("o"), "n1", None)[0],
            Path::new("o/n1.img")
        );
    }

    #[test]
    fn render_says_hit_or_miss_for_each_base() {
        let node = |name: &str, hit| NodeDryRun {
            node: name.into(),
            role: "director".into(),
            board: "amd64-uefi".into(),
            arch: "amd64".into(),
            distro: "Debian 13".into(),
            sources: vec!["deb [signed-by=/k.gpg] http://m/debian trixie main".into()],
            kubernetes: "none (director)".into(),
            base_key: format!("key-{name}"),
            base_cached: hit,
            outputs: outputs(Path::new("out/c"), name, None),
        };
        let text = render(&DryRun {
            cluster: "c".into(),
            manifest: "m.toml".into(),
            cache_dir: "/cache".into(),
            nodes: vec![node("a", true), node("b", false)],
        });
        assert!(text.contains("base key-a: cache hit"), "{text}");
        assert!(text.contains("base key-b: cache miss"), "{text}");
        assert!(text.contains("    out/c/b.img.bmap\n"), "{text}");
        assert!(text.starts_with("dry run: nothing is built"), "{text}");
    }
}

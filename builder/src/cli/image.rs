//! `habuild image`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::config::Project;
use crate::disk::layout::PartitionTable;
use crate::pipeline::{self, BuildRequest, KubernetesChoice, Selection};

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Board of the image; alone, builds the manifest's first node on it.
    #[arg(long)]
    pub board: Option<String>,
    /// Build this node of the manifest.
    #[arg(long)]
    pub node: Option<String>,
    /// Build every node of the manifest.
    #[arg(long, conflicts_with_all = ["node", "board"])]
    pub all: bool,
    /// Cluster manifest (default: manifests/seed.toml, the seed's cluster).
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Cluster secrets file (default: beside the manifest, <stem>.secrets.toml;
    /// create it with `habuild secrets init`).
    #[arg(long, env = "HABUILD_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Distro profile, overriding the manifest's `cluster.distro`.
    #[arg(long)]
    pub distro: Option<String>,
    /// Output directory; artifacts go to <out>/<cluster>/.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Cache of base root filesystems.
    #[arg(long, env = "HABUILD_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Archive URL (default: the host's Debian mirror for Debian, the profile's archive otherwise).
    #[arg(long, env = "HABUILD_DEBIAN_MIRROR")]
    pub mirror: Option<String>,
    /// Offline bundle: a directory of .deb files with kubeadm, kubelet, kubectl and CRI-O.
    #[arg(long, value_name = "DIR")]
    pub k8s_bundle: Option<PathBuf>,
    /// Keyring that verifies the pkgs.k8s.io repositories.
    #[arg(long, value_name = "FILE")]
    pub k8s_keyring: Option<PathBuf>,
    /// Build control planes without the Kubernetes and CRI-O packages (their configuration is still baked in).
    #[arg(long)]
    pub without_kubernetes: bool,
    /// Partition table (default: the board's).
    #[arg(long, value_parser = parse_table)]
    pub partition_table: Option<PartitionTable>,
    /// Image size, e.g. 4G or 3500M (default: root filesystem plus headroom).
    #[arg(long, value_parser = parse_size)]
    pub image_size: Option<u64>,
    /// Timestamp for every file and filesystem (reproducible builds).
    #[arg(long, env = "SOURCE_DATE_EPOCH")]
    pub source_date_epoch: Option<i64>,
}

fn parse_table(s: &str) -> Result<PartitionTable, String> {
    match s {
        "mbr" => Ok(PartitionTable::Mbr),
        "gpt" => Ok(PartitionTable::Gpt),
        _ => Err(format!("{s:?}: expected mbr or gpt")),
    }
}

/// "4G", "3500M", "512MiB", "1073741824": binary units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 4G or 3500M"))?;
    let shift = match unit.trim().trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .filter(|v| *v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("habuild");
    }
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => PathBuf::from(h).join(".cache/habuild"),
        _ => PathBuf::from("/var/cache/habuild"),
    }
}

pub fn run(args: &ImageArgs) -> Result<()> {
    let selection = match (&args.node, &args.board, args.all) {
        (_, _, true) => Selection::All,
        (Some(n), _, false) => Selection::Node(n.clone()),
        (None, Some(b), false) => Selection::FirstOnBoard(b.clone()),
        (None, None, false) => bail!("say which image: --board rpi4, --node NAME or --all"),
    };
    let project = Project::locate()?;
    crate::host::doctor::require(&["mmdebstrap", "mke2fs", "mkfs.vfat", "mcopy"])?;
    let req = BuildRequest {
        project,
        manifest: args.manifest.clone(),
        secrets: args.secrets.clone(),
        selection,
        board: args.board.clone(),
        distro: args.distro.clone(),
        mirror: args.mirror.clone(),
        kubernetes: KubernetesChoice {
            bundle: args.k8s_bundle.clone(),
            keyring: args.k8s_keyring.clone(),
            without: args.without_kubernetes,
        },
        partition_table: args.partition_table,
        image_size: args.image_size,
        out_dir: args.out.clone(),
        cache_dir: args.cache_dir.clone().unwrap_or_else(default_cache_dir),
        source_date_epoch: args.source_date_epoch.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        }),
    };
    let built = pipeline::build(&req)?;
    for b in &built {
        eprintln!(
            "{}: {} ({:.1} GiB, {:.0}s{}{})",
            b.node,
            b.image.display(),
            b.image_size as f64 / (1u64 << 30) as f64,
            b.seconds,
            if b.base_reused {
                ", base from cache"
            } else {
                ""
            },
            // Directors never carry them; only a control plane misses them.
            if b.kubernetes_included || b.role != crate::config::Role::ControlPlane {
                ""
            } else {
                ", WITHOUT Kubernetes/CRI-O packages"
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("3500M"), Ok(3500 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("4X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("0").is_err());
    }
}

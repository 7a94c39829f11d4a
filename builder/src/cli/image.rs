//! `habuild image`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::sources::SourceArgs;
use crate::config::board::PartitionTable;
use crate::config::Ext4Writer;
use crate::config::Project;
use crate::pipeline::{self, BuildRequest, PlanRequest, Selection};

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
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Lock file pinning every package (default: habuild.lock beside the
    /// manifest, when it exists; see `habuild lock`).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Cluster secrets file (default: beside the manifest, <stem>.secrets.toml;
    /// create it with `habuild secrets init`).
    #[arg(long, env = "HABUILD_SECRETS")]
    pub secrets: Option<PathBuf>,
    /// Output directory; artifacts go to <out>/<cluster>/.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Cache of base root filesystems.
    #[arg(long, env = "HABUILD_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Partition table (default: the board's).
    #[arg(long, value_parser = parse_table)]
    pub partition_table: Option<PartitionTable>,
    /// Image size, e.g. 4G or 3500M (default: root filesystem plus headroom).
    #[arg(long, value_parser = parse_size)]
    pub image_size: Option<u64>,
    /// What writes the root ext4: "native" (habuild's own writer, in
    /// process) or "mke2fs" (`mke2fs -d` from e2fsprogs).
    #[arg(long, value_parser = Ext4Writer::parse, default_value_t)]
    pub ext4_writer: Ext4Writer,
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
    let mut tools = vec!["mmdebstrap", "mkfs.vfat", "mcopy"];
    if args.ext4_writer == Ext4Writer::Mke2fs {
        tools.push("mke2fs");
    }
    crate::host::doctor::require(&tools)?;
    let req = BuildRequest {
        plan: PlanRequest {
            board: args.board.clone(),
            partition_table: args.partition_table,
            image_size: args.image_size,
            ext4_writer: args.ext4_writer,
            source_date_epoch: args.source_date_epoch.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .unwrap_or(0)
            }),
            ..args.sources.plan_request(project, selection)
        },
        secrets: args.secrets.clone(),
        lock: args.lock.clone(),
        out_dir: args.out.clone(),
        cache_dir: args.cache_dir.clone().unwrap_or_else(default_cache_dir),
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

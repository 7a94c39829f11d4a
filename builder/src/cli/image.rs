//! `habuild image`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::sources::SourceArgs;
use crate::artifact::compression::Format;
use crate::config::board::PartitionTable;
use crate::config::Ext4Writer;
use crate::config::Project;
use crate::pipeline::{self, BuildRequest, PlanRequest, Selection};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["board", "node", "all"])))]
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
    /// Add the public keys in FILE (an id_*.pub or authorized_keys file) to
    /// root's authorized keys, after the manifest's [ssh] authorized_keys.
    /// Repeatable.
    #[arg(long, value_name = "FILE")]
    pub ssh_key: Vec<PathBuf>,
    /// Build images nobody can log into (no SSH key and no password), on
    /// purpose; the manifest can say so instead with [ssh] allow_no_login = true.
    #[arg(long)]
    pub allow_no_login: bool,
    /// Print one JSON document (what was built) on stdout; progress stays on stderr.
    #[arg(long)]
    pub json: bool,
    /// Publish the image compressed: <node>.img.zst (zst, the value when
    /// none is given) or <node>.img.xz (xz: smaller, slower to write and to
    /// read). The .bmap still describes the decompressed image, as
    /// `bmaptool copy` and `habuild flash` expect.
    #[arg(long, value_name = "FORMAT", num_args = 0..=1, default_missing_value = "zst",
          value_parser = Format::parse_written)]
    pub compress: Option<Format>,
    /// Print what would be built (nodes, boards, distro, package sources,
    /// cache hit or miss for each base, output paths) and build nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only make each selected node's base root filesystem ready in the
    /// cache (bootstrap it, or find it there) and build no image: fills the
    /// cache ahead of builds, e.g. before going offline. Needs no secrets
    /// and no SSH key.
    #[arg(long, conflicts_with_all = ["dry_run", "compress", "json"])]
    pub bases_only: bool,
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

pub fn run(args: &ImageArgs) -> Result<()> {
    let selection = match (&args.node, &args.board, args.all) {
        (_, _, true) => Selection::All,
        (Some(n), _, false) => Selection::Node(n.clone()),
        (None, Some(b), false) => Selection::FirstOnBoard(b.clone()),
        // clap requires one of them (the "which" group).
        (None, None, false) => bail!("say which image: --board rpi4, --node NAME or --all"),
    };
    let project = Project::locate()?;
    let mut tools = vec!["mmdebstrap", "mkfs.vfat", "mcopy"];
    if args.ext4_writer == Ext4Writer::Mke2fs {
        tools.push("mke2fs");
    }
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
            ssh_keys: args.ssh_key.clone(),
            ..args.sources.plan_request(project, selection)
        },
        secrets: args.secrets.clone(),
        lock: args.lock.clone(),
        out_dir: args.out.clone(),
        cache_dir: args
            .cache_dir
            .clone()
            .unwrap_or_else(crate::host::dirs::default_cache_dir),
        allow_no_login: args.allow_no_login,
        tools,
        compress: args.compress,
    };
    if args.dry_run {
        let d = pipeline::dry_run::dry_run(&req)?;
        print!("{}", pipeline::dry_run::render(&d));
        return Ok(());
    }
    if args.bases_only {
        for b in pipeline::bases(&req)? {
            eprintln!(
                "{}: base {} {} ({:.0}s): {}",
                b.node,
                b.key,
                if b.reused {
                    "found in the cache"
                } else {
                    "bootstrapped"
                },
                b.seconds,
                b.tree.display()
            );
        }
        return Ok(());
    }
    let built = pipeline::build(&req)?;
    if args.json {
        super::output::document(&built_json(&built))?;
    }
    for b in &built {
        let compressed = match b.compressed {
            Some((size, secs)) => format!(
                " compressed to {:.1} MiB in {secs:.0}s",
                size as f64 / f64::from(1 << 20)
            ),
            None => String::new(),
        };
        eprintln!(
            "{}: {} ({:.1} GiB{compressed}, {:.0}s{}{})",
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

/// `image --json`: one entry per image built (pure).
pub fn built_json(built: &[pipeline::BuiltNode]) -> serde_json::Value {
    serde_json::json!({
        "ok": true,
        "images": built.iter().map(|b| serde_json::json!({
            "node": b.node,
            "role": b.role.as_str(),
            "image": b.image,
            "image_size": b.image_size,
            "seconds": b.seconds,
            "base_from_cache": b.base_reused,
            "kubernetes_included": b.kubernetes_included,
        })).collect::<Vec<_>>(),
    })
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

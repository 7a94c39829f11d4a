//! `habuild flash`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::config::Project;
use crate::flash::{self, FlashOptions, Interrupted};

#[derive(Debug, Args)]
#[command(
    override_usage = "habuild flash [OPTIONS] IMAGE TARGET\n       habuild flash [OPTIONS] --node NAME TARGET"
)]
pub struct FlashArgs {
    /// IMAGE TARGET, or only TARGET with --node. IMAGE is a .img, or a
    /// .img.zst, .img.xz or .img.gz (read as a stream; the format is told
    /// by its magic bytes); TARGET the card's whole-disk device (/dev/sdX,
    /// /dev/mmcblk0) or a file.
    #[arg(required = true, num_args = 1..=2, value_names = ["IMAGE", "TARGET"])]
    pub paths: Vec<PathBuf>,
    /// Flash this node's image from <out>/<cluster>/.
    #[arg(long)]
    pub node: Option<String>,
    /// Cluster manifest naming the cluster (with --node; default: the seed's).
    #[arg(long, requires = "node")]
    pub manifest: Option<PathBuf>,
    /// Output directory the image was built into (with --node).
    #[arg(long, default_value = "out", requires = "node")]
    pub out: PathBuf,
    /// Block map (default: the image's name without .zst/.xz/.gz, plus .bmap).
    #[arg(long)]
    pub bmap: Option<PathBuf>,
    /// Flash without a block map: writes every byte of the image (free
    /// blocks too, so much slower), after a first pass over the image that
    /// hashes it to check the card against.
    #[arg(long, conflicts_with = "bmap")]
    pub no_bmap: bool,
    /// Write to a disk that does not say it is removable.
    #[arg(long)]
    pub force: bool,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Also hash the whole image against SHA256SUMS. By default only the
    /// block map is (every range written is checked against the block
    /// map's SHA-256), unless SHA256SUMS does not list the block map.
    #[arg(long)]
    pub check_image_hash: bool,
}

pub fn run(args: &FlashArgs) -> Result<()> {
    let (image, target) = match (&args.node, args.paths.as_slice()) {
        (Some(node), [t]) => (node_image(args, node)?, t.clone()),
        (None, [i, t]) => (i.clone(), t.clone()),
        _ => bail!("usage: habuild flash IMAGE TARGET, or habuild flash --node NAME TARGET"),
    };
    let opts = FlashOptions {
        image,
        bmap: args.bmap.clone(),
        target,
        force: args.force,
        yes: args.yes,
        check_image_hash: args.check_image_hash,
        no_bmap: args.no_bmap,
    };
    if args.no_bmap {
        eprintln!(
            "--no-bmap: writing every byte of the image, free blocks included (a bmap writes \
             only the used ones), after reading the whole image once more to hash it"
        );
    }
    let _cooperate = crate::util::cleanup::cooperate();
    let result = flash::flash(&opts, &mut ask, &crate::util::cleanup::interrupted);
    let report = match result {
        Ok(r) => r,
        Err(e) if e.is::<Interrupted>() => {
            eprintln!("{e}");
            std::process::exit(130);
        }
        Err(e) => return Err(e),
    };
    // A file's body is flushed while it is verified (see flash::job).
    let flushed = if report.block_device {
        ""
    } else {
        " and flushed"
    };
    eprintln!(
        "wrote {} to {} in {:.1}s ({}/s); verified {}{flushed} in {:.1}s",
        flash::human(report.bytes_written),
        report.target.display(),
        report.write_time.as_secs_f64(),
        flash::human(rate(report.bytes_written, report.write_time)),
        flash::human(report.bytes_verified),
        report.verify_time.as_secs_f64(),
    );
    if report.bytes_discarded > 0 {
        eprintln!(
            "cleared {} of old data without writing it (zeroed or discarded by the device)",
            flash::human(report.bytes_discarded)
        );
    }
    if report.bytes_zeroed > 0 {
        eprintln!(
            "wrote {} of zeros over the old partition tables (the device did not clear them)",
            flash::human(report.bytes_zeroed)
        );
    }
    if let Some(name) = &report.sums_bmap {
        eprintln!("the block map matches its SHA256SUMS entry ({name})");
    }
    match &report.sums_image {
        Some(name) => eprintln!("the image matches its SHA256SUMS entry ({name})"),
        None if report.sums_bmap.is_none() => eprintln!("no SHA256SUMS entry to check"),
        None => {}
    }
    eprintln!(
        "every mapped range read back from {} matches the block map",
        report.target.display()
    );
    if report.block_device {
        eprintln!(
            "{} is ready: remove it and boot the node",
            report.target.display()
        );
    }
    Ok(())
}

fn node_image(args: &FlashArgs, node: &str) -> Result<PathBuf> {
    let project = Project::locate()?;
    let cluster = project.manifest(args.manifest.as_deref())?;
    if cluster.node(node).is_none() {
        bail!(
            "the manifest of cluster {} has no node {node:?}",
            cluster.name
        );
    }
    flash::node_image(&args.out, &cluster.name, node)
}

fn rate(bytes: u64, took: std::time::Duration) -> u64 {
    (bytes as f64 / took.as_secs_f64().max(1e-3)) as u64
}

/// Shows what will be overwritten and reads "yes" from the terminal.
fn ask(text: &str) -> Result<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("{text}\nnot asking without a terminal: pass --yes to flash anyway");
    }
    eprint!("{text}\nType yes to continue: ");
    std::io::stderr().flush().context("writing the prompt")?;
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    Ok(line.trim().eq_ignore_ascii_case("yes"))
}

//! `habuild bundle`: builds the offline bundle of Kubernetes, CRI-O and the
//! control-plane images from pinned upstream source (see `bundle/README.md`),
//! for `habuild image --k8s-bundle OUT/<arch>`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::config::Project;

#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Architecture to build for (repeat for several): arm64 for the Pi 4
    /// control planes, amd64 for x86 ones.
    #[arg(long = "arch", default_value = "arm64")]
    pub archs: Vec<String>,
    /// Directory to write `<arch>/` bundles into.
    #[arg(long, default_value = "out/bundle")]
    pub out: PathBuf,
    /// Cache of built binaries (default `~/.cache/habuild`, or `HABUILD_CACHE`).
    #[arg(long, env = "HABUILD_CACHE")]
    pub cache_dir: Option<PathBuf>,
    /// Leave out the control-plane container images (then kubeadm pulls them).
    #[arg(long)]
    pub without_images: bool,
    /// Timestamp for reproducible binaries, packages and images.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 1_735_689_600)]
    pub source_date_epoch: i64,
}

pub fn run(args: &BundleArgs) -> Result<()> {
    let project = Project::locate()?;
    let cache = args
        .cache_dir
        .clone()
        .unwrap_or_else(crate::host::dirs::default_cache_dir);
    let outcomes = crate::bundle::build(&crate::bundle::Request {
        root: project.root.clone(),
        archs: args.archs.clone(),
        out: args.out.clone(),
        cache,
        source_date_epoch: args.source_date_epoch,
        images: !args.without_images,
    })?;
    for o in &outcomes {
        eprintln!(
            "{} bundle in {} ({:.1}s{}): {} packages, {} images",
            o.record.arch,
            o.dir.display(),
            o.took.as_secs_f64(),
            if o.up_to_date { ", up to date" } else { "" },
            o.record.packages.len(),
            o.record.images.len()
        );
        for d in &o.record.differences {
            eprintln!("  differs from pkgs.k8s.io: {d}");
        }
    }
    Ok(())
}

//! `habuild test-doubles`: builds the offline bundle of **test doubles** of
//! kubeadm, kubelet, kubectl and CRI-O (tests/doubles/README.md says what
//! they do and do not prove), for `habuild image --k8s-bundle DIR`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::config::Project;

#[derive(Debug, Args)]
pub struct TestDoublesArgs {
    /// Architecture of the packages (arm64 for the Pi control planes).
    #[arg(long, default_value = "arm64")]
    pub arch: String,
    /// Directory to write the .deb files and SHA256SUMS into.
    #[arg(long)]
    pub out: PathBuf,
    /// Timestamp for reproducible packages.
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = 1_735_689_600)]
    pub source_date_epoch: i64,
}

pub fn run(args: &TestDoublesArgs) -> Result<()> {
    let project = Project::locate()?;
    let debs = crate::testdoubles::build_bundle(
        &project.root.join("tests/doubles"),
        &args.arch,
        &args.out,
        args.source_date_epoch,
    )?;
    for d in &debs {
        eprintln!("TEST DOUBLE {}", d.display());
    }
    Ok(())
}

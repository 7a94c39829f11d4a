//! `habuild verify`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::artifact::verify::{request_for_image, verify};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The .img, or a card/device/file it was flashed to (then give --image
    /// or --bmap and --json).
    pub target: PathBuf,
    /// The built .img whose .bmap, <node>.json and SHA256SUMS to check
    /// against (default: TARGET itself).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Block map (default: <image>.bmap).
    #[arg(long)]
    pub bmap: Option<PathBuf>,
    /// Node report (default: <image minus .img>.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    let mut req = request_for_image(&args.target, args.image.as_deref());
    if let Some(b) = &args.bmap {
        req.bmap = b.clone();
    }
    if let Some(j) = &args.json {
        req.json = j.clone();
    }
    let findings = verify(&req)?;
    let mut bad = 0;
    for f in &findings {
        match &f.problem {
            None => println!("ok        {}", f.check),
            Some(p) => {
                bad += 1;
                println!("MISMATCH  {}: {p}", f.check);
            }
        }
    }
    if bad > 0 {
        bail!(
            "{} of {} checks failed for {}",
            bad,
            findings.len(),
            args.target.display()
        );
    }
    eprintln!(
        "{}: all {} checks passed",
        args.target.display(),
        findings.len()
    );
    Ok(())
}

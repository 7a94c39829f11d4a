//! `habuild verify`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use super::output::{document, say};
use crate::artifact::verify::{request_for_image, verify, Finding};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The .img (or .img.zst, .img.xz, .img.gz, read as a stream), or a
    /// card/device/file it was flashed to (then give --image, or --bmap
    /// and --report).
    pub target: PathBuf,
    /// The built .img whose .bmap, <node>.json and SHA256SUMS to check
    /// against (default: TARGET itself).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Block map (default: <image without .zst/.xz/.gz>.bmap).
    #[arg(long)]
    pub bmap: Option<PathBuf>,
    /// Node report, <node>.json (default: <image minus .img>.json).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Print one JSON document (every check and its outcome) on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &VerifyArgs) -> Result<()> {
    let mut req = request_for_image(&args.target, args.image.as_deref());
    if let Some(b) = &args.bmap {
        req.bmap = b.clone();
    }
    if let Some(j) = &args.report {
        req.json = j.clone();
    }
    let findings = verify(&req)?;
    if args.json {
        document(&findings_json(&args.target, &findings))?;
    }
    let mut bad = 0;
    for f in &findings {
        match &f.problem {
            None => say(args.json, &format!("ok        {}", f.check)),
            Some(p) => {
                bad += 1;
                say(args.json, &format!("MISMATCH  {}: {p}", f.check));
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

/// `verify --json` (pure): `ok` is true when every check passed.
pub fn findings_json(target: &std::path::Path, findings: &[Finding]) -> serde_json::Value {
    serde_json::json!({
        "ok": findings.iter().all(|f| f.problem.is_none()),
        "target": target,
        "checks": findings.iter().map(|f| serde_json::json!({
            "check": f.check,
            "ok": f.problem.is_none(),
            "problem": f.problem,
        })).collect::<Vec<_>>(),
    })
}

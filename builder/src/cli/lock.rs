//! `habuild lock`: resolves every base the manifest's images need and
//! writes the lock file; `--check` compares it with what resolving again
//! gives. Thin: the work is in `lock`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;

use super::sources::SourceArgs;
use crate::config::Project;
use crate::lock::coverage::BaseIdentity;
use crate::lock::resolve::{bundle_files, resolve_base, ResolveOptions};
use crate::lock::{diff, format, Lock};
use crate::pipeline::{self, Selection};
use crate::plan::NodePlan;
use crate::util::progress::Step;

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub sources: SourceArgs,
    /// Lock file (default: habuild.lock beside the manifest).
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Write nothing: exit 0 when the lock is current (it covers every image
    /// and resolving again pins the same packages), 1 with the differences.
    #[arg(long)]
    pub check: bool,
}

pub fn run(args: &LockArgs) -> Result<()> {
    crate::host::doctor::require(&["apt-get", "dpkg-deb"])?;
    let project = Project::locate()?;
    let planned = pipeline::plan(&args.sources.plan_request(project, Selection::All))?;
    let path = args
        .lock
        .clone()
        .unwrap_or_else(|| crate::lock::default_path(&planned.manifest));
    let fresh = resolve_lock(&planned.plans)?;
    if args.check {
        return check(&path, &fresh);
    }
    write_atomically(&path, &format::render(&fresh))?;
    summarize(&fresh);
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// One entry per distinct base, each resolved once, with the nodes on it.
fn resolve_lock(plans: &[NodePlan]) -> Result<Lock> {
    let mut groups: Vec<(BaseIdentity, &NodePlan, Vec<String>)> = Vec::new();
    for plan in plans {
        let id = BaseIdentity::of_spec(&plan.base, &bundle_files(&plan.base)?);
        match groups.iter_mut().find(|(g, _, _)| g == &id) {
            Some((_, _, nodes)) => nodes.push(plan.node.name.clone()),
            None => groups.push((id, plan, vec![plan.node.name.clone()])),
        }
    }
    let mut bases = Vec::new();
    for (_, plan, nodes) in groups {
        let step = Step::start(format!(
            "resolving the {} {} base ({})",
            plan.base.distro,
            plan.base.arch.debian_name(),
            nodes.join(", ")
        ));
        let mut base = resolve_base(
            &plan.base,
            ResolveOptions {
                snapshots: plan.distro.snapshots,
                allow_expired: false,
            },
        )
        .with_context(|| format!("resolving the packages of {}", nodes.join(", ")))?;
        base.nodes = nodes;
        bases.push(base);
        step.finish();
    }
    Ok(Lock::new(bases))
}

fn summarize(lock: &Lock) {
    for b in &lock.bases {
        eprintln!("  base {}: {} packages", b.label(), b.packages.len());
    }
}

fn check(path: &Path, fresh: &Lock) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "reading the lock file {} (write it with `habuild lock`)",
            path.display()
        )
    })?;
    let current = format::parse(path, &text)?;
    let d = diff::diff_locks(&current, fresh);
    for line in &d.repositories {
        eprintln!("  note: {line}");
    }
    if !d.packages.is_empty() {
        bail!(
            "{} is not current:\n  {}\nrun `habuild lock` to update it",
            path.display(),
            d.packages.join("\n  ")
        );
    }
    summarize(fresh);
    eprintln!(
        "{} is current{}",
        path.display(),
        if d.repositories.is_empty() {
            ""
        } else {
            "; only the repositories' Release files were published again"
        }
    );
    Ok(())
}

/// A reader sees the old lock or the new one, never half of it.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    // Committed beside the manifest: readable like any source file.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(|| format!("setting the mode of {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

//! `habuild image` with a lock file: before any image work, every selected
//! image's base must be in the lock; before a bootstrap, the archive must
//! still give the locked packages; after it (or from the cache), the base
//! must have exactly the locked installed set.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::config::ConfigErrors;
use crate::lock::coverage::{self, BaseIdentity};
use crate::lock::diff::{installed_differences, package_differences, without_origin};
use crate::lock::resolve::{bundle_files, resolve_base, ResolveOptions};
use crate::lock::{Lock, LockedBase};
use crate::plan::NodePlan;
use crate::rootfs::base::{self, Base, Pinned};
use crate::util::progress::Step;

/// The lock file a build uses.
#[derive(Debug, Clone)]
pub struct LockInUse {
    pub path: PathBuf,
    pub lock: Lock,
}

/// One image's base in the lock.
#[derive(Debug, Clone, Copy)]
pub struct Pin<'a> {
    pub file: &'a Path,
    pub base: &'a LockedBase,
}

/// `--lock FILE` (which must exist), else `habuild.lock` beside the
/// manifest when there is one.
pub fn load(flag: Option<&Path>, manifest: &Path) -> Result<Option<LockInUse>> {
    let path = match flag {
        Some(p) => p.to_path_buf(),
        None => {
            let beside = crate::lock::default_path(manifest);
            if !beside.is_file() {
                return Ok(None);
            }
            beside
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the lock file {}", path.display()))?;
    let lock = crate::lock::format::parse(&path, &text)?;
    crate::util::progress::line(format!("using the lock file {}", path.display()));
    Ok(Some(LockInUse { path, lock }))
}

/// The lock's base for each plan, in order; or every node's problems at
/// once (a configuration error naming the lock file and its keys).
pub fn entries<'a>(lock: &'a LockInUse, plans: &[NodePlan]) -> Result<Vec<&'a LockedBase>> {
    let wanted = plans
        .iter()
        .map(|p| Ok(BaseIdentity::of_spec(&p.base, &bundle_files(&p.base)?)))
        .collect::<Result<Vec<_>>>()?;
    let mut problems = Vec::new();
    let mut found = Vec::new();
    for (i, want) in wanted.iter().enumerate() {
        // The nodes on the same base share one report.
        let nodes: Vec<String> = plans
            .iter()
            .zip(&wanted)
            .filter(|(_, w)| *w == want)
            .map(|(p, _)| p.node.name.clone())
            .collect();
        match coverage::find(&lock.lock, &lock.path, &nodes, want) {
            Ok(b) => found.push(b),
            Err(e) if wanted[..i].contains(want) => drop(e),
            Err(e) => problems.extend(e),
        }
    }
    if !problems.is_empty() {
        return Err(ConfigErrors(problems).into());
    }
    Ok(found)
}

/// The base of `plan`, with exactly the installed set the lock pins.
pub fn ensure_pinned_base(plan: &NodePlan, cache_dir: &Path, pin: Pin) -> Result<Base> {
    let expected = pin.base.installed();
    let before_bootstrap = || -> Result<()> {
        let step = Step::start("checking the archive against the lock");
        let now = resolve_base(
            &plan.base,
            ResolveOptions {
                snapshots: plan.distro.snapshots,
                allow_expired: true,
            },
        )
        .context("resolving the base again to compare it with the lock")?;
        // Which suite offers a package first does not change its bytes.
        let differences = package_differences(
            &without_origin(&pin.base.packages),
            &without_origin(&now.packages),
        );
        if !differences.is_empty() {
            bail!(
                "{}",
                mismatch(pin, "the archive no longer gives", &differences)
            );
        }
        step.finish();
        Ok(())
    };
    let base = base::ensure_base(
        &plan.base,
        cache_dir,
        Some(&Pinned {
            packages: &expected,
            before_bootstrap: &before_bootstrap,
        }),
    )?;
    let differences = installed_differences(&expected, &base.packages);
    if !differences.is_empty() {
        bail!(
            "{}",
            mismatch(pin, "the bootstrapped base does not have", &differences)
        );
    }
    crate::util::progress::line(format!(
        "  installed packages match {} ({} pinned)",
        pin.file.display(),
        expected.len()
    ));
    Ok(base)
}

/// What differs from the lock, and the two ways out.
fn mismatch(pin: Pin, what: &str, differences: &[String]) -> String {
    let mut m = format!(
        "{}: base {}: {what} the locked packages:\n",
        pin.file.display(),
        pin.base.label()
    );
    for d in differences {
        m.push_str(&format!("  {d}\n"));
    }
    m.push_str("The lock was resolved from:\n");
    for r in &pin.base.repositories {
        m.push_str(&format!("  {}: Release of {}\n", r.name(), r.date));
    }
    // A snapshot holds every suite as it was at one time: the newest
    // suite's publication is the earliest that has them all.
    match pin.base.repositories.iter().filter_map(|r| r.snapshot.as_deref()).max() {
        Some(t) => m.push_str(&format!(
            "To build what the lock pins, point --mirror at a snapshot mirror of the archive \
             at {t} (the first snapshot taken at or after it); "
        )),
        None => m.push_str("To build what the lock pins, point --mirror at a mirror that still serves those versions; "),
    }
    m.push_str(
        "to take what the archive gives now, run `habuild lock` again and commit the new lock.",
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_names_file_base_packages_and_the_ways_out() {
        let lock = crate::lock::format::tests::sample();
        let m = mismatch(
            Pin {
                file: Path::new("/m/habuild.lock"),
                base: &lock.bases[0],
            },
            "the archive no longer gives",
            &["bash (arm64): locked 5.2, now 5.3".to_string()],
        );
        assert!(m.starts_with("/m/habuild.lock: base debian-13 arm64 (master-arm-1, master-arm-2): the archive no longer gives"), "{m}");
        assert!(m.contains("  bash (arm64): locked 5.2, now 5.3\n"), "{m}");
        assert!(
            m.contains("  trixie: Release of Sat, 21 Nov 2026 09:15:44 UTC\n"),
            "{m}"
        );
        assert!(
            m.contains("a snapshot mirror of the archive at 20261121T091544Z"),
            "{m}"
        );
        assert!(m.contains("--mirror") && m.contains("habuild lock"), "{m}");
    }
}

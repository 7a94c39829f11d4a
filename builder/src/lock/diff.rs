//! How a lock differs from what the archive gives now, from another lock,
//! or from an installed base: readable lines, one per difference. Pure.

use std::collections::BTreeMap;

use super::{Lock, LockedBase, LockedPackage};
use crate::debian::packages::InstalledPackage;

/// Differences between the installed set a lock pins and an actual one,
/// by package (name and architecture): `name: locked V, installed W`.
pub fn installed_differences(
    locked: &[InstalledPackage],
    installed: &[InstalledPackage],
) -> Vec<String> {
    let key = |p: &InstalledPackage| (p.name.clone(), p.architecture.clone());
    let old: BTreeMap<_, _> = locked.iter().map(|p| (key(p), &p.version)).collect();
    let new: BTreeMap<_, _> = installed.iter().map(|p| (key(p), &p.version)).collect();
    let mut out = Vec::new();
    for (k @ (name, arch), v) in &old {
        match new.get(k) {
            None => out.push(format!("{name} ({arch}): locked {v}, not installed")),
            Some(w) if w != v => out.push(format!("{name} ({arch}): locked {v}, installed {w}")),
            Some(_) => {}
        }
    }
    for ((name, arch), w) in &new {
        if !old.contains_key(&(name.clone(), arch.clone())) {
            out.push(format!("{name} ({arch}): installed {w}, not in the lock"));
        }
    }
    out
}

/// Differences between a lock file and the lock resolved again now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LockDiff {
    /// What the images would get differently: bases, requested or
    /// installed packages (their versions, sha256 or origin).
    pub packages: Vec<String>,
    /// Only the repositories' signed indexes were published again
    /// (date, sha256) with the locked packages unchanged.
    pub repositories: Vec<String>,
}

impl LockDiff {
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty() && self.repositories.is_empty()
    }
}

/// `old` is the lock file, `new` what resolving again gives.
pub fn diff_locks(old: &Lock, new: &Lock) -> LockDiff {
    let mut d = LockDiff::default();
    let mut unmatched_new: Vec<&LockedBase> = new.bases.iter().collect();
    let mut unmatched_old = Vec::new();
    for o in &old.bases {
        match unmatched_new
            .iter()
            .position(|n| super::coverage::same_identity(o, n))
        {
            Some(i) => diff_base(o, unmatched_new.remove(i), &mut d),
            None => unmatched_old.push(o),
        }
    }
    // A base whose requested packages, repositories or bundle changed is
    // the same distro and architecture with other inputs: show how.
    for o in unmatched_old {
        match unmatched_new
            .iter()
            .position(|n| n.distro == o.distro && n.arch == o.arch)
        {
            Some(i) => {
                let n = unmatched_new.remove(i);
                diff_inputs(o, n, &mut d.packages);
                diff_base(o, n, &mut d);
            }
            None => d.packages.push(format!(
                "base {}: in the lock, but the manifest no longer needs it",
                o.label()
            )),
        }
    }
    for n in unmatched_new {
        d.packages.push(format!(
            "base {}: needed by the manifest, not in the lock",
            n.label()
        ));
    }
    d
}

fn diff_inputs(o: &LockedBase, n: &LockedBase, out: &mut Vec<String>) {
    let label = o.label();
    for r in n.requested.iter().filter(|r| !o.requested.contains(r)) {
        out.push(format!(
            "base {label}: requests {r}, which the lock does not"
        ));
    }
    for r in o.requested.iter().filter(|r| !n.requested.contains(r)) {
        out.push(format!(
            "base {label}: the lock requests {r}, the manifest no longer does"
        ));
    }
    if o.bundle != n.bundle {
        let show = |b: &LockedBase| {
            b.bundle
                .iter()
                .map(|f| format!("{} (sha256 {})", f.file, f.sha256))
                .collect::<Vec<_>>()
                .join(", ")
        };
        out.push(format!(
            "base {label}: bundle .debs differ: locked [{}], now [{}]",
            show(o),
            show(n)
        ));
    }
    let repos = |b: &LockedBase| {
        b.repositories
            .iter()
            .map(|r| format!("{} {}", r.name(), r.components.join(" ")))
            .collect::<Vec<_>>()
    };
    if repos(o) != repos(n) {
        out.push(format!(
            "base {label}: repositories differ: locked [{}], now [{}]",
            repos(o).join("; "),
            repos(n).join("; ")
        ));
    }
}

fn diff_base(o: &LockedBase, n: &LockedBase, d: &mut LockDiff) {
    let label = o.label();
    if o.nodes != n.nodes {
        d.packages.push(format!(
            "base {label}: used by nodes {} now",
            n.nodes.join(", ")
        ));
    }
    for r in &o.repositories {
        let Some(now) = n.repositories.iter().find(|x| x.name() == r.name()) else {
            continue;
        };
        if now.inrelease_sha256 != r.inrelease_sha256 || now.date != r.date {
            d.repositories.push(format!(
                "base {label}: repository {} published again: locked {} (sha256 {}), now {} (sha256 {})",
                r.name(),
                r.date,
                r.inrelease_sha256,
                now.date,
                now.inrelease_sha256
            ));
        }
    }
    let content = package_differences(&without_origin(&o.packages), &without_origin(&n.packages));
    if content.is_empty() {
        // Same packages, now found first in another suite (a point
        // release folds the updates suite into the release).
        d.repositories.extend(
            package_differences(&o.packages, &n.packages)
                .into_iter()
                .map(|l| format!("base {label}: {l}")),
        );
    }
    d.packages
        .extend(content.into_iter().map(|l| format!("base {label}: {l}")));
}

/// The packages with `from` left empty: what decides the installed bytes.
pub fn without_origin(packages: &[LockedPackage]) -> Vec<LockedPackage> {
    packages
        .iter()
        .map(|p| LockedPackage {
            from: String::new(),
            ..p.clone()
        })
        .collect()
}

/// Package by package (name and architecture): version, sha256, origin.
pub fn package_differences(old: &[LockedPackage], new: &[LockedPackage]) -> Vec<String> {
    let key = |p: &LockedPackage| (p.name.clone(), p.arch.clone());
    let o: BTreeMap<_, _> = old.iter().map(|p| (key(p), p)).collect();
    let n: BTreeMap<_, _> = new.iter().map(|p| (key(p), p)).collect();
    let mut out = Vec::new();
    for (k @ (name, arch), a) in &o {
        match n.get(k) {
            None => out.push(format!(
                "{name} ({arch}) {}: locked, no longer installed",
                a.version
            )),
            Some(b) if a.version != b.version => out.push(format!(
                "{name} ({arch}): locked {}, now {}",
                a.version, b.version
            )),
            Some(b) if a.sha256 != b.sha256 => out.push(format!(
                "{name} ({arch}) {}: locked sha256 {}, now {}",
                a.version, a.sha256, b.sha256
            )),
            Some(b) if a.from != b.from => out.push(format!(
                "{name} ({arch}) {}: locked from {}, now from {}",
                a.version, a.from, b.from
            )),
            Some(_) => {}
        }
    }
    for ((name, arch), b) in &n {
        if !o.contains_key(&(name.clone(), arch.clone())) {
            out.push(format!(
                "{name} ({arch}) {}: installed now, not in the lock",
                b.version
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::format::tests::sample;

    fn installed(list: &[(&str, &str)]) -> Vec<InstalledPackage> {
        list.iter()
            .map(|(n, v)| InstalledPackage {
                name: n.to_string(),
                version: v.to_string(),
                architecture: "arm64".into(),
            })
            .collect()
    }

    #[test]
    fn installed_set_differences_name_each_package() {
        let locked = installed(&[("bash", "5.2"), ("gone", "1"), ("same", "1")]);
        let now = installed(&[("bash", "5.3"), ("new", "2"), ("same", "1")]);
        assert_eq!(
            installed_differences(&locked, &now),
            [
                "bash (arm64): locked 5.2, installed 5.3",
                "gone (arm64): locked 1, not installed",
                "new (arm64): installed 2, not in the lock",
            ]
        );
        assert!(installed_differences(&locked, &locked).is_empty());
    }

    #[test]
    fn same_lock_has_no_differences() {
        assert!(diff_locks(&sample(), &sample()).is_empty());
    }

    #[test]
    fn republished_index_alone_is_not_a_package_change() {
        let mut now = sample();
        now.bases[0].repositories[0].date = "Sun, 22 Nov 2026 09:15:44 UTC".into();
        now.bases[0].repositories[0].inrelease_sha256 = "f".repeat(64);
        let d = diff_locks(&sample(), &now);
        assert!(d.packages.is_empty(), "{d:?}");
        assert_eq!(d.repositories.len(), 1);
        assert!(d.repositories[0].contains("repository trixie published again"));

        let mut moved = sample();
        moved.bases[0].packages[0].from = "trixie-updates".into();
        let d = diff_locks(&sample(), &moved);
        assert!(d.packages.is_empty(), "{d:?}");
        assert!(
            d.repositories[0].contains("locked from trixie, now from trixie-updates"),
            "{d:?}"
        );
    }

    #[test]
    fn changed_package_and_request_are_named() {
        let mut now = sample();
        now.bases[0].packages[2].version = "258-1".into();
        now.bases[0].requested.push("htop".into());
        let d = diff_locks(&sample(), &now);
        assert_eq!(
            d.packages,
            [
                "base debian-13 arm64 (master-arm-1, master-arm-2): requests htop, which the lock does not",
                "base debian-13 arm64 (master-arm-1, master-arm-2): systemd-sysv (arm64): locked 257.13-1~deb13u1, now 258-1",
            ]
        );
        let mut other = sample();
        other.bases[0].arch = "amd64".into();
        let d = diff_locks(&sample(), &other);
        assert_eq!(d.packages.len(), 2, "{d:?}");
        assert!(d.packages[0].contains("no longer needs it"));
        assert!(d.packages[1].contains("not in the lock"));
    }
}

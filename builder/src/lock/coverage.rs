//! Which entry of a lock covers the base an image needs, and when none
//! does, why: a problem per key of the lock file, naming the node and the
//! package, repository or bundle file the lock does not cover. Pure.

use std::path::Path;

use super::{BundleFile, Lock, LockedBase};
use crate::config::ConfigError;
use crate::plan::BaseSpec;

/// One suite of a repository: `uri` only for sources other than the
/// distro's archive (see `LockedRepository::uri`).
type RepositoryId = (Option<String>, String, Vec<String>);

/// What identifies a base apart from the archive's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseIdentity {
    pub distro: String,
    pub arch: String,
    pub repositories: Vec<RepositoryId>,
    pub requested: Vec<String>,
    pub bundle: Vec<BundleFile>,
}

impl BaseIdentity {
    /// The identity of the base `spec` describes; `bundle` is its local
    /// .debs by name and sha256 (read by the caller).
    pub fn of_spec(spec: &BaseSpec, bundle: &[BundleFile]) -> BaseIdentity {
        let mut repositories = Vec::new();
        for (i, s) in spec.sources.iter().enumerate() {
            // `plan_node` puts the distro's archive first.
            let uri = (i > 0).then(|| s.uri.clone());
            for suite in &s.suites {
                repositories.push((uri.clone(), suite.clone(), s.components.clone()));
            }
        }
        let mut requested = spec.packages.clone();
        requested.sort();
        let mut bundle = bundle.to_vec();
        bundle.sort();
        BaseIdentity {
            distro: spec.distro.clone(),
            arch: spec.arch.debian_name().to_string(),
            repositories,
            requested,
            bundle,
        }
    }

    pub fn of_locked(b: &LockedBase) -> BaseIdentity {
        let mut requested = b.requested.clone();
        requested.sort();
        let mut bundle = b.bundle.clone();
        bundle.sort();
        BaseIdentity {
            distro: b.distro.clone(),
            arch: b.arch.clone(),
            repositories: b
                .repositories
                .iter()
                .map(|r| (r.uri.clone(), r.suite.clone(), r.components.clone()))
                .collect(),
            requested,
            bundle,
        }
    }
}

pub fn same_identity(a: &LockedBase, b: &LockedBase) -> bool {
    BaseIdentity::of_locked(a) == BaseIdentity::of_locked(b)
}

/// The lock's base for `nodes` (the nodes built on one base), or every
/// reason it has none. `file` is the lock file, for the messages.
pub fn find<'a>(
    lock: &'a Lock,
    file: &Path,
    nodes: &[String],
    want: &BaseIdentity,
) -> Result<&'a LockedBase, Vec<ConfigError>> {
    if let Some(b) = lock
        .bases
        .iter()
        .find(|b| &BaseIdentity::of_locked(b) == want)
    {
        return Ok(b);
    }
    let problem = |key: String, problem: String| ConfigError {
        file: file.to_path_buf(),
        key,
        problem: format!("{problem}; run `habuild lock` to pin it"),
    };
    // The nearest entry: the one made for this node, else one of the same
    // distro and architecture.
    let same_kind = |b: &&LockedBase| b.distro == want.distro && b.arch == want.arch;
    let nearest = lock
        .bases
        .iter()
        .enumerate()
        .filter(|(_, b)| same_kind(b))
        .max_by_key(|(_, b)| b.nodes.iter().any(|n| nodes.contains(n)));
    // The verb's ending agrees with the subject: "node a asks", "nodes a, b ask".
    let (node, s) = match nodes {
        [one] => (format!("node {one}"), "s"),
        _ => (format!("nodes {}", nodes.join(", ")), ""),
    };
    let Some((i, b)) = nearest else {
        let has: Vec<String> = lock
            .bases
            .iter()
            .map(|b| format!("{} {}", b.distro, b.arch))
            .collect();
        return Err(vec![problem(
            "base".into(),
            format!(
                "{node} need{s} a {} {} base, which the lock does not have (it has: {})",
                want.distro,
                want.arch,
                if has.is_empty() {
                    "none".into()
                } else {
                    has.join(", ")
                }
            ),
        )]);
    };
    let have = BaseIdentity::of_locked(b);
    let mut errors = Vec::new();
    // What one list of requested packages has and the other lacks.
    let lacking = |a: &[String], b: &[String]| {
        a.iter()
            .filter(|r| !b.contains(r))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let missing = lacking(&want.requested, &have.requested);
    if !missing.is_empty() {
        errors.push(problem(
            format!("base[{i}].requested"),
            format!(
                "{node} ask{s} for {missing}, which the lock's base {} does not cover",
                b.label()
            ),
        ));
    }
    let extra = lacking(&have.requested, &want.requested);
    if !extra.is_empty() {
        errors.push(problem(
            format!("base[{i}].requested"),
            format!(
                "the lock's base {} was resolved with {extra}, which {node} no longer ask{s} for",
                b.label()
            ),
        ));
    }
    if have.bundle != want.bundle {
        errors.push(problem(
            format!("base[{i}].bundle"),
            format!(
                "{node}: {} (the lock's base {})",
                bundle_difference(&want.bundle, &have.bundle),
                b.label()
            ),
        ));
    }
    if have.repositories != want.repositories {
        let show = |r: &[RepositoryId]| {
            r.iter()
                .map(|(uri, suite, comps)| {
                    format!(
                        "{} {}",
                        super::repository_name(uri.as_deref(), suite),
                        comps.join(" ")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        errors.push(problem(
            format!("base[{i}].repositories"),
            format!(
                "{node} install{s} from [{}], the lock's base {} from [{}]",
                show(&want.repositories),
                b.label(),
                show(&have.repositories)
            ),
        ));
    }
    Err(errors)
}

/// How the bundle an image is built with differs from the locked one.
fn bundle_difference(want: &[BundleFile], have: &[BundleFile]) -> String {
    let names = |b: &[BundleFile]| b.iter().map(|f| f.file.clone()).collect::<Vec<_>>();
    if names(want) != names(have) {
        let show = |b: &[BundleFile]| match names(b).join(", ") {
            n if n.is_empty() => "no bundle".to_string(),
            n => n,
        };
        return format!("built with {}, locked with {}", show(want), show(have));
    }
    want.iter()
        .zip(have)
        .filter(|(w, h)| w.sha256 != h.sha256)
        .map(|(w, h)| {
            format!(
                "bundle file {} has sha256 {}, the lock {}",
                w.file, w.sha256, h.sha256
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::format::tests::sample;

    fn wanted() -> BaseIdentity {
        BaseIdentity::of_locked(&sample().bases[0])
    }

    #[test]
    fn finds_the_entry_with_the_same_inputs() {
        let lock = sample();
        let b = find(
            &lock,
            Path::new("habuild.lock"),
            &["master-arm-3".into()],
            &wanted(),
        )
        .unwrap();
        assert_eq!(b.arch, "arm64");
    }

    #[test]
    fn a_package_the_lock_does_not_cover_is_named_with_file_and_key() {
        let lock = sample();
        let mut want = wanted();
        want.requested.push("htop".into());
        want.requested.sort();
        let errs = find(
            &lock,
            Path::new("/m/habuild.lock"),
            &["master-arm-1".into()],
            &want,
        )
        .unwrap_err();
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert_eq!(errs[0].key, "base[0].requested");
        assert!(
            msg.starts_with("/m/habuild.lock: `base[0].requested`: "),
            "{msg}"
        );
        assert!(msg.contains("node master-arm-1 asks for htop"), "{msg}");
        assert!(msg.contains("habuild lock"), "{msg}");
    }

    #[test]
    fn other_bundle_and_missing_architecture() {
        let lock = sample();
        let mut want = wanted();
        want.bundle[0].sha256 = "0".repeat(64);
        let nodes = ["master-arm-1".to_string(), "master-arm-2".to_string()];
        let errs = find(&lock, Path::new("habuild.lock"), &nodes, &want).unwrap_err();
        assert_eq!(errs[0].key, "base[0].bundle");
        assert!(
            errs[0].problem.starts_with(&format!(
                "nodes master-arm-1, master-arm-2: bundle file cri-o_1.31.3-1.1_arm64.deb has sha256 {}, the lock {}",
                "0".repeat(64),
                "c".repeat(64)
            )),
            "{}",
            errs[0].problem
        );
        want.bundle.clear();
        let errs = find(&lock, Path::new("habuild.lock"), &nodes, &want).unwrap_err();
        assert!(
            errs[0]
                .problem
                .contains("built with no bundle, locked with cri-o_1.31.3-1.1_arm64.deb"),
            "{}",
            errs[0].problem
        );

        let mut want = wanted();
        want.arch = "amd64".into();
        let errs = find(
            &lock,
            Path::new("habuild.lock"),
            &["master-x86-1".into()],
            &want,
        )
        .unwrap_err();
        assert_eq!(errs[0].key, "base");
        assert!(errs[0].problem.contains(
            "needs a debian-13 amd64 base, which the lock does not have (it has: debian-13 arm64)"
        ));
    }
}

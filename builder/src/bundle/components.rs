//! What `habuild bundle` builds from Go source: each component's wrapper
//! module (`bundle/go/<dir>/go.mod`, which pins the upstream module and
//! whose go.sum holds every checksum), the commands it builds, and how
//! upstream's own build stamps the version into them. Pure data and pure
//! functions; [`super::gobuild`] runs the builds.

use anyhow::{bail, Context, Result};

/// A Go component of the bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Component {
    /// Directory under `bundle/go/`, and the cache's name for it.
    pub dir: &'static str,
    /// The upstream module the wrapper requires.
    pub module: &'static str,
    /// (output file name, Go package) for every command built.
    pub commands: &'static [(&'static str, &'static str)],
    /// Build tags (upstream's release build uses the same).
    pub tags: &'static [&'static str],
    stamp: Stamp,
}

/// How upstream's build stamps a binary's version (its `-X` variables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    /// hack/lib/version.sh: gitVersion, gitMajor, gitMinor, gitCommit,
    /// gitTreeState and buildDate, in component-base and client-go.
    Kubernetes,
    /// The Makefile's buildDate and buildCommit (the version is a constant).
    CriO,
    /// etcd's ./build: GitSHA (the version is a constant).
    Etcd,
    /// cri-tools' Makefile: pkg/version.Version.
    CriTools,
    /// The plugins' build_linux.sh: buildversion.BuildVersion.
    CniPlugins,
    /// CoreDNS' Makefile: coremain.GitCommit (the version is a constant).
    CoreDns,
}

pub const KUBERNETES: Component = Component {
    dir: "kubernetes",
    module: "k8s.io/kubernetes",
    commands: &[
        ("kubeadm", "k8s.io/kubernetes/cmd/kubeadm"),
        ("kubelet", "k8s.io/kubernetes/cmd/kubelet"),
        ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
        ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
        (
            "kube-controller-manager",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
        ),
        ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
        ("kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy"),
    ],
    tags: &[],
    stamp: Stamp::Kubernetes,
};

pub const CRI_O: Component = Component {
    dir: "cri-o",
    module: "github.com/cri-o/cri-o",
    commands: &[("crio", "github.com/cri-o/cri-o/cmd/crio")],
    // Without cgo: no gpgme (openpgp in Go instead), no ostree, no btrfs.
    tags: &[
        "containers_image_openpgp",
        "containers_image_ostree_stub",
        "exclude_graphdriver_btrfs",
        "btrfs_noversion",
    ],
    stamp: Stamp::CriO,
};

pub const ETCD: Component = Component {
    dir: "etcd",
    module: "go.etcd.io/etcd/server/v3",
    commands: &[("etcd", "go.etcd.io/etcd/server/v3")],
    tags: &[],
    stamp: Stamp::Etcd,
};

pub const CRI_TOOLS: Component = Component {
    dir: "cri-tools",
    module: "sigs.k8s.io/cri-tools",
    commands: &[("crictl", "sigs.k8s.io/cri-tools/cmd/crictl")],
    tags: &[],
    stamp: Stamp::CriTools,
};

pub const CNI_PLUGINS: Component = Component {
    dir: "cni-plugins",
    module: "github.com/containernetworking/plugins",
    commands: &[
        (
            "bridge",
            "github.com/containernetworking/plugins/plugins/main/bridge",
        ),
        (
            "loopback",
            "github.com/containernetworking/plugins/plugins/main/loopback",
        ),
        (
            "host-local",
            "github.com/containernetworking/plugins/plugins/ipam/host-local",
        ),
        (
            "portmap",
            "github.com/containernetworking/plugins/plugins/meta/portmap",
        ),
        (
            "bandwidth",
            "github.com/containernetworking/plugins/plugins/meta/bandwidth",
        ),
        (
            "firewall",
            "github.com/containernetworking/plugins/plugins/meta/firewall",
        ),
    ],
    tags: &[],
    stamp: Stamp::CniPlugins,
};

pub const COREDNS: Component = Component {
    dir: "coredns",
    module: "github.com/coredns/coredns",
    commands: &[("coredns", "github.com/coredns/coredns")],
    tags: &[],
    stamp: Stamp::CoreDns,
};

/// Every Go component, in build order (the node's packages first).
pub const ALL: [Component; 6] = [KUBERNETES, CRI_O, CRI_TOOLS, CNI_PLUGINS, ETCD, COREDNS];

/// What is known of a pinned module's source, for the stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// `v1.36.3`
    pub version: String,
    /// The tag's commit where the module proxy records it (`Origin.Hash`).
    pub commit: Option<String>,
}

impl Component {
    /// The `-ldflags` value: stripped, and stamped as upstream stamps.
    /// `build_date` is RFC 3339 (from SOURCE_DATE_EPOCH: reproducible).
    pub fn ldflags(&self, src: &Source, build_date: &str) -> Result<String> {
        let commit = src.commit.clone().unwrap_or_default();
        let mut x: Vec<(String, String)> = Vec::new();
        match self.stamp {
            Stamp::Kubernetes => {
                let (major, minor) = major_minor(&src.version)?;
                // "archive": built from a source archive (the module zip),
                // not a git tree, as hack/lib/version.sh says for tarballs.
                let tree = if commit.is_empty() {
                    "archive"
                } else {
                    "clean"
                };
                for pkg in [
                    "k8s.io/component-base/version",
                    "k8s.io/client-go/pkg/version",
                ] {
                    for (k, v) in [
                        ("gitVersion", src.version.as_str()),
                        ("gitMajor", major.as_str()),
                        ("gitMinor", minor.as_str()),
                        ("gitCommit", commit.as_str()),
                        ("gitTreeState", tree),
                        ("buildDate", build_date),
                    ] {
                        x.push((format!("{pkg}.{k}"), v.to_string()));
                    }
                }
            }
            Stamp::CriO => {
                let pkg = "github.com/cri-o/cri-o/internal/version";
                x.push((format!("{pkg}.buildDate"), build_date.into()));
                x.push((format!("{pkg}.buildCommit"), commit));
            }
            Stamp::Etcd => x.push(("go.etcd.io/etcd/api/v3/version.GitSHA".into(), commit)),
            Stamp::CriTools => x.push((
                "sigs.k8s.io/cri-tools/pkg/version.Version".into(),
                src.version.clone(),
            )),
            Stamp::CniPlugins => x.push((
                "github.com/containernetworking/plugins/pkg/utils/buildversion.BuildVersion".into(),
                src.version.clone(),
            )),
            Stamp::CoreDns => x.push((
                "github.com/coredns/coredns/coremain.GitCommit".into(),
                commit,
            )),
        }
        let mut flags = vec!["-s".to_string(), "-w".to_string()];
        // An empty value is stamped too: unstamped, Kubernetes would print
        // its placeholder `$Format:%H$` as the commit.
        for (var, val) in x {
            if val.contains(['\'', ' ', '"']) {
                bail!("cannot stamp {var} with {val:?}: quotes and spaces are not allowed");
            }
            flags.push(format!("-X {var}={val}"));
        }
        Ok(flags.join(" "))
    }
}

/// `v1.36.3` → ("1", "36").
pub fn major_minor(version: &str) -> Result<(String, String)> {
    let v = version.trim_start_matches('v');
    let mut it = v.split('.');
    match (it.next(), it.next()) {
        (Some(ma), Some(mi)) if ma.parse::<u32>().is_ok() && mi.parse::<u32>().is_ok() => {
            Ok((ma.to_string(), mi.to_string()))
        }
        _ => bail!("cannot read version {version:?} (expected vMAJOR.MINOR.PATCH)"),
    }
}

/// The version a wrapper go.mod requires `module` at (its one pin).
pub fn required_version(go_mod: &str, module: &str) -> Result<String> {
    let mut in_block = false;
    for line in go_mod.lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        if line == "require (" {
            in_block = true;
            continue;
        }
        if in_block && line == ")" {
            in_block = false;
            continue;
        }
        let spec = if in_block {
            Some(line)
        } else {
            line.strip_prefix("require ")
        };
        if let Some(spec) = spec {
            let mut parts = spec.split_whitespace();
            if parts.next() == Some(module) {
                return parts
                    .next()
                    .map(String::from)
                    .with_context(|| format!("the require line of {module} has no version"));
            }
        }
    }
    bail!("go.mod does not require {module}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_version_from_go_mod() {
        let m = "module x\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v1.36.3\n\nrequire (\n\tgithub.com/a/b v0.1.0 // indirect\n)\n";
        assert_eq!(required_version(m, "k8s.io/kubernetes").unwrap(), "v1.36.3");
        assert_eq!(required_version(m, "github.com/a/b").unwrap(), "v0.1.0");
        assert!(required_version(m, "k8s.io/api").is_err());
    }

    #[test]
    fn kubernetes_is_stamped_in_both_version_packages() {
        let src = Source {
            version: "v1.36.3".into(),
            commit: None,
        };
        let f = KUBERNETES.ldflags(&src, "2025-01-01T00:00:00Z").unwrap();
        for pkg in [
            "k8s.io/component-base/version",
            "k8s.io/client-go/pkg/version",
        ] {
            assert!(f.contains(&format!("-X {pkg}.gitVersion=v1.36.3")), "{f}");
            assert!(f.contains(&format!("-X {pkg}.gitMinor=36")), "{f}");
            assert!(f.contains(&format!("-X {pkg}.gitTreeState=archive")), "{f}");
        }
        // No commit known: stamped empty, not left as `$Format:%H$`.
        assert!(
            f.contains("-X k8s.io/component-base/version.gitCommit= "),
            "{f}"
        );
    }

    #[test]
    fn cri_o_gets_its_commit_when_the_proxy_knows_it() {
        let src = Source {
            version: "v1.36.3".into(),
            commit: Some("b24632ab".into()),
        };
        let f = CRI_O.ldflags(&src, "2025-01-01T00:00:00Z").unwrap();
        assert!(f.contains("internal/version.buildCommit=b24632ab"), "{f}");
        assert!(f.starts_with("-s -w"), "{f}");
    }

    #[test]
    fn bad_versions_and_stamps_are_refused() {
        assert!(major_minor("1.x").is_err());
        let src = Source {
            version: "v1.36.3".into(),
            commit: Some("a b".into()),
        };
        assert!(CRI_O.ldflags(&src, "d").is_err());
    }
}

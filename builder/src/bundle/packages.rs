//! The node packages, named and laid out as pkgs.k8s.io's: kubeadm,
//! kubelet, kubectl, cri-tools, and cri-o carrying pinns, the CNI plugins
//! and CRI-O's runtime configuration. The files that are not binaries
//! (units, drop-ins, policy) live in `bundle/packages/<name>/` as the
//! package installs them.

use std::path::Path;

use anyhow::Result;

use super::components::Source;
use super::deb::{DebFile, DebSpec};
use super::gobuild::Built;
use super::DEB_REVISION;

/// The built components the node packages are made of.
pub struct Inputs<'a> {
    pub root: &'a Path,
    pub arch: &'a str,
    pub kubernetes: &'a Built,
    pub crio: &'a Built,
    pub pinns: &'a Path,
    pub cri_tools: &'a Built,
    pub cni: &'a Built,
}

/// `v1.36.3` → `1.36.3-1.1`.
pub fn deb_version(src: &Source) -> String {
    format!("{}-{DEB_REVISION}", src.version.trim_start_matches('v'))
}

/// Where the package was built from, for its long description.
fn provenance(b: &Built) -> String {
    let mut s = format!(
        "Built by `habuild bundle` from the Go module {} {}",
        b.component.module, b.source.version
    );
    if let Some(c) = &b.source.commit {
        s.push_str(&format!(" (commit {c})"));
    }
    s.push_str(" with CGO_ENABLED=0.");
    s
}

fn bin(b: &Built, name: &str, to: &str) -> DebFile {
    DebFile {
        from: b.binary(name),
        to: to.to_string(),
        mode: 0o755,
    }
}

/// kubeadm, kubelet, kubectl, cri-tools and cri-o for `inputs.arch`.
pub fn node_packages(i: &Inputs) -> Result<Vec<DebSpec>> {
    let pkgs = i.root.join("bundle/packages");
    let kube = i.kubernetes;
    let kver = deb_version(&kube.source);
    let spec = |name: &str, version: &str, depends: &[&str], synopsis: &str, b: &Built| DebSpec {
        name: name.to_string(),
        version: version.to_string(),
        arch: i.arch.to_string(),
        depends: depends.iter().map(|d| d.to_string()).collect(),
        description: format!("{synopsis}\n{}", provenance(b)),
        trees: Vec::new(),
        files: Vec::new(),
        links: Vec::new(),
    };
    let mut kubeadm = spec(
        "kubeadm",
        &kver,
        &["cri-tools (>= 1.30.0)"],
        "Command-line utility for administering a Kubernetes cluster",
        kube,
    );
    kubeadm.files.push(bin(kube, "kubeadm", "/usr/bin/kubeadm"));
    kubeadm.trees.push(pkgs.join("kubeadm"));

    let mut kubelet = spec(
        "kubelet",
        &kver,
        &["iptables (>= 1.4.21)", "iproute2", "mount", "util-linux"],
        "Node agent for Kubernetes clusters",
        kube,
    );
    kubelet.files.push(bin(kube, "kubelet", "/usr/bin/kubelet"));
    kubelet.trees.push(pkgs.join("kubelet"));

    let mut kubectl = spec(
        "kubectl",
        &kver,
        &[],
        "Command-line utility for interacting with a Kubernetes cluster",
        kube,
    );
    kubectl.files.push(bin(kube, "kubectl", "/usr/bin/kubectl"));

    let mut cri_tools = spec(
        "cri-tools",
        &deb_version(&i.cri_tools.source),
        &[],
        "Command-line utility for interacting with a container runtime",
        i.cri_tools,
    );
    cri_tools
        .files
        .push(bin(i.cri_tools, "crictl", "/usr/bin/crictl"));

    let crio = i.crio;
    let mut cri_o = spec(
        "cri-o",
        &deb_version(&crio.source),
        // Debian's conmon and crun stand in for the ones upstream's static
        // bundle builds (see bundle::DIFFERENCES).
        &["conmon", "crun"],
        "Open Container Initiative-based implementation of Kubernetes Container Runtime Interface",
        crio,
    );
    cri_o.description.push_str(&format!(
        "\nThe CNI plugins are from {} {}.",
        i.cni.component.module, i.cni.source.version
    ));
    cri_o.files.push(bin(crio, "crio", "/usr/bin/crio"));
    cri_o.files.push(DebFile {
        from: i.pinns.to_path_buf(),
        to: "/usr/bin/pinns".into(),
        mode: 0o755,
    });
    for (name, _) in i.cni.component.commands {
        cri_o
            .files
            .push(bin(i.cni, name, &format!("/opt/cni/bin/{name}")));
    }
    cri_o
        .links
        .push(("/usr/libexec/crio/conmon".into(), "../../bin/conmon".into()));
    cri_o
        .links
        .push(("/usr/libexec/crio/crun".into(), "../../bin/crun".into()));
    cri_o.trees.push(pkgs.join("cri-o"));

    Ok(vec![kubeadm, kubelet, kubectl, cri_tools, cri_o])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_take_the_pkgs_k8s_io_form() {
        let src = Source {
            version: "v1.36.3".into(),
            commit: None,
        };
        assert_eq!(deb_version(&src), "1.36.3-1.1");
    }
}

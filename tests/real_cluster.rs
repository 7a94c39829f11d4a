//! The REAL Kubernetes, built from pinned upstream source: no test doubles.
//! - `habuild bundle --arch amd64` builds kubeadm, kubelet, kubectl,
//!   cri-tools, cri-o and the control-plane images from the Go modules
//!   pinned in bundle/go (cached by version: a second run builds nothing);
//!   the packages are checked with dpkg-deb, the binaries by running them
//!   (`kubeadm version`, `kubelet --version`, `crio version`), the images
//!   with skopeo, and habuild's golden kubeadm configurations with the real
//!   `kubeadm config validate`;
//! - tier 3 on tests/fixtures/real-init.toml: two directors and one amd64
//!   control plane built with that bundle form the cluster by themselves
//!   (the real `kubeadm init` with CRI-O, the VIP on lo first),
//!   `habuild status` through the VIP finds it healthy, and with the MASTER
//!   director powered off the BACKUP takes the VIP and status through it
//!   is still healthy. First passed on
//!   2026-12-05: init and add-ons done 293 s after power-on, status
//!   healthy 128 s later, 421 s in the tier (benchmarks/README.md).
//!
//! Needs the Go toolchain and the module proxy (cold: about 15 minutes of
//! Go builds on 2 cores); tier 3 needs root and about 10 minutes with the
//! images built.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const ARCH: &str = "amd64";

fn bundle_dir() -> PathBuf {
    test_cache().join("real-bundle")
}

fn build_bundle() -> Run {
    habuild_plain(&[
        "bundle",
        "--arch",
        ARCH,
        "--out",
        bundle_dir().to_str().unwrap(),
        "--cache-dir",
        test_cache().to_str().unwrap(),
    ])
}

fn deb(dir: &Path, prefix: &str) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(&format!("{prefix}_"))
        })
        .unwrap_or_else(|| panic!("no {prefix} package in {}", dir.display()))
}

fn field(deb: &Path, name: &str) -> String {
    sh(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
        .trim()
        .to_string()
}

/// Unpacks every package of the bundle into one tree.
fn unpack(dir: &Path, into: &Path) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "deb") {
            sh(Command::new("dpkg-deb").arg("-x").arg(&p).arg(into));
        }
    }
}

/// The bundle's directory for `ARCH`, built (or found up to date).
fn bundle() -> PathBuf {
    let run = build_bundle();
    assert!(
        run.status.success(),
        "habuild bundle failed:\n{}",
        run.stderr
    );
    bundle_dir().join(ARCH)
}

#[test]
fn the_real_bundle_from_pinned_source() {
    let first = build_bundle();
    assert!(
        first.status.success(),
        "habuild bundle failed:\n{}",
        first.stderr
    );
    let dir = bundle_dir().join(ARCH);

    // Named, versioned and laid out as pkgs.k8s.io's.
    for (pkg, version) in [
        ("kubeadm", "1.36.3-1.1"),
        ("kubelet", "1.36.3-1.1"),
        ("kubectl", "1.36.3-1.1"),
        ("cri-tools", "1.36.0-1.1"),
        ("cri-o", "1.36.3-1.1"),
        ("habuild-control-plane-images", "1.36.3-1.1"),
    ] {
        let d = deb(&dir, pkg);
        assert_eq!(field(&d, "Package"), pkg);
        assert_eq!(field(&d, "Version"), version, "{}", d.display());
        assert_eq!(field(&d, "Architecture"), ARCH);
        assert!(!field(&d, "Description").contains("TEST DOUBLE"));
    }
    // The second run is a cache hit: nothing is built or packaged again.
    let second = build_bundle();
    assert!(second.status.success(), "{}", second.stderr);
    assert!(second.stderr.contains("up to date"), "{}", second.stderr);

    // The binaries report their real version, stamped as upstream's build does.
    let tree = tempfile::tempdir().unwrap();
    unpack(&dir, tree.path());
    let t = tree.path();
    let kubeadm = t.join("usr/bin/kubeadm");
    assert_eq!(
        sh(Command::new(&kubeadm).args(["version", "-o", "short"])).trim(),
        "v1.36.3"
    );
    assert_eq!(
        sh(Command::new(t.join("usr/bin/kubelet")).arg("--version")).trim(),
        "Kubernetes v1.36.3"
    );
    let crio = sh(Command::new(t.join("usr/bin/crio")).arg("version"));
    assert!(crio.contains("1.36.3"), "{crio}");
    let crictl = sh(Command::new(t.join("usr/bin/crictl")).arg("--version"));
    assert!(crictl.contains("1.36.0"), "{crictl}");
    // CRI-O's runtime parts where the upstream package puts them.
    for p in [
        "usr/bin/pinns",
        "etc/crio/crio.conf.d/10-crio.conf",
        "etc/crio/policy.json",
        "etc/cni/net.d/11-crio-ipv4-bridge.conflist",
        "opt/cni/bin/bridge",
        "opt/cni/bin/host-local",
        "opt/cni/bin/loopback",
        "usr/lib/systemd/system/crio.service",
        "usr/lib/systemd/system/kubelet.service",
        "usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
    ] {
        assert!(t.join(p).exists(), "{p} missing from the bundle");
    }
    for link in ["usr/libexec/crio/conmon", "usr/libexec/crio/crun"] {
        assert!(t.join(link).is_symlink(), "{link} is not a link");
    }
    // Every image kubeadm lists is in the images package, readable by skopeo.
    let list = sh(Command::new(&kubeadm).args([
        "config",
        "images",
        "list",
        "--kubernetes-version",
        "v1.36.3",
    ]));
    let images = t.join("usr/share/habuild/images");
    let mut refs = Vec::new();
    for e in std::fs::read_dir(&images).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "ref") {
            refs.push(std::fs::read_to_string(&p).unwrap().trim().to_string());
            let tar = p.with_extension("tar");
            let inspect = sh(Command::new("skopeo")
                .arg("inspect")
                .arg(format!("oci-archive:{}", tar.display())));
            assert!(inspect.contains("\"Architecture\": \"amd64\""), "{inspect}");
        }
    }
    refs.sort();
    let mut listed: Vec<String> = list.lines().map(|l| l.trim().to_string()).collect();
    listed.sort();
    assert_eq!(refs, listed);
    // habuild's kubeadm configurations pass the real kubeadm's validation.
    for golden in ["master-arm-1.yaml", "master-arm-2.yaml"] {
        let out = sh(Command::new(&kubeadm)
            .args(["config", "validate", "--config"])
            .arg(repo_root().join("tests/golden/kubeadm").join(golden)));
        assert!(out.contains("ok"), "{golden}: {out}");
    }

    // The static-pod patches apply: the real kubeadm's dry run writes the
    // manifests with habuild's probes (readiness every 10 s where kubeadm
    // has a readiness probe; the controller-manager has none).
    let patches = repo_root().join("overlays/control-plane/etc/habuild/kubeadm/patches");
    let dry = tempfile::tempdir().unwrap();
    let config = dry.path().join("init.yaml");
    std::fs::write(
        &config,
        std::fs::read_to_string(repo_root().join("tests/golden/kubeadm/master-arm-1.yaml"))
            .unwrap()
            .replace("/etc/habuild/kubeadm/patches", patches.to_str().unwrap()),
    )
    .unwrap();
    for (phase, component, file, readiness) in [
        (
            "control-plane",
            "apiserver",
            "kube-apiserver.yaml",
            Some(10),
        ),
        (
            "control-plane",
            "controller-manager",
            "kube-controller-manager.yaml",
            None,
        ),
        (
            "control-plane",
            "scheduler",
            "kube-scheduler.yaml",
            Some(10),
        ),
        ("etcd", "local", "etcd.yaml", Some(10)),
    ] {
        let out = dry.path().join(component);
        sh(Command::new(&kubeadm)
            .env("KUBEADM_INIT_DRYRUN_DIR", &out)
            .args(["init", "phase", phase, component, "--dry-run", "--config"])
            .arg(&config));
        let text = std::fs::read_to_string(out.join(file)).unwrap();
        let manifest: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        let container = &manifest["spec"]["containers"][0];
        for probe in ["livenessProbe", "startupProbe"] {
            assert_eq!(
                container[probe]["failureThreshold"].as_u64(),
                Some(if probe == "livenessProbe" { 20 } else { 60 }),
                "{file} {probe}: {text}"
            );
            assert_eq!(
                container[probe]["timeoutSeconds"].as_u64(),
                Some(60),
                "{file} {probe}: {text}"
            );
        }
        assert_eq!(
            container["readinessProbe"]["periodSeconds"].as_u64(),
            readiness,
            "{file}: {text}"
        );
    }
}

#[test]
fn a_real_kubeadm_init_through_the_vip() {
    let dir = bundle();
    // Tier 3: the cluster forms by itself from images built with the bundle.
    let ws = tempfile::tempdir().unwrap();
    let manifest = fixture_copy(ws.path(), "real-init.toml", "real-init.toml");
    let m = manifest.to_str().unwrap();
    let init = habuild_plain(&["secrets", "init", "--manifest", m]);
    assert!(init.status.success(), "{}", init.stderr);
    let out = ws.path().join("out");
    let build = habuild(&[
        "image",
        "--all",
        "--manifest",
        m,
        "--k8s-bundle",
        dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(build.status.success(), "{}", build.stderr);
    let node_json = std::fs::read_to_string(out.join("realinit/master-amd64-1.json")).unwrap();
    assert!(
        node_json.contains("no seccomp support"),
        "the image names what differs"
    );
    let run = habuild_plain(&[
        "test",
        "--tier",
        "3",
        "--manifest",
        m,
        "--out",
        out.to_str().unwrap(),
    ]);
    let report = std::fs::read_to_string(out.join("realinit/test/tier3.txt")).unwrap_or_default();
    assert!(
        run.status.success(),
        "tier 3 failed:\n{}\n{report}",
        run.stderr
    );
    for expected in [
        "[ok] master-amd64-1: first boot initialised",
        "[ok] master-amd64-1: VIP on lo",
        "[ok] habuild status through the VIP: healthy",
        "node master-amd64-1: Ready (kubelet v1.36.3)",
        "etcd members: master-amd64-1",
        "behind the VIP",
        "failover 1 and 2 (a control plane): not run (1 control plane(s)",
        "failover 3: power off the MASTER director master-x86-1",
        "[ok] VIP moved to master-x86-2",
        "[ok] habuild status healthy through the BACKUP director",
        "tier 3 passed",
    ] {
        assert!(report.contains(expected), "{expected:?} not in:\n{report}");
    }
    assert!(!report.contains("[FAIL]"), "{report}");
}

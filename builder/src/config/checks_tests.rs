//! Manifest checks added by the hardening pass (issue #15): each test
//! feeds a manifest the earlier validation accepted or misreported.

use std::path::Path;

use super::manifest::{parse, Known};
use super::ConfigErrors;

const SEED: &str = include_str!("../../../manifests/seed.toml");

fn load(text: &str) -> Result<super::Cluster, ConfigErrors> {
    let boards = ["amd64".to_string(), "rpi4".to_string()];
    let distros = ["debian-13".to_string(), "ubuntu-24.04".to_string()];
    parse(
        Path::new("my-cluster.toml"),
        text,
        &Known {
            boards: &boards,
            distros: &distros,
        },
    )
}

fn problems_for(text: &str, key: &str) -> Vec<String> {
    match load(text) {
        Ok(_) => panic!("the manifest should be rejected ({key})"),
        Err(errs) => errs
            .0
            .iter()
            .filter(|e| e.key == key)
            .map(|e| e.to_string())
            .collect(),
    }
}

fn with_registry(repo: &str) -> String {
    SEED.replace(
        "# image_repository = \"registry.example:5000/google_containers\"",
        &format!("image_repository = {}", toml_string(repo)),
    )
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

#[test]
fn image_repository_must_be_a_registry_reference() {
    for bad in [
        "registry.example/k8s\"injected",
        "*.example/k8s",
        "$(touch /tmp/x)/k8s",
        "registry.example/K8S",
        "registry.example//k8s",
        "registry.example:port/k8s",
        "registry.example/k8s:v1",
        "registry.example/k8s@sha256:00",
        "-registry.example/k8s",
        "registry.example/k8s\nx",
    ] {
        let p = problems_for(&with_registry(bad), "cluster.image_repository");
        assert_eq!(p.len(), 1, "{bad:?} was accepted");
        assert!(p[0].contains("registry"), "{}", p[0]);
    }
    for good in [
        "registry.example:5000/google_containers",
        "registry.k8s.io",
        "localhost:5000/k8s",
        "10.10.197.1:5000/mirror/k8s-images",
        "ghcr.io/some-org/k8s__images.v2",
        "docker.io/library",
    ] {
        let c = load(&with_registry(good)).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        assert_eq!(c.image_repository.as_deref(), Some(good));
    }
}

#[test]
fn gateway_may_be_neither_the_vip_nor_a_node() {
    let m = SEED.replace("gateway = \"10.10.197.1\"", "gateway = \"10.10.197.101\"");
    let p = problems_for(&m, "network.gateway");
    assert!(
        p.iter().any(|e| e.contains("is the VIP")),
        "gateway = VIP: {p:?}"
    );
    let m = SEED.replace("gateway = \"10.10.197.1\"", "gateway = \"10.10.197.98\"");
    let all = load(&m).expect_err("gateway = a node's address");
    let shown = all.to_string();
    assert!(
        shown.contains("10.10.197.98") && shown.contains("gateway"),
        "{shown}"
    );
}

#[test]
fn subnet_error_names_the_vip_not_the_network_address() {
    let m = SEED.replace("gateway = \"10.10.197.1\"", "gateway = \"192.168.1.1\"");
    let p = problems_for(&m, "network.gateway");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].contains("VIP 10.10.197.101") && !p[0].contains("VIP 10.10.197.0"),
        "{}",
        p[0]
    );
    assert!(p[0].contains("10.10.197.0/24"), "{}", p[0]);
}

#[test]
fn two_control_planes_warn_that_etcd_has_no_fault_tolerance() {
    let three = load(SEED).unwrap();
    assert!(super::checks::warnings(&three).is_empty());
    // The seed lists master-arm-3 last: cut it off.
    let cut = &SEED[..SEED.find("[[nodes]]\nname = \"master-arm-3\"").unwrap()];
    let c = load(cut).unwrap();
    assert_eq!(c.control_planes().count(), 2);
    let w = super::checks::warnings(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("etcd") && w[0].contains("fault"), "{}", w[0]);
}

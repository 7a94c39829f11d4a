//! The kubeadm configuration each control plane gets: rendered from the
//! repository's template with the pipeline's own context (seed manifest,
//! a generated secrets file), parsed as YAML and checked field by field;
//! plus golden files per role under `tests/golden/kubeadm/`
//! (`HABUILD_BLESS=1` rewrites them, as for the overlay goldens).

use pretty_assertions::assert_eq;
use serde_yaml_ng::Value;
use time::OffsetDateTime;

use super::*;
use crate::plan::NodePlan;
use crate::rootfs::context::{render_context, render_template, KubeadmCtx};
use crate::test_support::{self, repo_root, SEED};

const TEMPLATE: &str = "overlays/control-plane/etc/habuild/kubeadm/kubeadm.yaml.hbs";
const KUBELET: &str = "overlays/control-plane/etc/habuild/kubeadm/kubelet.yaml";
const ENV: &str = "overlays/control-plane/etc/habuild/firstboot.env.hbs";

/// The pipeline's plan of `node` in the seed cluster (Debian profile).
fn plan(node: &str, image_repository: Option<&str>) -> NodePlan {
    test_support::plan(SEED, node, |c| {
        c.distro = "debian-13".into();
        c.image_repository = image_repository.map(String::from);
    })
}

/// The kubeadm context the pipeline makes from `s`.
fn kubeadm(s: &ClusterSecrets) -> Option<KubeadmCtx> {
    Some(KubeadmCtx::new(
        s.bootstrap_token.expose(),
        &s.discovery_hash,
    ))
}

fn render(path: &str, plan: &NodePlan, kubeadm: Option<KubeadmCtx>) -> String {
    let text = std::fs::read_to_string(repo_root().join(path)).unwrap();
    render_template(path, &text, &render_context(plan, kubeadm)).unwrap()
}

fn docs(yaml: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

fn secrets() -> ClusterSecrets {
    generate::generate("seed", OffsetDateTime::now_utc()).unwrap()
}

#[test]
fn init_node_gets_init_and_cluster_configuration() {
    let s = secrets();
    let yaml = render(TEMPLATE, &plan("master-arm-1", None), kubeadm(&s));
    let d = docs(&yaml);
    assert_eq!(d.len(), 2, "{yaml}");
    let (init, cluster) = (&d[0], &d[1]);
    assert_eq!(init["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(init["kind"], "InitConfiguration");
    let token = &init["bootstrapTokens"][0];
    assert_eq!(token["token"], s.bootstrap_token.expose());
    assert_eq!(token["ttl"], "24h");
    assert_eq!(
        token["groups"][0],
        "system:bootstrappers:kubeadm:default-node-token"
    );
    assert_eq!(
        token["usages"],
        Value::from(vec!["signing", "authentication"])
    );
    assert_eq!(init["nodeRegistration"]["name"], "master-arm-1");
    assert_eq!(
        init["nodeRegistration"]["criSocket"],
        "unix:///var/run/crio/crio.sock"
    );
    assert_eq!(init["localAPIEndpoint"]["advertiseAddress"], "10.10.197.98");
    assert_eq!(init["localAPIEndpoint"]["bindPort"], 6443);

    assert_eq!(cluster["apiVersion"], "kubeadm.k8s.io/v1beta4");
    assert_eq!(cluster["kind"], "ClusterConfiguration");
    assert_eq!(cluster["controlPlaneEndpoint"], "10.10.197.101:6443");
    assert_eq!(cluster["kubernetesVersion"], "v1.36.3");
    assert_eq!(cluster["clusterName"], "seed");
    assert_eq!(cluster["networking"]["podSubnet"], "10.88.0.0/16");
    assert_eq!(cluster["networking"]["serviceSubnet"], "10.96.0.0/12");
    assert_eq!(cluster["certificatesDir"], "/etc/kubernetes/pki");
    assert_eq!(cluster["encryptionAlgorithm"], "ECDSA-P256");
    assert!(cluster.get("imageRepository").is_none(), "{yaml}");
    // The API server gives etcd 10 s in its health and readiness checks.
    let api_args = &cluster["apiServer"]["extraArgs"];
    for (i, name) in ["etcd-healthcheck-timeout", "etcd-readycheck-timeout"]
        .into_iter()
        .enumerate()
    {
        assert_eq!(api_args[i]["name"], name, "{yaml}");
        assert_eq!(api_args[i]["value"], "10s", "{yaml}");
    }

    // The seed's private registry, when the manifest names one.
    let yaml = render(
        TEMPLATE,
        &plan(
            "master-arm-1",
            Some("registry.example:5000/google_containers"),
        ),
        kubeadm(&s),
    );
    assert_eq!(
        docs(&yaml)[1]["imageRepository"],
        "registry.example:5000/google_containers"
    );
}

#[test]
fn init_config_with_the_kubelet_document_as_firstboot_composes_it() {
    let s = secrets();
    let init = render(TEMPLATE, &plan("master-arm-1", None), kubeadm(&s));
    let kubelet = std::fs::read_to_string(repo_root().join(KUBELET)).unwrap();
    // habuild-firstboot.sh: cat kubeadm.yaml; printf '\n---\n'; cat kubelet.yaml
    let composed = format!("{init}\n---\n{kubelet}");
    let d = docs(&composed);
    let kinds: Vec<&str> = d.iter().map(|x| x["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "InitConfiguration",
            "ClusterConfiguration",
            "KubeletConfiguration"
        ]
    );
    assert_eq!(d[2]["apiVersion"], "kubelet.config.k8s.io/v1beta1");
    assert_eq!(d[2]["cgroupDriver"], "systemd");
}

/// `[kubeadm] ignore_preflight_errors` reaches both kinds of node; left
/// out, the key is not written at all (kubeadm's own default).
#[test]
fn ignored_preflight_checks_reach_init_and_join() {
    let s = secrets();
    for node in ["master-arm-1", "master-arm-2"] {
        let default = render(TEMPLATE, &plan(node, None), kubeadm(&s));
        assert!(!default.contains("ignorePreflightErrors"), "{default}");
        let p = test_support::plan(SEED, node, |c| {
            c.distro = "debian-13".into();
            c.tuning.kubeadm.ignore_preflight_errors = vec!["NumCPU".into(), "Mem".into()];
        });
        let yaml = render(TEMPLATE, &p, kubeadm(&s));
        let first = &docs(&yaml)[0];
        assert_eq!(
            first["nodeRegistration"]["ignorePreflightErrors"],
            Value::from(vec!["NumCPU", "Mem"]),
            "{node}: {yaml}"
        );
    }
}

#[test]
fn joining_nodes_get_a_join_configuration_pinned_to_the_ca() {
    let s = secrets();
    for (node, address) in [
        ("master-arm-2", "10.10.197.97"),
        ("master-arm-3", "10.10.197.99"),
    ] {
        let yaml = render(TEMPLATE, &plan(node, None), kubeadm(&s));
        let d = docs(&yaml);
        assert_eq!(d.len(), 1, "{yaml}");
        let j = &d[0];
        assert_eq!(j["apiVersion"], "kubeadm.k8s.io/v1beta4");
        assert_eq!(j["kind"], "JoinConfiguration");
        assert_eq!(j["nodeRegistration"]["name"], node);
        assert_eq!(
            j["nodeRegistration"]["criSocket"],
            "unix:///var/run/crio/crio.sock"
        );
        let bt = &j["discovery"]["bootstrapToken"];
        assert_eq!(bt["token"], s.bootstrap_token.expose());
        assert_eq!(bt["apiServerEndpoint"], "10.10.197.101:6443");
        assert_eq!(
            bt["caCertHashes"],
            Value::from(vec![s.discovery_hash.as_str()])
        );
        assert!(bt.get("unsafeSkipCAVerification").is_none());
        assert_eq!(
            j["discovery"]["tlsBootstrapToken"],
            s.bootstrap_token.expose()
        );
        let local = &j["controlPlane"]["localAPIEndpoint"];
        assert_eq!(local["advertiseAddress"], address);
        assert_eq!(local["bindPort"], 6443);
        assert!(j["controlPlane"].get("certificateKey").is_none());
    }
}

#[test]
fn firstboot_env_names_the_action() {
    let s = secrets();
    let env = render(ENV, &plan("master-arm-1", None), kubeadm(&s));
    for line in [
        "HABUILD_ACTION=init",
        "HABUILD_NODE=master-arm-1",
        "HABUILD_VIP=10.10.197.101",
        "HABUILD_API_PORT=6443",
    ] {
        assert!(env.lines().any(|l| l == line), "{line}: {env}");
    }
    let env = render(ENV, &plan("master-arm-3", None), kubeadm(&s));
    assert!(env.lines().any(|l| l == "HABUILD_ACTION=join"), "{env}");
    assert!(
        env.lines()
            .any(|l| l == "HABUILD_DIRECTORS=\"10.10.197.96\""),
        "{env}"
    );
    // Every director, in manifest order, space-separated.
    let two = test_support::plan("tests/fixtures/two-directors.toml", "master-arm-2", |_| {});
    let env = render(ENV, &two, kubeadm(&s));
    assert!(
        env.lines()
            .any(|l| l == "HABUILD_DIRECTORS=\"10.10.197.96 10.10.197.95\""),
        "{env}"
    );
}

#[test]
fn without_secrets_the_template_fails_naming_itself() {
    let text = std::fs::read_to_string(repo_root().join(TEMPLATE)).unwrap();
    let plan = plan("master-arm-2", None);
    let err = render_template(TEMPLATE, &text, &render_context(&plan, None)).unwrap_err();
    assert!(format!("{err:#}").contains("kubeadm.yaml.hbs"), "{err:#}");
}

/// Golden files with a fixed token and hash (the real ones are random).
#[test]
fn golden_kubeadm_configs() {
    let dir = repo_root().join("tests/golden/kubeadm");
    for node in ["master-arm-1", "master-arm-2"] {
        let fixed = KubeadmCtx::new(
            "abcdef.0123456789abcdef",
            &format!("sha256:{}", "5e".repeat(32)),
        );
        let yaml = render(TEMPLATE, &plan(node, None), Some(fixed));
        let path = dir.join(format!("{node}.yaml"));
        if std::env::var("HABUILD_BLESS").as_deref() == Ok("1") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &yaml).unwrap();
            continue;
        }
        let golden = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (HABUILD_BLESS=1 creates it)", path.display()));
        assert_eq!(golden, yaml, "{node} (HABUILD_BLESS=1 regenerates)");
    }
}

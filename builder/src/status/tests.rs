use std::collections::BTreeMap;

use super::probe::{failed_checks, parse_members, parse_nodes};
use super::*;

pub(crate) fn seed() -> Cluster {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    crate::config::Project::at(&root)
        .unwrap()
        .manifest(None)
        .unwrap()
}

/// The seed's cluster as a healthy one looks.
pub(crate) fn healthy(m: &Cluster) -> Observed {
    let cps: Vec<_> = m.control_planes().collect();
    Observed {
        vip: "https://10.10.197.101:6443".into(),
        vip_readyz: Seen::Ok("ok".into()),
        nodes: Seen::Ok(
            cps.iter()
                .map(|cp| ApiNode {
                    name: cp.name.clone(),
                    ready: true,
                    kubelet_version: "v1.36.3".into(),
                })
                .collect(),
        ),
        control_planes: cps
            .iter()
            .map(|cp| ControlPlaneSeen {
                name: cp.name.clone(),
                address: cp.address,
                readyz: Seen::Ok("ok".into()),
                etcd_health: Seen::Ok(true),
            })
            .collect(),
        etcd_members: Seen::Ok(
            cps.iter()
                .enumerate()
                .map(|(i, cp)| EtcdMember {
                    name: cp.name.clone(),
                    id: format!("{i}"),
                    is_learner: false,
                    client_urls: vec![format!("https://{}:2379", cp.address)],
                })
                .collect(),
        ),
        behind_vip: cps
            .iter()
            .map(|cp| (cp.name.clone(), 4))
            .collect::<BTreeMap<_, _>>(),
        vip_connections: 12,
    }
}

#[test]
fn a_healthy_cluster_has_no_problem() {
    let m = seed();
    let v = judge(&m, &healthy(&m));
    assert!(v.healthy, "{:?}", v.problems);
    assert!(render(&m, &healthy(&m), &v).ends_with("healthy\n"));
}

/// A change that makes a healthy cluster unhealthy.
type Spoil = Box<dyn Fn(&mut Observed)>;

#[test]
fn each_unhealthy_fact_is_a_problem_naming_the_node() {
    let m = seed();
    let cases: Vec<(Spoil, &str)> = vec![
        (
            Box::new(|o| {
                if let Seen::Ok(n) = &mut o.nodes {
                    n[1].ready = false
                }
            }),
            "master-arm-2 is not Ready",
        ),
        (
            Box::new(|o| o.control_planes[0].readyz = Seen::Failed("refused".into())),
            "master-arm-1's API server (10.10.197.98): refused",
        ),
        (
            Box::new(|o| o.control_planes[2].etcd_health = Seen::Ok(false)),
            "master-arm-3's etcd reports itself unhealthy",
        ),
        (
            Box::new(|o| {
                if let Seen::Ok(ms) = &mut o.etcd_members {
                    ms[2].is_learner = true
                }
            }),
            "master-arm-3 is an etcd learner",
        ),
        (
            Box::new(|o| {
                if let Seen::Ok(ms) = &mut o.etcd_members {
                    ms.pop();
                }
            }),
            "master-arm-3 is not an etcd member",
        ),
        (
            Box::new(|o| {
                o.behind_vip.remove("master-arm-2");
            }),
            "master-arm-2 did not answer behind the VIP",
        ),
        (
            Box::new(|o| o.vip_readyz = Seen::Failed("timed out".into())),
            "the API through the VIP https://10.10.197.101:6443: timed out",
        ),
    ];
    for (spoil, expected) in cases {
        let mut o = healthy(&m);
        spoil(&mut o);
        let v = judge(&m, &o);
        assert!(!v.healthy, "{expected}");
        assert!(
            v.problems.iter().any(|p| p.contains(expected)),
            "{expected:?} not in {:?}",
            v.problems
        );
    }
}

#[test]
fn reads_the_api_servers_node_list() {
    let json = r#"{"kind":"NodeList","items":[
        {"metadata":{"name":"master-arm-1"},"status":{"conditions":[
            {"type":"MemoryPressure","status":"False"},{"type":"Ready","status":"True"}],
            "nodeInfo":{"kubeletVersion":"v1.36.3"}}},
        {"metadata":{"name":"master-arm-2"},"status":{"conditions":[
            {"type":"Ready","status":"False"}],"nodeInfo":{"kubeletVersion":"v1.36.3"}}}]}"#;
    let n = parse_nodes(json).unwrap();
    assert_eq!(n.len(), 2);
    assert!(n[0].ready && !n[1].ready);
    assert_eq!(n[0].kubelet_version, "v1.36.3");
    assert!(parse_nodes("{}").is_err());
}

#[test]
fn reads_etcds_member_list() {
    // As etcd 3.6's gRPC gateway prints it: uint64 IDs as strings,
    // isLearner only when true.
    let json = r#"{"header":{"cluster_id":"1"},"members":[
        {"ID":"12345678901234567890","name":"master-arm-1","peerURLs":["https://10.10.197.98:2380"],
         "clientURLs":["https://10.10.197.98:2379"]},
        {"ID":"42","name":"master-arm-2","isLearner":true}]}"#;
    let ms = parse_members(json).unwrap();
    assert_eq!(ms[0].id, "12345678901234567890");
    assert!(!ms[0].is_learner && ms[1].is_learner);
    assert_eq!(ms[0].client_urls, ["https://10.10.197.98:2379"]);
    assert!(parse_members(r#"{"header":{}}"#).is_err());
}

#[test]
fn a_failed_readyz_names_its_failed_checks() {
    let body = "[+]ping ok\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\n[+]shutdown ok\nreadyz check failed\n";
    assert_eq!(
        failed_checks(body),
        "failed checks: poststarthook/rbac/bootstrap-roles"
    );
    assert_eq!(failed_checks("Unauthorized\n"), "Unauthorized");
}

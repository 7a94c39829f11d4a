//! Manifest validation: one test per error class, each checking that the
//! error names the file, the key and the problem.

use std::path::Path;

use super::manifest::{parse, parse_sha256_pin, Known, Role};
use super::ConfigErrors;

const SEED: &str = include_str!("../../../manifests/seed.toml");

fn known() -> (Vec<String>, Vec<String>) {
    (
        vec!["amd64".into(), "rpi4".into()],
        vec!["debian-13".into(), "ubuntu-24.04".into()],
    )
}

fn load(text: &str) -> Result<super::Cluster, ConfigErrors> {
    let (boards, distros) = known();
    parse(
        Path::new("my-cluster.toml"),
        text,
        &Known {
            boards: &boards,
            distros: &distros,
        },
    )
}

/// The one error expected for `key`, with its message.
fn error_for(text: &str, key: &str) -> String {
    let errs = load(text).expect_err("the manifest should be rejected");
    let e = errs
        .0
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no error for {key}; got {errs}"));
    let shown = e.to_string();
    assert!(
        shown.starts_with("my-cluster.toml: `"),
        "the file is not named: {shown}"
    );
    assert!(shown.contains(key), "the key is not named: {shown}");
    shown
}

#[test]
fn seed_manifest_is_the_seed_cluster() {
    let c = load(SEED).unwrap();
    assert_eq!(c.vip.address.to_string(), "10.10.197.101");
    assert_eq!(c.vip.port, 6443);
    assert_eq!(c.distro, "ubuntu-24.04");
    assert_eq!(c.pod_subnet.to_string(), "10.88.0.0/16");
    let names: Vec<(&str, String)> = c
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.address.to_string()))
        .collect();
    assert_eq!(
        names,
        [
            ("master-x86-1", "10.10.197.96".to_string()),
            ("master-arm-1", "10.10.197.98".into()),
            ("master-arm-2", "10.10.197.97".into()),
            ("master-arm-3", "10.10.197.99".into())
        ]
    );
    assert_eq!(c.init_node().name, "master-arm-1");
    assert_eq!(c.directors().next().unwrap().priority, 100);
    assert_eq!(c.nodes[0].role, Role::Director);
    let lb = &c.loadbalancer;
    assert_eq!(
        (
            lb.virtual_router_id,
            lb.advert_int,
            lb.lvs_scheduler.as_str(),
            lb.lvs_method.as_str(),
            lb.weight
        ),
        (254, 1, "wrr", "DR", 10)
    );
    assert_eq!(
        (
            lb.connect_timeout,
            lb.retry,
            lb.delay_before_retry,
            lb.delay_loop
        ),
        (10, 3, 3, 6)
    );
}

/// The tier-3 manifests run by hand (too long for CI) still validate, and
/// hold the clusters their comments promise.
#[test]
fn the_by_hand_tier3_fixtures_validate() {
    let fixtures = [
        (
            include_str!("../../../tests/fixtures/real-join-arm64.toml"),
            "rpi4",
            2,
            1,
        ),
        (
            include_str!("../../../tests/fixtures/real-join-amd64.toml"),
            "amd64",
            2,
            1,
        ),
        (
            include_str!("../../../tests/fixtures/real-ha-amd64.toml"),
            "amd64",
            3,
            2,
        ),
    ];
    for (text, board, control_planes, directors) in fixtures {
        let c = load(text).unwrap();
        let cps: Vec<_> = c.control_planes().collect();
        assert_eq!(cps.len(), control_planes, "{}", c.name);
        assert!(cps.iter().all(|n| n.board == board), "{}", c.name);
        assert_eq!(c.directors().count(), directors, "{}", c.name);
        // One vCPU per control plane on 2 cores (stops 29 and 31).
        assert!(c.tuning.kubeadm.ignores_preflight("NumCPU"), "{}", c.name);
        assert!(
            !c.tuning.addons.coredns && !c.tuning.addons.kube_proxy,
            "{}",
            c.name
        );
    }
}

#[test]
fn bad_address() {
    let m = SEED.replace("address = \"10.10.197.97\"", "address = \"10.10.197.300\"");
    assert!(error_for(&m, "nodes[2].address").contains("not an IPv4 address"));
}

#[test]
fn vip_outside_subnet() {
    // Moving the gateway out of the VIP's /24 is reported on the gateway;
    // a VIP in another subnet makes every node "outside".
    let m = SEED.replace("address = \"10.10.197.101\"", "address = \"10.10.198.101\"");
    assert!(error_for(&m, "nodes[1].address").contains("outside the cluster subnet 10.10.198.0/24"));
    let m = SEED.replace("gateway = \"10.10.197.1\"", "gateway = \"192.168.1.1\"");
    assert!(error_for(&m, "network.gateway").contains("outside"));
}

#[test]
fn subnet_errors_show_the_vip_and_prefix_as_given() {
    // The message names the VIP the user wrote (not the network address
    // derived from it) and the prefix length from [network].
    let m = SEED.replace("address = \"10.10.197.101\"", "address = \"10.10.198.101\"");
    let e = error_for(&m, "nodes[1].address");
    assert!(e.contains("(VIP 10.10.198.101 with prefix /24)"), "{e}");
    // A prefix length out of range is reported once, on itself, not as
    // every address "outside" a subnet of a prefix nobody wrote.
    let m = SEED.replace("prefix_length = 24", "prefix_length = 33");
    let errs = load(&m).unwrap_err();
    assert_eq!(errs.keys(), vec!["network.prefix_length"], "{errs}");
    assert!(errs.to_string().contains("33 is outside 8..=30"), "{errs}");
}

#[test]
fn node_outside_subnet() {
    let m = SEED.replace("address = \"10.10.197.99\"", "address = \"10.10.196.99\"");
    assert!(error_for(&m, "nodes[3].address").contains("outside the cluster subnet 10.10.197.0/24"));
}

#[test]
fn duplicate_address() {
    let m = SEED.replace("address = \"10.10.197.99\"", "address = \"10.10.197.98\"");
    assert!(error_for(&m, "nodes[3].address")
        .contains("duplicate address 10.10.197.98 (also nodes[1].address)"));
    let m = SEED.replace("address = \"10.10.197.99\"", "address = \"10.10.197.101\"");
    assert!(error_for(&m, "nodes[3].address").contains("also vip.address"));
}

#[test]
fn duplicate_hostname() {
    let m = SEED.replace("name = \"master-arm-3\"", "name = \"master-arm-2\"");
    assert!(error_for(&m, "nodes[3].name").contains("duplicate hostname"));
}

#[test]
fn unknown_board_and_distro() {
    let m = SEED.replace(
        "board = \"rpi4\"\naddress = \"10.10.197.98\"",
        "board = \"rpi5\"\naddress = \"10.10.197.98\"",
    );
    assert!(error_for(&m, "nodes[1].board").contains("unknown board \"rpi5\"; known: amd64, rpi4"));
    let m = SEED.replace("distro = \"ubuntu-24.04\"", "distro = \"fedora-41\"");
    assert!(error_for(&m, "cluster.distro").contains("unknown distro \"fedora-41\""));
}

#[test]
fn no_control_plane() {
    let m = SEED.replace("role = \"control-plane\"", "role = \"director\"");
    let errs = load(&m).unwrap_err();
    assert!(errs.keys().contains(&"nodes"), "{errs}");
    assert!(errs.to_string().contains("no control plane"));
}

#[test]
fn unknown_key_names_path_and_line() {
    let m = SEED.replace("port = 6443", "port = 6443\nprot = 6444");
    let shown = error_for(&m, "vip.prot");
    assert!(shown.contains("unknown field `prot`"), "{shown}");
    assert!(shown.contains("line "), "{shown}");
    let m = SEED.replace("board = \"amd64\"", "board = \"amd64\"\nnic = \"x\"");
    assert!(error_for(&m, "nodes[0].nic").contains("unknown field `nic`"));
}

#[test]
fn unknown_keys_do_not_hide_other_problems() {
    // Two unknown keys and a bad address: all three are reported, the
    // unknown keys with their lines in the file as written.
    let m = SEED
        .replace("port = 6443", "port = 6443\nprot = 6444")
        .replace("board = \"amd64\"", "board = \"amd64\"\nnic = \"x\"")
        .replace("gateway = \"10.10.197.1\"", "gateway = \"10.10.197.300\"");
    let errs = load(&m).unwrap_err();
    let keys = errs.keys();
    for k in ["vip.prot", "nodes[0].nic", "network.gateway"] {
        assert!(keys.contains(&k), "{k} not reported: {errs}");
    }
    let line_of = |needle: &str| m.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let nic = errs.0.iter().find(|e| e.key == "nodes[0].nic").unwrap();
    assert!(
        nic.problem
            .ends_with(&format!("(line {})", line_of("nic = "))),
        "{nic}"
    );
    let prot = errs.0.iter().find(|e| e.key == "vip.prot").unwrap();
    assert!(
        prot.problem
            .ends_with(&format!("(line {})", line_of("prot = "))),
        "{prot}"
    );
}

#[test]
fn wrong_type_is_named() {
    let m = SEED.replace("port = 6443", "port = \"6443\"");
    assert!(error_for(&m, "vip.port").contains("invalid type"));
}

#[test]
fn overlapping_networks() {
    let m = SEED.replace(
        "pod_subnet = \"10.88.0.0/16\"",
        "pod_subnet = \"10.10.0.0/16\"",
    );
    assert!(error_for(&m, "cluster.pod_subnet").contains("overlaps the node subnet"));
    let m = SEED.replace(
        "pod_subnet = \"10.88.0.0/16\"",
        "pod_subnet = \"10.88.0.1/16\"",
    );
    assert!(error_for(&m, "cluster.pod_subnet").contains("host bits"));
}

#[test]
fn versions_and_registry() {
    let m = SEED.replace(
        "kubernetes_version = \"1.36.3\"",
        "kubernetes_version = \"v1.31\"",
    );
    assert!(error_for(&m, "cluster.kubernetes_version").contains("not a full version"));
    let m = SEED.replace(
        "kubernetes_version = \"1.36.3\"",
        "kubernetes_version = \"1.30.9\"",
    );
    assert!(error_for(&m, "cluster.kubernetes_version").contains("v1beta4"));
    let m = SEED.replace(
        "# image_repository = \"registry.example:5000/google_containers\"",
        "image_repository = \"bad repo/\"",
    );
    error_for(&m, "cluster.image_repository");
}

#[test]
fn bootstrap_token_ttl_and_ca_fingerprint() {
    let c = load(SEED).unwrap();
    assert_eq!(c.bootstrap_token_ttl, "24h", "kubeadm's default");
    assert_eq!(c.ca_fingerprint, None);
    let with = |line: &str| {
        SEED.replace(
            "service_subnet = \"10.96.0.0/12\"",
            &format!("service_subnet = \"10.96.0.0/12\"\n{line}"),
        )
    };
    assert_eq!(
        load(&with("bootstrap_token_ttl = \"2h30m\""))
            .unwrap()
            .bootstrap_token_ttl,
        "2h30m"
    );
    for bad in ["0s", "30s", "24", "1d", "h", "30m2h", "1h1h", "-1h", ""] {
        let m = with(&format!("bootstrap_token_ttl = \"{bad}\""));
        error_for(&m, "cluster.bootstrap_token_ttl");
    }
    let pin = format!("sha256:{}", "AB".repeat(32));
    let c = load(&with(&format!("ca_fingerprint = \"{pin}\""))).unwrap();
    assert_eq!(c.ca_fingerprint.unwrap(), pin.to_lowercase());
    let m = with("ca_fingerprint = \"abc\"");
    assert!(error_for(&m, "cluster.ca_fingerprint").contains("secrets init"));
}

#[test]
fn ttl_parsing() {
    use super::manifest::parse_ttl;
    assert_eq!(parse_ttl("24h"), Ok(86400));
    assert_eq!(parse_ttl("1h30m"), Ok(5400));
    assert_eq!(parse_ttl("90m"), Ok(5400));
    assert_eq!(parse_ttl("1h0m30s"), Ok(3630));
    assert!(parse_ttl("59s").is_err());
    assert!(parse_ttl("99999999999999999999h").is_err());
}

#[test]
fn loadbalancer_values() {
    let m = SEED.replace("lvs_scheduler = \"wrr\"", "lvs_scheduler = \"fastest\"");
    assert!(error_for(&m, "loadbalancer.lvs_scheduler").contains("unknown LVS scheduler"));
    let m = SEED.replace("lvs_method = \"DR\"", "lvs_method = \"NAT\"");
    error_for(&m, "loadbalancer.lvs_method");
    let m = SEED.replace("virtual_router_id = 254", "virtual_router_id = 256");
    error_for(&m, "loadbalancer.virtual_router_id");
}

#[test]
fn bad_ssh_key_and_hostname() {
    let m = SEED.replace("authorized_keys = []", "authorized_keys = [\"hunter2\"]");
    error_for(&m, "ssh.authorized_keys[0]");
    // A key whose type word looks right but whose body is cut short: the
    // parser (ssh-key) refuses it, and the message shows which key it is.
    let good =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM+aTZgyL3gA4TjDtuwft8do8nyoFTrylVWdzx5pUcgc ok";
    let cut = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM+aTZgyL3gA4Tj alice@laptop";
    let m = SEED.replace(
        "authorized_keys = []",
        &format!("authorized_keys = [\"{good}\", \"{cut}\"]"),
    );
    let e = error_for(&m, "ssh.authorized_keys[1]");
    assert!(
        e.contains("alice@laptop") && e.contains("not an OpenSSH public key"),
        "{e}"
    );
    assert!(load(&m).unwrap_err().keys() == vec!["ssh.authorized_keys[1]"]);
    let m = SEED.replace("name = \"master-arm-3\"", "name = \"Master_3\"");
    assert!(error_for(&m, "nodes[3].name").contains("not a valid hostname"));
}

#[test]
fn second_director_priority_must_be_lower() {
    let m = SEED.replace(
        "# The first control plane",
        "[[nodes]]\nname = \"master-x86-2\"\nrole = \"director\"\nboard = \"amd64\"\naddress = \"10.10.197.95\"\npriority = 100\n\n# The first control plane",
    );
    assert!(
        error_for(&m, "nodes[1].priority").contains("must be below the priority of master-x86-1")
    );
    let ok = m.replace(
        "priority = 100\n\n# The first",
        "priority = 90\n\n# The first",
    );
    assert_eq!(load(&ok).unwrap().directors().count(), 2);
}

#[test]
fn every_problem_is_reported_at_once() {
    let m = SEED
        .replace("address = \"10.10.197.97\"", "address = \"nope\"")
        .replace(
            "board = \"rpi4\"\naddress = \"10.10.197.99\"",
            "board = \"rpi9\"\naddress = \"10.10.197.99\"",
        );
    let errs = load(&m).unwrap_err();
    assert!(
        errs.keys().contains(&"nodes[2].address") && errs.keys().contains(&"nodes[3].board"),
        "{errs}"
    );
}

#[test]
fn no_director() {
    let m = SEED
        .replace("role = \"director\"", "role = \"control-plane\"")
        .replace("priority = 100\n", "");
    let errs = load(&m).unwrap_err();
    assert!(errs.to_string().contains("no director"), "{errs}");
}

#[test]
fn director_mac_is_validated_and_normalised() {
    let with_mac = |mac: &str| {
        SEED.replace(
            "board = \"amd64\"",
            &format!("board = \"amd64\"\nmac = \"{mac}\""),
        )
    };
    let c = load(&with_mac("52:54:00:AB:cd:0F")).unwrap();
    assert_eq!(c.nodes[0].mac.as_deref(), Some("52:54:00:ab:cd:0f"));
    assert_eq!(load(SEED).unwrap().nodes[0].mac, None, "mac is optional");
    for (bad, why) in [
        ("52:54:00:12:34", "not a MAC address"),
        ("52-54-00-12-34-56", "not a MAC address"),
        ("52:54:00:12:34:5g", "not a MAC address"),
        ("52:54:00:12:34:+f", "not a MAC address"),
        ("01:00:5e:00:00:12", "multicast or broadcast"),
        ("ff:ff:ff:ff:ff:ff", "multicast or broadcast"),
        ("00:00:00:00:00:00", "all-zero"),
    ] {
        let shown = error_for(&with_mac(bad), "nodes[0].mac");
        assert!(shown.contains(why), "{bad}: {shown}");
    }
}

#[test]
fn mac_only_on_directors_and_unique() {
    let m = SEED.replace(
        "board = \"rpi4\"\naddress = \"10.10.197.98\"",
        "board = \"rpi4\"\naddress = \"10.10.197.98\"\nmac = \"52:54:00:12:34:56\"",
    );
    assert!(error_for(&m, "nodes[1].mac").contains("only directors"));
    let m = SEED
        .replace(
            "board = \"amd64\"",
            "board = \"amd64\"\nmac = \"52:54:00:12:34:56\"",
        )
        .replace(
            "# The first control plane",
            "[[nodes]]\nname = \"master-x86-2\"\nrole = \"director\"\nboard = \"amd64\"\naddress = \"10.10.197.95\"\npriority = 90\nmac = \"52:54:00:12:34:56\"\n\n# The first control plane",
        );
    assert!(error_for(&m, "nodes[1].mac")
        .contains("duplicate MAC address 52:54:00:12:34:56 (also nodes[0].mac)"));
}

#[test]
fn pins_are_normalised() {
    let hex = "AB".repeat(32);
    assert_eq!(
        parse_sha256_pin(&format!("sha256:{hex}")).unwrap(),
        format!("sha256:{}", "ab".repeat(32))
    );
    assert!(parse_sha256_pin(&hex).is_none());
    assert!(parse_sha256_pin("sha256:abc").is_none());
    assert!(parse_sha256_pin(&format!("sha1:{hex}")).is_none());
}

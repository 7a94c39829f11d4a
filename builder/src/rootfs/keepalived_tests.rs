//! keepalived.conf from real manifests (the seed's, and one with two
//! directors): golden files under `tests/golden/keepalived/`, keepalived's
//! own config test on each, and the rest of the director overlay.
//!
//! After an intended change to the template, regenerate the golden files
//! and review the diff:
//!
//!     HABUILD_BLESS=1 cargo test -p habuild --lib keepalived

use std::fs;
use std::path::Path;
use std::process::Command;

use pretty_assertions::assert_eq;

use super::*;
use crate::plan::NodePlan;
use crate::rootfs::context::{render_context, render_template, RenderContext};
use crate::rootfs::overlay::apply_overlays;
use crate::test_support::{self, repo_root, SEED};

const TWO: &str = "tests/fixtures/two-directors.toml";
const TEMPLATE: &str = "overlays/director/etc/keepalived/keepalived.conf.hbs";

/// The plan of `node`, made the way `habuild image` makes it.
fn plan(manifest: &str, node: &str) -> NodePlan {
    test_support::plan(manifest, node, |_| {})
}

fn render(ctx: &RenderContext) -> String {
    let path = repo_root().join(TEMPLATE);
    render_template(TEMPLATE, &fs::read_to_string(path).unwrap(), ctx).unwrap()
}

/// keepalived.conf of `node` in `manifest`.
fn conf(manifest: &str, node: &str) -> String {
    render(&render_context(&plan(manifest, node), None))
}

/// Compares with `tests/golden/keepalived/<name>`, or rewrites it when
/// `HABUILD_BLESS=1`.
fn golden(name: &str, produced: &str) {
    let path = repo_root().join("tests/golden/keepalived").join(name);
    if std::env::var("HABUILD_BLESS").as_deref() == Ok("1") {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, produced).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let expected = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (HABUILD_BLESS=1 creates it)", path.display()));
    assert_eq!(
        expected, produced,
        "{name} differs from its golden file (HABUILD_BLESS=1 regenerates)"
    );
}

/// True when keepalived runs here; the config tests are skipped (loudly)
/// on a host without it (`habuild doctor --install` installs it).
fn have_keepalived() -> bool {
    let ok = Command::new("keepalived")
        .arg("--version")
        .output_checked()
        .is_ok();
    if !ok {
        eprintln!("SKIPPED: `keepalived` is not installed on this host");
    }
    ok
}

/// Writes `text` to a temporary keepalived.conf and runs the check on it.
fn check_text(text: &str) -> Result<()> {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("keepalived.conf");
    fs::write(&conf, text).unwrap();
    check_file(&conf)
}

/// Lines of a rendered file without comments and blank lines, trimmed.
fn directives(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('!') && !l.starts_with('#'))
        .collect()
}

#[test]
fn golden_seed_director() {
    let conf = conf(SEED, "master-x86-1");
    golden("seed-master-x86-1.conf", &conf);

    // The seed's keepalived.conf, value for value.
    let d = directives(&conf);
    for line in [
        "router_id master-x86-1",
        "vrrp_instance loadbalance {",
        "state MASTER",
        "interface lan0",
        "virtual_router_id 254",
        "priority 100",
        "advert_int 1",
        "10.10.197.101",
        "virtual_server 10.10.197.101 6443 {",
        "delay_loop 6",
        "lvs_sched wrr",
        "lvs_method DR",
        "protocol TCP",
    ] {
        assert!(d.contains(&line), "{line:?} missing:\n{conf}");
    }
    let real: Vec<&str> = d
        .iter()
        .copied()
        .filter(|l| l.starts_with("real_server "))
        .collect();
    assert_eq!(
        real,
        [
            "real_server 10.10.197.98 6443 {",
            "real_server 10.10.197.97 6443 {",
            "real_server 10.10.197.99 6443 {",
        ]
    );
    for (line, n) in [
        ("weight 10", 3),
        ("TCP_CHECK {", 3),
        ("connect_timeout 10", 3),
        ("retry 3", 3),
        ("delay_before_retry 3", 3),
        ("connect_port 6443", 3),
    ] {
        assert_eq!(d.iter().filter(|l| **l == line).count(), n, "{line}");
    }
    // One director: VRRP by multicast as in the seed, no password.
    for absent in ["unicast_peer", "unicast_src_ip", "authentication", "auth_"] {
        assert!(!conf.contains(absent), "{absent}:\n{conf}");
    }
}

#[test]
fn golden_two_directors() {
    let master = conf(TWO, "master-x86-1");
    let backup = conf(TWO, "master-x86-2");
    golden("two-directors-master-x86-1.conf", &master);
    golden("two-directors-master-x86-2.conf", &backup);

    let (m, b) = (directives(&master), directives(&backup));
    for (d, state, prio, src, peer) in [
        (&m, "MASTER", 100, "10.10.197.96", "10.10.197.95"),
        (&b, "BACKUP", 90, "10.10.197.95", "10.10.197.96"),
    ] {
        for line in [
            format!("state {state}"),
            format!("priority {prio}"),
            format!("unicast_src_ip {src}"),
            "check_unicast_src".into(),
            "virtual_router_id 254".into(),
        ] {
            assert!(d.contains(&line.as_str()), "{line:?} missing: {d:?}");
        }
        let at = d.iter().position(|l| *l == "unicast_peer {").unwrap();
        assert_eq!(d[at + 1..at + 3], [peer, "}"], "the other director only");
    }
    // Both directors run the same virtual server; only VRRP differs.
    let lvs = |t: &str| t[t.find("virtual_server ").unwrap()..].to_string();
    assert_eq!(lvs(&master), lvs(&backup));
    assert!(!master.contains("auth_type"), "{master}");
}

#[test]
fn keepalived_accepts_the_rendered_configurations() {
    if !have_keepalived() {
        return;
    }
    for (manifest, node) in [
        (SEED, "master-x86-1"),
        (TWO, "master-x86-1"),
        (TWO, "master-x86-2"),
    ] {
        check_text(&conf(manifest, node)).unwrap_or_else(|e| panic!("{manifest} {node}: {e:#}"));
    }
}

#[test]
fn keepalived_rejects_a_value_out_of_its_range() {
    if !have_keepalived() {
        return;
    }
    // habuild's validation only asks for advert_int >= 1; keepalived allows
    // at most 255 s and would otherwise fall back to its default.
    let p = test_support::plan(SEED, "master-x86-1", |c| c.loadbalancer.advert_int = 300);
    let msg = format!(
        "{:#}",
        check_text(&render(&render_context(&p, None))).unwrap_err()
    );
    assert!(msg.contains("config test rejects"), "{msg}");
    assert!(msg.contains("'300' outside range"), "{msg}");
}

#[test]
fn keepalived_rejects_a_broken_file() {
    if !have_keepalived() {
        return;
    }
    let broken = conf(SEED, "master-x86-1").replace("delay_loop", "dely_loop");
    let msg = format!("{:#}", check_text(&broken).unwrap_err());
    assert!(msg.contains("Unknown keyword 'dely_loop'"), "{msg}");
}

#[test]
fn keepalived_check_needs_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("keepalived.conf");
    let msg = format!("{:#}", check_file(&missing).unwrap_err());
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    fs::write(&missing, "").unwrap();
    let msg = format!("{:#}", check_file(&missing).unwrap_err());
    assert!(msg.contains("not a non-empty file"), "{msg}");
}

#[test]
fn keepalived_command_line() {
    let cmd = config_test_command(Path::new("/x/keepalived.conf"));
    assert_eq!(cmd.get_program(), "keepalived");
    assert_eq!(
        cmd.get_args().collect::<Vec<_>>(),
        ["--config-test", "--use-file", "/x/keepalived.conf"]
    );
}

#[test]
fn keepalived_context_of_directors_and_control_planes() {
    let plans = [
        plan(TWO, "master-arm-1"),
        plan(TWO, "master-x86-1"),
        plan(TWO, "master-x86-2"),
        plan(SEED, "master-x86-1"),
    ];
    let [cp, m, b, seed] = plans.each_ref().map(|p| render_context(p, None));
    assert!(cp.lan.is_none() && cp.vrrp.is_none());
    let states: Vec<(&str, &str, u8)> = cp
        .loadbalancer
        .directors
        .iter()
        .map(|d| (d.node.name.as_str(), d.state, d.node.priority))
        .collect();
    assert_eq!(
        states,
        [
            ("master-x86-1", "MASTER", 100),
            ("master-x86-2", "BACKUP", 90)
        ]
    );
    let lan = m.lan.unwrap();
    assert_eq!(
        (lan.name, lan.mac.as_deref()),
        ("lan0", Some("52:54:00:c0:ff:ee"))
    );
    assert_eq!(m.vrrp.unwrap().unicast_peers, ["10.10.197.95"]);
    assert_eq!(b.lan.unwrap().mac, None);
    assert!(seed.vrrp.unwrap().unicast_peers.is_empty());
}

/// The rest of the director overlay, applied after `common/` as in an image.
#[test]
fn keepalived_director_overlay_content() {
    let root = repo_root();
    for (node, link_match) in [
        ("master-x86-1", vec!["MACAddress=52:54:00:c0:ff:ee"]),
        ("master-x86-2", vec!["Type=ether", "Kind=!*"]),
    ] {
        let dest = tempfile::tempdir().unwrap();
        let t = dest.path();
        let files = apply_overlays(
            &[
                &root.join("overlays/common"),
                &root.join("overlays/director"),
            ],
            t,
            &render_context(&plan(TWO, node), None),
        )
        .unwrap();
        let read = |p: &str| fs::read_to_string(t.join(p)).unwrap();
        assert!(files
            .iter()
            .any(|f| f.path == CONFIG_PATH && f.mode == 0o644));

        let link = read("etc/systemd/network/10-habuild-lan.link");
        let d = directives(&link);
        let at = d.iter().position(|l| *l == "[Link]").unwrap();
        assert_eq!(d[0], "[Match]", "{link}");
        assert_eq!(d[1..at], link_match[..], "{node}: {link}");
        assert_eq!(d[at + 1..], ["Name=lan0"], "{link}");

        let network = read("etc/systemd/network/10-habuild-wired.network");
        let d = directives(&network);
        assert_eq!(d[..2], ["[Match]", "Name=lan0"], "{network}");
        let address = if node == "master-x86-1" {
            "10.10.197.96"
        } else {
            "10.10.197.95"
        };
        assert!(
            d.contains(&format!("Address={address}/24").as_str()),
            "{network}"
        );

        assert_eq!(
            directives(&read("etc/modules-load.d/ipvs.conf")),
            ["ip_vs", "ip_vs_wrr"]
        );
        assert_eq!(
            fs::read_link(t.join("etc/systemd/system/multi-user.target.wants/keepalived.service"))
                .unwrap(),
            Path::new("/usr/lib/systemd/system/keepalived.service")
        );
        let hosts = read("etc/hosts");
        for line in ["10.10.197.96\tmaster-x86-1", "10.10.197.95\tmaster-x86-2"] {
            assert!(hosts.lines().any(|l| l == line), "{line}: {hosts}");
        }
        assert_eq!(read("etc/hostname"), format!("{node}\n"));
        // A director runs no Kubernetes: nothing of the control-plane overlay.
        assert!(
            !t.join("etc/crio").exists()
                && !t.join("usr/lib/systemd/system/realServer.service").exists()
        );
    }
}

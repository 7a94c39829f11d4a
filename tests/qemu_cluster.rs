//! `habuild test` on the images of the two-director fixture (the seed's
//! cluster plus a VRRP backup director), built with the Kubernetes TEST
//! DOUBLES bundle:
//! - tier 1 on one image of each kind, the director without a `mac` (its
//!   LAN NIC found by the fallback match) and the init control plane: each
//!   boots as itself (rpi4 on raspi4b from its own boot partition, the
//!   director under OVMF through its own bootloader), reaches
//!   multi-user.target with no failed unit and passes the checks inside the
//!   guest, on a disk larger than the image: the root grows to fill it at
//!   first boot (the director's ext4, from the native writer, converting to
//!   meta_bg) and e2fsck finds it clean after; the images themselves are not
//!   touched. The other three are the same recipe with another identity;
//!   `habuild test --tier all` boots all five in tier 1, which on 2 cores
//!   costs about 10 more minutes than CI can give;
//! - tier 2: every image, the whole cluster on a closed segment in a network
//!   namespace, and the seed's failover test, scenarios 1 to 5.
//!
//! Needs root (network namespaces, taps) and about 16 minutes on 2 cores
//! (961 s in a cold CI run, 2026-12-05).
//! Shares the base cache with image_rpi4 and image_director.

mod common;

use common::*;

/// Tier 1 boots one image of each kind (see the module's doc).
const TIER1_NODES: [&str; 2] = ["master-x86-2", "master-arm-1"];

const NODES: [&str; 5] = [
    "master-x86-1",
    "master-x86-2",
    "master-arm-1",
    "master-arm-2",
    "master-arm-3",
];

#[test]
fn every_image_boots_then_the_cluster_fails_over() {
    let w = Workspace::new("two-directors.toml");
    w.build(&["--all"]);
    let dir = w.out.join("twodirectors");
    let before: Vec<String> = NODES
        .iter()
        .map(|n| sha256(&dir.join(format!("{n}.img"))))
        .collect();

    let tier1: Vec<(String, String)> = TIER1_NODES
        .iter()
        .map(|n| {
            let run = habuild_plain(&[
                "test",
                "--tier",
                "1",
                "--node",
                n,
                "--manifest",
                w.m(),
                "--out",
                w.o(),
            ]);
            let r = std::fs::read_to_string(dir.join(format!("test/{n}-tier1.txt")))
                .unwrap_or_default();
            assert!(
                run.status.success(),
                "tier 1 of {n} failed:\n{}\n{r}",
                run.stderr
            );
            (n.to_string(), r)
        })
        .collect();
    let run = habuild_plain(&["test", "--tier", "2", "--manifest", w.m(), "--out", w.o()]);
    let tier2 = std::fs::read_to_string(dir.join("test/tier2.txt")).unwrap_or_default();
    assert!(
        run.status.success(),
        "habuild test --tier 2 failed:\n{}\n{tier2}",
        run.stderr
    );
    for (node, report) in &tier1 {
        assert!(report.contains(": PASS"), "{node}:\n{report}");
        assert!(!report.contains("[FAIL]"), "{node}:\n{report}");
        assert!(
            report.contains("[ok] system state \"running\""),
            "{node}:\n{report}"
        );
        for needle in [
            "[ok] root partition grew to",
            "[ok] root ext4 fills its partition",
            "[ok] root ext4 after growth: e2fsck -fn clean",
        ] {
            assert!(report.contains(needle), "{node}: {needle}\n{report}");
        }
        let log = dir.join(format!("test/{node}-tier1.log"));
        assert!(
            std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) > 10_000,
            "{node}: the serial log was not kept"
        );
    }
    let report = |n: &str| &tier1.iter().find(|(m, _)| m == n).unwrap().1;
    // The rpi4 image booted under raspi4b; first boot (kubeadm init, a
    // TEST DOUBLE) ran and then enabled realServer.
    assert!(report("master-arm-1").contains("raspi4b"));
    assert!(report("master-arm-1").contains("realServer.service is enabled"));
    // The director booted through OVMF and runs keepalived; its NIC was
    // found without a MAC in the manifest.
    let d = "master-x86-2";
    assert!(report(d).contains("q35"), "{}", report(d));
    assert!(
        report(d).contains("keepalived.service is active"),
        "{}",
        report(d)
    );
    assert!(
        report(d).contains("lan0 has 10.10.197.95/24"),
        "{}",
        report(d)
    );
    // 20 GiB is past what the native writer's one block of group
    // descriptors covers: growing converted the ext4 to meta_bg.
    assert!(report(d).contains(" meta_bg "), "{}", report(d));

    // Tier 2: the cluster and its failover test.
    let report = tier2;
    assert!(report.ends_with("tier 2: PASS\n"), "{report}");
    assert!(!report.contains("[FAIL]"), "{report}");
    assert!(report.contains("TEST DOUBLES"), "{report}");
    // Each scenario ran and was timed against its window.
    for needle in [
        "1. first-boot order",
        "2. LVS-DR",
        "3. power off master-arm-1",
        "removed from 10.10.197.101:6443",
        "4. power master-arm-1 on again",
        "10.10.197.98:6443 re-added to 10.10.197.101:6443 on",
        "VIP answered by",
        "5. stop the MASTER director master-x86-1",
        "VIP moved to master-x86-2",
        "longest stretch with the VIP not accepting connections",
    ] {
        assert!(report.contains(needle), "missing {needle:?}:\n{report}");
    }

    // The guests booted copies: no image changed.
    let after: Vec<String> = NODES
        .iter()
        .map(|n| sha256(&dir.join(format!("{n}.img"))))
        .collect();
    assert_eq!(before, after, "an image was modified by habuild test");
    // Nothing left behind: not this run's namespace. Only the name the
    // report gives counts; another run on the same machine (a CI rehearsal
    // beside the real CI) has its own namespace, which is not ours to judge.
    let ours = report
        .split("(network namespace ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("the report names no namespace:\n{report}"));
    assert!(ours.starts_with("habuild-t2-"), "{ours}");
    let ns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&ns.stdout);
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(ours)),
        "this run's namespace {ours} survived:\n{listed}"
    );
}

//! Tier 2 of `habuild test`: the seed's cluster (one director, three
//! control planes with Kubernetes TEST DOUBLES) on a closed segment in a
//! network namespace, and the seed's failover test. Needs root (network
//! namespaces, taps) and about 10 minutes on 2 cores, so it is ignored in
//! the default run; `.ci/run` and users run it with
//! `cargo test --test qemu_tier2 -- --ignored`.

mod common;

use common::*;

#[test]
#[ignore = "tier 2: boots four guests (~10 min, root); run with --ignored"]
fn seed_cluster_forms_and_fails_over() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let bundle = t.path().join("bundle");
    habuild::testdoubles::build_bundle(&repo_root().join("tests/doubles"), "arm64", &bundle, EPOCH)
        .unwrap();
    // A copy of the fixture, with its own secrets beside it.
    let manifest = fixture_copy(t.path(), "test-cluster.toml", "test-cluster.toml");
    let m = manifest.to_str().unwrap();
    let run = habuild_plain(&["secrets", "init", "--manifest", m]);
    assert!(run.status.success(), "secrets init failed:\n{}", run.stderr);
    let run = habuild(&[
        "image",
        "--all",
        "--manifest",
        m,
        "--k8s-bundle",
        bundle.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "habuild image failed:\n{}",
        run.stderr
    );

    let run = habuild_plain(&[
        "test",
        "--tier",
        "2",
        "--manifest",
        m,
        "--out",
        out.to_str().unwrap(),
    ]);
    let report =
        std::fs::read_to_string(out.join("testcluster/test/tier2.txt")).unwrap_or_default();
    assert!(
        run.status.success(),
        "tier 2 failed:\n{}\n{report}",
        run.stderr
    );
    assert!(report.ends_with("tier 2: PASS\n"), "{report}");
    assert!(!report.contains("[FAIL]"), "{report}");
    // Each scenario ran and was timed against its window.
    for needle in [
        "1. first-boot order",
        "2. LVS-DR",
        "3. power off master-arm-1",
        "4. power master-arm-1 on again",
        "removed from 10.10.197.101:6443",
        "re-added",
    ] {
        assert!(report.contains(needle), "missing {needle:?}:\n{report}");
    }
    // Nothing left behind: no namespace of this run.
    let ns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&ns.stdout).contains("habuild-t2-"),
        "a tier-2 namespace survived"
    );
}

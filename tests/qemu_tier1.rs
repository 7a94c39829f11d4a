//! Tier 1 of `habuild test`: the rpi4 SD image (Debian profile, test-double
//! Kubernetes bundle) boots under QEMU's raspi4b as it is, reaches
//! multi-user.target with no failed unit, and shows from inside the files
//! and units habuild baked in. Shares the base cache with image_rpi4.

mod common;

use common::*;

#[test]
fn rpi4_image_boots_under_raspi4b_and_passes_its_checks() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let bundle = t.path().join("bundle");
    habuild::testdoubles::build_bundle(&repo_root().join("tests/doubles"), "arm64", &bundle, EPOCH)
        .unwrap();
    let manifest = repo_root().join("tests/fixtures/test-cluster.toml");
    let m = manifest.to_str().unwrap();
    // Control-plane images carry the cluster's secrets (habuild secrets init).
    let secrets = t.path().join("testcluster.secrets.toml");
    let s = secrets.to_str().unwrap();
    assert!(
        habuild_plain(&["secrets", "init", "--manifest", m, "--secrets", s])
            .status
            .success()
    );
    let run = habuild(&[
        "image",
        "--node",
        "master-arm-1",
        "--manifest",
        m,
        "--secrets",
        s,
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
    let image = out.join("testcluster/master-arm-1.img");
    let before = sha256(&image);

    let run = habuild_plain(&[
        "test",
        "--node",
        "master-arm-1",
        "--manifest",
        m,
        "--out",
        out.to_str().unwrap(),
    ]);
    let report = std::fs::read_to_string(out.join("testcluster/test/master-arm-1-tier1.txt"))
        .unwrap_or_default();
    assert!(
        run.status.success(),
        "tier 1 failed:\n{}\n{report}",
        run.stderr
    );
    assert!(report.contains("PASS"), "{report}");
    assert!(report.contains("[ok] system state \"running\""), "{report}");
    // First boot ran (kubeadm init, a test double here) and then enabled realServer.
    assert!(report.contains("realServer.service is enabled"), "{report}");
    assert!(
        std::fs::metadata(out.join("testcluster/test/master-arm-1-tier1.log"))
            .unwrap()
            .len()
            > 10_000,
        "the serial log was not kept"
    );
    // The image itself was not touched: the guest booted a copy.
    assert_eq!(sha256(&image), before);
}

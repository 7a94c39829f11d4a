//! Same manifest, secrets, base and SOURCE_DATE_EPOCH → the same bytes.
//! Builds the amd64 director twice into two output directories and compares
//! every artifact; when the images differ, the failure names the first
//! differing partition and file (`habuild::artifact::compare`).
//!
//! Needs root and the host tools `habuild doctor --install` sets up; the
//! base comes from (or goes into) `target/habuild-test-cache`.

mod common;

use std::path::Path;

use common::*;
use habuild::artifact::compare;

fn build(manifest: &Path, out: &Path) {
    let run = habuild(&[
        "image",
        "--node",
        "master-x86-1",
        "--distro",
        "debian-13",
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        run.status.success(),
        "habuild image failed:\n{}",
        run.stderr
    );
}

#[test]
fn director_image_is_bit_identical_across_builds() {
    let t = tempfile::tempdir().unwrap();
    let manifest = t.path().join("cluster.toml");
    std::fs::copy(
        repo_root().join("tests/fixtures/test-cluster.toml"),
        &manifest,
    )
    .unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    build(&manifest, &a);
    build(&manifest, &b);
    let (a, b) = (a.join("testcluster"), b.join("testcluster"));

    let layout = compare::read_layout(&a.join("master-x86-1.json")).unwrap();
    let diff = compare::explain_difference(
        &a.join("master-x86-1.img"),
        &b.join("master-x86-1.img"),
        &layout,
    )
    .unwrap();
    assert!(diff.is_none(), "{}", diff.unwrap_or_default());
    for f in [
        "master-x86-1.img.bmap",
        "master-x86-1.json",
        "master-x86-1-firmware.tar.gz",
        "SHA256SUMS",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between the two builds"
        );
    }

    // The comparer names what differs: one byte of /etc/hostname's data.
    let root = &layout.partitions[1];
    let fs = format!(
        "{}?offset={}",
        b.join("master-x86-1.img").display(),
        root.start
    );
    let block: u64 = sh(std::process::Command::new("debugfs")
        .args(["-R", "bmap /etc/hostname 0"])
        .arg(&fs))
    .trim()
    .parse()
    .unwrap();
    let img = b.join("master-x86-1.img");
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"#", root.start + block * 4096).unwrap();
    let diff = compare::explain_difference(&a.join("master-x86-1.img"), &img, &layout)
        .unwrap()
        .expect("a flipped byte is a difference");
    assert!(
        diff.contains("partition 2 `root`") && diff.contains("/etc/hostname"),
        "{diff}"
    );
}

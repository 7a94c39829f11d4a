//! Same manifest, secrets, base and SOURCE_DATE_EPOCH → the same bytes.
//! Builds the amd64 director twice into two output directories and compares
//! every artifact; when the images differ, the failure names the first
//! differing partition and file (`habuild::artifact::compare`). The same
//! builds then serve `habuild verify`: untouched, one byte flipped, truncated.
//!
//! Needs root and the host tools `habuild doctor --install` sets up; the
//! base comes from (or goes into) `target/habuild-test-cache`.

mod common;

use common::*;
use habuild::artifact::compare;

#[test]
fn director_image_is_bit_identical_and_verifiable() {
    let t = tempfile::tempdir().unwrap();
    let manifest = fixture_copy(t.path(), "test-cluster.toml", "cluster.toml");
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    build_director(&manifest, &a);
    build_director(&manifest, &b);
    let (a, b) = (a.join("testcluster"), b.join("testcluster"));

    let layout = habuild::artifact::report::read_layout(&a.join("master-x86-1.json")).unwrap();
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
        "master-x86-1.cdx.json",
        "master-x86-1-firmware.tar.gz",
        "SHA256SUMS",
    ] {
        assert_eq!(
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
            "{f} differs between the two builds"
        );
    }

    // habuild verify: the untouched image passes every check.
    let img_a = a.join("master-x86-1.img");
    let run = habuild_plain(&["verify", img_a.to_str().unwrap()]);
    assert!(run.status.success(), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.lines().count() >= 5 && run.stdout.lines().all(|l| l.starts_with("ok")),
        "{}",
        run.stdout
    );

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

    // verify names the range holding the flipped byte, and the image's sum.
    let run = habuild_plain(&["verify", img.to_str().unwrap()]);
    assert!(!run.status.success(), "{}", run.stdout);
    let at = root.start + block * 4096;
    assert!(
        run.stdout.contains("MISMATCH  master-x86-1.img against"),
        "{}",
        run.stdout
    );
    let named = run
        .stdout
        .lines()
        .find(|l| l.contains("mapped ranges of the bmap"))
        .unwrap();
    assert!(
        named.starts_with("MISMATCH") && named.contains("1 differ: blocks "),
        "{named}"
    );
    let (lo, hi) = named
        .split_once("(bytes ")
        .unwrap()
        .1
        .split_once(')')
        .unwrap()
        .0
        .split_once("..")
        .unwrap();
    assert!(
        lo.parse::<u64>().unwrap() <= at && at < hi.parse::<u64>().unwrap(),
        "{named} should hold byte {at}"
    );

    // A truncated copy: a clear error, not a read failure.
    let short = t.path().join("short.img");
    std::fs::copy(&img_a, &short).unwrap();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&short)
        .unwrap();
    f.set_len(layout.size / 2).unwrap();
    let run = habuild_plain(&[
        "verify",
        short.to_str().unwrap(),
        "--image",
        img_a.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(run.stdout.contains("truncated"), "{}", run.stdout);
    assert!(
        run.stdout.contains("past the end of the target"),
        "{}",
        run.stdout
    );
}

//! Builds the real amd64 director image (Debian 13 profile, the one these
//! machines can reach) and checks it with independent tools: sfdisk,
//! fsck.fat, e2fsck, mtools, debugfs, sha256sum. Then a second director of
//! a two-director manifest (VRRP backup) with the other ext4 writer
//! (`--ext4-writer mke2fs`; the first image has the default, native one),
//! and a manifest value keepalived rejects, which must stop the build before
//! an image is written. `--bases-only` finds the base the first build
//! used and writes no image.
//!
//! Needs root and the host tools `habuild doctor --install` sets up. The
//! amd64 bootstrap is native (about a minute); later runs reuse the cache in
//! `target/habuild-test-cache`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// GPT partition type GUIDs (UEFI spec; Discoverable Partitions Specification).
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const ROOT_X86_64_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

#[test]
fn director_debian_image_checked_with_independent_tools() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let manifest = repo_root().join("tests/fixtures/test-cluster.toml");

    // 1. The seed's director. No --without-kubernetes and no bundle: a
    //    director installs no Kubernetes packages, so it needs neither.
    let run = build_director(&manifest, &out);
    assert!(run.stderr.contains("keepalived"), "{}", run.stderr);
    assert!(!run.stderr.contains("WITHOUT"), "{}", run.stderr);
    let dir = out.join("testcluster");

    // `--bases-only` finds the base this build used, needs no secrets file
    // and touches no output directory.
    let bases_out = t.path().join("bases-out");
    let bases = habuild(&director_image_args(
        &manifest,
        &bases_out,
        &["--bases-only", "--secrets", "/nonexistent/secrets.toml"],
    ));
    assert!(bases.status.success(), "{}", bases.stderr);
    assert!(
        bases.stderr.contains("master-x86-1: base ") && bases.stderr.contains("found in the cache"),
        "{}",
        bases.stderr
    );
    assert!(
        !bases_out.exists(),
        "--bases-only made {}",
        bases_out.display()
    );

    for f in [
        "master-x86-1.img",
        "master-x86-1.img.bmap",
        "master-x86-1.json",
        "SHA256SUMS",
    ] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    assert_no_leftovers(&dir);
    sh(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&dir));

    // Partition table: GPT, an EFI system partition, then the x86-64 root.
    let img = dir.join("master-x86-1.img");
    let (esp, root) = partitions(&img, t.path(), "x86-1");

    // ESP: FAT, systemd-boot at the removable-media path, its entry.
    sh(Command::new("fsck.fat").arg("-n").arg(&esp));
    let listing = sh(Command::new("mdir")
        .args(["-/", "-b", "-i"])
        .arg(&esp)
        .arg("::"));
    for f in [
        "::/EFI/BOOT/BOOTX64.EFI",
        "::/loader/loader.conf",
        "::/loader/entries/habuild.conf",
        "::/vmlinuz",
        "::/initrd.img",
    ] {
        assert!(
            listing.lines().any(|l| l == f),
            "{f} not on the ESP:\n{listing}"
        );
    }
    let efi = t.path().join("BOOTX64.EFI");
    sh(Command::new("mcopy")
        .arg("-i")
        .arg(&esp)
        .arg("::EFI/BOOT/BOOTX64.EFI")
        .arg(&efi));
    let efi = std::fs::read(&efi).unwrap();
    assert_eq!(&efi[..2], b"MZ", "BOOTX64.EFI is not a PE image");
    assert!(
        efi.windows(12).any(|w| w == b"systemd-boot"),
        "BOOTX64.EFI is not systemd-boot"
    );
    let loader = mtype(&esp, "loader/loader.conf");
    assert!(
        loader.lines().any(|l| l == "default habuild.conf"),
        "{loader}"
    );
    let entry = mtype(&esp, "loader/entries/habuild.conf");
    for line in ["linux   /vmlinuz", "initrd  /initrd.img"] {
        assert!(entry.lines().any(|l| l == line), "{line}: {entry}");
    }
    assert!(entry.contains("root=LABEL=root"), "{entry}");

    // Root filesystem, read back with debugfs. The default writer is the
    // native one, whose ext4 has neither 64bit nor resize_inode.
    sh(Command::new("e2fsck").arg("-fn").arg(&root));
    let features = ext4_features(&root);
    for f in ["has_journal", "extent", "metadata_csum", "flex_bg"] {
        assert!(features.contains(&f.to_string()), "{f}: {features:?}");
    }
    assert!(!features.contains(&"64bit".to_string()), "{features:?}");
    assert_eq!(debugfs_cat(&root, "/etc/hostname").trim(), "master-x86-1");
    let conf = debugfs_cat(&root, "/etc/keepalived/keepalived.conf");
    let d = directives(&conf);
    for line in [
        "state MASTER",
        "interface lan0",
        "virtual_router_id 254",
        "priority 100",
        "advert_int 1",
        "virtual_server 10.10.197.101 6443 {",
        "lvs_sched wrr",
        "lvs_method DR",
        "protocol TCP",
        "real_server 10.10.197.98 6443 {",
        "real_server 10.10.197.97 6443 {",
        "real_server 10.10.197.99 6443 {",
        "connect_port 6443",
    ] {
        assert!(
            d.contains(&line),
            "{line:?} not in keepalived.conf:\n{conf}"
        );
    }
    assert!(
        !conf.contains("unicast_peer"),
        "one director: multicast, as the seed"
    );

    // Enabled units: keepalived and networkd, links into units that exist.
    let wants = "/etc/systemd/system/multi-user.target.wants";
    for unit in ["keepalived.service", "systemd-networkd.service"] {
        let stat = debugfs_stat(&root, &format!("{wants}/{unit}"));
        let target = format!("/usr/lib/systemd/system/{unit}");
        assert!(
            stat.contains(&format!("Fast link dest: \"{target}\"")),
            "{unit} not enabled:\n{stat}"
        );
        assert!(
            debugfs_cat(&root, &target).contains("[Service]"),
            "{target} is not in the image"
        );
    }
    for bin in ["/usr/sbin/keepalived", "/usr/sbin/ipvsadm"] {
        assert!(debugfs_stat(&root, bin).contains("Type: regular"), "{bin}");
    }

    // IPVS modules load at boot, and the kernel in the image has them.
    let modules = debugfs_cat(&root, "/etc/modules-load.d/ipvs.conf");
    assert_eq!(directives(&modules), ["ip_vs", "ip_vs_wrr"]);
    let kernels = debugfs_ls(&root, "/usr/lib/modules");
    assert_eq!(kernels.len(), 1, "{kernels:?}");
    let ipvs = debugfs_ls(
        &root,
        &format!("/usr/lib/modules/{}/kernel/net/netfilter/ipvs", kernels[0]),
    );
    for m in ["ip_vs", "ip_vs_wrr"] {
        assert!(
            ipvs.iter().any(|f| f.split('.').next() == Some(m)),
            "{m} not in the image's kernel: {ipvs:?}"
        );
    }

    // The LAN NIC is named lan0, and networkd configures that name.
    let link = debugfs_cat(&root, "/etc/systemd/network/10-habuild-lan.link");
    let l = directives(&link);
    assert!(
        l.contains(&"Name=lan0") && l.contains(&"Type=ether"),
        "{link}"
    );
    let network = debugfs_cat(&root, "/etc/systemd/network/10-habuild-wired.network");
    let n = directives(&network);
    assert!(
        n.contains(&"Name=lan0") && n.contains(&"Address=10.10.197.96/24"),
        "{network}"
    );

    // Identity as for the Pi images: SSH key, no shared machine id.
    assert!(debugfs_stat(&root, "/root/.ssh/authorized_keys").contains("Mode:  0600"));
    assert!(debugfs_cat(&root, "/root/.ssh/authorized_keys").contains("habuild-test"));
    assert_eq!(debugfs_cat(&root, "/etc/machine-id"), "");

    // Content manifest.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("master-x86-1.json")).unwrap()).unwrap();
    assert_eq!(report["role"], "director");
    assert_eq!(report["board"], "amd64");
    assert_eq!(report["image"]["partition_table"], "gpt");
    assert_eq!(report["image"]["ext4_writer"], "native");
    let pkgs = report["packages"].as_array().unwrap();
    for p in [
        "keepalived",
        "ipvsadm",
        "systemd-boot-efi",
        "linux-image-amd64",
    ] {
        assert!(
            pkgs.iter()
                .any(|x| x["name"] == p && x["architecture"] != "arm64"),
            "{p} not in the package list"
        );
    }
    assert!(
        report["kubernetes"]["note"].is_null(),
        "{}",
        report["kubernetes"]
    );

    // 2. The backup of a two-director manifest (base from the cache), its
    //    root written by mke2fs, one more key from --ssh-key, what was
    //    built as a JSON document on stdout, and no progress (-q).
    let two = repo_root().join("tests/fixtures/two-directors.toml");
    let extra_key = t.path().join("extra.pub");
    std::fs::write(
        &extra_key,
        "# a second admin\necdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBI058LfSW4cgRvoV7wVfRaz1Dj0xFH00LMQnqDI3i0HDSFxUjeUkMdo6SD0cL9FGeRuBv2EIYmgGa2E3jmqPE1Y= second@admin\n",
    )
    .unwrap();
    let run = habuild(&[
        "image",
        "--ext4-writer",
        "mke2fs",
        "--node",
        "master-x86-2",
        "--manifest",
        two.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--ssh-key",
        extra_key.to_str().unwrap(),
        "--json",
        "-q",
    ]);
    assert!(
        run.status.success(),
        "second director failed:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("base from cache"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("building master-x86-2")
            && !run.stderr.contains("making filesystems and the disk image"),
        "-q prints no progress:\n{}",
        run.stderr
    );
    let built: serde_json::Value = serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "--json: not one JSON document on stdout ({e}):\n{}",
            run.stdout
        )
    });
    assert_eq!(built["ok"], true);
    assert_eq!(built["images"][0]["node"], "master-x86-2");
    assert_eq!(built["images"][0]["base_from_cache"], true);
    let img2 = out.join("twodirectors/master-x86-2.img");
    assert_eq!(built["images"][0]["image"], img2.to_str().unwrap());
    let (_, root2) = partitions(&img2, t.path(), "x86-2");
    let keys2 = debugfs_cat(&root2, "/root/.ssh/authorized_keys");
    assert!(
        keys2.contains("habuild-test") && keys2.contains("second@admin"),
        "the manifest's key and --ssh-key's: {keys2}"
    );
    sh(Command::new("e2fsck").arg("-fn").arg(&root2));
    let features2 = ext4_features(&root2);
    for f in ["64bit", "resize_inode", "metadata_csum"] {
        assert!(features2.contains(&f.to_string()), "{f}: {features2:?}");
    }
    let report2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("twodirectors/master-x86-2.json")).unwrap())
            .unwrap();
    assert_eq!(report2["image"]["ext4_writer"], "mke2fs");
    let conf2 = debugfs_cat(&root2, "/etc/keepalived/keepalived.conf");
    let d2 = directives(&conf2);
    for line in [
        "state BACKUP",
        "priority 90",
        "unicast_src_ip 10.10.197.95",
        "unicast_peer {",
        "10.10.197.96",
        "check_unicast_src",
        "virtual_server 10.10.197.101 6443 {",
    ] {
        assert!(
            d2.contains(&line),
            "{line:?} not in keepalived.conf:\n{conf2}"
        );
    }

    // 3. A value habuild's validation lets through but keepalived rejects
    //    (advert_int is at most 255 s): the build stops, no image.
    let bad = t.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&manifest)
            .unwrap()
            .replace("advert_int = 1", "advert_int = 300"),
    )
    .unwrap();
    let bad_out = t.path().join("bad-out");
    let run = habuild(&[
        "image",
        "--node",
        "master-x86-1",
        "--manifest",
        bad.to_str().unwrap(),
        "--out",
        bad_out.to_str().unwrap(),
    ]);
    assert!(
        !run.status.success(),
        "keepalived should reject advert_int 300"
    );
    assert!(
        run.stderr.contains("config test rejects") && run.stderr.contains("'300' outside range"),
        "keepalived's message is not shown:\n{}",
        run.stderr
    );
    let written: Vec<PathBuf> = walk_files(&bad_out);
    assert!(
        written.is_empty(),
        "files written despite the failure: {written:?}"
    );
}

/// The ext4 features of a filesystem image, as dumpe2fs lists them.
fn ext4_features(fs: &Path) -> Vec<String> {
    let out = sh(Command::new("dumpe2fs").arg("-h").arg(fs));
    out.lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .unwrap_or_else(|| panic!("no features in dumpe2fs -h:\n{out}"))
        .split_whitespace()
        .map(String::from)
        .collect()
}

/// sfdisk's view of a director image: GPT, ESP first, x86-64 root second.
/// Returns the two partitions extracted as files.
fn partitions(img: &Path, dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let table: serde_json::Value =
        serde_json::from_str(&sh(Command::new("sfdisk").arg("-J").arg(img))).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], "gpt", "{table}");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{table}");
    assert_eq!(parts[0]["type"], ESP_TYPE, "{table}");
    assert_eq!(parts[0]["name"], "ESP", "{table}");
    assert_eq!(parts[1]["type"], ROOT_X86_64_TYPE, "{table}");
    (
        extract_partition(img, &parts[0], dir, &format!("{tag}-esp.vfat")),
        extract_partition(img, &parts[1], dir, &format!("{tag}-root.ext4")),
    )
}

/// Lines of a config file without comments and blank lines, trimmed.
fn directives(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('!') && !l.starts_with('#'))
        .collect()
}

fn assert_no_leftovers(dir: &Path) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "leftovers in {}: {leftovers:?}",
        dir.display()
    );
}

/// Every regular file under `dir` (none when it does not exist).
fn walk_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}

//! Builds a real Raspberry Pi 4 image (Debian 13 profile, the one these
//! machines can reach) with the **test-double** Kubernetes bundle, and
//! checks it with independent tools: sfdisk, fsck.fat, e2fsck, mtools,
//! debugfs, bmaptool, sha256sum. Needs root and the host tools that
//! `habuild doctor --install` sets up; the first run bootstraps the arm64
//! base (about 10 minutes under emulation), later runs reuse the cache in
//! `target/habuild-test-cache`.

mod common;

use std::process::Command;

use common::*;

#[test]
fn rpi4_debian_image_checked_with_independent_tools() {
    // 1. Cold (or cached) build of the first control plane, with the
    //    cluster's secrets (CAs, service-account key, bootstrap token),
    //    which every control-plane image carries.
    let w = Workspace::new("test-cluster.toml");
    let run = w.build(&["--board", "rpi4"]);
    let (t, out, manifest) = (&w.dir, &w.out, &w.manifest);
    let (secrets, bundle) = (&w.secrets, &w.bundle);
    let dir = out.join("testcluster");
    let img = dir.join("master-arm-1.img");

    // Artifacts, and nothing half-made beside them.
    for f in [
        "master-arm-1.img",
        "master-arm-1.img.bmap",
        "master-arm-1.json",
        "master-arm-1-firmware.tar.gz",
        "SHA256SUMS",
    ] {
        assert!(dir.join(f).is_file(), "missing {f}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "leftovers in the output directory: {leftovers:?}"
    );
    sh(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&dir));

    // Partition table: MBR, FAT32 LBA (0x0c) bootable, then Linux (0x83).
    let table: serde_json::Value =
        serde_json::from_str(&sh(Command::new("sfdisk").arg("-J").arg(&img))).unwrap();
    let pt = &table["partitiontable"];
    assert_eq!(pt["label"], "dos");
    let parts = pt["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0]["type"], "c");
    assert_eq!(parts[0]["bootable"], true);
    assert_eq!(parts[1]["type"], "83");
    let size = std::fs::metadata(&img).unwrap().len();
    assert!(
        size.is_power_of_two(),
        "QEMU's raspi4b needs a power-of-two image, got {size}"
    );

    let boot = extract_partition(&img, &parts[0], t.path(), "boot.vfat");
    let root = extract_partition(&img, &parts[1], t.path(), "root.ext4");
    sh(Command::new("fsck.fat").arg("-n").arg(&boot));
    sh(Command::new("e2fsck").arg("-fn").arg(&root));

    // Boot partition read back with mtools.
    let listing = sh(Command::new("mdir").args(["-b", "-i"]).arg(&boot).arg("::"));
    for f in [
        "start4.elf",
        "fixup4.dat",
        "bcm2711-rpi-4-b.dtb",
        "vmlinuz",
        "initrd.img",
        "cmdline.txt",
        "config.txt",
    ] {
        assert!(
            listing
                .lines()
                .any(|l| l.trim_end_matches('/').ends_with(&format!("/{f}")) || l.ends_with(f)),
            "{f} not on the boot partition:\n{listing}"
        );
    }
    let config_txt = mtype(&boot, "config.txt");
    assert!(config_txt.contains("arm_64bit=1"), "{config_txt}");
    let cmdline = mtype(&boot, "cmdline.txt");
    assert!(cmdline.contains("root=LABEL=root"), "{cmdline}");

    // Root filesystem read back with debugfs.
    assert_eq!(debugfs_cat(&root, "/etc/hostname").trim(), "master-arm-1");
    let kubelet = debugfs_cat(&root, "/etc/habuild/kubeadm/kubelet.yaml");
    assert!(kubelet.contains("cgroupDriver: systemd"), "{kubelet}");
    let crio = debugfs_cat(&root, "/etc/crio/crio.conf.d/10-habuild.conf");
    assert!(crio.contains("cgroup_manager = \"systemd\""), "{crio}");
    let unit = debugfs_cat(&root, "/usr/lib/systemd/system/realServer.service");
    assert!(
        unit.contains("VIP_up.sh") && unit.contains("VIP_down.sh"),
        "{unit}"
    );
    let up = debugfs_cat(&root, "/usr/local/share/loadbalance_dr/VIP_up.sh");
    assert!(up.contains("10.10.197.101"), "{up}");
    let network = debugfs_ls(&root, "/etc/systemd/network");
    let network_file = network
        .iter()
        .find(|n| n.ends_with(".network"))
        .unwrap_or_else(|| panic!("no .network file: {network:?}"));
    let net = debugfs_cat(&root, &format!("/etc/systemd/network/{network_file}"));
    assert!(net.contains("10.10.197.98/24"), "{net}");
    let wants = debugfs_ls(&root, "/etc/systemd/system/multi-user.target.wants");
    assert!(
        wants.iter().any(|w| w == "kubelet.service"),
        "kubelet not enabled: {wants:?}"
    );
    assert!(
        wants.iter().any(|w| w == "crio.service"),
        "crio not enabled: {wants:?}"
    );
    assert!(
        !wants.iter().any(|w| w == "realServer.service"),
        "realServer must not be enabled at boot"
    );
    let keys = debugfs_stat(&root, "/root/.ssh/authorized_keys");
    assert!(keys.contains("Mode:  0600"), "{keys}");
    assert!(debugfs_cat(&root, "/root/.ssh/authorized_keys").contains("habuild-test"));
    // The test-double kubeadm came in through the offline-bundle path.
    assert!(debugfs_cat(&root, "/usr/bin/kubeadm").contains("TEST DOUBLE"));
    assert_eq!(debugfs_cat(&root, "/etc/machine-id"), "");
    // The cluster's PKI with kubeadm's names; keys (and the token) root-only.
    let secrets_text = std::fs::read_to_string(secrets).unwrap();
    for (file, mode) in [
        ("ca.crt", "0644"),
        ("ca.key", "0600"),
        ("sa.key", "0600"),
        ("sa.pub", "0644"),
        ("front-proxy-ca.crt", "0644"),
        ("front-proxy-ca.key", "0600"),
        ("etcd/ca.crt", "0644"),
        ("etcd/ca.key", "0600"),
    ] {
        let path = format!("/etc/kubernetes/pki/{file}");
        let stat = debugfs_stat(&root, &path);
        assert!(stat.contains(&format!("Mode:  {mode}")), "{path}: {stat}");
        let body = debugfs_cat(&root, &path);
        assert!(
            secrets_text.contains(body.trim_end()),
            "{path} is not the secrets file's"
        );
    }
    let kubeadm = debugfs_cat(&root, "/etc/habuild/kubeadm/kubeadm.yaml");
    assert!(kubeadm.contains("kind: InitConfiguration"), "{kubeadm}");
    assert!(debugfs_stat(&root, "/etc/habuild/kubeadm/kubeadm.yaml").contains("Mode:  0600"));
    assert!(
        wants.iter().any(|w| w == "habuild-firstboot.service"),
        "{wants:?}"
    );
    assert!(
        run.stderr.contains("secrets in this image"),
        "{}",
        run.stderr
    );

    // Content manifest.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("master-arm-1.json")).unwrap()).unwrap();
    assert_eq!(report["board"], "rpi4");
    assert_eq!(report["distro"], "debian-13");
    assert_eq!(report["kubernetes"]["source"], "bundle");
    // Where the secrets are and public fingerprints; never a key or the token.
    assert!(report["secrets"]["secret_files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f == "/etc/kubernetes/pki/ca.key"));
    let json_text = std::fs::read_to_string(dir.join("master-arm-1.json")).unwrap();
    let token = secrets_text
        .lines()
        .find_map(|l| l.strip_prefix("bootstrap_token = \""))
        .unwrap()
        .trim_end_matches('"');
    assert!(!json_text.contains(token) && !json_text.contains("PRIVATE KEY"));
    let pkgs = report["packages"].as_array().unwrap();
    assert!(
        pkgs.iter()
            .any(|p| p["name"] == "kubeadm" && p["architecture"] == "arm64"),
        "kubeadm not in the package list"
    );
    assert!(pkgs.iter().any(|p| p["name"] == "raspi-firmware"));
    let files = report["files"]["root"].as_array().unwrap();
    assert!(files
        .iter()
        .any(|f| f["path"] == "/etc/hostname" && f["sha256"].as_str().unwrap().len() == 64));

    // bmap: bmaptool writes the mapped blocks and verifies their checksums.
    let copy = t.path().join("copy.img");
    sh(Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(dir.join("master-arm-1.img.bmap"))
        .arg(&img)
        .arg(&copy));
    assert_eq!(sha256(&copy), sha256(&img));
    std::fs::remove_file(&copy).unwrap();

    // Firmware bundle: the boot files with a checksum list inside.
    let fw = t.path().join("fw");
    std::fs::create_dir(&fw).unwrap();
    sh(Command::new("tar")
        .arg("-xzf")
        .arg(dir.join("master-arm-1-firmware.tar.gz"))
        .arg("-C")
        .arg(&fw));
    assert!(fw.join("start4.elf").is_file());
    sh(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&fw));

    // 2. Warm rebuild of another node with a changed manifest value: the
    //    base comes from the cache and the new value is in the image.
    let changed = t.path().join("changed.toml");
    std::fs::write(
        &changed,
        std::fs::read_to_string(manifest)
            .unwrap()
            .replace("dns = [\"10.10.197.1\"]", "dns = [\"10.10.197.53\"]"),
    )
    .unwrap();
    let run = habuild(&[
        "image",
        "--node",
        "master-arm-2",
        "--manifest",
        changed.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
        "--k8s-bundle",
        bundle.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "warm rebuild failed:\n{}", run.stderr);
    assert!(
        run.stderr.contains("base from cache"),
        "the base was rebuilt:\n{}",
        run.stderr
    );
    assert!(dir.join("master-arm-1.img").is_file() && dir.join("master-arm-2.img").is_file());
    sh(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&dir));
    let img2 = dir.join("master-arm-2.img");
    let table2: serde_json::Value =
        serde_json::from_str(&sh(Command::new("sfdisk").arg("-J").arg(&img2))).unwrap();
    let root2 = extract_partition(
        &img2,
        &table2["partitiontable"]["partitions"][1],
        t.path(),
        "root2.ext4",
    );
    let net2 = debugfs_cat(&root2, &format!("/etc/systemd/network/{network_file}"));
    assert!(
        net2.contains("10.10.197.97/24") && net2.contains("10.10.197.53"),
        "{net2}"
    );
    assert_eq!(debugfs_cat(&root2, "/etc/hostname").trim(), "master-arm-2");

    // 3. A build that fails after staging (an image too small for its root
    //    filesystem) publishes nothing and leaves nothing half-made.
    let run = habuild(&[
        "image",
        "--node",
        "master-arm-3",
        "--manifest",
        manifest.to_str().unwrap(),
        "--secrets",
        secrets.to_str().unwrap(),
        "--k8s-bundle",
        bundle.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--image-size",
        "300M",
    ]);
    assert!(
        !run.status.success(),
        "a 300 MiB image cannot hold the root filesystem"
    );
    assert!(run.stderr.contains("master-arm-3"), "{}", run.stderr);
    assert!(!dir.join("master-arm-3.img").exists() && !dir.join("master-arm-3.json").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "leftovers after a failed build: {leftovers:?}"
    );
    sh(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&dir));

    // 4. A bad manifest: exit status 2, the file and key named, no build.
    let bad = t.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(manifest)
            .unwrap()
            .replace("address = \"10.10.197.99\"", "address = \"10.10.197.98\""),
    )
    .unwrap();
    let run = habuild(&[
        "image",
        "--node",
        "master-arm-3",
        "--manifest",
        bad.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--without-kubernetes",
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("bad.toml")
            && run.stderr.contains("nodes[3].address")
            && run.stderr.contains("duplicate address"),
        "{}",
        run.stderr
    );
}

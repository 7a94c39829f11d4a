//! Tests for the template context and overlay applier, including golden
//! files for one node of the seed's cluster.
//!
//! Golden files live under `tests/golden/<node>/` at the repository root:
//! `rootfs/` and `boot/` hold every regular file the overlays produce, and
//! `MANIFEST` lists every entry of both trees with its type, mode and (for
//! files) SHA-256 or (for symlinks) target. After an intended change to an
//! overlay or template, regenerate them and review the diff:
//!
//!     HABUILD_BLESS=1 cargo test -p habuild --lib rootfs::overlay
//!
//! With `HABUILD_BLESS=1` the golden test rewrites the files instead of
//! comparing (and removes golden files the overlays no longer produce).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use pretty_assertions::assert_eq;
use walkdir::WalkDir;

use super::*;
use crate::config::Cluster;
use crate::plan::NodePlan;
use crate::rootfs::context::{render_context, render_template, KubeadmCtx, RenderContext};
use crate::test_support::{self, repo_root, SEED};
use crate::util::CommandExt;

const NODE: &str = "master-arm-1";

/// The seed's root login key in the golden files (its private half was
/// never made).
const TEST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHabuildTestKeyNotARealKeyxxxxxxxxxxxxxxxxx ops@habuild-test";

/// The seed document's cluster (`manifests/seed.toml`, with a test SSH
/// key) as master-arm-1 is planned, after `edit`.
fn seed_plan_with(edit: impl FnOnce(&mut Cluster)) -> NodePlan {
    test_support::plan(SEED, NODE, |c| {
        c.ssh.authorized_keys = vec![TEST_KEY.into()];
        edit(c)
    })
}

fn seed_plan() -> NodePlan {
    seed_plan_with(|_| {})
}

/// The context the pipeline makes for `plan`, with a fixed test token and
/// the hash of no real CA (the real ones are random).
fn ctx_of(plan: &NodePlan) -> RenderContext<'_> {
    let kubeadm = KubeadmCtx::new(
        "abcdef.0123456789abcdef",
        &format!("sha256:{}", "5e".repeat(32)),
    );
    render_context(plan, Some(kubeadm))
}

/// master-arm-1's root and boot trees, built from the repository overlays.
struct Built {
    _tmp: tempfile::TempDir,
    rootfs: PathBuf,
    boot: PathBuf,
    root_files: Vec<RenderedFile>,
    boot_files: Vec<RenderedFile>,
}

fn build(ctx: &RenderContext) -> Built {
    let repo = repo_root();
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    let boot = tmp.path().join("boot");
    fs::create_dir(&rootfs).unwrap();
    fs::create_dir(&boot).unwrap();
    let common = repo.join("overlays/common");
    let role = repo.join("overlays/control-plane");
    let root_files = apply_overlays(&[&common, &role], &rootfs, ctx).unwrap();
    let boot_files = apply_overlay(&repo.join("boards/rpi4/boot"), &boot, ctx).unwrap();
    Built {
        _tmp: tmp,
        rootfs,
        boot,
        root_files,
        boot_files,
    }
}

fn read(tree: &Path, path: &str) -> String {
    let p = tree.join(path.trim_start_matches('/'));
    fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn mode_of(tree: &Path, path: &str) -> u32 {
    fs::symlink_metadata(tree.join(path.trim_start_matches('/')))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

/// One line per entry of a tree: what the golden MANIFEST records.
fn manifest_lines(tree: &Path, label: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for e in WalkDir::new(tree).min_depth(1).sort_by_file_name() {
        let e = e.unwrap();
        let rel = e
            .path()
            .strip_prefix(tree)
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        let meta = e.path().symlink_metadata().unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let ft = meta.file_type();
        lines.push(if ft.is_symlink() {
            format!(
                "{label}/{rel} link -> {}",
                fs::read_link(e.path()).unwrap().display()
            )
        } else if ft.is_dir() {
            format!("{label}/{rel} dir {mode:04o}")
        } else {
            let sha = hex::encode(Sha256::digest(fs::read(e.path()).unwrap()));
            format!("{label}/{rel} file {mode:04o} {sha}")
        });
    }
    lines
}

/// Regular files of a tree, relative path → contents.
fn regular_files(tree: &Path) -> BTreeMap<String, Vec<u8>> {
    if !tree.exists() {
        return BTreeMap::new();
    }
    WalkDir::new(tree)
        .min_depth(1)
        .into_iter()
        .map(Result::unwrap)
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            let rel = e
                .path()
                .strip_prefix(tree)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            (rel, fs::read(e.path()).unwrap())
        })
        .collect()
}

#[test]
fn golden_master_arm_1() {
    let built = build(&ctx_of(&seed_plan()));
    let golden = repo_root().join("tests/golden").join(NODE);
    let mut produced: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (label, tree) in [("rootfs", &built.rootfs), ("boot", &built.boot)] {
        for (rel, bytes) in regular_files(tree) {
            produced.insert(format!("{label}/{rel}"), bytes);
        }
    }
    let mut manifest = manifest_lines(&built.rootfs, "rootfs");
    manifest.extend(manifest_lines(&built.boot, "boot"));
    let manifest = manifest.join("\n") + "\n";
    produced.insert("MANIFEST".into(), manifest.into_bytes());

    if std::env::var("HABUILD_BLESS").as_deref() == Ok("1") {
        if golden.exists() {
            fs::remove_dir_all(&golden).unwrap();
        }
        for (rel, bytes) in &produced {
            let p = golden.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, bytes).unwrap();
        }
        eprintln!(
            "blessed {} golden files under {}",
            produced.len(),
            golden.display()
        );
        return;
    }

    let expected = regular_files(&golden);
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        produced.keys().collect::<Vec<_>>(),
        "golden file set differs (HABUILD_BLESS=1 regenerates {})",
        golden.display()
    );
    for (rel, bytes) in &produced {
        assert_eq!(
            String::from_utf8_lossy(&expected[rel]),
            String::from_utf8_lossy(bytes),
            "{rel} differs from its golden file (HABUILD_BLESS=1 regenerates)"
        );
    }
}

#[test]
fn returned_files_match_the_tree() {
    let built = build(&ctx_of(&seed_plan()));
    for (tree, files) in [
        (&built.rootfs, &built.root_files),
        (&built.boot, &built.boot_files),
    ] {
        let on_disk = regular_files(tree);
        let listed: Vec<&str> = files
            .iter()
            .map(|f| f.path.trim_start_matches('/'))
            .collect();
        assert_eq!(
            on_disk.keys().map(String::as_str).collect::<Vec<_>>(),
            listed
        );
        for f in files {
            let bytes = &on_disk[f.path.trim_start_matches('/')];
            assert_eq!(f.sha256, hex::encode(Sha256::digest(bytes)), "{}", f.path);
            assert_eq!(f.mode, mode_of(tree, &f.path), "{}", f.path);
        }
    }
    let boot: Vec<&str> = built.boot_files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(boot, ["/cmdline.txt", "/config.txt"]);
}

#[test]
fn control_plane_content() {
    let built = build(&ctx_of(&seed_plan()));
    let r = &built.rootfs;

    let crio = read(r, "/etc/crio/crio.conf.d/10-habuild.conf");
    assert!(crio.contains("[crio.runtime]\n"), "{crio}");
    assert!(crio.contains("\ncgroup_manager = \"systemd\"\n"), "{crio}");
    assert!(crio.contains("\nconmon_cgroup = \"pod\"\n"), "{crio}");
    // No image_repository: kubeadm's pause from registry.k8s.io, not
    // CRI-O's built-in default (another version for some releases).
    assert!(
        crio.contains("\npause_image = \"registry.k8s.io/pause:3.10.2\"\n"),
        "{crio}"
    );

    let kubelet = read(r, "/etc/habuild/kubeadm/kubelet.yaml");
    assert!(
        kubelet.contains("\napiVersion: kubelet.config.k8s.io/v1beta1\n"),
        "{kubelet}"
    );
    assert!(
        kubelet.contains("\nkind: KubeletConfiguration\n"),
        "{kubelet}"
    );
    assert!(kubelet.contains("\ncgroupDriver: systemd\n"), "{kubelet}");

    let up = read(r, "/usr/local/share/loadbalance_dr/VIP_up.sh");
    assert!(up.contains("\nVIP=10.10.197.101\n"), "{up}");
    assert!(
        up.contains("ip addr add \"$VIP/32\" dev lo label lo:0"),
        "{up}"
    );
    for key in [
        "lo.arp_ignore=1",
        "lo.arp_announce=2",
        "all.arp_ignore=1",
        "all.arp_announce=2",
    ] {
        assert!(up.contains(&format!("net.ipv4.conf.{key}")), "{key}: {up}");
    }
    let down = read(r, "/usr/local/share/loadbalance_dr/VIP_down.sh");
    assert!(down.contains("\nVIP=10.10.197.101\n"), "{down}");
    assert!(down.contains("ip addr del \"$VIP/32\" dev lo"), "{down}");
    for s in ["VIP_up.sh", "VIP_down.sh"] {
        assert_eq!(
            mode_of(r, &format!("/usr/local/share/loadbalance_dr/{s}")),
            0o755,
            "{s}"
        );
    }

    let unit = read(r, "/usr/lib/systemd/system/realServer.service");
    for line in [
        "Requires=network.target",
        "After=network.target",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/usr/local/share/loadbalance_dr/VIP_up.sh",
        "ExecStop=/usr/local/share/loadbalance_dr/VIP_down.sh",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}: {unit}");
    }

    // realServer is started by the first-boot logic, never by a wants link;
    // crio and kubelet are enabled.
    let mut wanted = Vec::new();
    for e in WalkDir::new(r.join("etc/systemd/system")).min_depth(1) {
        let e = e.unwrap();
        if e.file_type().is_symlink() {
            wanted.push(
                e.path()
                    .strip_prefix(r)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    assert!(
        !wanted.iter().any(|w| w.contains("realServer")),
        "{wanted:?}"
    );
    for unit in [
        "crio.service",
        "kubelet.service",
        "habuild-firstboot.service",
    ] {
        let link = r
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("/usr/lib/systemd/system").join(unit)
        );
    }

    // The kubelet waits for the configuration kubeadm writes.
    assert!(read(
        r,
        "/etc/systemd/system/kubelet.service.d/20-habuild-after-kubeadm.conf"
    )
    .contains("\nConditionPathExists=/var/lib/kubelet/config.yaml\n"));

    // The bootstrap token is in kubeadm's configuration: root only.
    assert_eq!(mode_of(r, "/etc/habuild/kubeadm/kubeadm.yaml"), 0o600);
    assert!(read(r, "/etc/habuild/kubeadm/kubeadm.yaml").contains("abcdef.0123456789abcdef"));
    assert_eq!(mode_of(r, "/usr/local/lib/habuild/firstboot.sh"), 0o755);
    assert_eq!(mode_of(r, "/usr/local/lib/habuild/vip-probe"), 0o755);

    assert_eq!(
        read(r, "/etc/modules-load.d/k8s.conf")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        ["overlay", "br_netfilter"]
    );
    let sysctl = read(r, "/etc/sysctl.d/90-kubernetes.conf");
    for key in [
        "net.ipv4.ip_forward",
        "net.bridge.bridge-nf-call-iptables",
        "net.bridge.bridge-nf-call-ip6tables",
    ] {
        assert!(
            sysctl.contains(&format!("\n{key} = 1\n")),
            "{key}: {sysctl}"
        );
    }
}

#[test]
fn common_content() {
    let built = build(&ctx_of(&seed_plan()));
    let r = &built.rootfs;

    assert_eq!(read(r, "/etc/hostname"), "master-arm-1\n");
    let hosts = read(r, "/etc/hosts");
    for line in [
        "10.10.197.98\tmaster-arm-1",
        "10.10.197.97\tmaster-arm-2",
        "10.10.197.99\tmaster-arm-3",
        "10.10.197.96\tmaster-x86-1",
        "10.10.197.101\tseed-api",
    ] {
        assert!(hosts.lines().any(|l| l == line), "{line}: {hosts}");
    }
    assert!(!hosts.contains("127.0.1.1"), "{hosts}");

    let network = read(r, "/etc/systemd/network/10-habuild-wired.network");
    for line in [
        "Name=en* eth*",
        "Address=10.10.197.98/24",
        "Gateway=10.10.197.1",
        "DNS=10.10.197.1",
    ] {
        assert!(network.lines().any(|l| l == line), "{line}: {network}");
    }
    let resolv = read(r, "/etc/resolv.conf");
    assert_eq!(
        resolv
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        ["nameserver 10.10.197.1"]
    );

    let fstab = read(r, "/etc/fstab");
    let entries: Vec<Vec<&str>> = fstab
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(entries[0][..3], ["LABEL=root", "/", "ext4"]);
    assert_eq!(entries[1][..3], ["LABEL=BOOT", "/boot/firmware", "vfat"]);

    let sshd = read(r, "/etc/ssh/sshd_config.d/10-habuild.conf");
    for line in [
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
    ] {
        assert!(sshd.lines().any(|l| l == line), "{line}: {sshd}");
    }
    assert_eq!(mode_of(r, "/etc/ssh/sshd_config.d/10-habuild.conf"), 0o644);

    let keys = read(r, "/root/.ssh/authorized_keys");
    assert!(
        keys.lines().any(|l| l.ends_with("ops@habuild-test")),
        "{keys}"
    );
    assert_eq!(mode_of(r, "/root/.ssh/authorized_keys"), 0o600);
    assert_eq!(mode_of(r, "/root/.ssh"), 0o700);
    assert_eq!(mode_of(r, "/root"), 0o700);

    let sys = r.join("etc/systemd/system");
    assert_eq!(
        fs::read_link(sys.join("swap.target")).unwrap(),
        Path::new("/dev/null")
    );
    for (link, target) in [
        (
            "multi-user.target.wants/systemd-networkd.service",
            "systemd-networkd.service",
        ),
        (
            "sockets.target.wants/systemd-networkd.socket",
            "systemd-networkd.socket",
        ),
        (
            "network-online.target.wants/systemd-networkd-wait-online.service",
            "systemd-networkd-wait-online.service",
        ),
        (
            "dbus-org.freedesktop.network1.service",
            "systemd-networkd.service",
        ),
        (
            "multi-user.target.wants/habuild-growroot.service",
            "habuild-growroot.service",
        ),
    ] {
        assert_eq!(
            fs::read_link(sys.join(link)).unwrap(),
            Path::new("/usr/lib/systemd/system").join(target)
        );
    }
    assert_eq!(mode_of(r, "/usr/local/lib/habuild/growroot.sh"), 0o755);
    let unit = read(r, "/usr/lib/systemd/system/habuild-growroot.service");
    assert!(
        unit.contains("ConditionPathExists=!/var/lib/habuild/growroot.done"),
        "{unit}"
    );
    assert!(
        read(r, "/usr/local/lib/habuild/growroot.sh").contains("MARKER=$MARKER_DIR/growroot.done")
    );
}

#[test]
fn boot_files() {
    let built = build(&ctx_of(&seed_plan()));
    let cmdline = read(&built.boot, "/cmdline.txt");
    assert_eq!(
        cmdline,
        "console=tty1 console=ttyS1,115200 root=LABEL=root rootfstype=ext4 rootwait fsck.repair=yes \
         cgroup_enable=memory cgroup_memory=1\n"
    );
    let config = read(&built.boot, "/config.txt");
    for line in [
        "arm_64bit=1",
        "enable_uart=1",
        "kernel=vmlinuz",
        "initramfs initrd.img followkernel",
    ] {
        assert!(config.lines().any(|l| l == line), "{line}: {config}");
    }
    assert!(!config.contains("device_tree="), "{config}");
}

#[test]
fn pause_image_follows_image_repository() {
    let registry = || Some("registry.example:5000/google_containers".to_string());
    let plan = seed_plan_with(|c| c.image_repository = registry());
    let built = build(&ctx_of(&plan));
    let crio = read(&built.rootfs, "/etc/crio/crio.conf.d/10-habuild.conf");
    assert!(crio.contains("\n[crio.image]\n"), "{crio}");
    assert!(
        crio.contains("\npause_image = \"registry.example:5000/google_containers/pause:3.10.2\"\n"),
        "{crio}"
    );

    let plan = seed_plan_with(|c| {
        c.image_repository = registry();
        c.kubernetes_version = "1.20.1".into();
    });
    let tmp = tempfile::tempdir().unwrap();
    let err = apply_overlay(
        &repo_root().join("overlays/control-plane"),
        tmp.path(),
        &ctx_of(&plan),
    )
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("10-habuild.conf.hbs") && msg.contains("1.20.1"),
        "{msg}"
    );
}

#[test]
fn add_ons_follow_the_manifest() {
    let addons_of = |tree: &Path| {
        read(tree, "/etc/habuild/firstboot.env")
            .lines()
            .find_map(|l| l.strip_prefix("HABUILD_ADDONS=").map(str::to_owned))
            .unwrap()
    };
    let built = build(&ctx_of(&seed_plan()));
    assert_eq!(addons_of(&built.rootfs), "\"coredns kube-proxy\"");
    let kubeadm = read(&built.rootfs, "/etc/habuild/kubeadm/kubeadm.yaml");
    assert!(!kubeadm.contains("disabled: true"), "{kubeadm}");

    let plan = seed_plan_with(|c| c.tuning.addons.coredns = false);
    let built = build(&ctx_of(&plan));
    assert_eq!(addons_of(&built.rootfs), "\"kube-proxy\"");
    let kubeadm = read(&built.rootfs, "/etc/habuild/kubeadm/kubeadm.yaml");
    assert!(kubeadm.contains("\ndns:\n  disabled: true\n"), "{kubeadm}");
    assert!(!kubeadm.contains("\nproxy:\n"), "{kubeadm}");

    let plan = seed_plan_with(|c| {
        c.tuning.addons.coredns = false;
        c.tuning.addons.kube_proxy = false;
    });
    let built = build(&ctx_of(&plan));
    assert_eq!(addons_of(&built.rootfs), "\"\"");
    let kubeadm = read(&built.rootfs, "/etc/habuild/kubeadm/kubeadm.yaml");
    assert!(
        kubeadm.contains("\nproxy:\n  disabled: true\n"),
        "{kubeadm}"
    );
}

/// A small overlay built on the fly.
fn overlay(files: &[(&str, &str)]) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (path, body) in files {
        let p = tmp.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, body).unwrap();
    }
    tmp
}

#[test]
fn unknown_variable_names_the_template() {
    let src = overlay(&[
        ("etc/ok.conf", "fine\n"),
        ("etc/broken.conf.hbs", "x={{node.no_such_field}}\n"),
    ]);
    let dest = tempfile::tempdir().unwrap();
    let msg = format!(
        "{:#}",
        apply_overlay(src.path(), dest.path(), &ctx_of(&seed_plan())).unwrap_err()
    );
    assert!(
        msg.contains(&src.path().join("etc/broken.conf.hbs").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("no_such_field"), "{msg}");

    let msg = format!(
        "{:#}",
        render_template("hosts.hbs", "{{nope}}", &ctx_of(&seed_plan())).unwrap_err()
    );
    assert!(msg.contains("hosts.hbs") && msg.contains("nope"), "{msg}");
}

#[test]
fn templates_are_not_html_escaped() {
    let plan = seed_plan_with(|c| c.name = "a&b='c'<d>".into());
    let ctx = ctx_of(&plan);
    assert_eq!(
        render_template("t", "{{cluster.name}}", &ctx).unwrap(),
        "a&b='c'<d>"
    );
}

#[test]
fn symlinks_are_recreated_not_followed() {
    let src = overlay(&[("etc/systemd/system/x.service", "[Unit]\n")]);
    let wants = src
        .path()
        .join("etc/systemd/system/multi-user.target.wants");
    fs::create_dir_all(&wants).unwrap();
    symlink("/usr/lib/systemd/system/x.service", wants.join("x.service")).unwrap();
    symlink(
        "/dev/null",
        src.path().join("etc/systemd/system/swap.target"),
    )
    .unwrap();
    symlink(
        "x.service",
        src.path().join("etc/systemd/system/alias.service"),
    )
    .unwrap();

    let dest = tempfile::tempdir().unwrap();
    // What the base tree may already hold at those paths: a file, and a
    // symlink pointing at the build host. Both are replaced, neither followed.
    let sys = dest.path().join("etc/systemd/system");
    fs::create_dir_all(&sys).unwrap();
    fs::write(sys.join("swap.target"), "old").unwrap();
    let host_file = tempfile::NamedTempFile::new().unwrap();
    symlink(host_file.path(), sys.join("alias.service")).unwrap();

    let files = apply_overlay(src.path(), dest.path(), &ctx_of(&seed_plan())).unwrap();
    assert_eq!(
        files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["/etc/systemd/system/x.service"]
    );
    assert_eq!(
        fs::read_link(sys.join("multi-user.target.wants/x.service")).unwrap(),
        Path::new("/usr/lib/systemd/system/x.service")
    );
    assert_eq!(
        fs::read_link(sys.join("swap.target")).unwrap(),
        Path::new("/dev/null")
    );
    assert_eq!(
        fs::read_link(sys.join("alias.service")).unwrap(),
        Path::new("x.service")
    );
    assert_eq!(
        fs::read(host_file.path()).unwrap(),
        b"",
        "host file untouched"
    );
}

#[test]
fn never_writes_through_a_symlinked_directory() {
    let src = overlay(&[
        ("etc/resolv.conf", "nameserver 192.0.2.1\n"),
        ("run/x/y", "y\n"),
    ]);
    let dest = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::create_dir(dest.path().join("etc")).unwrap();
    // Debian's base has /etc/resolv.conf -> ../run/systemd/resolve/stub-resolv.conf
    // when systemd-resolved is installed: replaced by the overlay's file.
    symlink(
        "../run/systemd/resolve/stub-resolv.conf",
        dest.path().join("etc/resolv.conf"),
    )
    .unwrap();
    // An absolute directory link would lead out of the tree: refused.
    symlink(outside.path(), dest.path().join("run")).unwrap();
    let msg = format!(
        "{:#}",
        apply_overlay(src.path(), dest.path(), &ctx_of(&seed_plan())).unwrap_err()
    );
    assert!(msg.contains("refusing to write through symlink"), "{msg}");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    let resolv = dest.path().join("etc/resolv.conf");
    assert!(resolv.symlink_metadata().unwrap().is_file());
}

#[test]
fn later_overlays_win_and_modes_follow_rules() {
    let first = overlay(&[
        ("etc/a.conf", "first\n"),
        ("etc/b.conf", "b\n"),
        ("usr/bin/tool", "#!/bin/sh\n"),
    ]);
    let second = overlay(&[
        ("etc/a.conf.hbs", "{{node.name}}\n"),
        ("etc/ssh/ssh_host_ed25519_key", "PRIVATE\n"),
    ]);
    fs::set_permissions(
        first.path().join("usr/bin/tool"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(
        second.path().join("etc/ssh/ssh_host_ed25519_key"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let dest = tempfile::tempdir().unwrap();
    let files = apply_overlays(
        &[first.path(), second.path()],
        dest.path(),
        &ctx_of(&seed_plan()),
    )
    .unwrap();
    let listed: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
    assert_eq!(
        listed,
        [
            ("/etc/a.conf", 0o644),
            ("/etc/b.conf", 0o644),
            ("/etc/ssh/ssh_host_ed25519_key", 0o600),
            ("/usr/bin/tool", 0o755)
        ]
    );
    assert_eq!(read(dest.path(), "/etc/a.conf"), "master-arm-1\n");
    assert_eq!(mode_of(dest.path(), "/etc/ssh/ssh_host_ed25519_key"), 0o600);
    assert_eq!(mode_of(dest.path(), "/usr/bin/tool"), 0o755);
}

#[test]
fn file_mode_rules() {
    assert_eq!(file_mode("/root/.ssh/authorized_keys", false), 0o600);
    assert_eq!(file_mode("/etc/ssh/ssh_host_ed25519_key", true), 0o600);
    assert_eq!(file_mode("/etc/ssh/ssh_host_ed25519_key.pub", false), 0o644);
    assert_eq!(
        file_mode("/etc/ssh/sshd_config.d/10-habuild.conf", true),
        0o644
    );
    assert_eq!(file_mode("/etc/kubernetes/pki/sa.key", false), 0o600);
    assert_eq!(
        file_mode("/etc/habuild/bootstrap-token-secret", false),
        0o600
    );
    assert_eq!(
        file_mode("/etc/apt/keyrings/kubernetes-apt-keyring.gpg", false),
        0o644
    );
    assert_eq!(file_mode("/usr/local/lib/habuild/growroot.sh", true), 0o755);
    assert_eq!(file_mode("/etc/hostname", false), 0o644);
}

#[test]
fn a_file_and_its_template_conflict() {
    let src = overlay(&[("etc/x.conf", "a\n"), ("etc/x.conf.hbs", "b\n")]);
    let dest = tempfile::tempdir().unwrap();
    let msg = format!(
        "{:#}",
        apply_overlay(src.path(), dest.path(), &ctx_of(&seed_plan())).unwrap_err()
    );
    assert!(msg.contains("both produce /etc/x.conf"), "{msg}");
}

#[test]
fn applying_twice_gives_the_same_tree() {
    let plan = seed_plan();
    let ctx = ctx_of(&plan);
    let a = build(&ctx);
    let repo = repo_root();
    // Re-applying onto an already populated tree replaces, never appends.
    let again = apply_overlays(
        &[
            &repo.join("overlays/common"),
            &repo.join("overlays/control-plane"),
        ],
        &a.rootfs,
        &ctx,
    )
    .unwrap();
    assert_eq!(again, a.root_files);
    let b = build(&ctx);
    assert_eq!(
        manifest_lines(&a.rootfs, "r"),
        manifest_lines(&b.rootfs, "r")
    );
}

/// True when `tool --version` runs; the checks below need the real tools
/// and are skipped (loudly) on a host without them.
fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output_checked().is_ok();
    if !ok {
        eprintln!("SKIPPED: `{tool}` is not installed on this host");
    }
    ok
}

#[test]
fn shell_scripts_pass_shellcheck() {
    if !have("shellcheck") {
        return;
    }
    let built = build(&ctx_of(&seed_plan()));
    // Every rendered file with a shell interpreter line, wherever it lives.
    let scripts: Vec<PathBuf> = built
        .root_files
        .iter()
        .map(|f| built.rootfs.join(f.path.trim_start_matches('/')))
        .filter(|p| {
            let head = fs::read(p).unwrap();
            [
                &b"#!/bin/sh"[..],
                b"#!/bin/bash",
                b"#!/usr/bin/env bash",
                b"#!/usr/bin/env sh",
            ]
            .iter()
            .any(|s| head.starts_with(s))
        })
        .collect();
    assert_eq!(
        scripts.len(),
        5,
        "growroot.sh, VIP_up.sh, VIP_down.sh, firstboot.sh, vip-probe: {scripts:?}"
    );
    Command::new("shellcheck")
        .arg("--norc")
        .args(&scripts)
        .run_checked()
        .unwrap();
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze") {
        return;
    }
    let built = build(&ctx_of(&seed_plan()));
    let units = built.rootfs.join("usr/lib/systemd/system");
    // `verify --root=` would look for the units' dependencies
    // (network.target, sysinit.target, ...) in the rendered tree, which has
    // none, so the units are verified against the host's systemd instead.
    // `verify` also checks that Exec*= binaries exist and are executable;
    // those the overlays ship (VIP_up.sh, growroot.sh) exist only in the
    // rendered tree, so such paths are mapped into it. Others (ssh-keygen)
    // are looked up on the host.
    let staging = tempfile::tempdir().unwrap();
    let mut staged = Vec::new();
    for e in fs::read_dir(&units).unwrap() {
        let path = e.unwrap().path();
        if path.extension() != Some(std::ffi::OsStr::new("service")) {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let mapped: String = text
            .lines()
            .map(|l| map_exec_line(l, &built.rootfs) + "\n")
            .collect();
        let dest = staging.path().join(path.file_name().unwrap());
        fs::write(&dest, mapped).unwrap();
        staged.push(dest);
    }
    staged.sort();
    assert!(
        staged.len() >= 2,
        "growroot and realServer at least: {staged:?}"
    );
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&staged)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Only complaints that name one of our units count: outside a booted
    // systemd (containers, CI) verify may add noise about the manager.
    let names: Vec<String> = staged
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| names.iter().any(|n| l.contains(n.as_str())))
        .collect();
    assert!(
        ours.is_empty() && out.status.success(),
        "systemd-analyze verify {names:?}:\n{stderr}"
    );
}

/// `ExecStart=/usr/local/x.sh arg` → `ExecStart=<tree>/usr/local/x.sh arg`
/// when the rendered tree has that program; other lines unchanged.
fn map_exec_line(line: &str, tree: &Path) -> String {
    let Some((key, value)) = line.split_once('=') else {
        return line.to_owned();
    };
    if !key.starts_with("Exec") {
        return line.to_owned();
    }
    // Exec prefixes: '-' ignore failure, '@' argv0, ':' no env expansion,
    // '+' / '!' privileges.
    let program_at = value
        .find(|c: char| !"-@:+!".contains(c))
        .unwrap_or(value.len());
    let (prefix, rest) = value.split_at(program_at);
    let program = rest.split_whitespace().next().unwrap_or("");
    if program.starts_with('/') && tree.join(program.trim_start_matches('/')).is_file() {
        format!("{key}={prefix}{}{rest}", tree.display())
    } else {
        line.to_owned()
    }
}

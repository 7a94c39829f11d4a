//! Tier 1: every image boots as itself under QEMU and shows, from inside,
//! what habuild baked into it. One run per image: a full serial log and a
//! short report are kept beside the image, under `test/`.

mod dtb;
pub mod guest;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::console::{run_stages, Stage};
use super::machine::{guest_mac, qemu_cmdline};
use super::prepare::{add_check_unit, extract, fat_files, grow_file, sparse_copy};
use crate::artifact::report::NodeJson;
use crate::config::board::QemuProfile;
use crate::config::manifest::{Cluster, Node};
use crate::config::Board;
use crate::util::CommandExt;
use guest::{judge, parse_report, Check, Expectations};

#[derive(Debug)]
pub struct Tier1Result {
    pub node: String,
    pub passed: bool,
    pub checks: Vec<Check>,
    /// (stage, seconds since QEMU started) for each boot stage reached.
    pub reached: Vec<(&'static str, f64)>,
    pub log: PathBuf,
    pub report: PathBuf,
}

/// What the running node must show, booted alone: its hostname, and every
/// file habuild rendered. Control planes: the first-boot unit enabled; the
/// init node's first boot runs `kubeadm init` (a test double in tests)
/// and then enables realServer, while a joiner's keeps waiting for the
/// VIP, which nothing answers in tier 1, with realServer still disabled.
/// A control plane built without the Kubernetes packages
/// (`--without-kubernetes`, as `<node>.json` says) boots to a running
/// system, its first boot skipped by the unit's condition (no kubeadm):
/// nothing can form a cluster from it, and nothing has failed.
/// Directors: keepalived enabled and running.
pub fn expectations(j: &NodeJson, init_node: bool) -> Expectations {
    let with_kubernetes = j.kubernetes.as_ref().is_none_or(|k| k.packages_included);
    let mut firstboot_skipped = false;
    let mut unit_enablement = vec![(
        "habuild-growroot.service".to_string(),
        "enabled".to_string(),
    )];
    let mut unit_activity = vec![("systemd-networkd.service".to_string(), "active".to_string())];
    match j.role.as_str() {
        "control-plane" => {
            unit_enablement.push(("habuild-firstboot.service".into(), "enabled".into()));
            if !with_kubernetes {
                unit_enablement.push(("realServer.service".into(), "disabled".into()));
                unit_activity.push(("habuild-firstboot.service".into(), "inactive".into()));
                firstboot_skipped = true;
            } else if init_node {
                unit_enablement.push(("realServer.service".into(), "enabled".into()));
            } else {
                unit_enablement.push(("realServer.service".into(), "disabled".into()));
                unit_activity.push(("habuild-firstboot.service".into(), "active".into()));
            }
        }
        "director" => {
            unit_enablement.push(("keepalived.service".into(), "enabled".into()));
            unit_activity.push(("keepalived.service".into(), "active".into()));
        }
        _ => {}
    }
    Expectations {
        hostname: j.node.clone(),
        unit_enablement,
        unit_activity,
        addresses: Vec::new(),
        files: j
            .files
            .root
            .iter()
            .map(|f| (f.path.clone(), f.sha256.clone()))
            .collect(),
        root_grown_to: None,
        firstboot_skipped,
    }
}

/// The size of the disk a tier-1 guest boots: larger than its image, so
/// that first-boot growth (growpart, then resize2fs online) is exercised.
/// An SD card doubles, as QEMU's model takes only powers of two. A UEFI
/// disk becomes 20 GiB: past the 16 GiB one block of 32-byte group
/// descriptors covers, so an ext4 without `resize_inode` (the native
/// writer's) must convert itself to `meta_bg` while it grows.
fn test_disk_size(image_size: u64, sd_card: bool) -> u64 {
    if sd_card {
        2 * image_size
    } else {
        image_size.max(20 << 30)
    }
}

/// e2fsck of the grown root after the guest stopped: the independent word
/// on what first-boot growth (for the native writer's ext4, a conversion
/// to `meta_bg`) left. The guest was killed with the filesystem mounted, so
/// its journal is replayed first (and nothing else repaired), then the
/// filesystem checked read-only. e2fsck
/// cannot replay a journal at an `?offset=` (it re-opens the device
/// without it), so the copy, which is thrown away next, is cut down to
/// the root partition first: without copying its 20 GiB.
fn grown_root_fsck(copy: &Path, root_start: u64) -> Check {
    let result = cut_to_partition(copy, root_start).and_then(|()| {
        let fs = copy.to_str().context("the copy's path is not UTF-8")?;
        // Only the journal: whatever else is wrong must show in the
        // read-only check. 1 ("corrected") is what a replay returns.
        Command::new("e2fsck")
            .args(["-y", "-E", "journal_only", fs])
            .output_accepting(&[1])?;
        Command::new("e2fsck").args(["-fn", fs]).output_checked()
    });
    match result {
        Ok(_) => Check {
            ok: true,
            what: "root ext4 after growth: e2fsck -fn clean (after replaying its journal)".into(),
        },
        Err(e) => Check {
            ok: false,
            what: format!("root ext4 after growth: {e:#}"),
        },
    }
}

/// Removes the first `start` bytes of `file` in place (the partitions in
/// front of the root), so the file begins with the root filesystem.
fn cut_to_partition(file: &Path, start: u64) -> Result<()> {
    use rustix::fs::FallocateFlags;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    rustix::fs::fallocate(&f, FallocateFlags::COLLAPSE_RANGE, 0, start).with_context(|| {
        format!(
            "cutting the first {start} bytes out of {} (fallocate COLLAPSE_RANGE; \
             the test directory must be on ext4 or XFS)",
            file.display()
        )
    })
}

/// The least a root partition starting at `root_start` must fill of a disk
/// of `disk_size` once grown: all but the backup GPT and alignment.
fn grown_root_least(disk_size: u64, root_start: u64) -> u64 {
    disk_size - root_start - (1 << 20)
}

/// Boots `<out_dir>/<node>.img` and judges what the guest reports.
pub fn run(
    out_dir: &Path,
    cluster: &Cluster,
    manifest_node: &Node,
    board: &Board,
    project_root: &Path,
) -> Result<Tier1Result> {
    let prefix_length = cluster.subnet.prefix;
    let node = manifest_node.name.as_str();
    let json_path = out_dir.join(format!("{node}.json"));
    let j: NodeJson = serde_json::from_slice(&std::fs::read(&json_path).with_context(|| {
        format!(
            "reading {} (build the image first: habuild image --node {node})",
            json_path.display()
        )
    })?)
    .with_context(|| format!("parsing {}", json_path.display()))?;
    let profile = board
        .qemu
        .as_ref()
        .with_context(|| format!("board {} has no [qemu] profile", board.name))?;
    let image = j.raw_image(out_dir)?;
    let test_dir = out_dir.join("test");
    std::fs::create_dir_all(&test_dir)
        .with_context(|| format!("creating {}", test_dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".tier1-{node}-"))
        // The copies of a control plane's image hold the cluster's keys.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&test_dir)
        .context("creating a work directory")?;
    // Ctrl-C removes it too (it holds a full-size copy of the image).
    let _remove = crate::util::cleanup::remove_temporary_on_exit(work.path());
    let copy = work.path().join("disk.img");
    sparse_copy(&image, &copy)?;
    let image_size = std::fs::metadata(&image)
        .with_context(|| format!("reading the size of {}", image.display()))?
        .len();
    let disk_size = test_disk_size(image_size, profile.drive == "sd");
    grow_file(&copy, disk_size)?;
    let root = j.partition("root")?.into();
    add_check_unit(&copy, root, &project_root.join("qemu"), work.path())?;

    let mut cmd = Command::new(format!("qemu-system-{}", profile.system));
    cmd.args([
        "-M",
        &profile.machine,
        "-m",
        &profile.memory,
        "-smp",
        &profile.cpus.to_string(),
    ]);
    cmd.args([
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ]);
    match &profile.dtb {
        Some(dtb) => direct_kernel(&mut cmd, &j, profile, dtb, &copy, work.path())?,
        None => {
            // The manifest's MAC, so that the image's .link file names the
            // NIC lan0 as it will on the real machine.
            let mac = manifest_node
                .mac
                .clone()
                .unwrap_or_else(|| guest_mac(manifest_node.address));
            uefi(&mut cmd, profile, &copy, &mac)?
        }
    }
    let log = test_dir.join(format!("{node}-tier1.log"));
    // Hang detectors, not speed targets: an idle 2-core machine reaches
    // systemd in under a minute (director) or about 150 s (Pi, initramfs
    // under TCG), but a loaded one has taken over 300 s.
    let stages = [
        Stage {
            name: "firmware and kernel start",
            marker: "Linux version",
            timeout: Duration::from_secs(180),
        },
        Stage {
            name: "systemd start",
            marker: "Welcome to",
            timeout: Duration::from_secs(600),
        },
        Stage {
            name: "boot to multi-user.target and in-guest check",
            marker: "HABUILD-DONE",
            timeout: Duration::from_secs(900),
        },
    ];
    let run = run_stages(cmd, &stages, &log)
        .with_context(|| format!("booting {node} under QEMU ({})", profile.machine))?;
    let report = parse_report(&run.log)
        .with_context(|| format!("reading {node}'s report in {}", log.display()))?;
    let mut expect = expectations(&j, cluster.init_node().name == node);
    expect.root_grown_to = Some(grown_root_least(disk_size, root.start));
    if profile.dtb.is_none() {
        // Only the UEFI machines get a NIC (QEMU's raspi4b has no Ethernet).
        expect.addresses = vec![(
            "lan0".to_string(),
            format!("{}/{prefix_length}", manifest_node.address),
        )];
    }
    let mut checks = judge(&report, &expect);
    checks.push(grown_root_fsck(&copy, root.start));
    let passed = checks.iter().all(|c| c.ok);
    let report_path = test_dir.join(format!("{node}-tier1.txt"));
    let verdict = if passed { "PASS" } else { "FAIL" };
    let accel = if profile.dtb.is_none() && super::kvm::kvm_for_uefi() {
        "KVM"
    } else {
        "TCG"
    };
    let mut text = format!(
        "{node}: tier 1 on {} ({accel}): {verdict}\n",
        profile.machine
    );
    for (stage, at) in &run.reached {
        text.push_str(&format!("  reached {stage:?} at {at:.1}s\n"));
    }
    for c in &checks {
        text.push_str(&format!(
            "  [{}] {}\n",
            if c.ok { "ok" } else { "FAIL" },
            c.what
        ));
    }
    text.push_str(&format!("  serial log: {}\n", log.display()));
    std::fs::write(&report_path, &text)
        .with_context(|| format!("writing {}", report_path.display()))?;
    Ok(Tier1Result {
        node: node.into(),
        passed,
        checks,
        reached: run.reached.clone(),
        log,
        report: report_path,
    })
}

fn direct_kernel(
    cmd: &mut Command,
    j: &NodeJson,
    profile: &QemuProfile,
    dtb: &str,
    copy: &Path,
    work: &Path,
) -> Result<()> {
    let boot = work.join("boot.vfat");
    extract(copy, j.partition("boot")?.into(), &boot)?;
    let files = fat_files(&boot, &["vmlinuz", "initrd.img", dtb, "cmdline.txt"], work)?;
    let qemu_dtb = work.join("qemu.dtb");
    if profile.raspi4b_dtb_fixups {
        dtb::make_qemu_dtb(&files[2], &qemu_dtb)?;
    } else {
        std::fs::copy(&files[2], &qemu_dtb)
            .with_context(|| format!("copying {}", files[2].display()))?;
    }
    let cmdline =
        std::fs::read_to_string(&files[3]).context("reading cmdline.txt from the image")?;
    let append = qemu_cmdline(&cmdline, &profile.console, &profile.kernel_args);
    // QEMU's raspi machines take only power-of-two SD cards.
    let size = std::fs::metadata(copy)?.len();
    if profile.drive == "sd" && !size.is_power_of_two() {
        bail!(
            "the test disk made from {} is {size} bytes; QEMU's SD card model needs a power of two",
            j.image.file
        );
    }
    cmd.arg("-kernel")
        .arg(&files[0])
        .arg("-initrd")
        .arg(&files[1])
        .arg("-dtb")
        .arg(&qemu_dtb)
        .arg("-append")
        .arg(append);
    cmd.arg("-drive").arg(format!(
        "file={},if={},format=raw",
        copy.display(),
        profile.drive
    ));
    Ok(())
}

fn uefi(cmd: &mut Command, profile: &QemuProfile, copy: &Path, mac: &str) -> Result<()> {
    let code = crate::host::tools::ovmf_code()
        .context("no OVMF firmware found (package ovmf; habuild doctor --install)")?;
    cmd.arg("-drive").arg(format!(
        "if=pflash,format=raw,readonly=on,file={}",
        code.display()
    ));
    cmd.arg("-drive").arg(format!(
        "file={},if={},format=raw",
        copy.display(),
        profile.drive
    ));
    // KVM only when it can run OVMF here (see qemu::kvm).
    cmd.args([
        "-accel",
        if super::kvm::kvm_for_uefi() {
            "kvm"
        } else {
            "tcg"
        },
    ]);
    // A NIC on a hub with no other port: the link is up, nothing leaves.
    cmd.args([
        "-netdev",
        "hubport,id=n0,hubid=0",
        "-device",
        &format!("virtio-net-pci,netdev=n0,mac={mac}"),
    ]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_json(role: &str) -> NodeJson {
        serde_json::from_value(serde_json::json!({
            "node": "n", "role": role, "board": "rpi4",
            "image": {"file": "n.img", "size": 0, "partition_table": "mbr", "layout": {"partitions": []}},
            "files": {"root": [{"path": "/etc/hostname", "sha256": "ab"}]},
        }))
        .unwrap()
    }

    fn wanted(e: &Expectations, unit: &str) -> (Option<String>, Option<String>) {
        let find = |v: &[(String, String)]| v.iter().find(|(u, _)| u == unit).map(|p| p.1.clone());
        (find(&e.unit_enablement), find(&e.unit_activity))
    }

    #[test]
    fn test_disks_grow_past_one_descriptor_block_or_stay_powers_of_two() {
        assert_eq!(test_disk_size(1 << 30, true), 2 << 30);
        assert_eq!(test_disk_size(965_738_496, false), 20 << 30);
        assert_eq!(test_disk_size(30 << 30, false), 30 << 30);
        assert_eq!(
            grown_root_least(2 << 30, 257 << 20),
            (2 << 30) - (258 << 20)
        );
    }

    #[test]
    fn a_joiner_alone_waits_for_the_vip_and_the_init_node_does_not() {
        let init = expectations(&node_json("control-plane"), true);
        assert_eq!(
            wanted(&init, "realServer.service").0.as_deref(),
            Some("enabled")
        );
        assert_eq!(wanted(&init, "habuild-firstboot.service").1, None);
        let joiner = expectations(&node_json("control-plane"), false);
        assert_eq!(
            wanted(&joiner, "realServer.service").0.as_deref(),
            Some("disabled")
        );
        assert_eq!(
            wanted(&joiner, "habuild-firstboot.service"),
            (Some("enabled".into()), Some("active".into()))
        );
        let director = expectations(&node_json("director"), false);
        assert_eq!(
            wanted(&director, "keepalived.service"),
            (Some("enabled".into()), Some("active".into()))
        );
        assert_eq!(wanted(&director, "realServer.service"), (None, None));
        assert_eq!(director.files, vec![("/etc/hostname".into(), "ab".into())]);
    }

    #[test]
    fn a_control_plane_without_kubernetes_expects_its_first_boot_skipped() {
        let mut j = node_json("control-plane");
        j.kubernetes = Some(crate::artifact::report::KubernetesJson {
            packages_included: false,
        });
        for init in [true, false] {
            let e = expectations(&j, init);
            assert_eq!(
                wanted(&e, "realServer.service").0.as_deref(),
                Some("disabled")
            );
            assert!(e.firstboot_skipped);
        }
        j.kubernetes = Some(crate::artifact::report::KubernetesJson {
            packages_included: true,
        });
        assert!(!expectations(&j, true).firstboot_skipped);
    }
}

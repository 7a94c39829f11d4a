//! Each tier-2 guest, made ready: a throw-away copy of its image with the
//! fact-reporting unit, a tap on the segment, and its QEMU command line
//! (control planes on `-M virt` with the kernel from their boot partition,
//! directors under OVMF).

use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::cluster::{control_plane_args, director_args, GuestSpec};
use super::netns::Netns;
use crate::artifact::report::NodeJson;
use crate::config::manifest::{Cluster as Manifest, Node, Role};
use crate::config::Project;
use crate::qemu::machine::{guest_mac, qemu_cmdline};
use crate::qemu::prepare::{add_test_unit, extract, fat_files, sparse_copy, Extent};
use crate::util::CommandExt;

/// A guest's fact-reporting unit (in the repository's `qemu/`), and the
/// tag of its serial logs.
pub(crate) struct FactUnit<'a> {
    pub script: &'a str,
    pub service: &'a str,
    pub tag: &'a str,
}

const TIER2_FACTS: FactUnit = FactUnit {
    script: "tier2-facts.sh",
    service: "habuild-t2-facts.service",
    tag: "tier2",
};

/// A guest's throw-away disk and its place on the segment.
pub(crate) struct GuestDisk {
    /// The guest's work directory.
    pub dir: PathBuf,
    /// The sparse copy of its image it boots.
    pub copy: PathBuf,
    pub root: Extent,
    pub tap: String,
    pub mac: String,
    pub qmp: PathBuf,
    /// `<out>/test/<node>-<tag>.log`, emptied.
    pub log: PathBuf,
}

/// Copies the node's image (as `j` describes it) into its work directory,
/// adds `unit` to the copy, and gives it a tap on the segment, its MAC (the
/// manifest's, or one derived from its address) and its log path.
#[allow(clippy::too_many_arguments)]
pub(crate) fn guest_disk(
    project: &Project,
    j: &NodeJson,
    out_dir: &Path,
    work: &Path,
    ns: &mut Netns,
    index: usize,
    node: &Node,
    unit: &FactUnit,
) -> Result<GuestDisk> {
    let dir = work.join(&node.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = dir.join("disk.img");
    sparse_copy(&j.raw_image(out_dir)?, &copy)?;
    let root = j.partition("root")?.into();
    let q = project.root.join("qemu");
    add_test_unit(
        &copy,
        root,
        &q.join(unit.script),
        &q.join(unit.service),
        &q,
        &dir,
    )?;
    let tap = ns.add_tap(index)?;
    let mac = node.mac.clone().unwrap_or_else(|| guest_mac(node.address));
    let log = out_dir
        .join("test")
        .join(format!("{}-{}.log", node.name, unit.tag));
    let _ = std::fs::remove_file(&log);
    Ok(GuestDisk {
        qmp: dir.join("qmp.sock"),
        dir,
        copy,
        root,
        tap,
        mac,
        log,
    })
}

/// A director's QEMU: its own disk through OVMF and systemd-boot, with KVM
/// when it is usable.
pub(crate) fn director_command(
    project: &Project,
    node: &Node,
    disk: &GuestDisk,
) -> Result<(String, Vec<OsString>)> {
    let board = project.board(&node.board)?;
    let machine = board
        .qemu
        .as_ref()
        .map(|p| p.machine.clone())
        .unwrap_or_else(|| "q35".into());
    let ovmf = crate::host::tools::ovmf_code()
        .context("no OVMF firmware found (package ovmf; habuild doctor --install)")?;
    Ok((
        "qemu-system-x86_64".to_string(),
        director_args(
            &ovmf,
            &machine,
            crate::qemu::kvm::kvm_for_uefi(),
            &disk.copy,
            &disk.tap,
            &disk.mac,
            &disk.qmp,
        ),
    ))
}

fn debugfs_cat(copy: &Path, root: Extent, path: &str) -> Result<String> {
    Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(format!("{}?offset={}", copy.display(), root.start))
        .output_checked()
        .with_context(|| format!("reading {path} from {}", copy.display()))
}

/// Prepared guest: its QEMU spec and the config sha its kubeadm call must carry.
pub(crate) struct Prepared {
    pub spec: GuestSpec,
    pub role: Role,
    pub address: Ipv4Addr,
    pub config_sha: Option<String>,
}

pub(super) fn prepare(
    project: &Project,
    m: &Manifest,
    out_dir: &Path,
    work: &Path,
    ns: &mut Netns,
    index: usize,
    node: &Node,
) -> Result<Prepared> {
    let json_path = out_dir.join(format!("{}.json", node.name));
    let j: NodeJson = serde_json::from_slice(&std::fs::read(&json_path).with_context(|| {
        format!(
            "reading {} (build the images first: habuild image --all)",
            json_path.display()
        )
    })?)
    .with_context(|| format!("parsing {}", json_path.display()))?;
    let disk = guest_disk(project, &j, out_dir, work, ns, index, node, &TIER2_FACTS)?;
    let GuestDisk {
        dir,
        copy,
        root,
        tap,
        mac,
        qmp: qmp_path,
        log,
    } = &disk;
    let (program, args, config_sha) = match node.role {
        Role::Director => {
            let (program, args) = director_command(project, node, &disk)?;
            (program, args, None)
        }
        Role::ControlPlane => {
            let boot = dir.join("boot.vfat");
            extract(copy, j.partition("boot")?.into(), &boot)?;
            let files = fat_files(&boot, &["vmlinuz", "initrd.img", "cmdline.txt"], dir)?;
            let cmdline =
                std::fs::read_to_string(&files[2]).context("reading cmdline.txt from the image")?;
            let append = qemu_cmdline(&cmdline, "ttyAMA0,115200", &["panic=-1".to_string()]);
            let kubeadm = debugfs_cat(copy, *root, "/etc/habuild/kubeadm/kubeadm.yaml")?;
            let sha = if node.name == m.init_node().name {
                // firstboot.sh hands `kubeadm init` kubeadm.yaml, a document
                // separator and kubelet.yaml in one file.
                let kubelet = debugfs_cat(copy, *root, "/etc/habuild/kubeadm/kubelet.yaml")?;
                hex::encode(Sha256::digest(format!("{kubeadm}\n---\n{kubelet}")))
            } else {
                hex::encode(Sha256::digest(&kubeadm))
            };
            (
                "qemu-system-aarch64".to_string(),
                control_plane_args(&files[0], &files[1], &append, copy, tap, mac, qmp_path),
                Some(sha),
            )
        }
    };
    Ok(Prepared {
        spec: GuestSpec {
            name: node.name.clone(),
            program,
            args: args.into_iter().collect(),
            qmp: qmp_path.clone(),
            log: log.clone(),
        },
        role: node.role,
        address: node.address,
        config_sha,
    })
}

//! Each tier-2 guest, made ready: a throw-away copy of its image with the
//! fact-reporting unit, a tap on the segment, and its QEMU command line
//! (control planes on `-M virt` with the kernel from their boot partition,
//! directors under OVMF).

use std::net::Ipv4Addr;
use std::path::Path;
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

fn debugfs_cat(copy: &Path, root: Extent, path: &str) -> Result<String> {
    Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(format!("{}?offset={}", copy.display(), root.start))
        .output_checked()
        .with_context(|| format!("reading {path} from {}", copy.display()))
}

/// Prepared guest: its QEMU spec and the config sha its kubeadm call must carry.
pub(super) struct Prepared {
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
    let dir = work.join(&node.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = dir.join("disk.img");
    sparse_copy(&out_dir.join(&j.image.file), &copy)?;
    let root = j.partition("root")?.into();
    let q = project.root.join("qemu");
    add_test_unit(
        &copy,
        root,
        &q.join("tier2-facts.sh"),
        &q.join("habuild-t2-facts.service"),
        &q,
        &dir,
    )?;
    let tap = ns.add_tap(index)?;
    let mac = node.mac.clone().unwrap_or_else(|| guest_mac(node.address));
    let qmp_path = dir.join("qmp.sock");
    let test_dir = out_dir.join("test");
    let log = test_dir.join(format!("{}-tier2.log", node.name));
    let _ = std::fs::remove_file(&log);
    let (program, args, config_sha) = match node.role {
        Role::Director => {
            let board = project.board(&node.board)?;
            let machine = board
                .qemu
                .as_ref()
                .map(|p| p.machine.clone())
                .unwrap_or_else(|| "q35".into());
            let ovmf = crate::host::tools::ovmf_code()
                .context("no OVMF firmware found (package ovmf; habuild doctor --install)")?;
            (
                "qemu-system-x86_64".to_string(),
                director_args(
                    &ovmf,
                    &machine,
                    crate::qemu::kvm::kvm_for_uefi(),
                    &copy,
                    &tap,
                    &mac,
                    &qmp_path,
                ),
                None,
            )
        }
        Role::ControlPlane => {
            let boot = dir.join("boot.vfat");
            extract(&copy, j.partition("boot")?.into(), &boot)?;
            let files = fat_files(&boot, &["vmlinuz", "initrd.img", "cmdline.txt"], &dir)?;
            let cmdline =
                std::fs::read_to_string(&files[2]).context("reading cmdline.txt from the image")?;
            let append = qemu_cmdline(&cmdline, "ttyAMA0,115200", &["panic=-1".to_string()]);
            let kubeadm = debugfs_cat(&copy, root, "/etc/habuild/kubeadm/kubeadm.yaml")?;
            let sha = if node.name == m.init_node().name {
                // firstboot.sh hands `kubeadm init` kubeadm.yaml, a document
                // separator and kubelet.yaml in one file.
                let kubelet = debugfs_cat(&copy, root, "/etc/habuild/kubeadm/kubelet.yaml")?;
                hex::encode(Sha256::digest(format!("{kubeadm}\n---\n{kubelet}")))
            } else {
                hex::encode(Sha256::digest(&kubeadm))
            };
            (
                "qemu-system-aarch64".to_string(),
                control_plane_args(&files[0], &files[1], &append, &copy, &tap, &mac, &qmp_path),
                Some(sha),
            )
        }
    };
    Ok(Prepared {
        spec: GuestSpec {
            name: node.name.clone(),
            program,
            args: args.into_iter().collect(),
            qmp: qmp_path,
            log,
        },
        role: node.role,
        address: node.address,
        config_sha,
    })
}

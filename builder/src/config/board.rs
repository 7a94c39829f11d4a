//! Board definitions (`boards/<name>.toml`): architecture, disk layout, boot
//! files and, per distro, the kernel and firmware packages that provide them.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{parse_toml, ConfigError, ConfigErrors};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    pub name: String,
    pub description: String,
    pub arch: Arch,
    /// The table written unless the user asks for another one.
    pub partition_table: PartitionTable,
    /// Every table this board's firmware can boot from.
    pub partition_tables: Vec<PartitionTable>,
    pub boot_size_mib: u64,
    /// What the boot partition is: the firmware's (`boot`) or an EFI
    /// system partition (`esp`). It decides the partition's type.
    pub boot_role: PartitionRole,
    /// Where the boot (or EFI system) partition is mounted in the running system.
    pub boot_mount: String,
    pub boot_label: String,
    pub root_label: String,
    /// QEMU's raspi machines only accept SD images whose size is a power of two.
    #[serde(default)]
    pub power_of_two_size: bool,
    /// Serial console for the kernel command line.
    pub console: String,
    /// Template tree (relative to `boards/`) rendered onto the boot partition.
    pub boot_overlay: String,
    /// Files that must be on the boot partition, or the image is refused.
    pub required_boot_files: Vec<String>,
    pub distro: BTreeMap<String, BoardDistro>,
    /// How `habuild test` boots this board's image under QEMU.
    pub qemu: Option<QemuProfile>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionTable {
    Mbr,
    Gpt,
}

/// Target CPU architecture; it picks the GPT root partition type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Arm64,
    Amd64,
}

impl Arch {
    /// The architecture's name in Debian and Ubuntu (dpkg, mmdebstrap).
    pub fn debian_name(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Amd64 => "amd64",
        }
    }
}

/// What a partition is for; it determines the partition type and which
/// filesystem `disk::assemble` puts into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionRole {
    /// FAT32 firmware partition (Raspberry Pi): MBR 0x0c with the boot
    /// flag, GPT "Microsoft basic data".
    Boot,
    /// EFI System Partition: MBR 0xef, GPT ESP type.
    Esp,
    /// Linux root: MBR 0x83, GPT Discoverable Partitions root type for the arch.
    Root,
}

/// A QEMU machine that boots the board's image as it is.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QemuProfile {
    /// `qemu-system-<system>`: aarch64 or x86_64.
    pub system: String,
    pub machine: String,
    pub memory: String,
    pub cpus: u32,
    /// How the disk is attached: `sd` (raspi) or `virtio`.
    pub drive: String,
    /// Kernel console device inside the guest.
    pub console: String,
    /// Load kernel, initramfs and this DTB from the image's boot partition
    /// (the Pi's firmware cannot run under QEMU); None boots the image's
    /// own bootloader through UEFI firmware.
    pub dtb: Option<String>,
    /// Apply the raspi4b device-tree fixups to a copy of the DTB.
    #[serde(default)]
    pub raspi4b_dtb_fixups: bool,
    /// Extra kernel arguments, for QEMU's sake only (say why in the board file).
    #[serde(default)]
    pub kernel_args: Vec<String>,
}

/// What a board needs from one distro.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BoardDistro {
    /// Kernel, firmware and bootloader packages.
    pub packages: Vec<String>,
    /// Files copied from the root filesystem onto the boot partition.
    pub boot_files: Vec<BootFile>,
}

/// `from` is a glob inside the root filesystem. `to` ending in `/` is a
/// directory on the boot partition (every match keeps its name); otherwise
/// it is a file name and the highest-versioned match is copied there.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootFile {
    pub from: String,
    pub to: String,
    #[serde(default)]
    pub optional: bool,
}

impl Board {
    pub fn for_distro(&self, distro: &str) -> Option<&BoardDistro> {
        self.distro.get(distro)
    }
}

pub fn parse(file: &Path, text: &str) -> Result<Board, ConfigErrors> {
    let board: Board = parse_toml(file, text)?;
    let mut problems = Vec::new();
    let mut add = |key: &str, problem: String| {
        problems.push(ConfigError {
            file: file.to_path_buf(),
            key: key.into(),
            problem,
        })
    };
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if board.name != stem {
        add(
            "name",
            format!("{:?} does not match the file name {stem:?}", board.name),
        );
    }
    if !board.partition_tables.contains(&board.partition_table) {
        add(
            "partition_table",
            format!("{:?} is not among partition_tables", board.partition_table),
        );
    }
    if board.boot_role == PartitionRole::Root {
        add(
            "boot_role",
            "\"root\" is not a boot partition; expected \"boot\" or \"esp\"".into(),
        );
    }
    if board.boot_size_mib < 32 {
        add(
            "boot_size_mib",
            format!(
                "{} MiB is too small for a FAT32 boot partition (at least 32)",
                board.boot_size_mib
            ),
        );
    }
    for (distro, d) in &board.distro {
        for (i, f) in d.boot_files.iter().enumerate() {
            if f.from.starts_with('/') || f.from.contains("..") {
                add(
                    &format!("distro.{distro}.boot_files[{i}].from"),
                    format!(
                        "{:?} must be relative to the root filesystem, without '..'",
                        f.from
                    ),
                );
            }
        }
    }
    if problems.is_empty() {
        Ok(board)
    } else {
        Err(ConfigErrors(problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_names_are_lowercase() {
        #[derive(Deserialize)]
        struct T {
            table: PartitionTable,
            arch: Arch,
            role: PartitionRole,
        }
        let t: T = toml::from_str("table = \"gpt\"\narch = \"arm64\"\nrole = \"esp\"").unwrap();
        assert_eq!(
            (t.table, t.arch, t.role),
            (PartitionTable::Gpt, Arch::Arm64, PartitionRole::Esp)
        );
        assert!(toml::from_str::<T>("table = \"GPT\"\narch = \"arm64\"\nrole = \"esp\"").is_err());
    }
}

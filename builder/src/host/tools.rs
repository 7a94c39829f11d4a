//! The host tools habuild needs: what each is for, which Debian package
//! provides it, the minimum version where one matters, and how to read its
//! version. [`TOOLS`] is the single table; `doctor` and `setup` read it.
//!
//! Version parsers are pure and tested on output captured from the real
//! tools (Debian 12 with bookworm-backports).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::util::CommandExt;

/// What a tool is needed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// `habuild image` cannot build without it.
    Image,
    /// Only `habuild test` and the test suite (qemu boots, config checks).
    Test,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Need::Image => "image",
            Need::Test => "test",
        })
    }
}

/// Reads a version from a tool's output.
pub type VersionParser = fn(&str) -> Option<Version>;

/// How to find a tool and read its version.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// An executable looked up in `PATH` (and the sbin directories). Its
    /// version is read by running it with `args` (stdout and stderr merged,
    /// exit status ignored) and parsing the text with `parse`.
    Command {
        program: &'static str,
        args: &'static [&'static str],
        parse: VersionParser,
    },
    /// A file that must exist: the first of these paths that does.
    File { candidates: &'static [&'static str] },
}

/// One host tool.
#[derive(Debug, Clone, Copy)]
pub struct Tool {
    /// The name callers use with `doctor::require` (the program name, or a
    /// short name for a file).
    pub name: &'static str,
    /// What habuild uses it for.
    pub purpose: &'static str,
    /// The Debian package that provides it.
    pub package: &'static str,
    pub need: Need,
    /// Minimum version, as numeric components (`[9, 0]` is 9.0).
    pub min_version: Option<&'static [u32]>,
    /// Whether Debian 12 only has a new enough version in bookworm-backports.
    pub backports: bool,
    pub probe: Probe,
}

/// A dotted numeric version (`1.47.2`, `10.0.2`, `254`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(pub Vec<u32>);

impl Version {
    /// Parses the leading `N(.N)*` of `s` (an optional leading `v` is
    /// skipped): `"1.47.2"`, `"v2.2.7"`, `"10.0.2+ds"` → `10.0.2`.
    pub fn parse_prefix(s: &str) -> Option<Version> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts = Vec::new();
        for part in s.split('.') {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            if digits.is_empty() {
                break;
            }
            parts.push(digits.parse().ok()?);
            if digits.len() != part.len() {
                break;
            }
        }
        (!parts.is_empty()).then_some(Version(parts))
    }

    /// `self >= min`, comparing missing components as 0 (`9` == `9.0`).
    pub fn at_least(&self, min: &[u32]) -> bool {
        let len = self.0.len().max(min.len());
        for i in 0..len {
            let a = self.0.get(i).copied().unwrap_or(0);
            let b = min.get(i).copied().unwrap_or(0);
            if a != b {
                return a > b;
            }
        }
        true
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&parts.join("."))
    }
}

/// Renders a minimum version slice like a [`Version`].
pub fn format_min(min: &[u32]) -> String {
    Version(min.to_vec()).to_string()
}

/// The version right after `marker` on the first line where `marker` is
/// followed by a version number.
pub fn version_after(text: &str, marker: &str) -> Option<Version> {
    text.lines()
        .flat_map(|line| {
            line.match_indices(marker)
                .map(move |(i, _)| &line[i + marker.len()..])
        })
        .find_map(Version::parse_prefix)
}

/// `mmdebstrap --version`: `mmdebstrap 1.5.5`.
pub fn parse_mmdebstrap(t: &str) -> Option<Version> {
    version_after(t, "mmdebstrap ")
}
/// `apt-get --version`: `apt 2.6.1 (amd64)`.
pub fn parse_apt(t: &str) -> Option<Version> {
    version_after(t, "apt ")
}
/// `dpkg-deb --version`: `Debian 'dpkg-deb' package archive backend version 1.21.22 (amd64).`
pub fn parse_dpkg_deb(t: &str) -> Option<Version> {
    version_after(t, "backend version ")
}
/// `mke2fs -V`: `mke2fs 1.47.2 (1-Jan-2025)`.
pub fn parse_mke2fs(t: &str) -> Option<Version> {
    version_after(t, "mke2fs ")
}
/// `e2fsck -V`: `e2fsck 1.47.2 (1-Jan-2025)`.
pub fn parse_e2fsck(t: &str) -> Option<Version> {
    version_after(t, "e2fsck ")
}
/// `debugfs -V`: `debugfs 1.47.2 (1-Jan-2025)`.
pub fn parse_debugfs(t: &str) -> Option<Version> {
    version_after(t, "debugfs ")
}
/// `mkfs.vfat --help`: usage, then `mkfs.fat 4.2 (2021-01-31)`.
pub fn parse_mkfs_fat(t: &str) -> Option<Version> {
    version_after(t, "mkfs.fat ")
}
/// `fsck.fat -n /dev/null`: `fsck.fat 4.2 (2021-01-31)`, then an error
/// about reading the (empty) device. `--help` has no version.
pub fn parse_fsck_fat(t: &str) -> Option<Version> {
    version_after(t, "fsck.fat ")
}
/// `mcopy --version`: `mcopy (GNU mtools) 4.0.32`.
pub fn parse_mtools(t: &str) -> Option<Version> {
    version_after(t, "(GNU mtools) ")
}
/// `sfdisk --version`: `sfdisk from util-linux 2.38.1`.
pub fn parse_util_linux(t: &str) -> Option<Version> {
    version_after(t, "util-linux ")
}
/// `bmaptool --version`: `bmaptool 3.6`.
pub fn parse_bmaptool(t: &str) -> Option<Version> {
    version_after(t, "bmaptool ")
}
/// `qemu-system-* --version`: `QEMU emulator version 10.0.2 (Debian ...)`.
pub fn parse_qemu_system(t: &str) -> Option<Version> {
    version_after(t, "QEMU emulator version ")
}
/// `qemu-aarch64-static --version`: `qemu-aarch64 version 10.0.2 (...)`.
pub fn parse_qemu_user(t: &str) -> Option<Version> {
    version_after(t, " version ")
}
/// `arch-test --version`: `arch-test v0.20`.
pub fn parse_arch_test(t: &str) -> Option<Version> {
    version_after(t, "arch-test ")
}
/// `dtc --version` / `fdtput --version`: `Version: DTC 1.6.1`.
pub fn parse_dtc(t: &str) -> Option<Version> {
    version_after(t, "DTC ")
}
/// `shellcheck --version`: `version: 0.9.0` on the second line.
pub fn parse_shellcheck(t: &str) -> Option<Version> {
    version_after(t, "version: ")
}
/// `keepalived --version` (stderr): `Keepalived v2.2.7 (01/16,2022)`.
pub fn parse_keepalived(t: &str) -> Option<Version> {
    version_after(t, "Keepalived ")
}
/// `ip -V`: `ip utility, iproute2-6.1.0, libbpf 1.1.2` (older releases say
/// `iproute2-ss200127`, which has no version number: `None`).
pub fn parse_iproute2(t: &str) -> Option<Version> {
    version_after(t, "iproute2-")
}
/// `systemd-analyze --version`: `systemd 254 (254.26-1~bpo12+1)`.
pub fn parse_go(t: &str) -> Option<Version> {
    version_after(t, "go version go")
}

/// `gcc (Debian 12.2.0-14+deb12u1) 12.2.0`: the last word of the first line.
pub fn parse_gcc(t: &str) -> Option<Version> {
    Version::parse_prefix(t.lines().next()?.split_whitespace().last()?)
}

pub fn parse_skopeo(t: &str) -> Option<Version> {
    version_after(t, "skopeo version ")
}

pub fn parse_systemd(t: &str) -> Option<Version> {
    version_after(t, "systemd ")
}

/// Candidate paths of the UEFI firmware code for x86_64 guests.
pub const OVMF_CODE_CANDIDATES: &[&str] = &[
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_CODE.fd",
    "/usr/share/ovmf/OVMF.fd",
];

const fn cmd(program: &'static str, args: &'static [&'static str], parse: VersionParser) -> Probe {
    Probe::Command {
        program,
        args,
        parse,
    }
}

/// Every host tool habuild uses.
pub const TOOLS: &[Tool] = &[
    Tool {
        name: "mmdebstrap",
        purpose: "installs the base root filesystem from the Debian/Ubuntu archive",
        package: "mmdebstrap",
        need: Need::Image,
        min_version: Some(&[1, 3]),
        backports: false,
        probe: cmd("mmdebstrap", &["--version"], parse_mmdebstrap),
    },
    Tool {
        name: "apt-get",
        purpose:
            "resolves the packages of a lock file without a bootstrap (`update --error-on=any`)",
        package: "apt",
        need: Need::Image,
        min_version: Some(&[2, 2]),
        backports: false,
        probe: cmd("apt-get", &["--version"], parse_apt),
    },
    Tool {
        name: "dpkg-deb",
        purpose: "reads the control fields of the offline bundle's .debs for the lock file",
        package: "dpkg",
        need: Need::Image,
        min_version: None,
        backports: false,
        probe: cmd("dpkg-deb", &["--version"], parse_dpkg_deb),
    },
    Tool {
        name: "mke2fs",
        purpose: "writes the ext4 root filesystem (`mke2fs -d` from a tarball needs 1.47.1)",
        package: "e2fsprogs",
        need: Need::Image,
        min_version: Some(&[1, 47, 1]),
        backports: true,
        probe: cmd("mke2fs", &["-V"], parse_mke2fs),
    },
    Tool {
        name: "e2fsck",
        purpose: "checks the ext4 root filesystem after writing it",
        package: "e2fsprogs",
        need: Need::Image,
        min_version: None,
        backports: true,
        probe: cmd("e2fsck", &["-V"], parse_e2fsck),
    },
    Tool {
        name: "debugfs",
        purpose: "reads back files of the ext4 root filesystem without mounting it",
        package: "e2fsprogs",
        need: Need::Image,
        min_version: None,
        backports: true,
        probe: cmd("debugfs", &["-V"], parse_debugfs),
    },
    Tool {
        name: "mkfs.vfat",
        purpose: "writes the FAT32 boot filesystem",
        package: "dosfstools",
        need: Need::Image,
        min_version: None,
        backports: false,
        probe: cmd("mkfs.vfat", &["--help"], parse_mkfs_fat),
    },
    Tool {
        name: "fsck.fat",
        purpose: "checks the FAT32 boot filesystem (tests)",
        package: "dosfstools",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("fsck.fat", &["-n", "/dev/null"], parse_fsck_fat),
    },
    Tool {
        name: "mcopy",
        purpose: "copies the boot files into the FAT32 filesystem without mounting it",
        package: "mtools",
        need: Need::Image,
        min_version: None,
        backports: false,
        probe: cmd("mcopy", &["--version"], parse_mtools),
    },
    Tool {
        name: "sfdisk",
        purpose: "reads back the partition table of a finished image (tests)",
        package: "fdisk",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("sfdisk", &["--version"], parse_util_linux),
    },
    Tool {
        name: "bmaptool",
        purpose: "checks the .bmap round trip (`bmaptool copy`) and flashes with it",
        package: "bmap-tools",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("bmaptool", &["--version"], parse_bmaptool),
    },
    Tool {
        name: "qemu-system-aarch64",
        purpose: "boots the Pi image (`-M raspi4b` needs QEMU 9.0) and arm64 guests",
        package: "qemu-system-arm",
        need: Need::Test,
        min_version: Some(&[9, 0]),
        backports: true,
        probe: cmd("qemu-system-aarch64", &["--version"], parse_qemu_system),
    },
    Tool {
        name: "qemu-system-x86_64",
        purpose: "boots the amd64 UEFI director image",
        package: "qemu-system-x86",
        need: Need::Test,
        min_version: None,
        backports: true,
        probe: cmd("qemu-system-x86_64", &["--version"], parse_qemu_system),
    },
    Tool {
        name: "qemu-aarch64-static",
        purpose: "runs arm64 maintainer scripts during mmdebstrap (binfmt_misc)",
        package: "qemu-user-static",
        need: Need::Image,
        min_version: None,
        backports: true,
        probe: cmd("qemu-aarch64-static", &["--version"], parse_qemu_user),
    },
    Tool {
        name: "arch-test",
        purpose: "tells whether the host can run binaries of a foreign architecture",
        package: "arch-test",
        need: Need::Image,
        min_version: None,
        backports: false,
        probe: cmd("arch-test", &["--version"], parse_arch_test),
    },
    Tool {
        name: "fdtput",
        purpose: "edits the qemu-only copy of the Pi device tree",
        package: "device-tree-compiler",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("fdtput", &["--version"], parse_dtc),
    },
    Tool {
        name: "dtc",
        purpose: "compiles/decompiles device trees (qemu DTB, overlays)",
        package: "device-tree-compiler",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("dtc", &["--version"], parse_dtc),
    },
    Tool {
        name: "shellcheck",
        purpose: "lints the shell scripts shipped in images (tests)",
        package: "shellcheck",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("shellcheck", &["--version"], parse_shellcheck),
    },
    Tool {
        name: "keepalived",
        purpose: "checks each director's rendered keepalived.conf (`keepalived --config-test`)",
        package: "keepalived",
        need: Need::Image,
        min_version: None,
        backports: false,
        probe: cmd("keepalived", &["--version"], parse_keepalived),
    },
    Tool {
        name: "go",
        purpose: "builds Kubernetes, CRI-O and etcd from pinned source (`habuild bundle`; Go from go.dev where Debian's is older)",
        package: "golang-go",
        need: Need::Test,
        min_version: Some(&[1, 26]),
        backports: false,
        probe: cmd("go", &["version"], parse_go),
    },
    Tool {
        name: "gcc",
        purpose: "compiles CRI-O's pinns and Kubernetes' pause for amd64 (`habuild bundle`)",
        package: "gcc",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("gcc", &["--version"], parse_gcc),
    },
    Tool {
        name: "aarch64-linux-gnu-gcc",
        purpose: "compiles CRI-O's pinns and Kubernetes' pause for arm64 (`habuild bundle`)",
        package: "gcc-aarch64-linux-gnu",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("aarch64-linux-gnu-gcc", &["--version"], parse_gcc),
    },
    Tool {
        name: "skopeo",
        purpose: "reads the bundle's control-plane image archives back (tests)",
        package: "skopeo",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("skopeo", &["--version"], parse_skopeo),
    },
    Tool {
        name: "ip",
        purpose: "network namespace, bridge and taps for cluster scenarios",
        package: "iproute2",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("ip", &["-V"], parse_iproute2),
    },
    Tool {
        name: "ovmf",
        purpose: "UEFI firmware for the amd64 guest (OVMF_CODE_4M.fd)",
        package: "ovmf",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: Probe::File {
            candidates: OVMF_CODE_CANDIDATES,
        },
    },
    Tool {
        name: "systemd-analyze",
        purpose: "verifies the systemd units shipped in images (tests)",
        package: "systemd",
        need: Need::Test,
        min_version: None,
        backports: false,
        probe: cmd("systemd-analyze", &["--version"], parse_systemd),
    },
];

/// The table entry for `name`.
pub fn tool(name: &str) -> Option<&'static Tool> {
    TOOLS.iter().find(|t| t.name == name)
}

/// The packages providing `tools`, deduplicated, in table order.
pub fn packages_for<'a>(tools: impl IntoIterator<Item = &'a Tool>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for t in tools {
        if !out.contains(&t.package) {
            out.push(t.package);
        }
    }
    out
}

/// Directories searched for executables: `PATH`, then the sbin directories
/// (a non-root `PATH` often lacks them). Pure: takes `PATH`'s value.
pub fn search_dirs(path_env: Option<&str>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = path_env
        .unwrap_or("")
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    for extra in ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = PathBuf::from(extra);
        if !dirs.contains(&p) {
            dirs.push(p);
        }
    }
    dirs
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The full path of executable `program`, if installed.
pub fn find_executable(program: &str) -> Option<PathBuf> {
    let path_env = std::env::var("PATH").ok();
    search_dirs(path_env.as_deref())
        .into_iter()
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
}

/// The first existing file among `candidates`.
pub fn find_file(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.is_file())
}

/// The UEFI firmware code file for x86_64 guests, if `ovmf` is installed.
pub fn ovmf_code() -> Option<PathBuf> {
    find_file(OVMF_CODE_CANDIDATES)
}

/// Runs `program args...` with stderr merged into stdout and the exit status
/// ignored (some tools print their version on stderr, or only with a usage
/// error), and returns the text.
pub fn version_output(program: &Path, args: &[&str]) -> Result<String> {
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg(r#""$0" "$@" 2>&1 || :"#)
        .arg(program)
        .args(args);
    c.output_checked()
        .with_context(|| format!("reading the version of {}", program.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    // Outputs captured on a Debian 12 build machine with bookworm-backports.
    const MMDEBSTRAP: &str = "mmdebstrap 1.5.5\n";
    const MKE2FS: &str = "mke2fs 1.47.2 (1-Jan-2025)\n\tUsing EXT2FS Library version 1.47.2\n";
    // bookworm's own e2fsprogs (too old for `mke2fs -d tarball`).
    const MKE2FS_BOOKWORM: &str =
        "mke2fs 1.47.0 (5-Feb-2023)\n\tUsing EXT2FS Library version 1.47.0\n";
    const E2FSCK: &str =
        "e2fsck 1.47.2 (1-Jan-2025)\n\tUsing EXT2FS Library version 1.47.2, 1-Jan-2025\n";
    const DEBUGFS: &str = "debugfs 1.47.2 (1-Jan-2025)\n\tUsing EXT2FS Library version 1.47.2\n";
    const MKFS_VFAT_HELP: &str = "Usage: mkfs.vfat [OPTIONS] TARGET [BLOCKS]\n\
        Create FAT filesystem in TARGET, which can be a block device or file. Use only\n\
        up to BLOCKS 1024 byte blocks if specified. With the -C option, file TARGET will be\n\
        created with a size of 1024 bytes times BLOCKS, which must be specified.\n\n\
        Options:\n  -a              Disable alignment of data structures\n\
        \x20 --offset=SECTOR Write the filesystem at a specific sector into the device file.\n\
        \x20 --help          Show this help message and exit\n\
        mkfs.fat 4.2 (2021-01-31)\n";
    const MKFS_FAT_HELP_AS_MKFS_FAT: &str = "Usage: mkfs.fat [OPTIONS] TARGET [BLOCKS]\n\
        Options:\n\nmkfs.fat 4.2 (2021-01-31)\n";
    const FSCK_FAT: &str = "fsck.fat 4.2 (2021-01-31)\nGot 0 bytes instead of 512 at 0\n";
    const MCOPY: &str = "mcopy (GNU mtools) 4.0.32\nconfigured with the following options: \
        enable-xdf disable-vold disable-new-vold disable-debug enable-raw-term \n";
    const SFDISK: &str = "sfdisk from util-linux 2.38.1\n";
    const BMAPTOOL: &str = "bmaptool 3.6\n";
    const QEMU_AARCH64: &str =
        "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
        Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n";
    // bookworm's own qemu-user-static (7.2, too old for raspi4b).
    const QEMU_USER_BOOKWORM: &str =
        "qemu-aarch64 version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n\
        Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n";
    const QEMU_USER: &str = "qemu-aarch64 version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\n\
        Copyright (c) 2003-2025 Fabrice Bellard and the QEMU Project developers\n";
    const ARCH_TEST: &str = "arch-test v0.20\n";
    const DTC: &str = "Version: DTC 1.6.1\n";
    const SHELLCHECK: &str = "ShellCheck - shell script analysis tool\nversion: 0.9.0\n\
        license: GNU General Public License, version 3\nwebsite: https://www.shellcheck.net\n";
    const KEEPALIVED: &str = "Keepalived v2.2.7 (01/16,2022)\n\nCopyright(C) 2001-2022 Alexandre Cassen, <acassen@gmail.com>\n\n\
        Built with kernel headers for Linux 5.19.11\nRunning on Linux 6.18.44 #1 SMP PREEMPT_DYNAMIC @0\n\
        Distro: Debian GNU/Linux 12 (bookworm)\n";
    const IP: &str = "ip utility, iproute2-6.1.0, libbpf 1.1.2\n";
    const IP_OLD: &str = "ip utility, iproute2-ss200127\n";
    const SYSTEMD: &str =
        "systemd 254 (254.26-1~bpo12+1)\n+PAM +AUDIT +SELINUX +APPARMOR +IMA +SMACK \
        +SECCOMP +GCRYPT -GNUTLS +OPENSSL +ACL +BLKID default-hierarchy=unified\n";

    fn v(s: &str) -> Option<Version> {
        Version::parse_prefix(s)
    }

    #[test]
    fn parses_captured_outputs() {
        let cases: &[(VersionParser, &str, &str)] = &[
            (parse_mmdebstrap, MMDEBSTRAP, "1.5.5"),
            (parse_go, "go version go1.26.8 linux/amd64\n", "1.26.8"),
            (
                parse_gcc,
                "aarch64-linux-gnu-gcc (Debian 12.2.0-14) 12.2.0\nCopyright\n",
                "12.2.0",
            ),
            (parse_skopeo, "skopeo version 1.9.3\n", "1.9.3"),
            (parse_mke2fs, MKE2FS, "1.47.2"),
            (parse_mke2fs, MKE2FS_BOOKWORM, "1.47.0"),
            (parse_e2fsck, E2FSCK, "1.47.2"),
            (parse_debugfs, DEBUGFS, "1.47.2"),
            (parse_mkfs_fat, MKFS_VFAT_HELP, "4.2"),
            (parse_mkfs_fat, MKFS_FAT_HELP_AS_MKFS_FAT, "4.2"),
            (parse_fsck_fat, FSCK_FAT, "4.2"),
            (parse_mtools, MCOPY, "4.0.32"),
            (parse_util_linux, SFDISK, "2.38.1"),
            (parse_bmaptool, BMAPTOOL, "3.6"),
            (parse_qemu_system, QEMU_AARCH64, "10.0.2"),
            (parse_qemu_user, QEMU_USER_BOOKWORM, "7.2.22"),
            (parse_qemu_user, QEMU_USER, "10.0.2"),
            (parse_arch_test, ARCH_TEST, "0.20"),
            (parse_dtc, DTC, "1.6.1"),
            (parse_shellcheck, SHELLCHECK, "0.9.0"),
            (parse_keepalived, KEEPALIVED, "2.2.7"),
            (parse_iproute2, IP, "6.1.0"),
            (parse_systemd, SYSTEMD, "254"),
            (
                parse_apt,
                "apt 2.6.1 (amd64)\nSupported modules:\n",
                "2.6.1",
            ),
            (
                parse_dpkg_deb,
                "Debian 'dpkg-deb' package archive backend version 1.21.22 (amd64).\n",
                "1.21.22",
            ),
        ];
        for (i, (parse, text, want)) in cases.iter().enumerate() {
            assert_eq!(parse(text), v(want), "case {i}: {text}");
        }
        assert_eq!(parse_iproute2(IP_OLD), None);
        assert_eq!(parse_mke2fs(""), None);
        assert_eq!(parse_qemu_system("sh: 1: qemu: not found"), None);
    }

    #[test]
    fn version_compare() {
        assert!(v("10.0.2").unwrap().at_least(&[9, 0]));
        assert!(v("9").unwrap().at_least(&[9, 0]));
        assert!(!v("7.2.22").unwrap().at_least(&[9, 0]));
        assert!(v("1.47.2").unwrap().at_least(&[1, 47, 1]));
        assert!(!v("1.47.0").unwrap().at_least(&[1, 47, 1]));
        assert!(v("1.5.5").unwrap().at_least(&[1, 3]));
        assert!(!v("1.2.9").unwrap().at_least(&[1, 3]));
        assert_eq!(v("v2.2.7"), Some(Version(vec![2, 2, 7])));
        assert_eq!(v("10.0.2+ds-2"), Some(Version(vec![10, 0, 2])));
        assert_eq!(v("254"), Some(Version(vec![254])));
        assert_eq!(v("x1"), None);
        assert_eq!(v("1.47.2").unwrap().to_string(), "1.47.2");
        assert_eq!(format_min(&[9, 0]), "9.0");
    }

    #[test]
    fn table_is_consistent() {
        let mut names: Vec<&str> = TOOLS.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TOOLS.len(), "duplicate tool names");
        for t in TOOLS {
            assert!(!t.package.is_empty() && !t.purpose.is_empty(), "{}", t.name);
        }
        assert_eq!(
            tool("qemu-system-aarch64").unwrap().min_version,
            Some(&[9u32, 0][..])
        );
        assert_eq!(tool("mke2fs").unwrap().package, "e2fsprogs");
        assert!(tool("no-such").is_none());
        let pkgs = packages_for([
            tool("mke2fs").unwrap(),
            tool("e2fsck").unwrap(),
            tool("ip").unwrap(),
        ]);
        assert_eq!(pkgs, vec!["e2fsprogs", "iproute2"]);
    }

    #[test]
    fn search_dirs_adds_sbin() {
        let d = search_dirs(Some("/home/u/bin:/usr/bin::/bin"));
        assert_eq!(d[0], PathBuf::from("/home/u/bin"));
        assert!(d.contains(&PathBuf::from("/usr/sbin")));
        assert_eq!(
            d.iter()
                .filter(|p| p.as_path() == Path::new("/usr/bin"))
                .count(),
            1
        );
        assert!(search_dirs(None).contains(&PathBuf::from("/sbin")));
    }

    /// Runs the real version commands of whatever is installed: each parser
    /// must understand what the installed tool prints.
    #[test]
    fn installed_tools_parse() {
        for t in TOOLS {
            if let Probe::Command {
                program,
                args,
                parse,
            } = t.probe
            {
                if let Some(path) = find_executable(program) {
                    let out = version_output(&path, args).unwrap();
                    assert!(parse(&out).is_some(), "{program}: cannot parse {out:?}");
                }
            }
        }
    }

    #[test]
    fn version_output_merges_stderr() {
        let out =
            version_output(Path::new("sh"), &["-c", "echo out; echo err >&2; exit 3"]).unwrap();
        assert_eq!(out, "out\nerr\n");
    }
}

//! Running binaries of a foreign architecture (arm64 maintainer scripts
//! during `mmdebstrap --arch=arm64` on an amd64 host) through qemu-user and
//! the kernel's binfmt_misc.
//!
//! The registration lives in the running kernel only: it is gone after a
//! reboot (these machines do not run systemd-binfmt), so a build calls
//! [`ensure_foreign_arch`] before every foreign-architecture bootstrap. It
//! is cheap when the architecture already works.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::tools;
use crate::util::CommandExt;

/// Where binfmt_misc is mounted.
pub const BINFMT_DIR: &str = "/proc/sys/fs/binfmt_misc";
/// Where qemu-user-binfmt (pulled in by qemu-user-static) puts its rules.
pub const BINFMT_CONF_DIR: &str = "/usr/lib/binfmt.d";

/// The Debian architecture of the machine running habuild, if it is one
/// habuild knows.
pub fn host_arch() -> Option<&'static str> {
    debian_arch(std::env::consts::ARCH)
}

/// Rust's name of an architecture → Debian's (`x86_64` → `amd64`).
pub fn debian_arch(rust_arch: &str) -> Option<&'static str> {
    match rust_arch {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}

/// Debian's name of an architecture → qemu's (`arm64` → `aarch64`).
pub fn qemu_arch(arch: &str) -> Result<&'static str> {
    match arch {
        "arm64" => Ok("aarch64"),
        "amd64" => Ok("x86_64"),
        other => {
            bail!("unsupported architecture `{other}` (habuild builds arm64 and amd64 images)")
        }
    }
}

/// One binfmt_misc rule, as written to `register`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BinfmtRule {
    /// The entry's name (`qemu-aarch64`): its file under [`BINFMT_DIR`].
    pub name: String,
    /// The whole `:name:type:offset:magic:mask:interpreter:flags` line.
    pub line: String,
}

/// The rule of a `binfmt.d` file: its first line that is neither empty nor a
/// comment (`#` or `;`). The first character of a rule is its delimiter.
pub fn parse_binfmt_conf(text: &str) -> Option<BinfmtRule> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))?;
    let delim = line.chars().next()?;
    let name = line[delim.len_utf8()..].split(delim).next()?;
    if name.is_empty() {
        return None;
    }
    Some(BinfmtRule {
        name: name.to_string(),
        line: line.to_string(),
    })
}

/// Whether a `/proc/self/mounts` text has binfmt_misc mounted at `dir`.
pub fn binfmt_mounted(mounts: &str, dir: &str) -> bool {
    mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_src, target, fstype) = (f.next(), f.next(), f.next());
        target == Some(dir) && fstype == Some("binfmt_misc")
    })
}

/// Whether a binfmt_misc entry file's text says it is enabled.
pub fn entry_enabled(entry: &str) -> bool {
    entry.lines().next().map(str::trim) == Some("enabled")
}

fn missing_conf(conf: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} is missing: install package qemu-user-static (with qemu 10 from \
         bookworm-backports it pulls in qemu-user-binfmt, which ships this file), \
         e.g. with `habuild doctor --install`",
        conf.display()
    )
}

/// What [`register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// Written to `register` now.
    Registered,
    /// The entry existed and was disabled: enabled it.
    Enabled,
    /// The entry existed and was enabled (or the kernel said "File exists").
    AlreadyRegistered,
}

/// Registers the rule of `conf` in the binfmt_misc filesystem at
/// `binfmt_dir` (which must be mounted). Tolerates an existing entry.
pub fn register(conf: &Path, binfmt_dir: &Path) -> Result<Registration> {
    if !conf.is_file() {
        return Err(missing_conf(conf));
    }
    let text =
        std::fs::read_to_string(conf).with_context(|| format!("reading {}", conf.display()))?;
    let rule = parse_binfmt_conf(&text)
        .with_context(|| format!("no binfmt rule in {}", conf.display()))?;

    let entry = binfmt_dir.join(&rule.name);
    if entry.exists() {
        let state = std::fs::read_to_string(&entry)
            .with_context(|| format!("reading {}", entry.display()))?;
        if entry_enabled(&state) {
            return Ok(Registration::AlreadyRegistered);
        }
        std::fs::write(&entry, "1").with_context(|| format!("enabling {}", entry.display()))?;
        return Ok(Registration::Enabled);
    }

    let register = binfmt_dir.join("register");
    match std::fs::write(&register, rule.line.as_bytes()) {
        Ok(()) => Ok(Registration::Registered),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(Registration::AlreadyRegistered),
        Err(e) => Err(e).with_context(|| {
            format!(
                "registering {} from {} in {} (needs root; the interpreter named in the rule must exist)",
                rule.name,
                conf.display(),
                register.display()
            )
        }),
    }
}

/// Whether the host can run binaries of `arch` now: `arch-test ARCH` where
/// installed, else an enabled binfmt entry for its qemu.
fn can_run(arch: &str) -> Result<bool> {
    if host_arch() == Some(arch) {
        return Ok(true);
    }
    if let Some(arch_test) = tools::find_executable("arch-test") {
        return Ok(Command::new(arch_test).arg(arch).output_checked().is_ok());
    }
    let entry = Path::new(BINFMT_DIR).join(format!("qemu-{}", qemu_arch(arch)?));
    Ok(std::fs::read_to_string(entry).is_ok_and(|t| entry_enabled(&t)))
}

/// Makes sure binfmt_misc is mounted at [`BINFMT_DIR`].
fn ensure_mounted() -> Result<()> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if binfmt_mounted(&mounts, BINFMT_DIR) {
        return Ok(());
    }
    log::info!("mounting binfmt_misc at {BINFMT_DIR}");
    Command::new("mount")
        .args(["-t", "binfmt_misc", "binfmt_misc", BINFMT_DIR])
        .run_checked()
        .with_context(|| format!("mounting binfmt_misc at {BINFMT_DIR} (needs root)"))
}

/// The `binfmt.d` file for `arch`'s qemu.
pub fn conf_path(arch: &str) -> Result<PathBuf> {
    Ok(Path::new(BINFMT_CONF_DIR).join(format!("qemu-{}.conf", qemu_arch(arch)?)))
}

/// Makes sure the host can run binaries of `arch` (`"arm64"` or `"amd64"`):
/// nothing to do for the host's own architecture or when it already works;
/// otherwise mounts binfmt_misc if needed and registers qemu-user's rule.
/// Needs root only when something has to change.
pub fn ensure_foreign_arch(arch: &str) -> Result<()> {
    qemu_arch(arch)?;
    if can_run(arch)? {
        return Ok(());
    }
    let conf = conf_path(arch)?;
    if !conf.is_file() {
        return Err(missing_conf(&conf));
    }
    ensure_mounted()?;
    let how = register(&conf, Path::new(BINFMT_DIR))
        .with_context(|| format!("enabling {arch} binaries through qemu-user"))?;
    log::info!("binfmt for {arch}: {how:?}");
    if !can_run(arch)? {
        bail!(
            "registered {} in {BINFMT_DIR}, but `arch-test {arch}` still fails: is the \
             interpreter of that rule installed (package qemu-user-static), and does this \
             container allow binfmt_misc?",
            conf.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    /// `/usr/lib/binfmt.d/qemu-aarch64.conf` from qemu-user-binfmt 10.0.2.
    const CONF: &str = "# binfmt configuration for /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n\
:qemu-aarch64:M::\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00:\
\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:\
/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF\n";

    #[test]
    fn parses_conf() {
        let rule = parse_binfmt_conf(CONF).unwrap();
        assert_eq!(rule.name, "qemu-aarch64");
        assert!(rule.line.starts_with(":qemu-aarch64:M::\\x7f"));
        assert!(rule
            .line
            .ends_with(":/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF"));
        assert_eq!(parse_binfmt_conf("# only\n\n; comments\n"), None);
        assert_eq!(parse_binfmt_conf(",x,E,,exe,,/bin/w,\n").unwrap().name, "x");
    }

    #[test]
    fn mounts() {
        let m = "proc /proc proc rw 0 0\nbinfmt_misc /proc/sys/fs/binfmt_misc binfmt_misc rw,relatime 0 0\n";
        assert!(binfmt_mounted(m, BINFMT_DIR));
        assert!(!binfmt_mounted("proc /proc proc rw 0 0\n", BINFMT_DIR));
        assert!(!binfmt_mounted(
            "x /proc/sys/fs/binfmt_misc tmpfs rw 0 0\n",
            BINFMT_DIR
        ));
    }

    #[test]
    fn entry_state() {
        assert!(entry_enabled(
            "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\n"
        ));
        assert!(!entry_enabled("disabled\ninterpreter /x\n"));
    }

    #[test]
    fn arch_names() {
        assert_eq!(debian_arch("x86_64"), Some("amd64"));
        assert_eq!(debian_arch("aarch64"), Some("arm64"));
        assert_eq!(qemu_arch("arm64").unwrap(), "aarch64");
        assert!(qemu_arch("riscv64").is_err());
        assert!(ensure_foreign_arch("mips").is_err());
        assert_eq!(
            conf_path("arm64").unwrap(),
            PathBuf::from("/usr/lib/binfmt.d/qemu-aarch64.conf")
        );
    }

    #[test]
    fn missing_conf_names_package() {
        let dir = tempfile::tempdir().unwrap();
        let err = register(&dir.path().join("qemu-aarch64.conf"), dir.path()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("qemu-user-static"), "{msg}");
        assert!(msg.contains("qemu-aarch64.conf is missing"), "{msg}");
    }

    /// Against a plain directory standing in for binfmt_misc: a new rule is
    /// written to `register`, an enabled entry is left alone, a disabled one
    /// is enabled.
    #[test]
    fn register_in_fake_binfmt_dir() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("qemu-aarch64.conf");
        std::fs::write(&conf, CONF).unwrap();
        let fs = dir.path().join("binfmt");
        std::fs::create_dir(&fs).unwrap();

        assert_eq!(register(&conf, &fs).unwrap(), Registration::Registered);
        let written = std::fs::read_to_string(fs.join("register")).unwrap();
        assert_eq!(written, parse_binfmt_conf(CONF).unwrap().line);

        std::fs::write(fs.join("qemu-aarch64"), "enabled\n").unwrap();
        assert_eq!(
            register(&conf, &fs).unwrap(),
            Registration::AlreadyRegistered
        );

        std::fs::write(fs.join("qemu-aarch64"), "disabled\n").unwrap();
        assert_eq!(register(&conf, &fs).unwrap(), Registration::Enabled);
        assert_eq!(
            std::fs::read_to_string(fs.join("qemu-aarch64")).unwrap(),
            "1"
        );
    }

    #[test]
    fn host_arch_needs_nothing() {
        if let Some(arch) = host_arch() {
            ensure_foreign_arch(arch).unwrap();
        }
    }

    /// The real host. On a build machine set up by `habuild doctor
    /// --install` (and on this one, registered by hand), arm64 works and a
    /// second registration is "already registered". Skipped where qemu's
    /// binfmt rule is not installed or we are not root.
    #[test]
    fn host_arm64_works_or_is_registered() {
        let conf = conf_path("arm64").unwrap();
        let root = super::super::setup::is_root().unwrap_or(false);
        if host_arch() != Some("amd64") || !conf.is_file() || !root {
            eprintln!("skipped: needs an amd64 host, root and {}", conf.display());
            return;
        }
        ensure_foreign_arch("arm64").unwrap();
        // Registering again is fine.
        let again = register(&conf, Path::new(BINFMT_DIR)).unwrap();
        assert_eq!(again, Registration::AlreadyRegistered);
        assert!(can_run("arm64").unwrap());
    }
}

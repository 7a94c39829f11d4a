//! `habuild doctor --install`: makes a Debian host ready to build and test.
//!
//! As root on Debian 12 (bookworm): adds a `bookworm-backports` apt source
//! on the host's own Debian mirror (QEMU 10 and e2fsprogs 1.47.2 come from
//! there), installs the packages of every missing or too-old tool with
//! `apt-get install -t bookworm-backports`, then registers qemu-user for
//! arm64 binaries. On trixie or newer the release itself is new enough and
//! no backports source is added.
//!
//! Idempotent and fast when nothing is missing: apt is not run at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::binfmt;
use super::doctor::{self, ToolStatus};
use crate::debian::host_sources::{self, EntryType, SourceEntry, MIRROR_ENV};
use crate::util::progress::Step;
use crate::util::CommandExt;

/// The apt source file habuild writes.
pub const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/habuild-backports.sources";
/// Debian's archive keyring (package debian-archive-keyring).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The fields of `/etc/os-release` habuild looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub id: String,
    pub id_like: String,
    pub version_codename: String,
    pub pretty_name: String,
}

/// Parses `/etc/os-release` (`KEY=value`, values optionally quoted).
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut os = OsRelease::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value
            .trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_string();
        match key.trim() {
            "ID" => os.id = value,
            "ID_LIKE" => os.id_like = value,
            "VERSION_CODENAME" => os.version_codename = value,
            "PRETTY_NAME" => os.pretty_name = value,
            _ => {}
        }
    }
    os
}

/// The backports suite to install from on this OS: `Some("bookworm-backports")`
/// on Debian 12, `None` on trixie and newer (and sid), an error elsewhere.
pub fn backports_suite(os: &OsRelease) -> Result<Option<String>> {
    let name = if os.pretty_name.is_empty() {
        os.id.as_str()
    } else {
        os.pretty_name.as_str()
    };
    if os.id != "debian" {
        bail!(
            "`habuild doctor --install` supports Debian only, this host is {name:?}; install \
             the packages listed by `habuild doctor` with your distribution's tools"
        );
    }
    match os.version_codename.as_str() {
        "bookworm" => Ok(Some("bookworm-backports".to_string())),
        "stretch" | "buster" | "bullseye" => {
            bail!("{name} is too old for habuild: use Debian 12 (bookworm) or newer")
        }
        _ => Ok(None),
    }
}

/// The effective uid from `/proc/self/status` (`Uid: real effective ...`).
pub fn parse_effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
}

/// Whether habuild runs as root.
pub fn is_root() -> Result<bool> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    Ok(parse_effective_uid(&status) == Some(0))
}

/// The deb822 text of the backports source habuild writes.
pub fn render_backports_sources(mirror: &str, suite: &str) -> String {
    format!(
        "# Written by `habuild doctor --install`: newer qemu and e2fsprogs for habuild.\n\
         Types: deb\n\
         URIs: {mirror}\n\
         Suites: {suite}\n\
         Components: main\n\
         Signed-By: {DEBIAN_KEYRING}\n"
    )
}

/// Whether `entries` already have a binary source for `suite` with `main`.
pub fn has_suite(entries: &[SourceEntry], suite: &str) -> bool {
    entries.iter().any(|e| {
        e.kind == EntryType::Deb && e.suite == suite && e.components.iter().any(|c| c == "main")
    })
}

/// What [`install`] will do, decided without side effects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallPlan {
    /// The backports source to write first (path, content), if missing.
    pub write_source: Option<(PathBuf, String)>,
    /// `-t` for apt-get install.
    pub target_release: Option<String>,
    /// Packages to install; empty: apt is not run.
    pub packages: Vec<&'static str>,
}

/// Plans the installation from the probed tools, the OS, the host's apt
/// entries and the `HABUILD_DEBIAN_MIRROR` value (used only when the apt
/// sources have no Debian entry). Pure.
pub fn plan_install(
    statuses: &[ToolStatus],
    os: &OsRelease,
    entries: &[SourceEntry],
    env_mirror: Option<&str>,
) -> Result<InstallPlan> {
    let packages = doctor::packages_to_install(statuses);
    if packages.is_empty() {
        return Ok(InstallPlan {
            write_source: None,
            target_release: None,
            packages,
        });
    }
    let suite = backports_suite(os)?;
    let mut write_source = None;
    if let Some(suite) = &suite {
        if !has_suite(entries, suite) {
            let mirror = host_sources::debian_mirror(entries)
                .or_else(|| {
                    env_mirror
                        .map(|m| m.trim().trim_end_matches('/').to_string())
                        .filter(|m| !m.is_empty())
                })
                .with_context(|| {
                    format!(
                        "cannot add {suite}: the host's apt sources have no Debian archive entry \
                         to take the mirror from; set {MIRROR_ENV}=URL (e.g. \
                         http://mirror.example/debian) and run again"
                    )
                })?;
            write_source = Some((
                PathBuf::from(BACKPORTS_FILE),
                render_backports_sources(&mirror, suite),
            ));
        }
    }
    Ok(InstallPlan {
        write_source,
        target_release: suite,
        packages,
    })
}

/// The `apt-get install` arguments of a plan.
pub fn apt_install_args(plan: &InstallPlan) -> Vec<String> {
    let mut args: Vec<String> = [
        "-q",
        "-y",
        "-o",
        "Dpkg::Options::=--force-confdef",
        "-o",
        "Dpkg::Options::=--force-confold",
        "install",
    ]
    .map(String::from)
    .to_vec();
    if let Some(t) = &plan.target_release {
        args.extend(["-t".to_string(), t.clone()]);
    }
    args.extend(plan.packages.iter().map(|p| p.to_string()));
    args
}

fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive");
    c
}

fn write_atomically(path: &Path, content: &str) -> Result<()> {
    let dir = path.parent().context("source file path has no directory")?;
    let name = path.file_name().context("source file path has no name")?;
    // Not `*.sources`, so apt never reads a half-written file.
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    std::fs::write(&tmp, content).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// The foreign architecture a build on this host may need (`arm64` on an
/// amd64 host, and the other way round).
fn foreign_arch() -> Option<&'static str> {
    match binfmt::host_arch()? {
        "amd64" => Some("arm64"),
        _ => Some("amd64"),
    }
}

/// `habuild doctor --install`. Returns the tools' status afterwards.
///
/// When every tool is present and new enough, apt is not touched; only the
/// binfmt registration is checked (and made if a reboot dropped it).
pub fn install() -> Result<Vec<ToolStatus>> {
    let statuses = doctor::check_all();
    let os_text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let os = parse_os_release(&os_text);

    let needs_apt = !doctor::packages_to_install(&statuses).is_empty();
    if needs_apt {
        if !is_root()? {
            bail!(
                "`habuild doctor --install` must run as root to install: {} (try `sudo habuild doctor --install`)",
                doctor::packages_to_install(&statuses).join(" ")
            );
        }
        let entries = host_sources::host_entries().context("reading the host's apt sources")?;
        let env_mirror = std::env::var(MIRROR_ENV).ok();
        let plan = plan_install(&statuses, &os, &entries, env_mirror.as_deref())?;
        run_plan(&plan)?;
    }

    if let Some(arch) = foreign_arch() {
        let step = Step::start(format!("binfmt: {arch} binaries through qemu-user"));
        binfmt::ensure_foreign_arch(arch).with_context(|| format!("enabling {arch} binaries"))?;
        step.finish();
    }

    Ok(if needs_apt {
        doctor::check_all()
    } else {
        statuses
    })
}

fn run_plan(plan: &InstallPlan) -> Result<()> {
    if let Some((path, content)) = &plan.write_source {
        if !Path::new(DEBIAN_KEYRING).is_file() {
            bail!("{DEBIAN_KEYRING} is missing: `apt-get install debian-archive-keyring` first");
        }
        log::info!("writing {}", path.display());
        write_atomically(path, content)?;
    }
    let step = Step::start("apt-get update");
    apt_get()
        .args(["-q", "update"])
        .run_checked()
        .context("updating the package lists")?;
    step.finish();

    let step = Step::start(format!("apt-get install {}", plan.packages.join(" ")));
    apt_get()
        .args(apt_install_args(plan))
        .run_checked()
        .with_context(|| format!("installing {}", plan.packages.join(" ")))?;
    step.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::tools::{self, Version};
    use pretty_assertions::assert_eq;

    const BOOKWORM: &str =
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
        VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
    const UBUNTU: &str =
        "PRETTY_NAME=\"Ubuntu 24.04.2 LTS\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"24.04\"\n\
        VERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n";

    fn st(name: &str, version: Option<&str>) -> ToolStatus {
        ToolStatus::new(
            tools::tool(name).unwrap(),
            version.map(|_| PathBuf::from("/usr/bin/x")),
            version.and_then(Version::parse_prefix),
        )
    }

    fn debian_entries() -> Vec<SourceEntry> {
        host_sources::parse_deb822(
            "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
            "debian.sources",
        )
    }

    #[test]
    fn os_release() {
        let os = parse_os_release(BOOKWORM);
        assert_eq!(os.id, "debian");
        assert_eq!(os.version_codename, "bookworm");
        assert_eq!(
            backports_suite(&os).unwrap().as_deref(),
            Some("bookworm-backports")
        );

        let trixie = OsRelease {
            id: "debian".into(),
            version_codename: "trixie".into(),
            ..Default::default()
        };
        assert_eq!(backports_suite(&trixie).unwrap(), None);

        let msg = format!(
            "{:#}",
            backports_suite(&parse_os_release(UBUNTU)).unwrap_err()
        );
        assert!(
            msg.contains("Debian only") && msg.contains("Ubuntu 24.04.2 LTS"),
            "{msg}"
        );
        let bullseye = OsRelease {
            id: "debian".into(),
            version_codename: "bullseye".into(),
            ..Default::default()
        };
        assert!(backports_suite(&bullseye).is_err());
    }

    #[test]
    fn uid() {
        let status = "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_effective_uid(status), Some(0));
        assert_eq!(
            parse_effective_uid("Uid:\t1000\t1000\t1000\t1000\n"),
            Some(1000)
        );
        assert_eq!(parse_effective_uid("Name: x\n"), None);
    }

    #[test]
    fn backports_source_text() {
        let text = render_backports_sources("http://mirror.example/debian", "bookworm-backports");
        let parsed = host_sources::parse_deb822(&text, "habuild-backports.sources");
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].uri, "http://mirror.example/debian");
        assert_eq!(parsed[0].suite, "bookworm-backports");
        assert_eq!(parsed[0].signed_by.as_deref(), Some(DEBIAN_KEYRING));
        assert!(has_suite(&parsed, "bookworm-backports"));
        assert!(!has_suite(&parsed, "bookworm"));
    }

    #[test]
    fn plan_nothing_missing_skips_apt() {
        let s = vec![
            st("mmdebstrap", Some("1.5.5")),
            st("mke2fs", Some("1.47.2")),
        ];
        // Even on a non-Debian host: nothing to install, nothing to check.
        let plan = plan_install(&s, &parse_os_release(UBUNTU), &[], None).unwrap();
        assert_eq!(
            plan,
            InstallPlan {
                write_source: None,
                target_release: None,
                packages: vec![]
            }
        );
    }

    #[test]
    fn plan_adds_backports_on_same_mirror() {
        let s = vec![
            st("mke2fs", Some("1.47.0")),
            st("e2fsck", Some("1.47.0")),
            st("qemu-system-aarch64", None),
            st("mcopy", None),
        ];
        let os = parse_os_release(BOOKWORM);
        let plan = plan_install(
            &s,
            &os,
            &debian_entries(),
            Some("http://other.example/debian"),
        )
        .unwrap();
        let (path, text) = plan.write_source.clone().unwrap();
        assert_eq!(path, PathBuf::from(BACKPORTS_FILE));
        assert!(
            text.contains("URIs: http://mirror.example/debian\n"),
            "{text}"
        );
        assert_eq!(
            plan.packages,
            vec!["e2fsprogs", "qemu-system-arm", "mtools"]
        );
        assert_eq!(
            apt_install_args(&plan)[6..],
            [
                "install",
                "-t",
                "bookworm-backports",
                "e2fsprogs",
                "qemu-system-arm",
                "mtools"
            ]
        );

        // Backports already configured: nothing written.
        let mut entries = debian_entries();
        entries.extend(host_sources::parse_deb822(&text, "x.sources"));
        let plan = plan_install(&s, &os, &entries, None).unwrap();
        assert_eq!(plan.write_source, None);
        assert_eq!(plan.target_release.as_deref(), Some("bookworm-backports"));
    }

    #[test]
    fn plan_without_debian_entry_uses_env_or_explains() {
        let s = vec![st("qemu-system-aarch64", None)];
        let os = parse_os_release(BOOKWORM);
        let plan = plan_install(&s, &os, &[], Some("http://mirror.example/debian/")).unwrap();
        assert!(plan
            .write_source
            .unwrap()
            .1
            .contains("URIs: http://mirror.example/debian\n"));
        let msg = format!("{:#}", plan_install(&s, &os, &[], None).unwrap_err());
        assert!(msg.contains(MIRROR_ENV), "{msg}");
    }

    #[test]
    fn plan_on_trixie_has_no_backports() {
        let s = vec![st("shellcheck", None)];
        let os = OsRelease {
            id: "debian".into(),
            version_codename: "trixie".into(),
            ..Default::default()
        };
        let plan = plan_install(&s, &os, &[], None).unwrap();
        assert_eq!(plan.write_source, None);
        assert_eq!(apt_install_args(&plan).last().unwrap(), "shellcheck");
        assert!(!apt_install_args(&plan).contains(&"-t".to_string()));
    }

    #[test]
    fn atomic_write() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.sources");
        write_atomically(&p, "a\n").unwrap();
        write_atomically(&p, "b\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "b\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// The real host: when every tool is present (this build machine),
    /// `install` does not touch apt and is quick.
    #[test]
    fn install_is_fast_when_everything_is_present() {
        let before = doctor::check_all();
        if !doctor::packages_to_install(&before).is_empty() || !is_root().unwrap() {
            eprintln!("skipped: some tools are missing here, or not root: install would run apt");
            return;
        }
        let started = std::time::Instant::now();
        let after = install().unwrap();
        let took = started.elapsed();
        eprintln!("habuild doctor --install with everything present: {took:?}");
        assert!(after.iter().all(ToolStatus::is_ok));
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
    }
}

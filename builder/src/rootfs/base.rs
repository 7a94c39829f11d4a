//! The base root filesystem: the distro's packages installed by mmdebstrap,
//! cached under a key of everything it depends on, so a build that changes
//! only configuration reuses it instead of reinstalling packages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cache;
use crate::debian::packages::{parse_dpkg_status, InstalledPackage};
use crate::debian::reach;
use crate::debian::sources::check_keyrings;
use crate::plan::BaseSpec;
use crate::util::cmd::run_streaming;
use crate::util::progress::Step;
use crate::util::CommandExt;

/// Bumped when the way habuild calls the bootstrapper changes, so old cache
/// entries stop matching. 3: pinned bootstrap epoch, clamped times, no host
/// resolv.conf/hostname. 4: the initramfs built once, at the end.
const RECIPE_VERSION: u32 = 4;

/// SOURCE_DATE_EPOCH the bootstrap runs with (2025-01-01), whatever the
/// image's epoch. Without it the base depends on the day it was built
/// (shadow's last-change day, initramfs times, file times), or on the epoch
/// of whichever build happened to fill the cache; with the image's epoch it
/// would have to be in the cache key, and the default epoch (now) would
/// then never hit the cache. A fixed one keeps the base a function of its
/// spec and the archive's content, shared by builds of any epoch.
pub const BASE_SOURCE_DATE_EPOCH: i64 = 1_735_689_600;

/// A base root filesystem in the cache.
#[derive(Debug, Clone)]
pub struct Base {
    pub key: String,
    pub tree: PathBuf,
    pub packages: Vec<InstalledPackage>,
    /// True when this build found the base in the cache.
    pub reused: bool,
}

/// Recorded next to a cached tree: what made it.
#[derive(Debug, Serialize, Deserialize)]
struct CacheRecord {
    key: String,
    recipe_version: u32,
    spec_json: String,
    packages: Vec<InstalledPackage>,
}

/// The cache key: sha256 over the spec, the recipe version and the contents
/// of every file the spec names (keyrings, local .debs), so a changed key
/// file or bundle gives a new base.
pub fn cache_key(spec: &BaseSpec) -> Result<String> {
    let mut h = Sha256::new();
    h.update(format!(
        "habuild-base-v{RECIPE_VERSION}-epoch{BASE_SOURCE_DATE_EPOCH}\n"
    ));
    // Local .debs are keyed by name and content, not by where they lie: the
    // same bundle unpacked in another directory is the same base.
    let mut keyed = spec.clone();
    keyed.local_debs = spec
        .local_debs
        .iter()
        .map(|p| PathBuf::from(p.file_name().unwrap_or_default()))
        .collect();
    h.update(serde_json::to_vec(&keyed).context("serialising the base spec")?);
    let files = spec
        .sources
        .iter()
        .map(|s| &s.signed_by)
        .chain(spec.local_debs.iter());
    for f in files {
        let bytes = std::fs::read(f)
            .with_context(|| format!("reading {} for the cache key", f.display()))?;
        h.update(Sha256::digest(&bytes));
    }
    Ok(hex::encode(&h.finalize()[..16]))
}

/// What a lock file requires of a base (see `lock`).
pub struct Pinned<'a> {
    /// The installed set (name, version, architecture) the base must have:
    /// a cached base with another set is bootstrapped again.
    pub packages: &'a [InstalledPackage],
    /// Runs before a bootstrap; fails when the archive would not give
    /// `packages` (minutes of bootstrap saved).
    pub before_bootstrap: &'a dyn Fn() -> Result<()>,
}

/// Returns the cached base for `spec`, bootstrapping it first if needed.
/// The base's cache key and whether the cache holds a finished entry for
/// it (`habuild image --dry-run`); reads only, creates nothing. A hit is
/// still checked against its seal when a build uses it.
pub fn cached(spec: &BaseSpec, cache_dir: &Path) -> Result<(String, bool)> {
    let key = cache_key(spec)?;
    let entry = cache_dir.join("base").join(&key);
    let hit = entry.join(cache::RECORD).is_file() && entry.join(cache::TREE).is_dir();
    Ok((key, hit))
}

pub fn ensure_base(spec: &BaseSpec, cache_dir: &Path, pinned: Option<&Pinned>) -> Result<Base> {
    check_keyrings(&spec.sources)?;
    let key = cache_key(spec)?;
    let entry = cache_dir.join("base").join(&key);
    // Two builds needing the same base (parallel tests, `--all`) must not
    // bootstrap it twice into the same place: the second waits for the first.
    let _lock = crate::util::filelock::lock_waiting(
        &cache_dir.join("base").join(format!("{key}.lock")),
        &format!("another build of base {key}"),
    )?;
    let tree = entry.join(cache::TREE);
    let record_path = entry.join(cache::RECORD);
    if record_path.is_file() && tree.is_dir() && sound(&entry, &key)? {
        let record: CacheRecord = serde_json::from_slice(
            &std::fs::read(&record_path)
                .with_context(|| format!("reading {}", record_path.display()))?,
        )
        .with_context(|| {
            format!(
                "parsing {} (delete the directory to rebuild it)",
                record_path.display()
            )
        })?;
        // The key leaves out the archive's state; a lock decides whether
        // the state this base was bootstrapped from is the right one.
        match pinned {
            Some(p) if record.packages != p.packages => eprintln!(
                "  the cached base {key} has other package versions than the lock: building it again if the archive gives the locked ones"
            ),
            _ => {
                log::info!(
                    "base root filesystem {key} found in the cache ({})",
                    entry.display()
                );
                return Ok(Base {
                    key,
                    tree,
                    packages: record.packages,
                    reused: true,
                });
            }
        }
    }
    if let Some(p) = pinned {
        (p.before_bootstrap)()?;
    }

    let step = Step::start(format!("checking package sources ({})", spec.sources.len()));
    reach::check_sources(&spec.sources, Duration::from_secs(10))?;
    step.finish();

    crate::host::binfmt::ensure_foreign_arch(spec.arch.debian_name())
        .context("preparing to run the target architecture's maintainer scripts")?;

    let partial = cache_dir.join("base").join(format!("{key}.partial"));
    if partial.exists() {
        // A bootstrap killed hard leaves /proc, /sys and /dev mounted inside
        // its tree: unmount them first, or removing the tree would reach
        // into the host's filesystems.
        unmount_under(&partial)?;
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the leftover {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let partial_tree = partial.join(cache::TREE);

    let step = Step::start(format!(
        "bootstrapping {} {} ({} packages)",
        spec.distro,
        spec.arch.debian_name(),
        spec.packages.len() + spec.local_debs.len()
    ));
    let mut cmd = mmdebstrap_command(spec, &partial_tree, pinned.is_some());
    run_streaming(&mut cmd, |line| {
        if let Some(msg) = line.strip_prefix("I: ") {
            step.detail(msg);
        }
    })
    .with_context(|| {
        format!(
            "bootstrapping the {} base root filesystem for {}",
            spec.distro,
            spec.arch.debian_name()
        )
    })?;
    step.finish();
    // Files the bootstrap wrote carry the time it ran; clamped, the tree is
    // the same whenever it is built, even for an image epoch after that time.
    clamp_times(&partial_tree, BASE_SOURCE_DATE_EPOCH)
        .with_context(|| format!("clamping file times under {}", partial_tree.display()))?;

    let status_path = partial_tree.join("var/lib/dpkg/status");
    let status = std::fs::read_to_string(&status_path)
        .with_context(|| format!("reading {}", status_path.display()))?;
    let packages = parse_dpkg_status(&status);
    let record = CacheRecord {
        key: key.clone(),
        recipe_version: RECIPE_VERSION,
        spec_json: serde_json::to_string_pretty(spec)?,
        packages: packages.clone(),
    };
    std::fs::write(
        partial.join(cache::RECORD),
        serde_json::to_vec_pretty(&record)?,
    )
    .with_context(|| format!("writing the cache record in {}", partial.display()))?;
    let step = Step::start("recording the base's content digest");
    cache::seal(&partial)
        .with_context(|| format!("recording the content digest of {}", partial.display()))?;
    step.finish();
    if entry.exists() {
        std::fs::remove_dir_all(&entry)
            .with_context(|| format!("removing the incomplete cache entry {}", entry.display()))?;
    }
    // The entry appears complete or not at all.
    std::fs::rename(&partial, &entry)
        .with_context(|| format!("moving {} to {}", partial.display(), entry.display()))?;
    Ok(Base {
        key,
        tree,
        packages,
        reused: false,
    })
}

/// Whether the cached entry may be used; says why not when it may not.
fn sound(entry: &Path, key: &str) -> Result<bool> {
    let step = Step::start("checking the cached base's content digest");
    let health = cache::check(entry)
        .with_context(|| format!("checking the cached base {}", entry.display()))?;
    step.finish();
    match health {
        cache::Health::Sound => return Ok(true),
        cache::Health::Unsealed => eprintln!(
            "  the cached base {key} has no content digest (made by an older habuild), so it cannot be checked: building it again"
        ),
        cache::Health::Damaged(what) => eprintln!(
            "  the cached base {key} is damaged, so it is not used; building it again. What differs from when it was made:\n    {}",
            what.join("\n    ")
        ),
    }
    Ok(false)
}

/// Mount points at or below `dir`, deepest first, from /proc/self/mountinfo
/// text (field 5 is the mount point, with spaces escaped as \040).
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(dir))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    found
}

pub(crate) fn unmount_under(dir: &Path) -> Result<()> {
    let info =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    for m in mounts_under(&info, dir) {
        Command::new("umount")
            .arg("--lazy")
            .arg(&m)
            .run_checked()
            .with_context(|| {
                format!(
                    "unmounting {} left by an interrupted bootstrap",
                    m.display()
                )
            })?;
    }
    Ok(())
}

/// `pinned`: the build has a lock, so a Release file past its
/// `Valid-Until` (a snapshot mirror's) is accepted; the lock checks what
/// gets installed (see `lock::apt::EXPIRED_RELEASE_OPTION`). Without a
/// lock the command is unchanged.
pub fn mmdebstrap_command(spec: &BaseSpec, target: &Path, pinned: bool) -> Command {
    let mut cmd = Command::new("mmdebstrap");
    cmd.arg("--mode=root")
        .arg(format!("--arch={}", spec.arch.debian_name()))
        .arg("--variant=minbase")
        .arg(format!("--include={}", spec.packages.join(",")))
        // Documentation is not needed on an appliance; copyright files stay.
        .arg("--dpkgopt=path-exclude=/usr/share/man/*")
        .arg("--dpkgopt=path-exclude=/usr/share/doc/*")
        .arg("--dpkgopt=path-include=/usr/share/doc/*/copyright")
        .arg("--dpkgopt=path-exclude=/usr/share/locale/*")
        .arg("--aptopt=Acquire::Retries \"2\"")
        .arg("--aptopt=Acquire::http::Timeout \"30\"")
        .arg("--aptopt=Acquire::https::Timeout \"30\"")
        // Never install without verified signatures, whatever the host says.
        .arg("--aptopt=APT::Get::AllowUnauthenticated \"false\"");
    if pinned {
        cmd.arg(format!(
            "--aptopt={}",
            crate::debian::apt::EXPIRED_RELEASE_OPTION
        ));
    }
    cmd.arg(format!("--essential-hook={DEFER_INITRAMFS}"));
    if !spec.local_debs.is_empty() {
        // The offline bundle: apt inside the new system installs the .debs
        // (resolving their dependencies from the verified archive). Passing
        // .deb paths to --include fails in root mode: apt stages them in the
        // host's /tmp, which dpkg in the chroot cannot see.
        let mut copy_in = String::from("copy-in");
        for deb in &spec.local_debs {
            copy_in.push(' ');
            copy_in.push_str(&deb.display().to_string());
        }
        copy_in.push_str(" /var/cache/habuild-bundle");
        cmd.arg("--customize-hook=mkdir -p \"$1/var/cache/habuild-bundle\"")
            .arg(format!("--customize-hook={copy_in}"))
            // The glob must expand inside the chroot, not on the host.
            .arg("--customize-hook=chroot \"$1\" sh -c \"DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends /var/cache/habuild-bundle/*.deb\"")
            .arg("--customize-hook=rm -rf \"$1/var/cache/habuild-bundle\"");
    }
    if pinned {
        // --aptopt lands in the image's apt configuration too; the image's
        // own apt must keep refusing expired Release files.
        cmd.arg(
            "--customize-hook=sed -i '/Check-Valid-Until/d' \"$1/etc/apt/apt.conf.d/99mmdebstrap\"",
        );
    }
    cmd.arg(format!("--customize-hook={BUILD_INITRAMFS_ONCE}"));
    // mmdebstrap copies these two from the build host; the overlays write
    // the node's own, so the base must not vary with the host.
    cmd.arg("--customize-hook=rm -f \"$1/etc/resolv.conf\" \"$1/etc/hostname\"")
        .env("SOURCE_DATE_EPOCH", BASE_SOURCE_DATE_EPOCH.to_string());
    cmd.arg(&spec.sources[0].suites[0]).arg(target);
    for s in &spec.sources {
        for line in s.lines() {
            cmd.arg(line);
        }
    }
    cmd
}

/// mmdebstrap essential hook (`$1` is the new root): until the end of the
/// bootstrap, update-initramfs is a stub that does nothing. Without it the
/// initramfs is built twice, by the kernel's postinst and again by
/// initramfs-tools' trigger (and again when a later apt call fires it), and
/// under qemu-user each build of an arm64 one takes about five minutes.
const DEFER_INITRAMFS: &str = r#"set -e
chroot "$1" dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.habuild --add /usr/sbin/update-initramfs
printf '#!/bin/sh\n# habuild-deferred-initramfs: built once when the bootstrap ends\nexit 0\n' >"$1/usr/sbin/update-initramfs"
chmod 0755 "$1/usr/sbin/update-initramfs"
"#;

/// mmdebstrap customize hook, after every package is in: the real
/// update-initramfs back, and one build for every installed kernel. When a
/// package wrote update-initramfs past the diversion, the stub is gone and
/// the initramfs was built as usual; building it once more keeps it current.
const BUILD_INITRAMFS_ONCE: &str = r#"set -e
d=/usr/sbin/update-initramfs
if grep -qs habuild-deferred-initramfs "$1$d"; then rm -f "$1$d"; fi
chroot "$1" dpkg-divert --quiet --local --rename --remove "$d"
if [ -x "$1$d" ]; then chroot "$1" update-initramfs -c -k all; fi
"#;

/// Lowers every access and modification time later than `epoch` to it
/// (symlinks themselves, not their targets).
fn clamp_times(tree: &Path, epoch: i64) -> Result<()> {
    use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};
    use std::os::unix::fs::MetadataExt;
    let at = |t: i64, ns: i64| Timespec {
        tv_sec: t.min(epoch),
        tv_nsec: if t >= epoch { 0 } else { ns },
    };
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry.with_context(|| format!("walking {}", tree.display()))?;
        let m = std::fs::symlink_metadata(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        if m.atime() < epoch && m.mtime() < epoch {
            continue;
        }
        let times = Timestamps {
            last_access: at(m.atime(), m.atime_nsec()),
            last_modification: at(m.mtime(), m.mtime_nsec()),
        };
        rustix::fs::utimensat(CWD, entry.path(), &times, AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("setting the times of {}", entry.path().display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::board::Arch;
    use crate::debian::sources::AptSource;

    fn spec(dir: &Path, packages: &[&str]) -> BaseSpec {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("keyring.gpg"), "key").unwrap();
        std::fs::write(dir.join("kubeadm_1_arm64.deb"), "deb").unwrap();
        BaseSpec {
            distro: "debian-13".into(),
            arch: Arch::Arm64,
            sources: vec![AptSource {
                uri: "http://mirror.example/debian".into(),
                suites: vec!["trixie".into()],
                components: vec!["main".into()],
                signed_by: dir.join("keyring.gpg"),
            }],
            packages: packages.iter().map(|p| p.to_string()).collect(),
            local_debs: vec![dir.join("kubeadm_1_arm64.deb")],
        }
    }

    #[test]
    fn times_after_the_epoch_are_clamped_older_ones_kept() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let (new, old) = (t.path().join("new"), t.path().join("old"));
        std::fs::write(&new, "n").unwrap();
        std::fs::write(&old, "o").unwrap();
        let old_time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(old_time)
            .unwrap();
        std::os::unix::fs::symlink("new", t.path().join("link")).unwrap();
        clamp_times(t.path(), 5000).unwrap();
        let m = |p: &Path| std::fs::symlink_metadata(p).unwrap();
        assert_eq!((m(&new).mtime(), m(&new).atime()), (5000, 5000));
        assert_eq!(m(&t.path().join("link")).mtime(), 5000);
        assert_eq!(m(&old).mtime(), 1000);
        assert_eq!(m(t.path()).mtime(), 5000);
    }

    #[test]
    fn bootstrap_has_a_fixed_epoch_and_no_host_files() {
        let t = tempfile::tempdir().unwrap();
        let cmd = mmdebstrap_command(&spec(t.path(), &["systemd"]), t.path(), false);
        let epoch = cmd.get_envs().find(|(k, _)| *k == "SOURCE_DATE_EPOCH");
        assert_eq!(
            epoch.and_then(|(_, v)| v),
            Some(std::ffi::OsStr::new("1735689600"))
        );
        assert!(cmd
            .get_args()
            .any(|a| a.to_string_lossy().contains("rm -f \"$1/etc/resolv.conf\"")));
    }

    #[test]
    fn only_a_locked_bootstrap_accepts_expired_release_files_and_the_image_does_not() {
        let t = tempfile::tempdir().unwrap();
        let args = |pinned| {
            mmdebstrap_command(&spec(t.path(), &["systemd"]), t.path(), pinned)
                .get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        };
        let unpinned = args(false);
        assert!(!unpinned.iter().any(|a| a.contains("Check-Valid-Until")));
        let pinned = args(true);
        let opt = pinned
            .iter()
            .position(|a| a.starts_with("--aptopt=Acquire::Check-Valid-Until"))
            .expect("the option");
        let removal = pinned
            .iter()
            .position(|a| a.starts_with("--customize-hook=sed -i '/Check-Valid-Until/d'"))
            .expect("the removal hook");
        let bundle_install = pinned
            .iter()
            .position(|a| a.contains("apt-get install"))
            .unwrap();
        assert!(opt < removal && bundle_install < removal, "{pinned:?}");
    }

    #[test]
    fn the_initramfs_is_built_once_after_every_package_and_the_hooks_pass_shellcheck() {
        let t = tempfile::tempdir().unwrap();
        let args: Vec<String> = mmdebstrap_command(&spec(t.path(), &["systemd"]), t.path(), true)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |needle: &str| args.iter().position(|a| a.contains(needle)).unwrap();
        let defer = at("--divert /usr/sbin/update-initramfs.habuild --add");
        let once = at("update-initramfs -c -k all");
        assert!(args[defer].starts_with("--essential-hook="), "{args:?}");
        assert!(args[once].starts_with("--customize-hook="), "{args:?}");
        assert!(at("apt-get install") < once, "{args:?}");
        let dir = tempfile::tempdir().unwrap();
        for (name, script) in [
            ("defer.sh", DEFER_INITRAMFS),
            ("once.sh", BUILD_INITRAMFS_ONCE),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, script).unwrap();
            let sh = Command::new("sh").arg("-n").arg(&path).output().unwrap();
            assert!(sh.status.success(), "{name}: {sh:?}");
            match Command::new("shellcheck")
                .args(["-s", "sh"])
                .arg(&path)
                .output()
            {
                Ok(out) => assert!(
                    out.status.success(),
                    "{name}:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                ),
                Err(e) => eprintln!("SKIPPED shellcheck: {e}"),
            }
        }
    }

    #[test]
    fn finds_mounts_left_in_a_partial_tree() {
        let info = "22 1 0:21 / /proc rw - proc proc rw\n\
                    90 30 0:5 / /c/base/k.partial/rootfs/proc rw - proc proc rw\n\
                    91 90 0:6 / /c/base/k.partial/rootfs/dev/pts rw - devpts none rw\n\
                    92 30 0:7 / /c/base/k.partialx/rootfs/sys rw - sysfs sys rw\n";
        let m = mounts_under(info, Path::new("/c/base/k.partial"));
        assert_eq!(
            m,
            [
                PathBuf::from("/c/base/k.partial/rootfs/dev/pts"),
                PathBuf::from("/c/base/k.partial/rootfs/proc")
            ]
        );
    }

    #[test]
    fn key_follows_inputs_not_locations() {
        let t = tempfile::tempdir().unwrap();
        let a = spec(&t.path().join("a"), &["systemd"]);
        let mut b = spec(&t.path().join("b"), &["systemd"]);
        // Same keyring path for both: only the bundle moved.
        b.sources = a.sources.clone();
        assert_eq!(
            cache_key(&a).unwrap(),
            cache_key(&b).unwrap(),
            "a bundle in another directory is the same base"
        );
        std::fs::write(&b.local_debs[0], "another deb").unwrap();
        assert_ne!(
            cache_key(&a).unwrap(),
            cache_key(&b).unwrap(),
            "changed .deb content"
        );
        let c = spec(&t.path().join("a"), &["systemd", "keepalived"]);
        assert_ne!(
            cache_key(&a).unwrap(),
            cache_key(&c).unwrap(),
            "changed package set"
        );
        let before = cache_key(&a).unwrap();
        std::fs::write(&a.sources[0].signed_by, "other key").unwrap();
        assert_ne!(before, cache_key(&a).unwrap(), "changed signing keyring");
    }
}

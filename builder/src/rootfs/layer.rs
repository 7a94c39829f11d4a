//! The layer habuild adds on the cached base: a private copy of the base
//! tree, the boot partition's files gathered from the installed packages,
//! the rendered overlays and per-node identity. Output: two staged trees.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::context::RenderContext;
use super::overlay::{apply_overlay, apply_overlays, RenderedFile};
use crate::config::board::BootFile;
use crate::plan::NodePlan;
use crate::util::CommandExt;

#[derive(Debug, Clone)]
pub struct Staged {
    pub root_tree: PathBuf,
    pub boot_tree: PathBuf,
    /// Files habuild rendered or added, root side (paths inside the root fs).
    pub root_files: Vec<RenderedFile>,
    /// Files on the boot partition (paths inside the boot fs).
    pub boot_files: Vec<RenderedFile>,
    /// Bytes the root tree occupies (file data rounded to 4 KiB blocks).
    pub root_bytes: u64,
}

/// Stages the node's trees under `work` (which must not exist yet).
pub fn stage(
    plan: &NodePlan,
    base_tree: &Path,
    work: &Path,
    ctx: &RenderContext,
) -> Result<Staged> {
    let root = work.join("root");
    let boot = work.join("boot");
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    Command::new("cp")
        .arg("-a")
        .arg("--reflink=auto")
        .arg(base_tree)
        .arg(&root)
        .run_checked()
        .with_context(|| {
            format!(
                "copying the base root filesystem {} to {}",
                base_tree.display(),
                root.display()
            )
        })?;

    std::fs::create_dir_all(&boot).with_context(|| format!("creating {}", boot.display()))?;
    let board_distro = plan
        .board
        .for_distro(&plan.distro.name)
        .context("board/distro pairing was checked at planning")?;
    for bf in &board_distro.boot_files {
        gather_boot_file(&root, &boot, bf).with_context(|| {
            format!(
                "board {}: collecting boot files {:?} → {:?}",
                plan.board.name, bf.from, bf.to
            )
        })?;
    }

    // The boot partition is mounted over this directory at run time; what the
    // packages' hooks put here is shadowed, so the root copy stays empty.
    let boot_mount = root.join(plan.board.boot_mount.trim_start_matches('/'));
    if boot_mount.exists() {
        std::fs::remove_dir_all(&boot_mount)
            .with_context(|| format!("emptying {}", boot_mount.display()))?;
    }
    std::fs::create_dir_all(&boot_mount)
        .with_context(|| format!("creating {}", boot_mount.display()))?;

    let overlays: Vec<&Path> = plan.overlays.iter().map(PathBuf::as_path).collect();
    let root_files = apply_overlays(&overlays, &root, ctx)
        .with_context(|| format!("applying overlays {overlays:?}"))?;
    let mut boot_files = apply_overlay(&plan.boot_overlay, &boot, ctx)
        .with_context(|| format!("applying boot overlay {}", plan.boot_overlay.display()))?;
    set_identity(&root)?;
    super::formats::check_rendered(&root, &root_files)?;

    for required in &plan.board.required_boot_files {
        if !boot.join(required).is_file() {
            bail!("the boot partition lacks {required}, which board {} requires (check the board's boot_files for {} and the kernel/firmware packages)", plan.board.name, plan.distro.name);
        }
    }
    boot_files = list_tree_files(&boot, boot_files)?;
    let root_bytes = tree_bytes(&root)?;
    Ok(Staged {
        root_tree: root,
        boot_tree: boot,
        root_files,
        boot_files,
        root_bytes,
    })
}

/// Machine-wide identity must not be shared between nodes flashed from
/// images built off one base: clear it so each node creates its own at first boot.
fn set_identity(root: &Path) -> Result<()> {
    let machine_id = root.join("etc/machine-id");
    std::fs::write(&machine_id, b"")
        .with_context(|| format!("clearing {}", machine_id.display()))?;
    let dbus_id = root.join("var/lib/dbus/machine-id");
    if dbus_id.is_file() && !dbus_id.is_symlink() {
        std::fs::remove_file(&dbus_id)
            .with_context(|| format!("removing {}", dbus_id.display()))?;
    }
    let ssh = root.join("etc/ssh");
    if ssh.is_dir() {
        for e in std::fs::read_dir(&ssh).with_context(|| format!("listing {}", ssh.display()))? {
            let p = e?.path();
            if p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("ssh_host_"))
            {
                std::fs::remove_file(&p)
                    .with_context(|| format!("removing the shared SSH host key {}", p.display()))?;
            }
        }
    }
    Ok(())
}

/// Orders version-like strings the way people read them: 6.12.9 < 6.12.10.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let chunks = |s: &str| {
        let mut out: Vec<(bool, String)> = Vec::new();
        for c in s.chars() {
            let d = c.is_ascii_digit();
            match out.last_mut() {
                Some((ld, buf)) if *ld == d => buf.push(c),
                _ => out.push((d, c.to_string())),
            }
        }
        out
    };
    for (x, y) in chunks(a).iter().zip(chunks(b).iter()) {
        let ord = match (x.0, y.0) {
            (true, true) => {
                x.1.trim_start_matches('0')
                    .len()
                    .cmp(&y.1.trim_start_matches('0').len())
                    .then_with(|| x.1.trim_start_matches('0').cmp(y.1.trim_start_matches('0')))
            }
            _ => x.1.cmp(&y.1),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    a.len().cmp(&b.len())
}

fn gather_boot_file(root: &Path, boot: &Path, bf: &BootFile) -> Result<()> {
    let pattern = root.join(&bf.from);
    let pattern = pattern.to_str().context("non-UTF-8 path")?;
    let mut matches: Vec<PathBuf> = glob::glob(pattern)
        .with_context(|| format!("bad glob {pattern}"))?
        .filter_map(|r| r.ok())
        .collect();
    matches.sort_by(|a, b| version_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    if matches.is_empty() {
        if bf.optional {
            return Ok(());
        }
        bail!("nothing in the root filesystem matches {} (is the package that provides it in the board's package list?)", bf.from);
    }
    if bf.to.ends_with('/') {
        let dest_dir = boot.join(bf.to.trim_start_matches('/'));
        std::fs::create_dir_all(&dest_dir)
            .with_context(|| format!("creating {}", dest_dir.display()))?;
        for m in &matches {
            copy_following_links(
                m,
                &dest_dir.join(m.file_name().context("glob match has no name")?),
            )?;
        }
    } else {
        let newest = matches.last().expect("not empty");
        let dest = boot.join(bf.to.trim_start_matches('/'));
        // A file deeper in the partition (EFI/BOOT/BOOTX64.EFI) needs its directories.
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        copy_following_links(newest, &dest)?;
    }
    Ok(())
}

/// FAT has no symlinks: copy what links point to (resolved inside the
/// staged tree's own files, as the links are relative or already resolved).
fn copy_following_links(src: &Path, dest: &Path) -> Result<()> {
    let meta = std::fs::metadata(src).with_context(|| format!("reading {}", src.display()))?;
    if meta.is_dir() {
        Command::new("cp")
            .arg("-rL")
            .arg("--no-preserve=ownership")
            .arg(src)
            .arg(dest)
            .run_checked()?;
    } else {
        std::fs::copy(src, dest)
            .with_context(|| format!("copying {} to {}", src.display(), dest.display()))?;
    }
    Ok(())
}

/// Every regular file of the boot tree with its sha256; rendered entries
/// keep the mode they were rendered with.
fn list_tree_files(boot: &Path, rendered: Vec<RenderedFile>) -> Result<Vec<RenderedFile>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(boot).sort_by_file_name() {
        let e = e.with_context(|| format!("walking {}", boot.display()))?;
        if !e.file_type().is_file() {
            continue;
        }
        let rel = format!(
            "/{}",
            e.path().strip_prefix(boot).expect("inside").display()
        );
        if let Some(r) = rendered.iter().find(|r| r.path == rel) {
            out.push(r.clone());
            continue;
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = e.metadata()?.permissions().mode() & 0o7777;
        out.push(RenderedFile {
            path: rel,
            sha256: crate::util::digest::sha256_file(e.path())?,
            mode,
        });
    }
    Ok(out)
}

fn tree_bytes(root: &Path) -> Result<u64> {
    let mut total = 0u64;
    for e in walkdir::WalkDir::new(root) {
        let e = e.with_context(|| format!("walking {}", root.display()))?;
        let len = if e.file_type().is_file() {
            e.metadata()?.len()
        } else {
            0
        };
        total += len.div_ceil(4096) * 4096 + 256; // +inode
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically() {
        let mut v = vec![
            "vmlinuz-6.12.10-arm64",
            "vmlinuz-6.12.9-arm64",
            "vmlinuz-6.1.0-arm64",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            [
                "vmlinuz-6.1.0-arm64",
                "vmlinuz-6.12.9-arm64",
                "vmlinuz-6.12.10-arm64"
            ]
        );
    }

    #[test]
    fn gathers_newest_kernel_and_whole_firmware_dir() {
        let t = tempfile::tempdir().unwrap();
        let (root, boot) = (t.path().join("root"), t.path().join("boot"));
        std::fs::create_dir_all(root.join("boot")).unwrap();
        std::fs::create_dir_all(root.join("fw/overlays")).unwrap();
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.12.9"), "old").unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.12.10"), "new").unwrap();
        std::fs::write(root.join("fw/start4.elf"), "elf").unwrap();
        std::fs::write(root.join("fw/overlays/x.dtbo"), "dtbo").unwrap();
        gather_boot_file(
            &root,
            &boot,
            &BootFile {
                from: "boot/vmlinuz-*".into(),
                to: "vmlinuz".into(),
                optional: false,
            },
        )
        .unwrap();
        gather_boot_file(
            &root,
            &boot,
            &BootFile {
                from: "fw/*".into(),
                to: "/".into(),
                optional: false,
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(boot.join("vmlinuz")).unwrap(),
            "new"
        );
        gather_boot_file(
            &root,
            &boot,
            &BootFile {
                from: "boot/vmlinuz-6.12.9".into(),
                to: "EFI/BOOT/BOOTX64.EFI".into(),
                optional: false,
            },
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(boot.join("EFI/BOOT/BOOTX64.EFI")).unwrap(),
            "old",
            "a file's directories on the boot partition are created"
        );
        assert_eq!(
            std::fs::read_to_string(boot.join("overlays/x.dtbo")).unwrap(),
            "dtbo"
        );
        let err = gather_boot_file(
            &root,
            &boot,
            &BootFile {
                from: "nothing/*".into(),
                to: "/".into(),
                optional: false,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("nothing/*"));
        gather_boot_file(
            &root,
            &boot,
            &BootFile {
                from: "nothing/*".into(),
                to: "/".into(),
                optional: true,
            },
        )
        .unwrap();
    }
}

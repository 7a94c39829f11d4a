//! Who else uses a regular file target: loop devices backed by it (a
//! filesystem may be mounted from it) and processes holding it open for
//! writing. Read from /sys and /proc; the judgement (`check`) is pure.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::refusal::Refusal;
use super::target::{parse_devnum, DevNum, Mount};

/// An attached loop device and its backing file's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopBacking {
    /// "/dev/loop3".
    pub device: String,
    pub dev: DevNum,
    /// (st_dev, st_ino) of the backing file; None when its path no longer
    /// names it (deleted or renamed away).
    pub file: Option<(u64, u64)>,
}

/// A process's open file descriptor on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opener {
    pub pid: u32,
    pub command: String,
    pub writable: bool,
}

/// Refuses a target file (identity `id`) that backs a loop device or that
/// another process may write to.
pub fn check(
    path: &str,
    id: (u64, u64),
    loops: &[LoopBacking],
    mounts: &[Mount],
    openers: &[Opener],
) -> Result<(), Refusal> {
    if let Some(l) = loops.iter().find(|l| l.file == Some(id)) {
        return Err(Refusal::LoopBacking {
            path: path.to_string(),
            device: l.device.clone(),
            mounted: mounts
                .iter()
                .find(|m| m.dev == l.dev || m.source_dev == Some(l.dev))
                .map(|m| m.mount_point.clone()),
        });
    }
    if let Some(o) = openers.iter().find(|o| o.writable) {
        return Err(Refusal::OpenForWriting {
            path: path.to_string(),
            pid: o.pid,
            command: o.command.clone(),
        });
    }
    Ok(())
}

/// Whether an `fdinfo` text's `flags:` (octal) open the file for writing
/// (O_WRONLY or O_RDWR).
pub fn fdinfo_writable(fdinfo: &str) -> Option<bool> {
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(str::trim)?;
    let flags = u32::from_str_radix(flags, 8).ok()?;
    Some(flags & 0o3 != 0)
}

/// Every attached loop device under `sys` (/sys), with its backing file.
pub fn loops(sys: &Path) -> Result<Vec<LoopBacking>> {
    let block = sys.join("block");
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(&block).with_context(|| format!("listing {}", block.display()))?;
    for e in entries {
        let dir = e
            .with_context(|| format!("listing {}", block.display()))?
            .path();
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Detached loop devices have no backing_file.
        let Ok(backing) = std::fs::read_to_string(dir.join("loop/backing_file")) else {
            continue;
        };
        let Some(dev) = std::fs::read_to_string(dir.join("dev"))
            .ok()
            .and_then(|t| parse_devnum(&t))
        else {
            continue;
        };
        let file = std::fs::metadata(backing.trim_end_matches('\n'))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| (m.dev(), m.ino()));
        out.push(LoopBacking {
            device: format!("/dev/{name}"),
            dev,
            file,
        });
    }
    out.sort_by(|a, b| a.device.cmp(&b.device));
    Ok(out)
}

/// Every process under `proc` (/proc) with a descriptor open on the file
/// `id`. Processes we may not inspect (another user's, without root) and
/// ones that exit meanwhile are passed over.
pub fn openers(proc: &Path, id: (u64, u64)) -> Result<Vec<Opener>> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(proc).with_context(|| format!("listing {}", proc.display()))?;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let fd_dir = e.path().join("fd");
        let Ok(fds) = std::fs::read_dir(&fd_dir) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(m) = std::fs::metadata(fd.path()) else {
                continue;
            };
            if (m.dev(), m.ino()) != id || !m.is_file() {
                continue;
            }
            let info = std::fs::read_to_string(e.path().join("fdinfo").join(fd.file_name()))
                .unwrap_or_default();
            let command = std::fs::read_to_string(e.path().join("comm"))
                .map(|c| c.trim().to_string())
                .unwrap_or_default();
            out.push(Opener {
                pid,
                command,
                // Unreadable flags: assume the worst.
                writable: fdinfo_writable(&info).unwrap_or(true),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flash::target::parse_mountinfo;

    #[test]
    fn write_access_from_fdinfo_flags() {
        let info = |flags: &str| format!("pos:\t0\nflags:\t{flags}\nmnt_id:\t25\nino:\t12\n");
        assert_eq!(
            fdinfo_writable(&info("0100000")),
            Some(false),
            "O_RDONLY|O_LARGEFILE"
        );
        assert_eq!(fdinfo_writable(&info("0100001")), Some(true), "O_WRONLY");
        assert_eq!(
            fdinfo_writable(&info("02100002")),
            Some(true),
            "O_RDWR|O_CLOEXEC"
        );
        assert_eq!(fdinfo_writable("pos:\t0\n"), None);
    }

    #[test]
    fn loop_backing_and_writers_are_refused_readers_are_not() {
        let id = (2049, 77);
        let loops = [
            LoopBacking {
                device: "/dev/loop1".into(),
                dev: (7, 1),
                file: Some((2049, 5)),
            },
            LoopBacking {
                device: "/dev/loop2".into(),
                dev: (7, 2),
                file: Some(id),
            },
        ];
        let mounts = parse_mountinfo("30 1 7:2 / /mnt/data rw - ext4 /dev/loop2 rw\n");
        let err = check("f.raw", id, &loops, &mounts, &[]).unwrap_err();
        assert_eq!(
            err,
            Refusal::LoopBacking {
                path: "f.raw".into(),
                device: "/dev/loop2".into(),
                mounted: Some("/mnt/data".into())
            }
        );
        assert!(err.to_string().contains("losetup -d /dev/loop2"), "{err}");

        let reader = Opener {
            pid: 10,
            command: "cat".into(),
            writable: false,
        };
        let writer = Opener {
            pid: 11,
            command: "qemu-system-aar".into(),
            writable: true,
        };
        assert_eq!(
            check("f.raw", id, &loops[..1], &[], std::slice::from_ref(&reader)),
            Ok(())
        );
        let err = check("f.raw", id, &[], &[], &[reader, writer]).unwrap_err();
        assert!(
            matches!(err, Refusal::OpenForWriting { pid: 11, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("qemu-system-aar"), "{err}");
    }

    #[test]
    fn reads_this_process_open_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f");
        let f = std::fs::File::create(&p).unwrap();
        let m = std::fs::metadata(&p).unwrap();
        let found = openers(Path::new("/proc"), (m.dev(), m.ino())).unwrap();
        assert!(
            found
                .iter()
                .any(|o| o.pid == std::process::id() && o.writable),
            "{found:?}"
        );
        drop(f);
        loops(Path::new("/sys")).unwrap();
    }
}

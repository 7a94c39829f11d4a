//! Two things the binary carries from its source tree:
//! - the git commit habuild is built from (`HABUILD_GIT_COMMIT`), which the
//!   SBOM and `<node>.json` name; "unknown" outside a git checkout (a
//!   source tarball, `cargo install` from a copy). Set HABUILD_GIT_COMMIT to
//!   override (packagers);
//! - the data habuild reads at run time (boards, distro profiles and the
//!   seed manifest, overlays, guest scripts, the bundle's pins and package
//!   files, the test doubles), packed into one tar so that an installed
//!   habuild works from any directory. A tar, not `include_dir`: the
//!   overlays' executable bits must survive. The archive is deterministic
//!   (sorted, mtime 0, root-owned) so that its digest names the data.

use std::path::{Path, PathBuf};
use std::process::Command;

const DATA_DIRS: &[&str] = &[
    "boards",
    "manifests",
    "overlays",
    "qemu",
    "bundle",
    "tests/doubles",
];

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        // Cluster secrets never leave the machine they were made on.
        if name.ends_with(".secrets.toml") || name.starts_with('.') {
            continue;
        }
        let kind = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
            .file_type();
        // Symlinks (systemd's enablement links in the overlays) are data too:
        // is_file() follows them to the host's files and would drop them.
        if kind.is_dir() {
            files_under(&p, out);
        } else if kind.is_file() || kind.is_symlink() {
            out.push(p);
        }
    }
}

fn pack_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("data.tar");
    let mut builder = tar::Builder::new(Vec::new());
    for dir in DATA_DIRS {
        let top = root.join(dir);
        println!("cargo:rerun-if-changed={}", top.display());
        let mut files = Vec::new();
        files_under(&top, &mut files);
        for file in files {
            // Directories' mtimes alone do not change when a nested file
            // does: name every file.
            println!("cargo:rerun-if-changed={}", file.display());
            let rel = file.strip_prefix(&root).expect("under the root");
            if let Ok(target) = std::fs::read_link(&file) {
                let mut header = fixed_header(tar::EntryType::Symlink, 0o777, 0);
                builder
                    .append_link(&mut header, rel, &target)
                    .unwrap_or_else(|e| panic!("packing the link {}: {e}", rel.display()));
                continue;
            }
            let data =
                std::fs::read(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            let executable = {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(&file).unwrap().permissions().mode() & 0o111 != 0
            };
            let mode = if executable { 0o755 } else { 0o644 };
            let mut header = fixed_header(tar::EntryType::Regular, mode, data.len() as u64);
            builder
                .append_data(&mut header, rel, data.as_slice())
                .unwrap_or_else(|e| panic!("packing {}: {e}", rel.display()));
        }
    }
    let tar = builder.into_inner().expect("finishing the data tar");
    std::fs::write(&out, tar).unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

/// A header that names no time or owner, so the tar is the same wherever
/// it is built.
fn fixed_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn embed_commit() {
    println!("cargo:rerun-if-env-changed=HABUILD_GIT_COMMIT");
    let commit = std::env::var("HABUILD_GIT_COMMIT")
        .ok()
        .or_else(|| git(&["rev-parse", "HEAD"]));
    // Rebuild when HEAD moves: HEAD itself (a branch switch) and the refs
    // (a commit on the branch), in the worktree's and the common git dir.
    for dir in [
        git(&["rev-parse", "--git-dir"]),
        git(&["rev-parse", "--git-common-dir"]),
    ]
    .into_iter()
    .flatten()
    {
        for f in ["HEAD", "refs/heads", "packed-refs"] {
            let p = std::path::Path::new(&dir).join(f);
            if p.exists() {
                println!("cargo:rerun-if-changed={}", p.display());
            }
        }
    }
    if let Some(c) = commit {
        println!("cargo:rustc-env=HABUILD_GIT_COMMIT={c}");
    }
}

fn main() {
    embed_commit();
    pack_data();
}

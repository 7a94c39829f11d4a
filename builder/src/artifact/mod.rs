//! What a build hands to users next to the image: a bmap for fast flashing,
//! SHA256SUMS, and a firmware bundle for updating the boot partition.

pub mod bmap;
pub mod checksums;
pub mod compare;
pub mod compression;
pub mod firmware;
pub mod report;
pub mod sbom;
pub mod verify;

/// A temporary file for an artifact, readable by all once renamed into
/// place (tempfile's default 0600 is for secrets; artifacts are not).
pub(crate) fn artifact_temp(dir: &std::path::Path) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .permissions(std::fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
}

/// Where a node's interrupted publish waits to be completed: the journal
/// directory `pipeline::output` renames into `out_dir` at its commit point
/// (`habuild verify` fails for the node while it is there).
pub fn publishing_dir(out_dir: &std::path::Path, node: &str) -> std::path::PathBuf {
    out_dir.join(format!("{PUBLISHING_PREFIX}{node}"))
}

pub const PUBLISHING_PREFIX: &str = ".publishing-";

//! Extended attributes of staged files, for writers that copy them
//! themselves (mke2fs -d reads them on its own).

use std::path::Path;

use anyhow::{ensure, Context, Result};
use rustix::io::Errno;

/// All extended attributes of `path` itself (a symlink's own, not its
/// target's), sorted by name so the order never depends on the host.
pub(crate) fn read_all(path: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let listing = || format!("listing xattrs of {}", path.display());
    let names = match sized(
        || rustix::fs::llistxattr_query(path),
        |buf| rustix::fs::llistxattr(path, buf),
    ) {
        // A filesystem without xattrs simply has none to copy.
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        r => r.with_context(listing)?,
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let name = std::str::from_utf8(name)
            .with_context(|| format!("{}: xattr name is not UTF-8", path.display()))?;
        let value = sized(
            || rustix::fs::lgetxattr_query(path, name),
            |buf| rustix::fs::lgetxattr(path, name, buf),
        )
        .with_context(|| format!("reading xattr {name} of {}", path.display()))?;
        out.push((name.to_owned(), value));
    }
    out.sort();
    Ok(out)
}

/// Asks for a length, then reads that much; the value can grow between
/// the two calls (ERANGE), and is then asked for again.
fn sized(
    query: impl Fn() -> rustix::io::Result<usize>,
    read: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    loop {
        let mut buf = vec![0; query()?];
        match read(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(Errno::RANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Converts a POSIX ACL from the format the kernel hands out (version 2,
/// every entry tag u16, perm u16, id u32) to ext4's on-disk one (version 1,
/// entries without id for USER_OBJ, GROUP_OBJ, MASK and OTHER), as
/// libext2fs does for mke2fs. The kernel rejects ACLs stored unconverted.
pub(crate) fn acl_to_disk(vfs: &[u8]) -> Result<Vec<u8>> {
    const ACL_USER: u16 = 0x02;
    const ACL_GROUP: u16 = 0x08;
    ensure!(
        vfs.len() >= 4 && (vfs.len() - 4).is_multiple_of(8) && vfs[..4] == 2u32.to_le_bytes(),
        "not a version 2 POSIX ACL ({} bytes)",
        vfs.len()
    );
    let mut out = 1u32.to_le_bytes().to_vec();
    for entry in vfs[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        out.extend_from_slice(&entry[..4]);
        if tag == ACL_USER || tag == ACL_GROUP {
            out.extend_from_slice(&entry[4..]);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_conversion_drops_ids_of_short_entries() {
        let entry = |tag: u16, perm: u16, id: u32| {
            [tag.to_le_bytes(), perm.to_le_bytes()]
                .concat()
                .into_iter()
                .chain(id.to_le_bytes())
                .collect::<Vec<u8>>()
        };
        let vfs = [
            2u32.to_le_bytes().to_vec(),
            entry(0x01, 7, u32::MAX),
            entry(0x02, 5, 1000),
            entry(0x04, 5, u32::MAX),
            entry(0x10, 5, u32::MAX),
            entry(0x20, 0, u32::MAX),
        ]
        .concat();
        let disk = acl_to_disk(&vfs).unwrap();
        let want = [
            &1u32.to_le_bytes()[..],
            &[1, 0, 7, 0],
            &[2, 0, 5, 0, 0xe8, 3, 0, 0],
            &[4, 0, 5, 0],
            &[0x10, 0, 5, 0],
            &[0x20, 0, 0, 0],
        ]
        .concat();
        assert_eq!(disk, want);
        assert!(acl_to_disk(&[1, 0, 0, 0]).is_err());
        assert!(acl_to_disk(&vfs[..7]).is_err());
    }
}

//! ext4 from a staged directory tree by the pure-Rust `mkext4` crate instead
//! of `mke2fs -d`: same contract and parameters as [`super::ext4::make_ext4`]
//! (byte range of a disk image, label, UUID, hash seed, SOURCE_DATE_EPOCH),
//! about half of its time on a Debian root tree. habuild's default writer.
//!
//! What differs from our mke2fs output: no `64bit` and no `resize_inode`
//! features (growing the filesystem online then converts it to `meta_bg`),
//! names and symlink targets must be UTF-8, and a `/lost+found` in the tree
//! must be empty (the filesystem's own one is used). Everything else mirrors
//! what mke2fs does with the same tree (all-zero blocks of files become
//! holes), so both writers' per-file metadata match (the tests compare
//! them); and, unlike mkext4 alone, the journal, bitmaps and inode tables
//! are written out, so that a bmap flash leaves nothing stale in them.

use std::collections::HashMap;
use std::fs::{self, File};
use std::ops::Range;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, ensure, Context, Result};
use mkext4::{FsBuilder, InodeHandle, Meta, Options, RegionSink, SparseSeg, SpecialKind, ROOT};

use super::ext4::{check_request, prepare_tree, Ext4Params, BLOCK_SIZE};

/// The journal's inode number (fixed by the ext4 format).
const JOURNAL_INO: u32 = 8;

/// Makes an ext4 filesystem of `size` bytes at `offset` in `image`, filled
/// from `tree`, like [`super::ext4::make_ext4`] (same checks, same side
/// effect on the tree's access times).
pub fn make_ext4_native(
    image: &Path,
    offset: u64,
    size: u64,
    tree: &Path,
    params: &Ext4Params,
) -> Result<()> {
    check_request(offset, size, tree, params)?;
    prepare_tree(tree, params.source_date_epoch)?;

    let mut opts = Options::new(size, *params.uuid.as_bytes(), params.source_date_epoch);
    opts.label = Some(params.label.to_owned());
    // mke2fs -E hash_seed= stores the UUID's bytes as they are; mkext4
    // writes the four words little-endian, so split them that way.
    let seed = params.hash_seed.as_bytes();
    opts.hash_seed = std::array::from_fn(|i| {
        u32::from_le_bytes([
            seed[4 * i],
            seed[4 * i + 1],
            seed[4 * i + 2],
            seed[4 * i + 3],
        ])
    });
    let mut walk = Walk {
        fs: FsBuilder::new(opts).context("setting up the ext4 builder")?,
        epoch: params.source_date_epoch,
        links: HashMap::new(),
        fills: Vec::new(),
        sparse: scan_tree(tree)?,
    };
    // Like mke2fs -d (with root_owner=0:0): the root directory takes mode,
    // times and xattrs from the tree, but is always owned by root.
    let root_meta =
        fs::symlink_metadata(tree).with_context(|| format!("reading {}", tree.display()))?;
    let mut meta = walk.meta(&root_meta);
    (meta.uid, meta.gid) = (0, 0);
    walk.fs
        .set_meta(ROOT, meta)
        .context("setting the root directory's metadata")?;
    walk.xattrs(ROOT, tree)?;
    walk.dir(ROOT, tree, true)?;
    let Walk { fs, fills, .. } = walk;
    let layout = fs
        .seal()
        .with_context(|| format!("laying out {} in {size} bytes", tree.display()))?;

    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .with_context(|| format!("opening {}", image.display()))?;
    super::clear_range(&file, offset, size)
        .with_context(|| format!("clearing {size} bytes at {offset} in {}", image.display()))?;
    let mut sink = Sink {
        file: &file,
        base: offset,
        zeros: Vec::new(),
    };
    let mut writer = layout
        .writer(&mut sink)
        .with_context(|| format!("writing ext4 metadata into {}", image.display()))?;
    // mkext4 wants the data in declaration order (ascending disk offsets).
    for fill in &fills {
        let file =
            File::open(&fill.path).with_context(|| format!("opening {}", fill.path.display()))?;
        let result = match &fill.data {
            None => writer.fill(fill.handle, &mut &file),
            Some(ranges) => writer.fill(fill.handle, &mut DataRanges::new(&file, ranges)),
        };
        result.with_context(|| format!("copying {} into the image", fill.path.display()))?;
    }
    writer
        .finish()
        .with_context(|| format!("finishing ext4 in {}", image.display()))?;
    write_metadata_zeros(&file, offset, &sink.zeros).with_context(|| {
        format!(
            "writing the journal and inode tables into {}",
            image.display()
        )
    })
}

/// A regular file to copy into the image.
struct Fill {
    handle: InodeHandle,
    path: PathBuf,
    /// The byte ranges that hold data, when some blocks are holes.
    data: Option<Vec<Range<u64>>>,
}

/// The tree walk: declares every entry to the builder in the order mke2fs
/// -d (under LC_ALL=C) adds them, and remembers which files to copy.
struct Walk {
    fs: FsBuilder,
    epoch: i64,
    /// Hard-linked inodes seen so far, by (device, inode) in the tree.
    links: HashMap<(u64, u64), InodeHandle>,
    /// Regular files with content, in declaration order.
    fills: Vec<Fill>,
    /// The segments of every regular file that has all-zero blocks.
    sparse: HashMap<PathBuf, Vec<SparseSeg>>,
}

impl Walk {
    fn dir(&mut self, handle: InodeHandle, dir: &Path, is_root: bool) -> Result<()> {
        let mut entries = fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<Vec<_>>>()
            .with_context(|| format!("listing {}", dir.display()))?;
        // Byte order, as mke2fs's alphasort under LC_ALL=C.
        entries.sort();
        for path in entries {
            self.entry(handle, &path, is_root)?;
        }
        Ok(())
    }

    fn entry(&mut self, parent: InodeHandle, path: &Path, in_root: bool) -> Result<()> {
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            anyhow!(
                "{}: the native ext4 writer needs UTF-8 names",
                path.display()
            )
        })?;
        let md =
            fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let meta = self.meta(&md);
        let ft = md.file_type();
        let declared = |r: mkext4::Result<InodeHandle>| {
            r.with_context(|| format!("adding {}", path.display()))
        };
        if ft.is_dir() && in_root && name == "lost+found" {
            // mkext4 always makes its own lost+found; mke2fs would merge
            // the tree's into it, which we only match when it is empty.
            ensure!(
                fs::read_dir(path)
                    .with_context(|| format!("listing {}", path.display()))?
                    .next()
                    .is_none(),
                "{}: the native ext4 writer cannot copy a non-empty lost+found",
                path.display()
            );
            return Ok(());
        }
        if ft.is_dir() {
            let handle = declared(self.fs.mkdir(parent, name, meta))?;
            self.xattrs(handle, path)?;
            return self.dir(handle, path, false);
        }
        // Further names of an inode already declared become hard links, as
        // mke2fs does for every non-directory with a link count above one.
        let key = (md.dev(), md.ino());
        if md.nlink() > 1 {
            if let Some(&first) = self.links.get(&key) {
                return self
                    .fs
                    .hardlink(parent, name, first)
                    .with_context(|| format!("adding hard link {}", path.display()));
            }
        }
        let handle = if ft.is_symlink() {
            let target = fs::read_link(path)
                .with_context(|| format!("reading symlink {}", path.display()))?;
            let target = target.to_str().ok_or_else(|| {
                anyhow!(
                    "{}: the native ext4 writer needs UTF-8 symlink targets",
                    path.display()
                )
            })?;
            declared(self.fs.symlink(parent, name, target, meta))?
        } else if ft.is_file() {
            let segments = self.sparse.remove(path);
            if let Some(segs) = &segments {
                let scanned: u64 = segs
                    .iter()
                    .map(|s| match *s {
                        SparseSeg::Data(l) | SparseSeg::Hole(l) => l,
                    })
                    .sum();
                ensure!(
                    scanned == md.len(),
                    "{} changed while the image was being made",
                    path.display()
                );
            }
            let handle = match &segments {
                None => declared(self.fs.file(parent, name, meta, md.len()))?,
                Some(segs) => declared(self.fs.file_sparse(parent, name, meta, segs))?,
            };
            let data = segments.as_deref().map(data_ranges);
            if md.len() > 0 && data.as_ref().is_none_or(|d| !d.is_empty()) {
                self.fills.push(Fill {
                    handle,
                    path: path.to_owned(),
                    data,
                });
            }
            handle
        } else {
            let (major, minor) = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
            let kind = if ft.is_char_device() {
                SpecialKind::Char { major, minor }
            } else if ft.is_block_device() {
                SpecialKind::Block { major, minor }
            } else if ft.is_fifo() {
                SpecialKind::Fifo
            } else if ft.is_socket() {
                SpecialKind::Socket
            } else {
                bail!("{}: unknown file type", path.display());
            };
            declared(self.fs.mknod(parent, name, meta, kind))?
        };
        if md.nlink() > 1 {
            self.links.insert(key, handle);
        }
        self.xattrs(handle, path)
    }

    /// Owner, permissions and times of one entry. Like mke2fs with
    /// SOURCE_DATE_EPOCH, times after the epoch become the epoch and older
    /// ones are kept, in whole seconds (mke2fs copies no nanoseconds); the
    /// creation time, which the tree cannot carry, is the epoch.
    fn meta(&self, md: &fs::Metadata) -> Meta {
        let clamp = |secs: i64| (secs.min(self.epoch), 0);
        let mut meta = Meta::new(
            (md.mode() & 0o7777) as u16,
            md.uid(),
            md.gid(),
            clamp(md.mtime()),
        );
        meta.atime = Some(clamp(md.atime()));
        meta.ctime = Some(clamp(md.ctime()));
        meta.crtime = Some((self.epoch, 0));
        meta
    }

    /// Copies the extended attributes of `path` (not following symlinks).
    fn xattrs(&mut self, handle: InodeHandle, path: &Path) -> Result<()> {
        for (name, value) in super::xattr::read_all(path)? {
            let value = if name.starts_with("system.posix_acl_") {
                super::xattr::acl_to_disk(&value)
                    .with_context(|| format!("converting {name} of {}", path.display()))?
            } else {
                value
            };
            self.fs
                .set_xattr(handle, &name, &value)
                .with_context(|| format!("copying xattr {name} of {}", path.display()))?;
        }
        Ok(())
    }
}

/// [`zero_block_segments`] of every regular file in `tree`, on all cores
/// (reading the tree is most of this writer's own time); only files with a
/// hole are kept.
fn scan_tree(tree: &Path) -> Result<HashMap<PathBuf, Vec<SparseSeg>>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(tree) {
        let entry = entry.with_context(|| format!("listing {}", tree.display()))?;
        if entry.file_type().is_file() {
            let len = entry
                .metadata()
                .with_context(|| format!("reading {}", entry.path().display()))?
                .len();
            files.push((len, entry.into_path()));
        }
    }
    // Biggest first, each to the least loaded thread: about equal bytes.
    files.sort_unstable_by(|a, b| b.cmp(a));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut shares: Vec<(u64, Vec<(u64, PathBuf)>)> = vec![(0, Vec::new()); threads];
    for file in files {
        let share = shares.iter_mut().min_by_key(|s| s.0).expect("one thread");
        share.0 += file.0;
        share.1.push(file);
    }
    std::thread::scope(|scope| {
        let scans: Vec<_> = shares
            .into_iter()
            .map(|(_, share)| {
                scope.spawn(move || -> Result<Vec<(PathBuf, Vec<SparseSeg>)>> {
                    let mut found = Vec::new();
                    for (len, path) in share {
                        if let Some(segments) = zero_block_segments(&path, len)? {
                            found.push((path, segments));
                        }
                    }
                    Ok(found)
                })
            })
            .collect();
        let mut sparse = HashMap::new();
        for scan in scans {
            sparse.extend(scan.join().expect("a tree scan thread panicked")?);
        }
        Ok(sparse)
    })
}

/// The file's data and holes with every all-zero block a hole (a short
/// last block too), as `mke2fs -d` copies files: such blocks are neither
/// allocated nor stored, and the image does not carry them (arm64
/// binaries hold tens of MiB of zero padding). None when no block is zero.
fn zero_block_segments(path: &Path, len: u64) -> Result<Option<Vec<SparseSeg>>> {
    const ZEROS: [u8; BLOCK_SIZE as usize] = [0; BLOCK_SIZE as usize];
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut segments: Vec<SparseSeg> = Vec::new();
    let mut buf = vec![0u8; 256 * BLOCK_SIZE as usize];
    let mut at = 0u64;
    while at < len {
        let n = buf.len().min((len - at) as usize);
        file.read_exact_at(&mut buf[..n], at)
            .with_context(|| format!("reading {}", path.display()))?;
        for block in buf[..n].chunks(BLOCK_SIZE as usize) {
            let size = block.len() as u64;
            match (block == &ZEROS[..block.len()], segments.last_mut()) {
                (true, Some(SparseSeg::Hole(l))) | (false, Some(SparseSeg::Data(l))) => *l += size,
                (true, _) => segments.push(SparseSeg::Hole(size)),
                (false, _) => segments.push(SparseSeg::Data(size)),
            }
        }
        at += n as u64;
    }
    Ok(segments
        .iter()
        .any(|s| matches!(s, SparseSeg::Hole(_)))
        .then_some(segments))
}

/// The byte ranges of the data segments.
fn data_ranges(segments: &[SparseSeg]) -> Vec<Range<u64>> {
    let mut at = 0;
    let mut out = Vec::new();
    for seg in segments {
        match *seg {
            SparseSeg::Data(l) => {
                out.push(at..at + l);
                at += l;
            }
            SparseSeg::Hole(l) => at += l,
        }
    }
    out
}

/// Reads only the given byte ranges of a file, one after the other: what
/// mkext4's fill takes for a sparse file.
struct DataRanges<'f> {
    file: &'f File,
    ranges: std::slice::Iter<'f, Range<u64>>,
    current: Range<u64>,
}

impl<'f> DataRanges<'f> {
    fn new(file: &'f File, ranges: &'f [Range<u64>]) -> Self {
        DataRanges {
            file,
            ranges: ranges.iter(),
            current: 0..0,
        }
    }
}

impl std::io::Read for DataRanges<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.ranges.next() {
                Some(r) => self.current = r.clone(),
                None => return Ok(0),
            }
        }
        let want = buf
            .len()
            .min((self.current.end - self.current.start) as usize);
        let n = self.file.read_at(&mut buf[..want], self.current.start)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        self.current.start += n as u64;
        Ok(n)
    }
}

/// Positioned writes into the image at `base`. Zero runs are left as they
/// are (the range was cleared, so they read as zeros and stay holes) but
/// remembered, so those inside the journal, bitmaps and inode tables can be
/// written afterwards (see [`write_metadata_zeros`]).
struct Sink<'f> {
    file: &'f File,
    base: u64,
    zeros: Vec<Range<u64>>,
}

impl RegionSink for Sink<'_> {
    fn data(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, self.base + offset)
    }

    fn zeros(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        match self.zeros.last_mut() {
            Some(last) if last.end == offset => last.end += len,
            _ => self.zeros.push(offset..offset + len),
        }
        Ok(())
    }
}

/// A bmap-flashed card keeps its old data wherever the image has a hole.
/// That is harmless for free blocks, but not for structures the kernel
/// trusts as written: a stale journal from an earlier flash would have
/// valid checksums (mke2fs writes it out with lazy_journal_init=0), and
/// mkext4 flags every inode table as zeroed (ITABLE_ZEROED), so the kernel
/// never zeroes their unused slots itself. So this finds the journal, the
/// bitmaps and the inode tables in the finished filesystem and writes zeros
/// over the parts of them that mkext4 left as zero runs.
fn write_metadata_zeros(file: &File, base: u64, zeros: &[Range<u64>]) -> Result<()> {
    let at = AtOffset { file, base };
    let fs = mkext4::reader::Fs::open(&at).context("reading back the superblock")?;
    let mut must_be_written = Vec::new();
    let inode = fs.inode(JOURNAL_INO).context("reading the journal inode")?;
    let extents = fs
        .extents(JOURNAL_INO, &inode)
        .context("reading the journal's extents")?;
    ensure!(!extents.is_empty(), "the journal has no blocks");
    for e in extents {
        must_be_written.push(e.physical..e.physical + u64::from(e.len));
    }
    let sb = fs.superblock();
    let itable_blocks =
        (u64::from(sb.inodes_per_group) * u64::from(sb.inode_size)).div_ceil(BLOCK_SIZE);
    for g in 0..sb.group_count() {
        let gd = fs
            .group_desc(g)
            .with_context(|| format!("reading group descriptor {g}"))?;
        must_be_written.push(gd.block_bitmap..gd.block_bitmap + 1);
        must_be_written.push(gd.inode_bitmap..gd.inode_bitmap + 1);
        must_be_written.push(gd.inode_table..gd.inode_table + itable_blocks);
    }
    for blocks in must_be_written {
        let bytes = blocks.start * BLOCK_SIZE..blocks.end * BLOCK_SIZE;
        for z in zeros {
            let (start, end) = (z.start.max(bytes.start), z.end.min(bytes.end));
            if start < end {
                super::write_zeros(file, base + start, end - start).context("writing zeros")?;
            }
        }
    }
    Ok(())
}

/// The image seen from `base` on, for mkext4's reader.
struct AtOffset<'f> {
    file: &'f File,
    base: u64,
}

impl mkext4::reader::ReadAt for AtOffset<'_> {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        FileExt::read_exact_at(self.file, buf, self.base + offset)
    }
}

#[cfg(test)]
mod tests;

//! `habuild flash`: bmap-aware, verified, hard-to-misuse card writing.
//!
//! In order: check the bmap (its own checksum, its SHA256SUMS entry) →
//! inspect the target and refuse anything in use, too small or not
//! removable → confirm → clear the image's span without writing (the old
//! partition table included; zeros written only where that did not leave
//! zeros) → read the image's first MiB and hold it back → write the mapped
//! ranges past it (hashing the whole image against SHA256SUMS alongside
//! only when that adds something: see `sums::image_check`) → fsync
//! → read every mapped range back and check it against the bmap → write
//! the first MiB → fsync → read it back. (A regular file is written
//! through the page cache and its fsync runs beside the read-back: see
//! `job`.)
//!
//! The bmap and SHA256SUMS formats are read through `artifact`. Modules:
//! `source` (raw or zstd image stream), `sums` (which SHA256SUMS entry
//! covers the image), `stream` (the reading thread of a write), `target`
//! (pure safety checks) over `sysfs` (reading /sys and /proc), `users`
//! (loop devices and processes using a regular file target), `direct`
//! (the target, a device with O_DIRECT), `writer`, `verify` over `ranges` (two
//! threads over the bmap's ranges), `job` (the order of the writing half);
//! `refusal` names why we stop.

pub mod direct;
#[cfg(test)]
mod fixture;
mod job;
pub mod ranges;
pub mod refusal;
pub mod source;
pub mod stream;
pub mod sums;
pub mod sysfs;
pub mod target;
pub mod users;
pub mod verify;
pub mod writer;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use thiserror::Error;

use crate::artifact::bmap::{self, Bmap, ChecksumMismatch};
use crate::artifact::checksums::{file_name, Sums};
use direct::Target;
use job::Job;
pub use refusal::Refusal;
use source::{Hash, ImageSource};
use target::BlockFacts;

#[derive(Debug, Clone)]
pub struct FlashOptions {
    pub image: PathBuf,
    /// Default: the image's name without `.zst`, plus `.bmap`.
    pub bmap: Option<PathBuf>,
    pub target: PathBuf,
    /// Allow a non-removable disk.
    pub force: bool,
    /// Do not ask before overwriting a block device.
    pub yes: bool,
    /// Also hash the whole image against its SHA256SUMS entry when the
    /// bmap's entry already covers every byte written (see
    /// `sums::image_check`).
    pub check_image_hash: bool,
    /// Write the whole image without a block map (`--no-bmap`).
    pub no_bmap: bool,
}

#[derive(Debug, Clone)]
pub struct FlashReport {
    pub target: PathBuf,
    pub block_device: bool,
    /// Every byte handed to write(2): image data plus any zeros written
    /// over the old partition table (when the device did not clear it).
    pub bytes_written: u64,
    /// Zeros written over the old partition tables (usually 0).
    pub bytes_zeroed: u64,
    /// The image's span zeroed or discarded by the device, no data sent.
    pub bytes_discarded: u64,
    pub bytes_verified: u64,
    /// The bmap's SHA256SUMS entry, when it was checked.
    pub sums_bmap: Option<String>,
    /// The image's SHA256SUMS entry, when the whole image was hashed.
    pub sums_image: Option<String>,
    pub write_time: Duration,
    /// For a regular file, includes flushing its body (done meanwhile).
    pub verify_time: Duration,
}

/// Ctrl-C (or the test hook) stopped the flash; the message says what state
/// the target is in.
#[derive(Debug, Error)]
#[error("interrupted: {target} is incomplete ({state}); flash it again before use")]
pub struct Interrupted {
    pub target: String,
    pub state: &'static str,
}

/// Internal marker: a stop was requested between two writes.
#[derive(Debug, Error)]
#[error("stopped")]
pub(crate) struct Stopped;

/// How `flash` asks the user: shown text in, yes or no out.
pub type Confirm<'a> = &'a mut dyn FnMut(&str) -> Result<bool>;

/// `<image minus .zst/.xz/.gz>.bmap`, as bmap-tools looks for it.
pub fn default_bmap(image: &Path) -> PathBuf {
    let plain = crate::artifact::compression::strip_suffix(image);
    PathBuf::from(format!("{}.bmap", plain.as_os_str().to_string_lossy()))
}

/// The names a node's image may have, in the order they are looked for.
pub fn node_image_names(node: &str) -> Vec<String> {
    ["", ".zst", ".xz", ".gz"]
        .iter()
        .map(|s| format!("{node}.img{s}"))
        .collect()
}

/// `<out>/<cluster>/<node>.img`, or the first of `.img.zst`, `.img.xz`,
/// `.img.gz` that exists.
pub fn node_image(out: &Path, cluster: &str, node: &str) -> Result<PathBuf> {
    let dir = out.join(cluster);
    let names = node_image_names(node);
    for name in &names {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no image for node {node} in {} (looked for {}); build it with `habuild image --node {node}`",
        crate::util::shown(&dir),
        names.join(", ")
    )
}

/// The refusal for a missing block map: what it costs to go without one,
/// and how to make one.
pub fn missing_bmap(bmap: &Path, image: &Path) -> String {
    format!(
        "no block map {} for {}: make one with `bmaptool create -o {} <the uncompressed .img>` \
         (or rebuild with `habuild image`), pass another with --bmap FILE, or flash without \
         one with --no-bmap (writes every byte of the image, free blocks included, and checks \
         the card against hashes of the image's own bytes)",
        bmap.display(),
        image.display(),
        bmap.display()
    )
}

/// Flashes `opts.image` to `opts.target`; `stop` is polled between writes
/// (and from the read-back threads).
pub fn flash(
    opts: &FlashOptions,
    confirm: Confirm,
    stop: &(dyn Fn() -> bool + Sync),
) -> Result<FlashReport> {
    // The image first: a missing image is named as such, not as its bmap.
    if !opts.image.is_file() {
        bail!(
            "no image {}: build it with `habuild image`, or give the path of a .img, .img.zst, .img.xz or .img.gz",
            opts.image.display()
        );
    }
    let sums = Sums::load(opts.image.parent().unwrap_or(Path::new(".")))?;
    let mut sums_bmap = None;
    let (bmap, bmap_path, entry) = if opts.no_bmap {
        // Nothing but the image vouches for the image: hash all of it.
        let bmap = whole_image_map(&opts.image)?;
        let entry = sums
            .as_ref()
            .and_then(|s| sums::image_entry(s, &opts.image));
        (bmap, None, entry)
    } else {
        let bmap_path = opts
            .bmap
            .clone()
            .unwrap_or_else(|| default_bmap(&opts.image));
        if !bmap_path.is_file() {
            bail!(missing_bmap(&bmap_path, &opts.image));
        }
        if let Some(s) = &sums {
            sums::check_file(s, &bmap_path)?;
            let name = file_name(&bmap_path);
            sums_bmap = s.entry(&name).is_some().then_some(name);
        }
        let bmap = read_bmap(&bmap_path)?;
        let entry = sums
            .as_ref()
            .and_then(|s| sums::image_check(s, &opts.image, &bmap_path, opts.check_image_hash));
        (bmap, Some(bmap_path), entry)
    };
    if sums.is_some() && sums_bmap.is_none() && entry.is_none() {
        log::warn!(
            "SHA256SUMS lists neither {} nor its block map; relying on the block map's own checksum",
            opts.image.display()
        );
    }
    let compressed = source::compression(&opts.image)?.is_some();
    // A raw image listed by name is hashed by a second reader in parallel
    // (the stream skips holes); everything else is hashed in the stream.
    let stream_hash = match &entry {
        Some((_, Hash::Stored)) if !compressed => Hash::None,
        Some((_, h)) => *h,
        None => Hash::None,
    };
    let source = ImageSource::open(&opts.image, stream_hash)?;
    if let Some(len) = source.raw_len()? {
        if len != bmap.image_size {
            return Err(Refusal::ImageSize {
                expected: bmap.image_size,
                actual: len,
            }
            .into());
        }
    }

    let host = sysfs::Host::default();
    let block = inspect(opts, &host, &bmap, bmap_path.as_deref(), confirm)?;
    let target = Target::open(&opts.target, block.is_some())?;

    let job = Job {
        image: &opts.image,
        target: &opts.target,
        shown: opts.target.display().to_string(),
        bmap: &bmap,
        block: block.as_ref(),
        stop,
    };
    let done = job.run(&target, source, sums.as_ref(), entry.as_ref())?;
    Ok(FlashReport {
        target: opts.target.clone(),
        block_device: block.is_some(),
        bytes_written: done.prepared.zeroed + done.bytes,
        bytes_zeroed: done.prepared.zeroed,
        bytes_discarded: done.prepared.cleared,
        bytes_verified: bmap.mapped_bytes(),
        sums_bmap,
        sums_image: entry.map(|(name, _)| name),
        write_time: done.write_time,
        verify_time: done.verify_time,
    })
}

/// `--no-bmap`: a map of every block, read from the image (decompressed)
/// before anything is written, in 4 MiB ranges with their SHA-256, so the
/// read-back checks the card as with a bmap. It costs a second pass over
/// the image and writing every byte, free blocks included.
fn whole_image_map(image: &Path) -> Result<Bmap> {
    let file = std::fs::File::open(image)
        .with_context(|| format!("opening the image {}", image.display()))?;
    let mut reader: Box<dyn std::io::Read + Send> = match source::compression(image)? {
        Some(format) => crate::artifact::compression::decoder(format, file)
            .with_context(|| format!("decompressing {} ({format})", image.display()))?,
        None => Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
    };
    let bar = bytes_bar("hashing", 0);
    let mut counted = bar.wrap_read(&mut reader);
    let bmap = Bmap::whole(&mut counted, 4096, 1024)
        .with_context(|| format!("reading {} (it ends early or is damaged)", image.display()))?;
    bar.finish_and_clear();
    Ok(bmap)
}

/// The block map, checked; a damaged one is a [`Refusal::BmapChecksum`].
fn read_bmap(path: &Path) -> Result<Bmap> {
    bmap::read(path).map_err(|err| match err.downcast_ref::<ChecksumMismatch>() {
        Some(m) => anyhow::Error::from(Refusal::from(m.clone()))
            .context(format!("reading the block map {}", path.display())),
        None => err,
    })
}

/// Target checks: a block device must pass `target::check_block` and be
/// confirmed; a regular file must not be a swap file, the image itself,
/// the backing file of a loop device or open for writing elsewhere.
fn inspect(
    opts: &FlashOptions,
    host: &sysfs::Host,
    bmap: &Bmap,
    bmap_path: Option<&Path>,
    confirm: Confirm,
) -> Result<Option<BlockFacts>> {
    let path = &opts.target;
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // A new file is a copy; but a missing /dev node is a typo or an
        // unplugged card, and creating a regular file there helps no one.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.starts_with("/dev") => {
            return Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Refusal::NoSuchDevice { path: shown }.into())
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting {shown}")),
    };
    let swaps = host.swaps()?;
    if meta.file_type().is_file() {
        let mut sources = Vec::new();
        for p in std::iter::once(opts.image.as_path()).chain(bmap_path) {
            let m = std::fs::metadata(p).with_context(|| format!("inspecting {}", p.display()))?;
            sources.push((m.dev(), m.ino()));
        }
        let id = (meta.dev(), meta.ino());
        target::check_file(&shown, id, &swaps, &sources)?;
        let loops = users::loops(&host.sys)?;
        let openers = users::openers(Path::new("/proc"), id)?;
        users::check(&shown, id, &loops, &host.mounts()?, &openers)?;
        return Ok(None);
    }
    if !meta.file_type().is_block_device() {
        return Err(Refusal::NotADisk { path: shown }.into());
    }
    let dev = (
        rustix::fs::major(meta.rdev()),
        rustix::fs::minor(meta.rdev()),
    );
    let facts = host
        .block(dev)
        .with_context(|| format!("inspecting {shown} in /sys"))?;
    target::check_block(&facts, &host.mounts()?, &swaps, bmap.image_size, opts.force)?;
    if !opts.yes {
        let text = format!(
            "{}\nEverything on it will be overwritten with {} ({}).",
            target::describe(&facts).trim_end(),
            opts.image.display(),
            human(bmap.image_size)
        );
        if !confirm(&text)? {
            return Err(Refusal::NotConfirmed.into());
        }
    }
    Ok(Some(facts))
}

fn bytes_bar(what: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// "1.5 GiB".
pub fn human(bytes: u64) -> String {
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut size = bytes as f64;
    for unit in ["KiB", "MiB", "GiB", "TiB"] {
        size /= 1024.0;
        if size < 1024.0 {
            return format!("{size:.1} {unit}");
        }
    }
    format!("{:.1} PiB", size / 1024.0)
}

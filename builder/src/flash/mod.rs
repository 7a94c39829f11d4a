//! `habuild flash`: bmap-aware, verified, hard-to-misuse card writing.
//!
//! In order: check the bmap (its own checksum, its SHA256SUMS entry) →
//! inspect the target and refuse anything in use, too small or not
//! removable → confirm → clear the old partition table, discard → write the
//! mapped ranges past the first MiB, checking each against the bmap (and
//! the whole image against SHA256SUMS, alongside) → fsync → write the first
//! MiB → fsync → read every mapped range back and check it.
//!
//! Modules: `bmap` (reading the map), `source` (raw or zstd image stream),
//! `sums` (SHA256SUMS), `stream` (the reading thread of a write), `target`
//! (pure safety checks) over `sysfs` (reading /sys and /proc), `writer`,
//! `verify`; `refusal` names why we stop.

pub mod bmap;
pub mod refusal;
pub mod source;
pub mod stream;
pub mod sums;
pub mod sysfs;
pub mod target;
pub mod verify;
pub mod writer;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use thiserror::Error;

pub use refusal::Refusal;
use source::{Hash, ImageSource};
use sums::Sums;
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
}

#[derive(Debug, Clone)]
pub struct FlashReport {
    pub target: PathBuf,
    pub block_device: bool,
    /// Every byte handed to write(2): image data plus the zeros that
    /// cleared the old partition table.
    pub bytes_written: u64,
    pub bytes_zeroed: u64,
    pub bytes_discarded: u64,
    pub bytes_verified: u64,
    /// The SHA256SUMS entry that was checked, if there was one.
    pub sums_entry: Option<String>,
    pub write_time: Duration,
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

/// `<image minus .zst>.bmap`, as bmap-tools looks for it.
pub fn default_bmap(image: &Path) -> PathBuf {
    let s = image.as_os_str().to_string_lossy();
    PathBuf::from(format!("{}.bmap", s.strip_suffix(".zst").unwrap_or(&s)))
}

/// `<out>/<cluster>/<node>.img`, or `.img.zst` when only that exists.
pub fn node_image(out: &Path, cluster: &str, node: &str) -> Result<PathBuf> {
    let dir = out.join(cluster);
    for name in [format!("{node}.img"), format!("{node}.img.zst")] {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!(
        "no image for node {node} in {} (looked for {node}.img and {node}.img.zst); build it with `habuild image --node {node}`",
        dir.display()
    )
}

/// Flashes `opts.image` to `opts.target`; `stop` is polled between writes.
pub fn flash(
    opts: &FlashOptions,
    confirm: Confirm,
    stop: &dyn Fn() -> bool,
) -> Result<FlashReport> {
    let bmap_path = opts
        .bmap
        .clone()
        .unwrap_or_else(|| default_bmap(&opts.image));
    if !bmap_path.is_file() {
        bail!(
            "no block map {} for {} (pass --bmap FILE)",
            bmap_path.display(),
            opts.image.display()
        );
    }
    let sums = Sums::load(opts.image.parent().unwrap_or(Path::new(".")))?;
    if let Some(s) = &sums {
        s.check_file(&bmap_path)?;
    }
    let bmap = bmap::read(&bmap_path)?;
    let entry = sums.as_ref().and_then(|s| s.image_entry(&opts.image));
    if sums.is_some() && entry.is_none() {
        log::warn!(
            "SHA256SUMS does not list {}; relying on the block map's checksums",
            opts.image.display()
        );
    }
    let compressed = source::is_zstd(&opts.image)?;
    // A raw image listed by name is hashed by a second reader in parallel
    // (the stream skips holes); everything else is hashed in the stream.
    let stream_hash = match &entry {
        Some((_, Hash::Stored)) if !compressed => Hash::None,
        Some((_, h)) => *h,
        None => Hash::None,
    };
    let mut source = ImageSource::open(&opts.image, stream_hash)?;
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
    let block = inspect(opts, &host, &bmap, &bmap_path, confirm)?;
    let target = open_target(&opts.target, block.is_some())?;
    let shown = opts.target.display().to_string();

    let started = Instant::now();
    let (zeroed, discarded) = match &block {
        Some(facts) => writer::prepare_block(&target, &opts.target, facts, bmap.image_size)?,
        None => {
            writer::prepare_file(&target, &opts.target, bmap.image_size)?;
            (0, 0)
        }
    };
    let incomplete = |state| Interrupted {
        target: shown.clone(),
        state,
    };
    const NOT_BOOTABLE: &str = "its first MiB is zeros, it will not boot";

    let hasher = match &entry {
        Some((_, Hash::Stored)) if !compressed => Some(source::BackgroundHash::start(&opts.image)),
        _ => None,
    };
    let bar = bytes_bar("writing", bmap.mapped_bytes());
    let body = writer::write_body(&mut source, &target, &bmap, block.is_some(), stop, &bar)
        .with_context(|| {
            format!(
                "writing {} to {shown} stopped: the target is incomplete ({NOT_BOOTABLE})",
                opts.image.display()
            )
        })
        .map_err(|e| stopped_as(e, incomplete(NOT_BOOTABLE)))?;
    let streamed = source
        .finish(bmap.image_size)
        .with_context(|| format!("{shown} is incomplete ({NOT_BOOTABLE})"))?;
    bar.finish_and_clear();
    let image_sum = match hasher {
        Some(h) => Some(h.join()?),
        None => streamed,
    };
    if let (Some(s), Some((name, _)), Some(actual)) = (&sums, &entry, &image_sum) {
        s.check(name, actual)
            .with_context(|| format!("nothing bootable was written to {shown} ({NOT_BOOTABLE})"))?;
    }
    target
        .sync_all()
        .with_context(|| format!("flushing {shown}"))?;
    if stop() {
        return Err(incomplete(NOT_BOOTABLE).into());
    }
    let head_bytes = writer::write_head(&target, &body.head)?;
    target
        .sync_all()
        .with_context(|| format!("flushing {shown}"))?;
    let write_time = started.elapsed();

    let verified_at = Instant::now();
    verify::drop_cache(&target)?;
    let bar = bytes_bar("verifying", bmap.mapped_bytes());
    if let Err(e) = verify::verify(&target, &bmap, stop, &bar) {
        bar.finish_and_clear();
        if e.is::<Stopped>() {
            return Err(incomplete("fully written but NOT verified").into());
        }
        // A card that reads back wrong must not boot: clear its table again.
        let cleared = match writer::clear_head(&target) {
            Ok(()) => "its first MiB was zeroed again so it does not boot",
            Err(_) => "clearing its first MiB failed too",
        };
        return Err(e.context(format!("{shown} is not usable: {cleared}")));
    }
    bar.finish_and_clear();
    Ok(FlashReport {
        target: opts.target.clone(),
        block_device: block.is_some(),
        bytes_written: zeroed + body.bytes + head_bytes,
        bytes_zeroed: zeroed,
        bytes_discarded: discarded,
        bytes_verified: bmap.mapped_bytes(),
        sums_entry: entry.map(|(name, _)| name),
        write_time,
        verify_time: verified_at.elapsed(),
    })
}

/// Target checks: a block device must pass `target::check_block` and be
/// confirmed; a regular file must not be a swap file or the image itself.
fn inspect(
    opts: &FlashOptions,
    host: &sysfs::Host,
    bmap: &bmap::Bmap,
    bmap_path: &Path,
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
        for p in [opts.image.as_path(), bmap_path] {
            let m = std::fs::metadata(p).with_context(|| format!("inspecting {}", p.display()))?;
            sources.push((m.dev(), m.ino()));
        }
        target::check_file(&shown, (meta.dev(), meta.ino()), &swaps, &sources)?;
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

/// Block devices are opened with O_EXCL: the kernel then refuses if anyone
/// else (a filesystem, device-mapper, another flash) has claimed the device
/// since we inspected it, and keeps them out while we write.
fn open_target(path: &Path, block: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if block {
        o.custom_flags(rustix::fs::OFlags::EXCL.bits() as i32);
    } else {
        o.create(true);
    }
    o.open(path).with_context(|| {
        if block {
            format!("opening {} exclusively (is it in use?)", path.display())
        } else {
            format!("opening {} for writing", path.display())
        }
    })
}

fn stopped_as(e: anyhow::Error, interrupted: Interrupted) -> anyhow::Error {
    if e.is::<Stopped>() {
        interrupted.into()
    } else {
        e
    }
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

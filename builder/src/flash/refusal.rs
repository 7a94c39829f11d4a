//! Why `habuild flash` will not write: typed, because callers (and tests)
//! tell the kinds apart, and each message says what to do instead.

use thiserror::Error;

use super::human;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    #[error(
        "{device} holds the root filesystem (/ is on {on}): this is the running system's disk"
    )]
    RootDisk { device: String, on: String },

    #[error("{device} holds active swap ({swap}); run `swapoff {swap}` first if you really mean this disk")]
    Swap { device: String, swap: String },

    #[error("{device} is mounted: {on} on {mount_point}; unmount it first")]
    Mounted {
        device: String,
        on: String,
        mount_point: String,
    },

    #[error("{device} is in use: {on} is held by {holder} (device-mapper, RAID or LVM); release it first")]
    Held {
        device: String,
        on: String,
        holder: String,
    },

    #[error("{device} is a partition; give the whole disk ({disk})")]
    Partition { device: String, disk: String },

    #[error("{device} is read-only (a locked SD card? check its write-protect switch)")]
    ReadOnly { device: String },

    #[error("{device} is {} but the image needs {}", human(*.size), human(*.needed))]
    TooSmall {
        device: String,
        size: u64,
        needed: u64,
    },

    #[error("{device} ({description}) is not a removable disk; pass --force if it really is the card to overwrite")]
    NotRemovable { device: String, description: String },

    #[error("{path} backs the loop device {device}{}; detach it first (`losetup -d {device}`, after unmounting what is on it)", mounted.as_ref().map(|m| format!(", mounted on {m}")).unwrap_or_default())]
    LoopBacking {
        path: String,
        device: String,
        mounted: Option<String>,
    },

    #[error("{path} is open for writing by process {pid} ({command}); stop it first")]
    OpenForWriting {
        path: String,
        pid: u32,
        command: String,
    },

    #[error("{path} does not exist (is the card plugged in? `lsblk` lists disks)")]
    NoSuchDevice { path: String },

    #[error("{path} is neither a block device nor a regular file")]
    NotADisk { path: String },

    #[error("{path} is the image or its block map itself")]
    SameAsSource { path: String },

    #[error(transparent)]
    SumsMismatch(#[from] crate::artifact::checksums::SumsMismatch),

    #[error(transparent)]
    BmapChecksum(#[from] crate::artifact::bmap::ChecksumMismatch),

    #[error("the image's {range} does not match its block map (expected sha256 {expected}, got {actual}): the image is damaged or the .bmap belongs to another image")]
    ImageRange {
        range: String,
        expected: String,
        actual: String,
    },

    #[error("the image is {actual} bytes but its block map says {expected}: the .bmap belongs to another image")]
    ImageSize { expected: u64, actual: u64 },

    #[error("not confirmed; nothing was written")]
    NotConfirmed,
}

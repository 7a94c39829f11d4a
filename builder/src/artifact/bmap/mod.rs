//! The block map (bmap format 2.0, as bmap-tools reads and writes it): the
//! image's mapped block ranges and the SHA-256 of each. `write` makes it
//! for a built image; `read` parses and checks it for `flash` and
//! `verify`. One module owns the format, so writer and reader cannot drift.

mod read;
mod write;

pub use read::{parse, read, Bmap, ChecksumMismatch, MappedRange};
pub use write::{mapped_blocks, write_bmap, BmapSummary, BLOCK_SIZE};

//! What a build hands to users next to the image: a bmap for fast flashing,
//! SHA256SUMS, and a firmware bundle for updating the boot partition.

pub mod bmap;
pub mod checksums;
pub mod compare;
pub mod firmware;

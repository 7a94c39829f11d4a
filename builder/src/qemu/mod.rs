//! QEMU validation: boot images before any card is written.

pub mod cluster;
pub mod console;
pub mod dtb;
pub mod guest;
pub mod kvm;
pub mod netns;
pub mod prepare;
pub mod sealed;
pub mod t2facts;
pub mod tier1;
pub mod tier2;
pub mod tier3;

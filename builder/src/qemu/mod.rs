//! QEMU validation: boot images before any card is written.

pub mod console;
pub mod dtb;
pub mod guest;
pub mod prepare;
pub mod tier1;

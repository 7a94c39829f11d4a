//! Helpers shared by every stage: running tools, progress, cleanup.

pub mod cleanup;
pub mod cmd;
pub mod deb822;
pub mod progress;

pub use cmd::CommandExt;

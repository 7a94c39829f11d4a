//! Helpers shared by every stage: running tools, progress, cleanup.

pub mod cleanup;
pub mod cmd;
pub mod digest;
pub mod progress;

pub use cmd::CommandExt;

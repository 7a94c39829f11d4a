//! Helpers shared by every stage: running tools, progress, atomic output.

pub mod cmd;
pub mod progress;

pub use cmd::CommandExt;

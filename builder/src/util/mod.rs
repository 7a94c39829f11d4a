//! Helpers shared by every stage: running tools (and stopping them with
//! habuild), progress, cleanup, work directories.

pub mod children;
pub mod cleanup;
pub mod cmd;
pub mod digest;
pub mod progress;
pub mod workdir;

pub use cmd::CommandExt;

//! Helpers shared by every stage: running tools (and stopping them with
//! habuild), progress, cleanup, work directories.

pub mod children;
pub mod cleanup;
pub mod cmd;
pub mod digest;
pub mod epoch;
pub mod filelock;
pub mod progress;
pub mod shown;
pub mod workdir;

pub use cmd::CommandExt;
pub use shown::shown;

/// The git commit habuild was built from (embedded by build.rs), or
/// "unknown" when it was built outside a git checkout.
pub const GIT_COMMIT: &str = match option_env!("HABUILD_GIT_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

//! The build machine itself: which tools it has and how to make it ready
//! (`habuild doctor`, `habuild doctor --install`). Its apt sources are
//! read by `debian::host_sources`.

pub mod binfmt;
pub mod dirs;
pub mod doctor;
pub mod setup;
pub mod tools;

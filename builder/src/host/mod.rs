//! The build machine itself: which tools it has, where its Debian mirror is,
//! and how to make it ready (`habuild doctor`, `habuild doctor --install`).

pub mod apt_sources;
pub mod binfmt;
pub mod doctor;
pub mod setup;
pub mod tools;

//! The Debian side, in one place: the deb822 control format, what a root
//! filesystem has installed, the apt configuration and parsers that
//! resolve a base without bootstrapping it, package sources, their
//! signing keyrings and reachability, and the build host's own apt
//! sources (where its Debian mirror is). Parsers are pure; `reach` and
//! `host_sources::host_debian_mirror` do the I/O.

pub mod apt;
pub mod copyright;
pub mod deb822;
pub mod host_sources;
pub mod packages;
pub mod reach;
pub mod sources;

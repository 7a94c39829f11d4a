//! habuild: builds flashable, immutable OS images for a kubeadm HA control
//! plane on Raspberry Pi 4 boards and the LVS director in front of them.
//!
//! The pipeline flows one way; each stage is a module with typed input and
//! output: `config` → `plan` → `rootfs` → `fs` → `disk` → `artifact`.
//! `lock` pins every base's packages (`habuild.lock`) and checks builds
//! against it.

pub mod artifact;
pub mod bundle;
pub mod cli;
pub mod config;
pub mod disk;
pub mod flash;
pub mod fs;
pub mod host;
pub mod lock;
pub mod pipeline;
pub mod pki;
pub mod plan;
pub mod qemu;
pub mod rootfs;
pub mod status;
pub mod testdoubles;
pub mod util;

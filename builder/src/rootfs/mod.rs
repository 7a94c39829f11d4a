//! Root filesystem stages: the cached base from the bootstrapper, then the
//! layer habuild adds on top (overlays, rendered templates, node identity).

pub mod base;
pub mod cache;
pub mod digest;
pub mod formats;
pub mod keepalived;
pub mod layer;
pub mod packages;
pub mod reach;
pub mod render;

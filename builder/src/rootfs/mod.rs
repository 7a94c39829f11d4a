//! Root filesystem stages: the cached base from the bootstrapper, then the
//! layer habuild adds on top (overlays, rendered templates, node identity).

pub mod base;
pub mod context;
pub mod keepalived;
pub mod layer;
pub mod overlay;

//! Root filesystem stages: the cached base from the bootstrapper (`base`),
//! then the layer habuild adds on top (`layer`): the overlays (`overlay`)
//! with their templates rendered from the node's context (`context`), the
//! node's identity and the boot partition's files. `keepalived` checks a
//! director's rendered configuration with keepalived itself.

pub mod base;
pub mod cache;
pub mod context;
pub mod digest;
pub mod formats;
pub mod keepalived;
pub mod layer;
pub mod overlay;

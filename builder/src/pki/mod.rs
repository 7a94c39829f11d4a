//! Cluster secrets and PKI: the CAs, service-account key pair and bootstrap
//! token every control plane of one cluster shares, created once by
//! `habuild secrets init` and read by every build.
//!
//! Pure except [`store`] (the secrets file) and [`stage::install`] (writing
//! into a staged root tree). Secrets never reach logs, errors or `Debug`
//! output: problems name the file and key, never the value.

pub mod cert;
pub mod generate;
pub mod kubeconfig;
pub mod secrets;
pub mod stage;
pub mod store;
pub mod token;

#[cfg(test)]
mod kubeadm_tests;
#[cfg(test)]
mod tests;

pub use secrets::ClusterSecrets;
pub use token::BootstrapToken;

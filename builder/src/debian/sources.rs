//! Package sources as the build gives them to mmdebstrap and apt: one
//! line per suite, each with the keyring that verifies it.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::Serialize;

/// An apt source line as mmdebstrap takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AptSource {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub signed_by: PathBuf,
}

impl AptSource {
    /// One-line format, `deb [signed-by=...] uri suite comps...`, one per suite.
    pub fn lines(&self) -> Vec<String> {
        self.suites
            .iter()
            .map(|suite| {
                let mut l = format!(
                    "deb [signed-by={}] {} {}",
                    self.signed_by.display(),
                    self.uri,
                    suite
                );
                for c in &self.components {
                    l.push(' ');
                    l.push_str(c);
                }
                l
            })
            .collect()
    }
}

/// Every source's signing keyring must be there: signatures are always verified.
pub fn check_keyrings(sources: &[AptSource]) -> Result<()> {
    for s in sources {
        if !s.signed_by.is_file() {
            bail!("the signing keyring {} for {} is missing: repository signatures are always verified (install the package that ships it, see `habuild doctor`)", s.signed_by.display(), s.uri);
        }
    }
    Ok(())
}

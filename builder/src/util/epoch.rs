//! SOURCE_DATE_EPOCH as the dates habuild stamps (bundles, OCI images,
//! the SBOM): one formatter, so every artifact says the same instant alike.

use anyhow::{Context, Result};

/// SOURCE_DATE_EPOCH as RFC 3339 (`2025-01-01T00:00:00Z`).
pub fn rfc3339(epoch: i64) -> Result<String> {
    time::OffsetDateTime::from_unix_timestamp(epoch)
        .context("SOURCE_DATE_EPOCH is out of range")?
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting SOURCE_DATE_EPOCH")
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_seconds() {
        assert_eq!(
            super::rfc3339(1_735_689_600).unwrap(),
            "2025-01-01T00:00:00Z"
        );
    }
}

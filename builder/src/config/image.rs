//! Choices about an image that neither its board nor the manifest makes,
//! given per build on the command line.

/// Which program writes the root ext4. Both take the same parameters and
/// give reproducible images with the same per-file metadata; they differ
/// in speed, features and maturity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Ext4Writer {
    /// `mke2fs -d` from e2fsprogs (>= 1.47.1): the reference
    /// implementation, with our pinned feature set including `64bit` and
    /// `resize_inode`.
    Mke2fs,
    /// The pure-Rust `mkext4` crate, in process: about half of mke2fs's
    /// time on a Debian root tree, but without `64bit` and `resize_inode`
    /// (online growth converts to `meta_bg`), UTF-8 names only, and resting
    /// on a young crate (0.0.x) rather than e2fsprogs. The default: images
    /// made with it pass the same checks and QEMU tiers (README).
    #[default]
    Native,
}

impl std::fmt::Display for Ext4Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Ext4Writer {
    /// The name users write (`--ext4-writer`) and the node report records.
    pub fn name(self) -> &'static str {
        match self {
            Ext4Writer::Mke2fs => "mke2fs",
            Ext4Writer::Native => "native",
        }
    }

    pub fn parse(s: &str) -> Result<Ext4Writer, String> {
        match s {
            "mke2fs" => Ok(Ext4Writer::Mke2fs),
            "native" => Ok(Ext4Writer::Native),
            _ => Err(format!("{s:?}: expected native or mke2fs")),
        }
    }
}

//! Errors in user-written configuration: each names the file, the key and
//! the problem, so the user can go straight to the line to fix.

use std::fmt;
use std::path::PathBuf;

/// One problem in a configuration file. Tests (and the CLI's exit code) match
/// on `key`, so this is a typed error rather than a plain message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted path of the offending key, e.g. `nodes[2].address`.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: `{}`: {}",
            self.file.display(),
            self.key,
            self.problem
        )
    }
}

/// Every problem found in one file (validation does not stop at the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "{n} problem{} in configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {e}")?;
        }
        Ok(())
    }
}

impl ConfigErrors {
    pub fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.key.as_str()).collect()
    }
}

/// Parses TOML into `T`, turning syntax errors and unknown or mistyped keys
/// into a `ConfigError` that carries the dotted key path and the line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    file: &std::path::Path,
    text: &str,
) -> Result<T, ConfigErrors> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let key = err.path().to_string();
        let inner = err.into_inner();
        let line = inner
            .span()
            .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let problem = match line {
            Some(l) => format!("{} (line {l})", inner.message()),
            None => inner.message().to_string(),
        };
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            key: if key == "." {
                "(top level)".into()
            } else {
                key
            },
            problem,
        }])
    })
}

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

/// [`parse_toml`] that does not stop at an unknown key: each one is
/// recorded (with its line in `text`) and removed, and the rest is parsed
/// again, so that the caller's validation still reports the file's other
/// problems. Returns the value and the unknown keys; any other error (a
/// syntax or type error) ends the parse, listed after the unknown keys.
pub fn parse_toml_past_unknown<T: serde::de::DeserializeOwned>(
    file: &std::path::Path,
    text: &str,
) -> Result<(T, Vec<ConfigError>), ConfigErrors> {
    let Ok(mut doc) = text.parse::<toml_edit::DocumentMut>() else {
        // Not TOML at all: the strict parse names the line.
        return parse_toml(file, text).map(|v| (v, Vec::new()));
    };
    let original = toml_edit::ImDocument::parse(text).ok();
    let mut unknown = Vec::new();
    // Each round removes one key; a file has far fewer keys than this.
    for _ in 0..256 {
        let current = doc.to_string();
        let de = toml::Deserializer::new(&current);
        let err = match serde_path_to_error::deserialize::<_, T>(de) {
            Ok(v) => return Ok((v, unknown)),
            Err(e) => e,
        };
        let segments: Vec<String> = err
            .path()
            .iter()
            .map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => format!("[{index}]"),
                serde_path_to_error::Segment::Map { key } => key.clone(),
                _ => "?".into(),
            })
            .collect();
        let message = err.inner().message().to_string();
        let line_in = |t: &str, at: usize| t[..at.min(t.len())].matches('\n').count() + 1;
        // Lines are counted in the user's text: the key's own line, else
        // (before any key was removed) where the parser stopped.
        let line = original
            .as_ref()
            .and_then(|d| key_span(d, &segments))
            .map(|start| line_in(text, start))
            .or_else(|| {
                let span = err.inner().span()?;
                unknown.is_empty().then(|| line_in(&current, span.start))
            });
        let error = ConfigError {
            file: file.to_path_buf(),
            key: dotted(&segments),
            problem: match line {
                Some(l) => format!("{message} (line {l})"),
                None => message.clone(),
            },
        };
        if !message.starts_with("unknown field") || !remove_key(&mut doc, &segments) {
            unknown.push(error);
            return Err(ConfigErrors(unknown));
        }
        unknown.push(error);
    }
    Err(ConfigErrors(unknown))
}

/// `["nodes", "[0]", "nic"]` → `nodes[0].nic`, as serde_path_to_error shows it.
fn dotted(segments: &[String]) -> String {
    let mut s = String::new();
    for seg in segments {
        if !s.is_empty() && !seg.starts_with('[') {
            s.push('.');
        }
        s.push_str(seg);
    }
    if s.is_empty() {
        "(top level)".into()
    } else {
        s
    }
}

fn index_of(seg: &str) -> Option<usize> {
    seg.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// Where the key at `segments` starts in the parsed text.
fn key_span(doc: &toml_edit::ImDocument<&str>, segments: &[String]) -> Option<usize> {
    let (last, parents) = segments.split_last()?;
    let mut item = doc.as_item();
    for seg in parents {
        item = match index_of(seg) {
            Some(i) => item.get(i)?,
            None => item.as_table_like()?.get(seg)?,
        };
    }
    let (key, _) = item.as_table_like()?.get_key_value(last)?;
    key.span().map(|r| r.start)
}

/// Removes the key at `segments`; false when the path leads nowhere.
fn remove_key(doc: &mut toml_edit::DocumentMut, segments: &[String]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut item = doc.as_item_mut();
    for seg in parents {
        let next = match index_of(seg) {
            Some(i) => item.get_mut(i),
            None => item.as_table_like_mut().and_then(|t| t.get_mut(seg)),
        };
        match next {
            Some(n) => item = n,
            None => return false,
        }
    }
    item.as_table_like_mut()
        .and_then(|t| t.remove(last))
        .is_some()
}

/// A command line that names something that does not exist (a board, a
/// node, a distro profile): exit status 2 like a bad manifest, with the
/// names that do exist in the message. `cli::main` matches it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

//! Rendered configuration files are parsed in the build itself: a value
//! that slipped past validation must stop the build, not surface as a
//! CRI-O or kubeadm that cannot read its file on the node.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use super::overlay::RenderedFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    Yaml,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Toml => "TOML",
            Format::Yaml => "YAML",
        }
    }
}

/// The format of a file by its path in the image: CRI-O's and the
/// containers tools' `.conf` drop-ins are TOML without saying so.
pub fn format_of(path: &str) -> Option<Format> {
    let toml_dirs = ["/etc/crio/", "/etc/containers/"];
    if path.ends_with(".toml")
        || (path.ends_with(".conf") && toml_dirs.iter().any(|d| path.starts_with(d)))
    {
        Some(Format::Toml)
    } else if path.ends_with(".yaml") || path.ends_with(".yml") {
        Some(Format::Yaml)
    } else {
        None
    }
}

/// Parses `text` as `format`; the error gives the parser's message and
/// position only, never a line of the file (kubeadm.yaml holds the
/// bootstrap token).
pub fn check_text(format: Format, text: &str) -> Result<(), String> {
    match format {
        Format::Toml => toml::from_str::<toml::Table>(text).map(drop).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            match line {
                Some(l) => format!("line {l}: {}", e.message()),
                None => e.message().to_string(),
            }
        }),
        Format::Yaml => {
            for doc in serde_yaml_ng::Deserializer::from_str(text) {
                serde_yaml_ng::Value::deserialize(doc).map_err(|e| match e.location() {
                    Some(l) => format!(
                        "line {} column {}: {}",
                        l.line(),
                        l.column(),
                        yaml_reason(&e)
                    ),
                    None => yaml_reason(&e),
                })?;
            }
            Ok(())
        }
    }
}

/// libyaml's reason without the position it appends (given separately).
fn yaml_reason(e: &serde_yaml_ng::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Parses every rendered file whose format habuild knows.
pub fn check_rendered(root: &Path, files: &[RenderedFile]) -> Result<()> {
    for f in files {
        let Some(format) = format_of(&f.path) else {
            continue;
        };
        let on_disk = root.join(f.path.trim_start_matches('/'));
        let text = std::fs::read_to_string(&on_disk)
            .with_context(|| format!("reading the rendered {} to parse it", f.path))?;
        if let Err(e) = check_text(format, &text) {
            bail!(
                "the rendered {} is not valid {} ({e}): a manifest value broke its syntax",
                f.path,
                format.name()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> (tempfile::TempDir, Vec<RenderedFile>) {
        let t = tempfile::tempdir().unwrap();
        let mut listed = Vec::new();
        for (path, text) in files {
            let p = t.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            listed.push(RenderedFile {
                path: path.to_string(),
                sha256: String::new(),
                mode: 0o644,
            });
        }
        (t, listed)
    }

    const CRIO: &str = "/etc/crio/crio.conf.d/10-habuild.conf";
    const KUBEADM: &str = "/etc/habuild/kubeadm/kubeadm.yaml";

    #[test]
    fn well_formed_files_pass() {
        let (t, files) = tree(&[
            (CRIO, "[crio.image]\npause_image = \"r.example/k8s/pause:3.10\"\n"),
            (KUBEADM, "kind: InitConfiguration\n---\nkind: ClusterConfiguration\nimageRepository: r.example/k8s\n"),
            ("/etc/hostname", "not: [a format we know\n"),
        ]);
        check_rendered(t.path(), &files).unwrap();
    }

    #[test]
    fn what_a_hostile_image_repository_rendered_is_refused() {
        // What the templates made of `image_repository = "r.example/k8s\"x"`
        // and of `"*.example/k8s"` before validation refused them.
        let (t, files) = tree(&[(
            CRIO,
            "[crio.image]\npause_image = \"r.example/k8s\"x/pause:3.10\"\n",
        )]);
        let msg = format!("{:#}", check_rendered(t.path(), &files).unwrap_err());
        assert!(msg.contains(CRIO) && msg.contains("TOML"), "{msg}");
        assert!(
            !msg.contains("pause_image"),
            "the file's content leaked: {msg}"
        );

        let (t, files) = tree(&[(
            KUBEADM,
            "kind: ClusterConfiguration\nimageRepository: *.example/k8s\ntoken: abcdef.0123456789abcdef\n---\nkind: X\n",
        )]);
        let msg = format!("{:#}", check_rendered(t.path(), &files).unwrap_err());
        assert!(msg.contains(KUBEADM) && msg.contains("YAML"), "{msg}");
        assert!(!msg.contains("0123456789abcdef"), "the token leaked: {msg}");
    }
}

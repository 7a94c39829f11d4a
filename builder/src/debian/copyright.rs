//! Licenses as a package states them: `/usr/share/doc/<pkg>/copyright` in
//! the machine-readable format (DEP-5, "copyright-format 1.0"). Files in
//! free-form text say nothing a tool can rely on, and are skipped.

use std::path::Path;

use anyhow::{Context, Result};

/// The license short names of a DEP-5 copyright file, in order of first
/// appearance (`GPL-2+`, `LGPL-2.1+ or BSD-3-clause`, ...); empty when the
/// file is not machine-readable.
pub fn licenses(text: &str) -> Vec<String> {
    let machine_readable = text
        .lines()
        .next()
        .is_some_and(|l| l.starts_with("Format:") && l.contains("copyright-format"));
    if !machine_readable {
        return Vec::new();
    }
    let mut out: Vec<String> = Vec::new();
    // Only paragraphs with Files: name a license that applies to the
    // package; stand-alone License: paragraphs hold the texts.
    for para in text.split("\n\n") {
        let mut files = false;
        let mut license = None;
        for line in para.lines() {
            if line.starts_with([' ', '\t']) {
                continue;
            }
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            match key.trim().to_ascii_lowercase().as_str() {
                "files" => files = true,
                "license" => license = Some(value.trim().to_string()),
                _ => {}
            }
        }
        if let Some(l) = license.filter(|l| files && !l.is_empty()) {
            if !out.contains(&l) {
                out.push(l);
            }
        }
    }
    out
}

/// The licenses of package `name` installed in `root`; empty when its
/// copyright file is missing or not machine-readable. A path that leaves
/// the tree (an absolute symlink) is not followed.
pub fn package_licenses(root: &Path, name: &str) -> Result<Vec<String>> {
    let path = root.join("usr/share/doc").join(name).join("copyright");
    let Ok(real) = path.canonicalize() else {
        return Ok(Vec::new());
    };
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    if !real.starts_with(&root) {
        return Ok(Vec::new());
    }
    let bytes = std::fs::read(&real).with_context(|| format!("reading {}", real.display()))?;
    Ok(licenses(&String::from_utf8_lossy(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP5: &str = "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: curl

Files: *
Copyright: 1996-2024, Daniel Stenberg
License: curl

Files: lib/md4.c
Copyright: 2001, Alexander Peslyak
License: public-domain
 Public domain.

Files: debian/*
Copyright: 2024, Someone
License: curl

License: curl
 Permission to use...

License: GPL-2+
 Text of a license no Files: paragraph uses.
";

    #[test]
    fn files_paragraphs_name_the_licenses_once() {
        assert_eq!(licenses(DEP5), ["curl", "public-domain"]);
    }

    #[test]
    fn free_form_files_say_nothing() {
        assert!(licenses("This package was debianized by ...\nLicense: GPL\n").is_empty());
        assert!(licenses("").is_empty());
    }

    #[test]
    fn reads_from_the_tree_and_stays_inside_it() {
        let t = tempfile::tempdir().unwrap();
        let doc = t.path().join("usr/share/doc");
        std::fs::create_dir_all(doc.join("curl")).unwrap();
        std::fs::write(doc.join("curl/copyright"), DEP5).unwrap();
        // libcurl4's doc directory is a relative link to curl's.
        std::os::unix::fs::symlink("curl", doc.join("libcurl4")).unwrap();
        std::os::unix::fs::symlink("/etc", doc.join("escape")).unwrap();
        assert_eq!(
            package_licenses(t.path(), "libcurl4").unwrap(),
            ["curl", "public-domain"]
        );
        assert!(package_licenses(t.path(), "escape").unwrap().is_empty());
        assert!(package_licenses(t.path(), "missing").unwrap().is_empty());
    }
}

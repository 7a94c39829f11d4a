//! The host's apt configuration: which Debian mirror this machine uses.
//!
//! habuild never hard-codes a mirror. It takes one from `--mirror URL`, from
//! the environment variable [`MIRROR_ENV`], or from the host's own apt
//! sources, parsed here: deb822 `.sources` files and one-line `.list` files.
//! The parsers are pure; [`host_debian_mirror`] is the only I/O.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Environment variable that overrides the mirror found in the apt sources.
pub const MIRROR_ENV: &str = "HABUILD_DEBIAN_MIRROR";

/// The one-line sources file.
pub const SOURCES_LIST: &str = "/etc/apt/sources.list";
/// The directory of `*.list` and `*.sources` files.
pub const SOURCES_LIST_D: &str = "/etc/apt/sources.list.d";

/// `deb` (binary packages) or `deb-src` (source packages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryType {
    Deb,
    DebSrc,
}

impl EntryType {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "deb" => Some(Self::Deb),
            "deb-src" => Some(Self::DebSrc),
            _ => None,
        }
    }
}

/// One (type, URI, suite) triple of the apt configuration. A deb822 stanza
/// with several types, URIs or suites expands into one entry for each
/// combination, in the order apt itself would list them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    pub kind: EntryType,
    pub uri: String,
    pub suite: String,
    pub components: Vec<String>,
    /// `Signed-By` / `[signed-by=...]`: a keyring path, fingerprints, or an
    /// embedded key block (kept verbatim, lines joined by `\n`).
    pub signed_by: Option<String>,
    /// Where it came from, for messages: `file:line`.
    pub origin: String,
}

/// Parses a deb822 `.sources` file. `origin` names the file in each entry.
///
/// Handles several stanzas separated by blank lines, `#` comment lines
/// (which do not end a stanza), continuation lines (leading space or tab,
/// with ` .` standing for an empty line), case-insensitive field names, and
/// `Enabled: no`. Stanzas without a usable Types/URIs/Suites are skipped:
/// apt would reject them, and this parser only has to find a mirror.
pub fn parse_deb822(text: &str, origin: &str) -> Vec<SourceEntry> {
    let mut entries = Vec::new();
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut stanza_line = 0;

    let mut flush = |fields: &mut Vec<(String, String)>, line: usize| {
        if !fields.is_empty() {
            entries.extend(stanza_entries(fields, &format!("{origin}:{line}")));
            fields.clear();
        }
    };

    for (idx, raw) in text.lines().enumerate() {
        let lineno = idx + 1;
        if raw.starts_with('#') {
            continue;
        }
        if raw.trim().is_empty() {
            flush(&mut fields, stanza_line);
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            // Continuation of the previous field's value.
            if let Some((_, value)) = fields.last_mut() {
                let cont = raw.trim();
                value.push('\n');
                if cont != "." {
                    value.push_str(cont);
                }
            }
            continue;
        }
        if fields.is_empty() {
            stanza_line = lineno;
        }
        if let Some((name, value)) = raw.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    flush(&mut fields, stanza_line);
    entries
}

fn stanza_entries(fields: &[(String, String)], origin: &str) -> Vec<SourceEntry> {
    let get = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    if get("enabled").is_some_and(|v| v.trim().eq_ignore_ascii_case("no")) {
        return Vec::new();
    }
    let words = |name: &str| -> Vec<String> {
        get(name)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };
    let types: Vec<EntryType> = words("types")
        .iter()
        .filter_map(|t| EntryType::parse(t))
        .collect();
    let uris = words("uris");
    let suites = words("suites");
    let components = words("components");
    let signed_by = get("signed-by")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());

    let mut out = Vec::new();
    for kind in &types {
        for uri in &uris {
            for suite in &suites {
                out.push(SourceEntry {
                    kind: *kind,
                    uri: uri.clone(),
                    suite: suite.clone(),
                    components: components.clone(),
                    signed_by: signed_by.clone(),
                    origin: origin.to_string(),
                });
            }
        }
    }
    out
}

/// Parses a one-line-style `sources.list` file:
/// `deb [opt=value ...] uri suite [component ...]`. Everything after `#` is
/// a comment. Malformed lines are skipped.
pub fn parse_one_line(text: &str, origin: &str) -> Vec<SourceEntry> {
    text.lines()
        .enumerate()
        .filter_map(|(idx, line)| parse_one_line_entry(line, &format!("{origin}:{}", idx + 1)))
        .collect()
}

fn parse_one_line_entry(line: &str, origin: &str) -> Option<SourceEntry> {
    let line = line.split('#').next().unwrap_or("").trim();
    let (kind_word, rest) = line.split_once(char::is_whitespace)?;
    let kind = EntryType::parse(kind_word)?;
    let mut rest = rest.trim_start();

    let mut signed_by = None;
    if let Some(after) = rest.strip_prefix('[') {
        let (opts, tail) = after.split_once(']')?;
        for opt in opts.split_whitespace() {
            if let Some((key, value)) = opt.split_once('=') {
                if key.eq_ignore_ascii_case("signed-by") && !value.is_empty() {
                    signed_by = Some(value.to_string());
                }
            }
        }
        rest = tail.trim_start();
    }

    let mut words = rest.split_whitespace();
    let uri = words.next()?.to_string();
    let suite = words.next()?.to_string();
    let components = words.map(str::to_string).collect();
    Some(SourceEntry {
        kind,
        uri,
        suite,
        components,
        signed_by,
        origin: origin.to_string(),
    })
}

/// Parses a file by its name: `*.sources` as deb822, anything else as
/// one-line entries.
pub fn parse_file(path: &Path, text: &str) -> Vec<SourceEntry> {
    let origin = path.display().to_string();
    if path.extension().is_some_and(|e| e == "sources") {
        parse_deb822(text, &origin)
    } else {
        parse_one_line(text, &origin)
    }
}

/// Debian release names and aliases whose main archive a mirror serves.
const DEBIAN_SUITES: &[&str] = &[
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
    "sid",
    "oldstable",
    "stable",
    "testing",
    "unstable",
];

/// Whether `suite` is Debian's main archive (`bookworm`, `trixie-updates`,
/// `bookworm-backports`, ...) rather than the security archive or a
/// third-party suite.
pub fn is_debian_suite(suite: &str) -> bool {
    let base = suite
        .strip_suffix("-updates")
        .or_else(|| suite.strip_suffix("-backports"))
        .unwrap_or(suite);
    DEBIAN_SUITES.contains(&base)
}

/// Whether an entry is Debian's own archive (not security, not a
/// third-party repository).
///
/// Rules: a binary (`deb`) entry, with component `main`, for a Debian suite
/// (see [`is_debian_suite`]), not on a `debian-security` path; and either
/// signed by Debian's archive keyring, or with no `Signed-By` at all and a
/// URI whose path ends in `/debian`. An entry signed by any other key is a
/// third-party repository even if its path ends in `/debian` (Docker's does).
pub fn is_debian_archive(entry: &SourceEntry) -> bool {
    if entry.kind != EntryType::Deb
        || !entry.components.iter().any(|c| c == "main")
        || !is_debian_suite(&entry.suite)
        || entry.uri.starts_with("cdrom:")
        || entry.uri.contains("debian-security")
    {
        return false;
    }
    match &entry.signed_by {
        Some(key) => key.contains("debian-archive"),
        None => entry.uri.trim_end_matches('/').ends_with("/debian"),
    }
}

/// The URI (without trailing `/`) of the first entry that serves Debian
/// itself, see [`is_debian_archive`].
pub fn debian_mirror(entries: &[SourceEntry]) -> Option<String> {
    entries
        .iter()
        .find(|e| is_debian_archive(e))
        .map(|e| e.uri.trim_end_matches('/').to_string())
}

/// Pure core of [`host_debian_mirror`]: the environment override if set,
/// else the first Debian entry of `files` (path and content, in apt's
/// reading order). The error names every file read.
pub fn choose_debian_mirror(env: Option<&str>, files: &[(PathBuf, String)]) -> Result<String> {
    if let Some(url) = env.map(str::trim).filter(|u| !u.is_empty()) {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let entries: Vec<SourceEntry> = files
        .iter()
        .flat_map(|(path, text)| parse_file(path, text))
        .collect();
    if let Some(mirror) = debian_mirror(&entries) {
        return Ok(mirror);
    }
    let read = if files.is_empty() {
        "none found".to_string()
    } else {
        files
            .iter()
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    bail!(
        "no Debian archive entry (a `deb` entry for bookworm/trixie/sid/stable/testing, \
         component main, signed by debian-archive-keyring or with a URI ending in /debian) \
         in the host's apt sources (read: {read}); pass the mirror explicitly with \
         `--mirror URL` or the environment variable {MIRROR_ENV}=URL"
    )
}

/// The apt source files apt reads, in its order: `sources.list`, then
/// `sources.list.d/*.list` and `*.sources` sorted by name. Missing paths
/// are skipped.
pub fn read_host_source_files() -> Result<Vec<(PathBuf, String)>> {
    let mut paths = Vec::new();
    let main = PathBuf::from(SOURCES_LIST);
    if main.is_file() {
        paths.push(main);
    }
    let dir = Path::new(SOURCES_LIST_D);
    if dir.is_dir() {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry
                .with_context(|| format!("listing {}", dir.display()))?
                .path();
            let wanted = path
                .extension()
                .is_some_and(|e| e == "list" || e == "sources");
            if wanted && path.is_file() {
                found.push(path);
            }
        }
        found.sort();
        paths.extend(found);
    }
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("reading apt source file {}", p.display()))?;
            Ok((p, text))
        })
        .collect()
}

/// Every entry of the host's apt configuration.
pub fn host_entries() -> Result<Vec<SourceEntry>> {
    Ok(read_host_source_files()?
        .iter()
        .flat_map(|(path, text)| parse_file(path, text))
        .collect())
}

/// The Debian mirror to use: `$HABUILD_DEBIAN_MIRROR` if set, else the URI
/// of the host's first Debian archive entry.
pub fn host_debian_mirror() -> Result<String> {
    let env = std::env::var(MIRROR_ENV).ok();
    if let Some(url) = env.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let files = read_host_source_files().context("reading the host's apt sources")?;
    choose_debian_mirror(None, &files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pretty_assertions::assert_eq;

    const DEB822: &str = "\
# Main archive, pinned snapshot:
# http://snapshot.example/archive/debian/20250520T000000Z
Types: deb deb-src
URIs: http://mirror.example/debian/
Suites: bookworm bookworm-updates
Components: main non-free-firmware
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
# a comment inside a stanza does not end it
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Components: main
Enabled: no
";

    #[test]
    fn deb822_expands_stanzas() {
        let e = parse_deb822(DEB822, "debian.sources");
        let triples: Vec<(EntryType, &str, &str)> = e
            .iter()
            .map(|e| (e.kind, e.uri.as_str(), e.suite.as_str()))
            .collect();
        assert_eq!(
            triples,
            vec![
                (EntryType::Deb, "http://mirror.example/debian/", "bookworm"),
                (
                    EntryType::Deb,
                    "http://mirror.example/debian/",
                    "bookworm-updates"
                ),
                (
                    EntryType::DebSrc,
                    "http://mirror.example/debian/",
                    "bookworm"
                ),
                (
                    EntryType::DebSrc,
                    "http://mirror.example/debian/",
                    "bookworm-updates"
                ),
                (
                    EntryType::Deb,
                    "http://mirror.example/debian-security",
                    "bookworm-security"
                ),
            ]
        );
        assert_eq!(e[0].components, vec!["main", "non-free-firmware"]);
        assert_eq!(
            e[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert_eq!(e[0].origin, "debian.sources:3");
        assert_eq!(e[4].origin, "debian.sources:9");
    }

    #[test]
    fn deb822_continuation_and_embedded_key() {
        let text = "\
types: deb
uris:
 http://one.example/debian
 http://two.example/debian
suites: trixie
components: main
signed-by:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBFxyz
 -----END PGP PUBLIC KEY BLOCK-----
";
        let e = parse_deb822(text, "x.sources");
        assert_eq!(e.len(), 2);
        assert_eq!(e[1].uri, "http://two.example/debian");
        assert_eq!(
            e[0].signed_by.as_deref(),
            Some("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBFxyz\n-----END PGP PUBLIC KEY BLOCK-----")
        );
    }

    #[test]
    fn one_line_with_options_and_comments() {
        let text = "\
# comment line
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian bookworm main contrib # trailing
deb-src http://mirror.example/debian bookworm main
deb [ signed-by=/etc/apt/keyrings/x.gpg ] https://third.example/apt stable main

bogus line here
deb http://short.example/debian
";
        let e = parse_one_line(text, "sources.list");
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].kind, EntryType::Deb);
        assert_eq!(e[0].uri, "http://mirror.example/debian");
        assert_eq!(e[0].suite, "bookworm");
        assert_eq!(e[0].components, vec!["main", "contrib"]);
        assert_eq!(
            e[0].signed_by.as_deref(),
            Some("/usr/share/keyrings/debian-archive-keyring.gpg")
        );
        assert_eq!(e[0].origin, "sources.list:2");
        assert_eq!(e[1].kind, EntryType::DebSrc);
        assert_eq!(e[1].signed_by, None);
        assert_eq!(e[2].uri, "https://third.example/apt");
        assert_eq!(e[2].signed_by.as_deref(), Some("/etc/apt/keyrings/x.gpg"));
    }

    #[test]
    fn mirror_skips_security_and_third_party() {
        let sources = "\
Types: deb
URIs: https://nodes.example/node_20.x
Suites: nodistro
Components: main
Signed-By: /usr/share/keyrings/nodesource.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
URIs: https://docker.example/linux/debian
Suites: bookworm
Components: stable
Signed-By: /etc/apt/keyrings/docker.asc

Types: deb
URIs: https://docker2.example/linux/debian
Suites: bookworm
Components: main
Signed-By: /etc/apt/keyrings/docker.asc

Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";
        let list = "deb [signed-by=/usr/share/keyrings/cloud.gpg] https://cloud.example/apt cloud-sdk-bookworm main\n";
        let mut entries = parse_one_line(list, "google.list");
        entries.extend(parse_deb822(sources, "all.sources"));
        assert_eq!(
            debian_mirror(&entries).as_deref(),
            Some("http://mirror.example/debian")
        );
    }

    #[test]
    fn mirror_from_unsigned_one_line_needs_debian_path() {
        let e = parse_one_line(
            "deb http://other.example/ubuntu bookworm main\n\
             deb http://old.example/debian/ stable main\n",
            "sources.list",
        );
        assert_eq!(
            debian_mirror(&e).as_deref(),
            Some("http://old.example/debian")
        );
        // Signed by Debian's keyring: the path does not matter.
        let e = parse_one_line(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://m.example/pub/deb trixie-updates main\n",
            "l",
        );
        assert_eq!(
            debian_mirror(&e).as_deref(),
            Some("http://m.example/pub/deb")
        );
        // Old-style security suite is not the archive.
        let e = parse_one_line("deb http://s.example/debian bullseye/updates main\n", "l");
        assert_eq!(debian_mirror(&e), None);
    }

    #[test]
    fn suites() {
        for s in [
            "bookworm",
            "trixie-updates",
            "sid",
            "stable",
            "testing",
            "bookworm-backports",
        ] {
            assert!(is_debian_suite(s), "{s}");
        }
        for s in [
            "bookworm-security",
            "nodistro",
            "cloud-sdk-bookworm",
            "noble",
            "jammy-updates",
        ] {
            assert!(!is_debian_suite(s), "{s}");
        }
    }

    #[test]
    fn env_overrides_files() {
        let files = vec![(
            PathBuf::from("/etc/apt/sources.list"),
            "deb http://a.example/debian sid main\n".into(),
        )];
        assert_eq!(
            choose_debian_mirror(Some("http://mirror.example/debian/"), &files).unwrap(),
            "http://mirror.example/debian"
        );
        assert_eq!(
            choose_debian_mirror(Some("  "), &files).unwrap(),
            "http://a.example/debian"
        );
    }

    #[test]
    fn error_names_files_and_how_to_override() {
        let files = vec![
            (
                PathBuf::from("/etc/apt/sources.list.d/a.sources"),
                String::new(),
            ),
            (
                PathBuf::from("/etc/apt/sources.list.d/b.list"),
                "deb https://third.example/apt nodistro main\n".into(),
            ),
        ];
        let msg = format!("{:#}", choose_debian_mirror(None, &files).unwrap_err());
        assert!(msg.contains("/etc/apt/sources.list.d/a.sources"), "{msg}");
        assert!(msg.contains("/etc/apt/sources.list.d/b.list"), "{msg}");
        assert!(msg.contains("--mirror URL"), "{msg}");
        assert!(msg.contains(MIRROR_ENV), "{msg}");
        let msg = format!("{:#}", choose_debian_mirror(None, &[]).unwrap_err());
        assert!(msg.contains("none found"), "{msg}");
    }

    #[test]
    fn parse_file_dispatches_on_extension() {
        let deb822 = "Types: deb\nURIs: http://m.example/debian\nSuites: sid\nComponents: main\n";
        assert_eq!(parse_file(Path::new("/x/debian.sources"), deb822).len(), 1);
        assert_eq!(parse_file(Path::new("/x/debian.list"), deb822).len(), 0);
    }

    /// The real host: whatever its sources say, reading them must not fail,
    /// and a Debian build machine has a Debian entry.
    #[test]
    fn host_sources_are_readable() {
        let files = read_host_source_files().unwrap();
        let is_debian =
            std::fs::read_to_string("/etc/os-release").is_ok_and(|t| t.contains("ID=debian"));
        if is_debian && !files.is_empty() {
            let mirror = choose_debian_mirror(None, &files).unwrap();
            assert!(mirror.contains("://"), "{mirror}");
        }
    }
}

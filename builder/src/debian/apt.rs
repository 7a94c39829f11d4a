//! The pure side of resolving a base with apt: the configuration habuild
//! gives apt in a scratch directory, the package patterns mmdebstrap uses,
//! and parsers for what apt prints and stores. `resolve` does the I/O.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::debian::deb822::stanzas;
use crate::debian::packages::InstalledPackage;

/// apt's configuration for a scratch root: only the target architecture,
/// nothing from the host's apt configuration (`Dir` moves every path, and
/// keys come only from each source's `signed-by`), no recommends, like
/// mmdebstrap's own (`mmdebstrap`'s `setup_apt`).
pub fn apt_config(root: &Path, arch: &str, allow_expired: bool) -> String {
    let root = root.display();
    let mut c = format!(
        "Dir \"{root}/\";\n\
         Dir::State::Status \"{root}/var/lib/dpkg/status\";\n\
         Dir::Etc::Trusted \"{root}/etc/apt/trusted.gpg\";\n\
         Dir::Etc::TrustedParts \"{root}/etc/apt/trusted.gpg.d\";\n\
         APT::Architecture \"{arch}\";\n\
         APT::Architectures \"{arch}\";\n\
         pkgCacheGen::ForceEssential \",\";\n\
         APT::Install-Recommends \"false\";\n\
         Acquire::Languages \"none\";\n\
         Acquire::GzipIndexes \"false\";\n\
         APT::Get::AllowUnauthenticated \"false\";\n\
         Acquire::Retries \"2\";\n\
         Acquire::http::Timeout \"30\";\n\
         Acquire::https::Timeout \"30\";\n"
    );
    // The scratch root is private to this process, so apt's unprivileged
    // download user could not write into it.
    c.push_str("APT::Sandbox::User \"root\";\n");
    if allow_expired {
        c.push_str(EXPIRED_RELEASE_OPTION);
        c.push('\n');
    }
    c
}

/// Lets apt take a Release file past its `Valid-Until`, as a snapshot
/// mirror's are. Only for builds against a lock: the lock pins what the
/// archive must give, so an old (even replayed) index cannot slip in
/// anything the lock does not name.
pub const EXPIRED_RELEASE_OPTION: &str = "Acquire::Check-Valid-Until \"false\";";

/// mmdebstrap's first step for every variant but extract/custom: the
/// Essential:yes packages of the suite, for the native architecture.
pub fn essential_pattern(suite: &str, arch: &str) -> String {
    format!(
        "?narrow(?or(?archive(^{suite}$),?codename(^{suite}$)),?architecture({arch}),?essential)"
    )
}

/// What mmdebstrap's `required` (alias `minbase`) variant installs after
/// the essential set, besides `apt` and the includes.
pub fn required_pattern(suite: &str, arch: &str) -> String {
    format!("?narrow(?or(?archive(^{suite}$),?codename(^{suite}$)),?architecture({arch}),?and(?priority(required),?not(?essential)))")
}

/// The packages `apt-get -s install` would install, from its `Inst` lines:
/// `Inst NAME [OLD] (VERSION RELEASE... [ARCH])`.
pub fn parse_simulation(stdout: &str) -> Result<Vec<InstalledPackage>> {
    let mut out = Vec::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let parse = || -> Option<InstalledPackage> {
            let (name, rest) = rest.split_once(' ')?;
            let rest = match rest.strip_prefix('[') {
                Some(r) => r.split_once("] ")?.1,
                None => rest,
            };
            // A trailing ` []` (packages apt would break) may follow.
            let (inner, _) = rest.strip_prefix('(')?.rsplit_once(')')?;
            let (version, inner) = inner.split_once(' ')?;
            let (_, arch) = inner.rsplit_once('[')?;
            let arch = arch.strip_suffix(']')?;
            Some(InstalledPackage {
                name: name.split(':').next()?.to_string(),
                version: version.to_string(),
                architecture: arch.to_string(),
            })
        };
        match parse() {
            Some(p) => out.push(p),
            None => bail!("cannot read apt's simulation line {line:?}"),
        }
    }
    Ok(out)
}

/// One Packages index apt fetched (`apt-get indextargets`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagesIndex {
    pub file: PathBuf,
    /// `Repo-URI`: the source's URI with a trailing `/`.
    pub repo_uri: String,
    /// `Release`: the suite as the source names it.
    pub suite: String,
    pub meta_key: String,
}

impl PackagesIndex {
    /// The suite's InRelease file beside the index in apt's lists
    /// directory: apt names both after their URI, the index's ending in its
    /// `MetaKey` with `/` turned into `_`.
    pub fn inrelease_file(&self) -> Result<PathBuf> {
        let name = self.file.to_string_lossy();
        let suffix = self.meta_key.replace('/', "_");
        match name.strip_suffix(&suffix) {
            Some(prefix) => Ok(PathBuf::from(format!("{prefix}InRelease"))),
            None => bail!(
                "apt's index file {name} does not end in its key {} as expected",
                self.meta_key
            ),
        }
    }
}

/// The Packages indexes in `apt-get indextargets` output.
pub fn parse_index_targets(text: &str) -> Vec<PackagesIndex> {
    stanzas(text)
        .iter()
        .filter(|s| s.get("Created-By") == Some("Packages"))
        .filter_map(|s| {
            Some(PackagesIndex {
                file: PathBuf::from(s.get("Filename")?),
                repo_uri: s.get("Repo-URI")?.to_string(),
                suite: s.get("Release")?.to_string(),
                meta_key: s.get("MetaKey")?.to_string(),
            })
        })
        .collect()
}

/// A package version an index offers: its stanza and the .deb's SHA256.
#[derive(Debug, Clone, Copy)]
pub struct Offered<'a> {
    pub stanza: &'a str,
    pub sha256: &'a str,
    /// Which of the indexes given to `index_packages` offered it first.
    pub index: usize,
}

/// (name, version, architecture) → what offers it, over several Packages
/// indexes; the first index that offers a version wins.
pub type PackageIndex<'a> = HashMap<(&'a str, &'a str, &'a str), Offered<'a>>;

pub fn index_packages<'a>(texts: &[&'a str]) -> PackageIndex<'a> {
    let mut map = PackageIndex::new();
    for (index, text) in texts.iter().enumerate() {
        for s in stanzas(text) {
            if let (Some(n), Some(v), Some(a), Some(sha)) = (
                s.get("Package"),
                s.get("Version"),
                s.get("Architecture"),
                s.get("SHA256"),
            ) {
                map.entry((n, v, a)).or_insert(Offered {
                    stanza: s.text,
                    sha256: sha,
                    index,
                });
            }
        }
    }
    map
}

/// A dpkg status file in which the given Packages stanzas are installed:
/// the state that the next install step of the bootstrap starts from.
pub fn dpkg_status<'a>(installed: impl Iterator<Item = &'a str>) -> String {
    let mut out = String::new();
    for stanza in installed {
        out.push_str(stanza.trim_end());
        out.push_str("\nStatus: install ok installed\n\n");
    }
    out
}

/// The `Date` field of a (signed) Release file.
pub fn release_date(text: &str) -> Option<&str> {
    stanzas(text).iter().find_map(|s| s.get("Date"))
}

/// A Release `Date` (`Sat, 21 Nov 2026 09:15:44 UTC`) as a snapshot
/// mirror's timestamp, `20261121T091544Z`.
pub fn snapshot_timestamp(date: &str) -> Result<String> {
    use time::format_description::well_known::Rfc2822;
    // Archives write the zone as `UTC`, which RFC 2822 spells `+0000`.
    let normalized = match date.trim().strip_suffix(" UTC") {
        Some(d) => format!("{d} +0000"),
        None => date.trim().to_string(),
    };
    let t = time::OffsetDateTime::parse(&normalized, &Rfc2822)
        .with_context(|| format!("reading the Release date {date:?}"))?
        .to_offset(time::UtcOffset::UTC);
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    t.format(&fmt)
        .with_context(|| format!("formatting the Release date {date:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `apt-get -s install` as apt 2.6 prints it (trimmed), including a
    /// local .deb and an upgrade line.
    const SIMULATION: &str = "Reading package lists...
Building dependency tree...
The following NEW packages will be installed:
  gcc-14-base libc6
Inst gcc-14-base (14.2.0-19 Debian:13.8/stable [arm64])
Inst libc6 (2.41-12+deb13u5 Debian:13.8/stable [arm64]) []
Inst ncurses-base (6.5+20250216-2 Debian:13.8/stable [all])
Inst kubeadm (1.31.4-1.1 local-deb [arm64])
Inst base-files [13.7] (13.8+deb13u8 Debian:13.8/stable, Debian:13.8/stable-updates [arm64])
Conf libc6 (2.41-12+deb13u5 Debian:13.8/stable [arm64])
";

    #[test]
    fn reads_simulated_installs() {
        let p = parse_simulation(SIMULATION).unwrap();
        let got: Vec<String> = p
            .iter()
            .map(|p| format!("{} {} {}", p.name, p.version, p.architecture))
            .collect();
        assert_eq!(
            got,
            [
                "gcc-14-base 14.2.0-19 arm64",
                "libc6 2.41-12+deb13u5 arm64",
                "ncurses-base 6.5+20250216-2 all",
                "kubeadm 1.31.4-1.1 arm64",
                "base-files 13.8+deb13u8 arm64",
            ]
        );
        assert!(parse_simulation("Inst broken\n").is_err());
    }

    const INDEXTARGETS: &str = "MetaKey: main/binary-arm64/Packages
ShortDesc: Packages
Filename: /s/var/lib/apt/lists/mirror.example_debian_dists_trixie_main_binary-arm64_Packages
Release: trixie
Repo-URI: http://mirror.example/debian/
Created-By: Packages
Component: main

MetaKey: main/i18n/Translation-en
Filename: /s/var/lib/apt/lists/mirror.example_debian_dists_trixie_main_i18n_Translation-en
Release: trixie
Repo-URI: http://mirror.example/debian/
Created-By: Translations

MetaKey: Packages
Filename: /s/var/lib/apt/lists/pkgs.k8s.io_core:_stable:_v1.31_deb_Packages
Release: /
Repo-URI: https://pkgs.k8s.io/core:/stable:/v1.31/deb/
Created-By: Packages
";

    #[test]
    fn finds_packages_indexes_and_their_inrelease() {
        let t = parse_index_targets(INDEXTARGETS);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].suite, "trixie");
        assert_eq!(
            t[0].inrelease_file().unwrap(),
            PathBuf::from("/s/var/lib/apt/lists/mirror.example_debian_dists_trixie_InRelease")
        );
        assert_eq!(
            t[1].inrelease_file().unwrap(),
            PathBuf::from("/s/var/lib/apt/lists/pkgs.k8s.io_core:_stable:_v1.31_deb_InRelease")
        );
        let odd = PackagesIndex {
            meta_key: "main/binary-arm64/Packages".into(),
            file: "/s/other".into(),
            ..t[0].clone()
        };
        assert!(odd.inrelease_file().is_err());
    }

    const PACKAGES_MAIN: &str = "Package: libc6
Source: glibc
Version: 2.41-12+deb13u5
Architecture: arm64
Description: GNU C Library: Shared libraries
 Contains the standard libraries.
SHA256: 1111111111111111111111111111111111111111111111111111111111111111

Package: adduser
Version: 3.152
Architecture: all
SHA256: 2222222222222222222222222222222222222222222222222222222222222222
";

    const PACKAGES_UPDATES: &str = "Package: adduser
Version: 3.152
Architecture: all
SHA256: 2222222222222222222222222222222222222222222222222222222222222222

Package: tzdata
Version: 2025b-4+deb13u1
Architecture: all
SHA256: 3333333333333333333333333333333333333333333333333333333333333333
";

    #[test]
    fn indexes_packages_first_index_wins() {
        let idx = index_packages(&[PACKAGES_MAIN, PACKAGES_UPDATES]);
        assert_eq!(idx.len(), 3);
        let libc = idx[&("libc6", "2.41-12+deb13u5", "arm64")];
        assert_eq!(libc.sha256, "1".repeat(64));
        assert_eq!(libc.index, 0);
        assert!(libc.stanza.contains(" Contains the standard libraries."));
        assert_eq!(idx[&("adduser", "3.152", "all")].index, 0);
        assert_eq!(idx[&("tzdata", "2025b-4+deb13u1", "all")].index, 1);

        let status = dpkg_status([libc.stanza].into_iter());
        let installed = crate::debian::packages::parse_dpkg_status(&status);
        assert_eq!(installed.len(), 1);
        assert_eq!(installed[0].name, "libc6");
    }

    const INRELEASE: &str = "-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

Origin: Debian
Suite: stable
Codename: trixie
Date: Sat, 21 Nov 2026 09:15:44 UTC
Acquire-By-Hash: yes
SHA256:
 136e3dbb32870f133a6579f06706fccf  3065555 contrib/Contents-amd64
-----BEGIN PGP SIGNATURE-----

iQIzBAEBCAAdFiEE
-----END PGP SIGNATURE-----
";

    #[test]
    fn release_date_and_snapshot_timestamp() {
        let date = release_date(INRELEASE).unwrap();
        assert_eq!(date, "Sat, 21 Nov 2026 09:15:44 UTC");
        assert_eq!(snapshot_timestamp(date).unwrap(), "20261121T091544Z");
        assert_eq!(
            snapshot_timestamp("Thu, 25 Apr 2024 17:10:33 +0200").unwrap(),
            "20240425T151033Z"
        );
        assert_eq!(
            snapshot_timestamp("Mon, 3 Feb 2025 01:02:03 UTC").unwrap(),
            "20250203T010203Z"
        );
        assert!(snapshot_timestamp("yesterday").is_err());
        assert_eq!(release_date("Origin: x\n"), None);
    }

    #[test]
    fn config_is_isolated_and_lenient_only_when_asked() {
        let strict = apt_config(Path::new("/s"), "arm64", false);
        assert!(strict.contains("Dir \"/s/\";"));
        assert!(strict.contains("APT::Architectures \"arm64\";"));
        assert!(strict.contains("Dir::Etc::TrustedParts \"/s/etc/apt/trusted.gpg.d\";"));
        assert!(!strict.contains("Check-Valid-Until"));
        assert!(apt_config(Path::new("/s"), "arm64", true).contains(EXPIRED_RELEASE_OPTION));
        assert_eq!(
            essential_pattern("trixie", "arm64"),
            "?narrow(?or(?archive(^trixie$),?codename(^trixie$)),?architecture(arm64),?essential)"
        );
    }
}

//! What is installed in a root filesystem, read from dpkg's status file
//! (no chroot, no dpkg on the host needed).

use serde::{Deserialize, Serialize};

use crate::debian::deb822::stanzas;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

/// Parses `/var/lib/dpkg/status`; keeps packages whose status is
/// "install ok installed", sorted by name.
pub fn parse_dpkg_status(text: &str) -> Vec<InstalledPackage> {
    let mut out: Vec<InstalledPackage> = stanzas(text)
        .iter()
        .filter(|s| s.get("Status") == Some("install ok installed"))
        .filter_map(|s| {
            Some(InstalledPackage {
                name: s.get("Package")?.to_string(),
                version: s.get("Version")?.to_string(),
                architecture: s.get("Architecture")?.to_string(),
            })
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: bash\nEssential: yes\nStatus: install ok installed\nPriority: required\nArchitecture: arm64\nVersion: 5.2.37-2\nDescription: GNU Bourne Again SHell\n bash is ...\n\nPackage: removed-thing\nStatus: deinstall ok config-files\nArchitecture: arm64\nVersion: 1.0\n\nPackage: adduser\nStatus: install ok installed\nArchitecture: all\nVersion: 3.152\n";

    #[test]
    fn keeps_installed_sorted() {
        let p = parse_dpkg_status(STATUS);
        assert_eq!(
            p,
            vec![
                InstalledPackage {
                    name: "adduser".into(),
                    version: "3.152".into(),
                    architecture: "all".into()
                },
                InstalledPackage {
                    name: "bash".into(),
                    version: "5.2.37-2".into(),
                    architecture: "arm64".into()
                },
            ]
        );
    }

    #[test]
    fn field_prefix_is_exact() {
        // "Package-Type:" must not be read as "Package:".
        let p = parse_dpkg_status("Package-Type: udeb\nPackage: x\nStatus: install ok installed\nArchitecture: all\nVersion: 1\n");
        assert_eq!(p[0].name, "x");
    }
}

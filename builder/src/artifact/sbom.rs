//! `<node>.cdx.json`: the image's software bill of materials as a
//! CycloneDX 1.5 JSON document, beside `<node>.json` (which stays
//! habuild's own report). Every installed package is a component with its
//! package URL (`pkg:deb/debian/NAME@VERSION?arch=ARCH&distro=SUITE`),
//! version and architecture; the .deb's sha256 where the lock file pins it
//! (its value is the archive's own, from the Packages index), and the
//! licenses its DEP-5 copyright file names.
//!
//! Deterministic: no random serial number and no wall-clock time. The
//! serial number is a UUID v5 of the document's own content and the
//! timestamp is SOURCE_DATE_EPOCH, so the same inputs give the same bytes.

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// The specification version written.
pub const SPEC_VERSION: &str = "1.5";

/// File name of a node's SBOM.
pub fn file_name(node: &str) -> String {
    format!("{node}.cdx.json")
}

/// One installed package as the SBOM lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbomPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// The .deb's SHA-256, when known (a lock file pins it).
    pub sha256: Option<String>,
    /// License short names from the package's DEP-5 copyright file.
    pub licenses: Vec<String>,
}

/// What the SBOM describes and who made it.
#[derive(Debug, Clone)]
pub struct SbomInput<'a> {
    pub cluster: &'a str,
    pub node: &'a str,
    pub role: &'a str,
    pub board: &'a str,
    /// purl namespace: `debian` or `ubuntu`.
    pub vendor: &'a str,
    /// The distro profile (`debian-13`) and its suite (`trixie`).
    pub distro: &'a str,
    pub suite: &'a str,
    pub image_file: &'a str,
    pub source_date_epoch: i64,
    pub habuild_version: &'a str,
    pub habuild_commit: &'a str,
    pub packages: &'a [SbomPackage],
}

/// The purl namespace of a distro profile (`ubuntu-24.04` → `ubuntu`).
pub fn vendor_of(distro: &str) -> &str {
    distro.split('-').next().unwrap_or(distro)
}

/// Percent-encodes a purl segment or qualifier value: everything but
/// unreserved characters (so a Debian epoch's `:` and `+` are encoded).
fn pct(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `pkg:deb/<vendor>/<name>@<version>?arch=<arch>&distro=<suite>`.
pub fn purl(vendor: &str, p: &SbomPackage, suite: &str) -> String {
    format!(
        "pkg:deb/{}/{}@{}?arch={}&distro={}",
        pct(vendor),
        pct(&p.name),
        pct(&p.version),
        pct(&p.arch),
        pct(suite)
    )
}

fn component(input: &SbomInput, p: &SbomPackage) -> Value {
    let purl = purl(input.vendor, p, input.suite);
    let mut c = json!({
        "type": "library",
        "bom-ref": purl,
        "name": p.name,
        "version": p.version,
        "purl": purl,
        "properties": [{"name": "habuild:architecture", "value": p.arch}],
    });
    if let Some(sha) = &p.sha256 {
        c["hashes"] = json!([{"alg": "SHA-256", "content": sha}]);
    }
    if !p.licenses.is_empty() {
        // Debian's short names (GPL-2+) are not all SPDX ids: named, not id'd.
        c["licenses"] = p
            .licenses
            .iter()
            .map(|l| json!({"license": {"name": l}}))
            .collect();
    }
    c
}

/// The CycloneDX document, serialised (pretty, with a final newline).
pub fn render(input: &SbomInput) -> Result<Vec<u8>> {
    let mut packages: Vec<&SbomPackage> = input.packages.iter().collect();
    packages.sort_by(|a, b| (&a.name, &a.arch, &a.version).cmp(&(&b.name, &b.arch, &b.version)));
    packages.dedup_by(|a, b| (&a.name, &a.arch, &a.version) == (&b.name, &b.arch, &b.version));
    let components: Vec<Value> = packages.iter().map(|p| component(input, p)).collect();
    let image_ref = format!("habuild/{}/{}", input.cluster, input.node);
    let mut doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": SPEC_VERSION,
        "version": 1,
        "metadata": {
            "timestamp": crate::util::epoch::rfc3339(input.source_date_epoch)?,
            "tools": {
                "components": [{
                    "type": "application",
                    "name": "habuild",
                    "version": input.habuild_version,
                    "properties": [{"name": "habuild:git-commit", "value": input.habuild_commit}],
                }]
            },
            "component": {
                "type": "operating-system",
                "bom-ref": image_ref,
                "name": input.node,
                "version": input.distro,
                "description": format!("{} image of node {} ({}, board {}) of cluster {}",
                    input.image_file, input.node, input.role, input.board, input.cluster),
                "properties": [
                    {"name": "habuild:cluster", "value": input.cluster},
                    {"name": "habuild:board", "value": input.board},
                    {"name": "habuild:image", "value": input.image_file},
                ],
            },
        },
        "components": components,
        "dependencies": [{
            "ref": image_ref,
            "dependsOn": packages.iter().map(|p| purl(input.vendor, p, input.suite)).collect::<Vec<_>>(),
        }],
    });
    // The serial number is a UUID v5 of everything else: same content,
    // same number; any change, another one.
    let body = serde_json::to_vec(&doc).context("serialising the SBOM")?;
    let serial = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, &body);
    doc["serialNumber"] = json!(format!("urn:uuid:{serial}"));
    let mut out = serde_json::to_vec_pretty(&doc).context("serialising the SBOM")?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(name: &str, version: &str, sha: Option<&str>, lic: &[&str]) -> SbomPackage {
        SbomPackage {
            name: name.into(),
            version: version.into(),
            arch: "arm64".into(),
            sha256: sha.map(Into::into),
            licenses: lic.iter().map(|l| l.to_string()).collect(),
        }
    }

    fn input(packages: &[SbomPackage]) -> SbomInput<'_> {
        SbomInput {
            cluster: "seed",
            node: "master-arm-1",
            role: "control-plane",
            board: "rpi4",
            vendor: "debian",
            distro: "debian-13",
            suite: "trixie",
            image_file: "master-arm-1.img.zst",
            source_date_epoch: 1_735_689_600,
            habuild_version: "0.1.0",
            habuild_commit: "0123abc",
            packages,
        }
    }

    #[test]
    fn purls_encode_epochs_and_pluses() {
        let p = pkg("libstdc++6", "1:14.2.0-19", None, &[]);
        assert_eq!(
            purl("debian", &p, "trixie"),
            "pkg:deb/debian/libstdc%2B%2B6@1%3A14.2.0-19?arch=arm64&distro=trixie"
        );
        assert_eq!(vendor_of("ubuntu-24.04"), "ubuntu");
    }

    #[test]
    fn lists_every_package_with_what_is_known() {
        let pkgs = [
            pkg("zlib1g", "1:1.3.dfsg-3", None, &[]),
            pkg("curl", "8.14.1-2", Some(&"ab".repeat(32)), &["curl"]),
        ];
        let doc: Value = serde_json::from_slice(&render(&input(&pkgs)).unwrap()).unwrap();
        assert_eq!(doc["specVersion"], "1.5");
        assert_eq!(doc["metadata"]["timestamp"], "2025-01-01T00:00:00Z");
        let tool = &doc["metadata"]["tools"]["components"][0];
        assert_eq!(tool["version"], "0.1.0");
        assert_eq!(tool["properties"][0]["value"], "0123abc");
        let c = doc["components"].as_array().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0]["name"], "curl", "sorted by name");
        assert_eq!(c[0]["hashes"][0]["content"], "ab".repeat(32));
        assert_eq!(c[0]["licenses"][0]["license"]["name"], "curl");
        assert!(c[1].get("hashes").is_none() && c[1].get("licenses").is_none());
        assert_eq!(
            doc["dependencies"][0]["dependsOn"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(doc["serialNumber"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:"));
    }

    #[test]
    fn same_inputs_same_bytes_other_inputs_other_serial() {
        let pkgs = [pkg("curl", "8.14.1-2", None, &[])];
        let a = render(&input(&pkgs)).unwrap();
        assert_eq!(a, render(&input(&pkgs)).unwrap());
        let other = [pkg("curl", "8.14.1-3", None, &[])];
        let serial = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap()["serialNumber"].clone();
        assert_ne!(serial(&a), serial(&render(&input(&other)).unwrap()));
    }
}

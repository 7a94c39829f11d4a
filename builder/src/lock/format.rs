//! The lock file's canonical text: TOML, every list sorted, one package
//! (and one repository, bundle file, requested package) per line, so that
//! the same lock always gives the same bytes and a change to one package
//! is a one-line diff. Pure; the caller reads and writes the file.

use std::path::Path;

use toml_edit::{Array, ArrayOfTables, DocumentMut, InlineTable, Item, Table, Value};

use super::{Lock, LOCK_VERSION};
use crate::config::{ConfigError, ConfigErrors};

const HEADER: &str = "\
# habuild.lock: every package of every image of the manifest beside it,
# pinned by version and sha256. Written by `habuild lock`; `habuild lock
# --check` tells whether it is current. README.md, \"The lock file\",
# describes the format. Do not edit by hand.
";

/// The canonical text of `lock` (sorted first, whatever order it is in).
pub fn render(lock: &Lock) -> String {
    let lock = Lock::new(lock.bases.clone());
    let mut doc = DocumentMut::new();
    doc["version"] = toml_edit::value(i64::from(lock.version));
    let mut bases = ArrayOfTables::new();
    for b in &lock.bases {
        let mut t = Table::new();
        t["distro"] = toml_edit::value(&b.distro);
        t["arch"] = toml_edit::value(&b.arch);
        t["nodes"] = toml_edit::value(b.nodes.iter().map(String::as_str).collect::<Array>());
        t["requested"] = item(b.requested.iter().map(|r| Value::from(r.as_str())));
        t["bundle"] = item(
            b.bundle
                .iter()
                .map(|f| inline(&[("file", Some(&f.file)), ("sha256", Some(&f.sha256))])),
        );
        t["repositories"] = item(b.repositories.iter().map(|r| {
            let mut v = inline(&[("uri", r.uri.as_ref()), ("suite", Some(&r.suite))]);
            if let Value::InlineTable(it) = &mut v {
                it.insert(
                    "components",
                    r.components
                        .iter()
                        .map(String::as_str)
                        .collect::<Array>()
                        .into(),
                );
                for (k, val) in [
                    ("date", Some(&r.date)),
                    ("snapshot", r.snapshot.as_ref()),
                    ("inrelease_sha256", Some(&r.inrelease_sha256)),
                ] {
                    if let Some(val) = val {
                        it.insert(k, val.as_str().into());
                    }
                }
                it.fmt();
            }
            v
        }));
        t["packages"] = item(b.packages.iter().map(|p| {
            inline(&[
                ("name", Some(&p.name)),
                ("version", Some(&p.version)),
                ("arch", Some(&p.arch)),
                ("sha256", Some(&p.sha256)),
                ("from", Some(&p.from)),
            ])
        }));
        bases.push(t);
    }
    doc["base"] = Item::ArrayOfTables(bases);
    format!("{HEADER}{doc}")
}

/// A one-line inline table of the given string fields (absent ones left out).
fn inline(fields: &[(&str, Option<&String>)]) -> Value {
    let mut t = InlineTable::new();
    for (k, v) in fields {
        if let Some(v) = v {
            t.insert(*k, v.as_str().into());
        }
    }
    t.fmt();
    Value::InlineTable(t)
}

/// An array with one element per line (or `[]`).
fn item(values: impl Iterator<Item = Value>) -> Item {
    let mut a = Array::new();
    for mut v in values {
        v.decor_mut().set_prefix("\n  ");
        v.decor_mut().set_suffix("");
        a.push_formatted(v);
    }
    if !a.is_empty() {
        a.set_trailing("\n");
        a.set_trailing_comma(true);
    }
    toml_edit::value(a)
}

/// Reads a lock file's text; errors name the file, the key and the line.
pub fn parse(file: &Path, text: &str) -> Result<Lock, ConfigErrors> {
    let lock: Lock = crate::config::error::parse_toml(file, text)?;
    if lock.version != LOCK_VERSION {
        return Err(ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            key: "version".into(),
            problem: format!(
                "lock format {} is not the one this habuild reads ({LOCK_VERSION}); run `habuild lock` to write it again",
                lock.version
            ),
        }]));
    }
    Ok(lock)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::lock::{BundleFile, LockedBase, LockedPackage, LockedRepository};

    pub fn sample() -> Lock {
        Lock::new(vec![LockedBase {
            distro: "debian-13".into(),
            arch: "arm64".into(),
            nodes: vec!["master-arm-2".into(), "master-arm-1".into()],
            requested: vec!["systemd-sysv".into(), "kubeadm=1.31.4-1.1".into()],
            bundle: vec![BundleFile {
                file: "cri-o_1.31.3-1.1_arm64.deb".into(),
                sha256: "c".repeat(64),
            }],
            repositories: vec![
                LockedRepository {
                    uri: None,
                    suite: "trixie".into(),
                    components: vec!["main".into(), "non-free-firmware".into()],
                    date: "Sat, 21 Nov 2026 09:15:44 UTC".into(),
                    snapshot: Some("20261121T091544Z".into()),
                    inrelease_sha256: "a".repeat(64),
                },
                LockedRepository {
                    uri: Some("https://pkgs.k8s.io/core:/stable:/v1.31/deb/".into()),
                    suite: "/".into(),
                    components: vec![],
                    date: "Wed, 13 Nov 2024 10:00:00 UTC".into(),
                    snapshot: None,
                    inrelease_sha256: "b".repeat(64),
                },
            ],
            packages: vec![
                LockedPackage {
                    name: "systemd-sysv".into(),
                    version: "257.13-1~deb13u1".into(),
                    arch: "arm64".into(),
                    sha256: "d".repeat(64),
                    from: "trixie".into(),
                },
                LockedPackage {
                    name: "cri-o".into(),
                    version: "1.31.3-1.1".into(),
                    arch: "arm64".into(),
                    sha256: "c".repeat(64),
                    from: "bundle".into(),
                },
                LockedPackage {
                    name: "base-files".into(),
                    version: "13.8+deb13u8".into(),
                    arch: "arm64".into(),
                    sha256: "e".repeat(64),
                    from: "trixie".into(),
                },
            ],
        }])
    }

    #[test]
    fn renders_canonically_and_reads_back() {
        let lock = sample();
        let text = render(&lock);
        let golden = format!(
            "{HEADER}version = 1

[[base]]
distro = \"debian-13\"
arch = \"arm64\"
nodes = [\"master-arm-1\", \"master-arm-2\"]
requested = [
  \"kubeadm=1.31.4-1.1\",
  \"systemd-sysv\",
]
bundle = [
  {{ file = \"cri-o_1.31.3-1.1_arm64.deb\", sha256 = \"{c}\" }},
]
repositories = [
  {{ suite = \"trixie\", components = [\"main\", \"non-free-firmware\"], date = \"Sat, 21 Nov 2026 09:15:44 UTC\", snapshot = \"20261121T091544Z\", inrelease_sha256 = \"{a}\" }},
  {{ uri = \"https://pkgs.k8s.io/core:/stable:/v1.31/deb/\", suite = \"/\", components = [], date = \"Wed, 13 Nov 2024 10:00:00 UTC\", inrelease_sha256 = \"{b}\" }},
]
packages = [
  {{ name = \"base-files\", version = \"13.8+deb13u8\", arch = \"arm64\", sha256 = \"{e}\", from = \"trixie\" }},
  {{ name = \"cri-o\", version = \"1.31.3-1.1\", arch = \"arm64\", sha256 = \"{c}\", from = \"bundle\" }},
  {{ name = \"systemd-sysv\", version = \"257.13-1~deb13u1\", arch = \"arm64\", sha256 = \"{d}\", from = \"trixie\" }},
]
",
            a = "a".repeat(64),
            b = "b".repeat(64),
            c = "c".repeat(64),
            d = "d".repeat(64),
            e = "e".repeat(64),
        );
        pretty_assertions::assert_eq!(text, golden);
        let back = parse(Path::new("habuild.lock"), &text).unwrap();
        assert_eq!(back, lock);
        assert_eq!(render(&back), text, "rendering is a fixed point");
    }

    #[test]
    fn order_of_input_does_not_matter() {
        let mut shuffled = sample();
        shuffled.bases[0].packages.reverse();
        shuffled.bases[0].requested.reverse();
        assert_eq!(render(&shuffled), render(&sample()));
    }

    #[test]
    fn errors_name_file_key_and_line() {
        let text = render(&sample()).replace("from = \"bundle\"", "form = \"bundle\"");
        let err = parse(Path::new("/x/habuild.lock"), &text).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/x/habuild.lock"), "{msg}");
        assert!(msg.contains("base[0].packages[1]"), "{msg}");
        assert!(msg.contains("line "), "{msg}");

        let text = render(&sample()).replace("version = 1\n", "version = 7\n");
        let err = parse(Path::new("habuild.lock"), &text).unwrap_err();
        assert_eq!(err.keys(), ["version"]);
    }
}

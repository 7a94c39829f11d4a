//! What `habuild image` hands a user besides the raw image, on the real
//! amd64 director (Debian 13 profile; the base comes from the shared test
//! cache): `--dry-run` (says what would be built and writes nothing),
//! `--compress zst` (a bit-identical `.img.zst` that SHA256SUMS lists,
//! that `bmaptool copy` and `habuild verify`/`flash` accept with the
//! `.bmap`), and the CycloneDX SBOM `<node>.cdx.json`, validated by the
//! CycloneDX project's own validator (cyclonedx-python-lib, installed with
//! pip into a virtual environment in the test cache), not by habuild.
//!
//! Needs root and the host tools `habuild doctor --install` sets up, plus
//! python3 with venv (`.ci/run` installs it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const NODE: &str = "master-x86-1";

fn files_under(dir: &Path) -> Vec<PathBuf> {
    if !dir.exists() {
        return Vec::new();
    }
    walkdir::WalkDir::new(dir)
        .into_iter()
        .map(|e| e.unwrap().into_path())
        .collect()
}

#[test]
fn dry_run_says_what_would_be_built_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let manifest = fixture_copy(t.path(), "test-cluster.toml", "cluster.toml");
    let out = t.path().join("out");
    let cache = t.path().join("empty-cache");
    let before = files_under(t.path());
    let mut args = director_image_args(&manifest, &out, &["--dry-run", "--compress"]);
    args.extend(["--cache-dir", cache.to_str().unwrap()]);
    let run = habuild_plain(&args);
    assert!(run.status.success(), "{}", run.stderr);
    let text = &run.stdout;
    assert!(text.contains("nothing is built or written"), "{text}");
    assert!(text.contains(&format!("{NODE} (director on ")), "{text}");
    assert!(text.contains("Debian"), "{text}");
    assert!(text.contains("deb [signed-by="), "package sources: {text}");
    assert!(text.contains("cache miss (would bootstrap)"), "{text}");
    let dir = out.join("testcluster");
    for f in [
        format!("{NODE}.img.zst"),
        format!("{NODE}.img.bmap"),
        format!("{NODE}.cdx.json"),
    ] {
        assert!(
            text.contains(&dir.join(&f).display().to_string()),
            "{f} not among the outputs: {text}"
        );
    }
    assert_eq!(files_under(t.path()), before, "a dry run wrote something");
    assert!(!out.exists() && !cache.exists());
    // --all: every node of the manifest, each with its base.
    let mut all = vec![
        "image",
        "--all",
        "--dry-run",
        "--without-kubernetes",
        "--distro",
        "debian-13",
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    all.extend(["--cache-dir", cache.to_str().unwrap()]);
    let run = habuild_plain(&all);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(
        run.stdout.contains("master-arm-1 (control-plane on rpi4"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("kubernetes: WITHOUT"), "{}", run.stdout);
    assert_eq!(files_under(t.path()), before, "a dry run wrote something");
}

/// `.venv` with the CycloneDX validator, made once in the test cache.
fn cyclonedx_python() -> PathBuf {
    let venv = test_cache().join("venv-cyclonedx");
    let python = venv.join("bin/python");
    let ready = Command::new(&python)
        .args(["-c", "import cyclonedx.validation.json"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        std::fs::create_dir_all(test_cache()).unwrap();
        sh(Command::new("python3").args(["-m", "venv"]).arg(&venv));
        sh(Command::new(venv.join("bin/pip")).args([
            "install",
            "--quiet",
            "cyclonedx-python-lib[json-validation]>=8,<12",
        ]));
    }
    python
}

const VALIDATE: &str = r#"
import json, sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
text = open(sys.argv[1]).read()
errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(text)
if errors:
    print(errors)
    sys.exit(1)
print("valid", len(json.loads(text)["components"]))
"#;

#[test]
fn compressed_director_is_reproducible_flashable_and_has_a_valid_sbom() {
    let t = tempfile::tempdir().unwrap();
    let manifest = fixture_copy(t.path(), "test-cluster.toml", "cluster.toml");
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for out in [&a, &b] {
        let run = habuild(&director_image_args(&manifest, out, &["--compress", "zst"]));
        assert!(run.status.success(), "{}", run.stderr);
        assert!(run.stderr.contains("compressed to"), "{}", run.stderr);
    }
    let (a, b) = (a.join("testcluster"), b.join("testcluster"));
    let zst = a.join(format!("{NODE}.img.zst"));
    assert!(
        !a.join(format!("{NODE}.img")).exists(),
        "the raw image is not published"
    );
    for f in [
        format!("{NODE}.img.zst"),
        format!("{NODE}.img.bmap"),
        format!("{NODE}.json"),
        format!("{NODE}.cdx.json"),
        "SHA256SUMS".into(),
    ] {
        assert!(
            std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(),
            "{f} differs between two builds"
        );
    }
    let sums = std::fs::read_to_string(a.join("SHA256SUMS")).unwrap();
    assert!(sums.contains(&format!("  {NODE}.img.zst\n")), "{sums}");
    assert!(sums.contains(&format!("  {NODE}.cdx.json\n")), "{sums}");
    sh(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&a));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join(format!("{NODE}.json"))).unwrap()).unwrap();
    assert_eq!(report["image"]["file"], format!("{NODE}.img.zst"));

    // The real bmaptool takes the compressed image with the bmap, and
    // writes what zstd decompresses.
    let raw = t.path().join("raw.img");
    sh(Command::new("zstd")
        .args(["-q", "-d", "-o"])
        .arg(&raw)
        .arg(&zst));
    let copy = t.path().join("bmaptool.img");
    sh(Command::new("bmaptool")
        .arg("copy")
        .arg("--bmap")
        .arg(a.join(format!("{NODE}.img.bmap")))
        .arg(&zst)
        .arg(&copy));
    sh(Command::new("cmp").arg(&raw).arg(&copy));

    // habuild verify reads it as a stream; flash --node finds it.
    let run = habuild_plain(&["verify", zst.to_str().unwrap()]);
    assert!(run.status.success(), "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains(&format!("ok        {NODE}.img.zst against")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("ok        partition table"),
        "{}",
        run.stdout
    );
    let flashed = t.path().join("card.img");
    let run = habuild_plain(&[
        "flash",
        "--node",
        NODE,
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        a.parent().unwrap().to_str().unwrap(),
        flashed.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    sh(Command::new("cmp").arg(&raw).arg(&flashed));

    // The SBOM: every installed package, valid CycloneDX 1.5.
    let sbom_path = a.join(format!("{NODE}.cdx.json"));
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&sbom_path).unwrap()).unwrap();
    let packages = report["packages"].as_array().unwrap();
    let components = sbom["components"].as_array().unwrap();
    assert_eq!(components.len(), packages.len());
    let bash = components
        .iter()
        .find(|c| c["name"] == "bash")
        .expect("bash is listed");
    let purl = bash["purl"].as_str().unwrap();
    assert!(
        purl.starts_with("pkg:deb/debian/bash@") && purl.ends_with("?arch=amd64&distro=trixie"),
        "{purl}"
    );
    assert!(
        bash["licenses"].as_array().is_some_and(|l| !l.is_empty()),
        "bash's copyright names its license: {bash}"
    );
    let tool = &sbom["metadata"]["tools"]["components"][0];
    assert_eq!(tool["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(tool["properties"][0]["value"], habuild::util::GIT_COMMIT);
    let out = sh(Command::new(cyclonedx_python())
        .arg("-c")
        .arg(VALIDATE)
        .arg(&sbom_path));
    assert!(out.starts_with("valid"), "{out}");
    // The validator does catch a broken document.
    let broken = t.path().join("broken.cdx.json");
    std::fs::write(
        &broken,
        std::fs::read_to_string(&sbom_path)
            .unwrap()
            .replace("\"purl\"", "\"purl\": 7, \"x\""),
    )
    .unwrap();
    let bad = Command::new(cyclonedx_python())
        .arg("-c")
        .arg(VALIDATE)
        .arg(&broken)
        .output()
        .unwrap();
    assert!(
        !bad.status.success(),
        "the validator accepted a broken SBOM"
    );

    // Publishing the raw image again replaces the compressed one.
    let run = habuild(&director_image_args(&manifest, a.parent().unwrap(), &[]));
    assert!(run.status.success(), "{}", run.stderr);
    assert!(a.join(format!("{NODE}.img")).is_file());
    assert!(
        !zst.exists(),
        "the .img.zst of the earlier build is removed"
    );
    let sums = std::fs::read_to_string(a.join("SHA256SUMS")).unwrap();
    assert!(!sums.contains(".img.zst"), "{sums}");
}

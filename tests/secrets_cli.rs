//! `habuild secrets init`, `habuild kubeconfig`, and `habuild image` refusing
//! bad secrets before any image work (so these run in seconds: no base
//! root filesystem is built). Checked with openssl where PKI is involved.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A copy of the test cluster's manifest in a temporary directory, so its
/// default secrets file (`<stem>.secrets.toml` beside it) is private to the test.
fn cluster_dir(name: &str) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let manifest = t.path().join(format!("{name}.toml"));
    let text = fs::read_to_string(repo_root().join("tests/fixtures/test-cluster.toml")).unwrap();
    fs::write(
        &manifest,
        text.replace("name = \"testcluster\"", &format!("name = \"{name}\"")),
    )
    .unwrap();
    (t, manifest)
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// The token recorded in a secrets file.
fn token_of(secrets: &Path) -> String {
    fs::read_to_string(secrets)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("bootstrap_token = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string()
}

#[test]
fn secrets_init_creates_a_private_file_once_and_prints_no_secret() {
    let (_t, manifest) = cluster_dir("alpha");
    let m = manifest.to_str().unwrap();
    let run = habuild_plain(&["secrets", "init", "--manifest", m]);
    assert!(run.status.success(), "{}", run.stderr);
    let secrets = manifest.with_file_name("alpha.secrets.toml");
    assert_eq!(mode(&secrets), 0o600);
    let text = fs::read_to_string(&secrets).unwrap();
    assert!(text.contains("cluster = \"alpha\""));
    let token = token_of(&secrets);
    let printed = format!("{}{}", run.stdout, run.stderr);
    assert!(!printed.contains(&token), "{printed}");
    assert!(!printed.contains("PRIVATE KEY"), "{printed}");
    assert!(
        printed.contains("ca_fingerprint = \"sha256:"),
        "says what to pin: {printed}"
    );

    // Once: a second init refuses, and the file is unchanged.
    let again = habuild_plain(&["secrets", "init", "--manifest", m]);
    assert_eq!(again.status.code(), Some(2), "a refusal lifted by a flag");
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_eq!(fs::read_to_string(&secrets).unwrap(), text);
    // --force replaces it (new CAs, new token), still 0600.
    let forced = habuild_plain(&["secrets", "init", "--manifest", m, "--force"]);
    assert!(forced.status.success(), "{}", forced.stderr);
    assert_ne!(fs::read_to_string(&secrets).unwrap(), text);
    assert_eq!(mode(&secrets), 0o600);
}

#[test]
fn kubeconfig_is_private_and_verified_by_the_cluster_ca() {
    let (t, manifest) = cluster_dir("beta");
    let m = manifest.to_str().unwrap();
    assert!(habuild_plain(&["secrets", "init", "--manifest", m])
        .status
        .success());
    let out = t.path().join("admin.conf");
    let run = habuild_plain(&[
        "kubeconfig",
        "--manifest",
        m,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(mode(&out), 0o600);
    let text = fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("server: https://10.10.197.101:6443"),
        "{text}"
    );
    // Pull the PEMs back out and let openssl judge the chain.
    let field = |name: &str| {
        let b64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(&format!("{name}: ")))
            .unwrap()
            .to_string();
        let p = t.path().join(name);
        fs::write(&p, &b64).unwrap();
        let pem = t.path().join(format!("{name}.pem"));
        sh(Command::new("openssl")
            .args(["base64", "-d", "-A", "-in"])
            .arg(&p)
            .arg("-out")
            .arg(&pem));
        pem
    };
    let ca = field("certificate-authority-data");
    let crt = field("client-certificate-data");
    let ok = sh(Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(&ca)
        .arg(&crt));
    assert!(ok.trim().ends_with(": OK"), "{ok}");
    let subject = sh(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(&crt));
    assert!(subject.contains("O = kubeadm:cluster-admins"), "{subject}");
}

/// `habuild image` for a control plane; fails before any image work.
fn image(manifest: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "image",
        "--node",
        "master-arm-2",
        "--manifest",
        manifest.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--without-kubernetes",
    ];
    args.extend_from_slice(extra);
    habuild(&args)
}

fn nothing_written(out: &Path) {
    let files: Vec<_> = walk(out);
    assert!(files.is_empty(), "written despite bad secrets: {files:?}");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return vec![];
    };
    rd.flat_map(|e| {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(&p)
        } else {
            vec![p]
        }
    })
    .collect()
}

#[test]
fn image_refuses_missing_corrupt_foreign_or_malformed_secrets() {
    let (t, manifest) = cluster_dir("gamma");
    let out = t.path().join("out");

    // Missing: says how to create it (a configuration error, exit 2).
    let run = image(&manifest, &out, &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "habuild secrets init --manifest {}",
            manifest.display()
        )),
        "{}",
        run.stderr
    );
    nothing_written(&out);

    let m = manifest.to_str().unwrap();
    assert!(habuild_plain(&["secrets", "init", "--manifest", m])
        .status
        .success());
    let secrets = manifest.with_file_name("gamma.secrets.toml");
    let good = fs::read_to_string(&secrets).unwrap();
    let token = token_of(&secrets);

    // Corrupt (cut short, as by a failed copy): exit 2, file and problem named.
    fs::write(&secrets, &good[..good.len() / 2]).unwrap();
    let run = image(&manifest, &out, &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("gamma.secrets.toml") && run.stderr.contains("corrupt"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("BEGIN"), "{}", run.stderr);
    nothing_written(&out);

    // Not UTF-8 (a binary file, or one in another encoding): exit 2 too.
    let mut bytes = good.as_bytes()[..good.len() / 2].to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe, 0x00, 0x80]);
    fs::write(&secrets, &bytes).unwrap();
    let run = image(&manifest, &out, &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("gamma.secrets.toml") && run.stderr.contains("UTF-8"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("BEGIN"), "{}", run.stderr);
    nothing_written(&out);

    // A token in the wrong format: named, not shown.
    fs::write(&secrets, good.replace(&token, "NOT-A-TOKEN")).unwrap();
    let run = image(&manifest, &out, &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("`bootstrap_token`"), "{}", run.stderr);
    assert!(!run.stderr.contains("NOT-A-TOKEN"), "{}", run.stderr);
    nothing_written(&out);

    // Another cluster's secrets file.
    fs::write(&secrets, &good).unwrap();
    let (_t2, other) = cluster_dir("delta");
    assert!(
        habuild_plain(&["secrets", "init", "--manifest", other.to_str().unwrap()])
            .status
            .success()
    );
    let foreign = other.with_file_name("delta.secrets.toml");
    let run = image(&manifest, &out, &["--secrets", foreign.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("belongs to cluster \"delta\""),
        "{}",
        run.stderr
    );
    nothing_written(&out);

    // Same cluster name, but not the CA the manifest pins (re-created secrets).
    // The pin goes first in [cluster], whatever versions the fixture names.
    let pinned = fs::read_to_string(&manifest).unwrap().replacen(
        "[cluster]\n",
        &format!(
            "[cluster]\nca_fingerprint = \"sha256:{}\"\n",
            "ab".repeat(32)
        ),
        1,
    );
    assert!(pinned.contains("ca_fingerprint"), "{pinned}");
    fs::write(&manifest, pinned).unwrap();
    let run = image(&manifest, &out, &[]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("cluster.ca_fingerprint") && run.stderr.contains("another cluster"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains(&token), "{}", run.stderr);
    nothing_written(&out);
}

#[test]
fn the_unpinned_ca_note_is_a_builds_and_shown_once() {
    let (t, manifest) = cluster_dir("epsilon");
    let m = manifest.to_str().unwrap();
    assert!(habuild_plain(&["secrets", "init", "--manifest", m])
        .status
        .success());
    // A build of two control planes reads the secrets once and says so
    // once; it stops right after, at a lock file that is not there.
    let out = t.path().join("out");
    let missing_lock = t.path().join("no.lock");
    let run = habuild(&[
        "image",
        "--all",
        "--manifest",
        m,
        "--out",
        out.to_str().unwrap(),
        "--without-kubernetes",
        "--lock",
        missing_lock.to_str().unwrap(),
    ]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("no.lock"), "{}", run.stderr);
    assert_eq!(
        run.stderr.matches("pins no cluster CA").count(),
        1,
        "{}",
        run.stderr
    );
    // Not on `secrets show` nor `kubeconfig`.
    let show = habuild_plain(&["secrets", "show", "--manifest", m]);
    assert!(show.status.success(), "{}", show.stderr);
    let shown = format!("{}{}", show.stdout, show.stderr);
    assert!(!shown.contains("pins no cluster CA"), "{shown}");
    assert!(shown.contains("pinned in"), "{shown}");
    let kc = t.path().join("admin.conf");
    let run = habuild_plain(&["kubeconfig", "--manifest", m, "--out", kc.to_str().unwrap()]);
    assert!(run.status.success(), "{}", run.stderr);
    assert!(!run.stderr.contains("pins no cluster CA"), "{}", run.stderr);
}

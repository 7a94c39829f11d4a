//! PKI checked with an independent implementation: `openssl` reads back
//! what rcgen made (chains, basic constraints, key usages, key types, the
//! discovery hash by kubeadm's documented pipeline). And the secrets file's
//! checks: every bad input is a clear error that shows no secret.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use time::OffsetDateTime;

use super::secrets::{self, CaPem, ClusterSecrets};
use super::*;
use crate::config::ConfigErrors;
use crate::util::CommandExt;

/// Key generation is quick, but one set serves every test.
fn fixture() -> &'static ClusterSecrets {
    static S: OnceLock<ClusterSecrets> = OnceLock::new();
    S.get_or_init(|| generate::generate("seed", OffsetDateTime::now_utc()).unwrap())
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn openssl(args: &[&str]) -> String {
    Command::new("openssl").args(args).output_checked().unwrap()
}

/// The image's PKI files written to a directory, as kubeadm would find them.
fn pki_dir(s: &ClusterSecrets) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let installed = stage::install(t.path(), s, &[]).unwrap();
    assert_eq!(installed.files.len(), 8);
    let dir = t.path().join("etc/kubernetes/pki");
    (t, dir)
}

fn p(dir: &Path, name: &str) -> String {
    dir.join(name).to_str().unwrap().to_string()
}

#[test]
fn cas_are_ecdsa_cas_with_kubeadm_subjects_and_usages() {
    let (_t, dir) = pki_dir(fixture());
    for (crt, key, cn) in [
        ("ca.crt", "ca.key", "kubernetes"),
        ("front-proxy-ca.crt", "front-proxy-ca.key", "front-proxy-ca"),
        ("etcd/ca.crt", "etcd/ca.key", "etcd-ca"),
    ] {
        let text = openssl(&["x509", "-in", &p(&dir, crt), "-noout", "-text"]);
        assert!(
            text.contains(&format!("Subject: CN = {cn}")),
            "{crt}: {text}"
        );
        assert!(
            text.contains(&format!("Issuer: CN = {cn}")),
            "{crt}: {text}"
        );
        assert!(text.contains("CA:TRUE"), "{crt}: {text}");
        assert!(
            text.contains("X509v3 Key Usage: critical")
                && text.contains("Digital Signature, Key Encipherment, Certificate Sign"),
            "{crt}: {text}"
        );
        assert!(
            text.contains("id-ecPublicKey") && text.contains("prime256v1"),
            "{crt}: {text}"
        );
        // Self-signed: the chain of one verifies.
        let ok = openssl(&["verify", "-CAfile", &p(&dir, crt), &p(&dir, crt)]);
        assert!(ok.trim().ends_with(": OK"), "{crt}: {ok}");
        // The key is an EC P-256 key and the certificate's.
        let k = openssl(&["pkey", "-in", &p(&dir, key), "-noout", "-text"]);
        assert!(
            k.contains("Private-Key: (256 bit)") && k.contains("prime256v1"),
            "{key}: {k}"
        );
        assert_eq!(
            openssl(&["pkey", "-in", &p(&dir, key), "-pubout"]),
            openssl(&["x509", "-in", &p(&dir, crt), "-noout", "-pubkey"]),
            "{key} is not the key of {crt}"
        );
        let days = openssl(&[
            "x509",
            "-in",
            &p(&dir, crt),
            "-noout",
            "-checkend",
            "311040000",
        ]);
        assert!(
            days.contains("will not expire"),
            "{crt} valid for ~10 years: {days}"
        );
    }
    // The three CAs are distinct.
    let fp = |f: &str| {
        openssl(&[
            "x509",
            "-in",
            &p(&dir, f),
            "-noout",
            "-fingerprint",
            "-sha256",
        ])
    };
    assert_ne!(fp("ca.crt"), fp("etcd/ca.crt"));
    assert_ne!(fp("ca.crt"), fp("front-proxy-ca.crt"));
}

#[test]
fn service_account_key_pair_matches() {
    let (_t, dir) = pki_dir(fixture());
    let k = openssl(&["pkey", "-in", &p(&dir, "sa.key"), "-noout", "-text"]);
    assert!(k.contains("prime256v1"), "{k}");
    assert_eq!(
        openssl(&["pkey", "-in", &p(&dir, "sa.key"), "-pubout"]),
        std::fs::read_to_string(dir.join("sa.pub")).unwrap()
    );
}

#[test]
fn discovery_hash_equals_kubeadms_openssl_pipeline() {
    let s = fixture();
    let (_t, dir) = pki_dir(s);
    // kubeadm's documentation: openssl x509 -pubkey -in ca.crt |
    //   openssl rsa -pubin -outform der | openssl dgst -sha256 -hex
    // (with `pkey` for a non-RSA key).
    let pipeline = format!(
        "openssl x509 -pubkey -noout -in {} | openssl pkey -pubin -outform der | openssl dgst -sha256",
        p(&dir, "ca.crt")
    );
    let out = Command::new("sh")
        .args(["-c", &pipeline])
        .output_checked()
        .unwrap();
    let hex = out.trim().rsplit(' ').next().unwrap();
    assert_eq!(s.discovery_hash, format!("sha256:{hex}"));

    let fp = openssl(&[
        "x509",
        "-in",
        &p(&dir, "ca.crt"),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let fp = fp
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "")
        .to_lowercase();
    assert_eq!(s.ca_fingerprint, format!("sha256:{fp}"));
}

#[test]
fn image_files_have_kubeadms_names_and_modes() {
    use std::os::unix::fs::PermissionsExt;
    let s = fixture();
    let (_t, dir) = pki_dir(s);
    for (name, mode) in [
        ("ca.crt", 0o644),
        ("ca.key", 0o600),
        ("etcd/ca.crt", 0o644),
        ("etcd/ca.key", 0o600),
        ("front-proxy-ca.crt", 0o644),
        ("front-proxy-ca.key", 0o600),
        ("sa.key", 0o600),
        ("sa.pub", 0o644),
    ] {
        let m = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, mode, "{name}");
    }
    let report = stage::report(s, &stage::image_files(s), &[]);
    assert_eq!(
        report.secret_files,
        [
            "/etc/kubernetes/pki/ca.key",
            "/etc/kubernetes/pki/etcd/ca.key",
            "/etc/kubernetes/pki/front-proxy-ca.key",
            "/etc/kubernetes/pki/sa.key"
        ]
    );
    assert_eq!(report.certificates.len(), 3);
    assert_eq!(report.certificates[0].fingerprint, s.ca_fingerprint);
    // The report is what <node>.json carries: no key, no token.
    let json = serde_json::to_string(&report).unwrap();
    assert!(
        !json.contains("PRIVATE KEY") && !json.contains(s.bootstrap_token.expose()),
        "{json}"
    );
}

#[test]
fn admin_kubeconfig_is_signed_by_the_cluster_ca() {
    let s = fixture();
    let (t, dir) = pki_dir(s);
    let client = kubeconfig::issue_admin(s, OffsetDateTime::now_utc(), 365).unwrap();
    let yaml = kubeconfig::render("seed", "https://10.10.197.101:6443", &s.ca.cert, &client);
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(doc["kind"], "Config");
    assert_eq!(doc["current-context"], "habuild-admin@seed");
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"],
        "https://10.10.197.101:6443"
    );
    let b64 = |v: &serde_yaml_ng::Value| {
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        b64(&doc["clusters"][0]["cluster"]["certificate-authority-data"]),
        s.ca.cert
    );
    let crt = t.path().join("admin.crt");
    std::fs::write(
        &crt,
        b64(&doc["users"][0]["user"]["client-certificate-data"]),
    )
    .unwrap();
    let key = t.path().join("admin.key");
    std::fs::write(&key, b64(&doc["users"][0]["user"]["client-key-data"])).unwrap();
    let crt = crt.to_str().unwrap();

    let ok = openssl(&["verify", "-CAfile", &p(&dir, "ca.crt"), crt]);
    assert!(ok.trim().ends_with(": OK"), "{ok}");
    // Not by another CA (the etcd CA).
    let other = Command::new("openssl")
        .args(["verify", "-CAfile", &p(&dir, "etcd/ca.crt"), crt])
        .output_checked();
    assert!(other.is_err(), "verified by the wrong CA");

    let text = openssl(&["x509", "-in", crt, "-noout", "-text"]);
    assert!(
        text.contains("Subject: O = kubeadm:cluster-admins, CN = habuild-admin"),
        "{text}"
    );
    assert!(text.contains("Issuer: CN = kubernetes"), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(text.contains("TLS Web Client Authentication"), "{text}");
    assert!(text.contains("Digital Signature"), "{text}");
    // A client certificate names no hosts.
    assert!(!text.contains("Subject Alternative Name"), "{text}");
    assert_eq!(
        openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]),
        openssl(&["x509", "-in", crt, "-noout", "-pubkey"])
    );
}

#[test]
fn the_secrets_file_round_trips() {
    let s = fixture();
    let text = secrets::render(s);
    let back = secrets::parse(Path::new("x.secrets.toml"), &text, now()).unwrap();
    assert_eq!(&back, s);
    assert!(text.contains(&format!("ca_fingerprint = \"{}\"", s.ca_fingerprint)));
}

#[test]
fn debug_output_shows_no_secret() {
    let s = fixture();
    let shown = format!(
        "{s:?} {:?}",
        crate::rootfs::context::KubeadmCtx::new(s.bootstrap_token.expose(), &s.discovery_hash)
    );
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    assert!(!shown.contains(s.bootstrap_token.expose()), "{shown}");
    assert!(shown.contains(&s.ca_fingerprint), "{shown}");
}

/// Parses `text` and returns (keys, whole message) of the problems.
fn problems(text: &str) -> (Vec<String>, String) {
    let err: ConfigErrors = secrets::parse(Path::new("bad.secrets.toml"), text, now()).unwrap_err();
    let msg = err.to_string();
    (err.keys().into_iter().map(String::from).collect(), msg)
}

/// No key material or token in a message (PEM body lines are long base64).
fn assert_no_secret(msg: &str) {
    let s = fixture();
    assert!(!msg.contains(s.bootstrap_token.expose()), "{msg}");
    assert!(!msg.contains("-----BEGIN"), "{msg}");
    for pem in [&s.ca.key, &s.etcd_ca.key, &s.service_account.key] {
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!msg.contains(line), "{msg}");
        }
    }
}

#[test]
fn a_corrupt_file_is_a_clear_error() {
    let text = secrets::render(fixture());
    // Cut in the middle of a key, as a failed copy would.
    let cut = &text[..text.find("[etcd_ca]").unwrap() + 40];
    let (keys, msg) = problems(cut);
    assert_eq!(keys.len(), 1, "{msg}");
    assert!(msg.contains("corrupt"), "{msg}");
    assert_no_secret(&msg);

    let (keys, msg) = problems("not toml at all = = =");
    assert!(msg.contains("corrupt") && keys.len() == 1, "{msg}");

    // A key's PEM garbled.
    let key = &fixture().ca.key;
    let garbled = text.replacen(key.lines().nth(1).unwrap(), "AAAA", 1);
    let (keys, msg) = problems(&garbled);
    assert_eq!(keys, ["ca.key"], "{msg}");
    assert_no_secret(&msg);

    // A secret put where a table belongs: the message must not quote it.
    let token = fixture().bootstrap_token.expose();
    let (_, msg) = problems(&text.replacen("[ca]\n", &format!("ca = \"{token}\"\n[x]\n"), 1));
    assert_no_secret(&msg);
}

#[test]
fn a_token_in_the_wrong_format_is_refused_without_showing_it() {
    let text = secrets::render(fixture());
    let token = fixture().bootstrap_token.expose();
    for bad in [
        "ABCDEF.0123456789ABCDEF",
        "abcdef0123456789abcdef",
        "abcdef.012345678",
    ] {
        let (keys, msg) = problems(&text.replace(token, bad));
        assert_eq!(keys, ["bootstrap_token"], "{msg}");
        assert!(msg.contains("[a-z0-9]"), "{msg}");
        assert!(!msg.contains(bad), "{msg}");
    }
}

#[test]
fn mismatched_edited_or_unusable_cas_are_refused() {
    let s = fixture();
    let other = generate::generate("other", OffsetDateTime::now_utc()).unwrap();
    let text = secrets::render(s);

    // Another CA's key under this CA's certificate.
    let swapped = text.replace(s.ca.key.trim_end(), other.ca.key.trim_end());
    let (keys, msg) = problems(&swapped);
    assert_eq!(keys, ["ca.key"], "{msg}");
    assert!(msg.contains("not the key of [ca].cert"), "{msg}");

    // The recorded fingerprint no longer matches the certificate.
    let edited = text.replace(&s.ca_fingerprint, &other.ca_fingerprint);
    let (keys, msg) = problems(&edited);
    assert_eq!(keys, ["ca_fingerprint"], "{msg}");

    // A certificate that is no CA (the admin client certificate).
    let client = kubeconfig::issue_admin(s, OffsetDateTime::now_utc(), 1).unwrap();
    let mut parts = parts_of(s);
    parts.front_proxy_ca = CaPem {
        cert: client.cert,
        key: client.key,
    };
    let keys = keys_of(ClusterSecrets::check(parts, now()));
    assert_eq!(keys, ["front_proxy_ca.cert"]);

    // Expired: checked with a clock eleven years ahead.
    let keys = keys_of(ClusterSecrets::check(parts_of(s), now() + 11 * 365 * 86400));
    assert_eq!(keys, ["ca.cert", "front_proxy_ca.cert", "etcd_ca.cert"]);

    // An Ed25519 CA, which kubeadm cannot load.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let mut parts = parts_of(s);
    parts.etcd_ca = CaPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    let err = ClusterSecrets::check(parts, now()).unwrap_err();
    assert_eq!(err[0].0, "etcd_ca.key");
    assert!(err[0].1.contains("Ed25519"), "{err:?}");

    // Version from the future.
    let (keys, _) = problems(&text.replace("version = 1", "version = 2"));
    assert_eq!(keys, ["version"]);
}

fn parts_of(s: &ClusterSecrets) -> secrets::Parts {
    secrets::Parts {
        cluster: s.cluster.clone(),
        ca: s.ca.clone(),
        front_proxy_ca: s.front_proxy_ca.clone(),
        etcd_ca: s.etcd_ca.clone(),
        service_account: s.service_account.clone(),
        bootstrap_token: s.bootstrap_token.expose().into(),
        ca_fingerprint: Some(s.ca_fingerprint.clone()),
    }
}

fn keys_of(r: Result<ClusterSecrets, secrets::Problems>) -> Vec<String> {
    r.unwrap_err().into_iter().map(|(k, _)| k).collect()
}

#[test]
fn a_secrets_file_of_another_cluster_is_refused() {
    let s = fixture();
    let known = crate::config::manifest::Known {
        boards: &["rpi4".into(), "amd64".into()],
        distros: &["debian-13".into(), "ubuntu-24.04".into()],
    };
    let manifest_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/seed.toml");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    let cluster = crate::config::manifest::parse(&manifest_path, &text, &known).unwrap();
    let file = Path::new("seed.secrets.toml");

    // Same name, no pin: accepted with a note that says what to pin.
    let note = secrets::check_cluster(s, &cluster, None, &manifest_path, file)
        .unwrap()
        .unwrap();
    assert!(
        note.contains(&format!("ca_fingerprint = \"{}\"", s.ca_fingerprint)),
        "{note}"
    );
    // Same name, pinned: accepted silently.
    assert_eq!(
        secrets::check_cluster(s, &cluster, Some(&s.ca_fingerprint), &manifest_path, file).unwrap(),
        None
    );
    // Another cluster's name.
    let other = generate::generate("other", OffsetDateTime::now_utc()).unwrap();
    let err = secrets::check_cluster(&other, &cluster, None, &manifest_path, file).unwrap_err();
    assert_eq!(err.keys(), ["cluster"]);
    assert!(
        err.to_string().contains("belongs to cluster \"other\""),
        "{err}"
    );
    // Same name, another CA than the pinned one (secrets re-created).
    let err = secrets::check_cluster(
        s,
        &cluster,
        Some(&other.ca_fingerprint),
        &manifest_path,
        file,
    )
    .unwrap_err();
    assert_eq!(err.keys(), ["cluster.ca_fingerprint"]);
    assert!(err.to_string().contains("another cluster"), "{err}");
}

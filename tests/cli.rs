//! The command line as a new user and a script meet it, without building
//! an image: the refusal of an image nobody can log into, `--ssh-key`,
//! the messages for a bad board, node or secrets path, `--json` documents
//! and exit codes, `habuild kubeconfig` (stdout, no overwrite, merge),
//! completions and man pages.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{fixture_copy, habuild, habuild_plain, repo_root, Run};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM+aTZgyL3gA4TjDtuwft8do8nyoFTrylVWdzx5pUcgc habuild-test";

/// The test cluster's manifest without any SSH key, in `dir`.
fn keyless(dir: &Path) -> std::path::PathBuf {
    let m = fixture_copy(dir, "test-cluster.toml", "keyless.toml");
    let text = fs::read_to_string(&m).unwrap();
    let start = text.find("authorized_keys = [").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    fs::write(
        &m,
        format!("{}authorized_keys = []{}", &text[..start], &text[end..]),
    )
    .unwrap();
    m
}

fn code(run: &Run) -> i32 {
    run.status.code().expect("exited")
}

fn json(run: &Run) -> serde_json::Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", run.stdout))
}

#[test]
fn an_image_nobody_can_log_into_is_refused_unless_said() {
    let t = tempfile::tempdir().unwrap();
    let m = keyless(t.path());
    let out = t.path().join("out");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "image",
            "--node",
            "master-x86-1",
            "--manifest",
            m.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run_with = |extra: &[&str]| {
        let a = args(extra);
        habuild(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let run = run_with(&[]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    for part in [
        "keyless.toml",
        "ssh.authorized_keys",
        "--ssh-key",
        "allow_no_login = true",
        "--allow-no-login",
    ] {
        assert!(run.stderr.contains(part), "{part} not in:\n{}", run.stderr);
    }
    assert!(!out.exists(), "nothing may be written");

    // --json: the same refusal as one document on stdout.
    let run = run_with(&["--json"]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    let doc = json(&run);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 2);
    assert_eq!(doc["problems"][0]["key"], "ssh.authorized_keys");

    // A malformed key in a --ssh-key file: the file, the line and the key.
    let keys = t.path().join("keys.pub");
    fs::write(
        &keys,
        format!("{KEY}\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM+aTZg bob@desk\n"),
    )
    .unwrap();
    let run = run_with(&["--ssh-key", keys.to_str().unwrap()]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("{}: `line 2`", keys.display()))
            && run.stderr.contains("bob@desk"),
        "{}",
        run.stderr
    );
    // A private key by mistake.
    fs::write(
        &keys,
        "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n-----END OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    let run = run_with(&["--ssh-key", keys.to_str().unwrap()]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    assert!(run.stderr.contains("private key"), "{}", run.stderr);
    // A missing key file.
    let run = run_with(&["--ssh-key", "/nonexistent/id.pub"]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    assert!(run.stderr.contains("/nonexistent/id.pub"), "{}", run.stderr);
    assert!(!out.exists(), "nothing may be written");
}

#[test]
fn a_malformed_manifest_key_names_file_key_and_entry() {
    let t = tempfile::tempdir().unwrap();
    let m = fixture_copy(t.path(), "test-cluster.toml", "cut.toml");
    let text = fs::read_to_string(&m).unwrap();
    fs::write(&m, text.replace("pUcgc habuild-test", " habuild-test")).unwrap();
    let run = habuild(&[
        "image",
        "--node",
        "master-x86-1",
        "--manifest",
        m.to_str().unwrap(),
    ]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("cut.toml: `ssh.authorized_keys[0]`")
            && run.stderr.contains("habuild-test")
            && run.stderr.contains("not an OpenSSH public key"),
        "{}",
        run.stderr
    );
}

#[test]
fn usage_errors_exit_2_and_list_what_exists() {
    let fixture = repo_root().join("tests/fixtures/test-cluster.toml");
    let f = fixture.to_str().unwrap();
    // No image named: clap's own usage error, exit 2.
    let run = habuild(&["image", "--manifest", f]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    // An unknown option too, and -q with -v.
    assert_eq!(code(&habuild_plain(&["image", "--no-such-option"])), 2);
    assert_eq!(code(&habuild_plain(&["-q", "-v", "doctor"])), 2);
    // The old `verify --json PATH` is now --report PATH: a path after
    // --json is the target, so two targets are a usage error.
    assert_eq!(
        code(&habuild_plain(&["verify", "x.img", "--json", "x.json"])),
        2
    );
    // A board that does not exist: the known ones are listed.
    let run = habuild(&["image", "--board", "rpi5", "--manifest", f]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("known boards: amd64, rpi4"),
        "{}",
        run.stderr
    );
    // A node that does not exist, for `test`: the manifest's nodes are listed.
    let run = habuild_plain(&["test", "--node", "master-arm-9", "--manifest", f]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("master-arm-9")
            && run
                .stderr
                .contains("master-x86-1 (amd64), master-arm-1 (rpi4)"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_missing_secrets_file_suggests_the_same_path() {
    let t = tempfile::tempdir().unwrap();
    let m = fixture_copy(t.path(), "test-cluster.toml", "c.toml");
    let elsewhere = t.path().join("vault/c.secrets.toml");
    let run = habuild_plain(&[
        "secrets",
        "show",
        "--manifest",
        m.to_str().unwrap(),
        "--secrets",
        elsewhere.to_str().unwrap(),
    ]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    let suggested = format!(
        "habuild secrets init --manifest {} --secrets {}",
        m.display(),
        elsewhere.display()
    );
    assert!(run.stderr.contains(&suggested), "{}", run.stderr);
}

#[test]
fn secrets_show_and_kubeconfig() {
    let t = tempfile::tempdir().unwrap();
    let m = fixture_copy(t.path(), "test-cluster.toml", "k.toml");
    let m = m.to_str().unwrap();
    assert!(habuild_plain(&["secrets", "init", "--manifest", m])
        .status
        .success());

    // secrets show --json: the public facts, and no unpinned-CA note.
    let run = habuild_plain(&["secrets", "show", "--manifest", m, "--json"]);
    assert_eq!(code(&run), 0, "{}", run.stderr);
    let doc = json(&run);
    assert_eq!(doc["cluster"], "testcluster");
    assert_eq!(doc["ca_pinned_in_manifest"], false);
    assert!(doc["ca_fingerprint"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
    assert!(!run.stderr.contains("pins no cluster CA"), "{}", run.stderr);

    // --out -: the kubeconfig on stdout, nothing else there.
    let run = habuild_plain(&["kubeconfig", "--manifest", m, "--out", "-"]);
    assert_eq!(code(&run), 0, "{}", run.stderr);
    assert!(run.stdout.starts_with("apiVersion: v1\n"), "{}", run.stdout);
    assert!(run
        .stdout
        .contains("current-context: habuild-admin@testcluster"));
    assert!(!run.stderr.contains("pins no cluster CA"), "{}", run.stderr);

    // An existing file is not replaced without --force.
    let file = t.path().join("admin.conf");
    fs::write(&file, "mine\n").unwrap();
    let f = file.to_str().unwrap();
    let run = habuild_plain(&["kubeconfig", "--manifest", m, "--out", f]);
    assert_eq!(code(&run), 2, "{}", run.stderr);
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert_eq!(fs::read_to_string(&file).unwrap(), "mine\n");
    let run = habuild_plain(&["kubeconfig", "--manifest", m, "--out", f, "--force"]);
    assert_eq!(code(&run), 0, "{}", run.stderr);
    assert!(fs::read_to_string(&file).unwrap().contains("kind: Config"));

    // --merge into $KUBECONFIG's file: the other context stays, and so does
    // the current one.
    let kube = t.path().join("kube/config");
    fs::create_dir_all(kube.parent().unwrap()).unwrap();
    fs::write(
        &kube,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod:6443\nusers:\n- name: me\n  user:\n    token: abc\ncontexts:\n- name: prod\n  context:\n    cluster: prod\n    user: me\ncurrent-context: prod\n",
    )
    .unwrap();
    let merge = || {
        let out = Command::new(env!("CARGO_BIN_EXE_habuild"))
            .args(["kubeconfig", "--manifest", m, "--merge"])
            .env("HABUILD_ROOT", repo_root())
            .env(
                "KUBECONFIG",
                format!("{}:{}", t.path().join("none").display(), kube.display()),
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    merge();
    merge();
    let doc: serde_json::Value =
        serde_yaml_ng::from_str(&fs::read_to_string(&kube).unwrap()).unwrap();
    let names: Vec<&str> = doc["contexts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["prod", "habuild-admin@testcluster"]);
    assert_eq!(doc["current-context"], "prod");
    assert_eq!(doc["users"][0]["user"]["token"], "abc");
    assert!(
        !t.path().join("none").exists(),
        "the first existing file of KUBECONFIG is merged into"
    );
}

#[test]
fn doctor_and_verify_json() {
    let run = habuild_plain(&["doctor", "--json"]);
    let doc = json(&run);
    let ok = doc["ok"].as_bool().unwrap();
    assert_eq!(code(&run), if ok { 0 } else { 1 }, "{}", run.stderr);
    assert!(doc["tools"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "mmdebstrap"));
    // The table is human text: on stderr with --json.
    assert!(run.stderr.contains("mmdebstrap"), "{}", run.stderr);

    // verify on a missing image: still one document, exit 1.
    let run = habuild_plain(&["verify", "/nonexistent/x.img", "--json"]);
    assert_eq!(code(&run), 1, "{}", run.stderr);
    let doc = json(&run);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["exit_code"], 1);
}

#[test]
fn completions_and_man_pages() {
    for shell in ["bash", "zsh", "fish"] {
        let run = habuild_plain(&["completions", shell]);
        assert_eq!(code(&run), 0, "{}", run.stderr);
        // fish spells options `-l ssh-key`, bash and zsh `--ssh-key`.
        assert!(
            run.stdout.contains("kubeconfig") && run.stdout.contains("ssh-key"),
            "{shell}"
        );
    }
    assert_eq!(code(&habuild_plain(&["completions", "tcsh"])), 2);
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("man1");
    let run = habuild_plain(&["man", dir.to_str().unwrap()]);
    assert_eq!(code(&run), 0, "{}", run.stderr);
    for page in [
        "habuild.1",
        "habuild-image.1",
        "habuild-secrets-init.1",
        "habuild-kubeconfig.1",
    ] {
        let text = fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
    assert!(!dir.join("habuild-internal-reaper.1").exists());
    let image = fs::read_to_string(dir.join("habuild-image.1")).unwrap();
    assert!(image.contains("allow\\-no\\-login"), "{image}");
    // man(1) itself reads the page, when it is installed.
    if Command::new("man").arg("--version").output().is_ok() {
        let out = Command::new("man")
            .arg("-l")
            .arg(dir.join("habuild-image.1"))
            .env("MANPAGER", "cat")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Installed habuild, run far from any checkout: it reads the data it
/// carries (unpacked into its cache), takes the built-in seed manifest,
/// and puts the seed's secrets and `out/` in the current directory, never
/// into the unpacked data; a dry run names the real paths.
#[test]
fn works_from_any_directory_with_the_data_it_carries() {
    let t = tempfile::tempdir().unwrap();
    let cache = t.path().join("xdg-cache");
    let cwd = t.path().join("elsewhere");
    fs::create_dir(&cwd).unwrap();
    let run = |args: &[&str]| {
        common::output_of(
            Command::new(env!("CARGO_BIN_EXE_habuild"))
                .args(args)
                .current_dir(&cwd)
                .env_remove("HABUILD_ROOT")
                .env("XDG_CACHE_HOME", &cache),
            &format!("habuild {}", args.join(" ")),
        )
    };
    // Before the secrets exist: the message names the real path, and the
    // command to make it needs no --manifest (the built-in one is the default).
    let missing = run(&["kubeconfig", "--out", "-"]);
    assert_eq!(code(&missing), 2, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains(&cwd.join("seed.secrets.toml").display().to_string())
            && missing.stderr.contains("habuild secrets init\n")
            && !missing.stderr.contains("--manifest"),
        "{}",
        missing.stderr
    );
    let init = run(&["secrets", "init"]);
    assert_eq!(code(&init), 0, "{}", init.stderr);
    assert!(cwd.join("seed.secrets.toml").is_file(), "{}", init.stderr);
    let data = cache.join("habuild/data");
    let copies: Vec<_> = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(copies[0].join("overlays/control-plane").is_dir());
    assert!(
        !copies[0].join("manifests/seed.secrets.toml").exists(),
        "secrets were written into the unpacked data"
    );
    let dry = run(&[
        "image",
        "--board",
        "rpi4",
        "--distro",
        "debian-13",
        "--dry-run",
        "--allow-no-login",
        "--without-kubernetes",
        "--cache-dir",
        cache.join("bases").to_str().unwrap(),
    ]);
    assert_eq!(code(&dry), 0, "{}", dry.stderr);
    let said = format!("{}{}", dry.stdout, dry.stderr);
    assert!(said.contains("master-arm-1"), "{said}");
    assert!(
        said.contains("out/seed/master-arm-1.img"),
        "the dry run names the output under the current directory: {said}"
    );
    assert!(!cwd.join("out").exists(), "a dry run wrote out/");
}

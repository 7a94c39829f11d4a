//! `[ssh]`: root's authorized keys. One type from the file to the
//! templates (`ssh.*`), like `[loadbalancer]`.
//!
//! Every key is parsed by the `ssh-key` crate (an `authorized_keys` entry:
//! options, key, comment), whether it comes from the manifest or from a
//! file given with `--ssh-key`. An image with no key at all cannot be
//! logged into (root has no password, password login is off), so a build
//! refuses it unless the user said so ([`require_login`]).

use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Problems;
use crate::config::{ConfigError, ConfigErrors};

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// OpenSSH `authorized_keys` lines; password login is always off.
    #[serde(default)]
    pub authorized_keys: Vec<String>,
    /// Build images nobody can log into (no key, no password): the choice
    /// must be written down, here or as `habuild image --allow-no-login`.
    #[serde(default)]
    pub allow_no_login: bool,
}

/// The flag that lifts [`require_login`]'s refusal, named in its message.
pub const ALLOW_FLAG: &str = "--allow-no-login";

/// Checks one `authorized_keys` line: `[options] keytype base64 [comment]`.
/// Pure; the error is the parser's reason.
pub fn parse_key_line(line: &str) -> Result<ssh_key::PublicKey, String> {
    if line.contains(['\n', '\r']) {
        return Err("one key per entry: it spans several lines".into());
    }
    ssh_key::authorized_keys::Entry::from_str(line.trim())
        .map(|e| e.public_key().clone())
        .map_err(|e| format!("not an OpenSSH public key ({e})"))
}

/// A key as shown in messages: its type, the start and end of its base64
/// body and its comment, so the user can find it without a 700-character line.
pub fn shown(line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    let short = |w: &str| {
        if w.chars().count() > 24 {
            let head: String = w.chars().take(12).collect();
            let tail: String = w
                .chars()
                .rev()
                .take(6)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            format!("{head}…{tail}")
        } else {
            w.to_string()
        }
    };
    format!(
        "{:?}",
        words.iter().map(|w| short(w)).collect::<Vec<_>>().join(" ")
    )
}

pub(super) fn check(ssh: &Ssh, p: &mut Problems) {
    for (i, k) in ssh.authorized_keys.iter().enumerate() {
        if let Err(e) = parse_key_line(k) {
            p.add(
                format!("ssh.authorized_keys[{i}]"),
                format!(
                    "{}: {e}; expected a line like \"ssh-ed25519 AAAA... comment\"",
                    shown(k)
                ),
            );
        }
    }
}

/// The keys of a file given with `--ssh-key` (an `id_*.pub` or an
/// `authorized_keys` file): every line that is neither blank nor a comment.
/// Every bad line is reported, each naming the file, the line and the key.
pub fn keys_from_file(file: &Path, text: &str) -> Result<Vec<String>, ConfigErrors> {
    let err = |key: String, problem: String| ConfigError {
        file: file.to_path_buf(),
        key,
        problem,
    };
    if text.contains("PRIVATE KEY") {
        return Err(ConfigErrors(vec![err(
            "--ssh-key".into(),
            "this is a private key: give its public half (the .pub file beside it)".into(),
        )]));
    }
    let mut keys = Vec::new();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_key_line(line) {
            Ok(_) => keys.push(line.to_string()),
            Err(e) => problems.push(err(
                format!("line {}", n + 1),
                format!("{}: {e}", shown(line)),
            )),
        }
    }
    if problems.is_empty() && keys.is_empty() {
        problems.push(err(
            "--ssh-key".into(),
            "holds no public key (expected lines like \"ssh-ed25519 AAAA... comment\")".into(),
        ));
    }
    if problems.is_empty() {
        Ok(keys)
    } else {
        Err(ConfigErrors(problems))
    }
}

/// Adds `extra` keys after the manifest's, each once.
pub fn add_keys(ssh: &mut Ssh, extra: impl IntoIterator<Item = String>) {
    for k in extra {
        if !ssh.authorized_keys.contains(&k) {
            ssh.authorized_keys.push(k);
        }
    }
}

/// Refuses images nobody can log into: no authorized key, and neither
/// `[ssh] allow_no_login = true` in the manifest nor `allow_flag`.
/// `nodes` are the images about to be built (for the message).
pub fn require_login(
    ssh: &Ssh,
    manifest: &Path,
    allow_flag: bool,
    nodes: &[&str],
) -> Result<(), ConfigErrors> {
    if !ssh.authorized_keys.is_empty() || ssh.allow_no_login || allow_flag {
        return Ok(());
    }
    Err(ConfigErrors(vec![ConfigError {
        file: manifest.to_path_buf(),
        key: "ssh.authorized_keys".into(),
        problem: format!(
            "no SSH key: nobody could log into {} (root has no password and password login is off). \
             Add your key with `--ssh-key ~/.ssh/id_ed25519.pub` (make one with `ssh-keygen -t ed25519`) \
             or list it in [ssh] authorized_keys; to build images nobody can log into on purpose, \
             set `allow_no_login = true` in [ssh] or pass {ALLOW_FLAG}",
            nodes.join(", ")
        ),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM+aTZgyL3gA4TjDtuwft8do8nyoFTrylVWdzx5pUcgc habuild-test";

    #[test]
    fn good_keys_parse() {
        assert!(parse_key_line(ED).is_ok());
        // Options before the key are an authorized_keys entry too.
        assert!(parse_key_line(&format!("no-port-forwarding,from=\"10.0.0.0/8\" {ED}")).is_ok());
        let ecdsa = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBI058LfSW4cgRvoV7wVfRaz1Dj0xFH00LMQnqDI3i0HDSFxUjeUkMdo6SD0cL9FGeRuBv2EIYmgGa2E3jmqPE1Y= user@example.com";
        assert!(parse_key_line(ecdsa).is_ok(), "{:?}", parse_key_line(ecdsa));
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        // A truncated body: the old first-word check let this through.
        let cut = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM+aTZgyL3gA4Tj habuild-test";
        assert!(parse_key_line(cut).is_err());
        assert!(parse_key_line("ssh-ed25519").is_err());
        assert!(parse_key_line("hello world").is_err());
        assert!(parse_key_line(&format!("{ED}\n{ED}"))
            .unwrap_err()
            .contains("several lines"));
    }

    #[test]
    fn shown_abbreviates_the_body() {
        let s = shown(ED);
        assert!(s.starts_with("\"ssh-ed25519 AAAAC3NzaC1l…"), "{s}");
        assert!(s.ends_with("5pUcgc habuild-test\""), "{s}");
    }

    #[test]
    fn key_files() {
        let f = Path::new("/home/u/.ssh/id.pub");
        let keys = keys_from_file(f, &format!("# mine\n\n{ED}\n")).unwrap();
        assert_eq!(keys, vec![ED.to_string()]);
        let e = keys_from_file(f, &format!("{ED}\nssh-rsa AAAAnope x\n")).unwrap_err();
        assert_eq!(e.keys(), vec!["line 2"]);
        let shown = e.to_string();
        assert!(
            shown.contains("/home/u/.ssh/id.pub: `line 2`: \"ssh-rsa AAAAnope x\""),
            "{shown}"
        );
        let private =
            keys_from_file(f, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n").unwrap_err();
        assert!(private.to_string().contains("private key"), "{private}");
        assert!(keys_from_file(f, "# nothing\n")
            .unwrap_err()
            .to_string()
            .contains("no public key"));
    }

    #[test]
    fn no_login_is_refused_unless_said() {
        let m = Path::new("seed.toml");
        let none = Ssh::default();
        let e = require_login(&none, m, false, &["master-arm-1"]).unwrap_err();
        assert_eq!(e.keys(), vec!["ssh.authorized_keys"]);
        let text = e.to_string();
        for part in [
            "seed.toml",
            "master-arm-1",
            "--ssh-key",
            "allow_no_login = true",
            ALLOW_FLAG,
        ] {
            assert!(text.contains(part), "{part} missing from {text}");
        }
        assert!(require_login(&none, m, true, &["x"]).is_ok());
        let said = Ssh {
            allow_no_login: true,
            ..Ssh::default()
        };
        assert!(require_login(&said, m, false, &["x"]).is_ok());
        let mut with_key = Ssh::default();
        add_keys(&mut with_key, [ED.to_string(), ED.to_string()]);
        assert_eq!(with_key.authorized_keys.len(), 1);
        assert!(require_login(&with_key, m, false, &["x"]).is_ok());
    }
}

//! `[ssh]`: root's authorized keys. One type from the file to the
//! templates (`ssh.*`), like `[loadbalancer]`.

use serde::{Deserialize, Serialize};

use super::Problems;

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// OpenSSH public key lines; password login is always off.
    #[serde(default)]
    pub authorized_keys: Vec<String>,
}

pub(super) fn check(ssh: &Ssh, p: &mut Problems) {
    for (i, k) in ssh.authorized_keys.iter().enumerate() {
        let kind = k.split_whitespace().next().unwrap_or("");
        if k.contains('\n')
            || !(kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-"))
            || k.split_whitespace().count() < 2
        {
            p.add(
                format!("ssh.authorized_keys[{i}]"),
                "not an OpenSSH public key line (\"ssh-ed25519 AAAA... comment\")",
            );
        }
    }
}

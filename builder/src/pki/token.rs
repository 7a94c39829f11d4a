//! kubeadm bootstrap tokens: `[a-z0-9]{6}.[a-z0-9]{16}`, the public token
//! ID and the secret part. The token is a credential: it never appears in a
//! log, an error message or `Debug` output; only its ID may be shown.

use std::fmt;

use anyhow::{Context, Result};

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A bootstrap token in kubeadm's format (checked on construction).
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken(String);

/// Why a string is not a bootstrap token; says nothing about its content.
pub const TOKEN_FORMAT: &str =
    "not a kubeadm bootstrap token: expected 6 and 16 characters of [a-z0-9] joined by '.' (the value is not shown)";

impl BootstrapToken {
    /// Checks kubeadm's format (`bootstraputil.BootstrapTokenRegexp`).
    pub fn parse(s: &str) -> Option<BootstrapToken> {
        let (id, secret) = s.split_once('.')?;
        let ok = |part: &str, len: usize| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        (ok(id, ID_LEN) && ok(secret, SECRET_LEN)).then(|| BootstrapToken(s.to_string()))
    }

    /// A new random token from the operating system's CSPRNG.
    pub fn generate() -> Result<BootstrapToken> {
        let id = random_chars(ID_LEN)?;
        let secret = random_chars(SECRET_LEN)?;
        Ok(BootstrapToken(format!("{id}.{secret}")))
    }

    /// The public half (`abcdef`), as `kubeadm token list` shows it.
    pub fn id(&self) -> &str {
        &self.0[..ID_LEN]
    }

    /// The whole token, for the kubeadm configuration and the secrets file only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id())
    }
}

/// `n` characters of [`ALPHABET`], uniformly: bytes at or above the largest
/// multiple of 36 that fits in a byte are drawn again (no modulo bias).
fn random_chars(n: usize) -> Result<String> {
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8;
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        getrandom::fill(&mut buf).context("reading the system's random number generator")?;
        for b in buf {
            if b < limit && out.len() < n {
                out.push(ALPHABET[(b as usize) % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_checked() {
        assert!(BootstrapToken::parse("abcdef.0123456789abcdef").is_some());
        for bad in [
            "",
            "abcdef",
            "abcdef.0123456789abcde",
            "abcdefg.0123456789abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef-0123456789abcdef",
            "abcdef.0123456789abcdef.",
            "abc_ef.0123456789abcdef",
            "abcdef.0123456789abcdeé",
        ] {
            assert!(BootstrapToken::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn generated_tokens_are_valid_and_differ() {
        let a = BootstrapToken::generate().unwrap();
        let b = BootstrapToken::generate().unwrap();
        assert!(BootstrapToken::parse(a.expose()).is_some(), "{a:?}");
        assert_ne!(a, b);
        assert_eq!(a.id().len(), 6);
    }

    #[test]
    fn debug_hides_the_secret_part() {
        let t = BootstrapToken::parse("abcdef.0123456789abcdef").unwrap();
        let shown = format!("{t:?}");
        assert!(shown.contains("abcdef"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}

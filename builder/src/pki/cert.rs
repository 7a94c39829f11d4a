//! Reading certificates and keys back, fingerprints and kubeadm's discovery
//! hash. Pure. Errors are short descriptions without any of the input's
//! bytes, so they can name a key file without leaking it.

use rcgen::{KeyPair, PublicKeyData};
use sha2::{Digest, Sha256};

/// One certificate, read from PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    pub der: Vec<u8>,
    /// DER of the SubjectPublicKeyInfo: what key pins and discovery hashes cover.
    pub spki_der: Vec<u8>,
    pub is_ca: bool,
    /// Seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
    pub subject: String,
}

/// Reads the single certificate of a PEM text.
pub fn read_cert(pem: &str) -> Result<CertInfo, String> {
    let (rest, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| "not a PEM certificate".to_string())?;
    if block.label != "CERTIFICATE" {
        return Err(format!("a PEM {:?} block, not a CERTIFICATE", block.label));
    }
    if !String::from_utf8_lossy(rest).trim().is_empty() {
        return Err("more than one PEM block (one certificate expected)".into());
    }
    let x509 = block
        .parse_x509()
        .map_err(|_| "the PEM block is not a valid X.509 certificate".to_string())?;
    let validity = x509.validity();
    Ok(CertInfo {
        spki_der: x509.public_key().raw.to_vec(),
        is_ca: x509.is_ca(),
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        subject: x509.subject().to_string(),
        der: block.contents.clone(),
    })
}

/// Reads a private key (PKCS#8 PEM) that kubeadm can use as a CA or
/// service-account key: ECDSA or RSA. kubeadm refuses Ed25519 CA keys.
pub fn read_key(pem: &str) -> Result<KeyPair, String> {
    let key = KeyPair::from_pem(pem)
        .map_err(|_| "not a PKCS#8 PEM private key (\"BEGIN PRIVATE KEY\")".to_string())?;
    if key.algorithm() == &rcgen::PKCS_ED25519 {
        return Err("an Ed25519 key: kubeadm loads only RSA and ECDSA keys".into());
    }
    Ok(key)
}

/// True when `key` is the private half of the public key in `spki_der`.
pub fn key_matches(key: &KeyPair, spki_der: &[u8]) -> bool {
    key.subject_public_key_info() == spki_der
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `sha256:<hex>` of a certificate's DER: what identifies one CA.
pub fn fingerprint(cert_der: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(cert_der))
}

/// kubeadm's `--discovery-token-ca-cert-hash`: sha256 over the DER
/// SubjectPublicKeyInfo of the cluster CA (RFC 7469 public key pin).
pub fn discovery_hash(cert: &CertInfo) -> String {
    format!("sha256:{}", sha256_hex(&cert.spki_der))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_rejected_without_echo() {
        let err = read_cert("-----BEGIN CERTIFICATE-----\nc2VjcmV0\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(!err.contains("c2VjcmV0"), "{err}");
        let err = read_key("hunter2").err().unwrap();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn ed25519_keys_are_refused() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let err = read_key(&key.serialize_pem()).err().unwrap();
        assert!(err.contains("Ed25519"), "{err}");
    }
}

//! New cluster secrets: three CAs, the service-account key pair and a
//! bootstrap token. Keys are ECDSA P-256: kubeadm loads ECDSA and RSA CA
//! keys (not Ed25519), and P-256 signs far faster than RSA on a Pi 4.

use anyhow::{anyhow, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::secrets::{CaPem, ClusterSecrets, Parts, ServiceAccountPem};
use super::token::BootstrapToken;

/// kubeadm's CA lifetime (`caCertificateValidityPeriod` default: 10 years).
pub const CA_VALIDITY_DAYS: i64 = 3650;

/// Backdating of `notBefore`: a Pi has no battery-backed clock, and a node
/// whose clock lags a little behind the build machine must still accept
/// the CA.
const BACKDATE: Duration = Duration::hours(1);

pub fn ecdsa_key() -> Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("generating an ECDSA P-256 key: {e}"))
}

/// A positive 128-bit random serial (RFC 5280 allows up to 20 octets).
pub fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).context("reading the system's random number generator")?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A self-signed CA with kubeadm's subject and key usages
/// (`pkiutil.NewCertificateAuthority`: digitalSignature, keyEncipherment,
/// keyCertSign; basicConstraints CA:TRUE).
pub fn new_ca(common_name: &str, now: OffsetDateTime) -> Result<CaPem> {
    let key = ecdsa_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
        KeyUsagePurpose::KeyCertSign,
    ];
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
    params.serial_number = Some(random_serial()?);
    let cert = params
        .self_signed(&key)
        .map_err(|e| anyhow!("signing the {common_name} CA certificate: {e}"))?;
    Ok(CaPem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Everything `habuild secrets init` creates for `cluster`.
pub fn generate(cluster: &str, now: OffsetDateTime) -> Result<ClusterSecrets> {
    // kubeadm's own subjects: "kubernetes", "front-proxy-ca", "etcd-ca".
    let ca = new_ca("kubernetes", now)?;
    let front_proxy_ca = new_ca("front-proxy-ca", now)?;
    let etcd_ca = new_ca("etcd-ca", now)?;
    let sa = ecdsa_key()?;
    let parts = Parts {
        cluster: cluster.to_string(),
        ca,
        front_proxy_ca,
        etcd_ca,
        service_account: ServiceAccountPem {
            key: sa.serialize_pem(),
            public: sa.public_key_pem(),
        },
        bootstrap_token: BootstrapToken::generate()?.expose().to_string(),
        ca_fingerprint: None,
    };
    ClusterSecrets::check(parts, now.unix_timestamp()).map_err(|problems| {
        // Only keys and short descriptions: no secret is in a problem.
        anyhow!(
            "the generated secrets failed their own checks: {}",
            problems
                .iter()
                .map(|(k, p)| format!("{k}: {p}"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

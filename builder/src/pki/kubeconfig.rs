//! An admin kubeconfig signed by the cluster CA, so the user needs no copy
//! of `admin.conf` from the first control plane (the seed copies it by hand).
//!
//! The client certificate's group is `kubeadm:cluster-admins`, the group of
//! kubeadm's own `admin.conf` since Kubernetes 1.29: `kubeadm init` binds it
//! to `cluster-admin` through an ordinary ClusterRoleBinding, so access can
//! be revoked by deleting the binding. `system:masters` (kubeadm's
//! `super-admin.conf`) bypasses RBAC and can only be revoked by replacing
//! the CA.

use anyhow::{anyhow, Result};
use base64::Engine;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

use super::cert;
use super::generate::{ecdsa_key, random_serial};
use super::secrets::{CaPem, ClusterSecrets};

/// The RBAC group kubeadm binds to `cluster-admin` (1.29 and later).
pub const ADMIN_GROUP: &str = "kubeadm:cluster-admins";
/// The user name the API server sees (and audit logs record).
pub const ADMIN_USER: &str = "habuild-admin";

/// A client certificate and its key, PEM.
pub struct ClientCert {
    pub cert: String,
    pub key: String,
}

/// Issues the admin client certificate, valid for `days` from `now`.
pub fn issue_admin(s: &ClusterSecrets, now: OffsetDateTime, days: i64) -> Result<ClientCert> {
    issue_client(&s.ca, ADMIN_USER, Some(ADMIN_GROUP), now, days)
}

/// The user `habuild status` reads etcd as: etcd trusts any client
/// certificate its CA signed (kubeadm's `--client-cert-auth`).
pub const ETCD_STATUS_USER: &str = "habuild-status";

/// A client certificate signed by `ca`: `cn` as the user, `group` (the
/// organisation) as its RBAC group, valid for `days` from `now`.
pub fn issue_client(
    ca: &CaPem,
    cn: &str,
    group: Option<&str>,
    now: OffsetDateTime,
    days: i64,
) -> Result<ClientCert> {
    let ca_key = cert::read_key(&ca.key).map_err(|e| anyhow!("the CA key: {e}"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key)
        .map_err(|e| anyhow!("reading the CA certificate: {e}"))?;
    let key = ecdsa_key()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    if let Some(g) = group {
        dn.push(DnType::OrganizationName, g);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(days);
    params.serial_number = Some(random_serial()?);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| anyhow!("signing the client certificate for {cn}: {e}"))?;
    Ok(ClientCert {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// The kubeconfig YAML (pure): one cluster, one user, one context.
pub fn render(cluster: &str, server: &str, ca_pem: &str, client: &ClientCert) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let user = format!("{ADMIN_USER}@{cluster}");
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: {cluster}\n\
         \x20 cluster:\n\
         \x20   server: {server}\n\
         \x20   certificate-authority-data: {ca}\n\
         users:\n\
         - name: {user}\n\
         \x20 user:\n\
         \x20   client-certificate-data: {cert}\n\
         \x20   client-key-data: {key}\n\
         contexts:\n\
         - name: {user}\n\
         \x20 context:\n\
         \x20   cluster: {cluster}\n\
         \x20   user: {user}\n\
         current-context: {user}\n\
         preferences: {{}}\n",
        ca = b64(ca_pem),
        cert = b64(&client.cert),
        key = b64(&client.key),
    )
}

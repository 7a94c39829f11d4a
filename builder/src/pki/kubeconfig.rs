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

/// Merges the kubeconfig `new` (as [`render`] writes it) into `existing`
/// (pure): its clusters, users and contexts replace the entries of the
/// same name and are added after the others; every other entry and key of
/// `existing` stays. The current context is `new`'s only when `existing`
/// has none. `file` names the existing file in errors.
pub fn merge(existing: &str, new: &str, file: &std::path::Path) -> Result<String> {
    use anyhow::Context;
    use serde_yaml_ng::{Mapping, Value};
    let new: Mapping = serde_yaml_ng::from_str(new).context("reading the new kubeconfig")?;
    let mut doc: Mapping = if existing.trim().is_empty() {
        Mapping::new()
    } else {
        serde_yaml_ng::from_str(existing).with_context(|| {
            format!(
                "{} is not a kubeconfig (YAML mapping); nothing was changed",
                file.display()
            )
        })?
    };
    for (k, v) in [("apiVersion", "v1"), ("kind", "Config")] {
        doc.entry(k.into()).or_insert_with(|| v.into());
    }
    for list in ["clusters", "users", "contexts"] {
        let added = match new.get(list) {
            Some(Value::Sequence(s)) => s.clone(),
            _ => continue,
        };
        let entries = doc
            .entry(list.into())
            .or_insert_with(|| Value::Sequence(Vec::new()));
        if entries.is_null() {
            *entries = Value::Sequence(Vec::new());
        }
        let Value::Sequence(entries) = entries else {
            return Err(anyhow!(
                "{}: `{list}` is not a list; nothing was changed",
                file.display()
            ));
        };
        for entry in added {
            let name = entry.get("name").cloned();
            match entries.iter_mut().find(|e| e.get("name") == name.as_ref()) {
                Some(old) => *old = entry,
                None => entries.push(entry),
            }
        }
    }
    let current = doc.get("current-context");
    if current.is_none_or(|c| c.as_str().is_none_or(str::is_empty)) {
        if let Some(c) = new.get("current-context") {
            doc.insert("current-context".into(), c.clone());
        }
    }
    serde_yaml_ng::to_string(&doc).context("writing the merged kubeconfig")
}

/// The name of the context [`render`] writes for `cluster`.
pub fn context_name(cluster: &str) -> String {
    format!("{ADMIN_USER}@{cluster}")
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use serde_yaml_ng::Value;
    use std::path::Path;

    fn fake_client() -> ClientCert {
        ClientCert {
            cert: "CERT".into(),
            key: "KEY".into(),
        }
    }

    const OTHER: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: prod\n  cluster:\n    server: https://prod:6443\nusers:\n- name: me@prod\n  user:\n    token: abc\ncontexts:\n- name: me@prod\n  context:\n    cluster: prod\n    user: me@prod\ncurrent-context: me@prod\npreferences: {}\n";

    fn names(doc: &Value, list: &str) -> Vec<String> {
        doc[list]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn merge_keeps_the_other_contexts_and_the_current_one() {
        let new = render("seed", "https://10.10.197.101:6443", "CA", &fake_client());
        let merged = merge(OTHER, &new, Path::new("config")).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&merged).unwrap();
        assert_eq!(
            names(&doc, "contexts"),
            vec!["me@prod", "habuild-admin@seed"]
        );
        assert_eq!(names(&doc, "clusters"), vec!["prod", "seed"]);
        assert_eq!(names(&doc, "users"), vec!["me@prod", "habuild-admin@seed"]);
        assert_eq!(doc["current-context"], "me@prod");
        assert_eq!(doc["users"][0]["user"]["token"], "abc");

        // Again, with a new certificate: replaced in place, not duplicated.
        let newer = render(
            "seed",
            "https://10.10.197.101:6443",
            "CA",
            &ClientCert {
                cert: "CERT2".into(),
                key: "KEY2".into(),
            },
        );
        let twice = merge(&merged, &newer, Path::new("config")).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&twice).unwrap();
        assert_eq!(
            names(&doc, "contexts"),
            vec!["me@prod", "habuild-admin@seed"]
        );
        let data = doc["users"][1]["user"]["client-certificate-data"]
            .as_str()
            .unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(data)
                .unwrap(),
            b"CERT2"
        );
    }

    #[test]
    fn merge_into_nothing_is_the_new_file_and_sets_the_context() {
        let new = render("seed", "https://vip:6443", "CA", &fake_client());
        let merged = merge("", &new, Path::new("config")).unwrap();
        let doc: Value = serde_yaml_ng::from_str(&merged).unwrap();
        assert_eq!(doc["current-context"], context_name("seed").as_str());
        assert_eq!(doc["kind"], "Config");
    }

    #[test]
    fn merge_refuses_what_is_not_a_kubeconfig() {
        let new = render("seed", "https://vip:6443", "CA", &fake_client());
        let e = merge(
            "- just\n- a list\n",
            &new,
            Path::new("/home/u/.kube/config"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("/home/u/.kube/config"), "{e:#}");
        let e = merge("contexts: 3\n", &new, Path::new("c")).unwrap_err();
        assert!(e.to_string().contains("`contexts` is not a list"), "{e}");
    }
}

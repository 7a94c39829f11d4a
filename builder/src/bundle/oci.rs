//! Single-layer OCI images as `oci-archive` tarballs (an OCI image layout
//! in a tar), the form `skopeo copy oci-archive:…` reads. The control-plane
//! images kubeadm needs are a static binary and a few files each, so one
//! layer is enough; everything is written byte for byte the same from the
//! same inputs (fixed mtimes, owners and order; gzip without a timestamp).

use std::io::Write;

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};

/// A file in the image's only layer.
#[derive(Debug, Clone)]
pub struct LayerFile {
    /// Absolute path in the image, without the leading `/`.
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// What the image is.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    /// The full reference kubeadm names it by (`registry.k8s.io/pause:3.10.2`).
    pub reference: String,
    /// OCI architecture (`amd64`, `arm64`).
    pub arch: String,
    pub entrypoint: Vec<String>,
    pub env: Vec<String>,
    pub files: Vec<LayerFile>,
    /// Seconds since the epoch, for every timestamp.
    pub epoch: i64,
}

/// Directories every image gets (with `/tmp` world-writable and sticky).
const DIRS: [(&str, u32); 6] = [
    ("etc", 0o755),
    ("tmp", 0o1777),
    ("usr", 0o755),
    ("usr/local", 0o755),
    ("usr/local/bin", 0o755),
    ("var", 0o755),
];

/// `/etc/passwd` and `/etc/group`: root and nobody, for programs that look
/// their user up.
pub fn base_files() -> Vec<LayerFile> {
    vec![
        LayerFile {
            path: "etc/passwd".into(),
            mode: 0o644,
            data: b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n".to_vec(),
        },
        LayerFile {
            path: "etc/group".into(),
            mode: 0o644,
            data: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        },
    ]
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn append(
    tar: &mut tar::Builder<Vec<u8>>,
    path: &str,
    mode: u32,
    epoch: i64,
    data: &[u8],
) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(epoch.max(0) as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, path, data)
        .with_context(|| format!("adding {path} to an image tarball"))
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, epoch: i64) -> Result<()> {
    let mut h = tar::Header::new_ustar();
    h.set_size(0);
    h.set_mode(mode);
    h.set_mtime(epoch.max(0) as u64);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut h, format!("{path}/"), std::io::empty())
        .with_context(|| format!("adding {path}/ to an image tarball"))
}

/// The uncompressed layer tar.
fn layer(spec: &ImageSpec) -> Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (d, mode) in DIRS {
        append_dir(&mut tar, d, mode, spec.epoch)?;
    }
    let mut files: Vec<&LayerFile> = spec.files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for f in files {
        append(&mut tar, &f.path, f.mode, spec.epoch, &f.data)?;
    }
    tar.into_inner().context("finishing an image layer")
}

/// The image as an `oci-archive` tarball.
pub fn archive(spec: &ImageSpec) -> Result<Vec<u8>> {
    let layer_tar = layer(spec)?;
    let diff_id = sha256_hex(&layer_tar);
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer_tar)
        .context("compressing an image layer")?;
    let layer_gz = gz.finish().context("compressing an image layer")?;
    let layer_digest = sha256_hex(&layer_gz);
    let created = super::rfc3339(spec.epoch)?;
    let config = serde_json::to_vec(&json!({
        "created": created,
        "architecture": spec.arch,
        "os": "linux",
        "config": {
            "Entrypoint": spec.entrypoint,
            "Env": spec.env,
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created": created, "created_by": "habuild bundle" }],
    }))?;
    let config_digest = sha256_hex(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer_gz.len(),
        }],
    }))?;
    let manifest_digest = sha256_hex(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": { "architecture": spec.arch, "os": "linux" },
            "annotations": { "org.opencontainers.image.ref.name": spec.reference },
        }],
    }))?;
    let mut tar = tar::Builder::new(Vec::new());
    let e = spec.epoch;
    append(
        &mut tar,
        "oci-layout",
        0o644,
        e,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    append(&mut tar, "index.json", 0o644, e, &index)?;
    append_dir(&mut tar, "blobs", 0o755, e)?;
    append_dir(&mut tar, "blobs/sha256", 0o755, e)?;
    append(
        &mut tar,
        &format!("blobs/sha256/{config_digest}"),
        0o644,
        e,
        &config,
    )?;
    append(
        &mut tar,
        &format!("blobs/sha256/{layer_digest}"),
        0o644,
        e,
        &layer_gz,
    )?;
    append(
        &mut tar,
        &format!("blobs/sha256/{manifest_digest}"),
        0o644,
        e,
        &manifest,
    )?;
    tar.into_inner().context("finishing an image archive")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn spec() -> ImageSpec {
        let mut files = base_files();
        files.push(LayerFile {
            path: "pause".into(),
            mode: 0o755,
            data: b"\x7fELF not really".to_vec(),
        });
        ImageSpec {
            reference: "registry.k8s.io/pause:3.10.2".into(),
            arch: "arm64".into(),
            entrypoint: vec!["/pause".into()],
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin".into()],
            files,
            epoch: 1_735_689_600,
        }
    }

    fn entries(archive: &[u8]) -> std::collections::BTreeMap<String, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        let mut t = tar::Archive::new(archive);
        for e in t.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            out.insert(name, data);
        }
        out
    }

    #[test]
    fn same_inputs_give_the_same_bytes() {
        assert_eq!(archive(&spec()).unwrap(), archive(&spec()).unwrap());
        let mut other = spec();
        other.epoch += 1;
        assert_ne!(archive(&spec()).unwrap(), archive(&other).unwrap());
    }

    #[test]
    fn every_digest_names_its_blob() {
        let e = entries(&archive(&spec()).unwrap());
        let blobs: Vec<&String> = e
            .keys()
            .filter(|k| k.starts_with("blobs/sha256/") && k.len() > 20)
            .collect();
        assert_eq!(blobs.len(), 3, "{:?}", e.keys());
        for b in blobs {
            let digest = b.trim_start_matches("blobs/sha256/");
            assert_eq!(sha256_hex(&e[b]), digest, "{b}");
        }
        let index: serde_json::Value = serde_json::from_slice(&e["index.json"]).unwrap();
        let m = &index["manifests"][0];
        assert_eq!(
            m["annotations"]["org.opencontainers.image.ref.name"],
            "registry.k8s.io/pause:3.10.2"
        );
        let md = m["digest"].as_str().unwrap().trim_start_matches("sha256:");
        let manifest: serde_json::Value =
            serde_json::from_slice(&e[&format!("blobs/sha256/{md}")]).unwrap();
        let ld = manifest["layers"][0]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        // The config's diff_id is the digest of the layer as unpacked.
        let cd = manifest["config"]["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        let config: serde_json::Value =
            serde_json::from_slice(&e[&format!("blobs/sha256/{cd}")]).unwrap();
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(&e[&format!("blobs/sha256/{ld}")][..])
            .read_to_end(&mut raw)
            .unwrap();
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", sha256_hex(&raw))
        );
        assert_eq!(config["architecture"], "arm64");
        let layer = entries(&raw);
        assert_eq!(layer["pause"], b"\x7fELF not really");
        assert!(layer.contains_key("tmp/"), "{:?}", layer.keys());
    }
}

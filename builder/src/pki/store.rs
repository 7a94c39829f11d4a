//! The secrets file on disk: where it is, reading it, and writing it
//! atomically with mode 0600. The only I/O of the `pki` module besides
//! [`super::stage::install`].

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::secrets::{self, ClusterSecrets};
use crate::config::Cluster;

/// Beside the manifest: `manifests/seed.toml` → `manifests/seed.secrets.toml`.
/// One file per cluster manifest, found without a flag; `*.secrets.toml` is
/// in `.gitignore` so it is not committed by accident.
pub fn default_path(manifest: &Path) -> PathBuf {
    let stem = manifest
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cluster".into());
    crate::config::beside_manifest(manifest, &format!("{stem}.secrets.toml"))
}

/// `--secrets FILE` when given, else [`default_path`].
pub fn resolve(manifest: &Path, flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .unwrap_or_else(|| default_path(manifest))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The `secrets init` command that creates `path` for `manifest`: with
/// `--secrets` when the path is not the manifest's default, so that the
/// suggested command makes the file the failed one looked for.
pub fn init_command(path: &Path, manifest: &Path) -> String {
    // The built-in seed manifest is the default: its unpacked copy's path
    // means nothing to the user.
    let mut cmd = if crate::config::is_builtin_manifest(manifest) {
        "habuild secrets init".to_string()
    } else {
        format!("habuild secrets init --manifest {}", manifest.display())
    };
    if path != default_path(manifest) {
        cmd.push_str(&format!(" --secrets {}", path.display()));
    }
    cmd
}

/// Reads and checks a secrets file. A missing file says how to create one.
pub fn load(path: &Path, manifest: &Path) -> Result<ClusterSecrets> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        // A missing input the user names or defaults to: exit status 2.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(crate::config::UsageError(format!(
                "no cluster secrets file at {}: create it once with\n  {}\n(or name an existing one with --secrets FILE)",
                crate::util::shown(path),
                init_command(path, manifest)
            ))
            .into())
        }
        // Bytes that are not text are a damaged file, like bad TOML (exit 2).
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            return Err(crate::config::ConfigErrors(vec![crate::config::ConfigError {
                file: path.to_path_buf(),
                key: "(file)".into(),
                problem: "not UTF-8 text; the file is corrupt: restore it from your backup".into(),
            }])
            .into())
        }
        Err(e) => {
            return Err(e).with_context(|| format!("reading the secrets file {}", path.display()))
        }
    };
    let mode = fs::metadata(path)
        .with_context(|| format!("reading the mode of {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        log::warn!(
            "{} is readable by others (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(secrets::parse(path, &text, now())?)
}

/// [`load`], then refuses a file made for another cluster (see
/// [`secrets::check_cluster`]). Also returns the note for a manifest that
/// pins no CA: a build shows it (once), `secrets show` reports the pin.
pub fn load_for_cluster(
    path: &Path,
    cluster: &Cluster,
    manifest: &Path,
) -> Result<(ClusterSecrets, Option<String>)> {
    let s = load(path, manifest)?;
    let note = secrets::check_cluster(
        &s,
        cluster,
        cluster.ca_fingerprint.as_deref(),
        manifest,
        path,
    )?;
    Ok((s, note))
}

/// The secrets an image build needs: with any control plane among the
/// nodes, the cluster's secrets file (`flag`, else beside `manifest`), read
/// and checked against the cluster before any image work, so that a missing,
/// corrupt or foreign file writes no image. Directors carry no secret.
pub fn for_build(
    manifest: &Path,
    flag: Option<&Path>,
    cluster: &Cluster,
    control_planes: bool,
) -> Result<Option<ClusterSecrets>> {
    if !control_planes {
        return Ok(None);
    }
    let path = resolve(manifest, flag);
    let (s, note) = load_for_cluster(&path, cluster, manifest)
        .with_context(|| format!("the secrets of cluster {}", cluster.name))?;
    if let Some(note) = note {
        eprintln!("  note: {note}");
    }
    Ok(Some(s))
}

/// Writes `text` to `path` with mode 0600, atomically: a reader sees the old
/// file or the whole new one, never a part. Without `overwrite`, an existing
/// file is an error, decided atomically too (hard link, which fails if the
/// name exists), so two concurrent `secrets init` cannot both win.
pub fn write_private(path: &Path, text: &str, overwrite: bool) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = write_tmp(&tmp, text).and_then(|()| {
        if overwrite {
            fs::rename(&tmp, path)
                .with_context(|| format!("moving {} into place", path.display()))
        } else {
            match fs::hard_link(&tmp, path) {
                Ok(()) => Ok(()),
                // A refusal the user lifts with a flag: exit status 2.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(crate::config::UsageError(format!(
                    "{} already exists: it holds this cluster's CAs, and images built from a new one would not form a cluster with nodes built from the old one. Pass --force to replace it anyway",
                    path.display()
                ))
                .into()),
                Err(e) => Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
    });
    // After a rename the temporary name is gone already; after a link (or
    // a failure) it must go.
    if tmp.exists() {
        fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    result?;
    // The directory entry itself must survive a power cut too.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn write_tmp(tmp: &Path, text: &str) -> Result<()> {
    let _ = fs::remove_file(tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    // The umask can only remove bits, but say it explicitly.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting mode 600 on {}", tmp.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.sync_all()
        .with_context(|| format!("flushing {}", tmp.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_path_is_beside_the_manifest() {
        assert_eq!(
            default_path(Path::new("manifests/seed.toml")),
            Path::new("manifests/seed.secrets.toml")
        );
        assert_eq!(
            resolve(Path::new("a/b.toml"), Some(Path::new("/x.toml"))),
            Path::new("/x.toml")
        );
    }

    #[test]
    fn private_writes_are_0600_atomic_and_refuse_overwrite() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c.secrets.toml");
        write_private(&p, "one", false).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = write_private(&p, "two", false).unwrap_err();
        assert!(format!("{err:#}").contains("--force"), "{err:#}");
        assert_eq!(fs::read_to_string(&p).unwrap(), "one");
        write_private(&p, "three", true).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "three");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    }

    #[test]
    fn a_missing_file_says_how_to_create_it() {
        let t = tempfile::tempdir().unwrap();
        let err = load(&t.path().join("x.secrets.toml"), Path::new("m.toml")).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("habuild secrets init --manifest m.toml --secrets "),
            "{msg}"
        );
    }

    #[test]
    fn the_suggested_init_names_the_same_secrets_file() {
        let m = Path::new("dir/m.toml");
        // The default path needs no --secrets; any other path is passed on.
        assert_eq!(
            init_command(Path::new("dir/m.secrets.toml"), m),
            "habuild secrets init --manifest dir/m.toml"
        );
        assert_eq!(
            init_command(Path::new("/etc/habuild/prod.toml"), m),
            "habuild secrets init --manifest dir/m.toml --secrets /etc/habuild/prod.toml"
        );
    }
}

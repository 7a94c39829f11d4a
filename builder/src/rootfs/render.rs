//! The per-node template context and the overlay applier.
//!
//! An overlay is a directory tree (`overlays/common/`, `overlays/<role>/`,
//! `boards/<board>/boot/`) laid onto a target tree: directories are created,
//! regular files copied, symlinks recreated as symlinks (that is how units
//! get enabled without running `systemctl` in the target), and `*.hbs` files
//! rendered from the [`RenderContext`] with their extension dropped.
//!
//! Applying happens in three steps so that only the first and last touch the
//! disk: [`read_overlay`] loads the source tree, [`render_overlay`] turns it
//! into the exact entries to write (pure), and [`write_entries`] writes them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{symlink, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context as _, Result};
use handlebars::{
    Context as HbContext, Handlebars, Helper, HelperResult, Output,
    RenderContext as HbRenderContext, RenderErrorReason,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use walkdir::WalkDir;

/// Everything a template may refer to, for one node of one cluster.
#[derive(Serialize, Clone, Debug)]
pub struct RenderContext {
    pub cluster: ClusterCtx,
    pub vip: VipCtx,
    pub node: NodeCtx,
    /// kubeadm's configuration of a control plane (bootstrap token, CA
    /// hash: from the cluster's secrets file); `None` on directors.
    pub kubeadm: Option<KubeadmCtx>,
    pub ssh_authorized_keys: Vec<String>,
    /// `[kubeadm]` timeouts, `[etcd]` tuning and `[addons]`, as validated.
    pub tuning: crate::config::tuning::Tuning,
    /// Control planes in manifest order; the first is the init node.
    pub control_planes: Vec<PeerCtx>,
    /// The LVS-DR director in front of the control planes (for /etc/hosts).
    pub director: PeerCtx,
    pub boot: BootCtx,
    /// False when the image is built without kubeadm/kubelet/CRI-O packages.
    pub kubernetes_packages: bool,
    /// keepalived / LVS settings, the same for every director.
    pub loadbalancer: LoadBalancerCtx,
    /// The NIC a director's network config and keepalived refer to by name;
    /// `None` on control planes (their .network matches kernel names).
    pub lan: Option<LanCtx>,
    /// This director's VRRP role; `None` on control planes.
    pub vrrp: Option<VrrpCtx>,
}

#[derive(Serialize, Clone, Debug)]
pub struct ClusterCtx {
    pub name: String,
    /// e.g. "1.31.4"
    pub kubernetes_version: String,
    /// e.g. "1.31"
    pub crio_version: String,
    pub pod_subnet: String,
    pub service_subnet: String,
    /// kubeadm's `--image-repository`; `None` means registry.k8s.io.
    pub image_repository: Option<String>,
    /// e.g. "10.10.197.101:6443"
    pub control_plane_endpoint: String,
}

#[derive(Serialize, Clone, Debug)]
pub struct VipCtx {
    pub address: String,
    pub port: u16,
}

#[derive(Serialize, Clone, Debug)]
pub struct NodeCtx {
    pub name: String,
    /// "control-plane" or "director"
    pub role: String,
    pub address: String,
    pub prefix_len: u8,
    pub gateway: String,
    pub dns: Vec<String>,
    /// "arm64" or "amd64"
    pub arch: String,
    /// "rpi4" or "amd64"
    pub board: String,
    pub is_init_node: bool,
}

/// What the kubeadm InitConfiguration / JoinConfiguration templates need
/// beyond the manifest. `bootstrap_token` is a secret: the files that
/// render it are 0600 (see [`file_mode`]).
#[derive(Serialize, Clone)]
pub struct KubeadmCtx {
    /// `[a-z0-9]{6}.[a-z0-9]{16}`
    pub bootstrap_token: String,
    /// kubeadm duration, e.g. "24h"
    pub bootstrap_token_ttl: String,
    /// `sha256:<hex>` of the cluster CA's SubjectPublicKeyInfo.
    pub ca_cert_hash: String,
    /// e.g. "unix:///var/run/crio/crio.sock"
    pub cri_socket: String,
}

impl std::fmt::Debug for KubeadmCtx {
    /// Without the token: a context may be logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeadmCtx")
            .field("bootstrap_token_ttl", &self.bootstrap_token_ttl)
            .field("ca_cert_hash", &self.ca_cert_hash)
            .field("cri_socket", &self.cri_socket)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct PeerCtx {
    pub name: String,
    pub address: String,
}

#[derive(Serialize, Clone, Debug)]
pub struct BootCtx {
    /// "/boot/firmware" (rpi4) or "/boot/efi" (amd64)
    pub mount: String,
    /// FAT label of the boot partition, e.g. "BOOT"
    pub fs_label: String,
    /// ext4 label of the root filesystem, e.g. "root"
    pub root_label: String,
    /// Serial console for the kernel command line, e.g. "ttyS1,115200"
    pub console: String,
    /// Kernel and initramfs names inside the boot partition.
    pub kernel_file: String,
    pub initrd_file: String,
}

/// The manifest's `[loadbalancer]` plus every director.
#[derive(Serialize, Clone, Debug)]
pub struct LoadBalancerCtx {
    pub virtual_router_id: u8,
    pub advert_int: u32,
    /// IPVS scheduler, e.g. "wrr" (also names the module `ip_vs_wrr`).
    pub lvs_scheduler: String,
    /// "DR"
    pub lvs_method: String,
    pub weight: u32,
    pub delay_loop: u32,
    pub connect_timeout: u32,
    pub retry: u32,
    pub delay_before_retry: u32,
    /// Directors in manifest order; the first is the VRRP master.
    pub directors: Vec<DirectorCtx>,
}

#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct DirectorCtx {
    pub name: String,
    pub address: String,
    /// "MASTER" or "BACKUP": the initial VRRP state.
    pub state: String,
    pub priority: u8,
}

/// A director's LAN NIC, named by a systemd .link file.
#[derive(Serialize, Clone, Debug)]
pub struct LanCtx {
    /// e.g. "lan0"
    pub name: String,
    /// The MAC the .link file matches (lower-case); `None`: the fallback
    /// match on the one physical Ethernet NIC.
    pub mac: Option<String>,
}

/// This director's part in VRRP.
#[derive(Serialize, Clone, Debug)]
pub struct VrrpCtx {
    /// "MASTER" or "BACKUP"
    pub state: String,
    pub priority: u8,
    /// The other directors' addresses, where adverts go by unicast; empty
    /// with a single director (multicast, as in the seed).
    pub unicast_peers: Vec<String>,
}

/// One regular file an overlay wrote into the target tree.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path inside the target tree, e.g. "/etc/hostname".
    pub path: String,
    /// Lower-case hex SHA-256 of the bytes written.
    pub sha256: String,
    /// Permission bits as set on the file (e.g. 0o644).
    pub mode: u32,
}

/// Suffix of the files rendered as Handlebars templates.
const TEMPLATE_SUFFIX: &str = ".hbs";

/// Placeholder files that only exist so git keeps an otherwise empty
/// directory; they are never part of an image.
const IGNORED_NAMES: &[&str] = &[".gitkeep"];

/// Directories whose files all hold credentials: 0600 whatever their names.
/// `/etc/habuild/kubeadm/` carries the bootstrap token in kubeadm's config.
const PRIVATE_FILE_DIRS: &[&str] = &["/root/.ssh/", "/etc/habuild/kubeadm/"];

/// Directories that hold credentials: 0700 whether we create them or they
/// already exist in the base tree (sshd's StrictModes checks /root/.ssh).
const PRIVATE_DIRS: &[&str] = &["/root", "/root/.ssh"];

/// Renders one template with the node's context.
///
/// Strict mode: a variable missing from the context is an error naming the
/// template, so a typo cannot silently produce an empty config value.
/// Handlebars' strict mode covers `{{value}}` and `{{#each}}` but not
/// `{{#if}}`, where a missing path is just false: conditionals need a test
/// with the value set (see `pause_image_follows_image_repository`). No
/// HTML escaping: these are config files and scripts, where `=` or `'`
/// must come out as written.
pub fn render_template(name: &str, template: &str, ctx: &RenderContext) -> Result<String> {
    let mut hb = registry();
    hb.register_template_string(name, template)
        .with_context(|| format!("parsing template {name}"))?;
    hb.render(name, ctx)
        .with_context(|| format!("rendering template {name}"))
}

/// The pause (pod sandbox) image version kubeadm uses for a Kubernetes
/// release: `PauseVersion` in kubeadm's `cmd/kubeadm/app/constants`. CRI-O
/// must run the same image when pulls go to a private registry, otherwise
/// the sandbox image kubeadm pre-pulled there is not the one CRI-O asks for.
pub fn pause_version(kubernetes_version: &str) -> Result<&'static str> {
    let v = kubernetes_version.trim_start_matches('v');
    let mut parts = v.split('.');
    let (major, minor) = (parts.next(), parts.next());
    let minor: u32 = match (major, minor.map(str::parse)) {
        (Some("1"), Some(Ok(minor))) => minor,
        _ => {
            bail!("cannot read Kubernetes version {kubernetes_version:?} (expected 1.MINOR.PATCH)")
        }
    };
    match minor {
        // kubeadm's constants.PauseVersion of each release.
        31..=33 => Ok("3.10"),
        34..=35 => Ok("3.10.1"),
        36..=37 => Ok("3.10.2"),
        _ => bail!(
            "no known pause image version for Kubernetes {kubernetes_version}: \
             add kubeadm's PauseVersion for 1.{minor} to rootfs::render::pause_version"
        ),
    }
}

/// The template registry every render uses (see [`render_template`]).
fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("pause_version", Box::new(pause_version_helper));
    hb
}

/// `{{pause_version cluster.kubernetes_version}}`: see [`pause_version`].
fn pause_version_helper(
    h: &Helper,
    _: &Handlebars,
    _: &HbContext,
    _: &mut HbRenderContext,
    out: &mut dyn Output,
) -> HelperResult {
    let version = h
        .param(0)
        .and_then(|p| p.value().as_str())
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("pause_version", 0))?;
    let pause = pause_version(version).map_err(|e| RenderErrorReason::Other(format!("{e:#}")))?;
    out.write(pause)?;
    Ok(())
}

/// Applies one overlay onto `dest` (which must exist) and returns every
/// regular file written, sorted by path. Applying several overlays in turn
/// onto one tree is supported: a later overlay replaces files and symlinks
/// of an earlier one (see [`apply_overlays`] for the merged file list).
pub fn apply_overlay(src: &Path, dest: &Path, ctx: &RenderContext) -> Result<Vec<RenderedFile>> {
    let written = apply_one(src, dest, ctx)?;
    let mut files: Vec<RenderedFile> = written
        .into_iter()
        .filter_map(|w| match w {
            Written::File(f) => Some(f),
            Written::Symlink(_) => None,
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Applies overlays in order (e.g. common, then the node's role) onto one
/// tree and returns the regular files the tree ends up with from them: when
/// two overlays write the same path, the later one's entry is kept.
pub fn apply_overlays(
    srcs: &[&Path],
    dest: &Path,
    ctx: &RenderContext,
) -> Result<Vec<RenderedFile>> {
    let mut merged: BTreeMap<String, RenderedFile> = BTreeMap::new();
    for src in srcs {
        for w in apply_one(src, dest, ctx)? {
            match w {
                Written::File(f) => {
                    merged.insert(f.path.clone(), f);
                }
                Written::Symlink(path) => {
                    merged.remove(&path);
                }
            }
        }
    }
    Ok(merged.into_values().collect())
}

fn apply_one(src: &Path, dest: &Path, ctx: &RenderContext) -> Result<Vec<Written>> {
    let source = read_overlay(src)?;
    let entries = render_overlay(&source, ctx)?;
    write_entries(dest, &entries)
        .with_context(|| format!("applying overlay {} onto {}", src.display(), dest.display()))
}

/// One entry of an overlay's source tree.
#[derive(Debug)]
struct SourceEntry {
    /// Path relative to the overlay root.
    rel: PathBuf,
    /// Full source path, for error messages and template names.
    origin: PathBuf,
    kind: SourceKind,
}

#[derive(Debug)]
enum SourceKind {
    Dir,
    File { bytes: Vec<u8>, executable: bool },
    Symlink { target: PathBuf },
}

/// What to create in the target tree, with its absolute in-tree path.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir {
        path: String,
    },
    File {
        path: String,
        bytes: Vec<u8>,
        mode: u32,
    },
    Symlink {
        path: String,
        target: PathBuf,
    },
}

#[derive(Debug)]
enum Written {
    File(RenderedFile),
    Symlink(String),
}

/// Loads an overlay tree, sorted by file name at every level so that the
/// result (and everything built from it) is the same on every machine.
fn read_overlay(src: &Path) -> Result<Vec<SourceEntry>> {
    let meta = fs::metadata(src).with_context(|| format!("reading overlay {}", src.display()))?;
    if !meta.is_dir() {
        bail!("overlay {} is not a directory", src.display());
    }
    let mut out = Vec::new();
    let walker = WalkDir::new(src)
        .follow_links(false)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        // Skip ignored names, and everything under them if one is a directory.
        .filter_entry(|e| !IGNORED_NAMES.iter().any(|n| e.file_name() == *n));
    for entry in walker {
        let entry = entry.with_context(|| format!("walking overlay {}", src.display()))?;
        let origin = entry.path().to_path_buf();
        let rel = origin
            .strip_prefix(src)
            .with_context(|| format!("{} is outside overlay {}", origin.display(), src.display()))?
            .to_path_buf();
        let ft = entry.file_type();
        let kind = if ft.is_dir() {
            SourceKind::Dir
        } else if ft.is_symlink() {
            let target = fs::read_link(&origin)
                .with_context(|| format!("reading symlink {}", origin.display()))?;
            SourceKind::Symlink { target }
        } else if ft.is_file() {
            let bytes =
                fs::read(&origin).with_context(|| format!("reading {}", origin.display()))?;
            let mode = entry
                .metadata()
                .with_context(|| format!("reading metadata of {}", origin.display()))?
                .permissions()
                .mode();
            SourceKind::File {
                bytes,
                executable: mode & 0o111 != 0,
            }
        } else {
            bail!(
                "{}: only directories, regular files and symlinks belong in an overlay",
                origin.display()
            );
        };
        out.push(SourceEntry { rel, origin, kind });
    }
    Ok(out)
}

/// Turns an overlay's source entries into what to write: templates
/// rendered, paths made absolute, modes decided. No I/O.
fn render_overlay(source: &[SourceEntry], ctx: &RenderContext) -> Result<Vec<Entry>> {
    let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
    let mut out = Vec::with_capacity(source.len());
    for e in source {
        let rel = e
            .rel
            .to_str()
            .ok_or_else(|| anyhow!("{}: overlay paths must be UTF-8", e.origin.display()))?;
        let entry = match &e.kind {
            SourceKind::Dir => Entry::Dir { path: in_tree(rel) },
            SourceKind::Symlink { target } => Entry::Symlink {
                path: in_tree(rel),
                target: target.clone(),
            },
            SourceKind::File { bytes, executable } => match rel.strip_suffix(TEMPLATE_SUFFIX) {
                Some(stem) => {
                    let text = std::str::from_utf8(bytes)
                        .with_context(|| format!("template {} is not UTF-8", e.origin.display()))?;
                    let rendered = render_template(&e.origin.display().to_string(), text, ctx)?;
                    let path = in_tree(stem);
                    let mode = file_mode(&path, *executable);
                    Entry::File {
                        path,
                        bytes: rendered.into_bytes(),
                        mode,
                    }
                }
                None => {
                    let path = in_tree(rel);
                    let mode = file_mode(&path, *executable);
                    Entry::File {
                        path,
                        bytes: bytes.clone(),
                        mode,
                    }
                }
            },
        };
        let path = entry.path().to_owned();
        // `x` and `x.hbs` side by side would silently overwrite each other.
        if let Some(first) = seen.insert(path.clone(), &e.origin) {
            bail!(
                "{} and {} both produce {path}",
                first.display(),
                e.origin.display()
            );
        }
        out.push(entry);
    }
    Ok(out)
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path } | Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

/// "etc/hosts" → "/etc/hosts" (overlay-relative paths always use '/').
fn in_tree(rel: &str) -> String {
    format!("/{rel}")
}

/// Permission bits for a file at `path` in the target tree.
///
/// Git records only "executable or not", so sensitive modes cannot come
/// from the source tree and are decided by path instead: anything under
/// /root/.ssh and /etc/habuild/kubeadm (`PRIVATE_FILE_DIRS`), and private
/// keys and secrets anywhere, are 0600 (sshd's StrictModes, the bootstrap
/// token, plain hygiene); files under /etc/ssh are never executable.
/// Otherwise the source's executable bit picks 0755 or 0644.
fn file_mode(path: &str, executable: bool) -> u32 {
    let name = path.rsplit('/').next().unwrap_or(path);
    if PRIVATE_FILE_DIRS.iter().any(|d| path.starts_with(d)) || is_secret_name(name) {
        0o600
    } else if path.starts_with("/etc/ssh/") || !executable {
        0o644
    } else {
        0o755
    }
}

/// Names that hold a private key or a secret: `ssh_host_ed25519_key`,
/// `sa.key`, `token-secret`. Public halves (`.pub`) and keyrings
/// (`kubernetes-apt-keyring.gpg`, read by apt's unprivileged user) are not.
fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    if lower.ends_with(".pub") {
        return false;
    }
    lower.contains("secret")
        || lower == "key"
        || [".key", "_key", "-key"].iter().any(|s| lower.ends_with(s))
}

/// Mode for a directory we create; `PRIVATE_DIRS` are also tightened when
/// the base tree already has them.
fn dir_mode(path: &str) -> u32 {
    if PRIVATE_DIRS.contains(&path) {
        0o700
    } else {
        0o755
    }
}

/// Writes entries (parents before children, as [`render_overlay`] orders
/// them) under `dest`.
///
/// Never writes through a symlink: the target tree is a foreign root whose
/// absolute links (`/etc/resolv.conf -> /run/...`) point at the build host.
/// A symlink at an entry's own path is replaced; one on the way to it is an
/// error.
fn write_entries(dest: &Path, entries: &[Entry]) -> Result<Vec<Written>> {
    let meta = fs::metadata(dest).with_context(|| format!("target tree {}", dest.display()))?;
    if !meta.is_dir() {
        bail!("target tree {} is not a directory", dest.display());
    }
    let mut written = Vec::new();
    let mut checked_dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for entry in entries {
        let path = entry.path();
        let target = target_path(dest, path)?;
        if let Some(parent) = target.parent() {
            check_parents(dest, parent, &mut checked_dirs)?;
        }
        match entry {
            Entry::Dir { path } => {
                write_dir(&target, path)?;
                checked_dirs.insert(target);
            }
            Entry::File { path, bytes, mode } => {
                remove_non_dir(&target)?;
                write_file(&target, bytes, *mode)?;
                written.push(Written::File(RenderedFile {
                    path: path.clone(),
                    sha256: hex::encode(Sha256::digest(bytes)),
                    mode: *mode,
                }));
            }
            Entry::Symlink { path, target: link } => {
                remove_non_dir(&target)?;
                symlink(link, &target).with_context(|| {
                    format!(
                        "creating symlink {} -> {}",
                        target.display(),
                        link.display()
                    )
                })?;
                written.push(Written::Symlink(path.clone()));
            }
        }
    }
    Ok(written)
}

/// `dest` joined with an in-tree path, refusing anything but plain names.
fn target_path(dest: &Path, path: &str) -> Result<PathBuf> {
    let rel = Path::new(path.trim_start_matches('/'));
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("invalid in-tree path {path:?}");
    }
    Ok(dest.join(rel))
}

/// Every directory from `dest` down to `dir` must be a real directory (or
/// missing, to be created by an earlier entry), never a symlink.
fn check_parents(dest: &Path, dir: &Path, checked: &mut BTreeSet<PathBuf>) -> Result<()> {
    let rel = dir
        .strip_prefix(dest)
        .with_context(|| format!("{} is outside {}", dir.display(), dest.display()))?;
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        if checked.contains(&cur) {
            continue;
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => bail!(
                "refusing to write through symlink {} (-> {}): it would resolve outside the target tree",
                cur.display(),
                fs::read_link(&cur).map(|t| t.display().to_string()).unwrap_or_default()
            ),
            Ok(m) if !m.is_dir() => bail!("{} is in the way: not a directory", cur.display()),
            Ok(_) => {
                checked.insert(cur.clone());
            }
            Err(e) => return Err(e).with_context(|| format!("expected directory {}", cur.display())),
        }
    }
    Ok(())
}

fn write_dir(target: &Path, path: &str) -> Result<()> {
    let mode = dir_mode(path);
    match fs::symlink_metadata(target) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "refusing to write through symlink {} (-> {}): the overlay has a directory there",
            target.display(),
            fs::read_link(target)
                .map(|t| t.display().to_string())
                .unwrap_or_default()
        ),
        Ok(m) if !m.is_dir() => bail!(
            "{} is a file in the target tree, the overlay has a directory there",
            target.display()
        ),
        // An existing directory keeps the base tree's mode, unless it must be private.
        Ok(_) if mode == 0o755 => return Ok(()),
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fs::create_dir(target)
                .with_context(|| format!("creating directory {}", target.display()))?;
        }
        Err(e) => return Err(e).with_context(|| format!("inspecting {}", target.display())),
    }
    // Explicitly, so the process umask does not decide the image's modes.
    fs::set_permissions(target, fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", target.display()))
}

/// Makes room for a file or symlink: an existing file or symlink goes (a
/// symlink is removed, not followed); a directory is an error.
fn remove_non_dir(target: &Path) -> Result<()> {
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => bail!(
            "{} is a directory in the target tree, the overlay has a file or symlink there",
            target.display()
        ),
        Ok(_) => fs::remove_file(target).with_context(|| format!("replacing {}", target.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("inspecting {}", target.display())),
    }
}

fn write_file(target: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    // Created with its final mode, so a secret is never readable by others,
    // not even between create and chmod.
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(target)
        .with_context(|| format!("creating {}", target.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", target.display()))?;
    // The umask may have cleared bits of `mode` at creation.
    f.set_permissions(fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting mode {mode:o} on {}", target.display()))
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;

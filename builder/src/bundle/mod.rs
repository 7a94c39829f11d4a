//! `habuild bundle`: the offline bundle that `habuild image --k8s-bundle`
//! takes, built from pinned upstream source instead of downloaded from
//! pkgs.k8s.io. For each architecture it builds Kubernetes, CRI-O,
//! cri-tools, the CNI plugins, etcd and CoreDNS with the go command from
//! the wrapper modules in `bundle/go/` (versions in go.mod, checksums in
//! go.sum), packages them as pkgs.k8s.io names and lays them out, and adds
//! the control-plane container images kubeadm needs, so that a site with
//! no registry forms its cluster. What still differs from a pkgs.k8s.io
//! install is listed in `bundle.json` ([`DIFFERENCES`]).
//!
//! Layout: `OUT/<arch>/*.deb`, `OUT/<arch>/SHA256SUMS`,
//! `OUT/<arch>/bundle.json`. Binaries are cached by version and inputs
//! under `<cache>/bundle/bin`; a bundle whose inputs did not change is not
//! packaged again.

pub mod components;
pub mod deb;
pub mod gobuild;
pub mod images;
pub mod native;
pub mod oci;
pub mod packages;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::util::progress::Step;

/// What still differs from packages installed from pkgs.k8s.io; recorded
/// in every bundle.json and shown by `habuild bundle`.
pub const DIFFERENCES: &[&str] = &[
    "cri-o is built without cgo, as upstream's static build is not: it has no seccomp support (`crio status config` shows SeccompEnabled false; RuntimeDefault seccomp profiles are not applied)",
    "cri-o runs Debian's conmon and crun, linked into /usr/libexec/crio where the upstream package puts its own builds",
    "the Kubernetes binaries carry no git commit: the module proxy does not record k8s.io/kubernetes' commit, so gitTreeState is \"archive\"",
    "the kube-proxy image holds kube-proxy alone, without the iptables and nftables programs upstream's image carries",
];

/// What to build.
#[derive(Debug, Clone)]
pub struct Request {
    /// The checkout (its `bundle/` directory).
    pub root: PathBuf,
    pub archs: Vec<String>,
    pub out: PathBuf,
    /// `<cache>`: binaries go to `<cache>/bundle/bin`.
    pub cache: PathBuf,
    pub source_date_epoch: i64,
    /// Control-plane container images (the habuild-control-plane-images package).
    pub images: bool,
}

/// `bundle.json`: the pins and checksums a bundle was built from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BundleRecord {
    /// Hash of every input; an equal key means nothing needs building.
    pub key: String,
    pub arch: String,
    pub go: String,
    pub components: Vec<gobuild::CacheRecord>,
    pub packages: BTreeMap<String, String>,
    pub images: Vec<String>,
    pub differences: Vec<String>,
}

/// One architecture's bundle.
#[derive(Debug)]
pub struct ArchOutcome {
    pub dir: PathBuf,
    pub record: BundleRecord,
    /// Nothing was built or packaged: the bundle was up to date.
    pub up_to_date: bool,
    pub took: Duration,
}

/// The revision every package gets, in pkgs.k8s.io's form (`1.36.3-1.1`).
pub const DEB_REVISION: &str = "1.1";

pub fn build(req: &Request) -> Result<Vec<ArchOutcome>> {
    if req.archs.is_empty() {
        bail!("no architecture to build the bundle for (--arch arm64, --arch amd64)");
    }
    // One bundle build at a time per cache: two runs sharing the binary
    // cache and the output (CI starts one ahead of the tests) would race.
    let _held = crate::util::filelock::lock_waiting(
        &req.cache.join("bundle/build.lock"),
        "another habuild bundle using this cache",
    )?;
    // go build runs in each module's directory: a relative -o would land
    // there, not where the caller meant.
    let absolute =
        |p: &Path| std::path::absolute(p).with_context(|| format!("resolving {}", p.display()));
    let req = &Request {
        out: absolute(&req.out)?,
        cache: absolute(&req.cache)?,
        ..req.clone()
    };
    let go = gobuild::go_version()?;
    let build_date = rfc3339(req.source_date_epoch)?;
    let modules = req.root.join("bundle/go");
    let bin_cache = req.cache.join("bundle/bin");
    let env = gobuild::GoEnv {
        modules: &modules,
        cache: &bin_cache,
        go_version: &go,
        build_date: &build_date,
    };
    let mut outcomes = Vec::new();
    for arch in &req.archs {
        outcomes.push(build_arch(req, arch, &env)?);
    }
    Ok(outcomes)
}

fn build_arch(req: &Request, arch: &str, env: &gobuild::GoEnv) -> Result<ArchOutcome> {
    let start = Instant::now();
    let mut built = BTreeMap::new();
    for c in components::ALL {
        if c == components::COREDNS && !req.images {
            continue;
        }
        let step = Step::start(format!("{arch}: go build {} ({})", c.dir, c.module));
        let b = gobuild::build(&c, arch, env)?;
        step.detail(&format!(
            "{} {}",
            b.source.version,
            if b.cached { "(cached)" } else { "(built)" }
        ));
        step.finish();
        built.insert(c.dir, b);
    }
    let records: Vec<gobuild::CacheRecord> = built
        .values()
        .map(|b| read_record(&b.dir))
        .collect::<Result<_>>()?;
    let key = bundle_key(req, arch, &records)?;
    let dir = req.out.join(arch);
    let record_path = dir.join("bundle.json");
    if let Ok(text) = std::fs::read_to_string(&record_path) {
        if let Ok(old) = serde_json::from_str::<BundleRecord>(&text) {
            if old.key == key && sums_hold(&dir) {
                return Ok(ArchOutcome {
                    dir,
                    record: old,
                    up_to_date: true,
                    took: start.elapsed(),
                });
            }
        }
    }
    let staging = req
        .out
        .join(format!(".{arch}.partial-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    std::fs::create_dir_all(&staging).with_context(|| format!("creating {}", staging.display()))?;
    let helpers = tempfile::tempdir().context("creating a directory for C helpers")?;
    let kube = &built["kubernetes"];
    let crio = &built["cri-o"];
    let step = Step::start(format!("{arch}: cc pinns, pause"));
    let pinns = native::compile(&native::PINNS, &crio.module_dir, arch, &[], helpers.path())?;
    step.finish();
    let mut image_refs = Vec::new();
    // The images package's tree: it must live until the packages are built.
    let image_work = tempfile::tempdir().context("creating a directory for image archives")?;
    let mut specs = packages::node_packages(&packages::Inputs {
        root: &req.root,
        arch,
        kubernetes: kube,
        crio,
        pinns: &pinns,
        cri_tools: &built["cri-tools"],
        cni: &built["cni-plugins"],
    })?;
    if req.images {
        let step = Step::start(format!("{arch}: control-plane images"));
        let makefile = kube.module_dir.join("build/pause/Makefile");
        let tag = native::pause_tag(
            &std::fs::read_to_string(&makefile)
                .with_context(|| format!("reading {}", makefile.display()))?,
        )
        .with_context(|| format!("{} names no TAG", makefile.display()))?;
        let pause = native::compile(
            &native::PAUSE,
            &kube.module_dir,
            arch,
            &[format!("VERSION=v{tag}-habuild")],
            helpers.path(),
        )?;
        let refs = images::kubeadm_image_list(kube, &kube.source.version)?;
        let set = images::ImageSet::new(&refs, &built, &pause, &tag)?;
        let (spec, refs) =
            set.package(&req.root, arch, image_work.path(), req.source_date_epoch)?;
        specs.push(spec);
        image_refs = refs;
        step.finish();
    }
    let step = Step::start(format!("{arch}: packaging {} .debs", specs.len()));
    let debs = package_all(&specs, &staging, req.source_date_epoch)?;
    step.finish();
    finish(
        req, arch, key, records, image_refs, debs, &staging, &dir, start,
    )
}

fn package_all(specs: &[deb::DebSpec], out: &Path, epoch: i64) -> Result<BTreeMap<String, String>> {
    let mut debs = BTreeMap::new();
    for s in specs {
        let path = deb::build(s, out, epoch)?;
        debs.insert(deb::file_name(s), crate::util::digest::sha256_file(&path)?);
    }
    Ok(debs)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    req: &Request,
    arch: &str,
    key: String,
    components: Vec<gobuild::CacheRecord>,
    images: Vec<String>,
    packages: BTreeMap<String, String>,
    staging: &Path,
    dir: &Path,
    start: Instant,
) -> Result<ArchOutcome> {
    let record = BundleRecord {
        key,
        arch: arch.to_string(),
        go: components.first().map(|c| c.go.clone()).unwrap_or_default(),
        components,
        packages: packages.clone(),
        images: images.clone(),
        differences: DIFFERENCES
            .iter()
            .filter(|d| req.images || !d.contains("image"))
            .map(|d| d.to_string())
            .collect(),
    };
    std::fs::write(
        staging.join("bundle.json"),
        serde_json::to_vec_pretty(&record).context("serialising bundle.json")?,
    )
    .with_context(|| format!("writing {}", staging.join("bundle.json").display()))?;
    std::fs::write(
        staging.join("SHA256SUMS"),
        crate::artifact::checksums::render_sums(&packages),
    )
    .with_context(|| format!("writing {}", staging.join("SHA256SUMS").display()))?;
    // The finished bundle replaces the old one whole: a reader never sees
    // half of each.
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(staging, dir)
        .with_context(|| format!("moving {} to {}", staging.display(), dir.display()))?;
    Ok(ArchOutcome {
        dir: dir.to_path_buf(),
        record,
        up_to_date: false,
        took: start.elapsed(),
    })
}

/// SOURCE_DATE_EPOCH as every date the bundle stamps (RFC 3339).
pub use crate::util::epoch::rfc3339;

/// The differences a bundle directory's bundle.json lists; none when the
/// directory has no bundle.json (a bundle made by other means).
pub fn differences_in(dir: &Path) -> Result<Vec<String>> {
    let p = dir.join("bundle.json");
    match std::fs::read_to_string(&p) {
        Ok(text) => Ok(serde_json::from_str::<BundleRecord>(&text)
            .with_context(|| format!("parsing {}", p.display()))?
            .differences),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Whether every file `dir/SHA256SUMS` names is there with its checksum.
fn sums_hold(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("SHA256SUMS")) else {
        return false;
    };
    let sums = crate::artifact::checksums::parse_sums(&text);
    !sums.is_empty()
        && sums.iter().all(|(name, sum)| {
            crate::util::digest::sha256_file(&dir.join(name)).is_ok_and(|s| &s == sum)
        })
}

fn read_record(dir: &Path) -> Result<gobuild::CacheRecord> {
    let p = dir.join("built.json");
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))
}

/// Everything a bundle is made of: the binaries' records, the package
/// files in `bundle/packages`, the revision, the epoch, whether images
/// are included, and habuild's own version (it renders the packages).
fn bundle_key(req: &Request, arch: &str, records: &[gobuild::CacheRecord]) -> Result<String> {
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(records).context("serialising build records")?);
    h.update(format!(
        "{arch}\n{DEB_REVISION}\n{}\n{}\n{}\n",
        req.source_date_epoch,
        req.images,
        env!("CARGO_PKG_VERSION")
    ));
    let pkgs = req.root.join("bundle/packages");
    for e in walkdir::WalkDir::new(&pkgs).sort_by_file_name() {
        let e = e.with_context(|| format!("walking {}", pkgs.display()))?;
        if e.file_type().is_file() {
            h.update(
                e.path()
                    .strip_prefix(&pkgs)
                    .expect("under")
                    .to_string_lossy()
                    .as_bytes(),
            );
            h.update(
                std::fs::read(e.path())
                    .with_context(|| format!("reading {}", e.path().display()))?,
            );
        }
    }
    Ok(hex::encode(h.finalize()))
}

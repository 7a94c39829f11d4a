//! One node's build: a flat list of named steps ([`STEPS`]) that one
//! helper runs in order, timing and reporting each (mkosi's build is the
//! model). Adding or reordering a step is one line there; what the steps
//! hand each other lives in [`NodeBuild`].
//!
//! Nothing appears under a final name before the last step: the image and
//! its artifacts are made in `<out>/.partial-<node>/` and the work tree in
//! the cache's `work/`, both removed on exit whatever happens.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::locked;
use super::output::{self, PendingArtifacts};
use super::BuiltNode;
use crate::artifact;
use crate::artifact::compression::{self, Format};
use crate::artifact::report::{BundleDeb, FilesReport, ImageReport, KubernetesReport, NodeReport};
use crate::config::Role;
use crate::disk::layout::DiskLayout;
use crate::disk::AssembleReport;
use crate::pki::stage::Installed;
use crate::pki::ClusterSecrets;
use crate::plan::{KubernetesSource, NodePlan};
use crate::rootfs::base::{self, Base};
use crate::rootfs::context::{render_context, KubeadmCtx};
use crate::rootfs::layer::{self, Staged};
use crate::util::cleanup::{self, RemoveOnExit};
use crate::util::digest::sha256_file;
use crate::util::progress::Step;

/// A named step of a node's build.
pub struct BuildStep {
    pub name: &'static str,
    /// Whether the step applies to this node.
    pub when: fn(&NodePlan) -> bool,
    /// Shows its own progress (the bootstrap's sub-steps), so no spinner.
    pub reports_itself: bool,
    pub run: fn(&mut NodeBuild) -> Result<()>,
}

const fn step(name: &'static str, run: fn(&mut NodeBuild) -> Result<()>) -> BuildStep {
    BuildStep {
        name,
        when: |_| true,
        reports_itself: false,
        run,
    }
}

fn director(plan: &NodePlan) -> bool {
    plan.node.role == Role::Director
}

fn control_plane(plan: &NodePlan) -> bool {
    plan.node.role == Role::ControlPlane
}

/// The build of every node, in order.
pub const STEPS: &[BuildStep] = &[
    BuildStep {
        reports_itself: true,
        ..step("base root filesystem", |b| b.ensure_base())
    },
    step("layering overlays and node identity", |b| b.stage_layer()),
    // Before anything is assembled: a value keepalived rejects stops here.
    BuildStep {
        when: director,
        ..step("checking keepalived.conf (--config-test)", |b| {
            b.check_keepalived()
        })
    },
    // The cluster's CAs and service-account key, after the overlays.
    BuildStep {
        when: control_plane,
        ..step("installing the cluster PKI", |b| b.install_pki())
    },
    step("making filesystems and the disk image", |b| b.assemble()),
    step("writing bmap, firmware bundle, checksums", |b| {
        b.write_artifacts()
    }),
    step("publishing the artifacts", |b| b.publish()),
];

/// Runs the steps that apply to the node, each timed and reported on one
/// line; a step's notes follow its line.
pub fn run_steps(b: &mut NodeBuild, steps: &[BuildStep]) -> Result<()> {
    for s in steps.iter().filter(|s| (s.when)(b.plan)) {
        let started = Instant::now();
        let spinner = (!s.reports_itself).then(|| Step::start(s.name));
        (s.run)(b)?;
        match spinner {
            Some(spinner) => {
                spinner.finish();
            }
            None => crate::util::progress::line(format!(
                "  {:<44} {:>7.1}s",
                s.name,
                started.elapsed().as_secs_f64()
            )),
        }
        for note in b.notes.drain(..) {
            eprintln!("  {note}");
        }
    }
    Ok(())
}

/// What one node's steps share: the inputs, then each step's result.
pub struct NodeBuild<'a> {
    plan: &'a NodePlan,
    out_dir: &'a Path,
    cache_dir: &'a Path,
    secrets: Option<&'a ClusterSecrets>,
    pin: Option<locked::Pin<'a>>,
    /// Said after the current step's line.
    notes: Vec<String>,
    /// Scratch trees, in the cache (same filesystem as the base).
    work: PathBuf,
    /// The work directory (0700, removed when the build ends; a killed
    /// build's is removed by the next run: util::workdir).
    _work_guard: crate::util::workdir::WorkDir,
    base: Option<Base>,
    staged: Option<Staged>,
    pki: Option<Installed>,
    /// The node's artifacts until they are published.
    pending: Option<(PathBuf, RemoveOnExit)>,
    layout: Option<DiskLayout>,
    assembled: Option<AssembleReport>,
    /// (file name, sha256) in the order they are published; the image last.
    files: Vec<(String, String)>,
    /// `--compress`, and once done the compressed size and seconds taken.
    compress: Option<Format>,
    compressed: Option<(u64, f64)>,
}

impl<'a> NodeBuild<'a> {
    pub fn new(
        plan: &'a NodePlan,
        out_dir: &'a Path,
        cache_dir: &'a Path,
        secrets: Option<&'a ClusterSecrets>,
        pin: Option<locked::Pin<'a>>,
    ) -> Result<Self> {
        let work_dir = crate::util::workdir::create(cache_dir, &plan.node.name)?;
        let work = work_dir.path.clone();
        Ok(NodeBuild {
            plan,
            out_dir,
            cache_dir,
            secrets,
            pin,
            notes: Vec::new(),
            _work_guard: work_dir,
            work,
            base: None,
            staged: None,
            pki: None,
            pending: None,
            layout: None,
            assembled: None,
            files: Vec::new(),
            compress: None,
            compressed: None,
        })
    }

    /// Publishes the image compressed (`--compress`).
    pub fn compressed(mut self, format: Option<Format>) -> Self {
        self.compress = format;
        self
    }

    /// What was built, once every step ran.
    pub fn built(&self, started: Instant) -> BuiltNode {
        let plan = self.plan;
        BuiltNode {
            node: plan.node.name.clone(),
            role: plan.node.role,
            image: self.out_dir.join(self.published_image_name()),
            image_size: self.layout().total_size,
            compressed: self.compressed,
            base_reused: self.base().reused,
            kubernetes_included: !matches!(plan.kubernetes, KubernetesSource::Without),
            seconds: started.elapsed().as_secs_f64(),
        }
    }

    /// The raw image, as assembled (and as the bmap describes it).
    fn image_name(&self) -> String {
        format!("{}.img", self.plan.node.name)
    }

    /// The image file as published: `.img`, or `.img.zst` / `.img.xz`.
    fn published_image_name(&self) -> String {
        match self.compress {
            Some(f) => compression::compressed_name(&self.image_name(), f),
            None => self.image_name(),
        }
    }

    // What earlier steps made; a missing one is a misordered STEPS.
    pub(super) fn base(&self) -> &Base {
        self.base.as_ref().expect("the base step runs first")
    }
    fn staged(&self) -> &Staged {
        self.staged.as_ref().expect("the layer step ran")
    }
    fn pending(&self) -> &Path {
        &self.pending.as_ref().expect("the assemble step ran").0
    }
    fn layout(&self) -> &DiskLayout {
        self.layout.as_ref().expect("the assemble step ran")
    }

    fn ensure_base(&mut self) -> Result<()> {
        let (plan, cache) = (self.plan, self.cache_dir);
        let base = match self.pin {
            Some(pin) => locked::ensure_pinned_base(plan, cache, pin)?,
            None => base::ensure_base(&plan.base, cache, None)?,
        };
        self.base = Some(base);
        Ok(())
    }

    fn stage_layer(&mut self) -> Result<()> {
        let kubeadm = self
            .secrets
            .map(|s| KubeadmCtx::new(s.bootstrap_token.expose(), &s.discovery_hash));
        let ctx = render_context(self.plan, kubeadm);
        let staged = layer::stage(self.plan, &self.base().tree, &self.work, &ctx)?;
        self.staged = Some(staged);
        Ok(())
    }

    fn check_keepalived(&mut self) -> Result<()> {
        crate::rootfs::keepalived::check_staged_root(&self.staged().root_tree)
    }

    fn install_pki(&mut self) -> Result<()> {
        let Some(secrets) = self.secrets else {
            return Ok(());
        };
        let staged = self.staged();
        let pki = crate::pki::stage::install(&staged.root_tree, secrets, &staged.root_files)?;
        self.notes.push(format!(
            "secrets in this image (mode 0600): {}",
            pki.report.secret_files.join(", ")
        ));
        self.pki = Some(pki);
        Ok(())
    }

    fn assemble(&mut self) -> Result<()> {
        let plan = self.plan;
        let pending = output::pending_dir(self.out_dir, &plan.node.name)?;
        let guard = cleanup::remove_on_exit(&pending);
        let staged = self.staged();
        let layout = crate::disk::layout_for(&plan.disk, staged.root_bytes)?;
        let seed = format!("habuild/{}/{}", plan.cluster.name, plan.node.name);
        let assembled = crate::disk::assemble(
            &crate::disk::AssembleRequest {
                layout: &layout,
                boot_tree: &staged.boot_tree,
                root_tree: &staged.root_tree,
                seed: seed.as_bytes(),
                source_date_epoch: plan.source_date_epoch,
                boot_label: &plan.disk.boot.label,
                root_label: &plan.disk.root_label,
                ext4_writer: plan.disk.ext4_writer,
            },
            &pending.join(self.image_name()),
        )?;
        self.pending = Some((pending, guard));
        self.layout = Some(layout);
        self.assembled = Some(assembled);
        Ok(())
    }

    fn write_artifacts(&mut self) -> Result<()> {
        let plan = self.plan;
        let node = &plan.node.name;
        let image_name = self.image_name();
        let pending = self.pending().to_path_buf();
        let bmap_name = format!("{image_name}.bmap");
        artifact::bmap::write_bmap(&pending.join(&image_name), &pending.join(&bmap_name))?;
        let fw_name = format!("{node}-firmware.tar.gz");
        artifact::firmware::write_firmware_bundle(
            &self.staged().boot_tree,
            &pending.join(&fw_name),
            plan.source_date_epoch,
        )?;
        // An image with the cluster's keys is as private as the secrets file,
        // and so is its firmware bundle (none there today; nothing relies on it).
        if self.pki.is_some() {
            output::make_private(&pending.join(&image_name))?;
            output::make_private(&pending.join(&fw_name))?;
        }
        let json_name = format!("{node}.json");
        let json =
            serde_json::to_vec_pretty(&self.report()?).context("serialising the node report")?;
        std::fs::write(pending.join(&json_name), json)
            .with_context(|| format!("writing {json_name}"))?;
        let sbom_name = artifact::sbom::file_name(node);
        std::fs::write(pending.join(&sbom_name), self.sbom()?)
            .with_context(|| format!("writing {sbom_name}"))?;
        let image_name = self.compress_image(&pending)?;
        // The image goes last, so a reader that sees it sees everything else.
        for name in [bmap_name, fw_name, json_name, sbom_name, image_name] {
            let sha = sha256_file(&pending.join(&name))?;
            self.files.push((name, sha));
        }
        Ok(())
    }

    /// `--compress`: replaces the pending `.img` by its compressed form,
    /// as private as the image was; returns the name to publish. The bmap
    /// describes the image as decompressed, which is what `bmaptool copy`
    /// and `habuild flash` expect.
    fn compress_image(&mut self, pending: &Path) -> Result<String> {
        let raw = self.image_name();
        let Some(format) = self.compress else {
            return Ok(raw);
        };
        let name = self.published_image_name();
        let src = pending.join(&raw);
        let mode = if self.pki.is_some() { 0o600 } else { 0o644 };
        let started = Instant::now();
        let size = compression::compress_file(&src, &pending.join(&name), format, mode)?;
        std::fs::remove_file(&src).with_context(|| format!("removing {}", src.display()))?;
        let seconds = started.elapsed().as_secs_f64();
        self.compressed = Some((size, seconds));
        self.notes.push(format!(
            "compressed to {name}: {:.1} MiB in {seconds:.1}s ({format}, single-threaded)",
            size as f64 / f64::from(1 << 20)
        ));
        Ok(name)
    }

    /// `<node>.cdx.json`: every installed package, with the .deb's sha256
    /// where the lock pins it and the licenses its copyright file names.
    fn sbom(&self) -> Result<Vec<u8>> {
        let plan = self.plan;
        let base = self.base();
        let locked = self.pin.map(|p| p.base.packages.as_slice()).unwrap_or(&[]);
        let packages = sbom_packages(&base.packages, locked, |name| {
            crate::debian::copyright::package_licenses(&base.tree, name)
        })?;
        let image_file = self.published_image_name();
        artifact::sbom::render(&artifact::sbom::SbomInput {
            cluster: &plan.cluster.name,
            node: &plan.node.name,
            role: plan.node.role.as_str(),
            board: &plan.board.name,
            vendor: artifact::sbom::vendor_of(&plan.distro.name),
            distro: &plan.distro.name,
            suite: &plan.distro.suite,
            image_file: &image_file,
            source_date_epoch: plan.source_date_epoch,
            habuild_version: env!("CARGO_PKG_VERSION"),
            habuild_commit: crate::util::GIT_COMMIT,
            packages: &packages,
        })
    }

    /// `<node>.json`.
    fn report(&self) -> Result<NodeReport> {
        let plan = self.plan;
        let (base, staged, layout) = (self.base(), self.staged(), self.layout());
        Ok(NodeReport {
            habuild_version: env!("CARGO_PKG_VERSION"),
            habuild_commit: crate::util::GIT_COMMIT,
            cluster: plan.cluster.name.clone(),
            node: plan.node.name.clone(),
            role: plan.node.role.as_str().into(),
            address: plan.node.address.to_string(),
            board: plan.board.name.clone(),
            arch: plan.board.arch.debian_name().into(),
            distro: plan.distro.name.clone(),
            distro_name: plan.distro.pretty_name.clone(),
            kubernetes: kubernetes_report(plan)?,
            base_key: base.key.clone(),
            source_date_epoch: plan.source_date_epoch,
            image: ImageReport {
                file: self.published_image_name(),
                size: layout.total_size,
                partition_table: format!("{:?}", plan.disk.table).to_lowercase(),
                ext4_writer: plan.disk.ext4_writer,
                layout: self.assembled.clone().expect("the assemble step ran"),
            },
            packages: base.packages.clone(),
            files: FilesReport {
                root: crate::pki::stage::with_files(&staged.root_files, self.pki.as_ref()),
                boot: staged.boot_files.clone(),
            },
            secrets: self.pki.as_ref().map(|p| p.report.clone()),
        })
    }

    fn publish(&mut self) -> Result<()> {
        output::publish(
            self.out_dir,
            PendingArtifacts {
                dir: self.pending().to_path_buf(),
                files: std::mem::take(&mut self.files),
            },
        )
    }
}

/// The SBOM's view of the installed packages: the .deb's sha256 where the
/// lock pins that very package (name, version and architecture), and the
/// licenses `licenses` finds for each name.
fn sbom_packages(
    installed: &[crate::debian::packages::InstalledPackage],
    locked: &[crate::lock::LockedPackage],
    licenses: impl Fn(&str) -> Result<Vec<String>>,
) -> Result<Vec<artifact::sbom::SbomPackage>> {
    let pinned: std::collections::BTreeMap<(&str, &str, &str), &str> = locked
        .iter()
        .map(|p| ((&*p.name, &*p.version, &*p.arch), &*p.sha256))
        .collect();
    installed
        .iter()
        .map(|p| {
            Ok(artifact::sbom::SbomPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.architecture.clone(),
                sha256: pinned
                    .get(&(&*p.name, &*p.version, &*p.architecture))
                    .map(|s| s.to_string()),
                licenses: licenses(&p.name)?,
            })
        })
        .collect()
}

/// Where the node's Kubernetes packages came from, as `<node>.json` says.
fn kubernetes_report(plan: &NodePlan) -> Result<KubernetesReport> {
    let mut differences = Vec::new();
    let (source, bundle, note) = match &plan.kubernetes {
        KubernetesSource::Upstream { .. } => ("upstream", vec![], None),
        KubernetesSource::Bundle { dir, debs } => {
            let mut b = Vec::new();
            for d in debs {
                b.push(BundleDeb { file: d.file_name().unwrap_or_default().to_string_lossy().into(), sha256: crate::util::digest::sha256_file(d)? });
            }
            // A bundle `habuild bundle` built says what differs from pkgs.k8s.io.
            differences = crate::bundle::differences_in(dir)?;
            ("bundle", b, None)
        }
        KubernetesSource::Without => (
            "without",
            vec![],
            (plan.node.role == crate::config::Role::ControlPlane)
                .then(|| "built with --without-kubernetes: kubeadm, kubelet, kubectl and CRI-O are NOT installed; their configuration is baked in".to_string()),
        ),
    };
    Ok(KubernetesReport {
        source: source.into(),
        packages_included: source != "without",
        kubernetes_version: plan.cluster.kubernetes_version.clone(),
        crio_version: plan.cluster.crio_version.clone(),
        bundle,
        note,
        differences,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::debian::packages::InstalledPackage;
    use crate::lock::LockedPackage;

    #[test]
    fn the_sbom_takes_the_sha256_of_the_locked_package_only() {
        let installed = |name: &str, version: &str| InstalledPackage {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
        };
        let locked = |name: &str, version: &str, sha: &str| LockedPackage {
            name: name.into(),
            version: version.into(),
            arch: "amd64".into(),
            sha256: sha.into(),
            from: "debian".into(),
        };
        let got = sbom_packages(
            &[installed("bash", "5.2-1"), installed("curl", "8.1-2")],
            // curl is locked at another version: no hash for what is installed.
            &[locked("bash", "5.2-1", "aa"), locked("curl", "8.1-1", "bb")],
            |name| {
                Ok(if name == "bash" {
                    vec!["GPL-3+".into()]
                } else {
                    vec![]
                })
            },
        )
        .unwrap();
        assert_eq!(got[0].sha256.as_deref(), Some("aa"));
        assert_eq!(got[0].licenses, ["GPL-3+"]);
        assert_eq!(got[1].sha256, None);
        assert!(
            sbom_packages(&[installed("x", "1")], &[], |_| anyhow::bail!("unreadable")).is_err()
        );
    }
}

//! Build-time benchmark (not a test). It times, on this machine: the
//! bootstrapper alone (mmdebstrap with the exact package set and sources
//! habuild uses for the rpi4 Debian base); a cold `habuild image` of
//! master-arm-1 (empty cache); a warm rebuild of master-arm-2 with a
//! changed manifest value. It prints a Markdown table for
//! benchmarks/README.md.
//!
//!     cargo run --release --example bench_build -- [--skip-bootstrapper]
//!
//! Needs root and `habuild doctor --install`. Uses a scratch directory under
//! /var/tmp and removes it afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use habuild::config::Project;
use habuild::plan::{plan_node, KubernetesSource, PlanInputs};

fn main() -> anyhow::Result<()> {
    let skip_bootstrapper = std::env::args().any(|a| a == "--skip-bootstrapper");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let project = Project::at(&root)?;
    let manifest = root.join("tests/fixtures/test-cluster.toml");
    let scratch = tempfile::Builder::new()
        .prefix("habuild-bench-")
        .tempdir_in("/var/tmp")?;
    let habuild = build_habuild()?;
    let mut rows: Vec<(String, f64)> = Vec::new();

    if !skip_bootstrapper {
        let cluster = project.manifest(Some(&manifest))?;
        let node = cluster.node("master-arm-1").expect("fixture node");
        let board = project.board("rpi4")?;
        let distro = project.distro("debian-13")?;
        let inputs = PlanInputs {
            project_root: root.clone(),
            mirror: habuild::debian::host_sources::host_debian_mirror()?,
            kubernetes: KubernetesSource::Without,
            partition_table: None,
            image_size: None,
            ext4_writer: Default::default(),
            source_date_epoch: 0,
        };
        let plan = plan_node(&cluster, node, &board, &distro, &inputs)?;
        let target = scratch.path().join("bootstrapper-only");
        let mut cmd = habuild::rootfs::base::mmdebstrap_command(&plan.base, &target, false);
        let t = Instant::now();
        let status = cmd.stderr(std::process::Stdio::null()).status()?;
        anyhow::ensure!(status.success(), "mmdebstrap failed");
        let secs = t.elapsed().as_secs_f64();
        eprintln!("mmdebstrap alone: {secs:.1}s");
        rows.push(("mmdebstrap alone (rpi4 Debian package set)".into(), secs));
        std::fs::remove_dir_all(&target)?;
    }

    let cache = scratch.path().join("cache");
    let out = scratch.path().join("out");
    // Control-plane images carry the cluster's secrets: make a throw-away set.
    let secrets = scratch.path().join("bench.secrets.toml");
    let status = Command::new(&habuild)
        .args(["secrets", "init", "--manifest"])
        .arg(&manifest)
        .arg("--secrets")
        .arg(&secrets)
        .env("HABUILD_ROOT", &root)
        .status()?;
    anyhow::ensure!(status.success(), "habuild secrets init failed");
    let image = |node: &str, manifest: &Path| -> anyhow::Result<f64> {
        let t = Instant::now();
        let status = Command::new(&habuild)
            .args([
                "image",
                "--node",
                node,
                "--without-kubernetes",
                "--manifest",
            ])
            .arg(manifest)
            .arg("--secrets")
            .arg(&secrets)
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--out")
            .arg(&out)
            .env("HABUILD_ROOT", &root)
            .status()?;
        anyhow::ensure!(status.success(), "habuild image {node} failed");
        let secs = t.elapsed().as_secs_f64();
        eprintln!("habuild image {node}: {secs:.1}s");
        Ok(secs)
    };
    rows.push((
        "habuild image master-arm-1, cold cache".into(),
        image("master-arm-1", &manifest)?,
    ));
    let changed = scratch.path().join("changed.toml");
    std::fs::write(
        &changed,
        std::fs::read_to_string(&manifest)?
            .replace("dns = [\"10.10.197.1\"]", "dns = [\"10.10.197.53\"]"),
    )?;
    rows.push((
        "habuild image master-arm-2, warm cache, changed DNS".into(),
        image("master-arm-2", &changed)?,
    ));

    println!("| step | seconds |\n|---|---|");
    for (name, secs) in &rows {
        println!("| {name} | {secs:.1} |");
    }
    if let (Some(boot), Some(cold)) = (
        rows.iter().find(|r| r.0.starts_with("mmdebstrap")),
        rows.iter().find(|r| r.0.contains("cold")),
    ) {
        println!("\ncold build / bootstrapper alone = {:.2}", cold.1 / boot.1);
    }
    Ok(())
}

fn build_habuild() -> anyhow::Result<PathBuf> {
    let status = Command::new("cargo")
        .args([
            "build",
            "--release",
            "-q",
            "-p",
            "habuild",
            "--bin",
            "habuild",
        ])
        .status()?;
    anyhow::ensure!(status.success(), "cargo build failed");
    Ok(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/habuild"))
}

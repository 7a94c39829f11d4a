//! Tier 2: the seed's cluster and its failover test under QEMU.
//!
//! [`run`] boots every node's image on one closed virtual segment
//! (`cluster`, `netns`; each guest made ready by `guests`), waits for the
//! boot (`scenarios::boot`), then runs `scenarios::SCENARIOS` in order on
//! the shared [`session::Run`]. Every assertion prints how long it took and
//! the window the manifest implies (`report`). Kubernetes is replaced by
//! TEST DOUBLES (see tests/doubles/README.md): what passes here is the
//! first-boot order, LVS-DR through the director, keepalived's checks and
//! VRRP, not Kubernetes itself.

pub mod cluster;
pub mod facts;
pub(crate) mod guests;
pub mod netns;
pub(crate) mod report;
mod scenarios;
pub(crate) mod session;
pub(crate) mod watch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::manifest::Cluster as Manifest;
use crate::config::Project;
use cluster::{Cluster, CLIENT_CIDR};
use netns::{name_for, Netns};
use report::Report;
use scenarios::{boot, SCENARIOS};
use session::Run;

#[derive(Debug)]
pub struct Tier2Result {
    pub passed: bool,
    pub report: PathBuf,
    pub text: String,
}

/// Boots the cluster of `m` from the images in `out_dir` and runs the
/// scenarios. The report goes to `<out_dir>/test/tier2.txt`.
pub fn run(
    project: &Project,
    m: &Manifest,
    out_dir: &Path,
    boot_timeout: Duration,
) -> Result<Tier2Result> {
    let test_dir = out_dir.join("test");
    std::fs::create_dir_all(&test_dir)
        .with_context(|| format!("creating {}", test_dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".tier2-")
        // The copies of a control plane's image hold the cluster's keys.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&test_dir)
        .context("creating a work directory")?;
    // Ctrl-C removes it too (it holds a full-size copy of the image).
    let _remove = crate::util::cleanup::remove_temporary_on_exit(work.path());
    let mut r = Report::new();
    r.line(format!(
        "tier 2: cluster {} on a closed segment (network namespace {}); Kubernetes replaced by TEST DOUBLES",
        m.name,
        name_for(std::process::id())
    ));

    let mut ns = Netns::create_for_this_run(CLIENT_CIDR)?;
    // Directors first, then the control planes in manifest order.
    let mut order: Vec<_> = m.directors().collect();
    order.extend(m.control_planes());
    let mut prepared = Vec::new();
    for (i, node) in order.iter().enumerate() {
        prepared.push(guests::prepare(
            project,
            m,
            out_dir,
            work.path(),
            &mut ns,
            i,
            node,
        )?);
    }
    let mut c = Cluster::new(ns);
    let t0 = Instant::now();
    for p in &prepared {
        c.start(p.spec.clone())?;
    }
    let mut run = Run {
        m,
        c,
        guests: prepared,
        r,
        t0,
        boot_timeout,
        vip: m.vip.address.to_string(),
        port: m.vip.port,
        active: None,
    };
    boot(&mut run)?;
    for scenario in SCENARIOS {
        scenario(&mut run)?;
    }

    let Run { c, mut r, .. } = run;
    r.line(format!(
        "tier 2 total: {:.1}s; serial logs: {}/<node>-tier2.log",
        t0.elapsed().as_secs_f64(),
        test_dir.display()
    ));
    c.shutdown()?;
    let passed = !r.failed;
    let text = format!(
        "{}\ntier 2: {}\n",
        r.lines.join("\n"),
        if passed { "PASS" } else { "FAIL" }
    );
    let report = test_dir.join("tier2.txt");
    std::fs::write(&report, &text).with_context(|| format!("writing {}", report.display()))?;
    Ok(Tier2Result {
        passed,
        report,
        text,
    })
}

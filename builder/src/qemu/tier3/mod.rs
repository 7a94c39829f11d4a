//! Tier 3: the REAL control plane. The manifest's directors and control
//! planes, built with a bundle from `habuild bundle` (real kubeadm,
//! kubelet, CRI-O, etcd and control-plane images), boot on the closed
//! segment of [`super::tier2::cluster`] and must form the cluster by themselves:
//! first boot in the seed's order, then `habuild status` through the VIP,
//! run inside the namespace as a user would run it, until the whole
//! control plane is healthy. Every wait prints how long it took.
//!
//! With three control planes or more, the seed's failover test follows on
//! the real programs ([`failover`]).
//!
//! Control planes: arm64 images on `-M virt` (TCG), amd64 images by direct
//! kernel boot (TCG too: on these nested-virtualisation machines KVM stops
//! the kernel with an emulation failure). Directors as in tier 2.

pub(crate) mod failover;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::machine::qemu_cmdline;
use super::prepare::{extract, fat_files, grow_file};
use super::tier2::cluster::{control_plane_args, wait_all_facts, Cluster, GuestSpec, CLIENT_CIDR};
use super::tier2::facts::Facts;
use super::tier2::guests::{director_command, guest_disk, FactUnit, GuestDisk};
use super::tier2::netns::{name_for, Netns};
use crate::artifact::report::NodeJson;
use crate::config::manifest::{Cluster as Manifest, Node, Role};
use crate::config::Project;
use crate::qemu::tier2::report::Report;
use crate::status::Seen;

/// What a tier-3 run needs besides the manifest.
pub struct Tier3Options<'a> {
    pub manifest_path: &'a Path,
    pub secrets_path: &'a Path,
    /// For the cluster to form: first boots and a healthy status.
    pub timeout: Duration,
    /// Memory per control plane (kubeadm's preflight wants 1.7 GB).
    pub control_plane_memory: &'a str,
    pub power_on: PowerOn,
    /// vCPUs of the init node for its first boot (`kubeadm init`) instead
    /// of the control planes' share; once it is done, it keeps the share.
    pub init_node_cpus: Option<usize>,
    /// The same for each joining control plane's first boot (its join).
    pub joiner_cpus: Option<usize>,
    /// The control planes' kernels with `highres=off` (timers on the tick).
    pub coarse_timers: bool,
}

/// When tier 3 powers the control planes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PowerOn {
    /// All at once, as a site powers its nodes on: the joiners boot and
    /// wait for the VIP while `kubeadm init` runs.
    Together,
    /// The init node first, then each joiner once the control plane before
    /// it has finished its first boot: on a host with fewer cores than the
    /// guests' vCPUs, no two control planes boot or join at once. Not what
    /// a site does, so the report says so.
    OneAtATime,
}

/// The order tier 3 powers `m`'s nodes on in, which is also the order of
/// the guests in its cluster. All together: every control plane, then the
/// directors (once `kubeadm init` is done; no join needs the VIP before).
/// One at a time: the init node, the MASTER director (the highest
/// priority), the joiners, and last the BACKUP directors, powered on only
/// for the director failover: until then no VRRP takeover is tested, and
/// an idle director under TCG takes CPU from the joins.
fn power_on_order(m: &Manifest, power_on: PowerOn) -> Vec<&Node> {
    match power_on {
        PowerOn::Together => m.control_planes().chain(m.directors()).collect(),
        PowerOn::OneAtATime => {
            // The first of the highest priority, as keepalived elects it.
            let master = m
                .directors()
                .reduce(|best, d| if d.priority > best.priority { d } else { best });
            let init = m.init_node();
            std::iter::once(init)
                .chain(master)
                .chain(m.control_planes().filter(|n| n.name != init.name))
                .chain(
                    m.directors()
                        .filter(|d| master.is_some_and(|b| b.name != d.name)),
                )
                .collect()
        }
    }
}

#[derive(Debug)]
pub struct Tier3Result {
    pub passed: bool,
    pub report: PathBuf,
    pub text: String,
}

const TIER3_FACTS: FactUnit = FactUnit {
    script: "tier3-facts.sh",
    service: "habuild-t3-facts.service",
    tag: "tier3",
};

/// The kernel argument of --coarse-timers.
const COARSE_TIMERS: &str = "highres=off";

/// Disk size of a control plane's copy: first boot grows the root to it,
/// and the images CRI-O unpacks need the room.
const DISK_BYTES: u64 = 8 << 30;

fn node_json(out_dir: &Path, node: &Node) -> Result<(NodeJson, serde_json::Value)> {
    let path = out_dir.join(format!("{}.json", node.name));
    let bytes = std::fs::read(&path).with_context(|| {
        format!(
            "reading {} (build the images first: habuild image --all --k8s-bundle DIR)",
            path.display()
        )
    })?;
    let typed: NodeJson =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    let raw: serde_json::Value =
        serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
    Ok((typed, raw))
}

/// Refuses images that cannot form a real cluster: no Kubernetes packages,
/// or TEST DOUBLES (a bundle without `habuild bundle`'s bundle.json).
pub fn check_real(node: &str, report: &serde_json::Value) -> Result<Vec<String>> {
    let k = &report["kubernetes"];
    if k["packages_included"] != true {
        bail!("{node} was built without Kubernetes packages: tier 3 needs images built with --k8s-bundle from `habuild bundle`");
    }
    let bundle: Vec<&str> = k["bundle"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["file"].as_str())
        .collect();
    if k["source"] == "bundle"
        && !bundle
            .iter()
            .any(|f| f.starts_with("habuild-control-plane-images_"))
    {
        bail!("{node}'s bundle is not one `habuild bundle` built (no control-plane images; TEST DOUBLES?): tier 3 needs the real programs");
    }
    Ok(k["differences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(String::from))
        .collect())
}

/// What tier 3 changes of a control plane's QEMU: its memory and the
/// extra kernel arguments its test unit reads.
struct ControlPlaneShape<'a> {
    memory: &'a str,
    kernel_args: Vec<String>,
}

struct Prepared {
    spec: GuestSpec,
    role: Role,
    address: std::net::Ipv4Addr,
}

fn prepare(
    project: &Project,
    out_dir: &Path,
    work: &Path,
    ns: &mut Netns,
    index: usize,
    node: &Node,
    shape: &ControlPlaneShape,
) -> Result<Prepared> {
    let (j, _) = node_json(out_dir, node)?;
    let disk = guest_disk(project, &j, out_dir, work, ns, index, node, &TIER3_FACTS)?;
    let GuestDisk {
        dir,
        copy,
        tap,
        mac,
        qmp,
        log,
        ..
    } = &disk;
    let board = project.board(&node.board)?;
    let (program, args): (String, Vec<std::ffi::OsString>) = match node.role {
        Role::Director => director_command(project, node, &disk)?,
        Role::ControlPlane => {
            grow_file(copy, DISK_BYTES)?;
            let boot = dir.join("boot.vfat");
            let boot_part = j
                .image
                .layout
                .partitions
                .iter()
                .find(|p| p.role == "boot" || p.role == "esp")
                .map(|p| p.role.clone())
                .unwrap_or_else(|| "boot".into());
            extract(copy, j.partition(&boot_part)?.into(), &boot)?;
            let amd64 = board.arch.debian_name() == "amd64";
            let (console, names): (&str, &[&str]) = if amd64 {
                (
                    "ttyS0,115200",
                    &["vmlinuz", "initrd.img", "loader/entries/habuild.conf"],
                )
            } else {
                ("ttyAMA0,115200", &["vmlinuz", "initrd.img", "cmdline.txt"])
            };
            let files = fat_files(&boot, names, dir)?;
            let text = std::fs::read_to_string(&files[2])
                .with_context(|| format!("reading {} from the image", names[2]))?;
            // systemd-boot's entry: the kernel command line is its `options`.
            let cmdline = if amd64 {
                text.lines()
                    .find_map(|l| l.strip_prefix("options"))
                    .map(str::trim)
                    .unwrap_or_default()
                    .to_string()
            } else {
                text
            };
            let mut extra = vec!["panic=-1".to_string()];
            extra.extend_from_slice(&shape.kernel_args);
            let append = qemu_cmdline(&cmdline, console, &extra);
            let mut args = control_plane_args(&files[0], &files[1], &append, copy, tap, mac, qmp);
            set_arg(&mut args, "-m", shape.memory);
            if amd64 {
                set_arg(&mut args, "-M", "q35");
                set_arg(&mut args, "-cpu", "max");
                args.extend(["-accel".into(), "tcg,thread=multi".into()]);
                ("qemu-system-x86_64".into(), args)
            } else {
                args.extend(["-accel".into(), "tcg,thread=multi".into()]);
                ("qemu-system-aarch64".into(), args)
            }
        }
    };
    Ok(Prepared {
        spec: GuestSpec {
            name: node.name.clone(),
            program,
            args,
            qmp: qmp.clone(),
            log: log.clone(),
        },
        role: node.role,
        address: node.address,
    })
}

/// How long tier 3 waits for the init node's facts to list the add-on pods
/// the manifest asks for: a few of its kubectl rounds.
const ADDON_LIST_WAIT: Duration = Duration::from_secs(300);

/// The add-on pods in the init node's list of kube-system pods ("name ready
/// status restarts") against the manifest's `[addons]`: present when on,
/// absent when off. An empty list (kubectl never answered) proves nothing.
pub fn judge_addons(
    addons: &crate::config::manifest::Addons,
    pods: &[String],
) -> Vec<(bool, String)> {
    if pods.is_empty() {
        return vec![(
            false,
            "the init node's kubectl listed no kube-system pods".into(),
        )];
    }
    [
        ("kube-proxy", "kube-proxy-", addons.kube_proxy),
        ("CoreDNS", "coredns-", addons.coredns),
    ]
    .into_iter()
    .map(|(name, prefix, on)| {
        let n = pods.iter().filter(|p| p.starts_with(prefix)).count();
        let state = if on { "on" } else { "OFF" };
        ((n > 0) == on, format!("{name} {state}, {n} pod(s)"))
    })
    .collect()
}

/// vCPUs per control plane: the host's cores shared out, at most a Pi 4's
/// four and at least the two kubeadm's preflight demands, unless the
/// manifest lets `NumCPU` only warn: then one. More vCPUs than the host
/// can run at once lose time under TCG: a guest kernel's vCPU spins on a
/// lock or waits on an IPI while the vCPU that would answer is not
/// running. On 2 host cores, two amd64 control planes of 2 vCPUs never
/// got a joiner's API server ready; of 1 vCPU each, the real join finished
/// (stop 29). One arm64 vCPU is too slow for the API server's start
/// (stop 30, benchmarks/README.md).
pub fn control_plane_cpus(host_cpus: usize, control_planes: usize, num_cpu_ignored: bool) -> usize {
    let floor = if num_cpu_ignored { 1 } else { 2 };
    (host_cpus / control_planes.max(1)).clamp(floor, 4)
}

/// A control plane's extra kernel arguments: with more vCPUs for its first
/// boot than the control planes' `share`, its test unit (qemu/tier3-facts.sh)
/// takes the extra ones offline once first boot is done. One at a time,
/// `kubeadm init` or a join is the one step that runs alone; afterwards a
/// busy extra vCPU would compete with the next join for the host's cores.
/// A control plane's extra kernel arguments: those of its first boot's
/// vCPUs, and `highres=off` with --coarse-timers.
fn control_plane_kernel_args(
    first_boot_cpus: Option<usize>,
    share: usize,
    coarse_timers: bool,
) -> Vec<String> {
    let mut args = first_boot_kernel_args(first_boot_cpus, share);
    if coarse_timers {
        args.push(COARSE_TIMERS.into());
    }
    args
}

fn first_boot_kernel_args(first_boot_cpus: Option<usize>, share: usize) -> Vec<String> {
    match first_boot_cpus {
        Some(n) if n > share => vec![format!("habuild.t3_cpus_after_first_boot={share}")],
        _ => Vec::new(),
    }
}

/// Replaces the value after `flag` in `args`.
fn set_arg(args: &mut [std::ffi::OsString], flag: &str, value: &str) {
    if let Some(i) = args.iter().position(|a| a == flag) {
        if let Some(v) = args.get_mut(i + 1) {
            *v = value.into();
        }
    }
}

/// The epoch time of the first first-boot journal line containing `what`.
fn fblog_time(f: &Facts, what: &str) -> Option<f64> {
    f.fblog
        .iter()
        .find(|l| l.contains(what))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|t| t.parse().ok())
}

/// The seed's order, from the guest's own journal: the init node's VIP on
/// lo before `kubeadm init`; a joiner's only after its join succeeded.
pub fn judge_order(f: &Facts, init: bool) -> Result<String, String> {
    let since = f
        .realserver_since
        .ok_or("realServer.service never started")? as f64;
    if init {
        let kubeadm = fblog_time(f, "running: kubeadm init")
            .ok_or("no `kubeadm init` in first boot's journal")?;
        if since <= kubeadm {
            Ok(format!(
                "VIP on lo {:.0}s before kubeadm init started",
                kubeadm - since
            ))
        } else {
            Err(format!(
                "realServer started {:.0}s AFTER kubeadm init",
                since - kubeadm
            ))
        }
    } else {
        let joined = fblog_time(f, "kubeadm join succeeded")
            .ok_or("no successful `kubeadm join` in first boot's journal")?;
        // The journal's microseconds against systemd's second-resolution
        // timestamp: allow the rounding.
        if since + 1.0 >= joined {
            Ok(format!(
                "VIP on lo {:.0}s after kubeadm join succeeded",
                (since - joined).max(0.0)
            ))
        } else {
            Err(format!(
                "realServer started {:.0}s BEFORE kubeadm join succeeded",
                joined - since
            ))
        }
    }
}

/// Boots the cluster of `m` from `out_dir` and waits for it to form.
pub fn run(
    project: &Project,
    m: &Manifest,
    out_dir: &Path,
    opts: &Tier3Options,
) -> Result<Tier3Result> {
    let test_dir = out_dir.join("test");
    std::fs::create_dir_all(&test_dir)
        .with_context(|| format!("creating {}", test_dir.display()))?;
    let mut lines = vec![format!(
        "tier 3: cluster {} with the REAL kubeadm, kubelet, CRI-O and etcd, on a closed segment (network namespace {})",
        m.name,
        name_for(std::process::id())
    )];
    let mut differences = Vec::new();
    for cp in m.control_planes() {
        let (_, raw) = node_json(out_dir, cp)?;
        differences = check_real(&cp.name, &raw)?;
    }
    for d in &differences {
        lines.push(format!("  differs from pkgs.k8s.io: {d}"));
    }
    let addons = &m.tuning.addons;
    if !addons.kube_proxy || !addons.coredns {
        lines.push(format!(
            "  add-ons turned off by the manifest: kube-proxy {}, CoreDNS {}",
            if addons.kube_proxy { "on" } else { "OFF" },
            if addons.coredns { "on" } else { "OFF" }
        ));
    }
    let work = tempfile::Builder::new()
        .prefix(".tier3-")
        // The copies of a control plane's image hold the cluster's keys.
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir_in(&test_dir)
        .context("creating a work directory")?;
    // Ctrl-C removes it too (it holds full-size copies of the images).
    let _remove = crate::util::cleanup::remove_temporary_on_exit(work.path());
    let mut ns = Netns::create_for_this_run(CLIENT_CIDR)?;
    // The directors power on once the init node is done: it needs none
    // (the VIP is on its own lo during `kubeadm init`), and a director
    // idling under TCG would take CPU from the slowest step.
    let order = power_on_order(m, opts.power_on);
    if opts.power_on == PowerOn::OneAtATime {
        lines.push("  control planes powered on ONE AT A TIME (each joiner once the control plane before it finished its first boot), not all together as a site does".into());
        if m.directors().count() > 1 {
            lines.push("  BACKUP director(s) powered on only for the director failover, not with the cluster".into());
        }
    }
    let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let num_cpu_ignored = m.tuning.kubeadm.ignores_preflight("NumCPU");
    let cpus = control_plane_cpus(host_cpus, m.control_planes().count(), num_cpu_ignored);
    lines.push(format!(
        "  {cpus} vCPU(s) per control plane ({host_cpus} host cores shared out; a Pi 4 has 4){}",
        if num_cpu_ignored && cpus < 2 {
            "; kubeadm's NumCPU preflight check only warns, as the manifest's [kubeadm] ignore_preflight_errors asks"
        } else {
            ""
        }
    ));
    let init_name = m.init_node().name.clone();
    let first_boot_cpus = |name: &str| {
        if name == init_name {
            opts.init_node_cpus
        } else {
            opts.joiner_cpus
        }
    };
    // Whether a node's first boot has vCPUs that go offline afterwards.
    let drops_vcpus = |first_boot: Option<usize>| first_boot.is_some_and(|n| n > cpus);
    for (n, whose, flag) in [
        (opts.init_node_cpus, init_name.as_str(), "--init-node-cpus"),
        (opts.joiner_cpus, "each joiner", "--joiner-cpus"),
    ] {
        if let Some(n) = n {
            lines.push(format!(
                "  {whose}: {n} vCPU(s) for its first boot, as {flag} asks{}",
                if drops_vcpus(Some(n)) {
                    format!(", then {cpus} (the others taken offline by its test unit)")
                } else {
                    String::new()
                }
            ));
        }
    }
    if opts.coarse_timers {
        lines.push(format!(
            "  control planes' kernels booted with {COARSE_TIMERS} (timers on the tick, fewer QEMU wake-ups), as --coarse-timers asks; a board runs with high-resolution timers"
        ));
    }
    let mut prepared = Vec::new();
    for (i, node) in order.iter().enumerate() {
        let wanted = first_boot_cpus(&node.name);
        let mut p = prepare(
            project,
            out_dir,
            work.path(),
            &mut ns,
            i,
            node,
            &ControlPlaneShape {
                memory: opts.control_plane_memory,
                kernel_args: control_plane_kernel_args(wanted, cpus, opts.coarse_timers),
            },
        )?;
        if p.role == Role::ControlPlane {
            set_arg(
                &mut p.spec.args,
                "-smp",
                &wanted.unwrap_or(cpus).to_string(),
            );
        }
        prepared.push(p);
    }
    let mut c = Cluster::new(ns);
    let t0 = Instant::now();
    let cps: Vec<usize> = (0..prepared.len())
        .filter(|&i| prepared[i].role == Role::ControlPlane)
        .collect();
    let init_index = prepared
        .iter()
        .position(|p| p.spec.name == init_name)
        .context("the init node is not among the guests")?;
    match opts.power_on {
        PowerOn::Together => {
            for &i in &cps {
                c.start(prepared[i].spec.clone())?;
            }
        }
        PowerOn::OneAtATime => {
            c.start(prepared[init_index].spec.clone())?;
        }
    }
    let left = |t0: Instant| opts.timeout.saturating_sub(t0.elapsed());
    let want = |i: usize| {
        if prepared[i].spec.name == init_name {
            "initialised"
        } else {
            "joined"
        }
    };
    let init_done = wait_all_facts(
        &mut c,
        &[init_index],
        "the init node's first boot (the real kubeadm init) finished",
        t0,
        left(t0),
        |_, f| f.firstboot == "initialised" || f.firstboot.starts_with("failed"),
    );
    if let Ok(t) = &init_done {
        lines.push(format!(
            "  {init_name}: kubeadm init and add-ons done {:.0}s after power-on; directors power on now",
            t[0].as_secs_f64()
        ));
    }
    // The directors next in the order: all of them together, the MASTER
    // one at a time (the BACKUPs come last, for the director failover).
    while let Some(p) = prepared
        .get(c.guests.len())
        .filter(|p| p.role == Role::Director)
    {
        c.start(p.spec.clone())?;
    }
    let mut passed = true;
    let finished =
        |i: usize, f: &Facts| f.firstboot == want(i) || f.firstboot.starts_with("failed");
    let formed = match opts.power_on {
        PowerOn::Together => wait_all_facts(
            &mut c,
            &cps,
            "first boot (the real kubeadm init or join) finished",
            t0,
            left(t0),
            finished,
        ),
        PowerOn::OneAtATime => init_done.and_then(|mut times| {
            let mut previous = init_index;
            for &i in cps.iter().filter(|&&i| i != init_index) {
                let before = c.guests[previous].facts().unwrap_or_default();
                if before.firstboot != want(previous) {
                    bail!(
                        "{} not powered on: {}'s first boot ended {:?}",
                        prepared[i].spec.name,
                        prepared[previous].spec.name,
                        before.firstboot
                    );
                }
                // A guest's index in the cluster is its place in the order.
                if c.start(prepared[i].spec.clone())? != i {
                    bail!("{} powered on out of order", prepared[i].spec.name);
                }
                lines.push(format!(
                    "  {}: powered on {:.0}s after the first power-on",
                    prepared[i].spec.name,
                    t0.elapsed().as_secs_f64()
                ));
                let what = format!(
                    "{}'s first boot (the real kubeadm join) finished",
                    prepared[i].spec.name
                );
                times.extend(wait_all_facts(&mut c, &[i], &what, t0, left(t0), finished)?);
                previous = i;
            }
            Ok(times)
        }),
    };
    match formed {
        Ok(times) => {
            for (&i, took) in cps.iter().zip(&times) {
                let f = c.guests[i].facts().unwrap_or_default();
                let ok = f.firstboot == want(i);
                passed &= ok;
                lines.push(format!(
                    "  [{}] {}: first boot {} {:.0}s after power-on",
                    if ok { "ok" } else { "FAIL" },
                    prepared[i].spec.name,
                    f.firstboot,
                    took.as_secs_f64()
                ));
                if !ok {
                    lines.extend(
                        f.fberr
                            .iter()
                            .chain(&f.journal)
                            .map(|l| format!("      {l}")),
                    );
                }
                match judge_order(&f, prepared[i].spec.name == init_name) {
                    Ok(s) => lines.push(format!("  [ok] {}: {s}", prepared[i].spec.name)),
                    Err(s) => {
                        passed = false;
                        lines.push(format!("  [FAIL] {}: {s}", prepared[i].spec.name));
                    }
                }
            }
        }
        Err(e) => {
            passed = false;
            lines.push(format!("  [FAIL] {e:#}"));
            // A guest never powered on (one at a time) has nothing to say.
            for &i in cps.iter().filter(|&&i| i < c.guests.len()) {
                let f = c.guests[i].facts().unwrap_or_default();
                lines.push(format!(
                    "  {}: first boot {:?}, its last journal lines:",
                    prepared[i].spec.name, f.firstboot
                ));
                lines.extend(f.fbtail.iter().map(|l| format!("      {l}")));
                lines.push(format!(
                    "    its containers: {}",
                    if f.containers.is_empty() {
                        "none listed".into()
                    } else {
                        f.containers.join(", ")
                    }
                ));
                lines.extend(f.kubelet_tail.iter().map(|l| format!("    kubelet: {l}")));
                lines.extend(f.container_logs.iter().map(|l| format!("    log of {l}")));
                lines.extend(f.cpu.iter().map(|l| format!("    cpu: {l}")));
            }
        }
    }
    if passed {
        // The control plane through the VIP, as `habuild status` sees it.
        let (last, took, healthy) = failover::status_until(c.ns(), opts, left(t0), |s| s.healthy)?;
        passed &= healthy;
        lines.push(format!(
            "  [{}] habuild status through the VIP: {} {:.0}s after every first boot finished",
            if healthy { "ok" } else { "FAIL" },
            if healthy { "healthy" } else { "not healthy" },
            took.as_secs_f64()
        ));
        match &last.parsed {
            Some(s) => lines.extend(status_lines(s)),
            None => lines.push(format!("      {}", last.stderr.trim())),
        }
        if healthy {
            let mut r = Report::new();
            failover::run(m, &mut c, &prepared, opts, &mut r)?;
            passed &= !r.failed;
            lines.extend(r.lines);
        }
    }
    // The add-ons and static pods as the init node's kubectl last saw them.
    // Its facts list pods only every few blocks (minutes apart under TCG),
    // so a list taken before the add-ons were made is waited out, bounded.
    if let Some(i) = prepared.iter().position(|p| p.spec.name == init_name) {
        let waited = Instant::now();
        let (f, verdicts) = loop {
            let f = c.guests[i].facts().unwrap_or_default();
            let verdicts = judge_addons(&m.tuning.addons, &f.pods);
            let settled = verdicts.iter().all(|(ok, _)| *ok);
            if !passed || settled || waited.elapsed() > ADDON_LIST_WAIT || left(t0).is_zero() {
                break (f, verdicts);
            }
            std::thread::sleep(Duration::from_secs(5));
        };
        lines.push(format!(
            "  kube-system pods ({}'s kubectl): name ready status restarts",
            init_name
        ));
        lines.extend(f.pods.iter().map(|p| format!("      {p}")));
        if passed {
            for (ok, what) in verdicts {
                passed &= ok;
                lines.push(format!(
                    "  [{}] add-ons as the manifest asks: {what}",
                    if ok { "ok" } else { "FAIL" }
                ));
            }
        }
    }
    for &i in cps.iter().filter(|&&i| i < c.guests.len()) {
        let name = &prepared[i].spec.name;
        if !drops_vcpus(first_boot_cpus(name)) {
            continue;
        }
        let f = c.guests[i].facts().unwrap_or_default();
        lines.push(format!(
            "  {name}: vCPUs online at the end: {}",
            if f.cpus_online.is_empty() {
                "not reported"
            } else {
                &f.cpus_online
            }
        ));
    }
    for (i, g) in c.guests.iter().enumerate() {
        if let Some(line) = observer_cost(&prepared[i].spec.name, &g.facts().unwrap_or_default()) {
            lines.push(line);
        }
    }
    for p in &prepared {
        lines.push(format!("  console log: {}", p.spec.log.display()));
    }
    c.shutdown()?;
    lines.push(format!(
        "tier 3 {} in {:.0}s",
        if passed { "passed" } else { "FAILED" },
        t0.elapsed().as_secs_f64()
    ));
    let text = lines.join("\n") + "\n";
    let report = test_dir.join("tier3.txt");
    std::fs::write(&report, &text).with_context(|| format!("writing {}", report.display()))?;
    Ok(Tier3Result {
        passed,
        report,
        text,
    })
}

/// What the fact unit itself cost guest `name`, from its last block: the
/// tier's observer must not be what starves a node.
fn observer_cost(name: &str, f: &Facts) -> Option<String> {
    let (usec, uptime) = (f.observer_cpu_usec?, f.uptime?);
    let secs = usec as f64 / 1e6;
    Some(format!(
        "  {name}: its fact unit used {secs:.0}s of CPU in {uptime:.0}s up ({:.1} % of one vCPU)",
        100.0 * secs / uptime.max(1.0)
    ))
}

/// The interesting part of `habuild status --json`, one line each.
fn status_lines(s: &failover::StatusJson) -> Vec<String> {
    let o = &s.observed;
    let mut out: Vec<String> = o
        .nodes
        .ok()
        .into_iter()
        .flatten()
        .map(|n| {
            format!(
                "      node {}: {} (kubelet {})",
                n.name,
                if n.ready { "Ready" } else { "NotReady" },
                n.kubelet_version
            )
        })
        .collect();
    let members: Vec<String> = o
        .etcd_members
        .ok()
        .into_iter()
        .flatten()
        .map(|mb| {
            format!(
                "{}{}",
                mb.name,
                if mb.is_learner { " (learner)" } else { "" }
            )
        })
        .collect();
    out.push(format!("      etcd members: {}", members.join(", ")));
    let seen = |s: &Seen<String>| match s {
        Seen::Ok(v) => v.clone(),
        Seen::Failed(e) => format!("failed: {e}"),
    };
    for cp in &o.control_planes {
        let etcd = match &cp.etcd_health {
            Seen::Ok(h) => h.to_string(),
            Seen::Failed(e) => format!("failed: {e}"),
        };
        out.push(format!(
            "      {}: /readyz {}, etcd health {etcd}",
            cp.name,
            seen(&cp.readyz)
        ));
    }
    out.push(format!(
        "      behind the VIP ({} connections): {}",
        o.vip_connections,
        o.behind_vip
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out.extend(
        s.verdict
            .problems
            .iter()
            .map(|p| format!("      PROBLEM: {p}")),
    );
    out
}

#[cfg(test)]
mod facts_script_tests;

#[cfg(test)]
mod tests {

    #[test]
    fn add_on_pods_are_judged_against_the_manifest() {
        use crate::config::manifest::Addons;
        let pods: Vec<String> = [
            "coredns-589f44dc88-2s67f 0/1 Running 0",
            "etcd-master-amd64-1 1/1 Running 0",
            "kube-proxy-c5wd8 1/1 Running 0",
        ]
        .map(String::from)
        .to_vec();
        let on = Addons::default();
        assert!(judge_addons(&on, &pods).iter().all(|(ok, _)| *ok));
        let off = Addons {
            kube_proxy: false,
            coredns: false,
        };
        // Add-ons the manifest turned off but that run anyway: caught.
        let v = judge_addons(&off, &pods);
        assert!(v.iter().all(|(ok, _)| !ok), "{v:?}");
        assert_eq!(v[1].1, "CoreDNS OFF, 1 pod(s)");
        assert!(judge_addons(&off, &pods[1..2]).iter().all(|(ok, _)| *ok));
        // Turned on but missing, and no list at all: caught.
        assert!(!judge_addons(&on, &pods[1..2])[0].0);
        assert!(!judge_addons(&off, &[])[0].0);
    }
    use super::*;

    fn facts(since: i64, lines: &[&str]) -> Facts {
        Facts {
            realserver_since: Some(since),
            fblog: lines.iter().map(|s| s.to_string()).collect(),
            ..Facts::default()
        }
    }

    #[test]
    fn the_observers_cost_is_reported_when_the_block_carries_it() {
        let mut f = Facts {
            observer_cpu_usec: Some(30_000_000),
            uptime: Some(1200.0),
            ..Facts::default()
        };
        assert_eq!(
            observer_cost("cp1", &f).unwrap(),
            "  cp1: its fact unit used 30s of CPU in 1200s up (2.5 % of one vCPU)"
        );
        f.observer_cpu_usec = None;
        assert_eq!(observer_cost("cp1", &f), None);
    }

    #[test]
    fn only_a_node_given_more_than_the_share_drops_vcpus_after_first_boot() {
        assert_eq!(
            first_boot_kernel_args(Some(2), 1),
            ["habuild.t3_cpus_after_first_boot=1"]
        );
        assert!(first_boot_kernel_args(Some(1), 1).is_empty());
        assert!(first_boot_kernel_args(Some(1), 2).is_empty());
        assert!(first_boot_kernel_args(None, 1).is_empty());
        assert_eq!(
            control_plane_kernel_args(Some(2), 1, true),
            ["habuild.t3_cpus_after_first_boot=1", "highres=off"]
        );
        assert_eq!(control_plane_kernel_args(None, 1, true), ["highres=off"]);
        assert!(control_plane_kernel_args(None, 1, false).is_empty());
    }

    #[test]
    fn one_at_a_time_powers_the_master_director_on_before_the_joiners_and_the_backup_last() {
        let root = crate::test_support::repo_root();
        let project = Project::at(&root).unwrap();
        let m = project
            .manifest(Some(&root.join("tests/fixtures/real-ha-amd64.toml")))
            .unwrap();
        let names = |p| -> Vec<String> {
            power_on_order(&m, p)
                .iter()
                .map(|n| n.name.clone())
                .collect()
        };
        let (cps, directors) = (
            ["master-amd64-1", "master-amd64-2", "master-amd64-3"],
            ["master-x86-1", "master-x86-2"],
        );
        assert_eq!(names(PowerOn::Together), [&cps[..], &directors].concat());
        // master-x86-1 has the higher priority (100 to 90): the MASTER.
        assert_eq!(
            names(PowerOn::OneAtATime),
            [&cps[..1], &directors[..1], &cps[1..], &directors[1..]].concat()
        );
    }

    #[test]
    fn the_host_cores_are_shared_out_among_the_control_planes() {
        assert_eq!(control_plane_cpus(2, 1, false), 2, "CI's one control plane");
        assert_eq!(
            control_plane_cpus(2, 3, false),
            2,
            "kubeadm's preflight wants 2"
        );
        assert_eq!(control_plane_cpus(8, 3, false), 2);
        assert_eq!(control_plane_cpus(12, 3, false), 4);
        assert_eq!(
            control_plane_cpus(16, 3, false),
            4,
            "never more than a Pi 4"
        );
        assert_eq!(control_plane_cpus(8, 0, false), 4);
        // With NumCPU only a warning, no more vCPUs than host cores.
        assert_eq!(control_plane_cpus(2, 2, true), 1);
        assert_eq!(control_plane_cpus(2, 1, true), 2);
        assert_eq!(control_plane_cpus(16, 3, true), 4);
    }

    #[test]
    fn the_init_node_has_the_vip_before_kubeadm_init() {
        let ok = facts(100, &["105.2 master-arm-1 habuild-firstboot[1]: habuild-firstboot: running: kubeadm init --config x (attempt 1/3)"]);
        assert!(judge_order(&ok, true).is_ok());
        let late = facts(110, &["105.2 h f: running: kubeadm init --config x"]);
        assert!(judge_order(&late, true).unwrap_err().contains("AFTER"));
        assert!(judge_order(&facts(1, &[]), true).is_err());
    }

    #[test]
    fn a_joiner_takes_the_vip_only_after_its_join() {
        let ok = facts(
            300,
            &["290.1 h f: habuild-firstboot: kubeadm join succeeded"],
        );
        assert!(judge_order(&ok, false).is_ok());
        let early = facts(
            200,
            &["290.1 h f: habuild-firstboot: kubeadm join succeeded"],
        );
        assert!(judge_order(&early, false).unwrap_err().contains("BEFORE"));
        let none = Facts::default();
        assert!(judge_order(&none, false).is_err());
    }

    #[test]
    fn test_doubles_and_package_free_images_are_refused() {
        let without = serde_json::json!({"kubernetes": {"packages_included": false}});
        assert!(check_real("n", &without).is_err());
        let doubles = serde_json::json!({"kubernetes": {"packages_included": true, "source": "bundle",
            "bundle": [{"file": "kubeadm_1.31.3-1.1_arm64.deb"}]}});
        assert!(check_real("n", &doubles)
            .unwrap_err()
            .to_string()
            .contains("TEST DOUBLES"));
        let real = serde_json::json!({"kubernetes": {"packages_included": true, "source": "bundle",
            "bundle": [{"file": "habuild-control-plane-images_1.36.3-1.1_arm64.deb"}],
            "differences": ["no seccomp"]}});
        assert_eq!(check_real("n", &real).unwrap(), ["no seccomp"]);
    }
}

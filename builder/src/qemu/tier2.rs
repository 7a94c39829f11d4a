//! Tier 2 scenarios: the seed's failover test on the cluster that
//! [`super::cluster`] runs. Every assertion prints how long it took and
//! the window the manifest implies. Kubernetes is replaced by TEST DOUBLES
//! (see tests/doubles/README.md): what passes here is the first-boot
//! order, LVS-DR through the director, keepalived's checks and VRRP, not
//! Kubernetes itself.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::cluster::{
    client_probe, control_plane_args, director_args, guest_mac, qmp, tcp_connects, wait_all_facts,
    wait_facts, Cluster, GuestSpec, CLIENT_CIDR,
};
use super::netns::{name_for, Netns};
use super::prepare::{add_test_unit, extract, fat_files, sparse_copy, Extent};
use super::t2facts::{
    answered_by, ipvs_service, judge_first_boot, readd_window_secs, removal_window_secs,
    vrrp_takeover_window_secs, Facts, Verdict,
};
use super::tier1::{part, qemu_cmdline, NodeJson};
use crate::config::manifest::{Cluster as Manifest, Role};
use crate::config::Project;
use crate::util::CommandExt;

/// The seconds between two fact blocks of a guest (qemu/tier2-facts.sh).
const FACT_PERIOD: u64 = 3;

#[derive(Debug)]
pub struct Tier2Result {
    pub passed: bool,
    pub report: PathBuf,
    pub text: String,
}

struct Report {
    lines: Vec<String>,
    failed: bool,
}

impl Report {
    fn line(&mut self, s: String) {
        eprintln!("{s}");
        self.lines.push(s);
    }
    fn verdicts(&mut self, vs: &[Verdict]) {
        for v in vs {
            self.check(v.ok, v.what.clone());
        }
    }
    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.failed = true;
        }
        self.line(format!("  [{}] {what}", if ok { "ok" } else { "FAIL" }));
    }
    fn timed(&mut self, ok: bool, what: &str, took: Duration, window: u64, basis: &str) {
        self.check(
            ok,
            format!(
                "{what}: took {:.1}s, window {window}s ({basis})",
                took.as_secs_f64()
            ),
        );
    }
}

fn debugfs_cat(copy: &Path, root: Extent, path: &str) -> Result<String> {
    Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(format!("{}?offset={}", copy.display(), root.start))
        .output_checked()
        .with_context(|| format!("reading {path} from {}", copy.display()))
}

/// Prepared guest: its QEMU spec and the config sha its kubeadm call must carry.
struct Prepared {
    spec: GuestSpec,
    role: Role,
    address: Ipv4Addr,
    config_sha: Option<String>,
}

fn prepare(
    project: &Project,
    m: &Manifest,
    out_dir: &Path,
    work: &Path,
    ns: &mut Netns,
    index: usize,
    node: &crate::config::manifest::Node,
) -> Result<Prepared> {
    let json_path = out_dir.join(format!("{}.json", node.name));
    let j: NodeJson = serde_json::from_slice(&std::fs::read(&json_path).with_context(|| {
        format!(
            "reading {} (build the images first: habuild image --all)",
            json_path.display()
        )
    })?)
    .with_context(|| format!("parsing {}", json_path.display()))?;
    let dir = work.join(&node.name);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let copy = dir.join("disk.img");
    sparse_copy(&out_dir.join(&j.image.file), &copy)?;
    let root = part(&j, "root")?;
    let q = project.root.join("qemu");
    add_test_unit(
        &copy,
        root,
        &q.join("tier2-facts.sh"),
        &q.join("habuild-t2-facts.service"),
        &q,
        &dir,
    )?;
    let tap = ns.add_tap(index)?;
    let mac = node.mac.clone().unwrap_or_else(|| guest_mac(node.address));
    let qmp_path = dir.join("qmp.sock");
    let test_dir = out_dir.join("test");
    let log = test_dir.join(format!("{}-tier2.log", node.name));
    let _ = std::fs::remove_file(&log);
    let (program, args, config_sha) = match node.role {
        Role::Director => {
            let board = project.board(&node.board)?;
            let machine = board
                .qemu
                .as_ref()
                .map(|p| p.machine.clone())
                .unwrap_or_else(|| "q35".into());
            let ovmf = crate::host::tools::ovmf_code()
                .context("no OVMF firmware found (package ovmf; habuild doctor --install)")?;
            (
                "qemu-system-x86_64".to_string(),
                director_args(
                    &ovmf,
                    &machine,
                    super::kvm::kvm_for_uefi(),
                    &copy,
                    &tap,
                    &mac,
                    &qmp_path,
                ),
                None,
            )
        }
        Role::ControlPlane => {
            let boot = dir.join("boot.vfat");
            extract(&copy, part(&j, "boot")?, &boot)?;
            let files = fat_files(&boot, &["vmlinuz", "initrd.img", "cmdline.txt"], &dir)?;
            let cmdline =
                std::fs::read_to_string(&files[2]).context("reading cmdline.txt from the image")?;
            let append = qemu_cmdline(&cmdline, "ttyAMA0,115200", &["panic=-1".to_string()]);
            let kubeadm = debugfs_cat(&copy, root, "/etc/habuild/kubeadm/kubeadm.yaml")?;
            let sha = if node.name == m.init_node().name {
                // firstboot.sh hands `kubeadm init` kubeadm.yaml, a document
                // separator and kubelet.yaml in one file.
                let kubelet = debugfs_cat(&copy, root, "/etc/habuild/kubeadm/kubelet.yaml")?;
                hex::encode(Sha256::digest(format!("{kubeadm}\n---\n{kubelet}")))
            } else {
                hex::encode(Sha256::digest(&kubeadm))
            };
            (
                "qemu-system-aarch64".to_string(),
                control_plane_args(&files[0], &files[1], &append, &copy, &tap, &mac, &qmp_path),
                Some(sha),
            )
        }
    };
    Ok(Prepared {
        spec: GuestSpec {
            name: node.name.clone(),
            program,
            args: args.into_iter().collect(),
            qmp: qmp_path,
            log,
        },
        role: node.role,
        address: node.address,
        config_sha,
    })
}

fn holds_vip(f: &Facts, vip: &str) -> bool {
    f.addrs
        .iter()
        .any(|(_, a)| a.split('/').next() == Some(vip))
}

/// The real servers the active director lists for the VIP (sorted).
fn listed(f: &Facts, vip: &str, port: u16) -> Vec<String> {
    ipvs_service(&f.ipvs, vip, port)
        .map(|(_, rs)| rs.into_iter().map(|r| r.addr).collect())
        .unwrap_or_default()
}

/// Probes `addr:port` from the client until `pred` holds on the answer;
/// returns the time that took (host clock), or None after `timeout`.
fn poll_probe(
    ns: &Netns,
    addr: &str,
    port: u16,
    timeout: Duration,
    pred: impl Fn(Option<&str>) -> bool,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() <= timeout {
        if pred(client_probe(ns, addr, port).as_deref()) {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    None
}

/// A client on the segment that connects to the VIP over and over in a
/// thread of its own, so an outage is seen on the host's clock while the
/// harness is busy powering a guest off.
struct VipWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Duration, Duration, bool)>>,
}

/// Each probe may wait this long for an answer.
const WATCH_TIMEOUT_SECS: u32 = 1;

/// The client watches the VIP this long before the MASTER is powered off.
const WATCH_LEAD: Duration = Duration::from_secs(2);

impl VipWatch {
    fn start(ns: &Netns, vip: &str, port: u16) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (flag, ns_name, vip) = (stop.clone(), ns.name.clone(), vip.to_string());
        let handle = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut probes = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let start = t0.elapsed();
                // The TCP handshake alone: who answers is checked with TLS
                // after the failover, by `probes`.
                let ok = tcp_connects(&ns_name, &vip, port, WATCH_TIMEOUT_SECS);
                probes.push((start, t0.elapsed(), ok));
                std::thread::sleep(Duration::from_millis(100));
            }
            probes
        });
        VipWatch { stop, handle }
    }

    /// Stops probing and sums up what the client saw.
    fn finish(self) -> WatchSummary {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let probes = self.handle.join().unwrap_or_default();
        let failed: Vec<&(Duration, Duration, bool)> = probes.iter().filter(|p| !p.2).collect();
        let longest_failed = failed
            .iter()
            .map(|p| p.1.saturating_sub(p.0))
            .max()
            .unwrap_or_default();
        WatchSummary {
            outage: longest_outage(&probes),
            attempts: probes.len(),
            unanswered: failed.len(),
            first_unanswered_at: failed.first().map(|p| p.0),
            resolution: longest_failed + Duration::from_millis(100),
        }
    }
}

struct WatchSummary {
    /// The longest stretch without an answer: from the end of an answered
    /// attempt to the start of the next answered one.
    outage: Duration,
    attempts: usize,
    unanswered: usize,
    /// Since the watch started.
    first_unanswered_at: Option<Duration>,
    /// How much `outage` can exceed the real outage: about the longest
    /// unanswered attempt (the one in flight when the VIP came back) plus
    /// the pause between attempts.
    resolution: Duration,
}

/// Longest time between an answered probe's end and the next answered
/// probe's start, over probes (start, end, answered).
fn longest_outage(probes: &[(Duration, Duration, bool)]) -> Duration {
    let mut last_ok_end: Option<Duration> = None;
    let mut longest = Duration::ZERO;
    let mut since_ok_failed = false;
    for &(start, end, ok) in probes {
        if ok {
            if let (Some(prev), true) = (last_ok_end, since_ok_failed) {
                longest = longest.max(start.saturating_sub(prev));
            }
            last_ok_end = Some(end);
            since_ok_failed = false;
        } else {
            since_ok_failed = true;
        }
    }
    if since_ok_failed {
        // No answer again before the watch stopped: the outage lasted at
        // least until the last probe ended.
        if let Some(&(_, end, _)) = probes.last() {
            longest = longest.max(end.saturating_sub(last_ok_end.unwrap_or_default()));
        }
    }
    longest
}

fn probes(ns: &Netns, vip: &str, port: u16, n: usize) -> Vec<Option<String>> {
    (0..n).map(|_| client_probe(ns, vip, port)).collect()
}

/// Powers guest `i` off as `shutdown -h now` would (ACPI power button via
/// QMP `system_powerdown`, so the guest's systemd stops its services); if
/// QEMU has not exited within `grace`, it is killed (a power cut) and the
/// report says so.
fn power_off(c: &mut Cluster, i: usize, grace: Duration, r: &mut Report) -> Result<Duration> {
    let start = Instant::now();
    let name = c.guests[i].spec.name.clone();
    qmp(&c.guests[i].spec.qmp, "system_powerdown")
        .with_context(|| format!("powering {name} off"))?;
    while c.guests[i].running() && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(500));
    }
    if c.guests[i].running() {
        r.line(format!(
            "  note: {name} did not power off within {}s of system_powerdown; QEMU killed (power cut)",
            grace.as_secs()
        ));
        c.kill(i);
    } else {
        r.line(format!(
            "  {name}: powered off by QMP system_powerdown (ACPI power button, a clean shutdown like `shutdown -h now`) in {:.1}s",
            start.elapsed().as_secs_f64()
        ));
    }
    Ok(start.elapsed())
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
    let vip = m.vip.to_string();
    let port = m.api_port;
    let lb = &m.loadbalancer;
    let mut r = Report {
        lines: Vec::new(),
        failed: false,
    };
    r.line(format!(
        "tier 2: cluster {} on a closed segment (network namespace {}); Kubernetes replaced by TEST DOUBLES",
        m.name,
        name_for(std::process::id())
    ));

    let mut ns = Netns::create(&name_for(std::process::id()), CLIENT_CIDR)?;
    // Directors first, then the control planes in manifest order.
    let mut order: Vec<_> = m.directors().collect();
    order.extend(m.control_planes());
    let mut prepared = Vec::new();
    for (i, node) in order.iter().enumerate() {
        prepared.push(prepare(project, m, out_dir, work.path(), &mut ns, i, node)?);
    }
    let mut c = Cluster::new(ns);
    let t0 = Instant::now();
    for p in &prepared {
        c.start(p.spec.clone())?;
    }

    // Boot: every guest prints facts; first boot finishes on every control plane.
    r.line("boot".into());
    let deadline = |t0: Instant| boot_timeout.saturating_sub(t0.elapsed());
    let everyone: Vec<usize> = (0..prepared.len()).collect();
    let booted = wait_all_facts(
        &mut c,
        &everyone,
        "boot to the first fact block",
        t0,
        deadline(t0),
        |_, _| true,
    )?;
    for (p, took) in prepared.iter().zip(&booted) {
        r.line(format!(
            "  {}: booted (first fact block) {:.0}s after start",
            p.spec.name,
            took.as_secs_f64()
        ));
    }
    let cps: Vec<usize> = everyone
        .iter()
        .copied()
        .filter(|&i| prepared[i].role == Role::ControlPlane)
        .collect();
    let init_name = m.init_node().name.clone();
    let want = |i: usize| {
        if prepared[i].spec.name == init_name {
            "initialised"
        } else {
            "joined"
        }
    };
    let done = wait_all_facts(
        &mut c,
        &cps,
        "first boot (kubeadm init or join) finished",
        t0,
        deadline(t0),
        |i, f| f.firstboot == want(i) || f.firstboot.starts_with("failed"),
    )?;
    for (&i, took) in cps.iter().zip(&done) {
        r.line(format!(
            "  {}: first boot {} {:.0}s after start",
            prepared[i].spec.name,
            c.guests[i].facts().map(|f| f.firstboot).unwrap_or_default(),
            took.as_secs_f64()
        ));
    }

    // 1. First-boot order.
    r.line("1. first-boot order (kubeadm TEST DOUBLE's records)".into());
    for (i, p) in prepared.iter().enumerate() {
        if p.role == Role::ControlPlane {
            let f = c.guests[i].facts().unwrap_or_default();
            let init = p.spec.name == m.init_node().name;
            r.verdicts(&judge_first_boot(&f, init, p.config_sha.as_deref()));
        }
    }

    // 2. The director lists the three real servers; the client meets all three.
    r.line("2. LVS-DR through the director".into());
    let cps: Vec<String> = prepared
        .iter()
        .filter(|p| p.role == Role::ControlPlane)
        .map(|p| format!("{}:{port}", p.address))
        .collect();
    let mut all_rs = cps.clone();
    all_rs.sort();
    let directors: Vec<usize> = (0..prepared.len())
        .filter(|&i| prepared[i].role == Role::Director)
        .collect();
    let t = Instant::now();
    let active = wait_active_director(&mut c, &directors, &vip, deadline(t0))?;
    wait_facts(
        &mut c,
        active,
        "ipvsadm lists every control plane",
        deadline(t0),
        |f| listed(f, &vip, port) == all_rs,
    )?;
    r.line(format!(
        "  {} holds the VIP; all real servers listed {:.1}s after every first boot finished",
        c.guests[active].spec.name,
        t.elapsed().as_secs_f64()
    ));
    let f = c.guests[active].facts().unwrap_or_default();
    let (sched, rs) = ipvs_service(&f.ipvs, &vip, port).unwrap_or_default();
    r.check(
        sched == lb.lvs_scheduler,
        format!(
            "ipvsadm -L -n: {vip}:{port} scheduler {sched:?} (manifest: {})",
            lb.lvs_scheduler
        ),
    );
    for s in &rs {
        r.check(
            s.forward == "Route" && s.weight == lb.weight,
            format!("  -> {} {} weight {}", s.addr, s.forward, s.weight),
        );
    }
    let names: Vec<String> = prepared
        .iter()
        .filter(|p| p.role == Role::ControlPlane)
        .map(|p| p.spec.name.clone())
        .collect();
    let answers = probes(c.ns(), &vip, port, 3 * names.len() + 3);
    let seen = answered_by(&answers);
    r.check(
        names.iter().all(|n| seen.contains(n)) && answers.iter().all(Option::is_some),
        format!(
            "client {CLIENT_CIDR} -> {vip}:{port}, {} connections answered by {:?} ({} unanswered)",
            answers.len(),
            seen,
            answers.iter().filter(|a| a.is_none()).count()
        ),
    );

    // 3. Power off the init node: keepalived removes it; the VIP keeps answering.
    let victim_name = m.init_node().name.clone();
    let victim = c
        .guest(&victim_name)
        .context("the init node is not running")?;
    let victim_rs = format!("{}:{port}", prepared[victim].address);
    let window = removal_window_secs(
        lb.delay_loop.into(),
        lb.connect_timeout.into(),
        lb.retry.into(),
        lb.delay_before_retry.into(),
    );
    let victim_ip = prepared[victim].address.to_string();
    // keepalived also logged removals while the cluster formed: only
    // removal lines that appear after the power-off count.
    let removals = |f: &Facts| {
        f.klog
            .iter()
            .filter(|l| l.contains("Removing service") && l.contains(&format!("[{victim_ip}]")))
            .count()
    };
    let removals_before = c.guests[active].facts().map(|f| removals(&f)).unwrap_or(0);
    r.line(format!("3. power off {victim_name}"));
    let t = Instant::now();
    let shutdown = power_off(&mut c, victim, Duration::from_secs(120), &mut r)?;
    let removal_limit = Duration::from_secs(window + FACT_PERIOD * 2) + shutdown;
    let removed = wait_facts(
        &mut c,
        active,
        "keepalived removes the powered-off node",
        removal_limit + Duration::from_secs(30),
        |f| !listed(f, &vip, port).contains(&victim_rs),
    );
    let took = t.elapsed();
    r.timed(
        removed.is_ok() && took <= removal_limit,
        &format!("{victim_rs} removed from {vip}:{port} after system_powerdown"),
        took,
        window,
        &format!(
            "delay_loop {} + connect_timeout {} x (retry {} + 1) + delay_before_retry {} x retry; counted from the powerdown request, so the {:.1}s shutdown and {}s of fact sampling are allowed on top",
            lb.delay_loop, lb.connect_timeout, lb.retry, lb.delay_before_retry, shutdown.as_secs_f64(), FACT_PERIOD * 2
        ),
    );
    let f = c.guests[active].facts().unwrap_or_default();
    r.check(
        removals(&f) > removals_before,
        format!(
            "keepalived logged the removal of {victim_ip} after the power-off ({} removal line(s) before, {} after)",
            removals_before,
            removals(&f)
        ),
    );
    let others: Vec<String> = names
        .iter()
        .filter(|n| **n != victim_name)
        .cloned()
        .collect();
    let answers = probes(c.ns(), &vip, port, 3 * others.len());
    let seen = answered_by(&answers);
    r.check(
        answers.iter().all(Option::is_some)
            && others.iter().all(|n| seen.contains(n))
            && !seen.contains(&victim_name),
        format!(
            "VIP still answers, from {seen:?} ({} unanswered of {})",
            answers.iter().filter(|a| a.is_none()).count(),
            answers.len()
        ),
    );

    // 4. Power it on again: re-added, answers again. Both moments are seen
    // from the client on the segment, on the host's clock: when the node's
    // own listener first answers (probed at its real address), and when a
    // connection to the VIP is first answered by it.
    r.line(format!("4. power {victim_name} on again"));
    c.restart(victim)?;
    let listener_up = poll_probe(
        c.ns(),
        &victim_ip,
        port,
        deadline(t0).max(Duration::from_secs(300)),
        |a| a == Some(victim_name.as_str()),
    )
    .with_context(|| {
        format!("{victim_name}'s stand-in API server (TEST DOUBLE) did not answer at {victim_rs} after power-on")
    })?;
    r.line(format!(
        "  {victim_name}: booted again; its stand-in API server answered at {victim_rs} {:.1}s after power-on",
        listener_up.as_secs_f64()
    ));
    let readd = readd_window_secs(lb.delay_loop.into(), lb.connect_timeout.into());
    let answered_via_vip = poll_probe(c.ns(), &vip, port, Duration::from_secs(readd + 30), |a| {
        a == Some(victim_name.as_str())
    });
    let took = answered_via_vip.unwrap_or(Duration::from_secs(readd + 30));
    r.timed(
        answered_via_vip.is_some() && took <= Duration::from_secs(readd),
        &format!("{victim_rs} re-added: the VIP is answered by {victim_name} again"),
        took,
        readd,
        &format!(
            "delay_loop {} + connect_timeout {}; measured on the host from the node's listener answering to the VIP answering from it",
            lb.delay_loop, lb.connect_timeout
        ),
    );
    // The director reports its table every FACT_PERIOD: allow two reports.
    let relisted = wait_facts(
        &mut c,
        active,
        "ipvsadm lists the node again",
        Duration::from_secs(FACT_PERIOD * 2 + 2),
        |f| listed(f, &vip, port).contains(&victim_rs),
    );
    r.check(
        relisted.is_ok(),
        format!(
            "ipvsadm -L -n on {} lists {victim_rs} again",
            c.guests[active].spec.name
        ),
    );
    let answers = probes(c.ns(), &vip, port, 3 * names.len() + 3);
    let seen = answered_by(&answers);
    r.check(
        seen.contains(&victim_name) && answers.iter().all(Option::is_some),
        format!(
            "VIP answered by {seen:?} ({} unanswered of {})",
            answers.iter().filter(|a| a.is_none()).count(),
            answers.len()
        ),
    );

    // 5. Two directors: stop the MASTER; the BACKUP takes the VIP.
    if directors.len() >= 2 {
        let master = active;
        let backup_idx = *directors
            .iter()
            .find(|&&d| d != master)
            .expect("two directors");
        let backup_node = m
            .node(&c.guests[backup_idx].spec.name)
            .expect("a manifest node");
        let window = vrrp_takeover_window_secs(lb.advert_int.into(), backup_node.priority.into());
        r.line(format!(
            "5. stop the MASTER director {}",
            c.guests[master].spec.name
        ));
        let watch = VipWatch::start(c.ns(), &vip, port);
        std::thread::sleep(WATCH_LEAD);
        let t = Instant::now();
        let shutdown = power_off(&mut c, master, Duration::from_secs(60), &mut r)?;
        let limit = Duration::from_secs(window + FACT_PERIOD * 2) + shutdown;
        let moved = wait_facts(
            &mut c,
            backup_idx,
            "the BACKUP takes the VIP",
            limit + Duration::from_secs(30),
            |f| holds_vip(f, &vip),
        );
        let took = t.elapsed();
        r.timed(
            moved.is_ok() && took <= limit,
            &format!("VIP moved to {}", c.guests[backup_idx].spec.name),
            took,
            window,
            &format!("3 x advert_int {} + skew (256 - priority {})/256 x advert_int; the {:.1}s shutdown and {}s of fact sampling allowed on top", lb.advert_int, backup_node.priority, shutdown.as_secs_f64(), FACT_PERIOD * 2),
        );
        let w = watch.finish();
        r.timed(
            w.outage <= Duration::from_secs(window) + w.resolution,
            &format!(
                "longest stretch with the VIP not accepting connections, seen by a client making {} TCP connections during the failover, {} unanswered{} (attempts of at most {WATCH_TIMEOUT_SECS}s; resolution {:.1}s)",
                w.attempts,
                w.unanswered,
                w.first_unanswered_at.map_or(String::new(), |t| format!(
                    ", the first {:.1}s after the power button",
                    t.as_secs_f64() - WATCH_LEAD.as_secs_f64()
                )),
                w.resolution.as_secs_f64()
            ),
            w.outage,
            window,
            "the takeover window, plus the resolution: a clean shutdown hands the VIP over at once (keepalived sends priority 0), a crash within it",
        );
        let answers = probes(c.ns(), &vip, port, 3 * names.len());
        let seen = answered_by(&answers);
        r.check(
            answers.iter().all(Option::is_some) && names.iter().all(|n| seen.contains(n)),
            format!(
                "VIP answered through the BACKUP by {seen:?} ({} unanswered of {})",
                answers.iter().filter(|a| a.is_none()).count(),
                answers.len()
            ),
        );
    } else {
        r.line("5. two directors: not run (this manifest has one director; use tests/fixtures/two-directors.toml)".into());
    }

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

/// The director that holds the VIP (VRRP MASTER), once one does.
fn wait_active_director(
    c: &mut Cluster,
    directors: &[usize],
    vip: &str,
    timeout: Duration,
) -> Result<usize> {
    let start = Instant::now();
    loop {
        for &d in directors {
            if c.guests[d]
                .facts()
                .is_some_and(|f| holds_vip(&f, vip) && f.keepalived == "active")
            {
                return Ok(d);
            }
        }
        if start.elapsed() > timeout {
            anyhow::bail!(
                "no director holds the VIP {vip} after {}s",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: f64) -> Duration {
        Duration::from_secs_f64(secs)
    }

    #[test]
    fn outage_is_the_longest_gap_between_answers() {
        assert_eq!(longest_outage(&[]), Duration::ZERO);
        let all_ok = [(s(0.0), s(0.1), true), (s(0.2), s(0.3), true)];
        assert_eq!(longest_outage(&all_ok), Duration::ZERO);
        let gap = [
            (s(0.0), s(0.1), true),
            (s(0.2), s(1.2), false),
            (s(1.3), s(2.3), false),
            (s(2.4), s(2.5), true),
            (s(2.6), s(3.6), false),
            (s(3.7), s(3.8), true),
        ];
        assert_eq!(longest_outage(&gap), s(2.4) - s(0.1));
        // Never answered again: counted to the end of the last attempt.
        let lost = [(s(0.0), s(0.1), true), (s(0.2), s(5.2), false)];
        assert_eq!(longest_outage(&lost), s(5.1));
    }
}

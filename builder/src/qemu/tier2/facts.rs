//! What tier-2 guests report (qemu/tier2-facts.sh, between
//! `HABUILD-T2-BEGIN n` and `HABUILD-T2-END n`) and the judgements made on
//! it. Pure: text in, verdicts out, so every rule is unit-tested.

use std::collections::BTreeSet;

use crate::qemu::sealed::sealed_blocks;

/// One fact block of one guest.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Facts {
    pub seq: u64,
    pub hostname: String,
    pub state: String,
    /// kubeadm test-double calls: (epoch seconds, arguments).
    pub kubeadm_calls: Vec<(f64, String)>,
    /// kubeadm test-double state lines at init/join: (epoch, the rest).
    pub kubeadm_states: Vec<(f64, String)>,
    /// When the kubelet test double was started by systemd (epoch seconds).
    pub kubelet_starts: Vec<f64>,
    pub firstboot: String,
    pub vip_on_lo: Option<bool>,
    pub realserver_since: Option<i64>,
    pub apiserver_double: String,
    /// `ipvsadm -L -n` lines.
    pub ipvs: Vec<String>,
    pub keepalived: String,
    /// (interface, address/prefix)
    pub addrs: Vec<(String, String)>,
    /// keepalived journal lines about checks and services.
    pub klog: Vec<String>,
    /// Tier 3 (qemu/tier3-facts.sh): (unit, `systemctl is-active`).
    pub units: Vec<(String, String)>,
    /// Tier 3: first boot's journal lines about kubeadm, with epoch times.
    pub fblog: Vec<String>,
    /// Tier 3: kubeadm's error lines from first boot's journal.
    pub fberr: Vec<String>,
    /// Tier 3: first boot's last journal lines, whatever they say.
    pub fbtail: Vec<String>,
    /// Tier 3: (node, status) as the guest's own kubectl lists them.
    pub nodes: Vec<(String, String)>,
    /// Tier 3: journal lines of a failed first boot.
    pub journal: Vec<String>,
    /// Tier 3: kube-system pods: "name ready status restarts".
    pub pods: Vec<String>,
    /// Tier 3: the node's containers as CRI-O lists them: "name state restarts".
    pub containers: Vec<String>,
    /// Tier 3: the kubelet's last error lines.
    pub kubelet_tail: Vec<String>,
    /// Tier 3: the last complaints of the newest etcd and kube-apiserver
    /// containers: "container line".
    pub container_logs: Vec<String>,
    /// Tier 3: the guest's load average and its processes with the most CPU
    /// time so far: "load 1.00 0.50 0.25", "kube-apiserver 00:12:34".
    pub cpu: Vec<String>,
    /// Tier 3: the guest's online vCPUs as the kernel lists them ("0-1").
    pub cpus_online: String,
    /// Tier 3: the CPU time the fact unit itself has used (its cgroup's
    /// usage_usec), so that a report can say what observing cost.
    pub observer_cpu_usec: Option<u64>,
    /// Tier 3: the seconds until the guest's next block.
    pub fact_period: Option<u64>,
    /// Tier 3: the guest's uptime in seconds when it printed the block.
    pub uptime: Option<f64>,
}

/// The last intact block in a console log (sealed, see qemu/sealed.rs; a
/// garbled or unfinished block is passed over for the one before).
pub fn last_block(log: &str) -> Option<Facts> {
    let block = sealed_blocks(log, "HABUILD-T2-BEGIN", "HABUILD-T2-END")
        .into_iter()
        .rev()
        .find(|b| b.intact)?;
    let mut f = Facts {
        seq: block.id.parse().ok()?,
        ..Facts::default()
    };
    for line in &block.lines {
        let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = rest.trim();
        match key {
            "hostname" => f.hostname = rest.into(),
            "state" => f.state = rest.into(),
            "kubeadm" => {
                let (t, args) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Ok(t) = t.parse::<f64>() {
                    match args.strip_prefix("state ") {
                        Some(s) => f.kubeadm_states.push((t, s.into())),
                        None => f.kubeadm_calls.push((t, args.into())),
                    }
                }
            }
            // The double also logs `--version` calls; only the unit's start counts.
            "kubelet" => {
                if let Some((t, "--test-double-started")) = rest.split_once(' ') {
                    f.kubelet_starts.extend(t.parse::<f64>().ok());
                }
            }
            "firstboot" => f.firstboot = rest.into(),
            "vip_on_lo" => f.vip_on_lo = Some(rest == "yes"),
            "realserver_since" => f.realserver_since = rest.parse().ok(),
            "apiserver_double" => f.apiserver_double = rest.into(),
            "ipvs" => f.ipvs.push(rest.into()),
            "keepalived" => f.keepalived = rest.into(),
            "addr" => {
                if let Some((i, a)) = rest.split_once(' ') {
                    f.addrs.push((i.into(), a.into()));
                }
            }
            "klog" => f.klog.push(rest.into()),
            "unit" | "node" => {
                if let Some((a, b)) = rest.split_once(' ') {
                    let pair = (a.to_string(), b.to_string());
                    if key == "unit" {
                        f.units.push(pair)
                    } else {
                        f.nodes.push(pair)
                    }
                }
            }
            "fblog" => f.fblog.push(rest.into()),
            "fberr" => f.fberr.push(rest.into()),
            "fbtail" => f.fbtail.push(rest.into()),
            "journal" => f.journal.push(rest.into()),
            "pod" => f.pods.push(rest.into()),
            "ctr" => f.containers.push(rest.into()),
            "kubelet_tail" => f.kubelet_tail.push(rest.into()),
            "ctr_log" => f.container_logs.push(rest.into()),
            "cpu" => f.cpu.push(rest.into()),
            "cpus_online" => f.cpus_online = rest.into(),
            "observer_cpu_usec" => f.observer_cpu_usec = rest.parse().ok(),
            "fact_period" => f.fact_period = rest.parse().ok(),
            "uptime" => f.uptime = rest.parse().ok(),
            _ => {}
        }
    }
    Some(f)
}

/// A real server as `ipvsadm -L -n` lists it under a virtual service.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct RealServer {
    pub addr: String,
    pub forward: String,
    pub weight: u32,
}

/// The scheduler and real servers of `vip:port` in `ipvsadm -L -n` output,
/// or None when the virtual service is not listed.
pub fn ipvs_service(lines: &[String], vip: &str, port: u16) -> Option<(String, Vec<RealServer>)> {
    let want = format!("{vip}:{port}");
    let mut iter = lines.iter().map(|l| l.trim());
    let head = iter.by_ref().find(|l| {
        let mut p = l.split_whitespace();
        p.next() == Some("TCP") && p.next() == Some(want.as_str())
    })?;
    let sched = head.split_whitespace().nth(2).unwrap_or("").to_string();
    let mut servers = Vec::new();
    for l in iter {
        let Some(rest) = l.strip_prefix("->") else {
            break;
        };
        let p: Vec<&str> = rest.split_whitespace().collect();
        if p.len() >= 3 && p[0] != "RemoteAddress:Port" {
            servers.push(RealServer {
                addr: p[0].to_string(),
                forward: p[1].to_string(),
                weight: p[2].parse().unwrap_or(0),
            });
        }
    }
    servers.sort();
    Some((sched, servers))
}

/// The window the manifest gives keepalived to remove a real server that
/// stopped answering: one delay_loop until the next check, then
/// `retry + 1` connects of up to connect_timeout each, with
/// delay_before_retry between them.
pub fn removal_window_secs(
    delay_loop: u64,
    connect_timeout: u64,
    retry: u64,
    delay_before_retry: u64,
) -> u64 {
    delay_loop + connect_timeout * (retry + 1) + delay_before_retry * retry
}

/// The window to re-add a real server once its listener is back: the next
/// check (at most one delay_loop away) plus one connect.
pub fn readd_window_secs(delay_loop: u64, connect_timeout: u64) -> u64 {
    delay_loop + connect_timeout
}

/// VRRP: a BACKUP declares the MASTER dead after 3 × advert_int plus its
/// skew time ((256 - priority) / 256 × advert_int), rounded up.
pub fn vrrp_takeover_window_secs(advert_int: u64, backup_priority: u64) -> u64 {
    let skew_ms = (256 - backup_priority.min(255)) * advert_int * 1000 / 256;
    (3 * advert_int * 1000 + skew_ms).div_ceil(1000)
}

/// One line of evidence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub ok: bool,
    pub what: String,
}

fn verdict(ok: bool, what: String) -> Verdict {
    Verdict { ok, what }
}

/// First-boot order on one control plane, from the kubeadm test double's
/// log and the node's current state.
/// Init node: `kubeadm init` called with the VIP already on lo.
/// Joiner: `kubeadm join` called when the VIP answered and was NOT on lo,
/// and realServer (the VIP on lo) came up after the join call.
pub fn judge_first_boot(f: &Facts, init: bool, rendered_config_sha: Option<&str>) -> Vec<Verdict> {
    let mut v = Vec::new();
    let action = if init { "init" } else { "join" };
    // Only a call that runs kubeadm's preflight starts an init or a join:
    // not `init phase addon NAME` (the add-ons, retried alone), nor the
    // phases first boot runs once the joiner's etcd member is in.
    let is = |a: &str, what: &str| {
        let mut w = a.split_whitespace();
        w.next() == Some(what)
            && w.next() != Some("phase")
            && !a.contains("--skip-phases=preflight")
    };
    let calls: Vec<&(f64, String)> = f
        .kubeadm_calls
        .iter()
        .filter(|(_, a)| is(a, action))
        .collect();
    v.push(verdict(
        calls.len() == 1,
        format!(
            "{}: kubeadm {action} called {} time(s)",
            f.hostname,
            calls.len()
        ),
    ));
    let other = if init { "join" } else { "init" };
    v.push(verdict(
        !f.kubeadm_calls.iter().any(|(_, a)| is(a, other)),
        format!("{}: kubeadm {other} never called", f.hostname),
    ));
    let t_call = calls.first().map_or(f64::MAX, |(t, _)| *t);
    let Some((t_state, state)) = f.kubeadm_states.first() else {
        v.push(verdict(
            false,
            format!("{}: the kubeadm test double recorded no state", f.hostname),
        ));
        return v;
    };
    let has = |k: &str| state.split_whitespace().any(|w| w == k);
    if init {
        v.push(verdict(
            has("vip_on_lo=yes"),
            format!(
                "{}: realServer (VIP on lo) was up when kubeadm init ran ({state})",
                f.hostname
            ),
        ));
    } else {
        v.push(verdict(
            has("vip_answers=yes"),
            format!(
                "{}: the VIP answered when kubeadm join ran ({state})",
                f.hostname
            ),
        ));
        v.push(verdict(
            has("vip_on_lo=no"),
            format!("{}: the VIP was not on lo during kubeadm join", f.hostname),
        ));
        let after = f.realserver_since.map(|s| s as f64 >= t_state.floor());
        v.push(verdict(
            after == Some(true) && f.vip_on_lo == Some(true),
            format!(
                "{}: realServer came up after the join (join at {:.0}, realServer since {:?}, VIP on lo now: {:?})",
                f.hostname, t_state, f.realserver_since, f.vip_on_lo
            ),
        ));
    }
    if let Some(sha) = rendered_config_sha {
        v.push(verdict(
            has(&format!("config_sha256={sha}")),
            format!(
                "{}: kubeadm {action} was given the rendered config (sha256 {sha})",
                f.hostname
            ),
        ));
    }
    // The image's kubelet drop-in holds the kubelet back until kubeadm has
    // written its configuration (the double does, as kubeadm does).
    let first_kubelet = f.kubelet_starts.first();
    v.push(verdict(
        first_kubelet.is_some_and(|&k| k >= t_call.floor()),
        format!(
            "{}: the kubelet first started after kubeadm {action} (at {:?}, kubeadm at {:.0})",
            f.hostname, first_kubelet, t_call
        ),
    ));
    v.push(verdict(
        f.apiserver_double == "active",
        format!(
            "{}: the stand-in API server (TEST DOUBLE) is {}",
            f.hostname, f.apiserver_double
        ),
    ));
    v
}

/// The names a series of client connections was answered by.
pub fn answered_by(answers: &[Option<String>]) -> BTreeSet<String> {
    answers.iter().flatten().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIRECTOR: [&str; 13] = [
        "hostname master-x86-1",
        "ipvs IP Virtual Server version 1.2.1 (size=4096)",
        "ipvs Prot LocalAddress:Port Scheduler Flags",
        "ipvs   -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "ipvs TCP  10.10.197.101:6443 wrr",
        "ipvs   -> 10.10.197.97:6443            Route   10     0          0",
        "ipvs   -> 10.10.197.98:6443            Route   10     0          0",
        "ipvs   -> 10.10.197.99:6443            Route   10     0          0",
        "keepalived active",
        "addr lan0 10.10.197.96/24",
        "addr lan0 10.10.197.101/32",
        "state running",
        "firstboot done",
    ];

    /// A block as tier2-facts.sh prints it, sealed.
    fn block(seq: u32, lines: &[&str]) -> String {
        format!(
            "HABUILD-T2-BEGIN {seq}\n{}\nHABUILD-T2-END {seq} {}\n",
            lines.join("\n"),
            crate::qemu::sealed::seal_of(lines)
        )
    }

    #[test]
    fn tier3_lines_are_read_into_their_fields() {
        let f = last_block(&block(
            3,
            &[
                "firstboot joining",
                "unit kubelet activating",
                "fblog 1796499202.2 h f: habuild-firstboot: running: kubeadm join --config x (attempt 1/3)",
                "fberr error execution phase check-etcd",
                "fbtail [etcd] Waiting for the new etcd member to join the cluster",
                "fbtail [etcd] promoting the learner",
                "node master-arm-1 Ready",
                "pod etcd-master-arm-1 1/1 Running 0",
                "ctr kube-apiserver Exited 4",
                "kubelet_tail E1205 bootstrap.go:266] part of the existing bootstrap client certificate is expired",
                r#"ctr_log etcd {"level":"warn","msg":"leader failed to send out heartbeat on time"}"#,
                "cpu load 3.10 2.50 1.20",
                "cpu kube-apiserver 00:12:34",
            ],
        ))
        .unwrap();
        assert_eq!(f.firstboot, "joining");
        assert_eq!(f.units, [("kubelet".into(), "activating".into())]);
        assert_eq!(f.fblog.len(), 1);
        assert_eq!(f.fberr, ["error execution phase check-etcd"]);
        assert_eq!(f.fbtail.len(), 2);
        assert_eq!(f.nodes, [("master-arm-1".into(), "Ready".into())]);
        assert_eq!(f.pods, ["etcd-master-arm-1 1/1 Running 0"]);
        assert_eq!(f.containers, ["kube-apiserver Exited 4"]);
        assert_eq!(f.kubelet_tail.len(), 1);
        assert_eq!(
            f.container_logs,
            [r#"etcd {"level":"warn","msg":"leader failed to send out heartbeat on time"}"#]
        );
        assert_eq!(f.cpu, ["load 3.10 2.50 1.20", "kube-apiserver 00:12:34"]);
    }

    #[test]
    fn last_complete_block_and_ipvs() {
        let mut log = format!("noise\n{}", block(7, &DIRECTOR));
        // Block 8 is garbled by a kernel line, block 9 unfinished: 7 counts.
        log.push_str(&block(8, &DIRECTOR).replace("wrr\n", "wrr[  12.3] kernel says hi\n"));
        log.push_str("HABUILD-T2-BEGIN 9\nhostname trunc");
        let f = last_block(&log).unwrap();
        assert_eq!(f.seq, 7);
        assert_eq!(f.hostname, "master-x86-1");
        let (sched, rs) = ipvs_service(&f.ipvs, "10.10.197.101", 6443).unwrap();
        assert_eq!(sched, "wrr");
        assert_eq!(rs.len(), 3);
        assert!(rs.iter().all(|r| r.forward == "Route" && r.weight == 10));
        assert_eq!(rs[1].addr, "10.10.197.98:6443");
        assert!(ipvs_service(&f.ipvs, "10.10.197.102", 6443).is_none());
        assert!(f
            .addrs
            .contains(&("lan0".into(), "10.10.197.101/32".into())));
    }

    #[test]
    fn journald_console_prefixes_are_skipped() {
        let log: String = block(2, &["hostname master-x86-1", "addr lan0 10.10.197.101/32"])
            .lines()
            .enumerate()
            .flat_map(|(i, l)| {
                [
                    format!("[   93.{i}] sh[419]: {l}"),
                    format!("[   93.{i}5] kernel line {i}"),
                ]
            })
            .map(|l| l + "\n")
            .collect();
        let f = last_block(&log).unwrap();
        assert_eq!(f.hostname, "master-x86-1");
        assert_eq!(
            f.addrs,
            [("lan0".to_string(), "10.10.197.101/32".to_string())]
        );
    }

    #[test]
    fn windows_from_the_seed() {
        // The seed: delay_loop 6, connect_timeout 10, retry 3, delay_before_retry 3.
        assert_eq!(removal_window_secs(6, 10, 3, 3), 55);
        assert_eq!(readd_window_secs(6, 10), 16);
        // advert_int 1, BACKUP priority 90: 3 s + 0.65 s skew.
        assert_eq!(vrrp_takeover_window_secs(1, 90), 4);
    }

    fn cp(lines: &str) -> Facts {
        last_block(&block(1, &lines.lines().collect::<Vec<_>>())).unwrap()
    }

    #[test]
    fn first_boot_order_is_judged_not_assumed() {
        let init_ok = cp("hostname master-arm-1\nkubeadm 100.5 init --config /run/habuild/kubeadm-init.yaml\nkubeadm 100.6 state vip_on_lo=yes vip_answers=no config_sha256=abc\nvip_on_lo yes\nrealserver_since 99\napiserver_double active\nkubelet 20 --version\nkubelet 100 --test-double-started");
        assert!(judge_first_boot(&init_ok, true, Some("abc"))
            .iter()
            .all(|v| v.ok));
        // realServer after init: caught.
        let init_bad = cp("hostname master-arm-1\nkubeadm 100.5 init --config x\nkubeadm 100.6 state vip_on_lo=no vip_answers=no config_sha256=abc\napiserver_double active");
        assert!(judge_first_boot(&init_bad, true, Some("abc"))
            .iter()
            .any(|v| !v.ok));
        // Wrong config: caught.
        assert!(judge_first_boot(&init_ok, true, Some("def"))
            .iter()
            .any(|v| !v.ok));

        // First boot's join: to the etcd member, the control plane's
        // manifests, then the phases after etcd-join. One join.
        let join_calls = "kubeadm 200.1 join --config /etc/habuild/kubeadm/kubeadm.yaml --skip-phases=control-plane-prepare/control-plane,kubelet-wait-bootstrap,control-plane-join,wait-control-plane\nkubeadm 200.2 state vip_on_lo=no vip_answers=yes config_sha256=abc\nkubeadm 200.3 join phase control-plane-prepare control-plane --config /etc/habuild/kubeadm/kubeadm.yaml\nkubeadm 200.4 join --config /etc/habuild/kubeadm/kubeadm.yaml --skip-phases=preflight,control-plane-prepare,check-etcd,kubelet-start,etcd-join";
        let join_ok = cp(&format!("hostname master-arm-2\n{join_calls}\nvip_on_lo yes\nrealserver_since 201\napiserver_double active\nkubelet 201 --test-double-started"));
        assert!(judge_first_boot(&join_ok, false, Some("abc"))
            .iter()
            .all(|v| v.ok));
        // A second join that ran preflight again: caught.
        let twice = cp(&format!("hostname master-arm-2\n{join_calls}\nkubeadm 300.1 join --config /etc/habuild/kubeadm/kubeadm.yaml\nvip_on_lo yes\nrealserver_since 201\napiserver_double active\nkubelet 201 --test-double-started"));
        assert!(judge_first_boot(&twice, false, Some("abc"))
            .iter()
            .any(|v| !v.ok && v.what.contains("kubeadm join called 2 time(s)")));
        // VIP on lo before the join (the seed's warning): caught.
        let join_early = cp("hostname master-arm-2\nkubeadm 200.1 join --config x\nkubeadm 200.2 state vip_on_lo=yes vip_answers=yes config_sha256=abc\nvip_on_lo yes\nrealserver_since 150\napiserver_double active");
        assert!(judge_first_boot(&join_early, false, None)
            .iter()
            .any(|v| !v.ok));
        // Joined before the VIP answered: caught.
        let join_blind = cp("hostname master-arm-2\nkubeadm 200.1 join --config x\nkubeadm 200.2 state vip_on_lo=no vip_answers=no config_sha256=abc\nvip_on_lo yes\nrealserver_since 201\napiserver_double active");
        assert!(judge_first_boot(&join_blind, false, None)
            .iter()
            .any(|v| !v.ok));
        // The kubelet started before kubeadm configured it, or never: caught.
        for kubelet in [
            "kubelet 150 --test-double-started\nkubelet 201 --test-double-started",
            "kubelet 150 --version",
        ] {
            let early = cp(&format!("hostname master-arm-2\nkubeadm 200.1 join --config x\nkubeadm 200.2 state vip_on_lo=no vip_answers=yes config_sha256=abc\nvip_on_lo yes\nrealserver_since 201\napiserver_double active\n{kubelet}"));
            let failed: Vec<_> = judge_first_boot(&early, false, None)
                .into_iter()
                .filter(|v| !v.ok)
                .collect();
            assert_eq!(failed.len(), 1, "{failed:?}");
            assert!(
                failed[0]
                    .what
                    .contains("kubelet first started after kubeadm join"),
                "{failed:?}"
            );
        }
        // No listener: caught.
        let no_listener = cp("hostname master-arm-2\nkubeadm 200.1 join --config x\nkubeadm 200.2 state vip_on_lo=no vip_answers=yes config_sha256=abc\nvip_on_lo yes\nrealserver_since 201\napiserver_double failed");
        assert!(judge_first_boot(&no_listener, false, None)
            .iter()
            .any(|v| !v.ok));
    }
}

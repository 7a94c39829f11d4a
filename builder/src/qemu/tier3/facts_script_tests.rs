//! qemu/tier3-facts.sh run on the host against stand-in systemctl,
//! journalctl, kubectl and crictl, its blocks read by the harness's own
//! parser: what the tier judges a guest by is what the script prints.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::qemu::tier2::facts::{last_block, Facts};

/// Host programs the script runs that need no stand-in.
const HOST_TOOLS: &[&str] = &[
    "sh",
    "awk",
    "sed",
    "cut",
    "ps",
    "ip",
    "timeout",
    "sha256sum",
    "cat",
    "ls",
    "head",
    "tail",
    "mv",
    "rm",
    "touch",
    "dirname",
    "sleep",
    "grep",
];

fn write_exe(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// systemctl: the units of a control plane whose realServer started at
/// 1796598788, keepalived not installed (or, for a director, the reverse).
const SYSTEMCTL: &str = r#"#!/bin/sh
case "$1" in
is-system-running) echo running ;;
is-active) echo active ;;
show)
    printf 'Id=crio.service\nLoadState=loaded\nActiveState=active\nActiveEnterTimestamp=@1796598700\n\n'
    printf 'Id=habuild-load-images.service\nActiveState=inactive\nLoadState=loaded\nActiveEnterTimestamp=\n\n'
    if [ -n "$DIRECTOR" ]; then
        printf 'Id=realServer.service\nLoadState=not-found\nActiveState=inactive\nActiveEnterTimestamp=\n\n'
        printf 'Id=keepalived.service\nLoadState=loaded\nActiveState=active\nActiveEnterTimestamp=@1796598600\n'
    else
        printf 'Id=realServer.service\nLoadState=loaded\nActiveState=active\nActiveEnterTimestamp=@1796598788\n\n'
        printf 'Id=keepalived.service\nLoadState=not-found\nActiveState=inactive\nActiveEnterTimestamp=\n'
    fi ;;
esac
"#;

/// journalctl: each unit's lines once, as a cursor file makes a real
/// journalctl do (the next call starts after them).
const JOURNALCTL: &str = r#"#!/bin/sh
cursor=
for a in "$@"; do
    case "$a" in --cursor-file=*) cursor=${a#--cursor-file=} ;; esac
done
[ -n "$cursor" ] && [ -e "$cursor" ] && exit 0
[ -n "$cursor" ] && : >"$cursor"
case "$*" in
*habuild-firstboot*)
    echo '-- No entries --'
    for i in 11 12 13 14 15 16 17 18 19 20; do
        echo "17965986$i.5 cp1 habuild-firstboot[704]: habuild-firstboot: the VIP answers (attempt $i/90)"
    done
    echo '1796598784.0 cp1 habuild-firstboot[704]: habuild-firstboot: running: kubeadm init (attempt 1/3)'
    echo '1796598790.0 cp1 habuild-firstboot[704]: [etcd] Error: could not reach the member'
    echo '1796598911.8 cp1 habuild-firstboot[704]: habuild-firstboot: kubeadm init succeeded' ;;
*kubelet*) printf 'I1206 fine\nE1206 the lease failed\nW1206 slow\n' ;;
*keepalived*)
    echo '1796598801.0 d keepalived_healthcheckers[9]: TCP connection to [10.10.197.98]:tcp:6443 success.'
    echo '1796598802.0 d keepalived_healthcheckers[9]: Adding service [10.10.197.98]:tcp:6443 to VS'
    echo '1796598803.0 d keepalived_healthcheckers[9]: nothing of interest' ;;
esac
"#;

/// kubectl asked for two kinds at once names each row by its kind, a
/// table per kind.
const KUBECTL: &str = r#"#!/bin/sh
echo "$*" >>"$HABUILD_T3_RUN/kubectl-calls"
case "$*" in
*"get nodes,pods -n kube-system --no-headers"*)
    echo 'node/cp1 Ready control-plane 5m v1.36.3'
    echo
    echo 'pod/etcd-cp1 1/1 Running 0 5m' ;;
esac
"#;

const CRICTL: &str = r#"#!/bin/sh
echo 'CONTAINER IMAGE CREATED STATE NAME ATTEMPT POD ID POD'
echo 'abc img 2 minutes ago Running etcd 0 def etcd-cp1'
echo 'abd img 3 minutes ago Exited kube-apiserver 1 deg kube-apiserver-cp1'
"#;

/// ipvsadm: one real server, and those of `ipvs-more` in the sandbox.
const IPVSADM: &str = r#"#!/bin/sh
echo 'TCP  10.10.197.101:6443 wrr   '
echo '  -> 10.10.197.98:6443   Route   1   0   0   '
cat "$HABUILD_T3_ROOT/ipvs-more" 2>/dev/null
exit 0
"#;

/// keepalived.conf's real servers, as habuild renders them.
const KEEPALIVED_CONF: &str = "virtual_server 10.10.197.101 6443 {\n    lb_kind DR\n    real_server 10.10.197.98 6443 {\n        weight 1\n    }\n    real_server 10.10.197.97 6443 {\n        weight 1\n    }\n}\n";

/// Two blocks of the script in a sandbox (HABUILD_T3_BLOCKS in `env` asks
/// for another number): the output, the last block, and the stand-in
/// kubectl's calls.
fn two_blocks(director: bool) -> (String, Facts, usize) {
    let t = tempfile::tempdir().unwrap();
    two_blocks_in(t.path(), director, "", &[])
}

/// [`two_blocks`] in `t`, with `cmdline` as the guest's kernel command line,
/// two vCPUs online and `env` for the script.
fn two_blocks_in(
    t: &Path,
    director: bool,
    cmdline: &str,
    env: &[(&str, &str)],
) -> (String, Facts, usize) {
    let bin = t.join("bin");
    let root = t.join("root");
    let run = t.join("run");
    for d in [
        &bin,
        &run,
        &root.join("etc/habuild"),
        &root.join("etc/kubernetes"),
        &root.join("var/lib/habuild"),
        &root.join("var/log/pods/kube-system_etcd-cp1_x/etcd"),
        &root.join("proc"),
        &root.join("sys/devices/system/cpu/cpu0"),
        &root.join("sys/devices/system/cpu/cpu1"),
        &root.join("sys/fs/cgroup/system.slice/habuild-t3-facts.service"),
        &root.join("etc/keepalived"),
    ] {
        std::fs::create_dir_all(d).unwrap();
    }
    for tool in HOST_TOOLS {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
        assert!(!path.is_empty(), "{tool} not on this host");
        std::os::unix::fs::symlink(path, bin.join(tool)).unwrap();
    }
    write_exe(&bin.join("systemctl"), SYSTEMCTL);
    write_exe(&bin.join("journalctl"), JOURNALCTL);
    write_exe(&bin.join("kubectl"), KUBECTL);
    write_exe(&bin.join("crictl"), CRICTL);
    if director {
        write_exe(&bin.join("ipvsadm"), IPVSADM);
    }
    std::fs::write(root.join("etc/hostname"), "cp1\n").unwrap();
    std::fs::write(root.join("proc/cmdline"), format!("{cmdline}\n")).unwrap();
    std::fs::write(root.join("sys/devices/system/cpu/cpu1/online"), "1\n").unwrap();
    std::fs::write(root.join("sys/devices/system/cpu/online"), "0-1\n").unwrap();
    std::fs::write(
        root.join("sys/fs/cgroup/system.slice/habuild-t3-facts.service/cpu.stat"),
        "usage_usec 2345678\nuser_usec 1000000\nsystem_usec 1345678\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/keepalived/keepalived.conf"), KEEPALIVED_CONF).unwrap();
    std::fs::write(
        root.join("etc/habuild/firstboot.env"),
        "HABUILD_VIP=192.0.2.101\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/kubernetes/admin.conf"), "").unwrap();
    // First boot done, unless the test said otherwise.
    let status = root.join("var/lib/habuild/firstboot.status");
    if !status.exists() {
        std::fs::write(&status, "initialised\n").unwrap();
    }
    std::fs::write(
        root.join("var/log/pods/kube-system_etcd-cp1_x/etcd/0.log"),
        "2026-12-06T23:25:49Z stderr F {\"level\":\"info\",\"msg\":\"fine\"}\n\
         2026-12-06T23:25:50Z stderr F {\"level\":\"warn\",\"msg\":\"waiting for ReadIndex response took too long\"}\n",
    )
    .unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qemu/tier3-facts.sh");
    let out = Command::new(bin.join("sh"))
        .arg(&script)
        .env_clear()
        .env("PATH", &bin)
        .env("HABUILD_T3_ROOT", &root)
        .env("HABUILD_T3_RUN", &run)
        .env("HABUILD_T3_BLOCKS", "2")
        .env("HABUILD_T3_PERIOD", "0")
        .env("DIRECTOR", if director { "yes" } else { "" })
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // As the console shows it: journald's prefix on every line.
    let console: String = text
        .lines()
        .map(|l| format!("[   40.1] sh[429]: {l}\n"))
        .collect();
    let facts = last_block(&console).unwrap_or_else(|| panic!("no intact block:\n{text}"));
    let kubectl_calls = std::fs::read_to_string(run.join("kubectl-calls"))
        .unwrap_or_default()
        .lines()
        .count();
    (text, facts, kubectl_calls)
}

#[test]
fn a_control_planes_block_carries_what_tier_3_reads() {
    let (text, f, kubectl_calls) = two_blocks(false);
    assert_eq!(f.seq, 2, "{text}");
    assert_eq!(f.hostname, "cp1");
    assert_eq!(f.state, "running");
    assert_eq!(f.firstboot, "initialised");
    // Units the image has, with their state; keepalived is not installed.
    assert_eq!(
        f.units,
        [
            ("crio".to_string(), "active".to_string()),
            ("habuild-load-images".into(), "inactive".into()),
            ("realServer".into(), "active".into()),
        ]
    );
    assert_eq!(f.realserver_since, Some(1796598788));
    assert_eq!(f.vip_on_lo, Some(false));
    // The second block repeats the first one's journal lines, kept in the
    // state files, not read twice: the last 8 kubeadm/VIP lines.
    assert_eq!(f.fblog.len(), 8, "{:?}", f.fblog);
    assert!(
        f.fblog[7].ends_with("kubeadm init succeeded"),
        "{:?}",
        f.fblog
    );
    assert!(f.fblog[0].starts_with("1796598615.5 "), "{:?}", f.fblog);
    assert!(f.fblog[0].ends_with("(attempt 15/90)"), "{:?}", f.fblog);
    assert_eq!(f.fberr, ["[etcd] Error: could not reach the member"]);
    assert_eq!(f.fbtail.len(), 4);
    assert_eq!(f.fbtail[3], "habuild-firstboot: kubeadm init succeeded");
    // The slow questions of block 1, repeated in block 2.
    assert_eq!(f.nodes, [("cp1".to_string(), "Ready".to_string())]);
    assert_eq!(f.pods, ["etcd-cp1 1/1 Running 0"]);
    assert_eq!(f.containers, ["etcd Running 0", "kube-apiserver Exited 1"]);
    assert_eq!(
        f.container_logs,
        [r#"etcd {"level":"warn","msg":"waiting for ReadIndex response took too long"}"#]
    );
    assert_eq!(f.kubelet_tail, ["E1206 the lease failed"]);
    assert!(f.cpu[0].starts_with("load "), "{:?}", f.cpu);
    assert!(f.ipvs.is_empty() && f.klog.is_empty());
    // Block 1 asked kubectl once (nodes and pods); block 2 repeated its answers.
    assert_eq!(text.matches("HABUILD-T2-END").count(), 2);
    assert_eq!(kubectl_calls, 1);
    assert_eq!(f.observer_cpu_usec, Some(2345678));
    assert_eq!(f.fact_period, Some(15));
    assert!(f.uptime.is_some_and(|u| u > 0.0), "{text}");
}

#[test]
fn a_directors_block_carries_its_ipvs_table_and_keepalived_journal() {
    let (text, f, kubectl_calls) = two_blocks(true);
    assert_eq!(f.seq, 2, "{text}");
    assert_eq!(f.keepalived, "active");
    assert_eq!(
        f.ipvs,
        [
            "TCP  10.10.197.101:6443 wrr",
            "-> 10.10.197.98:6443   Route   1   0   0"
        ]
    );
    assert_eq!(f.klog.len(), 2, "{:?}", f.klog);
    assert!(f.klog[1].contains("Adding service"), "{:?}", f.klog);
    assert!(f.addrs.iter().any(|(i, _)| i == "lo"), "{:?}", f.addrs);
    // A director runs no first boot and no kubectl.
    assert!(f.fblog.is_empty() && f.nodes.is_empty() && f.cpu.is_empty());
    assert!(f.realserver_since.is_none());
    assert_eq!(kubectl_calls, 0);
    // One of keepalived.conf's two real servers listed: the cluster is
    // still forming, and the blocks stay 15 s apart.
    assert_eq!(text.matches("fact_period 15").count(), 2, "{text}");
}

#[test]
fn a_directors_blocks_come_every_5_s_once_ipvs_lists_every_real_server() {
    // Both of keepalived.conf's real servers listed, with `env` for the script.
    let both_listed = |env: &[(&str, &str)]| {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("root")).unwrap();
        std::fs::write(
            t.path().join("root/ipvs-more"),
            "  -> 10.10.197.97:6443   Route   1   0   0\n",
        )
        .unwrap();
        two_blocks_in(t.path(), true, "", env)
    };
    // keepalived lists every real server as it starts, before any check:
    // the blocks speed up only after a full listing has lasted (120 s).
    let (text, f, _) = both_listed(&[]);
    assert_eq!(text.matches("fact_period 15").count(), 2, "{text}");
    assert_eq!(f.ipvs.len(), 3);
    // With no wait asked, block 1 is printed before the count; block 2
    // after it.
    let (text, f, _) = both_listed(&[("HABUILD_T3_SETTLE", "0")]);
    assert_eq!(text.matches("fact_period 15").count(), 1, "{text}");
    assert_eq!(f.fact_period, Some(5), "{text}");
}

#[test]
fn a_control_plane_asked_to_keeps_only_its_first_vcpus_once_first_boot_is_done() {
    let t = tempfile::tempdir().unwrap();
    let online = t.path().join("root/sys/devices/system/cpu/cpu1/online");
    let (text, f, _) = two_blocks_in(
        t.path(),
        false,
        "root=/dev/vda2 habuild.t3_cpus_after_first_boot=1 panic=-1",
        &[],
    );
    assert_eq!(f.firstboot, "initialised", "{text}");
    assert_eq!(std::fs::read_to_string(&online).unwrap(), "0\n");
    // What the kernel lists is printed, whatever it is.
    assert_eq!(f.cpus_online, "0-1");
}

#[test]
fn a_control_plane_not_asked_to_keeps_its_vcpus() {
    let t = tempfile::tempdir().unwrap();
    let online = t.path().join("root/sys/devices/system/cpu/cpu1/online");
    let (text, f, _) = two_blocks_in(t.path(), false, "root=/dev/vda2 panic=-1", &[]);
    assert_eq!(f.firstboot, "initialised", "{text}");
    assert_eq!(std::fs::read_to_string(&online).unwrap(), "1\n");
}

#[test]
fn once_first_boot_is_done_kubectl_is_asked_every_8th_block_instead_of_every_3rd() {
    let kubectl_calls_in_9_blocks = |status: &str| {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("root/var/lib/habuild");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(state.join("firstboot.status"), format!("{status}\n")).unwrap();
        let (text, f, calls) = two_blocks_in(t.path(), false, "", &[("HABUILD_T3_BLOCKS", "9")]);
        assert_eq!(f.seq, 9, "{text}");
        assert_eq!(f.firstboot, status);
        // What the journal said is kept and repeated either way.
        assert_eq!(f.fblog.len(), 8, "{text}");
        calls
    };
    // Blocks 1, 4 and 7 while joining; 1 and 9 once joined.
    assert_eq!(kubectl_calls_in_9_blocks("joining"), 3);
    assert_eq!(kubectl_calls_in_9_blocks("joined"), 2);
}

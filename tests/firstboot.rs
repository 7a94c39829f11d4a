//! The first-boot script (`overlays/control-plane/usr/local/lib/habuild/
//! firstboot.sh`) run on the build host against **test doubles** of
//! `kubeadm`, `systemctl`, the VIP probe and `sleep`. The doubles only
//! record their calls (and fail or succeed as a test asks); they prove the
//! script's order, retries and recovery, nothing about real Kubernetes.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::repo_root;

const SCRIPT: &str = "overlays/control-plane/usr/local/lib/habuild/firstboot.sh";
const PROBE: &str = "overlays/control-plane/usr/local/lib/habuild/vip-probe";

/// TEST DOUBLE of kubeadm: logs its call; `TD_FAIL_<ACTION>=N` fails the
/// first N calls of init/join, `TD_FAIL_addon=N` of `init phase addon`; `TD_KILL_PARENT_ON_JOIN=1` kills the calling
/// script (a power cut during the join); `TD_JOIN_ADDS_MEMBER=1` writes the
/// etcd manifest as a join that got as far as etcd, `TD_JOIN_STARTS_KUBELET=1`
/// the kubelet's configuration as one that got to etcd-join; `join phase etcd-join`
/// `join phase control-plane-prepare control-plane` and the join's remaining
/// phases (`--skip-phases=preflight,...`) count apart and fail their first
/// `TD_FAIL_etcd_join`, `TD_FAIL_control_plane` and `TD_FAIL_rest` calls; `reset` empties the PKI
/// and manifest directories, as the real `kubeadm reset` does, and with
/// `TD_RESET_KEEPS_MEMBER=1` prints kubeadm's warning that it could not
/// remove the etcd member.
const KUBEADM_DOUBLE: &str = r#"#!/bin/sh
# TEST DOUBLE of kubeadm (habuild tests/firstboot.rs).
echo "kubeadm $*" >>"$TD_DIR/calls"
if [ "$1 $2" = "init phase" ]; then
    # An add-on phase: its own count, failing the first TD_FAIL_addon.
    [ "$3" = addon ] || exit 0
    n=$(cat "$TD_DIR/count-addon" 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" >"$TD_DIR/count-addon"
    [ "$n" -gt "${TD_FAIL_addon:-0}" ]
    exit
fi
counted() {
    n=$(cat "$TD_DIR/count-$1" 2>/dev/null || echo 0)
    n=$((n + 1))
    echo "$n" >"$TD_DIR/count-$1"
    [ "$n" -gt "$2" ]
}
if [ "$1 $2 $3" = "join phase etcd-join" ]; then
    counted etcd-join "${TD_FAIL_etcd_join:-0}"
    exit
fi
if [ "$1 $2 $3 ${4:-}" = "join phase control-plane-prepare control-plane" ]; then
    # As kubeadm: the three manifests, written together.
    mkdir -p "$HABUILD_KUBE_DIR/manifests"
    for c in kube-apiserver kube-controller-manager kube-scheduler; do
        echo "$c" >"$HABUILD_KUBE_DIR/manifests/$c.yaml"
        # A running kubelet starts the pod at once (the systemctl double).
        [ -f "$TD_DIR/kubelet-stopped" ] || echo "$c.yaml" >>"$TD_DIR/started-pods"
    done
    counted control-plane "${TD_FAIL_control_plane:-0}"
    exit
fi
case $* in
    join*--skip-phases=preflight,*)
        echo "$*" | grep -q -- '--skip-phases=preflight,control-plane-prepare,check-etcd,kubelet-start,etcd-join$' || exit 3
        ls "$HABUILD_KUBE_DIR/manifests" 2>/dev/null | tr '\n' ' ' >"$TD_DIR/manifests-at-rest"
        counted rest "${TD_FAIL_rest:-0}"
        exit
        ;;
    join*)
        # The join up to its etcd member: the control plane's manifests
        # and the phases after etcd-join come apart.
        echo "$*" | grep -q -- '--skip-phases=control-plane-prepare/control-plane,kubelet-wait-bootstrap,control-plane-join,wait-control-plane$' || exit 3
        if [ -n "${TD_CHECK_FROM_NETNS:-}" ]; then
            # What a director's TCP check finds during the join.
            if ip netns exec "$TD_CHECK_FROM_NETNS" timeout 3 bash -c "exec 3<>/dev/tcp/$TD_CHECK_ADDRESS/6443" 2>/dev/null; then
                echo answered >"$TD_DIR/check-during-join"
            else
                echo unanswered >"$TD_DIR/check-during-join"
            fi
        fi
        ;;
esac
case $1 in
    init | join)
        n=$(cat "$TD_DIR/count-$1" 2>/dev/null || echo 0)
        n=$((n + 1))
        echo "$n" >"$TD_DIR/count-$1"
        [ "$2" = --config ] && cp "$3" "$TD_DIR/config-$1"
        if [ "$1" = join ] && [ -n "${TD_JOIN_STARTS_KUBELET:-}" ]; then
            # As kubeadm's kubelet-start phase, before etcd-join.
            mkdir -p "$HABUILD_KUBELET_DIR"
            echo "kind: KubeletConfiguration" >"$HABUILD_KUBELET_DIR/config.yaml"
        fi
        if [ "$1" = join ] && [ -n "${TD_JOIN_ADDS_MEMBER:-}" ]; then
            # As kubeadm's etcd-join phase: the member added, its manifest written.
            mkdir -p "$HABUILD_KUBE_DIR/manifests"
            echo "etcd" >"$HABUILD_KUBE_DIR/manifests/etcd.yaml"
        fi
        if [ "$1" = join ] && [ -n "${TD_KILL_PARENT_ON_JOIN:-}" ]; then
            kill -9 "$PPID"
            exit 1
        fi
        limit=$(eval echo "\${TD_FAIL_$1:-0}")
        if [ "$n" -le "$limit" ]; then
            echo "kubeadm test double: $1 fails (call $n)" >&2
            exit 1
        fi
        ;;
    reset)
        if [ -n "${TD_RESET_KEEPS_MEMBER:-}" ] && [ -f "$HABUILD_KUBE_DIR/manifests/etcd.yaml" ]; then
            echo "W1205 reset.go:141] [reset] Failed to remove etcd member: context deadline exceeded, please manually remove this etcd member using etcdctl" >&2
        fi
        rm -rf "$HABUILD_PKI_DIR" "$HABUILD_KUBE_DIR/manifests" "$HABUILD_KUBELET_DIR"
        ;;
esac
exit 0
"#;

/// TEST DOUBLE of systemctl: logs its call. For the kubelet it also keeps
/// a model of what the real one does with static pods: `stop` and `start`
/// mark it stopped or running (`kubelet-stopped`), and `start` starts
/// each manifest there; while it runs, the kubeadm double starts each
/// manifest it writes. It never stops one, as a kubelet that has not
/// reached the API server does not. The pods so started are listed in
/// `started-pods`.
const SYSTEMCTL_DOUBLE: &str = r#"#!/bin/sh
# TEST DOUBLE of systemctl (habuild tests/firstboot.rs).
echo "systemctl $*" >>"$TD_DIR/calls"
case $* in
    "stop kubelet.service") touch "$TD_DIR/kubelet-stopped" ;;
    "start kubelet.service")
        rm -f "$TD_DIR/kubelet-stopped"
        ls "$HABUILD_KUBE_DIR/manifests" 2>/dev/null >>"$TD_DIR/started-pods"
        ;;
esac
exit 0
"#;

/// TEST DOUBLE of kubectl: logs its call; fails the first
/// `TD_CLUSTER_DOWN_FOR` calls (a cluster that does not answer).
const KUBECTL_DOUBLE: &str = r#"#!/bin/sh
# TEST DOUBLE of kubectl (habuild tests/firstboot.rs).
n=$(cat "$TD_DIR/count-kubectl" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" >"$TD_DIR/count-kubectl"
echo "kubectl $*" >>"$TD_DIR/calls"
case $* in
    *"get --raw /readyz")
        ls "$HABUILD_KUBE_DIR/manifests" 2>/dev/null | tr '\n' ' ' >>"$TD_DIR/manifests-at-readyz"
        echo >>"$TD_DIR/manifests-at-readyz"
        sort -u "$TD_DIR/started-pods" 2>/dev/null | tr '\n' ' ' >>"$TD_DIR/pods-at-readyz"
        echo >>"$TD_DIR/pods-at-readyz"
        ;;
esac
[ "$n" -gt "${TD_CLUSTER_DOWN_FOR:-0}" ]
"#;

/// TEST DOUBLE of the VIP probe: fails the first `TD_VIP_DOWN_FOR` calls.
const PROBE_DOUBLE: &str = r#"#!/bin/sh
# TEST DOUBLE of vip-probe (habuild tests/firstboot.rs).
n=$(cat "$TD_DIR/count-probe" 2>/dev/null || echo 0)
n=$((n + 1))
echo "$n" >"$TD_DIR/count-probe"
echo "probe $*" >>"$TD_DIR/calls"
[ "$n" -gt "${TD_VIP_DOWN_FOR:-0}" ]
"#;

/// TEST DOUBLE of sleep: logs instead of waiting.
const SLEEP_DOUBLE: &str = r#"#!/bin/sh
# TEST DOUBLE of sleep (habuild tests/firstboot.rs).
echo "sleep $*" >>"$TD_DIR/calls"
"#;

/// TEST DOUBLE of ip, `ip -4 rule add|del RULE` only: keeps the rules in a
/// file as the kernel would (`del` removes one and fails when none
/// matches) and logs each call in `ip-calls` with the number of the other
/// doubles' calls before it, which places it among them.
const IP_DOUBLE: &str = r#"#!/bin/sh
# TEST DOUBLE of ip (habuild tests/firstboot.rs).
before=$(cat "$TD_DIR/calls" 2>/dev/null | wc -l)
echo "after $before: ip $*" >>"$TD_DIR/ip-calls"
[ "$1 $2" = "-4 rule" ] || exit 2
op=$3
shift 3
rules=$TD_DIR/rules
touch "$rules"
case $op in
    add) echo "$*" >>"$rules" ;;
    del)
        grep -qxF -- "$*" "$rules" || exit 2
        awk -v r="$*" '!gone && $0 == r { gone = 1; next } { print }' "$rules" >"$rules.new"
        mv "$rules.new" "$rules"
        ;;
    *) exit 2 ;;
esac
"#;

const PKI_FILES: &[&str] = &[
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
];

/// One node's world on the host: state, config and PKI directories, doubles.
struct Node {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    action: &'static str,
    env: Vec<(String, String)>,
}

fn write_exec(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

impl Node {
    fn new(action: &'static str) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let td = root.join("td");
        fs::create_dir_all(&td).unwrap();
        write_exec(&td.join("kubeadm-test-double"), KUBEADM_DOUBLE);
        write_exec(&td.join("systemctl-test-double"), SYSTEMCTL_DOUBLE);
        write_exec(&td.join("vip-probe-test-double"), PROBE_DOUBLE);
        write_exec(&td.join("sleep-test-double"), SLEEP_DOUBLE);
        write_exec(&td.join("kubectl-test-double"), KUBECTL_DOUBLE);
        write_exec(&td.join("ip-test-double"), IP_DOUBLE);
        let kdir = root.join("etc/habuild/kubeadm");
        fs::create_dir_all(&kdir).unwrap();
        let kind = if action == "init" {
            "InitConfiguration"
        } else {
            "JoinConfiguration"
        };
        fs::write(kdir.join("kubeadm.yaml"), format!("kind: {kind}\n")).unwrap();
        fs::copy(
            repo_root().join("overlays/control-plane/etc/habuild/kubeadm/kubelet.yaml"),
            kdir.join("kubelet.yaml"),
        )
        .unwrap();
        let pki = root.join("etc/kubernetes/pki");
        fs::create_dir_all(pki.join("etcd")).unwrap();
        for f in PKI_FILES {
            fs::write(pki.join(f), format!("baked {f}\n")).unwrap();
        }
        let path = |p: &Path| p.to_str().unwrap().to_string();
        let env = vec![
            ("TD_DIR", path(&td)),
            ("HABUILD_ACTION", action.into()),
            ("HABUILD_VIP", "10.10.197.101".into()),
            ("HABUILD_API_PORT", "6443".into()),
            ("HABUILD_STATE_DIR", path(&root.join("var/lib/habuild"))),
            ("HABUILD_KUBEADM_DIR", path(&kdir)),
            ("HABUILD_PKI_DIR", path(&pki)),
            ("HABUILD_RUN_DIR", path(&root.join("run/habuild"))),
            ("HABUILD_KUBEADM", path(&td.join("kubeadm-test-double"))),
            ("HABUILD_SYSTEMCTL", path(&td.join("systemctl-test-double"))),
            ("HABUILD_VIP_PROBE", path(&td.join("vip-probe-test-double"))),
            ("HABUILD_SLEEP", path(&td.join("sleep-test-double"))),
            ("HABUILD_KUBECTL", path(&td.join("kubectl-test-double"))),
            ("HABUILD_KUBE_DIR", path(&root.join("etc/kubernetes"))),
            ("HABUILD_KUBELET_DIR", path(&root.join("var/lib/kubelet"))),
            ("HABUILD_RETRY_DELAY", "7".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Node {
            _tmp: tmp,
            root,
            action,
            env,
        }
    }

    fn set(&mut self, key: &str, value: &str) -> &mut Node {
        self.env.push((key.into(), value.into()));
        self
    }

    /// One boot: runs the script as the unit would.
    fn boot(&self) -> Output {
        self.run_script(&[])
    }

    /// One boot inside the network namespace `netns`.
    fn boot_in(&self, netns: &str) -> Output {
        self.run_script(&["ip", "netns", "exec", netns])
    }

    /// Runs `sh firstboot.sh` behind `prefix` (a command that runs another).
    fn run_script(&self, prefix: &[&str]) -> Output {
        let mut argv: Vec<&str> = prefix.to_vec();
        argv.push("sh");
        let out = Command::new(argv[0])
            .args(&argv[1..])
            .arg(repo_root().join(SCRIPT))
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("running firstboot.sh");
        eprintln!(
            "--- firstboot.sh ({}) {prefix:?} exit {:?}\n{}{}",
            self.action,
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// The doubles' calls so far, with the temporary root shown as `/`.
    fn calls(&self) -> Vec<String> {
        let root = self.root.to_str().unwrap();
        fs::read_to_string(self.root.join("td/calls"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.replace(root, ""))
            .collect()
    }

    /// Gives the node two directors and the `ip` double.
    fn with_directors(&mut self) -> &mut Node {
        let ip = self.root.join("td/ip-test-double");
        self.set("HABUILD_DIRECTORS", "10.10.197.96 10.10.197.95")
            .set("HABUILD_IP", ip.to_str().unwrap())
    }

    /// The `ip` double's calls, each with the number of other calls before it.
    fn ip_calls(&self) -> Vec<String> {
        fs::read_to_string(self.root.join("td/ip-calls"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// The policy rules in place (the `ip` double's state).
    fn rules(&self) -> Vec<String> {
        fs::read_to_string(self.root.join("td/rules"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn clear_calls(&self) {
        let _ = fs::remove_file(self.root.join("td/calls"));
    }

    fn status(&self) -> String {
        fs::read_to_string(self.root.join("var/lib/habuild/firstboot.status"))
            .unwrap()
            .trim()
            .to_string()
    }

    fn done(&self) -> bool {
        self.root.join("var/lib/habuild/firstboot.done").exists()
    }

    fn pki_is_baked(&self) -> bool {
        PKI_FILES.iter().all(|f| {
            fs::read_to_string(self.root.join("etc/kubernetes/pki").join(f)).ok()
                == Some(format!("baked {f}\n"))
        })
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn init_path_starts_realserver_before_kubeadm_init() {
    let node = Node::new("init");
    let out = node.boot();
    assert!(out.status.success());
    assert_eq!(
        node.calls(),
        [
            "systemctl start realServer.service",
            "kubeadm init --config /run/habuild/kubeadm-init.yaml --skip-phases=addon",
            COREDNS,
            KUBE_PROXY,
            UPLOAD_CONFIG,
            "systemctl enable realServer.service",
        ]
    );
    assert_eq!(node.status(), "initialised");
    assert!(node.done());
    // kubeadm got this node's configuration plus the KubeletConfiguration.
    let config = fs::read_to_string(node.root.join("td/config-init")).unwrap();
    assert!(config.starts_with("kind: InitConfiguration\n"), "{config}");
    assert!(
        config.contains("\n---\n")
            && config.contains("kind: KubeletConfiguration\ncgroupDriver: systemd"),
        "{config}"
    );
    let mode = fs::metadata(node.root.join("run/habuild/kubeadm-init.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the composed config holds the token");
    assert!(stdout(&out).contains("status: initialising"));
    // The saved copy of the PKI is gone once done; the PKI itself stays.
    assert!(!node.root.join("var/lib/habuild/firstboot-pki").exists());
    assert!(node.pki_is_baked());
}

#[test]
fn join_path_joins_before_realserver() {
    let node = Node::new("join");
    let out = node.boot();
    assert!(out.status.success());
    assert_eq!(
        node.calls(),
        [
            "systemctl stop realServer.service",
            "probe 10.10.197.101 6443",
            JOIN_TO_ETCD,
            CONTROL_PLANE,
            JOIN_REST,
            "systemctl enable --now realServer.service",
        ]
    );
    assert_eq!(node.status(), "joined");
    assert!(node.done());
    let log = stdout(&out);
    let order: Vec<usize> = [
        "status: waiting-for-vip",
        "status: joining",
        "status: joined",
    ]
    .iter()
    .map(|s| log.find(s).unwrap_or_else(|| panic!("{s}: {log}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{log}");
}

#[test]
fn a_vip_that_answers_late_is_waited_for_with_backoff() {
    let mut node = Node::new("join");
    node.set("TD_VIP_DOWN_FOR", "5")
        .set("HABUILD_VIP_MAX_DELAY", "10");
    let out = node.boot();
    assert!(out.status.success());
    let calls = node.calls();
    let sleeps: Vec<&str> = calls
        .iter()
        .filter(|c| c.starts_with("sleep"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        sleeps,
        ["sleep 2", "sleep 4", "sleep 8", "sleep 10", "sleep 10"]
    );
    assert_eq!(calls.iter().filter(|c| c.starts_with("probe")).count(), 6);
    let log = stdout(&out);
    for i in 1..=5 {
        assert!(
            log.contains(&format!("does not answer (attempt {i}/90)")),
            "attempt {i} not logged: {log}"
        );
    }
    assert!(log.contains("answers (attempt 6/90)"), "{log}");
    assert_eq!(node.status(), "joined");
}

#[test]
fn a_vip_that_never_answers_fails_without_joining() {
    let mut node = Node::new("join");
    node.set("TD_VIP_DOWN_FOR", "1000")
        .set("HABUILD_VIP_TRIES", "4");
    let out = node.boot();
    assert_eq!(out.status.code(), Some(1), "the unit retries exit 1");
    assert_eq!(
        node.status(),
        "failed: the VIP 10.10.197.101:6443 did not answer after 4 attempts"
    );
    assert!(!node.calls().iter().any(|c| c.starts_with("kubeadm")));
    assert!(!node.calls().iter().any(|c| c.contains("enable")));
    assert!(!node.done());
}

#[test]
fn a_failed_join_is_reset_and_retried() {
    let mut node = Node::new("join");
    node.set("TD_FAIL_join", "1");
    let out = node.boot();
    assert!(out.status.success());
    assert_eq!(
        node.calls(),
        [
            "systemctl stop realServer.service",
            "probe 10.10.197.101 6443",
            JOIN_TO_ETCD,
            "kubeadm reset -f",
            "sleep 7",
            "probe 10.10.197.101 6443",
            JOIN_TO_ETCD,
            CONTROL_PLANE,
            JOIN_REST,
            "systemctl enable --now realServer.service",
        ]
    );
    // The double's reset deleted the PKI, as kubeadm's does: restored.
    assert!(node.pki_is_baked());
    assert!(stdout(&node.boot()).contains("already done"));
    assert_eq!(node.status(), "joined");
}

#[test]
fn a_join_that_keeps_failing_ends_in_failed_status() {
    let mut node = Node::new("join");
    node.set("TD_FAIL_join", "100").set("HABUILD_ATTEMPTS", "2");
    let out = node.boot();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        node.status(),
        "failed: kubeadm join failed 2 times (see the journal: journalctl -u habuild-firstboot)"
    );
    let calls = node.calls();
    assert_eq!(calls.iter().filter(|c| *c == "kubeadm reset -f").count(), 2);
    assert!(!calls.iter().any(|c| c.contains("enable")), "{calls:?}");
    assert!(!node.done());
    assert!(node.pki_is_baked(), "left clean for the next try");
    // The next boot (or the unit's restart) tries again from a clean node.
    node.set("TD_FAIL_join", "0");
    node.clear_calls();
    assert!(node.boot().status.success());
    assert!(!node.calls().contains(&"kubeadm reset -f".to_string()));
    assert_eq!(node.status(), "joined");
}

const LOCAL_READYZ: &str = "kubectl --kubeconfig /etc/kubernetes/admin.conf --server https://10.10.197.97:6443 --request-timeout=20s get --raw /readyz";

fn read_td(node: &Node, file: &str) -> String {
    fs::read_to_string(node.root.join("td").join(file)).unwrap_or_default()
}

#[test]
fn a_joiners_api_server_starts_alone_until_it_is_ready() {
    let mut node = Node::new("join");
    node.set("HABUILD_NODE_ADDRESS", "10.10.197.97")
        .set("TD_CLUSTER_DOWN_FOR", "2");
    assert!(node.boot().status.success());
    assert_eq!(
        node.calls(),
        [
            "systemctl stop realServer.service",
            "probe 10.10.197.101 6443",
            JOIN_TO_ETCD,
            "systemctl stop kubelet.service",
            CONTROL_PLANE,
            "systemctl start kubelet.service",
            LOCAL_READYZ,
            "sleep 15",
            LOCAL_READYZ,
            "sleep 15",
            LOCAL_READYZ,
            JOIN_REST,
            "systemctl enable --now realServer.service",
        ]
    );
    // While the API server was asked, it was the only manifest of the three
    // and the only pod of the three the kubelet had started; kubeadm's
    // remaining phases found all three.
    assert_eq!(
        read_td(&node, "manifests-at-readyz"),
        "kube-apiserver.yaml \n".repeat(3)
    );
    assert_eq!(
        read_td(&node, "pods-at-readyz"),
        "kube-apiserver.yaml \n".repeat(3)
    );
    assert_eq!(
        read_td(&node, "manifests-at-rest"),
        "kube-apiserver.yaml kube-controller-manager.yaml kube-scheduler.yaml "
    );
    assert!(!node
        .root
        .join("var/lib/habuild/firstboot-held-manifests")
        .exists());
}

#[test]
fn an_api_server_that_never_gets_ready_gets_the_other_components_anyway() {
    let mut node = Node::new("join");
    node.set("HABUILD_NODE_ADDRESS", "10.10.197.97")
        .set("TD_CLUSTER_DOWN_FOR", "100")
        .set("HABUILD_LOCAL_API_TRIES", "2");
    let out = node.boot();
    assert!(out.status.success());
    let calls = node.calls();
    assert_eq!(calls.iter().filter(|c| *c == LOCAL_READYZ).count(), 2);
    assert!(stdout(&out).contains(
        "not ready after 2 tries: starting kube-controller-manager kube-scheduler anyway"
    ));
    assert_eq!(
        read_td(&node, "manifests-at-rest"),
        "kube-apiserver.yaml kube-controller-manager.yaml kube-scheduler.yaml "
    );
}

#[test]
fn a_finishing_try_starts_the_api_server_alone_too() {
    let mut node = Node::new("join");
    node.set("HABUILD_NODE_ADDRESS", "10.10.197.97")
        .set("TD_FAIL_rest", "1");
    assert!(node.boot().status.success());
    let calls = node.calls();
    let rest: Vec<usize> = (0..calls.len())
        .filter(|&i| calls[i] == JOIN_REST)
        .collect();
    assert_eq!(rest.len(), 2, "{calls:#?}");
    for i in rest {
        assert_eq!(calls[i - 1], LOCAL_READYZ, "{calls:#?}");
        assert_eq!(
            calls[i - 4..i - 1],
            [
                "systemctl stop kubelet.service",
                CONTROL_PLANE,
                "systemctl start kubelet.service"
            ],
            "{calls:#?}"
        );
    }
}

#[test]
fn a_failed_manifest_phase_still_starts_the_kubelet_again() {
    let mut node = Node::new("join");
    node.set("HABUILD_NODE_ADDRESS", "10.10.197.97")
        .set("TD_JOIN_STARTS_KUBELET", "1")
        .set("TD_FAIL_control_plane", "1");
    assert!(node.boot().status.success());
    let calls = node.calls();
    let at = calls.iter().position(|c| c == CONTROL_PLANE).unwrap();
    assert_eq!(
        calls[at - 1..at + 3],
        [
            "systemctl stop kubelet.service",
            CONTROL_PLANE,
            "systemctl start kubelet.service",
            // The finishing try, without asking /readyz first.
            "systemctl stop kubelet.service"
        ],
        "{calls:#?}"
    );
    assert_eq!(node.status(), "joined");
    assert!(!node.root.join("td/kubelet-stopped").exists());
}

#[test]
fn waiting_for_the_api_server_does_not_use_up_the_finishing_tries() {
    let mut node = Node::new("join");
    node.set("HABUILD_NODE_ADDRESS", "10.10.197.97")
        .set("TD_CLUSTER_DOWN_FOR", "1000")
        .set("HABUILD_LOCAL_API_TRIES", "6")
        .set("TD_JOIN_STARTS_KUBELET", "1")
        .set("TD_FAIL_rest", "2");
    let out = node.boot();
    assert!(out.status.success());
    let log = stdout(&out);
    assert!(
        log.contains("finishing the join from its etcd-join phase (try 2/5)"),
        "{log}"
    );
    assert!(!node.calls().contains(&"kubeadm reset -f".to_string()));
    assert_eq!(node.status(), "joined");
}

/// The rule that keeps the API port (6443) from answering a director.
fn hold_rule(director: &str) -> String {
    format!("to {director} ipproto tcp sport 6443 prohibit")
}

#[test]
fn a_joiner_answers_the_directors_checks_only_once_the_vip_is_on_lo() {
    let mut node = Node::new("join");
    node.with_directors();
    assert!(node.boot().status.success());
    let calls = node.calls();
    assert_eq!(calls[0], "systemctl stop realServer.service");
    assert_eq!(calls[1], "probe 10.10.197.101 6443");
    assert_eq!(
        calls.last().unwrap(),
        "systemctl enable --now realServer.service"
    );
    let (a, b) = (hold_rule("10.10.197.96"), hold_rule("10.10.197.95"));
    let done = calls.len();
    assert_eq!(
        node.ip_calls(),
        [
            // Before the VIP probe and the join: none to remove, then held.
            format!("after 1: ip -4 rule del {a}"),
            format!("after 1: ip -4 rule del {b}"),
            format!("after 1: ip -4 rule add {a}"),
            format!("after 1: ip -4 rule add {b}"),
            // After realServer put the VIP on lo: every one removed.
            format!("after {done}: ip -4 rule del {a}"),
            format!("after {done}: ip -4 rule del {a}"),
            format!("after {done}: ip -4 rule del {b}"),
            format!("after {done}: ip -4 rule del {b}"),
        ]
    );
    assert!(node.rules().is_empty(), "{:?}", node.rules());
}

#[test]
fn a_joiner_that_failed_stays_out_of_the_pool_and_holds_each_director_once() {
    let mut node = Node::new("join");
    node.with_directors()
        .set("TD_FAIL_join", "100")
        .set("HABUILD_ATTEMPTS", "1");
    assert_eq!(node.boot().status.code(), Some(1));
    let held = [hold_rule("10.10.197.96"), hold_rule("10.10.197.95")];
    assert_eq!(node.rules(), held, "it does not hold the VIP");
    // The unit's restart holds them again, without a second copy.
    node.clear_calls();
    assert_eq!(node.boot().status.code(), Some(1));
    assert_eq!(node.rules(), held);
}

/// Two network namespaces joined by a veth pair, removed on drop.
struct Segment {
    joiner: String,
    director: String,
    listener: Option<std::process::Child>,
}

impl Segment {
    const JOINER: &'static str = "10.231.0.2";
    const DIRECTOR: &'static str = "10.231.0.1";

    fn new() -> Segment {
        let id = std::process::id();
        let seg = Segment {
            joiner: format!("hbfb-j{id}"),
            director: format!("hbfb-d{id}"),
            listener: None,
        };
        let (j, d) = (seg.joiner.as_str(), seg.director.as_str());
        for args in [
            vec!["netns", "add", j],
            vec!["netns", "add", d],
            vec![
                "link", "add", "vj", "netns", j, "type", "veth", "peer", "name", "vd", "netns", d,
            ],
            vec!["-n", j, "addr", "add", "10.231.0.2/24", "dev", "vj"],
            vec!["-n", d, "addr", "add", "10.231.0.1/24", "dev", "vd"],
            vec!["-n", j, "link", "set", "vj", "up"],
            vec!["-n", d, "link", "set", "vd", "up"],
            vec!["-n", j, "link", "set", "lo", "up"],
        ] {
            let st = Command::new("ip").args(&args).status().unwrap();
            assert!(st.success(), "ip {args:?} (this test needs root)");
        }
        seg
    }

    /// Something listening on the joiner's API port, as its API server.
    fn listen(&mut self) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.joiner, "python3", "-c"])
            .arg("import socket, time\ns = socket.socket()\ns.bind(('0.0.0.0', 6443))\ns.listen(16)\ntime.sleep(120)")
            .spawn()
            .unwrap();
        self.listener = Some(child);
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    /// Whether a TCP connection from the director to the joiner's API port
    /// is answered (keepalived's TCP_CHECK).
    fn director_reaches_api_port(&self) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.director,
                "timeout",
                "3",
                "bash",
                "-c",
            ])
            .arg(format!("exec 3<>/dev/tcp/{}/6443", Self::JOINER))
            .status()
            .unwrap()
            .success()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if let Some(mut c) = self.listener.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.joiner, &self.director] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The real `ip` and kernel (root): while the join runs, a director's TCP
/// check of the API port goes unanswered; once joined, it is answered.
#[test]
fn with_the_real_ip_a_directors_check_is_unanswered_only_during_the_join() {
    let mut seg = Segment::new();
    seg.listen();
    assert!(
        seg.director_reaches_api_port(),
        "the port answers before first boot"
    );
    let mut node = Node::new("join");
    node.set("HABUILD_DIRECTORS", Segment::DIRECTOR)
        .set("TD_CHECK_FROM_NETNS", &seg.director.clone())
        .set("TD_CHECK_ADDRESS", Segment::JOINER);
    assert!(node.boot_in(&seg.joiner.clone()).status.success());
    assert_eq!(
        fs::read_to_string(node.root.join("td/check-during-join")).unwrap(),
        "unanswered\n"
    );
    assert!(seg.director_reaches_api_port(), "answered once joined");
    let rules = Command::new("ip")
        .args(["-n", &seg.joiner, "-4", "rule", "show"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("prohibit"));
}

#[test]
fn the_init_node_never_holds_its_api_port_from_the_directors() {
    let mut node = Node::new("init");
    node.with_directors();
    assert!(node.boot().status.success());
    assert!(node.ip_calls().is_empty(), "{:?}", node.ip_calls());
}

const ASK_CLUSTER: &str = "kubectl --kubeconfig /etc/kubernetes/admin.conf --request-timeout=20s -n kube-system get configmap kubeadm-config -o name";
const ETCD_JOIN: &str = "kubeadm join phase etcd-join --config /etc/habuild/kubeadm/kubeadm.yaml";
const JOIN_REST: &str = "kubeadm join --config /etc/habuild/kubeadm/kubeadm.yaml --skip-phases=preflight,control-plane-prepare,check-etcd,kubelet-start,etcd-join";
const JOIN_TO_ETCD: &str = "kubeadm join --config /etc/habuild/kubeadm/kubeadm.yaml --skip-phases=control-plane-prepare/control-plane,kubelet-wait-bootstrap,control-plane-join,wait-control-plane";
const CONTROL_PLANE: &str =
    "kubeadm join phase control-plane-prepare control-plane --config /etc/habuild/kubeadm/kubeadm.yaml";

#[test]
fn a_join_that_failed_after_announcing_its_etcd_member_is_finished_not_reset() {
    let mut node = Node::new("join");
    node.set("TD_FAIL_join", "1")
        .set("TD_JOIN_ADDS_MEMBER", "1")
        .set("TD_FAIL_etcd_join", "1")
        .set("TD_FAIL_rest", "1");
    let out = node.boot();
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        node.calls(),
        [
            "systemctl stop realServer.service",
            "probe 10.10.197.101 6443",
            JOIN_TO_ETCD,
            ETCD_JOIN,
            "sleep 7",
            ETCD_JOIN,
            CONTROL_PLANE,
            JOIN_REST,
            "sleep 7",
            // etcd-join succeeded once: not run again.
            CONTROL_PLANE,
            JOIN_REST,
            "systemctl enable --now realServer.service",
        ]
    );
    assert!(stdout(&out).contains("the join is finished"));
    assert_eq!(node.status(), "joined");
    assert!(node.done());
}

#[test]
fn the_control_plane_manifests_come_after_the_etcd_member_and_a_failure_there_is_finished() {
    let mut node = Node::new("join");
    node.set("TD_JOIN_ADDS_MEMBER", "1")
        .set("TD_FAIL_control_plane", "1");
    let out = node.boot();
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        node.calls(),
        [
            "systemctl stop realServer.service",
            "probe 10.10.197.101 6443",
            JOIN_TO_ETCD,
            CONTROL_PLANE,
            // No second etcd-join: the member is in.
            CONTROL_PLANE,
            JOIN_REST,
            "systemctl enable --now realServer.service",
        ]
    );
    assert!(stdout(&out).contains("this node's etcd member is in already"));
    // Tier 3 reads the join's success from this line.
    assert!(stdout(&out).contains("kubeadm join succeeded (finished from its etcd-join phase)"));
    assert_eq!(node.status(), "joined");
}

#[test]
fn a_reset_forgets_that_the_etcd_member_was_in() {
    let mut node = Node::new("join");
    node.set("TD_JOIN_ADDS_MEMBER", "1")
        .set("TD_FAIL_control_plane", "100")
        .set("HABUILD_FINISH_TRIES", "1")
        .set("HABUILD_ATTEMPTS", "1");
    let marker = node.root.join("var/lib/habuild/firstboot.etcd-joined");
    assert_eq!(node.boot().status.code(), Some(1));
    let calls = node.calls();
    assert!(!calls.contains(&ETCD_JOIN.to_string()), "{calls:?}");
    assert!(calls.contains(&"kubeadm reset -f".to_string()), "{calls:?}");
    assert!(!marker.exists(), "the reset removed this node's member");
}

#[test]
fn a_join_that_failed_in_etcd_join_before_announcing_the_member_is_finished_too() {
    let mut node = Node::new("join");
    node.set("TD_FAIL_join", "1")
        .set("TD_JOIN_STARTS_KUBELET", "1");
    let out = node.boot();
    assert!(out.status.success(), "{}", stdout(&out));
    let calls = node.calls();
    assert_eq!(
        calls[3..],
        [
            ETCD_JOIN,
            CONTROL_PLANE,
            JOIN_REST,
            "systemctl enable --now realServer.service"
        ]
    );
    // Nothing announced: a failure to finish resets at once, no wait.
    let mut node = Node::new("join");
    node.set("TD_FAIL_join", "1")
        .set("TD_JOIN_STARTS_KUBELET", "1")
        .set("TD_FAIL_etcd_join", "100")
        .set("HABUILD_FINISH_TRIES", "2")
        .set("TD_CLUSTER_DOWN_FOR", "100");
    assert!(node.boot().status.success());
    let calls = node.calls();
    assert!(!calls.iter().any(|c| c.starts_with("kubectl")), "{calls:?}");
    assert_eq!(calls.iter().filter(|c| *c == ETCD_JOIN).count(), 2);
    assert!(calls.contains(&"kubeadm reset -f".to_string()));
}

#[test]
fn a_join_without_an_etcd_member_is_never_finished_but_reset() {
    let mut node = Node::new("join");
    node.set("TD_FAIL_join", "1");
    assert!(node.boot().status.success());
    let calls = node.calls();
    assert!(!calls.iter().any(|c| c == ETCD_JOIN), "{calls:?}");
    assert!(calls.contains(&"kubeadm reset -f".to_string()));
}

#[test]
fn a_power_cut_after_the_etcd_member_was_announced_finishes_the_join_on_the_next_boot() {
    let mut node = Node::new("join");
    node.set("TD_KILL_PARENT_ON_JOIN", "1")
        .set("TD_JOIN_ADDS_MEMBER", "1");
    assert!(!node.boot().status.success());
    node.env.retain(|(k, _)| k != "TD_KILL_PARENT_ON_JOIN");
    node.clear_calls();
    let out = node.boot();
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(
        node.calls(),
        [
            "systemctl stop realServer.service",
            ETCD_JOIN,
            CONTROL_PLANE,
            JOIN_REST,
            "systemctl enable --now realServer.service",
        ]
    );
    assert_eq!(node.status(), "joined");
}

#[test]
fn a_join_that_added_an_etcd_member_is_reset_only_once_the_cluster_answers() {
    let mut node = Node::new("join");
    node.set("TD_FAIL_join", "1")
        .set("TD_JOIN_ADDS_MEMBER", "1")
        .set("TD_FAIL_etcd_join", "100")
        .set("HABUILD_FINISH_TRIES", "2")
        .set("TD_CLUSTER_DOWN_FOR", "2");
    assert!(node.boot().status.success());
    let calls = node.calls();
    let reset = calls.iter().position(|c| c == "kubeadm reset -f").unwrap();
    assert_eq!(
        calls[3..reset],
        [
            ETCD_JOIN,
            "sleep 7",
            ETCD_JOIN,
            ASK_CLUSTER,
            "sleep 7",
            ASK_CLUSTER,
            "sleep 7",
            ASK_CLUSTER
        ],
        "{calls:?}"
    );
    assert_eq!(node.status(), "joined");
    assert!(node.pki_is_baked());
}

#[test]
fn a_cluster_that_never_answers_leaves_the_joined_etcd_member_alone() {
    let mut node = Node::new("join");
    node.set("TD_FAIL_join", "1")
        .set("TD_JOIN_ADDS_MEMBER", "1")
        .set("TD_CLUSTER_DOWN_FOR", "100")
        .set("HABUILD_MEMBER_TRIES", "3")
        .set("TD_FAIL_etcd_join", "100")
        .set("HABUILD_FINISH_TRIES", "1");
    let out = node.boot();
    assert_eq!(out.status.code(), Some(2), "no restart by the unit");
    let calls = node.calls();
    assert_eq!(calls.iter().filter(|c| *c == ASK_CLUSTER).count(), 3);
    assert!(!calls.iter().any(|c| c.contains("reset")), "{calls:?}");
    assert!(
        node.status().starts_with(
            "failed: kubeadm join failed after adding this node to etcd, and the cluster did not answer in 3 tries"
        ),
        "{}",
        node.status()
    );
    // The member's data and manifest are where they were.
    assert!(node
        .root
        .join("etc/kubernetes/manifests/etcd.yaml")
        .exists());
    // Powered off and on once the cluster is back: the reset goes ahead.
    node.set("TD_CLUSTER_DOWN_FOR", "0");
    node.clear_calls();
    assert!(node.boot().status.success());
    assert!(node.calls().contains(&"kubeadm reset -f".to_string()));
    assert_eq!(node.status(), "joined");
}

#[test]
fn a_reset_that_could_not_remove_the_etcd_member_stops_joining_until_a_person_did() {
    let mut node = Node::new("join");
    node.set("TD_FAIL_join", "1")
        .set("TD_JOIN_ADDS_MEMBER", "1")
        .set("TD_RESET_KEEPS_MEMBER", "1")
        .set("TD_FAIL_etcd_join", "100")
        .set("HABUILD_FINISH_TRIES", "1");
    let out = node.boot();
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).contains("Failed to remove etcd member"));
    assert!(
        node.status()
            .starts_with("failed: kubeadm reset could not remove this node's etcd member"),
        "{}",
        node.status()
    );
    let joins = |n: &Node| n.calls().iter().filter(|c| *c == JOIN_TO_ETCD).count();
    assert_eq!(joins(&node), 1, "no second join with the member left");
    // Every later boot refuses too, until the marker is gone.
    node.clear_calls();
    assert_eq!(node.boot().status.code(), Some(2));
    assert_eq!(joins(&node), 0);
    assert!(node
        .status()
        .contains("an earlier reset left this node's etcd member"));
    fs::remove_file(node.root.join("var/lib/habuild/firstboot.etcd-member-left")).unwrap();
    node.set("TD_FAIL_join", "0");
    assert!(node.boot().status.success());
    assert_eq!(node.status(), "joined");
}

#[test]
fn a_power_cut_during_the_join_is_reset_on_the_next_boot() {
    let mut node = Node::new("join");
    node.set("TD_KILL_PARENT_ON_JOIN", "1");
    let out = node.boot();
    assert!(!out.status.success());
    assert_eq!(node.status(), "joining", "the state a power cut leaves");
    // The double stood for a kubeadm that got part-way: PKI half-replaced.
    fs::write(node.root.join("etc/kubernetes/pki/ca.key"), "changed\n").unwrap();
    let mut next = node.env.clone();
    next.retain(|(k, _)| k != "TD_KILL_PARENT_ON_JOIN");
    node.env = next;
    node.clear_calls();
    let out = node.boot();
    assert!(out.status.success());
    assert!(stdout(&out).contains("an earlier boot stopped during kubeadm join"));
    assert_eq!(
        node.calls(),
        [
            "systemctl stop realServer.service",
            "kubeadm reset -f",
            "probe 10.10.197.101 6443",
            JOIN_TO_ETCD,
            CONTROL_PLANE,
            JOIN_REST,
            "systemctl enable --now realServer.service",
        ]
    );
    assert!(node.pki_is_baked());
    assert_eq!(node.status(), "joined");
}

#[test]
fn a_power_cut_after_kubeadm_finishes_only_the_rest() {
    let node = Node::new("init");
    let state = node.root.join("var/lib/habuild");
    fs::create_dir_all(&state).unwrap();
    fs::write(state.join("firstboot.phase"), "kubeadm-done\n").unwrap();
    assert!(node.boot().status.success());
    // The add-ons may not have been installed before the cut: they are
    // (idempotent), and nothing before them runs again.
    assert_eq!(
        node.calls(),
        [
            "systemctl start realServer.service",
            COREDNS,
            KUBE_PROXY,
            UPLOAD_CONFIG,
            "systemctl enable realServer.service",
        ]
    );
    assert_eq!(node.status(), "initialised");
}

#[test]
fn failed_add_ons_are_retried_alone_and_never_reset_the_node() {
    let mut node = Node::new("init");
    node.set("TD_FAIL_addon", "2");
    assert!(node.boot().status.success());
    let calls = node.calls();
    // Each try stops at its first failing add-on; the third installs both.
    assert_eq!(
        calls.iter().filter(|c| *c == COREDNS).count(),
        3,
        "{calls:?}"
    );
    assert_eq!(
        calls.iter().filter(|c| *c == KUBE_PROXY).count(),
        1,
        "{calls:?}"
    );
    assert_eq!(calls.last().unwrap(), "systemctl enable realServer.service");
    assert!(!calls.iter().any(|c| c.contains("reset")), "{calls:?}");
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("kubeadm init --config"))
            .count(),
        1,
        "{calls:?}"
    );
    assert_eq!(node.status(), "initialised");

    // Add-ons that never install: first boot fails, the control plane stays.
    let mut node = Node::new("init");
    node.set("TD_FAIL_addon", "100")
        .set("HABUILD_ADDON_ATTEMPTS", "3");
    assert!(!node.boot().status.success());
    let calls = node.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == COREDNS).count(),
        3,
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.contains("reset")), "{calls:?}");
    assert!(!calls.contains(&UPLOAD_CONFIG.to_string()), "{calls:?}");
    assert!(
        node.status()
            .starts_with("failed: the add-ons (coredns kube-proxy) failed to install 3 times"),
        "{}",
        node.status()
    );
    assert!(!node.done());
}

const COREDNS: &str = "kubeadm init phase addon coredns --config /run/habuild/kubeadm-init.yaml";
const KUBE_PROXY: &str =
    "kubeadm init phase addon kube-proxy --config /run/habuild/kubeadm-init.yaml";
const UPLOAD_CONFIG: &str =
    "kubeadm init phase upload-config kubeadm --config /run/habuild/kubeadm-init.yaml";

#[test]
fn only_the_add_ons_the_manifest_turns_on_are_installed() {
    for (addons, expected) in [
        ("", vec![UPLOAD_CONFIG]),
        (" kube-proxy", vec![KUBE_PROXY, UPLOAD_CONFIG]),
        ("coredns", vec![COREDNS, UPLOAD_CONFIG]),
    ] {
        let mut node = Node::new("init");
        node.set("HABUILD_ADDONS", addons);
        assert!(node.boot().status.success(), "{addons:?}");
        let calls = node.calls();
        let phases: Vec<&str> = calls
            .iter()
            .map(String::as_str)
            .filter(|c| c.starts_with("kubeadm init phase"))
            .collect();
        assert_eq!(phases, expected, "HABUILD_ADDONS={addons:?}");
        assert_eq!(node.status(), "initialised");
    }
}

#[test]
fn a_second_boot_after_success_does_nothing() {
    for action in ["init", "join"] {
        let node = Node::new(action);
        assert!(node.boot().status.success());
        let status = node.status();
        node.clear_calls();
        let out = node.boot();
        assert!(out.status.success());
        assert!(stdout(&out).contains("already done"), "{}", stdout(&out));
        assert!(node.calls().is_empty(), "{:?}", node.calls());
        assert_eq!(node.status(), status);
    }
}

#[test]
fn without_kubeadm_or_action_it_fails_for_good() {
    let mut node = Node::new("join");
    node.set("HABUILD_KUBEADM", "/nonexistent/kubeadm");
    assert_eq!(
        node.boot().status.code(),
        Some(2),
        "not retried by the unit"
    );
    assert!(node
        .status()
        .starts_with("failed: /nonexistent/kubeadm is not installed"));
    let mut node = Node::new("join");
    node.set("HABUILD_ACTION", "explode");
    assert_eq!(node.boot().status.code(), Some(2));
    assert!(node.status().contains("not init or join"));
    let node = Node::new("join");
    fs::remove_file(node.root.join("etc/kubernetes/pki/etcd/ca.key")).unwrap();
    assert_eq!(node.boot().status.code(), Some(2));
    assert!(node.status().contains("lacks"), "{}", node.status());
    assert!(node.calls().is_empty());
}

#[test]
fn scripts_pass_shellcheck() {
    let out = Command::new("shellcheck")
        .arg("--norc")
        .arg(repo_root().join(SCRIPT))
        .arg(repo_root().join(PROBE))
        .output();
    match out {
        Err(e) => eprintln!("SKIPPED: shellcheck not installed ({e})"),
        Ok(o) => assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout)),
    }
    // POSIX sh, not bash: the script runs under dash on Debian and Ubuntu.
    let head = fs::read_to_string(repo_root().join(SCRIPT)).unwrap();
    assert!(head.starts_with("#!/bin/sh\n"));
}

/// The real probe (not a double), against listeners on this machine only.
#[test]
fn the_vip_probe_tells_an_open_port_from_a_closed_one() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let probe = |port: u16| {
        Command::new(repo_root().join(PROBE))
            .args(["127.0.0.1", &port.to_string()])
            .status()
            .unwrap()
            .success()
    };
    assert!(probe(open));
    assert!(!probe(closed));
}
